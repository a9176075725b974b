"""The seed's own training loop as the saturation suite's baseline row: the row resolves to the
seed's loop (benchmarks/reference.py writes it out in plain PyTorch), and its generator loss is the
non-saturating one, BCELoss(D(G(z)), 1), not the minimax game its text states."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest
import torch
from torch import nn

from lossbench import cards, config
from lossbench.gan import losses, models

EVALUATION = ("metrics", "fid_samples", "eval_every")  # how the suite scores runs, not the loop

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _reference() -> ModuleType:
    """benchmarks/reference.py by its path: the tests run from outside the checkout (CI runs them
    against the installed wheel, which does not hold benchmarks/)."""
    spec = importlib.util.spec_from_file_location("lossbench_reference_loop", BENCHMARKS / "reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def seed_row() -> config.RunConfig:
    raw = cards.read_toml(cards.suite_path("saturation"))
    row = {k: v for k, v in (raw["base"] | raw["settings"][-1]).items() if k not in EVALUATION}
    return config.resolve(("saturation", row))


def test_the_seed_row_is_the_seed_loop() -> None:
    cfg = seed_row()
    t = cfg.train
    assert (cfg.data.dataset, cfg.model.arch, cfg.model.z_dim, cfg.model.z_dist) == ("mnist", "mlp", 100, "normal")
    assert (cfg.loss.loss, cfg.loss.penalty, t.n_critic, t.updates) == ("non-saturating", "none", 1, "alternating")
    assert (t.optimizer, t.lr_g, t.lr_d, t.beta1, t.beta2, t.batch_size) == ("adam", 2e-4, 2e-4, 0.5, 0.999, 64)
    assert t.batching == "epoch"  # the DataLoader's shuffle with drop_last


def test_the_seed_nets_are_lossbench_mlp() -> None:
    """Layer for layer the reference loop's nets, less D's final nn.Sigmoid (lossbench's losses take
    logits)."""
    reference_models = _reference().models

    G, D = models.build("mlp", (1, 28, 28), 100, "none")
    rG, rD = reference_models(100)

    def layers(m: nn.Module) -> list[tuple]:
        return [(type(x).__name__, getattr(x, "in_features", None), getattr(x, "out_features", None))
                for x in m.modules() if isinstance(x, (nn.Linear, nn.LeakyReLU, nn.Tanh, nn.Sigmoid))]  # fmt: skip

    assert layers(G) == layers(rG)
    assert layers(D) + [("Sigmoid", None, None)] == layers(rD)


def test_the_seed_generator_loss_is_non_saturating_not_minimax() -> None:
    """BCELoss(sigmoid(d_f), 1) = -E log sigma(d_f): non-saturating's L_G to 1e-6 at logits in
    [-8, 8]; minimax's is log(1 - sigma(d_f)), a different function."""
    d = torch.linspace(-8, 8, 33, dtype=torch.float64)
    seed = nn.BCELoss()(torch.sigmoid(d), torch.ones_like(d))
    assert seed.item() == pytest.approx(losses.get("non-saturating").generator_loss(d).item(), rel=1e-6)
    assert abs(seed.item() - losses.get("minimax").generator_loss(d).item()) > 1.0
