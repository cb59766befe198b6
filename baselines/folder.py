"""Evaluate images a third-party method wrote: `<directory>/<pair_id>.png`, one per manifest row.

The images must already be anonymised crops in the canonical frame (the same size as the
prepared crops, composited as the method intends), stored as PNG (lossless) inside the folder;
they are returned as they are (16-bit or palette PNGs converted to 8-bit RGB, scaled). A file
of another format (a JPEG named .png), another size, or a link leading out of the folder is
refused in one line naming it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from baselines.interface import Anonymiser, FaceBatch, RunContext
from baselines.settings import FolderConfig
from facedata.images import read_rgb
from infra.errors import DataError, MissingInputError, ParamsError

#: How many missing file names an error lists before it only counts them.
_LISTED = 5


class FolderAnonymiser(Anonymiser):
    """Reads `<directory>/<pair_id>.png` for each face of a batch."""

    reads_stored_images = True

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        if not self.directory.is_dir():
            raise MissingInputError(f"folder anonymiser: {self.directory} is not a directory")

    @classmethod
    def from_config(cls, settings: FolderConfig, context: RunContext) -> FolderAnonymiser:
        """<root>/<dataset>/, e.g. third_party/celeba/17.png.

        root: the method's own `methods.<name>.root` (several third-party methods side by side),
        else `anonymisers.folder.root`.
        """
        root = context.root or settings.root
        if not root:
            raise ParamsError(
                f"methods.{context.method}.root or anonymisers.folder.root must name the folder "
                "holding <dataset>/<pair_id>.png"
            )
        return cls(Path(root) / context.dataset)

    def read(self, path: Path) -> np.ndarray:
        """A lossless PNG inside the folder: a link leading out of it, or a JPEG by another name, is refused."""
        real, folder = path.resolve(), self.directory.resolve()
        if not real.is_relative_to(folder):
            raise DataError(f"{path} leads to {real}, outside {folder}: the folder method reads only files inside it")
        return read_rgb(path, formats=("PNG",))

    def anonymise(self, batch: FaceBatch) -> np.ndarray:
        paths = [self.directory / f"{pair_id}.png" for pair_id in batch.pair_ids]
        missing = [path.name for path in paths if not path.is_file()]
        if missing:
            listed = ", ".join(missing[:_LISTED])
            if len(missing) > _LISTED:
                listed += f" and {len(missing) - _LISTED} more"
            raise MissingInputError(f"{self.directory}: {len(missing)} of {len(paths)} images missing: {listed}")
        height, width = batch.source.shape[1:3]
        images = []
        for path in paths:
            rgb = self.read(path)
            if rgb.shape[:2] != (height, width):
                raise DataError(f"{path} is {rgb.shape[1]}x{rgb.shape[0]} (WxH); the crops are {width}x{height}")
            images.append(rgb)
        return np.stack(images) if images else np.zeros_like(batch.source)
