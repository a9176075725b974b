"""The flags commands share, each defined once: the result-defining configuration's (one per key of
lossbench.config), the execution options' (lossbench.options), the executor's and the store's."""

from __future__ import annotations

from typing import Any

import click


def stack(*options: Any) -> Any:
    """One decorator applying click options in the order listed (as --help shows them)."""

    def apply(f: Any) -> Any:
        for option in reversed(options):
            f = option(f)
        return f

    return apply


store_options = stack(
    click.option("--tracking-uri", default=None,
                 help="MLflow store; default MLFLOW_TRACKING_URI or sqlite:///runs/mlflow.db."),
    click.option("--experiment", default="lossbench", show_default=True, help="MLflow experiment name."),
)  # fmt: skip


# flag -> (type, help); its flat config key is the flag's name with - as _ (--lr-g: lr_g). Flags left
# unset do not override lower layers.
CONFIG_FLAGS: dict[str, tuple[Any, str]] = {
    "--loss": (str, "Loss name (see `lossbench losses`) or package.module:Class."),
    "--penalty": (str, "Penalty on D: none, gp, r1, r2, dragan (default: the loss card's)."),
    "--instance-noise": (float, "Sigma of Gaussian noise on D's real and fake inputs; 0 = off."),
    "--penalty-weight": (float, "Penalty weight: lambda (gp, dragan) or gamma (r1, r2 add gamma/2 E||grad D||^2)."),
    "--dataset": (str, "mnist, fashion-mnist, cifar10, stacked-mnist, ring8, grid25, dirac."),
    "--arch": (str, "mlp, mlp2d, dcgan, infogan, pacgan-mlp, pacgan-dcgan, dirac (default: the data set's)."),
    "--dirac-init": (str, "arch dirac: initial THETA,PSI of G(z)=theta, D(x)=psi x (default 1,1)."),
    "--d-norm": (str, "Normalisation of D's weights: none or spectral."),
    "--d-batchnorm": (bool, "Batch norm in D where the arch has it (infogan); see --d-batchnorm-penalty."),
    "--d-batchnorm-penalty": (bool, "Allow --d-batchnorm with a gradient penalty (as compare_gan)."),
    "--z-dim": (int, "Latent size."),
    "--z-dist": (str, "Latent distribution: normal (N(0,1)) or uniform (U(-1,1))."),
    "--steps": (int, "Budget in generator steps."),
    "--epochs": (int, "Budget in passes of D over the training set (instead of --steps)."),
    "--epoch-samples": (int, "Examples in an epoch (compare_gan: 50000); 0 = the training set."),
    "--batch-size": (int, "Batch size."),
    "--n-critic": (int, "D steps per G step."),
    "--updates": (str, "alternating (D steps, then G) or simultaneous (both at one point; n_critic 1)."),
    "--consensus": (float, "Consensus optimisation's gamma (with --updates simultaneous); 0 = off."),
    "--pack": (int, "PacGAN packing: D scores this many samples at once (1 = off)."),
    "--batching": (str, "Real batches: iid (default), epoch (reshuffled each epoch), epoch-bootstrap (PacGAN's)."),
    "--g-bn-stats": (str, "G's batch-norm statistics: batch (all batch*pack samples) or pack-slot (PacGAN's code)."),
    "--optimizer": (str, "adam, rmsprop or sgd (plain gradient descent)."),
    "--lr-g": (float, "Generator learning rate."),
    "--lr-d": (float, "Discriminator learning rate."),
    "--beta1": (float, "Adam beta1."),
    "--beta2": (float, "Adam beta2."),
    "--weight-clip": (float, "Clip D's weights to [-c, c]; 0 = off."),
    "--g-noise": (str, "G's z: fresh, or d-step (the z of the D step before it, as compare_gan)."),
    "--log-every": (int, "Steps between logged loss means."),
    "--sample-every": (int, "Steps between sample grids."),
    "--checkpoint-every": (int, "Steps between checkpoints."),
    "--ema": (float, "Beta of a moving average of G's weights, evaluated beside G (ema_* metrics); 0 = off."),
    "--metrics": (str, "Comma list: fid,is,kid,pr,dc (images) or modes (2-D); none: no evaluation."),
    "--fid-samples": (int, "Generated samples per evaluation (default 10000)."),
    "--eval-every": (int, "Steps between evaluations (0 = only at the end)."),
    "--eval-epochs": (int, "Epochs between evaluations (instead of --eval-every; 0 = off)."),
    "--reference-split": (str, "Real statistics from train or test."),
    "--mode-samples": (int, "2-D data: generated points scored for modes (default 2500)."),
    "--mode-threshold": (int, "2-D data: high-quality samples that capture a mode (default 1)."),
}  # fmt: skip


class _Bool(click.ParamType):
    """true/false (also on/off, yes/no, 1/0) for the config's boolean fields."""

    name = "true|false"
    WORDS = {"true": True, "on": True, "yes": True, "1": True, "false": False, "off": False, "no": False, "0": False}

    def convert(self, value: Any, param: Any, ctx: Any) -> bool:
        if isinstance(value, bool):
            return value
        if (word := str(value).strip().lower()) in self.WORDS:
            return self.WORDS[word]
        self.fail(f"{value!r} is neither true nor false", param, ctx)


def flag_key(flag: str) -> str:
    """--lr-g -> lr_g: a config flag's flat config key."""
    return flag.removeprefix("--").replace("-", "_")


def config_options(f: Any) -> Any:
    for flag, (kind, help_) in reversed(CONFIG_FLAGS.items()):
        f = click.option(flag, flag_key(flag), type=_Bool() if kind is bool else kind, default=None, help=help_)(f)
    return f


def flag_values(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Pop the config flags the user set; the rest of kwargs stays."""
    return {key: v for key in map(flag_key, CONFIG_FLAGS) if (v := kwargs.pop(key, None)) is not None}


speed_options = stack(
    click.option("--parallel-seeds", is_flag=True,
                 help="Train the seeds of a configuration together on one device (vmap over stacked models)."),
    click.option("--parallel-configs", is_flag=True,
                 help="Train configurations that share a shape (differing in learning rates, betas, penalty weight, "
                      "clip, instance noise) together with their seeds, as one vmapped group (implies "
                      "--parallel-seeds; local executor)."),
    click.option("--group-size", type=int, default=None,
                 help="The most (configuration, seed) members trained as one group; bounds memory (default: no "
                      "bound)."),
    click.option("--precision", type=click.Choice(["fp32", "bf16"]), default="fp32", show_default=True,
                 help="bf16 autocasts model forwards; losses and penalties stay fp32."),
    click.option("--compile", "compile_", is_flag=True,
                 help="torch.compile G (and D when no penalty needs double backward); with --whole-step, the "
                      "whole step as one graph."),
    click.option("--fused-optim/--foreach-optim", default=True, show_default=True,
                 help="torch's fused Adam (one kernel per update), or its multi-kernel foreach form."),
    click.option("--cuda-graphs", is_flag=True,
                 help="CUDA graphs of G and D (torch.compile's reduce-overhead mode); CUDA only."),
    click.option("--whole-step", is_flag=True,
                 help="Each generator step as one traced function (draws first, gradients by torch.func, Adam on "
                      "flat state): with --compile or --cuda-graphs, one graph per step. Alternating or simultaneous "
                      "updates, Adam."),
    click.option("--system-metrics/--no-system-metrics", default=False, show_default=True,
                 help="MLflow's system metrics (CPU, memory, GPU) sampled on each seed run; needs psutil."),
)  # fmt: skip

executor_options = stack(
    click.option("--executor", type=click.Choice(["local", "ray"]), default="local", show_default=True,
                 help="Where seeds train: here, or as tasks on a Ray cluster."),
    click.option("--ray-address", default=None, help="Ray cluster: auto or HOST:PORT (default: start a local one)."),
    click.option("--task-cpus", type=float, default=1.0, show_default=True, help="CPUs per Ray task."),
    click.option("--task-gpus", type=float, default=0.0, show_default=True, help="GPUs per Ray task."),
)  # fmt: skip


def executor(kwargs: dict[str, Any]) -> tuple[str, Any]:
    """The executor's name and options, popped from kwargs."""
    from lossbench.exec.executors import ExecutorOptions

    opts = ExecutorOptions(address=kwargs.pop("ray_address"), task_cpus=kwargs.pop("task_cpus"),
                           task_gpus=kwargs.pop("task_gpus"))  # fmt: skip
    return kwargs.pop("executor"), opts


exec_options = stack(
    click.option("--seeds", type=int, default=1, show_default=True, help="Number of seeds."),
    click.option("--seed-start", type=int, default=0, show_default=True, help="First seed."),
    click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N, mps."),
    click.option("--data-dir", default=None, help="Data root; default LOSSBENCH_DATA_DIR or ./data."),
    click.option("--checkpoint-dir", default=None, help="Default LOSSBENCH_CHECKPOINT_DIR or runs/checkpoints."),
    click.option("--resume", is_flag=True, help="Continue this configuration (finished seeds are skipped)."),
    click.option("--no-progress", is_flag=True, help="No progress bar."),
    speed_options,
    executor_options,
    store_options,
)


allow_plugin_option = click.option(
    "--allow-plugin", "allow_plugins", multiple=True, metavar="MODULE:NAME",
    help="Load this plugin loss though only a file or the store names it: its module's code runs in this "
         "process (repeatable; see README, Threat model).",
)  # fmt: skip


def plugins(allowed: tuple[str, ...], dry_run: bool = False) -> Any:
    from lossbench.plugins import Plugins

    return Plugins.from_flags(allowed, dry_run)


def exec_values(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The execution options (lossbench.options.ExecConfig) that `run` and `sweep` share, from their
    flags; the seeds and whether to resume are each command's own."""
    from lossbench.options import SpeedConfig

    speed = SpeedConfig(
        parallel_seeds=kwargs["parallel_seeds"],
        parallel_configs=kwargs["parallel_configs"],
        group_size=kwargs["group_size"],
        precision=kwargs["precision"],
        compile=kwargs["compile_"],
        fused_optim=kwargs["fused_optim"],
        cuda_graphs=kwargs["cuda_graphs"],
        whole_step=kwargs["whole_step"],
    )
    return {
        "speed": speed,
        "device": kwargs["device"],
        "data_dir": kwargs["data_dir"],
        "tracking_uri": kwargs["tracking_uri"],
        "experiment": kwargs["experiment"],
        "checkpoint_dir": kwargs["checkpoint_dir"],
        "progress": not kwargs["no_progress"],
        "system_metrics": kwargs["system_metrics"],
    }
