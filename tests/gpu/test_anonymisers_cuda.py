"""Every anonymiser on CUDA gives its CPU output: blur, pixelation, CIAGAN, a trained-format AnonyGAN checkpoint
and a checkpoint in the layout of the authors' released one.

Outputs are uint8 crops. Tolerance for the networks: float32 differences between the devices may move a
pixel across a rounding boundary, so at most 1 % of the values may differ, and none by more than 2 grey levels.
"""

from __future__ import annotations

import copy
import json
from collections import OrderedDict

import numpy as np
import pandas as pd
import pytest
import torch

from acceptance.faces import RELEASED_LAYOUT, face_batch, hybrid_rows, training_batch
from anonygan import released
from anonygan.config import InferenceConfig
from anonygan.data import NetworkInputs
from anonygan.inference import AnonyGANInference
from anonygan.training import Trainer
from baselines import catalogue
from baselines.ciagan.anonymiser import Ciagan
from baselines.ciagan.config import CiaganInferenceConfig, CiaganModelConfig
from baselines.ciagan.model import Generator
from baselines.interface import RunContext, create, identity_order
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
    generator = Generator(CiaganModelConfig())
    identities = identity_order(pd.DataFrame({"source_identity": batch.source_identity}))
    settings = CiaganInferenceConfig(spectral_norm=spectral_norm)
    outputs = {device: Ciagan(copy.deepcopy(generator), identities, settings, device).anonymise(batch)
               for device in ("cpu", "cuda")}
    assert_close_images(outputs["cuda"], outputs["cpu"])


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory, pairs) -> Trainer:
    """The full anonygan-68 (CPU) whose generator's BatchNorm statistics were measured on real faces, saved.

    Fresh running statistics (mean 0, variance 1) make the eval-mode generator overflow to non-finite pixels,
    which inference refuses; measured ones keep it finite, as training would.
    """
    model, train = variant("anonygan-68")
    trainer = Trainer(model, train, pairs, tmp_path_factory.mktemp("anonygan") / "checkpoint.pt",
                      device=torch.device("cpu"))
    x = NetworkInputs.build(training_batch(pairs, hybrid_rows(pairs, 8)), model.landmark_indices,
                            torch.device("cpu"))
    for module in trainer.generator.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None  # cumulative: the statistics of this one batch
    with torch.no_grad():
        trainer.generator(x.condition, x.context, x.condition_maps, x.source_maps)
    trainer.save()
    return trainer


@pytest.fixture(scope="module")
def released_layout_state(calibrated) -> OrderedDict[str, torch.Tensor]:
    """The calibrated networks' tensors under the keys, in the order, of the authors' released 68-landmark,
    Landmark Attention checkpoint (the carried key layout): a file as `download-released` reads it."""
    if not RELEASED_LAYOUT.is_file():
        pytest.skip(f"no carried key layout at {RELEASED_LAYOUT}: run `python -m acceptance.carry`")
    entries = json.loads(RELEASED_LAYOUT.read_text())["variants"]["68lm_chatt"]["state_dict"]
    ours = {"G": calibrated.generator, "D_gan": calibrated.d_app, "D_pose": calibrated.d_lm}
    tensors = {prefix: iter(network.state_dict().values()) for prefix, network in ours.items()}
    return OrderedDict((entry["key"], next(tensors[entry["key"].split(".")[0]]).clone()) for entry in entries)


@pytest.mark.parametrize("output", ["raw", "composited"])
def test_anonygan_on_cuda_matches_the_cpu(calibrated, batch, output, exact_fp32):
    outputs = {device: create("anonygan", InferenceConfig(output=output),
                              RunContext(method="anonygan-68", dataset="lfw", checkpoint=calibrated.checkpoint,
                                         device=device, batch_size=4)).anonymise(batch)
               for device in ("cpu", "cuda")}
    assert_close_images(outputs["cuda"], outputs["cpu"])


def test_a_released_layout_checkpoint_on_cuda_matches_the_cpu(released_layout_state, batch, exact_fp32):
    """`anonygan-released`'s path: the authors' keys read into our networks, then the same inference code."""
    loaded = released.load(released_layout_state, landmarks=68, landmark_attention=True)
    anonymiser = catalogue.entry("anonygan-released").load()
    outputs = {device: anonymiser(AnonyGANInference(copy.deepcopy(loaded.generator), InferenceConfig(),
                                                    torch.device(device), 4)).anonymise(batch)
               for device in ("cpu", "cuda")}
    assert_close_images(outputs["cuda"], outputs["cpu"])
