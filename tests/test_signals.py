"""The counterfactual learning signals (lossbench.train.counterfactual): at known logits they equal their
closed forms through the players' own code, on a run they equal `g_signal` for the loss trained
(both update rules), and seeds trained together log the same values as alone."""

from __future__ import annotations

import math

import pytest
import torch
from test_fast_paths import PARALLEL, train

from lossbench.gan import losses
from lossbench.train import counterfactual as signals
from lossbench.train.players import g_objective
from lossbench.train.state import G_KEYS
from lossbench.train.updates import g_row


def sig(x: float) -> float:
    return 1 / (1 + math.exp(-x))


LOGITS = [-10.0, -1.0, 0.0, 2.0]
# mean_i |l'(d_f,i)| at LOGITS, by hand
CLOSED = {
    "g_signal_minimax": sum(sig(d) for d in LOGITS) / 4,  # sigma(d): 4.54e-5, 0.269, 0.5, 0.881
    "g_signal_ns": sum(1 - sig(d) for d in LOGITS) / 4,  # 1 - sigma(d)
    "g_signal_ls": (11 + 2 + 1 + 1) / 4,  # |d - 1|
}
TRAINED = {"minimax": "g_signal_minimax", "non-saturating": "g_signal_ns", "dragan": "g_signal_ns",
           "least-squares": "g_signal_ls"}  # fmt: skip


@pytest.fixture
def float64():
    """In float64 the stacked and plain paths round alike to 1e-9 over these runs (test_fast_paths)."""
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(torch.float32)


class _One:
    size = 1


@pytest.mark.parametrize("name", losses.names())
def test_counterfactual_signals_are_their_closed_forms_at_known_logits(name: str) -> None:
    """Through g_objective (D's logit the sample itself, G the identity) and the G step's row: every
    counterfactual column is its closed form whatever loss trains, and the trained loss's own column
    equals g_signal, read off that loss's backward pass."""
    critic = lambda x: x[:, 0]  # noqa: E731
    z = torch.tensor(LOGITS, dtype=torch.float64)[:, None].requires_grad_(True)
    real = torch.zeros(4, 1, dtype=torch.float64) if losses.needs_real(losses.get(name)) else None
    g_loss, d_fake = g_objective(critic, lambda v: v, losses.get(name), z, real, None)
    d_fake.retain_grad()
    g_loss.backward()
    row = dict(zip(G_KEYS, g_row(_One(), g_loss[None], d_fake, d_fake.grad, torch.zeros(1))[0].tolist()))
    assert set(CLOSED) == set(signals.KEYS)
    for key, value in CLOSED.items():
        assert row[key] == pytest.approx(value, rel=1e-6, abs=1e-9), key
    if name in TRAINED:
        assert row[TRAINED[name]] == pytest.approx(row["g_signal"], rel=1e-6, abs=1e-9)
    assert row["g_signal_minimax"] == pytest.approx(0.41245, rel=1e-4)  # (4.54e-5 + .26894 + .5 + .88080) / 4


def test_every_signal_names_a_registered_loss() -> None:
    for name in signals.SIGNALS.names():
        assert all(loss in losses.names() for loss in signals.SIGNALS.get(name).losses)


RUNS = {
    "minimax, alternating": {"loss": "minimax"},
    "non-saturating, alternating, n_critic 3": {"loss": "non-saturating", "n_critic": 3},
    "least-squares, simultaneous": {"loss": "least-squares", "updates": "simultaneous"},
    "minimax, simultaneous": {"loss": "minimax", "updates": "simultaneous"},
}  # fmt: skip


@pytest.mark.parametrize("flags", RUNS.values(), ids=RUNS.keys())
def test_on_a_run_the_trained_loss_column_equals_g_signal(flags: dict) -> None:
    """Window means of the same per-step values: equal to float32 rounding, on every log window; and
    minimax's and non-saturating's, sigma(d) + (1 - sigma(d)) = 1 per fake, sum to 1."""
    _, logged, _ = train({"steps": 12, "log_every": 4, **flags}, [0])
    key = TRAINED[flags["loss"]]
    assert len(logged[0]) == 3
    for _, v in logged[0]:
        assert v[key] == pytest.approx(v["g_signal"], rel=1e-5)
        assert v["g_signal_minimax"] + v["g_signal_ns"] == pytest.approx(1.0, abs=1e-6)


def columns(logged: list[tuple[int, dict]]) -> torch.Tensor:
    return torch.tensor([[v[k] for k in signals.KEYS] for _, v in logged])


@pytest.mark.parametrize("updates", ["alternating", "simultaneous"])
def test_parallel_seeds_log_the_signals_of_their_sequential_twins(updates: str, float64: None) -> None:
    flags = {"loss": "hinge", "updates": updates, "n_critic": 1, "steps": 10}
    _, together, _ = train(flags, [0, 1], PARALLEL)
    for k in (0, 1):
        _, alone, _ = train(flags, [k])
        torch.testing.assert_close(columns(together[k]), columns(alone[0]), rtol=1e-9, atol=1e-9)
    assert not torch.allclose(columns(together[0]), columns(together[1]))


def test_a_checkpoint_from_before_the_counterfactual_columns_loads() -> None:
    """An older checkpoint's acc_g holds (g_loss, g_signal, g_grad_norm): it passes the accumulator
    check and fills those columns by name; the new columns start the window at zero."""
    from lossbench import config
    from lossbench import train as trainer
    from lossbench.train import validate

    cfg = config.resolve(("test", {"dataset": "ring8", "steps": 4, "log_every": 8}))
    state = trainer.setup(cfg, 0, (2,), torch.device("cpu"))
    trainer.train(cfg, state, torch.randn(256, 2))
    old = state.state_dict(0)
    old["acc_g"] = torch.tensor([1.5, 0.25, 3.0])  # as written before signals.KEYS existed
    template = validate.expected(cfg, "cpu").template["acc_g"]
    assert validate._accumulator(old["acc_g"], template, "acc_g") is None
    assert validate._accumulator(torch.zeros(len(G_KEYS) + 1), template, "acc_g") is not None
    fresh = trainer.setup(cfg, 0, (2,), torch.device("cpu"))
    fresh.load_state_dict(old)
    row = dict(zip(G_KEYS, fresh.acc_g[0].tolist()))
    assert (row["g_loss"], row["g_signal"], row["g_grad_norm"]) == (1.5, 0.25, 3.0)
    assert [row[k] for k in signals.KEYS] == [0.0] * len(signals.KEYS)
