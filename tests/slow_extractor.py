"""Test-only: importing this replaces the Inception extractor with a small fake one that takes
$LOSSBENCH_TEST_BATCH_SECONDS per batch and appends each batch's size and pixel sum to the file
$LOSSBENCH_TEST_BATCHES, so a test can tell which images were extracted and signal a `lossbench`
process at a known point of an extraction. Start lossbench as:
python -c "import slow_extractor; from lossbench.cli import main; main()" run ..."""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch
from torch import Tensor

from lossbench.metrics import features


def slow_fake(device: torch.device) -> features.Extractor:
    log, seconds = Path(os.environ["LOSSBENCH_TEST_BATCHES"]), float(os.environ["LOSSBENCH_TEST_BATCH_SECONDS"])

    def fn(images: Tensor) -> tuple[Tensor, Tensor]:
        time.sleep(seconds)
        pool = torch.nn.functional.adaptive_avg_pool2d(images.float() / 255, 4).flatten(1)  # N x 48
        with log.open("a") as fh:
            fh.write(f"{len(images)} {int(images.long().sum())}\n")
        return pool, pool[:, :10] * 10

    return features.Extractor("slow-fake", fn, batch_size=16)


features.EXTRACTORS._entries["inception-v3-compat"] = slow_fake  # a test's stand-in, in this process only
