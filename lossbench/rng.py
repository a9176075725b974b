"""Random streams. A seed becomes one explicit torch.Generator per component, derived from
(seed, component name), so adding a component never shifts another's numbers and no code relies
on the global RNG."""

from __future__ import annotations

import hashlib

import torch

STREAMS = ("data", "noise", "penalty", "instance")  # the training loop's streams, checkpointed with it
# Other named streams are drawn from afresh where they are used and never checkpointed: "init" (G and
# D's initial weights), "tuples" (the epoch batchings' fixed table of D's inputs, lossbench.gan.batches).


def derive(seed: int, name: str) -> int:
    """A 63-bit seed for the stream `name` of run seed `seed`."""
    digest = hashlib.sha256(f"lossbench/{seed}/{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def generator(seed: int, name: str, device: torch.device | str = "cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(derive(seed, name))
