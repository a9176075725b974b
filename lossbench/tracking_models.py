"""Generators as MLflow models: logged to a seed run, loaded from a `runs:/` or `models:/` URI,
registered under a name and alias; which of a run's models and raw weights files holds its best
evaluation's weights. Beside lossbench.tracking, the one other module that imports mlflow.

A seed run (exec.seed_run) logs its last weights as the model `generator` (raw: weights/generator.pt),
its best evaluation's as `generator_best` (weights/generator_best.pt) only where the best is not the
last, and the average of its weights (--ema) as `generator_ema` (weights/generator_ema.pt). Its tag
lossbench.best_model names the model holding the best weights: `generator` where the last evaluation is
the best (the same weights are stored once), else `generator_best`; `load_generator` follows it for
runs:/<id>/generator_best, and `best_weights` names the raw file.

A logged generator is a plain torch program: `torch.export`'s pt2 archive (MLflow's "pt2"
serialization) of the module the caller hands in, with a dynamic batch dimension. Loading it
(`mlflow.pytorch.load_model`) needs torch and mlflow, never lossbench: no lossbench class is pickled.
Its signature is one float32 tensor input `z` of shape (-1, z_dim) and one output of shape
(-1, *sample_shape); its input example is a (2, z_dim) batch of zeros.
"""

from __future__ import annotations

import tempfile
from typing import Any

import torch

from lossbench.errors import ConfigError, LossbenchError, TrackingError
from lossbench.tracking import TAG_BEST_MODEL, Tracker, first_line

EXAMPLE_BATCH = 2  # torch.export specializes a size-1 dimension: the example's batch must be > 1
MODEL_URI_PREFIXES = ("runs:/", "models:/")
MODEL_LAST, MODEL_BEST, MODEL_EMA = "generator", "generator_best", "generator_ema"
WEIGHTS = {MODEL_LAST: "weights/generator.pt", MODEL_BEST: "weights/generator_best.pt",
           MODEL_EMA: "weights/generator_ema.pt"}  # fmt: skip  # each model's raw state dict, in the run's artifacts


def is_model_uri(text: str) -> bool:
    return text.startswith(MODEL_URI_PREFIXES)


def registered_name(suite: str, loss: str, dataset: str) -> str:
    """The registry name of a suite's best configuration for (loss, data set): lossbench-<suite>-<loss>-<dataset>."""
    return f"lossbench-{suite}-{loss}-{dataset}"


def log_generator(uri: str, client: Any, experiment_id: str, run_id: str, module: torch.nn.Module, z_dim: int,
                  z_dist: str, name: str, step: int) -> str:  # fmt: skip
    """Log `module` (latents (B, z_dim) -> samples, on the CPU, in eval mode) as the MLflow model `name`
    of the run, at `step`, its latent distribution `z_dist` in the model's metadata; returns its model
    id. The model is created in the run's experiment, `experiment_id`, first (MLflow's fluent API would
    put it in the process's active experiment)."""
    import mlflow
    import mlflow.pytorch
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    example = torch.zeros(EXAMPLE_BATCH, z_dim)
    with torch.no_grad():
        out_shape = tuple(module(example).shape[1:])
    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype("float32"), (-1, z_dim), "z")]),
        outputs=Schema([TensorSpec(np.dtype("float32"), (-1, *out_shape), "x")]),
    )
    try:
        mlflow.set_tracking_uri(uri)  # the fluent API's store: this process's one store
        model = client.create_logged_model(experiment_id, name=name, source_run_id=run_id)
        mlflow.pytorch.log_model(
            module, name=name, run_id=run_id, model_id=model.model_id, step=step, signature=signature,
            input_example=example.numpy(), serialization_format="pt2", validate_serving_input=False,
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", "mlflow"],
            metadata={"z_dim": z_dim, "z_dist": z_dist},
        )  # fmt: skip
    except Exception as exc:
        raise TrackingError(f"run {run_id}: cannot log the generator as model '{name}' ({first_line(exc)})") from None
    return model.model_id


def best_model(tags: dict[str, str]) -> str:
    """The model holding a run's best evaluation's weights, by the run's `tags`: the one its tag
    lossbench.best_model names (`generator` where the last evaluation is the best), `generator_best`
    for a run without the tag."""
    return tags.get(TAG_BEST_MODEL, MODEL_BEST)


def best_weights(tags: dict[str, str]) -> str:
    """The artifact path of a run's best evaluation's raw weights, by the run's `tags` (`best_model`):
    weights/generator.pt where the last evaluation is the best, else weights/generator_best.pt."""
    return WEIGHTS.get(best_model(tags), WEIGHTS[MODEL_BEST])


def _best_run(uri: str) -> str | None:
    """The run id of a runs:/<id>/generator_best URI (the model its tag names: `best_model`); None for any
    other URI."""
    run_id, _, name = uri.removeprefix("runs:/").partition("/")
    return run_id if uri.startswith("runs:/") and name.strip("/") == MODEL_BEST else None


def _run_tags(tracking_uri: str, run_id: str) -> dict[str, str]:
    """A run's tags (Tracker.run_tags); none where it cannot be read (the load then says why in one line)."""
    try:
        return Tracker(tracking_uri, experiment=None, create=False).run_tags(run_id)
    except LossbenchError:
        return {}


def load_generator(uri: str, tracking_uri: str) -> tuple[torch.nn.Module, int, str]:
    """The generator logged at `uri` (runs:/<run id>/<name>, models:/<name>@<alias>, models:/<name>/<version>,
    models:/<model id>), on the CPU (an exported program's weights stay on the device it was exported
    from), its latent size and distribution; a URI that names nothing is one line. runs:/<id>/generator_best
    is the model the run's tag names for its best weights (`best_model`)."""
    import mlflow
    import mlflow.artifacts
    import mlflow.pytorch
    from mlflow.models import Model

    mlflow.set_tracking_uri(tracking_uri)
    try:
        source = uri
        if (run_id := _best_run(uri)) is not None:  # the model the run's tag names for its best weights
            source = f"runs:/{run_id}/{best_model(_run_tags(tracking_uri, run_id))}"
        with tempfile.TemporaryDirectory() as tmp:
            local = mlflow.artifacts.download_artifacts(source, dst_path=tmp)
            G = mlflow.pytorch.load_model(local)
            meta = Model.load(local).metadata or {}
        z_dim = int(meta.get("z_dim", 0))
        if z_dim <= 0:
            raise ValueError("its metadata names no latent size (z_dim): not a lossbench generator")
        return G, z_dim, str(meta.get("z_dist", "normal"))
    except Exception as exc:
        raise ConfigError(f"{uri}: no logged generator there ({first_line(exc)})") from None


def delete_artifact(uri: str, client: Any, run_id: str, path: str) -> None:
    """Remove the artifact `path` (a file or folder) of run `run_id` from its artifact store (MLflow's
    artifact repository of the run, in the store at `uri`); nothing there is no error, a store that
    refuses is one TrackingError."""
    import mlflow
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    try:
        mlflow.set_tracking_uri(uri)  # a server's mlflow-artifacts: repository resolves against it
        get_artifact_repository(client.get_run(run_id).info.artifact_uri).delete_artifacts(path)
    except Exception as exc:
        raise TrackingError(f"run {run_id}: cannot delete {path} ({first_line(exc)})") from None


def register(client: Any, name: str, run_id: str, model_name: str, alias: str, description: str) -> int:
    """Register run `run_id`'s model `model_name` as a new version of `name` and point `alias` at it;
    returns the version."""
    try:
        try:
            client.get_registered_model(name)
        except Exception:  # noqa: BLE001 - not registered yet
            client.create_registered_model(name, description=description)
        model_id = _model_id(client, run_id, model_name)
        source = f"models:/{model_id}" if model_id else f"runs:/{run_id}/{model_name}"
        mv = client.create_model_version(name, source, run_id=run_id, description=description, model_id=model_id)
        client.set_registered_model_alias(name, alias, mv.version)
        if model_id:  # the logged model names its versions: the UI's "Registered models" column reads this tag
            _tag_version(client, model_id, name, mv.version)
    except Exception as exc:
        raise TrackingError(f"cannot register run {run_id}'s {model_name} as {name}@{alias} "
                            f"({first_line(exc)})") from None  # fmt: skip
    return int(mv.version)


MODEL_VERSIONS_TAG = "mlflow.modelVersions"  # on a logged model: JSON [{"name": ..., "version": ...}, ...]


def _tag_version(client: Any, model_id: str, name: str, version: str | int) -> None:
    """Add (name, version) to the logged model's list of registered versions, as MLflow's own
    `register_model` records it (MlflowClient.create_model_version does not)."""
    import json

    kept = client.get_logged_model(model_id).tags.get(MODEL_VERSIONS_TAG)
    versions = [*json.loads(kept), {"name": name, "version": str(version)}] if kept else [
        {"name": name, "version": str(version)}]  # fmt: skip
    client.set_logged_model_tags(model_id, {MODEL_VERSIONS_TAG: json.dumps(versions)})


def alias_run(client: Any, name: str, alias: str) -> str | None:
    """The run of the version `alias` points at in registered model `name`; None when there is none."""
    try:
        return client.get_model_version_by_alias(name, alias).run_id
    except Exception:  # noqa: BLE001 - no such model or alias
        return None


def _model_id(client: Any, run_id: str, model_name: str) -> str | None:
    """The id of the logged model `model_name` of the run (its latest), or None."""
    run = client.get_run(run_id)
    exp = run.info.experiment_id
    found = client.search_logged_models([exp], filter_string=f"source_run_id = '{run_id}' AND name = '{model_name}'")
    models = sorted(found, key=lambda m: m.creation_timestamp)
    return models[-1].model_id if models else None
