"""facenet-pytorch's InceptionResnetV1 with verified pretrained weights: embeddings and top-1 classes.

Two ways to feed it an image:
- whole (`whole_image`): the whole image as a [0, 1] tensor, no standardisation, optionally
  resized to side x side by `F.interpolate`'s default (nearest): what the authors' re-id code
  fed it (`compute_reid`, `compute_reid_lfw` in evaluation/evaluate.py);
- aligned (`aligned_face`): the face cut from a crop with the box of its 68 landmarks (the
  region MTCNN's box covers: eyebrows to chin, jaw side to jaw side), resized to 160x160 by
  facenet-pytorch's own `extract_face` and standardised as its MTCNN does ((x - 127.5) / 128).
  An anonymised image is cut with its source's landmarks, so original and anonymised faces are
  framed identically and only their appearance differs.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from facedata.images import read_rgb
from metrics import weights
from metrics.store import cached_features, content_digest
from runtime.torchvision_compat import ensure_torchvision

MODELS = {"casia": "facenet_casia", "vggface2": "facenet_vggface2"}
FACE_SIZE = 160
EMBEDDING = 512
CACHE_VERSION = 2  # bump when the outputs for a file change (2: whole-image input added to the key)


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


def aligned_face(path: Path, landmarks: np.ndarray) -> torch.Tensor:
    """(3, 160, 160) standardised face cut from the image at `path` by the box of `landmarks`."""
    from facenet_pytorch import extract_face, fixed_image_standardization

    box = np.concatenate([landmarks.min(axis=0), landmarks.max(axis=0) + 1])
    with Image.open(path) as image:
        return fixed_image_standardization(extract_face(image.convert("RGB"), box, FACE_SIZE))


def whole_image(path: Path, side: int | None) -> torch.Tensor:
    """(3, H, W) in [0, 1]: the whole image, resized to side x side (nearest) when `side` is given."""
    image = torch.from_numpy(read_rgb(path).copy()).permute(2, 0, 1).float() / 255.0
    return image if side is None else F.interpolate(image[None], (side, side))[0]


def _same_shape_runs(images: list[torch.Tensor]) -> Iterator[torch.Tensor]:
    """Consecutive images of one shape, stacked (the network pools adaptively, but a batch needs one shape)."""
    start = 0
    for end in range(1, len(images) + 1):
        if end == len(images) or images[end].shape != images[start].shape:
            yield torch.stack(images[start:end])
            start = end


@torch.inference_mode()
def outputs(model: str, inputs: list[Callable[[], torch.Tensor]], device: torch.device, batch_size: int) -> np.ndarray:
    """(N, 513) float32: the L2-normalised 512-d embedding, then the top-1 class, of each input's tensor."""
    network = load(model, device)
    captured = {}
    hook = network.last_bn.register_forward_hook(lambda module, args, output: captured.update(features=output))
    rows = []
    try:
        for start in range(0, len(inputs), batch_size):
            for batch in _same_shape_runs([make() for make in inputs[start:start + batch_size]]):
                logits = network(batch.to(device))
                embedding = F.normalize(captured["features"], dim=1)
                rows.append(torch.cat([embedding, logits.argmax(dim=1, keepdim=True).float()], dim=1).cpu())
    finally:
        hook.remove()
    return torch.cat(rows).numpy() if rows else np.zeros((0, EMBEDDING + 1), np.float32)


def cached_outputs(model: str, paths: list[Path], cache: Path, device: torch.device, batch_size: int, *,
                   landmarks: np.ndarray | None = None, side: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(embeddings (N, 512), top-1 classes (N,)), cached by content: aligned faces when `landmarks`
    ((N, 68, 2)) are given, else whole images (resized to `side` when given)."""
    if landmarks is not None:
        landmarks = np.asarray(landmarks, np.float32).reshape(len(paths), 68, 2)
        digests = [content_digest(path, points.tobytes()) for path, points in zip(paths, landmarks, strict=True)]
        inputs = [functools.partial(aligned_face, path, points) for path, points in zip(paths, landmarks, strict=True)]
        mode = "aligned"
    else:
        digests = [content_digest(path) for path in paths]
        inputs = [functools.partial(whole_image, path, side) for path in paths]
        mode = f"whole{side or ''}"
    extractor = f"facenet-{model}-{weights.PRETRAINED[MODELS[model]].sha256[:16]}-{mode}"
    result = cached_features(cache, extractor, CACHE_VERSION, digests,
                             lambda: outputs(model, inputs, device, batch_size))
    return result[:, :EMBEDDING], result[:, EMBEDDING].astype(np.int64)
