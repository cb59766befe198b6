"""The metric networks on CUDA against the CPU on 64 real LFW crops: Inception features, MTCNN, FaceNet.

Inception and FaceNet run the real architectures with seeded random weights (`installed`: the pretrained
files are too large to carry, and agreement between devices does not depend on the weights); MTCNN runs
with the weights facenet-pytorch ships.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

from facedata.prepared import PreparedDataset, crop_relpath
from metrics import facenet
from metrics.fid import InceptionFeatures
from runtime.torchvision_compat import ensure_torchvision

pytestmark = pytest.mark.gpu
DEVICES = ("cpu", "cuda")


@pytest.fixture(scope="module")
def crops(faces) -> tuple[list, np.ndarray]:
    """(the 64 crop files, their landmarks (64, 68, 2))."""
    prepared = PreparedDataset(faces)
    keys = list(prepared.ok["key"])
    assert len(keys) == 64
    return [faces / crop_relpath(key) for key in keys], np.stack([prepared.landmarks(key) for key in keys])


def relative_difference(on_cuda: np.ndarray, on_cpu: np.ndarray) -> float:
    return float(np.abs(on_cuda - on_cpu).max() / np.abs(on_cpu).max())


@pytest.mark.parametrize("resize", ["clean", "legacy_pytorch"])
def test_inception_features_on_cuda_match_the_cpu(crops, installed, resize, exact_fp32):
    paths, _ = crops
    features = {device: InceptionFeatures(resize, torch.device(device), 32).compute(paths) for device in DEVICES}
    assert features["cpu"].shape == (64, 2048)
    assert relative_difference(features["cuda"], features["cpu"]) < 1e-4


def test_facenet_embeddings_on_cuda_match_the_cpu(crops, installed, exact_fp32):
    paths, landmarks = crops
    inputs = [functools.partial(facenet.aligned_face, path, points) for path, points in zip(paths, landmarks,
                                                                                           strict=True)]
    outputs = {device: facenet.outputs("casia", inputs, torch.device(device), 32) for device in DEVICES}
    embeddings = {device: output[:, :facenet.EMBEDDING] for device, output in outputs.items()}
    assert np.abs(embeddings["cuda"] - embeddings["cpu"]).max() < 1e-4  # unit vectors
    # The top-1 class of a random classifier can flip between near-equal logits: all but one must agree.
    assert (outputs["cuda"][:, -1] == outputs["cpu"][:, -1]).sum() >= 63


def test_mtcnn_detections_on_cuda_match_the_cpu(crops, exact_fp32):
    """Same faces found in (at least) 63 of 64 crops; where both find one, boxes within 1 px, scores within 1e-3."""
    ensure_torchvision()
    from facenet_pytorch import MTCNN

    from facedata.images import read_rgb

    paths, _ = crops
    images = np.stack([read_rgb(path) for path in paths])
    found = {}
    for device in DEVICES:
        with torch.inference_mode():
            found[device] = MTCNN(keep_all=True, device=torch.device(device)).detect(images)
    counts = {device: [0 if b is None else len(b) for b in boxes] for device, (boxes, _) in found.items()}
    assert sum(counts["cpu"]) >= 60, "MTCNN should find the faces of real crops"
    assert sum(a == b for a, b in zip(counts["cuda"], counts["cpu"], strict=True)) >= 63
    for index, (cuda_boxes, cpu_boxes) in enumerate(zip(found["cuda"][0], found["cpu"][0], strict=True)):
        if cuda_boxes is not None and cpu_boxes is not None and len(cuda_boxes) == len(cpu_boxes):
            assert np.abs(cuda_boxes - cpu_boxes).max() <= 1.0, index
            assert np.abs(found["cuda"][1][index] - found["cpu"][1][index]).max() <= 1e-3, index
