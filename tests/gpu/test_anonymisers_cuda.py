"""Every anonymiser on CUDA gives its CPU output: blur, pixelation, CIAGAN and a trained-format AnonyGAN checkpoint.

Outputs are uint8 crops. Tolerance for the networks: float32 differences between the devices may move a
pixel across a rounding boundary, so at most 1 % of the values may differ, and none by more than 2 grey levels.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from acceptance.faces import face_batch, hybrid_rows, training_batch
from anonygan.data import NetworkInputs
from anonygan.inference import InferenceConfig
from anonygan.training import Trainer
from baselines import RunContext, create, identity_order
from baselines.ciagan import Ciagan, CiaganConfig, Generator
from baselines.ciagan.anonymiser import CiaganInferenceConfig
from tests.gpu.steps import variant

pytestmark = pytest.mark.gpu
FACES = 8


@pytest.fixture(scope="module")
def batch(faces):
    return face_batch(faces, FACES)


def assert_close_images(on_cuda: np.ndarray, on_cpu: np.ndarray) -> None:
    assert on_cuda.shape == on_cpu.shape and on_cuda.dtype == on_cpu.dtype == np.uint8
    difference = np.abs(on_cuda.astype(np.int16) - on_cpu)
    assert difference.max() <= 2, f"largest difference {difference.max()} grey levels"
    assert (difference > 0).mean() <= 0.01, f"{(difference > 0).mean():.2%} of the values differ"


@pytest.mark.parametrize("method", ["blur", "pixelate"])
def test_the_classic_baselines_give_the_same_crops_with_cuda_present(batch, method):
    """They compute on the CPU whatever the device (numpy and CPU tensors): bit for bit the same."""
    outputs = [create(method, None, RunContext(method=method, dataset="lfw", device=device)).anonymise(batch)
               for device in ("cpu", "cuda")]
    np.testing.assert_array_equal(outputs[0], outputs[1])
    assert (outputs[0] != batch.source).any()


@pytest.mark.parametrize("spectral_norm", ["update", "frozen"])
def test_ciagan_on_cuda_matches_the_cpu(batch, spectral_norm, exact_fp32):
    """The authors' network size, seeded random weights; both devices start from the same spectral-norm vectors."""
    torch.manual_seed(0)
    generator = Generator(CiaganConfig())
    identities = identity_order(pd.DataFrame({"source_identity": batch.source_identity}))
    settings = CiaganInferenceConfig(spectral_norm=spectral_norm)
    outputs = {device: Ciagan(copy.deepcopy(generator), identities, settings, device).anonymise(batch)
               for device in ("cpu", "cuda")}
    assert_close_images(outputs["cuda"], outputs["cpu"])


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, pairs) -> Path:
    """A trained-format checkpoint of the full anonygan-68 whose BatchNorm statistics were measured on real faces.

    Fresh running statistics (mean 0, variance 1) make the eval-mode generator overflow to non-finite pixels,
    which inference refuses; measured ones keep it finite, as training would.
    """
    model, train = variant("anonygan-68")
    folder = tmp_path_factory.mktemp("anonygan")
    trainer = Trainer(model, train, pairs, folder / "checkpoint.pt", device=torch.device("cpu"))
    x = NetworkInputs.build(training_batch(pairs, hybrid_rows(pairs, 8)), model.landmark_indices,
                            torch.device("cpu"))
    for module in trainer.generator.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None  # cumulative: the statistics of this one batch
    with torch.no_grad():
        trainer.generator(x.condition, x.context, x.condition_maps, x.source_maps)
    trainer.save()
    return trainer.checkpoint


@pytest.mark.parametrize("output", ["raw", "composited"])
def test_anonygan_on_cuda_matches_the_cpu(checkpoint, batch, output, exact_fp32):
    outputs = {device: create("anonygan", InferenceConfig(output=output),
                              RunContext(method="anonygan-68", dataset="lfw", checkpoint=checkpoint,
                                         device=device, batch_size=4)).anonymise(batch)
               for device in ("cpu", "cuda")}
    assert_close_images(outputs["cuda"], outputs["cpu"])
