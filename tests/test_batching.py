"""How real batches are drawn (lossbench.gan.batches) and G's batch norm per pack slot
(lossbench.gan.models.PackSlotBatchNorm): every example once per epoch per seed, seeds apart, seeds
trained together equal to their sequential twins, resume mid-epoch exactly, and the pack-slot
statistics of PacGAN's code."""

from __future__ import annotations

import copy
from collections import Counter
from pathlib import Path

import pytest
import torch
from torch import nn

from lossbench import config
from lossbench import train as trainer
from lossbench.gan import data, models
from lossbench.options import SpeedConfig
from lossbench.train import checkpoint
from lossbench.train.loop import Draws

CPU = torch.device("cpu")


def index_data(n: int, shape: tuple[int, ...]) -> torch.Tensor:
    """A training set whose example i is filled with the number i: a batch tells which examples it read."""
    return torch.arange(n, dtype=torch.float64).reshape(n, *[1] * len(shape)).expand(n, *shape).contiguous()


def epoch_indices(flags: dict, seeds: list[int], n: int, shape: tuple[int, ...], batches: int) -> torch.Tensor:
    """(S, batches, batch * pack) example indices, as the trainer's Draws reads them for each seed."""
    cfg = config.resolve(("flags", {"dataset": "ring8", **flags}))
    speed = SpeedConfig(parallel_seeds=len(seeds) > 1)
    state = trainer.setup(cfg, seeds, (2,), CPU, speed)
    t = cfg.train
    draws = Draws(index_data(n, shape), state.streams, t.batch_size * t.pack, 2, samplers=state.samplers)
    out = []
    for _ in range(batches):
        real = draws.real().flatten(2)  # (S, batch * pack, prod(shape)): each sample one example's number
        assert torch.equal(real.amin(2), real.amax(2))
        out.append(real[..., 0].long())
    return torch.stack(out, 1)


@pytest.mark.parametrize("shape", [(2,), (1, 4, 4)], ids=["points", "images"])
def test_epoch_reads_every_example_once_per_epoch_per_seed(shape: tuple[int, ...]) -> None:
    n, batch = 48, 8  # 6 batches an epoch
    idx = epoch_indices({"batching": "epoch", "batch_size": batch}, [0, 1, 2], n, shape, 18)
    for k in range(3):
        for e in range(3):
            epoch = idx[k, 6 * e : 6 * e + 6].reshape(-1)
            assert sorted(epoch.tolist()) == list(range(n)), (k, e)
        assert not torch.equal(idx[k, :6], idx[k, 6:12])  # a fresh shuffle each epoch
    assert not torch.equal(idx[0], idx[1]) and not torch.equal(idx[1], idx[2])  # seeds apart
    # iid reads with replacement: some example twice within the first epoch's worth of batches
    iid = epoch_indices({"batch_size": batch}, [0], n, shape, 6)
    assert max(Counter(iid.reshape(-1).tolist()).values()) > 1


def test_epoch_with_packing_reads_each_example_once_per_slot_and_keeps_its_tuples() -> None:
    n, batch, m = 30, 5, 3
    idx = epoch_indices({"batching": "epoch", "batch_size": batch, "pack": m}, [0], n, (2,), 12)[0]
    tuples = idx.reshape(12, batch, m)  # consecutive indices form one input of D
    for e in range(2):
        slots = tuples[6 * e : 6 * e + 6].reshape(-1, m)
        for i in range(m):
            assert sorted(slots[:, i].tolist()) == list(range(n))
        assert not torch.equal(slots[:, 0], slots[:, 1])  # slots are differently ordered
    first = {tuple(t) for t in tuples[:6].reshape(-1, m).tolist()}
    assert first == {tuple(t) for t in tuples[6:].reshape(-1, m).tolist()}  # the same tuples, reshuffled


def test_epoch_bootstrap_shuffles_one_fixed_set_of_resampled_tuples() -> None:
    """PacGAN's GaussianPackingMixture: each slot a with-replacement resample of the set, fixed, and
    each epoch a fresh permutation of the n packed examples."""
    n, batch, m = 40, 8, 2
    idx = epoch_indices({"batching": "epoch-bootstrap", "batch_size": batch, "pack": m}, [0], n, (2,), 15)[0]
    epochs = [Counter(tuple(t) for t in idx[5 * e : 5 * e + 5].reshape(-1, m).tolist()) for e in range(3)]
    assert sum(epochs[0].values()) == n and epochs[0] == epochs[1] == epochs[2]  # one multiset of n tuples
    assert not torch.equal(idx[:5], idx[5:10])
    slot0 = Counter(t[0] for t in epochs[0].elements())
    assert max(slot0.values()) > 1 and len(slot0) < n  # drawn with replacement: repeats, and examples left out


def test_drop_last_when_the_batch_does_not_divide_the_set() -> None:
    idx = epoch_indices({"batching": "epoch", "batch_size": 8}, [0], 20, (2,), 4)[0]  # 2 batches an epoch
    for e in range(2):
        epoch = idx[2 * e : 2 * e + 2].reshape(-1).tolist()
        assert len(set(epoch)) == 16


def run(flags: dict, seeds: list[int], n: int = 200, hooks: trainer.Hooks | None = None,
        state: trainer.TrainState | None = None):  # fmt: skip
    cfg = config.resolve(("flags", {"dataset": "ring8", "log_every": 1, **flags}))
    x = data.load("ring8").x[:n].double()
    speed = SpeedConfig(parallel_seeds=len(seeds) > 1)
    state = state or trainer.setup(cfg, seeds, (2,), CPU, speed)
    logged: dict[int, list] = {k: [] for k in range(len(seeds))}
    hooks = hooks or trainer.Hooks()
    hooks.log = lambda k, step, values: logged[k].append((step, values["d_loss"], values["g_loss"]))
    outcomes = trainer.train(cfg, state, x, hooks)
    return outcomes, logged, state, cfg


@pytest.fixture
def float64():
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(torch.float32)


EPOCH_CASES = {
    "epoch": {"batching": "epoch", "batch_size": 64, "steps": 8},
    "epoch-bootstrap, pacgan-mlp pack 2, pack-slot batch norm": {
        "batching": "epoch-bootstrap", "arch": "pacgan-mlp", "z_dim": 2, "pack": 2, "g_bn_stats": "pack-slot",
        "batch_size": 32, "steps": 8},
}  # fmt: skip


@pytest.mark.parametrize("flags", EPOCH_CASES.values(), ids=EPOCH_CASES.keys())
def test_parallel_seeds_equal_their_sequential_twins_under_epoch_batching(flags: dict, float64: None) -> None:
    _, together, stacked, _ = run(flags, [0, 1])  # 200 points, batch 64 (or 32): several epochs
    for k in (0, 1):
        _, alone, single, _ = run(flags, [k])
        torch.testing.assert_close(torch.tensor(together[k]), torch.tensor(alone[0]), rtol=1e-9, atol=1e-9)
        assert stacked.samplers[k].state_dict()["pos"] == single.samplers[0].state_dict()["pos"]
        assert torch.equal(stacked.samplers[k].state_dict()["order"], single.samplers[0].state_dict()["order"])
    assert together[0] != together[1]


@pytest.mark.parametrize("batching", ["epoch", "epoch-bootstrap"])
def test_resume_mid_epoch_equals_the_uninterrupted_run(batching: str, tmp_path: Path, float64: None) -> None:
    flags = {"batching": batching, "batch_size": 64, "steps": 12, "checkpoint_every": 7}
    _, full, full_state, _ = run(flags, [0])
    files: dict[int, Path] = {}

    def save(k: int, step: int, st: trainer.TrainState) -> None:
        if step == 7:  # 7 batches of 64 from 200: the third epoch, one batch in
            files[step] = tmp_path / "latest.pt"
            checkpoint.save(st.state_dict(k), files[step])

    run(flags, [0], hooks=trainer.Hooks(checkpoint=save))
    saved = checkpoint.load(files[7])
    assert saved["batches"]["pos"] == 64
    cfg = config.resolve(("flags", {"dataset": "ring8", "log_every": 1, **flags}))
    resumed = trainer.setup(cfg, 0, (2,), CPU)
    resumed.load_state_dict(saved)
    _, again, resumed, _ = run(flags, [0], state=resumed)
    assert again[0] == [c for c in full[0] if c[0] > 7]
    for p, q in zip(full_state.G.parameters(), resumed.G.parameters()):
        assert torch.equal(p, q)


def test_pack_slot_batch_norm_is_each_slots_own() -> None:
    """y[j*m + i] normalised by slot i's statistics; running averages move towards the mean over
    slots of the slots' means and unbiased variances."""
    torch.manual_seed(0)
    for plain, x in ((nn.BatchNorm1d(3), torch.randn(12, 3) * 2 + 1), (nn.BatchNorm2d(3), torch.randn(12, 3, 2, 2))):
        with torch.no_grad():
            plain.weight.uniform_(0.5, 2)
            plain.bias.uniform_(-1, 1)
        m = 3
        bn = models.PackSlotBatchNorm(copy.deepcopy(plain), m)
        y = bn(x)
        expected = torch.empty_like(x)
        means, variances = [], []
        dims = [0, *range(2, x.dim())]
        for i in range(m):
            xi = x[i::m]
            one = copy.deepcopy(plain)
            expected[i::m] = one(xi)  # plain batch norm on the slot's own batch
            means.append(xi.mean(dims))
            variances.append(xi.var(dims, unbiased=True))
        torch.testing.assert_close(y, expected)
        torch.testing.assert_close(bn.running_mean, 0.1 * torch.stack(means).mean(0))
        torch.testing.assert_close(bn.running_var, 0.9 + 0.1 * torch.stack(variances).mean(0))
        assert not torch.allclose(plain(x), y)  # statistics over the whole batch differ
        bn.eval()
        plain.eval()
        plain.load_state_dict(bn.state_dict())
        torch.testing.assert_close(bn(x), plain(x))  # eval mode: the running averages, as plain batch norm


def test_pack_slot_g_makes_each_slot_as_its_own_call() -> None:
    """PacGAN calls G once per slot on `batch` latents: with pack-slot statistics, G on the trainer's
    input-major batch of batch * pack latents equals those calls interleaved."""
    torch.manual_seed(1)
    g_plain, _ = models.build("pacgan-mlp", (2,), 2, pack=2)
    g_slot, _ = models.build("pacgan-mlp", (2,), 2, pack=2, g_bn_stats="pack-slot")
    g_slot.load_state_dict(g_plain.state_dict())
    z = torch.randn(16, 2)
    out = g_slot(z)
    torch.testing.assert_close(out[0::2], copy.deepcopy(g_plain)(z[0::2]))
    torch.testing.assert_close(out[1::2], copy.deepcopy(g_plain)(z[1::2]))
    assert not torch.allclose(out, g_plain(z))


def test_default_fields_keep_the_pinned_hash_and_set_ones_move_it() -> None:
    base = config.resolve(("command line", {})).config_hash()
    assert config.resolve(("command line", {"batching": "iid", "g_bn_stats": "batch"})).config_hash() == base
    assert base == "781a6d108a2e6d43"
    assert config.resolve(("command line", {"batching": "epoch"})).config_hash() != base


@pytest.mark.parametrize("flags, message", [
    (["--batching", "epoch-bootstrp"], "unknown batching 'epoch-bootstrp' (did you mean 'epoch-bootstrap'?)"),
    (["--g-bn-stats", "pack-slot"], "arch 'mlp' has no batch norm in G"),
    (["--dataset", "dirac", "--batching", "epoch", "--batch-size", "2048"], "holds 1024"),
])  # fmt: skip
def test_bad_batching_input_is_one_line(flags: list[str], message: str, caplog: pytest.LogCaptureFixture) -> None:
    from test_cli import lossbench_here  # refused before any compute: in this process

    proc = lossbench_here("run", *flags, "--dry-run", caplog=caplog)
    assert proc.returncode != 0 and message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
