"""The store's one-line errors: an exception said in one line (lossbench.tracking.first_line)."""

from __future__ import annotations

from lossbench.tracking import first_line


def test_an_exception_is_said_in_its_first_line_or_its_type_within_the_limit() -> None:
    assert first_line(ValueError("  no such table: runs\n  at line 3\n")) == "no such table: runs"
    assert first_line(KeyError()) == "KeyError" and first_line(OSError("   \n ")) == "OSError"
    assert first_line(RuntimeError("x" * 300)) == "x" * 200 and first_line(RuntimeError("abcdef"), limit=3) == "abc"
