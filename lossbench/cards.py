"""Read the declarative registry/ files: loss cards (registry/losses/<name>.toml), suites
(registry/suites/<name>.toml) and published result tables (registry/papers/<name>.toml). Data only;
the code that uses them lives elsewhere.

In a wheel the folder ships as lossbench/registry_files; in a source checkout it is ../registry.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from lossbench import caps
from lossbench.errors import ConfigError
from lossbench.registry import unknown_name_message

_PACKAGE = Path(__file__).resolve().parent


def registry_dir() -> Path:
    for candidate in (_PACKAGE / "registry_files", _PACKAGE.parent / "registry"):
        if (candidate / "losses").is_dir():
            return candidate
    raise ConfigError(f"registry files not found next to {_PACKAGE}; reinstall lossbench")


def read_toml(path: Path) -> dict[str, Any]:
    """A TOML file as a dict; unreadable or malformed files, and files over the caps on size, nesting
    and dotted keys (lossbench.caps, checked before parsing), are one clear error."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read(caps.MAX_FILE_BYTES + 1)
        caps.check_size(len(raw), str(path))
        text = raw.decode("utf-8")
        caps.check_toml_shape(text, str(path))
        return tomllib.loads(text)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    except UnicodeDecodeError as exc:  # a binary file, or text in another encoding
        raise ConfigError(f"{path}: not UTF-8 text, as TOML must be (byte {exc.start})") from None


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


# --- published result tables: registry/papers/<name>.toml --------------------------------------
#
#   title = "..."; citation = "..."; table = "Table 2"; url = "https://..."   (required)
#   spread = "se"                  # required: what the table's ± is: "std" (a standard deviation across
#                                  #   runs), "se" (a standard error of the mean) or "none" (no ± printed)
#   runs = 10                      # runs behind each value (needed for "se": std = se * sqrt(runs))
#   note = "..."; missing = ["what the file could not source", ...]          (optional)
#   [protocol]                     # how the paper measured: lossbench config keys where one exists
#   reference_split = "test"       # (compared with the runs' parameters by `lossbench report --against`);
#   epochs = { mnist = 20 }        # a table keyed by data set: the value for that data set
#   [[result]]                     # one published value
#   model = "minimax"              # the lossbench loss name (or the paper's own name if lossbench has none)
#   label = "MM GAN"; dataset = "mnist"; metric = "fid"; mean = 9.8   # the value as printed
#   pm = 0.9                       # the ± as printed (left out where spread is "none")
#   spread = "std"; runs = 50      # optional: this cell's own, where a table mixes them
#   runs_stated = false            # optional: the source states no number of runs for this cell (a row
#                                  #   quoted from another paper): its runs are not the table's
#   pack = 1                       # optional: PacGAN's packing degree (default 1)
#   unit = "percent"               # optional: the paper's value is a percentage of lossbench's fraction
#   verified = false               # optional: not checked against the paper itself (shown as a flag)
#   context = true                 # optional: a row printed for context (no lossbench model; never compared)
#   note, source_note              # optional
# Whether a cell has been reproduced is never declared here: `lossbench papers NAME` derives it from
# the committed reports that compare against the file (reports/*/against-NAME.csv).

SPREADS = ("std", "se", "none")


@dataclass(frozen=True)
class PaperResult:
    model: str
    label: str
    dataset: str
    metric: str
    mean: float  # as printed
    pm: float | None  # the ± as printed; None where spread is "none"
    spread: str  # "std" | "se" | "none": what pm is (the cell's own, else the table's)
    runs: int | None  # runs behind the value (the cell's own, else the table's); None: not stated
    pack: int = 1
    unit: str = ""  # "percent": a percentage where lossbench logs a fraction; "": lossbench's own unit
    verified: bool | None = None  # False: flagged in the file as not checked against the paper
    context: bool = False  # printed for context only (no lossbench model): never compared
    note: str = ""
    source_note: str = ""


@dataclass(frozen=True)
class Paper:
    name: str
    title: str
    citation: str
    table: str
    url: str
    note: str
    missing: tuple[str, ...]
    protocol: dict[str, Any]
    results: tuple[PaperResult, ...]


PAPER_KEYS = {"title": str, "citation": str, "table": str, "url": str, "spread": str, "runs": int, "note": str,
              "missing": list, "protocol": dict, "result": list}  # fmt: skip
PAPER_REQUIRED = ("title", "citation", "table", "url", "spread")
RESULT_KEYS = {"model": str, "label": str, "dataset": str, "metric": str, "mean": float, "pm": float,
               "spread": str, "runs": int, "pack": int, "unit": str, "verified": bool, "context": bool, "note": str,
               "source_note": str, "runs_stated": bool}  # fmt: skip
RESULT_REQUIRED = ("model", "label", "dataset", "metric", "mean")
UNITS = ("", "percent")


def paper_names() -> list[str]:
    folder = registry_dir() / "papers"
    return sorted(p.stem for p in folder.glob("*.toml")) if folder.is_dir() else []


@cache
def paper(name: str) -> Paper:
    """A published result table by name (registry/papers/<name>.toml) or by path; an unknown name or a
    malformed file is one line."""
    path = Path(name)
    if path.suffix == ".toml":
        if not path.is_file():
            raise ConfigError(f"paper file {path} does not exist")
    else:
        path = registry_dir() / "papers" / f"{name}.toml"
        if not path.is_file():
            raise ConfigError(unknown_name_message("paper", name, paper_names()))
    raw = read_toml(path)
    _check_fields(raw, PAPER_KEYS, PAPER_REQUIRED, f"{path}:", "top-level key")
    missing = raw.get("missing", [])
    if not all(isinstance(m, str) for m in missing):
        raise ConfigError(f"{path}: 'missing' must be a list of strings")
    table_spread = _spread(raw, (None, None), f"{path}:")
    results = []
    for i, entry in enumerate(raw.get("result", [])):
        where = f"{path}: result[{i}]" + (f" ({entry.get('label')} on {entry.get('dataset')})"
                                           if isinstance(entry, dict) else "")  # fmt: skip
        if not isinstance(entry, dict):
            raise ConfigError(f"{where} must be a table ([[result]])")
        _check_fields(entry, RESULT_KEYS, RESULT_REQUIRED, where + ":", "key")
        stated = entry.pop("runs_stated", True)
        if not stated and "runs" in entry:
            raise ConfigError(f"{where}: 'runs_stated = false' and 'runs' contradict each other: give one")
        spread, runs = _spread(entry, table_spread if stated else (table_spread[0], None), where + ":")
        pm = entry.get("pm")
        if (pm is None) != (spread == "none"):
            raise ConfigError(f"{where}: 'pm' (the ± as printed) is " + ("required where spread is "
                              f"'{spread}'" if pm is None else "left out where spread is 'none'"))  # fmt: skip
        if not math.isfinite(entry["mean"]) or (pm is not None and (pm < 0 or not math.isfinite(pm))):
            raise ConfigError(f"{where}: mean must be finite and pm finite and >= 0, "
                              f"got {entry['mean']} ± {pm}")  # fmt: skip
        if entry.get("pack", 1) < 1:
            raise ConfigError(f"{where}: 'pack' must be >= 1, got {entry['pack']}")
        if entry.get("unit", "") not in UNITS:
            raise ConfigError(f"{where}: 'unit' must be \"percent\" or left out (lossbench's own unit), "
                              f"got {entry['unit']!r}")  # fmt: skip
        values = {k: float(v) if RESULT_KEYS[k] is float else v for k, v in entry.items()}
        results.append(PaperResult(**(values | {"pm": None if pm is None else float(pm), "spread": spread,
                                                "runs": runs})))  # fmt: skip
    return Paper(path.stem, raw["title"], raw["citation"], raw["table"], raw["url"], raw.get("note", ""),
                 tuple(missing), dict(raw.get("protocol", {})), tuple(results))  # fmt: skip


def _spread(raw: dict[str, Any], table: tuple[str | None, int | None], where: str) -> tuple[str, int | None]:
    """(spread, runs) of a table, or of a cell (its own keys over the table's `table`): a spread kind
    not one of SPREADS, runs < 1, or a standard error without runs is one line."""
    spread, runs = raw.get("spread", table[0]), raw.get("runs", table[1])
    if spread not in SPREADS:
        raise ConfigError(f"{where} 'spread' must be one of {', '.join(SPREADS)} (what the ± is), got {spread!r}")
    if runs is not None and runs < 1:
        raise ConfigError(f"{where} 'runs' must be >= 1, got {runs}")
    if spread == "se" and runs is None:
        raise ConfigError(f"{where} spread 'se' needs 'runs' (std = se * sqrt(runs))")
    return spread, runs


def _check_fields(
    raw: dict[str, Any], kinds: dict[str, type], required: tuple[str, ...], where: str, what: str
) -> None:
    for key, value in raw.items():
        if key not in kinds:
            raise ConfigError(f"{where} {unknown_name_message(what, key, list(kinds))}")
        kind = kinds[key]
        ok = (isinstance(value, (int, float)) and not isinstance(value, bool)) if kind is float else (
            isinstance(value, kind) and (kind is bool or not isinstance(value, bool)))  # fmt: skip
        if not ok:
            raise ConfigError(f"{where} '{key}' must be {_KIND_NAMES[kind]}, got {value!r}")
    for key in required:
        if key not in raw:
            raise ConfigError(f"{where} '{key}' is required")


_KIND_NAMES = {str: "a string", float: "a number", int: "an integer", bool: "true or false", list: "a list",
               dict: "a table"}  # fmt: skip
