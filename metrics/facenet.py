"""facenet-pytorch's InceptionResnetV1 with verified pretrained weights: embeddings and top-1 classes.

The face is cut from a crop with the box of its 68 landmarks (the region MTCNN's box
covers: eyebrows to chin, jaw side to jaw side) and resized to 160x160 by facenet-pytorch's
own `extract_face`, then standardised as its MTCNN does ((x - 127.5) / 128). An anonymised
image is cut with its source's landmarks, so original and anonymised faces are framed
identically and only their appearance differs.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from facedata.compat import ensure_torchvision
from metrics import weights
from metrics.store import cached_features, content_digest

MODELS = {"casia": "facenet_casia", "vggface2": "facenet_vggface2"}
FACE_SIZE = 160
EMBEDDING = 512


def load(model: str, device: torch.device) -> torch.nn.Module:
    """InceptionResnetV1 (classify=True) with the verified weights of `model` ('casia' or 'vggface2')."""
    if model not in MODELS:
        raise ValueError(f"unknown FaceNet model {model!r}; known: {sorted(MODELS)}")
    return _network(weights.resolve(MODELS[model]), weights.PRETRAINED[MODELS[model]].sha256, device)


@functools.cache
def _network(path: Path, sha256: str, device: torch.device) -> torch.nn.Module:
    ensure_torchvision()
    from facenet_pytorch import InceptionResnetV1

    state = torch.load(path, map_location="cpu", weights_only=True)
    if "logits.weight" not in state:
        raise ValueError(f"{path} has no classifier layer (logits.weight): not a facenet-pytorch classifier checkpoint")
    network = InceptionResnetV1(classify=True, num_classes=state["logits.weight"].shape[0])
    network.load_state_dict(state)
    return network.eval().to(device)


def face_tensor(path: Path, landmarks: np.ndarray) -> torch.Tensor:
    """(3, 160, 160) standardised face cut from the image at `path` by the box of `landmarks`."""
    from facenet_pytorch import extract_face, fixed_image_standardization

    box = np.concatenate([landmarks.min(axis=0), landmarks.max(axis=0) + 1])
    with Image.open(path) as image:
        return fixed_image_standardization(extract_face(image.convert("RGB"), box, FACE_SIZE))


@torch.inference_mode()
def outputs(model: str, paths: list[Path], landmarks: np.ndarray, device: torch.device, batch_size: int) -> np.ndarray:
    """(N, 513) float32: the L2-normalised 512-d embedding, then the top-1 class."""
    network = load(model, device)
    captured = {}
    hook = network.last_bn.register_forward_hook(lambda module, args, output: captured.update(features=output))
    rows = []
    try:
        for start in range(0, len(paths), batch_size):
            chunk = zip(paths[start:start + batch_size], landmarks[start:start + batch_size], strict=True)
            batch = torch.stack([face_tensor(path, points) for path, points in chunk])
            logits = network(batch.to(device))
            embedding = torch.nn.functional.normalize(captured["features"], dim=1)
            rows.append(torch.cat([embedding, logits.argmax(dim=1, keepdim=True).float()], dim=1).cpu())
    finally:
        hook.remove()
    return torch.cat(rows).numpy() if rows else np.zeros((0, EMBEDDING + 1), np.float32)


def cached_outputs(model: str, paths: list[Path], landmarks: np.ndarray, cache: Path, device: torch.device,
                   batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """`outputs` cached by the images' and landmarks' content: (embeddings (N, 512), top-1 classes (N,))."""
    landmarks = np.asarray(landmarks, np.float32).reshape(len(paths), 68, 2)
    digests = [content_digest(path, points.tobytes()) for path, points in zip(paths, landmarks, strict=True)]
    extractor = f"facenet-{model}-{weights.PRETRAINED[MODELS[model]].sha256[:16]}"
    result = cached_features(cache, extractor, digests, lambda: outputs(model, paths, landmarks, device, batch_size))
    return result[:, :EMBEDDING], result[:, EMBEDDING].astype(np.int64)
