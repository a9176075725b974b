"""The whole generator step as one traced function (--whole-step): zero graph breaks per step.

On the stacked path a step is eager Python around vmapped parts, and three things in it end every
captured graph (BENCHMARKS.md, "graph breaks"): the per-member draws (a torch.Generator cannot enter
a graph), backward() and torch's optimiser step. Here one generator step of a group (n_critic D
steps, then G's step: lossbench.train.updates.alternating) is split in two:

1. `draw_inputs`: every member's random inputs for the step, drawn from its own streams by the
   calls `updates.d_step` and `updates.g_step` make (`Draws.for_d_step`, `Draws.for_g_step`), so
   the numbers are the same;
2. `alternating`: a pure function of (G's and D's stacked parameters and buffers, their Adam moments
   and step count, the per-member hyperparameters, those inputs) that returns the new ones and the
   accumulators. Gradients come from torch.func (grad for D's objective, vjp through G's logits, so
   dL_G/dd_f is there for the learning signal as on the eager path), Adam is member_adam's formula
   (`adam_moved`, per-member lr and betas, bias corrections from a step count on the device), WGAN's
   clip a clamp. It draws nothing, calls no backward() and mutates no input.

Simultaneous updates (`updates.simultaneous`) have their pair too: `draw_joint`, and `simultaneous`,
which takes both players' gradients at the same point from one vjp of the joint objective.

`WholeStep` compiles its own copy of the rule's pure step (`own_code`: one compile cache per group)
with fullgraph=True under the run's compile mode (eager without one), so --compile traces one graph
per step and --cuda-graphs replays one CUDA graph per step, and writes the returned tensors back into
the players' own storage: checkpoints, evaluation, the EMA and a member's slice read them as on every
other path. The parameters and moments equal those of the eager stacked path with MemberAdam (the
same operations, bit for bit in eager mode).

Scope: alternating and simultaneous updates with Adam (the optimiser is always MemberAdam: one flat
state per player), any loss, penalty, n_critic, pack, instance noise and weight clip, batch norm in
either net; one seed trains as a group of one. Not consensus (its double backward through the
gradients), not other optimisers: lossbench.train.members.check_whole_step refuses them in one line.
The loop makes a state's WholeStep on its first call (lossbench.train.loop.step_function).
"""

from __future__ import annotations

import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

import torch
from torch import Tensor
from torch.func import grad, vjp

from lossbench.gan.member_adam import FlatState, MemberAdam, adam_moved, coefficients, per_member
from lossbench.gan.update_rules import RULES as UPDATE_RULES
from lossbench.registry import Registry
from lossbench.train.draws import DInputs, Draws, GInputs
from lossbench.train.players import Stacked, pack
from lossbench.train.speed import Compiler
from lossbench.train.updates import g_row

if TYPE_CHECKING:
    from lossbench.config import TrainConfig

Params = dict[str, Tensor]


class StepState(Protocol):
    """What the step reads and advances of lossbench.train.state.TrainState (which holds a WholeStep,
    so this module does not import it)."""

    acc_d: Tensor
    acc_g: Tensor
    step: int
    window: int


class Optim(NamedTuple):
    """A player's Adam state: the flat moments (S, N), the step count (a 0-d tensor on the device)
    and the per-member lr, beta1, beta2 (S,) in float64 on the device."""

    exp_avg: Tensor
    exp_avg_sq: Tensor
    step: Tensor
    lr: Tensor
    beta1: Tensor
    beta2: Tensor
    eps: float


class Tensors(NamedTuple):
    """What a step reads and returns: both players' parameters, buffers and Adam state, and the
    accumulators."""

    gp: Params
    gb: Params
    dp: Params
    db: Params
    opt_g: Optim
    opt_d: Optim
    acc_d: Tensor
    acc_g: Tensor


def draw_inputs(P: Stacked, draws: Draws, n_critic: int) -> tuple[tuple[DInputs, ...], GInputs]:
    """Every member's draws for one alternating generator step: n_critic D steps', then G's
    (Draws.for_d_step, for_g_step: the calls updates.d_step and g_step make)."""
    return tuple(draws.for_d_step(P) for _ in range(n_critic)), draws.for_g_step(P)


def adam(params: Params, grads: Params, opt: Optim) -> tuple[Params, Optim, Tensor]:
    """One Adam step of every member (MemberAdam's, on the flat moments): the new parameters, the new
    state and each member's gradient norm ||g||_2 (S,), off the same gathered gradient."""
    names = list(params)
    S = opt.exp_avg.shape[0]
    flat = torch.cat([grads[n].reshape(S, -1) for n in names], dim=1)
    step = opt.step + 1
    c = {k: v[:, None].to(flat.dtype) for k, v in coefficients(step, opt.lr, opt.beta1, opt.beta2).items()}
    m, v, delta = adam_moved(flat, opt.exp_avg, opt.exp_avg_sq, c, opt.eps)
    parts = delta.split([params[n][0].numel() for n in names], dim=1)
    new = {n: params[n] - d.view(params[n].shape) for n, d in zip(names, parts)}
    return new, opt._replace(exp_avg=m, exp_avg_sq=v, step=step), flat.norm(dim=1)


def d_step(P: Stacked, s: Tensors, inp: DInputs, clip: Tensor | None) -> Tensors:
    """One D step on L_D + weight * penalty (updates.d_step's), its statistics added to acc_d."""
    x, gb = P.batched_fake(s.gp, s.gb, inp.z)
    fake = pack(x if inp.e is None else x + inp.e, P.pack, batch_dim=1)

    def objective(dp: Params) -> tuple[Tensor, tuple[Tensor, Params]]:
        total, stats, db = P.batched_d_objective(dp, s.db, P.weight, inp.real, fake, inp.u)
        return total.sum(), (stats, db)  # the sum over members: each member's parameters get their own gradient

    grads, (stats, db) = grad(objective, has_aux=True)(s.dp)
    dp, opt_d, norm = adam(s.dp, grads, s.opt_d)
    if clip is not None:
        dp = _clipped(dp, clip)
    acc_d = s.acc_d + torch.cat([stats, norm[:, None]], dim=1)
    return s._replace(gb=gb, dp=dp, db=db, opt_d=opt_d, acc_d=acc_d)


def g_step(P: Stacked, s: Tensors, inp: GInputs) -> Tensors:
    """G's step on L_G(D(G(z))) (updates.g_step's): the gradient pulled back through G's logits from
    dL_G/dd_f, which is also the learning signal's input; its row added to acc_g."""

    def logits(gp: Params) -> tuple[Tensor, tuple[Params, Params]]:
        out, gb, db = P.batched_g_logits(gp, s.gb, s.dp, s.db, inp.z, inp.real, inp.e)
        return out, (gb, db)

    out, pullback, (gb, db) = vjp(logits, s.gp, has_aux=True)
    d_fake, d_real = out if P.needs_real else (out, None)
    d_fake_grad, g_loss = grad(lambda f: _g_loss(P, f, d_real), has_aux=True)(d_fake)
    (grads,) = pullback((d_fake_grad, torch.zeros_like(d_real)) if P.needs_real else d_fake_grad)
    gp, opt_g, norm = adam(s.gp, grads, s.opt_g)
    acc_g = s.acc_g + g_row(P, g_loss, d_fake, d_fake_grad, norm)
    return s._replace(gp=gp, gb=gb, db=db, opt_g=opt_g, acc_g=acc_g)


def alternating(P: Stacked, s: Tensors, inputs: tuple[tuple[DInputs, ...], GInputs]) -> Tensors:
    """n_critic D steps, then G's step: the new tensors, the inputs untouched. P gives the vmapped
    functions, the loss, penalty weight and pack (constants of the trace), never its tensors."""
    d, g = inputs
    for inp in d:
        s = d_step(P, s, inp, P.clip)
    return g_step(P, s, g)


def draw_joint(P: Stacked, draws: Draws, n_critic: int) -> DInputs:
    """The draws of one simultaneous step: a D step's (updates.simultaneous takes the same)."""
    return draws.for_d_step(P)


def simultaneous(P: Stacked, s: Tensors, inp: DInputs) -> Tensors:
    """Both players' gradients at (theta, psi) on the same fakes (`updates.simultaneous`), from one
    vjp of the joint objective pulled back twice: D's total for g_psi, dL_G/dd_f for g_theta."""

    def joint(gp: Params, dp: Params) -> tuple[tuple[Tensor, Tensor, Tensor], tuple[Tensor, Params, Params]]:
        out = P.batched_joint(gp, s.gb, dp, s.db, P.weight, inp.real, inp.z, inp.e, inp.u)
        total, stats, d_real, d_fake, gb, db = out
        return (total, d_fake, d_real), (stats, gb, db)

    (total, d_fake, d_real), pullback, (stats, gb, db) = vjp(joint, s.gp, s.dp, has_aux=True)
    d_fake_grad, g_loss = grad(lambda f: _g_loss(P, f, d_real), has_aux=True)(d_fake)
    zero = (torch.zeros_like(total), torch.zeros_like(d_fake), torch.zeros_like(d_real))
    g_grads, _ = pullback((zero[0], d_fake_grad, zero[2]))
    _, d_grads = pullback((torch.ones_like(total), zero[1], zero[2]))
    dp, opt_d, d_norm = adam(s.dp, d_grads, s.opt_d)
    gp, opt_g, g_norm = adam(s.gp, g_grads, s.opt_g)
    if P.clip is not None:
        dp = _clipped(dp, P.clip)
    acc_d = s.acc_d + torch.cat([stats, d_norm[:, None]], dim=1)
    acc_g = s.acc_g + g_row(P, g_loss, d_fake, d_fake_grad, g_norm)
    return Tensors(gp, gb, dp, db, opt_g, opt_d, acc_d, acc_g)


def _g_loss(P: Stacked, d_fake: Tensor, d_real: Tensor) -> tuple[Tensor, Tensor]:
    """(sum over members of L_G, L_G per member) on the fakes' logits (and D(x) for relativistic losses)."""
    per_member_loss = P.batched_g_loss(d_fake, d_real if P.needs_real else None)
    return per_member_loss.sum(), per_member_loss


def _clipped(dp: Params, clip: Tensor) -> Params:
    """WGAN's clip: each member's weights into [-c, c] (`updates.clip_weights`)."""
    return {n: p.clamp(-per_member(clip, p), per_member(clip, p)) for n, p in dp.items()}


@dataclass(frozen=True)
class Rule:
    """An update rule's whole-step form: its draws (players, draws, n_critic) -> inputs, and its
    pure step (players, tensors, inputs) -> tensors."""

    draw: Callable[[Stacked, Draws, int], Any]
    step: Callable[[Stacked, Tensors, Any], Tensors]


RULES: Registry[Rule] = Registry("update rule with a whole step", key="updates")
RULES.add("alternating", Rule(draw_inputs, alternating))
RULES.add("simultaneous", Rule(draw_joint, simultaneous))
assert set(RULES.names()) == set(UPDATE_RULES.names()), "a whole step for every update rule (train.members checks none)"


def own_code(fn: Callable[..., Any]) -> Callable[..., Any]:
    """fn as a new function with its own code object. torch.compile keeps a function's compiled
    graphs on its code object, at most torch._dynamo.config.recompile_limit (8) of them, and each
    group (another loss, penalty, net or n_critic) needs its own graph: with fullgraph=True the ninth
    group of a process would fail. A code object per WholeStep gives each group its own cache, freed
    with it."""
    return types.FunctionType(fn.__code__.replace(), fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__)


class WholeStep:
    """The step function the loop calls (updates.StepFn's signature) for players built with
    --whole-step: draws, one call of the (compiled) pure step, the results written back."""

    def __init__(self, P: Stacked, updates: str, compile_mode: str | None) -> None:
        if not isinstance(P.opt_g, MemberAdam) or not isinstance(P.opt_d, MemberAdam):
            raise ValueError("the whole step keeps each player's Adam state flat: build the players with MemberAdam")
        self.P = P
        self.rule = RULES.get(updates)
        self.compiler = Compiler(compile_mode)
        self.fn = self.compiler(own_code(self.rule.step), fullgraph=True)
        # views without autograd history of the players' own tensors: the step reads them, and the
        # results are copied into the same storage (a checkpoint's load copies into it too)
        self._gp, self._dp = ({n: t.detach() for n, t in d.items()} for d in (P.g_params, P.d_params))
        self._optims: dict[str, tuple[FlatState, Optim]] = {}  # per player ("g", "d"): its flat state, the step's view

    def _optim(self, player: str, opt: MemberAdam) -> Optim:
        """The player's Adam state for the step: its flat moments, and its step count and per-member
        values on the device, copied there once per flat state (the first step, after a load)."""
        flat = opt.flat(0)
        seen = self._optims.get(player)
        if seen is None or seen[0] is not flat:
            group, device = opt.param_groups[0], flat.exp_avg.device
            lr, beta1, beta2 = (group[k].to(device) for k in ("lr", "beta1", "beta2"))
            step = flat.step.to(device, torch.float64, copy=True)  # its own: the host count advances apart
            seen = self._optims[player] = (flat, Optim(flat.exp_avg, flat.exp_avg_sq, step, lr, beta1, beta2,
                                                       group["eps"]))  # fmt: skip
        return seen[1]

    def tensors(self, state: StepState) -> Tensors:
        """The step's inputs from the players and the state."""
        P = self.P
        return Tensors(self._gp, P.g_buffers, self._dp, P.d_buffers, self._optim("g", P.opt_g),
                       self._optim("d", P.opt_d), state.acc_d, state.acc_g)  # fmt: skip

    def __call__(self, P: Stacked, draws: Draws, state: StepState, t: TrainConfig) -> None:
        inputs = self.rule.draw(P, draws, t.n_critic)
        s = self.tensors(state)
        self.compiler.begin_step()
        with torch.no_grad():
            new = self.fn(P, s, inputs)
            self._write_back(s, new, {"g": 1, "d": t.n_critic})  # D steps n_critic times (simultaneous: once)
        state.step += 1
        state.window += 1

    def _write_back(self, s: Tensors, new: Tensors, steps: dict[str, int]) -> None:
        """The returned tensors into the players' and the state's storage, one foreach copy; each
        player's host step count advances by its `steps`, as its device count did."""
        pairs = [(s.gp, new.gp), (s.gb, new.gb), (s.dp, new.dp), (s.db, new.db)]
        dst = [t for old, _ in pairs for t in old.values()]
        src = [fresh[n] for old, fresh in pairs for n in old]
        for old, fresh in ((s.opt_g, new.opt_g), (s.opt_d, new.opt_d)):
            dst += [old.exp_avg, old.exp_avg_sq, old.step]
            src += [fresh.exp_avg, fresh.exp_avg_sq, fresh.step]
        dst += [s.acc_d, s.acc_g]
        src += [new.acc_d, new.acc_g]
        torch._foreach_copy_(dst, src)
        for player, (flat, _) in self._optims.items():
            flat.step += steps[player]
