"""Read the declarative registry/ files: loss cards (registry/losses/<name>.toml) and suites
(registry/suites/<name>.toml). Data only; the code that uses them lives elsewhere.

In a wheel the folder ships as lossbench/registry_files; in a source checkout it is ../registry.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import tomllib

from lossbench.errors import ConfigError
from lossbench.registry import unknown_name_message

_PACKAGE = Path(__file__).resolve().parent


def registry_dir() -> Path:
    for candidate in (_PACKAGE / "registry_files", _PACKAGE.parent / "registry"):
        if (candidate / "losses").is_dir():
            return candidate
    raise ConfigError(f"registry files not found next to {_PACKAGE}; reinstall lossbench")


def read_toml(path: Path) -> dict[str, Any]:
    """A TOML file as a dict; unreadable or malformed files are one clear error."""
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None


@cache
def loss_card(name: str) -> dict[str, Any]:
    """The card of a registered loss: title, paper, formulas and [defaults]; {} for plugin losses."""
    path = registry_dir() / "losses" / f"{name}.toml"
    return read_toml(path) if path.is_file() else {}


def card_names() -> list[str]:
    return sorted(p.stem for p in (registry_dir() / "losses").glob("*.toml"))


def suite_path(name_or_path: str) -> Path:
    """A suite by name (registry/suites/<name>.toml) or by path."""
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        if not path.is_file():
            raise ConfigError(f"suite file {path} does not exist")
        return path
    candidate = registry_dir() / "suites" / f"{name_or_path}.toml"
    if not candidate.is_file():
        raise ConfigError(unknown_name_message("suite", name_or_path, suite_names()))
    return candidate


def suite_names() -> list[str]:
    return sorted(p.stem for p in (registry_dir() / "suites").glob("*.toml"))
