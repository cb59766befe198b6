"""Per-image cost of the baselines on real prepared CelebA crops (batches of 64, paper settings).

    pytest tests/benchmarks/test_baselines_speed.py --benchmark-only
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from baselines.ciagan.anonymiser import Ciagan
from baselines.ciagan.config import CiaganInferenceConfig, CiaganModelConfig
from baselines.ciagan.model import Generator
from baselines.classic import blur_inside, opencv_sigma, pixelate_inside
from baselines.interface import load_batch
from facedata.prepared import PreparedDataset

pytestmark = pytest.mark.realdata
BATCH = 64


@pytest.fixture(scope="module")
def batch(prepared_celeba):
    prepared = PreparedDataset(prepared_celeba)
    keys = list(prepared.ok["key"][:BATCH])
    return load_batch(pd.DataFrame({"pair_id": range(len(keys)), "source": keys, "condition": keys}),
                      prepared, prepared)


def record(benchmark, images: int) -> None:
    benchmark.extra_info.update(images=images, threads=torch.get_num_threads(),
                                ms_per_image=round(benchmark.stats.stats.mean / images * 1e3, 3))


def test_blur_speed(benchmark, batch):
    benchmark(blur_inside, batch.source, batch.source_mask, 101, opencv_sigma(101))
    record(benchmark, len(batch))


def test_pixelate_speed(benchmark, batch):
    benchmark(pixelate_inside, batch.source, batch.source_mask, 10)
    record(benchmark, len(batch))


@pytest.mark.parametrize("spectral_norm", ["frozen", "update"])
def test_ciagan_inference_speed(benchmark, batch, spectral_norm):
    """The authors' network size at 128 x 128, random weights (speed does not depend on them).

    frozen: eval(), batches of 64; update: the authors' test mode, a power iteration per forward, one face each.
    """
    anonymiser = Ciagan(Generator(CiaganModelConfig()), batch.source_identity,
                        CiaganInferenceConfig(spectral_norm=spectral_norm))
    targets = np.arange(len(batch)) % 1200
    benchmark.pedantic(anonymiser.render, args=(batch, targets), rounds=3, warmup_rounds=1)
    record(benchmark, len(batch))
