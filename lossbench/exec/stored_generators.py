"""Samples of a stored generator (`lossbench sample`): a finished run's, rebuilt from its configuration, or
one logged as an MLflow model (runs:/<id>/generator_best: the model the run's tag names for its best
weights, as tracking_models.load_generator follows it); the same latents for the same seed."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch
from torch import Tensor

from lossbench import caps, config, paths, rng, tracking_models
from lossbench.errors import ConfigError, LossbenchError
from lossbench.gan import latent
from lossbench.gan.models import generate
from lossbench.options import resolve_device
from lossbench.plugins import Plugins
from lossbench.tracking import Tracker


def load_generator(
    run_id: str, tracking_uri: str | None, device: torch.device, plugins: Plugins = Plugins()
) -> tuple[torch.nn.Module, config.RunConfig]:
    """The run's final generator and its resolved configuration. The store is data: its config.json
    is read within the caps on a file (lossbench.caps), and a plugin loss it names is loaded only when
    `plugins` (the command line) allows it."""
    store = Tracker(tracking_uri, experiment=None, create=False)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            cfg_path = store.download(run_id, "config.json", Path(tmp))
            weights_path = store.download(run_id, "weights/generator.pt", Path(tmp))
        except LossbenchError:
            raise ConfigError(f"run {run_id} has no saved generator (did it finish?)") from None
        flat = _read_config(Path(cfg_path), run_id)
        cfg = config.resolve((f"run {run_id}", flat), plugins=plugins)
        G, _ = config.build_models(cfg)
        G.load_state_dict(torch.load(weights_path, map_location="cpu", weights_only=True))
    return G.to(device), cfg


def _read_config(path: Path, run_id: str) -> dict:
    """A stored run's config.json as flat keys (its seed dropped); too large, malformed or not an
    object is one line."""
    where = f"run {run_id}: config.json"
    with open(path, "rb") as fh:
        raw = fh.read(caps.MAX_FILE_BYTES + 1)
    caps.check_size(len(raw), where)
    try:
        flat = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # RecursionError: nested deeper than json reads
        raise ConfigError(f"{where} is not a readable configuration ({type(exc).__name__})") from None
    if not isinstance(flat, dict):
        raise ConfigError(f"{where} must be an object of configuration keys, got {type(flat).__name__}")
    flat.pop("seed", None)
    return flat


def write_samples(
    run_id: str, n: int, out: Path, seed: int, tracking_uri: str | None, device: str, plugins: Plugins = Plugins()
) -> str:
    """n samples of a run's generator (a run id), or of a logged one (a runs:/ or models:/ URI: no
    configuration nor loss is read, so no plugin is needed), from the same latents for the same seed."""
    dev = resolve_device(device)
    if tracking_models.is_model_uri(run_id):
        x = _from_model(run_id, n, seed, tracking_uri, dev)
    else:
        G, cfg = load_generator(run_id, tracking_uri, dev, plugins)
        x = generate(G, n, cfg.model.z_dim, rng.generator(seed, "sample", dev))
    out.mkdir(parents=True, exist_ok=True)
    if x.dim() == 2:
        lines = ["x,y"] + [f"{a:.6f},{b:.6f}" for a, b in x.cpu().tolist()]
        (out / "points.csv").write_text("\n".join(lines) + "\n")
        return f"{n} points"
    from torchvision.utils import save_image

    for i, img in enumerate(x.cpu()):
        save_image(img, out / f"{i:06d}.png", normalize=True, value_range=(-1, 1))
    return f"{n} PNGs"


def _from_model(uri: str, n: int, seed: int, tracking_uri: str | None, dev: torch.device, batch: int = 500) -> Tensor:
    """n samples of the generator logged at `uri`, z drawn on `dev` as `generate` draws it (its
    distribution from the model's metadata), so a run's id and its runs:/<id>/generator URI give the
    same samples; the logged program runs on the CPU, where it was exported."""
    G, z_dim, dist = tracking_models.load_generator(uri, paths.tracking_uri(tracking_uri))
    stream = rng.generator(seed, "sample", dev)
    with torch.no_grad():
        return torch.cat([G(latent.sample(dist, (min(batch, n - i), z_dim), stream, dev).cpu())
                          for i in range(0, n, batch)])  # fmt: skip
