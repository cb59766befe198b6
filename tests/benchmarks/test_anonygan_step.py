"""One AnonyGAN training step (G, then D_app, then D_lm) on CPU, on real prepared CelebA pairs.

    pytest tests/benchmarks/test_anonygan_step.py --benchmark-only

The tiny configuration is profiles/small.yaml's (what CI trains with) at the 220x180 crop, and the
64x52 crop with batch 8 of the overfitting test.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import default_collate

from anonygan.data import PairData
from anonygan.training import Trainer
from facedata.prepared import PreparedDataset
from tests.helpers import pair_manifest, tiny_configs

pytestmark = pytest.mark.realdata


@pytest.mark.parametrize(("prepared", "batch_size"), [("prepared_celeba", 4), ("small_prepared", 8)],
                         ids=["220x180-batch4", "64x52-batch8"])
def test_tiny_training_step_speed(benchmark, request, tmp_path, prepared, batch_size):
    root = request.getfixturevalue(prepared)
    model, config = tiny_configs("anonygan-68", **{"train.batch_size": batch_size, "train.batches_per_step": 1,
                                                   "train.samples_per_epoch": batch_size})
    data = PairData(PreparedDataset(root), pair_manifest(root))
    n_same = batch_size * 3 // 4  # the hybrid share: 75 % same-image pairs
    rows = [*np.flatnonzero(data.same_image)[:n_same], *np.flatnonzero(~data.same_image)[:batch_size - n_same]]
    trainer = Trainer(model, config, data, tmp_path / "checkpoint.pt")
    x = trainer.inputs(default_collate([data[int(row)] for row in rows]))
    benchmark.pedantic(trainer.step, args=([x],), rounds=5, warmup_rounds=1)
    benchmark.extra_info.update(crop=list(x.source.shape[-2:]), images=batch_size,
                                threads=torch.get_num_threads(),
                                images_per_s=round(batch_size / benchmark.stats.stats.mean, 2))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the full-size step is measured on a CUDA GPU")
@pytest.mark.parametrize("precision", ["bf16", "fp32"])
def test_full_size_step_on_cuda(benchmark, tmp_path, prepared_celeba, precision):
    """The paper's configuration (220x180, batch 32, 24 same-image + 8 different-image pairs):
    bf16 autocast with channels-last against a plain fp32 eager step, in the same run."""
    from anonygan.config import ModelConfig, TrainConfig

    data = PairData(PreparedDataset(prepared_celeba), pair_manifest(prepared_celeba))
    same, different = np.flatnonzero(data.same_image), np.flatnonzero(~data.same_image)
    rows = [*np.resize(same, 24), *np.resize(different, 8)]
    config = TrainConfig(batch_size=32, batches_per_step=1, samples_per_epoch=32, epochs=1, workers=0,
                         precision=precision)
    trainer = Trainer(ModelConfig(), config, data, tmp_path / "checkpoint.pt", device=torch.device("cuda"))
    x = trainer.inputs(default_collate([data[int(row)] for row in rows]))
    torch.cuda.reset_peak_memory_stats()

    def step():
        trainer.step([x])
        torch.cuda.synchronize()

    benchmark.pedantic(step, rounds=10, warmup_rounds=3)
    benchmark.extra_info.update(precision=precision, device=torch.cuda.get_device_name(),
                                steps_per_s=round(1 / benchmark.stats.stats.mean, 3),
                                images_per_s=round(32 / benchmark.stats.stats.mean, 1),
                                peak_memory_gib=round(torch.cuda.max_memory_allocated() / 2**30, 2))
