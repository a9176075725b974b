"""Checkpoint validation: a checkpoint read from disk is compared with what the state it is loaded
into expects before any of it is used, so no value from the file reaches a kernel unchecked (an
optimiser moment of the wrong shape sent to Adam's fused or foreach kernels reads memory out of
bounds: a segmentation fault, not an error).

`expected(cfg, device)` builds the template of one seed's checkpoint for a configuration, without
memory or random draws: G and D on the meta device, one optimiser step on meta twins of their
parameters (so every per-parameter optimiser entry is there, with its shape and dtype), the random
streams' states on the run's device, the accumulators and the step's range. `mismatch(state,
template)` is the pure comparison; it names the first difference, or returns None:

- every key present, none extra (the module states, the optimisers' `state` and `param_groups`);
- every tensor: a dense tensor on the CPU (checkpoints are read with map_location cpu) of the
  template's shape and dtype;
- optimiser state per parameter: the index is one of the optimiser's parameters, its entries are the
  template's (Adam: exp_avg and exp_avg_sq of the parameter's shape and dtype, step a float32
  scalar); a parameter with no entry at all is allowed (it had no gradient yet: torch starts it);
- parameter groups: as many as the template's, each with the same parameter indices and the same
  hyperparameter keys; numbers finite numbers, betas as many numbers, the switches that choose the
  algorithm (amsgrad, maximize, capturable, ...) equal to the template's; `fused` and `foreach` may
  differ (they pick the kernels, which --fused-optim changes between runs), but must be a bool or None;
- step and window: ints (not bools, floats or tensors), 0 <= step <= the configured steps,
  0 <= window <= step;
- random streams: a subset of the template's names (a stream added since the file was written keeps
  its start), each state a 1-D uint8 tensor of the size the device's generator takes;
- accumulators: 1-D float32 with at least one and at most the template's columns (checkpoints from
  before the learning signals hold fewer).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from lossbench import rng
from lossbench.config import RunConfig, build_models
from lossbench.gan import data, optim
from lossbench.train.state import D_KEYS, G_KEYS

KERNEL_CHOICES = ("fused", "foreach")  # group switches that pick kernels, not the algorithm
MODULES = ("G", "D")
AVERAGE = "G_ema"  # --ema: the average of G's parameters (lossbench.train.ema), by name
OPTIMIZERS = ("opt_g", "opt_d")
STREAMS, ACCUMULATORS = "streams", ("acc_d", "acc_g")
BATCHES = "batches"  # the seed's batch sampler (lossbench.gan.batches); checkpoints before batching hold none


@dataclass(frozen=True)
class Expected:
    """One seed's checkpoint as the state it is loaded into takes it."""

    template: dict[str, Any]  # module states, optimiser states (filled), streams and accumulators
    steps: int  # the configured steps: a checkpoint's step lies in [0, steps]
    batches_required: bool = False  # an epoch batching: the sampler's state must be there (no older file lacks it)
    examples: int | None = None  # the training set's size, where the registry knows it without loading


def expected(cfg: RunConfig, device: torch.device | str | None) -> Expected:
    """The template for `cfg` on `device` (None or "auto": a device not known yet; the streams' sizes
    are then not checked here, but by the loader on the machine that trains)."""
    if device == "auto":
        device = None
    return _expected(cfg, None if device is None else str(torch.device(device)))


@functools.lru_cache(maxsize=8)
def _expected(cfg: RunConfig, device: str | None) -> Expected:
    with torch.device("meta"):  # shapes and dtypes only: no memory, no random draws
        G, D = build_models(cfg)
    factory, t = optim.OPTIMIZERS.get(cfg.train.optimizer), cfg.train
    template: dict[str, Any] = {
        "G": G.state_dict(),
        "D": D.state_dict(),
        "opt_g": _optimizer_template(lambda ps: factory(ps, t.lr_g, (t.beta1, t.beta2), False), G),
        "opt_d": _optimizer_template(lambda ps: factory(ps, t.lr_d, (t.beta1, t.beta2), False), D),
        "step": 0,
        "window": 0,
        STREAMS: {name: _generator_state(device) for name in rng.STREAMS},
        "acc_d": torch.zeros(len(D_KEYS)),
        "acc_g": torch.zeros(len(G_KEYS)),
        BATCHES: {},
    }
    if cfg.train.ema > 0:
        template[AVERAGE] = {name: p for name, p in G.named_parameters()}
    sizes = data.DATASETS.get(cfg.data.dataset).sizes
    return Expected(template, cfg.train.steps, cfg.train.batching != "iid", sizes.get("train"))


def _generator_state(device: str | None) -> Tensor | None:
    """A fresh generator's state on `device`: its size is what set_state takes there."""
    if device is None:
        return None
    try:
        return torch.Generator(device).get_state()
    except RuntimeError:  # a device this process cannot open (a driver planning for its workers)
        return None


def _optimizer_template(make: Any, module: torch.nn.Module) -> dict[str, Any]:
    """The optimiser's state after one step over meta twins of the module's parameters."""
    twins = [torch.nn.Parameter(torch.empty_like(p, device="meta")) for p in module.parameters()]
    for p in twins:
        p.grad = torch.zeros_like(p)
    opt = make(twins)
    opt.step()
    return opt.state_dict()


def mismatch(state: Any, exp: Expected) -> str | None:
    """The first way `state` differs from what `exp` takes (see the module's docstring), or None."""
    if not isinstance(state, dict):
        return f"holds a {type(state).__name__}, not a checkpoint's dictionary"
    t = exp.template
    if problem := _keys(state, {k: v for k, v in t.items() if k != BATCHES or k in state or exp.batches_required}, ""):
        return problem
    for key in (k for k in (*MODULES, AVERAGE) if k in t):
        if problem := _tensor_dict(state[key], t[key], key):
            return problem
    for key in OPTIMIZERS:
        if problem := _optimizer(state[key], t[key], key):
            return problem
    if problem := _integer(state["step"], "step", 0, exp.steps):
        return problem
    if problem := _integer(state["window"], "window", 0, state["step"]):
        return problem
    if problem := _streams(state[STREAMS], t[STREAMS]):
        return problem
    for key in ACCUMULATORS:
        if problem := _accumulator(state[key], t[key], key):
            return problem
    return _batches(state.get(BATCHES, {}), exp.examples)


def _where(prefix: str, key: Any) -> str:
    """How a message names an entry: G['0.weight'], opt_g.state[0].exp_avg, opt_d.param_groups[0].lr."""
    if isinstance(key, str) and key.isidentifier():
        return f"{prefix}.{key}" if prefix else key
    return f"{prefix}[{key!r:.60}]"


def _keys(found: Any, template: dict, where: str, subset: bool = False) -> str | None:
    """`found` is a dict with the template's keys (`subset`: some may be missing), and no other."""
    if not isinstance(found, dict):
        return f"{where or 'the checkpoint'} is a {type(found).__name__}, expected a dictionary"
    if not subset and (missing := [k for k in template if k not in found]):
        return f"{_where(where, missing[0])} is missing"
    if extra := [k for k in found if k not in template]:
        return f"{_where(where, extra[0])} is not expected (unknown key)"
    return None


def _shape(shape: torch.Size | tuple[int, ...]) -> str:
    return f"({', '.join(map(str, shape))}{',' if len(shape) == 1 else ''})"


def _tensor(found: Any, template: Tensor, where: str) -> str | None:
    if not isinstance(found, Tensor) or found.layout != torch.strided:
        what = type(found).__name__ if not isinstance(found, Tensor) else f"{found.layout} tensor"
        return f"{where} is a {what}, expected a tensor of shape {_shape(template.shape)}"
    if found.device.type != "cpu":
        return f"{where} is on {found.device}, expected the cpu (the map location)"
    if found.shape != template.shape:
        return f"{where} has shape {_shape(found.shape)}, expected {_shape(template.shape)}"
    if found.dtype != template.dtype:
        return f"{where} has dtype {found.dtype}, expected {template.dtype}"
    if found.is_floating_point() and not bool(torch.isfinite(found).all()):
        return f"{where} holds NaN or infinite values"
    return None


def _per_key(
    found: Any, template: dict[str, Any], where: str, check: Callable[[str, Any, Any, str], str | None]
) -> str | None:
    """The first problem of a dictionary against its template: a key missing or extra, else the first
    value that `check(key, value, wanted, where_of_value)` finds at fault."""
    if problem := _keys(found, template, where):
        return problem
    for key, want in template.items():
        if problem := check(key, found[key], want, _where(where, key)):
            return problem
    return None


def _tensor_dict(found: Any, template: dict[str, Tensor], where: str) -> str | None:
    return _per_key(found, template, where, lambda key, value, want, at: _tensor(value, want, at))


def _optimizer(found: Any, template: dict[str, Any], where: str) -> str | None:
    if problem := _keys(found, template, where):
        return problem
    groups, expected_groups = found["param_groups"], template["param_groups"]
    if not isinstance(groups, list):
        return f"{where}.param_groups is a {type(groups).__name__}, expected a list of {len(expected_groups)}"
    if len(groups) != len(expected_groups):
        return f"{where}.param_groups has {len(groups)} groups, expected {len(expected_groups)}"
    for i, (group, want) in enumerate(zip(groups, expected_groups)):
        if problem := _group(group, want, f"{where}.param_groups[{i}]"):
            return problem
    per_param, state = template["state"], found["state"]
    if not isinstance(state, dict):
        return f"{where}.state is a {type(state).__name__}, expected a dictionary"
    n = sum(len(g["params"]) for g in expected_groups)
    for index, entries in state.items():
        at = f"{where}.state[{index!r:.40}]"
        if type(index) is not int or not 0 <= index < n:
            return f"{at} names no parameter (the optimiser has {n}, indices 0 to {n - 1})"
        if index not in per_param:
            return f"{at} is not expected (this optimiser keeps no state per parameter)"
        if problem := _tensor_dict(entries, per_param[index], at):
            return problem
        if "step" in per_param[index] and bool((entries["step"] < 0).any()):
            return f"{_where(at, 'step')} is negative, expected a count of steps taken"
    return None


def _group(found: Any, template: dict[str, Any], where: str) -> str | None:
    return _per_key(found, template, where, _group_value)


def _group_value(key: str, value: Any, want: Any, at: str) -> str | None:
    """One hyperparameter of an optimiser's param group against the template's."""
    if key == "params":  # compared only once known to be a list of ints (a tensor's == is no bool)
        if type(value) is not list or not all(type(i) is int for i in value) or value != want:
            return f"{at} is {value!r:.80}, expected {want!r:.80}"
    elif key in KERNEL_CHOICES:
        if value is not None and type(value) is not bool:
            return f"{at} is {value!r:.80}, expected true, false or none"
    elif want is None or isinstance(want, bool):
        if value is not want:
            return f"{at} is {value!r:.80}, expected {want!r}"
    elif _is_number(want):
        if not _is_number(value):
            return f"{at} is {value!r:.80}, expected a finite number"
        if key in _POSITIVE and value <= 0 or value < 0:
            return f"{at} is {value!r:.80}, expected a {'positive' if key in _POSITIVE else 'non-negative'} number"
    elif isinstance(want, tuple):
        if not isinstance(value, (tuple, list)) or len(value) != len(want) or not all(map(_is_number, value)):
            return f"{at} is {value!r:.80}, expected {len(want)} finite numbers"
        if key == "betas" and not all(0 <= b < 1 for b in value):
            return f"{at} is {value!r:.80}, expected numbers in [0, 1)"
    elif type(value) is not type(want) or value != want:
        return f"{at} is {value!r:.80}, expected {want!r}"
    return None


_POSITIVE = {"lr", "eps"}  # an optimiser's hyperparameters that must be > 0; every other number must be >= 0


def _is_number(x: Any) -> bool:
    return type(x) in (int, float) and math.isfinite(x)


def _integer(found: Any, where: str, low: int, high: int) -> str | None:
    if type(found) is not int:
        return f"{where} is {type(found).__name__} {found!r:.40}, expected an integer in [{low}, {high}]"
    if not low <= found <= high:
        return f"{where} is {found:.6g}, expected an integer in [{low}, {high}]"
    return None


def _batches(found: Any, examples: int | None) -> str | None:
    """A sampler's state: empty (iid, or before the first draw), or an epoch's permutation of the
    training set's n inputs (int64, each index once; n = `examples` where known) and the inputs of it
    already read (0..n)."""
    if not isinstance(found, dict) or not found:
        return None if found == {} else f"{BATCHES} is a {type(found).__name__}, expected a dictionary"
    if problem := _keys(found, {"order": None, "pos": None}, BATCHES):
        return problem
    order = found["order"]
    if not isinstance(order, Tensor) or order.layout != torch.strided or order.device.type != "cpu":
        return f"{BATCHES}.order is a {type(order).__name__}, expected a tensor of indices on the cpu"
    if order.dtype != torch.int64 or order.dim() != 1:
        return f"{BATCHES}.order has dtype {order.dtype} and shape {_shape(order.shape)}, expected int64 of shape (n,)"
    if examples is not None and order.numel() != examples:
        return f"{BATCHES}.order has {order.numel()} indices, expected a permutation of the training set's {examples}"
    if not torch.equal(torch.sort(order).values, torch.arange(order.numel())):
        return f"{BATCHES}.order is not a permutation of 0..{order.numel() - 1}"
    return _integer(found["pos"], f"{BATCHES}.pos", 0, order.numel())


def _streams(found: Any, template: dict[str, Tensor | None]) -> str | None:
    if problem := _keys(found, template, STREAMS, subset=True):
        return problem
    for name, want in found.items():
        at = _where(STREAMS, name)
        if not isinstance(want, Tensor) or want.layout != torch.strided or want.dim() != 1:
            return f"{at} is not a random generator's state (a 1-D uint8 tensor)"
        if want.dtype != torch.uint8:
            return f"{at} has dtype {want.dtype}, expected torch.uint8 (a random generator's state)"
        size = template[name]
        if size is not None and want.shape != size.shape:
            return f"{at} has {want.numel()} bytes, expected {size.numel()} (the device's random generator state)"
    return None


def _accumulator(found: Any, template: Tensor, where: str) -> str | None:
    if not isinstance(found, Tensor) or found.layout != torch.strided or found.dim() != 1:
        return f"{where} is not a 1-D tensor of at most {template.numel()} values"
    if not 1 <= found.numel() <= template.numel() or found.dtype != template.dtype:
        return f"{where} has shape {_shape(found.shape)} and dtype {found.dtype}, expected at most " \
               f"{template.numel()} values of {template.dtype}"  # fmt: skip
    if found.device.type != "cpu":
        return f"{where} is on {found.device}, expected the cpu (the map location)"
    return None
