"""Errors a user can cause. The CLI prints each as one line and exits non-zero, no traceback."""


class LossbenchError(Exception):
    """Base of every error that is the user's input or environment, not a bug."""


class ConfigError(LossbenchError):
    """An unknown name, an invalid number, a malformed config or suite file. `key`, when one
    configuration key is at fault, lets the caller name the file or flag that set it."""

    def __init__(self, message: str, *, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


class DataError(LossbenchError):
    """A data set that is missing and cannot be downloaded."""


class TrackingError(LossbenchError):
    """A tracking store that cannot be reached or written."""


class MetricError(LossbenchError):
    """Metric weights that are missing and cannot be downloaded, or a bad metric protocol."""


class CheckpointError(LossbenchError):
    """A checkpoint that cannot be read or written."""
