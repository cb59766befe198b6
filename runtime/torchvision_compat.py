"""Make torchvision importable on a CPU-only torch.

PyPI's torchvision wheels are built against CUDA torch: their compiled ops link
`libtorch_cuda.so`, which a CPU build of torch does not have. torchvision then fails at
import, because `_meta_registrations` registers fake kernels for `torchvision::nms` and
`torchvision::qnms`, ops that only the missing library defines. pytorch-fid and
facenet-pytorch both import torchvision, and MTCNN calls its NMS.

`ensure_torchvision()` checks whether torchvision's own ops load. If they do (any CUDA
machine with a matching torchvision) it changes nothing. If not, it declares the two op
schemas so the import succeeds and routes `torchvision.ops.nms` (which `batched_nms`
calls) to the greedy NMS below. No other torchvision op is provided: calling one still
raises torchvision's own "Couldn't load custom C++ ops" error.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import torch

_NMS_SCHEMA = "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor"


def _torchvision_ops_load() -> bool:
    spec = importlib.util.find_spec("torchvision")
    if spec is None or spec.origin is None:
        raise ImportError("torchvision is not installed: pip install -e . installs it")
    for library in Path(spec.origin).parent.glob("_C*.so"):
        try:
            torch.ops.load_library(str(library))
            return True
        except OSError:
            return False
    return False


def greedy_nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Indices of the boxes kept by greedy NMS, by decreasing score (torchvision.ops.nms semantics)."""
    from torchvision.ops.boxes import box_iou

    order = scores.argsort(descending=True)
    iou = box_iou(boxes[order], boxes[order])
    keep = torch.ones(len(order), dtype=torch.bool, device=boxes.device)
    for i in range(len(order)):
        if keep[i]:
            keep[i + 1 :] &= iou[i, i + 1 :] <= iou_threshold
    return order[keep]


@functools.cache
def ensure_torchvision() -> bool:
    """Import torchvision, patching in NMS if its compiled ops cannot load. Returns True if patched."""
    if _torchvision_ops_load():
        import torchvision  # noqa: F401

        return False
    library = torch.library.Library("torchvision", "DEF")
    for name in ("nms", "qnms"):
        library.define(name + _NMS_SCHEMA)
    ensure_torchvision.library = library  # keep the definitions alive
    import torchvision.ops
    import torchvision.ops.boxes

    torchvision.ops.boxes.nms = greedy_nms
    torchvision.ops.nms = greedy_nms
    return True
