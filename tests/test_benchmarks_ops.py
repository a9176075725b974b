"""benchmarks/ops.py's operator counter at toy sizes: counts repeat exactly from step to step, and a
vmapped group dispatches per step what a group of one does plus each member's own random draws.

The data are uniform noise of MNIST's shape: which operators run does not depend on pixel values."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections import Counter
from pathlib import Path
from types import ModuleType

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
CPU = torch.device("cpu")
SHAPE = (1, 28, 28)
# what one member of an mlp/mnist group draws from its own streams per generator step (n_critic 1,
# no penalty): its real batch's indices (randint), D's and G's z (randn), and its real batch's
# slice handed to the penalty's noise draw (select)
PER_MEMBER = {"aten.randint.generator": 1, "aten.randn.generator": 2, "aten.select.int": 1}


@pytest.fixture(scope="module")
def ops() -> ModuleType:
    """benchmarks/ops.py by its path: the tests also run against the installed wheel, without benchmarks/
    on sys.path (the checkout's root is not put there: its lossbench would shadow the installed one).
    The benchmarks package is loaded from its folder, so ops.py's `from benchmarks import common` works."""
    if "benchmarks" not in sys.modules:
        spec = importlib.util.spec_from_file_location("benchmarks", BENCHMARKS / "__init__.py",
                                                      submodule_search_locations=[str(BENCHMARKS)])  # fmt: skip
        package = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = package
        spec.loader.exec_module(package)
    return importlib.import_module("benchmarks.ops")


def counts(ops: ModuleType, size: int, stacked: bool, steps: int = 2) -> list[Counter]:
    cfg = ops.configure("mlp/mnist", batch_size=4)
    x = torch.rand(64, *SHAPE) * 2 - 1
    group = ops.build(cfg, x, SHAPE, CPU, size, stacked)
    return ops.count_steps(group, warmup=1, steps=steps)


def by_name(c: Counter) -> Counter:
    return Counter({str(op): n for op, n in c.items()})


def test_counts_repeat_exactly_and_hold_both_optimiser_steps(ops: ModuleType) -> None:
    per_step = counts(ops, 1, stacked=False, steps=3)
    assert per_step[0] == per_step[1] == per_step[2]
    total, views = ops.split_views(per_step[0])
    assert total > views > 0
    assert by_name(per_step[0])["aten._fused_adam_.default"] == 2  # one D step, one G step, fused Adam


def test_a_vmapped_group_adds_only_each_members_draws(ops: ModuleType) -> None:
    """ops(S) = a + b S: from one member to two and from two to three, exactly PER_MEMBER more."""
    one, two, three = (by_name(counts(ops, s, stacked=True)[0]) for s in (1, 2, 3))
    assert +(two - one) == PER_MEMBER and not +(one - two)
    assert +(three - two) == PER_MEMBER and not +(two - three)
