"""Reader for the `prepare` stage's output: `data/prepared/<dataset>/`.

Layout:
    index.parquet          one row per input photo (see INDEX_COLUMNS)
    crops/<key>.png        canonical crop, RGB, lossless
    masks/<key>.png        face mask, L, 255 inside the face

`key` is the photo's path relative to the dataset's image folder, e.g. `000001.jpg`
(CelebA) or `Abel_Pacheco/Abel_Pacheco_0001.jpg` (LFW). Pair manifests refer to photos by key.
Output names keep the whole key (`crops/000001.jpg.png`), so `a.jpg` and `a.png` never share a crop.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow
from PIL import Image

from facedata.framing import CropTransform
from facedata.images import read_rgb
from infra.errors import DataError, MissingInputError

INDEX_COLUMNS = {
    "key": "photo path relative to the dataset's image folder",
    "identity": "identity label (CelebA number or LFW name), as a string",
    "status": "'ok' or why the photo was not prepared: missing, outside_root, unreadable, too_large, too_small, "
              "no_face, error (an unexpected failure; retried on every run)",
    "detail": "human-readable explanation of a non-ok status",
    "sha1": "SHA-1 of the photo's bytes (cache key)",
    "config": "fingerprint of the prepare settings, processing version and libraries that produced the row",
    "crop_sha1": "SHA-1 of the crop file's bytes as written (ok rows; a re-run reuses the row only if it matches)",
    "mask_sha1": "SHA-1 of the mask file's bytes as written",
    "width": "upright photo width in pixels",
    "height": "upright photo height in pixels",
    "n_faces": "faces dlib found (the largest, most central is kept)",
    "detector": "which detector found the kept face: hog, or cnn (the fallback when HOG finds none)",
    "box": "kept detection box (left, top, right, bottom) in photo coordinates",
    "landmarks": "68 (x, y) crop coordinates, flattened to 136 floats",
    "landmarks_image": "the same landmarks in photo coordinates",
    "transform": "(x0, y0, scale): crop = scale * (photo - (x0, y0)), continuous coordinates",
    "row_sha256": "SHA-256 over the row's other values (infra.journal): a re-run reuses the row only if it matches",
}


def crop_relpath(key: str) -> str:
    return f"crops/{key}.png"


def mask_relpath(key: str) -> str:
    return f"masks/{key}.png"


def read_index(path: Path) -> pd.DataFrame:
    """The prepared index at `path`; a MissingInputError or DataError naming the file and what to do."""
    stage = f"prepare@{path.parent.name}"
    if not path.is_file():
        raise MissingInputError(f"{path} not found: run `dvc repro {stage}` first")
    try:
        return pd.read_parquet(path)
    except (OSError, ValueError, pyarrow.ArrowException) as error:  # truncated or not Parquet at all
        raise DataError(f"{path} is not a readable prepared index ({type(error).__name__}: {error}); "
                        f"delete it and run `dvc repro {stage}`") from None


class PreparedDataset:
    """Random access to prepared faces by key. Only rows with status 'ok' have crops."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.index = read_index(self.root / "index.parquet").set_index("key", drop=False)

    @property
    def ok(self) -> pd.DataFrame:
        return self.index[self.index["status"] == "ok"]

    def __contains__(self, key: str) -> bool:
        return key in self.index.index and self.index.at[key, "status"] == "ok"

    def _row(self, key: str) -> pd.Series:
        if key not in self.index.index:
            raise KeyError(f"{key!r} is not in {self.root / 'index.parquet'}")
        row = self.index.loc[key]
        if row["status"] != "ok":
            raise KeyError(f"{key!r} was not prepared: {row['status']} ({row['detail']})")
        return row

    def crop(self, key: str) -> np.ndarray:
        """(H, W, 3) uint8 RGB."""
        self._row(key)
        return read_rgb(self.root / crop_relpath(key))

    def mask(self, key: str) -> np.ndarray:
        """(H, W) bool, True inside the face."""
        self._row(key)
        return np.asarray(Image.open(self.root / mask_relpath(key))) > 127

    def landmarks(self, key: str) -> np.ndarray:
        """(68, 2) float32 in crop coordinates (pixel-centre based)."""
        return np.asarray(self._row(key)["landmarks"], dtype=np.float32).reshape(68, 2)

    def transform(self, key: str) -> CropTransform:
        """Photo -> crop transform, to paste an anonymised crop back into the photo."""
        return CropTransform.from_list(self._row(key)["transform"])

    def identity(self, key: str) -> str:
        return str(self.index.at[key, "identity"])
