"""The fast paths' mechanisms: autocast precision and torch.compile (CUDA graphs in its
"reduce-overhead" mode) of the players' callables. Which paths a run uses is `options.SpeedConfig`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor


class Precision:
    """Autocast of model forwards (bf16 on request); outputs come back as float32, so every loss and
    penalty reduction runs in float32. The name is validated by SpeedConfig."""

    def __init__(self, name: str, device: torch.device) -> None:
        self.enabled = name == "bf16"
        self.device_type = device.type

    def wrap(self, fn: Callable[..., Tensor]) -> Callable[..., Tensor]:
        if not self.enabled:
            return fn

        def run(*args: Any) -> Tensor:
            with torch.autocast(self.device_type, dtype=torch.bfloat16):
                return fn(*args).float()

        return run


class Compiler:
    """torch.compile in one mode (None: eager) for the players' callables. In "reduce-overhead" mode
    compile records CUDA graphs; each D step and each G step is then one graph iteration, marked at
    its start: every graph output is consumed within its step."""

    def __init__(self, mode: str | None) -> None:
        self.mode = mode

    @property
    def graphs(self) -> bool:
        return self.mode == "reduce-overhead"

    def __call__(self, fn: Callable[..., Any], allowed: bool = True, fullgraph: bool = False) -> Callable[..., Any]:
        """fn compiled, or fn itself in eager mode or where not `allowed` (the players' compiled parts:
        autograd's double backward, which gradient penalties need, cannot go back through a compiled
        graph's backward; the whole step, lossbench.train.whole_step, takes its gradients with
        torch.func inside the one graph instead); `fullgraph`: a graph break is an error, not a
        fallback to Python."""
        return torch.compile(fn, mode=self.mode, fullgraph=fullgraph) if self.mode and allowed else fn

    def begin_step(self) -> None:
        if self.graphs:
            torch.compiler.cudagraph_mark_step_begin()


class MutationRecorder:
    """A torch.compile backend that compiles nothing and records, for every forward graph it is
    handed, the indices of the graph's inputs that the graph mutates (AOTAutograd's metadata, which
    torch's CUDA-graph check reads: a graph that mutates an input is not captured). A diagnostic for
    the benchmarks and tests, on any device: `torch.compile(fn, backend=recorder.backend)`."""

    def __init__(self) -> None:
        from torch._dynamo.backends.common import aot_autograd

        self.mutated: list[list[int]] = []
        self.backend = aot_autograd(fw_compiler=self._forward)

    def _forward(self, gm: torch.fx.GraphModule, example_inputs: Any) -> Any:
        from functorch.compile import make_boxed_func

        meta = torch._guards.TracingContext.get().fw_metadata
        self.mutated.append([i for i, info in enumerate(meta.input_info) if info.mutates_data])
        return make_boxed_func(gm)
