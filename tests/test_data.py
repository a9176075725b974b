"""Data sets: sizes known without loading, and MNIST files that are present but damaged give one clear
line (never torchvision's shape error, never a download attempt over the bad files)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lossbench.errors import DataError
from lossbench.gan import data

FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def test_sizes_are_known_without_loading(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    expected = {"mnist": (60000, 10000), "fashion-mnist": (60000, 10000), "cifar10": (50000, 10000),
                "ring8": (100000, 100000), "grid25": (100000, 100000), "dirac": (1024, 1024),
                "stacked-mnist": (128000, 26000)}  # fmt: skip
    assert set(expected) == set(data.names())
    monkeypatch.setenv("LOSSBENCH_DATA_DIR", str(tmp_path / "nothing-here"))  # loading would fail (no network)
    assert {name: (data.size(name, "train"), data.size(name, "test")) for name in expected} == expected
    for name in ("ring8", "dirac"):
        assert data.size(name, "test") == len(data.load(name, split="test").x)
    with pytest.raises(DataError, match="unknown split 'valid'; valid: train, test"):
        data.size("mnist", "valid")


def test_a_source_without_sizes_is_counted_by_loading(monkeypatch: pytest.MonkeyPatch) -> None:
    source = data.DATASETS.get("dirac")
    monkeypatch.setitem(data.DATASETS._entries, "dirac2", data.DataSource(source.loader, "dirac", (1,), False))
    assert data.size("dirac2", "train") == 1024


def test_mnist_size_matches_its_files(mnist_dir: str) -> None:
    assert data.size("mnist", "test") == len(data.load("mnist", mnist_dir, "test").x)


def damaged_copy(mnist_dir: str, tmp_path: Path, name: str, keep_bytes: int | None = None, header: bytes = b"") -> Path:
    """A data root whose MNIST/raw links three good files and holds a damaged copy of `name`."""
    raw = tmp_path / "root" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for file in FILES:
        source = Path(mnist_dir) / "MNIST" / "raw" / file
        if file != name:
            os.symlink(source, raw / file)
            continue
        body = source.read_bytes()
        (raw / file).write_bytes(header + body[len(header) : keep_bytes])
    return tmp_path / "root"


def test_truncated_mnist_is_one_clear_line(mnist_dir: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = damaged_copy(mnist_dir, tmp_path, "train-images-idx3-ubyte", keep_bytes=1_000_000)
    with caplog.at_level(logging.WARNING), pytest.raises(DataError) as info:
        data.load("mnist", root, "test")  # any damaged file is named, whichever split is asked for
    message = str(info.value)
    assert message == (f"mnist files under {root / 'MNIST' / 'raw'} are truncated or corrupt "
                       "(train-images-idx3-ubyte: 1,000,000 bytes, expected 47,040,016); "
                       "delete them to download again, or point --data-dir at a good copy")  # fmt: skip
    assert "downloading" not in caplog.text  # never the 'not found; downloading' path


def test_unreadable_mnist_of_the_right_size_is_one_clear_line(mnist_dir: str, tmp_path: Path,
                                                             caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    root = damaged_copy(mnist_dir, tmp_path, "t10k-labels-idx1-ubyte", header=b"\xff\xff\xff\xff")  # bad magic
    assert len(data.load("mnist", root, "train").x) == 60000  # the train split's files are good
    with caplog.at_level(logging.WARNING), pytest.raises(DataError) as info:
        data.load("mnist", root, "test")
    assert str(info.value) == (f"mnist files under {root} could not be read (AssertionError); "
                               "delete them to download again, or point --data-dir at a good copy")  # fmt: skip
    assert "downloading" not in caplog.text


def test_truncated_mnist_through_the_command(mnist_dir: str, tmp_path: Path) -> None:
    root = damaged_copy(mnist_dir, tmp_path, "t10k-labels-idx1-ubyte", keep_bytes=5000)
    proc = subprocess.run([sys.executable, "-m", "lossbench", "run", "--steps", "1", "--metrics", "none",
                           "--data-dir", str(root), "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    (error,) = [line for line in proc.stderr.splitlines() if line.startswith("Error")]
    assert "are truncated or corrupt (t10k-labels-idx1-ubyte: 5,000 bytes, expected 10,008)" in error
