"""The real faces a device run carries (`.gpu-carry/faces/lfw`, made by `python -m acceptance.carry`) as batches."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
from torch import Tensor
from torch.utils.data import default_collate

from anonygan.data import PairData
from baselines.interface import FaceBatch, load_batch
from facedata.prepared import PreparedDataset

REPO = Path(__file__).resolve().parents[1]
CARRY = REPO / ".gpu-carry"
#: The key layout of the AnonyGAN authors' released checkpoint (../shared/reference/released-checkpoints).
RELEASED_LAYOUT = CARRY / "reference" / "anonygan_lightning_keys.json"
#: Another prepared folder holding a pairs.csv can stand in for the carried one (e.g. on a GPU workstation).
FACES_VARIABLE = "ANONYGAN_GPU_FACES"


def faces_root() -> Path:
    return Path(os.environ.get(FACES_VARIABLE, CARRY / "faces" / "lfw"))


def pair_data(root: Path) -> PairData:
    """The training pairs of the carried faces (pairs.csv: each face with itself and with another of its person)."""
    return PairData(PreparedDataset(root), pd.read_csv(root / "pairs.csv"))


def hybrid_rows(data: PairData, size: int, offset: int = 0) -> list[int]:
    """`size` rows in the authors' hybrid mix, 3/4 same-image pairs; `offset` shifts to other rows."""
    same, different = np.flatnonzero(data.same_image), np.flatnonzero(~data.same_image)
    n_same = size * 3 // 4
    return [int(row) for row in (*np.roll(np.resize(same, n_same), -offset),
                                 *np.roll(np.resize(different, size - n_same), -offset))]


def training_batch(data: PairData, rows: list[int]) -> dict[str, Tensor]:
    """The rows collated as the training loader does (uint8 images, landmarks, masks, same_image)."""
    return default_collate([data[row] for row in rows])


def face_batch(root: Path, count: int) -> FaceBatch:
    """The first `count` different-image pairs as an anonymiser's FaceBatch (the anonymisation case)."""
    pairs = pd.read_csv(root / "pairs.csv")
    rows = pairs[~pairs["same_image"]].iloc[:count]
    prepared = PreparedDataset(root)
    return load_batch(rows, prepared, prepared)
