"""Training pairs from prepared crops, hybrid batches, and the tensors the networks take.

Loading (`PairData`) returns raw uint8 crops, bool masks and float landmarks so workers stay
cheap; `NetworkInputs.build` turns a batch into network inputs on the training device, where
images are scaled to [-1, 1] and landmarks drawn as one-hot maps.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from facedata.prepared import PreparedDataset
from infra.errors import DataError, MissingInputError
from infra.records import TRAIN_PAIRS

PAIR_COLUMNS = ("source", "condition", "same_image")


def to_unit_range(images: Tensor) -> Tensor:
    """(N, H, W, 3) uint8 -> (N, 3, H, W) float in [-1, 1]."""
    return images.permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def to_uint8(images: Tensor, quantise: str = "round") -> np.ndarray:
    """(N, 3, H, W) in [-1, 1] -> (N, H, W, 3) uint8, each level rounded or, as the authors' `tensor2im`, truncated."""
    scaled = (images.float().clamp(-1, 1) + 1.0) * 127.5
    levels = scaled.round() if quantise == "round" else scaled.floor()  # non-negative: floor is truncation
    return levels.to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def landmark_maps(landmarks: Tensor, indices: Sequence[int], height: int, width: int) -> Tensor:
    """One channel per landmark, 1 at its rounded pixel and 0 elsewhere (the authors' one-hot maps).

    landmarks: (N, 68, 2) pixel-centre (x, y). A landmark outside the frame leaves its channel
    empty rather than being clipped onto the border.
    """
    points = landmarks[:, list(indices)].round().long()
    x, y = points[..., 0], points[..., 1]
    inside = (x >= 0) & (x < width) & (y >= 0) & (y < height)
    sample, channel = inside.nonzero(as_tuple=True)
    maps = torch.zeros(len(landmarks), len(indices), height * width, device=landmarks.device)
    maps[sample, channel, y[inside] * width + x[inside]] = 1.0
    return maps.view(len(landmarks), len(indices), height, width)


#: The authors' training maps were one-hot on their 218x178 images, then resized to the 220x180 network input.
AUTHORS_MAP_SCALE = (218 / 220, 178 / 180)  # (height, width) of their map grid relative to the crop


def resized_landmark_maps(landmarks: Tensor, indices: Sequence[int], height: int, width: int) -> Tensor:
    """The authors' training maps: one-hot on a grid 218/220 x 178/180 of the crop, bilinearly resized to it.

    Their loader drew one-hot maps on the 218x178 aligned photo and resized them to 220x180 with
    torchvision's Resize (bilinear, align_corners=False, no antialiasing), so each point spreads
    over a few pixels. Landmarks are mapped to that grid in pixel-centre coordinates.
    """
    grid = (round(height * AUTHORS_MAP_SCALE[0]), round(width * AUTHORS_MAP_SCALE[1]))
    scale = landmarks.new_tensor([grid[1] / width, grid[0] / height])
    one_hot = landmark_maps((landmarks + 0.5) * scale - 0.5, indices, *grid)
    return F.interpolate(one_hot, size=(height, width), mode="bilinear", align_corners=False)


#: How landmark maps are drawn: exact one-hot (test time, both codes) | the authors' resized training maps.
LANDMARK_MAPS = {"one_hot": landmark_maps, "resized": resized_landmark_maps}


class PairData(Dataset):
    """Rows of a pair manifest (source, condition, same_image) as raw arrays from a prepared dataset."""

    def __init__(self, prepared: PreparedDataset, pairs: pd.DataFrame):
        missing = [column for column in PAIR_COLUMNS if column not in pairs.columns]
        if missing or pairs.empty:
            raise DataError(f"pair manifest lacks column(s) {', '.join(missing)}" if missing
                             else "pair manifest has no rows")
        unknown = sorted({key for key in pd.concat([pairs["source"], pairs["condition"]])
                          if key not in prepared})
        if unknown:
            raise DataError(f"{len(unknown)} pair keys are not prepared faces of {prepared.root}, "
                             f"e.g. {unknown[:3]}")
        self.prepared = prepared
        self.pairs = pairs.reset_index(drop=True)
        self.same_image = self.pairs["same_image"].astype(bool).to_numpy()

    @classmethod
    def from_files(cls, manifest: Path, prepared_root: Path) -> PairData:
        if not manifest.is_file():
            raise MissingInputError(f"{manifest} not found: run `dvc repro pairs` first")
        return cls(PreparedDataset(prepared_root), TRAIN_PAIRS.read(manifest))

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        source, condition = self.pairs.at[index, "source"], self.pairs.at[index, "condition"]
        return {
            "source": torch.tensor(self.prepared.crop(source)),
            "mask": torch.tensor(self.prepared.mask(source)),
            "source_landmarks": torch.from_numpy(self.prepared.landmarks(source)),
            "condition": torch.tensor(self.prepared.crop(condition)),
            "condition_landmarks": torch.from_numpy(self.prepared.landmarks(condition)),
            "same_image": torch.tensor(bool(self.same_image[index])),
        }


def hybrid_batches(same_image: np.ndarray, batch_size: int, batches: int, seed: int,
                   epoch: int) -> list[list[int]]:
    """Row indices of one epoch's batches, each holding the manifest's share of same-image rows.

    The paper sets "75 % of pairs with I_c = I_s for each batch" (the pairs stage writes that
    share, params pairs.celeba.same_image_ratio), so every batch gets round(share * batch_size)
    same-image rows instead of a share left to chance. Rows are drawn with replacement, as the
    authors' loader does; the draw depends only on (seed, epoch), so a resumed run sees the
    same batches.
    """
    rng = np.random.default_rng([seed, epoch])
    same_rows, different_rows = np.flatnonzero(same_image), np.flatnonzero(~same_image)
    n_same = round(len(same_rows) / len(same_image) * batch_size)
    return [
        np.concatenate([rng.choice(same_rows, n_same), rng.choice(different_rows, batch_size - n_same)])
        .tolist()
        for _ in range(batches)
    ]


@dataclass
class NetworkInputs:
    """One batch on the device: images in [-1, 1] (N, 3, H, W), mask (N, 1, H, W), maps (N, L, H, W)."""

    source: Tensor
    condition: Tensor
    context: Tensor  # I_sc = I_s * (1 - mask): the face region is 0, mid-grey
    mask: Tensor
    source_maps: Tensor
    condition_maps: Tensor
    same_image: Tensor  # (N,) bool

    @classmethod
    def build(cls, batch: dict[str, Tensor], landmark_indices: Sequence[int], device: torch.device,
              memory_format: torch.memory_format = torch.contiguous_format, maps: str = "one_hot") -> NetworkInputs:
        """`maps`: how landmark maps are drawn, a key of LANDMARK_MAPS."""
        draw = LANDMARK_MAPS[maps]

        def image(tensor: Tensor) -> Tensor:
            return to_unit_range(tensor.to(device, non_blocking=True)).contiguous(memory_format=memory_format)

        source, condition = image(batch["source"]), image(batch["condition"])
        height, width = source.shape[-2:]
        mask = batch["mask"].to(device).unsqueeze(1).float().contiguous(memory_format=memory_format)

        def drawn(landmarks: Tensor) -> Tensor:
            return draw(landmarks.to(device), landmark_indices, height, width).contiguous(memory_format=memory_format)

        return cls(source=source, condition=condition, context=source * (1 - mask), mask=mask,
                   source_maps=drawn(batch["source_landmarks"]),
                   condition_maps=drawn(batch["condition_landmarks"]),
                   same_image=batch["same_image"].to(device).bool())
