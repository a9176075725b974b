"""Plugin losses: a loss named `package.module:Name` is code. Loading it imports that module into
the lossbench process, which runs the module's code there, by design; it is the user's own code.

So a plugin is loaded only when the command line names it: `lossbench run --loss SPEC`, or
`--allow-plugin SPEC` (run, sweep, sample) for a plugin that a `--config` file, a suite or a run in
the store names. A plugin named only by a file or the store is refused in one line before anything
is imported: a file may come from someone else, and a store may be written by anyone who can reach
it, and neither may choose code to run. `--dry-run` imports nothing: it checks the name's form.
The loss is the only configuration field that can name code. Entry-point plugins (the group
`lossbench.losses`) are installed packages, trusted as every installed dependency is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from lossbench.errors import ConfigError

# dotted module path, a colon, an attribute name: Python identifiers (ASCII), nothing else
SPEC = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*")


def is_plugin(name: object) -> bool:
    """A loss name that names code (`package.module:Name`) rather than a registered loss."""
    return isinstance(name, str) and ":" in name


def check_form(spec: str) -> None:
    """Refuse a plugin name that is not `package.module:Name`, without importing anything."""
    if not SPEC.fullmatch(spec):
        raise ConfigError(f"plugin loss '{spec}' must be package.module:Name (dotted Python names)", key="loss")


@dataclass(frozen=True)
class Plugins:
    """The plugins the command line asked for (`--allow-plugin`), and whether to import them."""

    allowed: frozenset[str] = frozenset()
    load: bool = True  # False under --dry-run: names checked, no module imported

    @classmethod
    def from_flags(cls, allowed: tuple[str, ...], dry_run: bool = False) -> Plugins:
        """The plugins --allow-plugin names (each checked for form); a dry run imports none."""
        for spec in allowed:
            check_form(spec)
        return cls(frozenset(allowed), load=not dry_run)

    def admit(self, spec: str, on_command_line: bool) -> bool:
        """Whether to import `spec` now; refuses it unless the command line named it (as the loss
        flag itself, on_command_line, or in `allowed`)."""
        check_form(spec)
        if not (on_command_line or spec in self.allowed):
            raise ConfigError(f"loss '{spec}' is a plugin: loading it runs its module's code in this process, "
                              f"and lossbench loads one only when the command line names it; "
                              f"add --allow-plugin {spec} if you trust that code", key="loss")  # fmt: skip
        return self.load


DRY_RUN_NOTE = "name checked, module not imported (--dry-run)"
