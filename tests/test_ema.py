"""--ema beta: the average of G's weights, a <- beta a + (1 - beta) theta after every generator step, from
G's initial weights; checked against its closed form on a toy parameter and on a real training
trajectory, resumed exactly, per seed in a group, and refused out of range."""

from __future__ import annotations

import io

import pytest
import torch

from lossbench import config
from lossbench import train as trainer
from lossbench.errors import ConfigError
from lossbench.gan import data
from lossbench.options import SpeedConfig
from lossbench.train import ema, validate

BETA = 0.9


def closed_form(thetas: list[torch.Tensor], beta: float) -> torch.Tensor:
    """a_n = beta^n theta_0 + (1 - beta) sum_{i=1..n} beta^(n-i) theta_i."""
    n = len(thetas) - 1
    return beta**n * thetas[0] + (1 - beta) * sum(beta ** (n - i) * thetas[i] for i in range(1, n + 1))


def test_the_update_is_the_closed_form_on_a_toy_parameter() -> None:
    thetas = [torch.tensor([float(i), -2.0 * i], dtype=torch.float64) for i in range(6)]
    average = [thetas[0].clone()]
    for theta in thetas[1:]:
        ema.update(average, [theta], BETA)
    torch.testing.assert_close(average[0], closed_form(thetas, BETA), rtol=0, atol=1e-12)
    assert closed_form(thetas, BETA)[0].item() == pytest.approx(sum(0.1 * 0.9 ** (5 - i) * i for i in range(1, 6)))


def _setup(steps: int, seeds: list[int], beta: float = BETA, **flags) -> tuple[config.RunConfig, trainer.TrainState]:
    cfg = config.resolve(("t", {"dataset": "ring8", "steps": steps, "log_every": 1, "ema": beta, **flags}))
    speed = SpeedConfig(parallel_seeds=len(seeds) > 1)
    return cfg, trainer.setup(cfg, seeds, (2,), torch.device("cpu"), speed)


def _params(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in module.named_parameters()}


def test_a_trained_average_is_the_closed_form_of_gs_trajectory() -> None:
    """G's weights after every step (a log hook at log_every 1) give the average by the closed form."""
    torch.set_default_dtype(torch.float64)
    try:
        cfg, state = _setup(8, [0])
        x = data.load("ring8").x.double()
        trajectory = [_params(state.G)]
        hooks = trainer.Hooks(log=lambda k, step, values: trajectory.append(_params(state.G)))
        trainer.train(cfg, state, x, hooks)
        assert len(trajectory) == 9
        averaged = state.average.generator(state.players, 0)
        for name, p in averaged.named_parameters():
            expected = closed_form([t[name] for t in trajectory], BETA)
            torch.testing.assert_close(p.detach(), expected, rtol=0, atol=1e-12)
            assert not torch.equal(p, dict(state.G.named_parameters())[name])  # an average, not G
        # G's own weights are untouched by the average: the same run without --ema ends at the same G
        plain_cfg, plain = _setup(8, [0], beta=0.0)
        trainer.train(plain_cfg, plain, x)
        for name, p in plain.G.named_parameters():
            assert torch.equal(p, dict(state.G.named_parameters())[name])
    finally:
        torch.set_default_dtype(torch.float32)


def test_resume_from_a_checkpoint_equals_the_uninterrupted_average() -> None:
    x = data.load("ring8").x
    cfg, whole = _setup(10, [3])
    trainer.train(cfg, whole, x)
    half_cfg, first = _setup(5, [3])
    trainer.train(half_cfg, first, x)
    blob = io.BytesIO()
    torch.save(first.state_dict(0), blob)
    saved = torch.load(io.BytesIO(blob.getvalue()), weights_only=True)
    assert validate.mismatch(saved, validate.expected(cfg, "cpu")) is None
    _, resumed = _setup(10, [3])
    resumed.load_state_dict(saved)
    trainer.train(cfg, resumed, x)
    for name, a in whole.average.state_dict(0).items():
        assert torch.equal(a, resumed.average.state_dict(0)[name]), name


def test_a_checkpoint_without_the_average_is_refused_for_an_ema_run() -> None:
    cfg, state = _setup(2, [0])
    saved = state.state_dict(0)
    del saved["G_ema"]
    assert validate.mismatch(saved, validate.expected(cfg, "cpu")) == "G_ema is missing"
    saved["G_ema"] = state.state_dict(0)["G_ema"] | {"0.weight": torch.zeros(3, 3)}
    assert validate.mismatch(saved, validate.expected(cfg, "cpu")).startswith("G_ema['0.weight'] has shape (3, 3)")
    plain_cfg, _ = _setup(2, [0], beta=0.0)
    assert validate.mismatch(state.state_dict(0), validate.expected(plain_cfg, "cpu")) == (
        "G_ema is not expected (unknown key)"
    )


def test_each_seed_in_a_group_keeps_its_own_average_equal_to_training_alone() -> None:
    torch.set_default_dtype(torch.float64)
    try:
        x = data.load("ring8").x.double()
        cfg, group = _setup(6, [0, 1])
        trainer.train(cfg, group, x)
        for k, seed in enumerate([0, 1]):
            _, alone = _setup(6, [seed])
            trainer.train(cfg, alone, x)
            for name, a in alone.average.state_dict(0).items():
                torch.testing.assert_close(group.average.state_dict(k)[name], a, rtol=0, atol=1e-9)
    finally:
        torch.set_default_dtype(torch.float32)


@pytest.mark.parametrize("beta", [-0.1, 1.0, 1.5])
def test_an_ema_beta_out_of_range_is_one_line(beta: float) -> None:
    with pytest.raises(ConfigError, match=rf"'ema' must be in \[0, 1\), got {beta}"):
        config.resolve(("flags", {"dataset": "ring8", "ema": beta}))


def test_ema_enters_the_hash_only_when_on() -> None:
    base = config.resolve(("t", {"dataset": "ring8"})).config_hash()
    assert config.resolve(("t", {"dataset": "ring8", "ema": 0.0})).config_hash() == base
    assert config.resolve(("t", {"dataset": "ring8", "ema": 0.999})).config_hash() != base


def test_an_ema_run_logs_the_averaged_generators_metrics_weights_and_model(store: str, tmp_path) -> None:
    """`lossbench run --ema 0.9`: ema_modes beside modes at each evaluation, weights/generator_ema.pt equal
    to the average the library computes for the same seed, and the `generator_ema` MLflow model."""
    from mlflow import MlflowClient
    from test_cli import lossbench, runs_by_role

    flags = {"dataset": "ring8", "steps": 20, "log_every": 10, "eval_every": 10, "metrics": "modes", "ema": BETA}
    lossbench("run", "--dataset", "ring8", "--steps", "20", "--log-every", "10", "--eval-every", "10", "--metrics",
              "modes", "--ema", str(BETA), "--seed-start", "2", "--no-progress", "--tracking-uri", store)  # fmt: skip
    (run,) = runs_by_role(store)["seed"]
    client = MlflowClient(store)
    history = client.get_metric_history(run.info.run_id, "ema_modes")
    assert [m.step for m in history] == [10, 20] and run.data.metrics["ema_modes"] == history[-1].value
    assert [m.step for m in client.get_metric_history(run.info.run_id, "modes")] == [10, 20]
    saved = torch.load(client.download_artifacts(run.info.run_id, "weights/generator_ema.pt", str(tmp_path)),
                       weights_only=True)  # fmt: skip
    cfg = config.resolve(("t", flags))
    state = trainer.setup(cfg, [2], (2,), torch.device("cpu"))
    trainer.train(cfg, state, data.load("ring8").x)
    for name, a in state.average.state_dict(0).items():
        torch.testing.assert_close(saved[name], a, rtol=0, atol=0)
    logged = client.search_logged_models([run.info.experiment_id], filter_string=f"source_run_id = '{run.info.run_id}'")
    best = run.data.tags["lossbench.best_model"]  # by modes: generator_best, or generator where step 20 is the best
    assert {m.name for m in logged} == {"generator", "generator_ema", best}
