"""Update rules: how the two players take their turns in one generator step. A registry of step
functions (`--updates`); the loop calls the configured one and never branches on which it is.

alternating (Goodfellow et al. 2014, Algorithm 1): n_critic D steps, each on fresh real and fake
    batches, then one G step on fresh noise against the D just updated.
simultaneous (ALI's algorithm, Dumoulin et al. 2017, used by PacGAN; the simultaneous gradient
    descent of Mescheder et al. 2017 and 2018): one real batch, one z draw, one G forward; both
    players' gradients at the same parameters on the same fakes,

        g_psi = grad_psi (L_D + weight * penalty),   g_theta = grad_theta L_G,

    then both optimiser steps. One step of each player, so n_critic must be 1. With consensus
    gamma > 0 (lossbench.train.consensus) each gradient gains gamma * grad (1/2 ||v||^2).

Every step function takes (players, draws, state, train config), adds its statistics to the
state's accumulators and advances state.step by one generator step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from lossbench.gan.member_adam import per_member
from lossbench.gan.update_rules import RULES
from lossbench.registry import Registry
from lossbench.train.consensus import consensus_gradients
from lossbench.train.counterfactual import counterfactual_signals
from lossbench.train.draws import Draws
from lossbench.train.players import Players, learning_signal, pack

if TYPE_CHECKING:
    from lossbench.config import TrainConfig
    from lossbench.train.state import TrainState

StepFn = Callable[["Players", Draws, "TrainState", "TrainConfig"], None]


UPDATES: Registry[StepFn] = Registry("update rule", key="updates")  # the names of lossbench.gan.update_rules


def clip_weights(P: Players) -> None:
    """WGAN: D's weights into [-c, c] after its step, c = P.clip (per member in a group of
    configurations: (S,)); None is off."""
    c = P.clip
    if c is None:
        return
    with torch.no_grad():
        for p in P.d_parameters():
            bound = per_member(c, p) if torch.is_tensor(c) else c
            p.clamp_(-bound, bound)


def d_step(P: Players, draws: Draws, state: TrainState) -> None:
    """One discriminator step on L_D + weight * penalty, for every seed at once (D's inputs packed)."""
    inp = draws.for_d_step(P)
    x = P.fake(inp.z)
    fake = pack(x if inp.e is None else x + inp.e, P.pack, batch_dim=1)
    total, stats = P.d_objective(inp.real, fake, inp.u)
    P.opt_d.zero_grad(set_to_none=True)
    total.sum().backward()  # the sum over seeds: each seed's parameters get their own gradient
    grad_norm = P.grad_norms(P.d_parameters())  # before any clipping: what the loss asked of D
    P.opt_d.step()
    clip_weights(P)
    state.acc_d += torch.cat([stats, grad_norm[:, None]], dim=1)


def g_row(P: Players, g_loss: Tensor, d_fake: Tensor, d_fake_grad: Tensor, grad_norm: Tensor) -> Tensor:
    """The G step's accumulator row per seed (S, len(G_KEYS)): L_G, g_signal (off the trained loss's
    dL_G/dd_f), ||grad_G L_G||, then the counterfactual signals on the same d_f (train.counterfactual)."""
    signal = learning_signal(d_fake_grad).reshape(P.size)
    own = torch.stack([g_loss.detach(), signal, grad_norm], dim=1)
    return torch.cat([own, counterfactual_signals(d_fake.reshape(P.size, -1))], dim=1)


def g_step(P: Players, draws: Draws, state: TrainState) -> None:
    """One generator step on L_G(D(G(z))) (with D(x) on a real batch for relativistic losses), and
    its learning signal: what the loss passes to each fake's logit, and ||grad_G L_G||."""
    z, real, e = draws.for_g_step(P)
    g_loss, d_fake = P.g_objective(z, real, e)
    d_fake.retain_grad()  # dL_G/dd_f comes out of this backward pass, at no extra cost
    P.opt_g.zero_grad(set_to_none=True)
    g_loss.sum().backward()
    grad_norm = P.grad_norms(P.g_parameters())
    P.opt_g.step()
    state.acc_g += g_row(P, g_loss, d_fake, d_fake.grad, grad_norm)
    state.step += 1
    state.window += 1


def alternating(P: Players, draws: Draws, state: TrainState, t: TrainConfig) -> None:
    """n_critic D steps, then one G step against the updated D."""
    for _ in range(t.n_critic):
        d_step(P, draws, state)
    g_step(P, draws, state)


def _set_grads(params: list[Tensor], grads: list[Tensor]) -> None:
    """p.grad = g in p's own memory layout, as backward() leaves it: a gradient from autograd.grad
    may be a transposed view (vmapped matmuls), which fused optimisers would read as if laid out
    like p (measured: seeds in a group then stepped differently from their twins)."""
    for p, g in zip(params, grads):
        p.grad = g.detach() if g.stride() == p.stride() else torch.empty_like(p).copy_(g)


def simultaneous(P: Players, draws: Draws, state: TrainState, t: TrainConfig) -> None:
    """Both players' gradients at (theta, psi) on the same fakes, then both steps:
    theta' = theta - h_G g_theta, psi' = psi - h_D g_psi (for SGD; any optimiser takes these gradients)."""
    real, z, e, u = draws.for_d_step(P)  # the draws of a D step
    gamma = t.consensus
    d_loss, stats, g_loss, d_fake = P.joint_objective(real, z, e, u, double_backward=gamma > 0)
    g_params, d_params = P.g_parameters(), P.d_parameters()
    # the sums over seeds: each seed's parameters get their own gradient
    *g_grads, d_fake_grad = torch.autograd.grad(g_loss.sum(), [*g_params, d_fake], retain_graph=True,
                                                create_graph=gamma > 0, materialize_grads=True)  # fmt: skip
    d_grads = list(torch.autograd.grad(d_loss.sum(), d_params, create_graph=gamma > 0, materialize_grads=True))
    if gamma > 0:
        g_grads, d_grads = consensus_gradients(g_grads, d_grads, g_params, d_params, gamma)
    _set_grads(g_params, g_grads)
    _set_grads(d_params, d_grads)
    g_norm, d_norm = P.grad_norms(g_params), P.grad_norms(d_params)
    P.opt_d.step()
    P.opt_g.step()
    clip_weights(P)
    state.acc_d += torch.cat([stats, d_norm[:, None]], dim=1)
    state.acc_g += g_row(P, g_loss, d_fake, d_fake_grad, g_norm)
    state.step += 1
    state.window += 1


UPDATES.add("alternating", alternating)
UPDATES.add("simultaneous", simultaneous)
assert set(UPDATES.names()) == set(RULES.names()), "a step function for every update rule, and no other"
