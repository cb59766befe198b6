"""The torchvision shim: its NMS matches a brute-force reference and MTCNN's import works."""

from __future__ import annotations

import torch

from runtime.torchvision_compat import ensure_torchvision, greedy_nms


def reference_nms(boxes: torch.Tensor, scores: torch.Tensor, threshold: float) -> list[int]:
    def iou(a, b):
        left, top = max(a[0], b[0]), max(a[1], b[1])
        right, bottom = min(a[2], b[2]), min(a[3], b[3])
        inter = max(0.0, right - left) * max(0.0, bottom - top)
        area = lambda r: (r[2] - r[0]) * (r[3] - r[1])  # noqa: E731
        return inter / (area(a) + area(b) - inter)

    kept: list[int] = []
    for i in sorted(range(len(scores)), key=lambda k: -float(scores[k])):
        if all(iou(boxes[i].tolist(), boxes[j].tolist()) <= threshold for j in kept):
            kept.append(i)
    return kept


def test_greedy_nms_matches_reference():
    ensure_torchvision()
    generator = torch.Generator().manual_seed(0)
    for _ in range(20):
        corners = torch.rand(40, 2, generator=generator) * 100
        sizes = torch.rand(40, 2, generator=generator) * 40 + 1
        boxes = torch.cat([corners, corners + sizes], dim=1)
        scores = torch.rand(40, generator=generator)
        assert greedy_nms(boxes, scores, 0.4).tolist() == reference_nms(boxes, scores, 0.4)


def test_torchvision_ops_route_to_a_working_nms():
    ensure_torchvision()
    import torchvision

    boxes = torch.tensor([[0.0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30]])
    kept = torchvision.ops.batched_nms(boxes, torch.tensor([0.9, 0.8, 0.7]), torch.tensor([0, 0, 0]), 0.5)
    assert kept.tolist() == [0, 2]
    from facenet_pytorch import MTCNN  # noqa: F401  (imports torchvision internally)
