"""One small generic registry (name -> entry) for losses, penalties, models, data sets and metrics.

Entries register with a decorator; a duplicate name raises; an unknown name raises with the list of
valid names and the closest match. A registry may also read an entry-point group (for plugins),
lazily, on the first lookup, never at import time.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterator
from importlib.metadata import entry_points
from typing import Generic, TypeVar

from lossbench.errors import ConfigError

T = TypeVar("T")

_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")


def closest(name: str, choices: list[str]) -> str | None:
    """The valid name a typo most probably meant, or None."""
    match = difflib.get_close_matches(name, choices, n=1, cutoff=0.5)
    return match[0] if match else None


def unknown_name_message(kind: str, name: str, choices: list[str]) -> str:
    hint = closest(name, choices)
    message = f"unknown {kind} '{name}'"
    if hint:
        message += f" (did you mean '{hint}'?)"
    return message + f"; valid: {', '.join(sorted(choices))}"


class Registry(Generic[T]):
    """A named, write-once mapping from lowercase names to entries."""

    def __init__(self, kind: str, entry_point_group: str | None = None, key: str | None = None) -> None:
        self.kind = kind
        self.key = key  # the configuration key whose values name entries: its errors carry it
        self._entries: dict[str, T] = {}
        self._group = entry_point_group
        self._plugins_loaded = entry_point_group is None

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: register the decorated object under `name`."""

        def decorate(entry: T) -> T:
            self.add(name, entry)
            return entry

        return decorate

    def add(self, name: str, entry: T) -> None:
        if not isinstance(name, str) or not _NAME.match(name):
            raise ValueError(f"{self.kind} name {name!r} must be lowercase letters, digits, '-', '_' or '.'")
        if name in self._entries:
            raise ValueError(f"{self.kind} '{name}' is already registered")
        self._entries[name] = entry

    def _load_plugins(self) -> None:
        if self._plugins_loaded:
            return
        self._plugins_loaded = True
        for ep in entry_points(group=self._group):
            if ep.name not in self._entries:
                self.add(ep.name, ep.load())

    def get(self, name: str) -> T:
        self._load_plugins()
        try:
            return self._entries[name]
        except KeyError:
            raise ConfigError(unknown_name_message(self.kind, name, self.names()), key=self.key) from None

    def names(self) -> list[str]:
        self._load_plugins()
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        self._load_plugins()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
