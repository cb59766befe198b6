"""The anonymiser interface: a batch of prepared faces in, anonymised 220x180 crops out.

Every method of the benchmark (blurring, pixelation, CIAGAN, the AnonyGAN variants, images a
third-party method wrote) is a class named in `baselines.catalogue`, so the anonymise stage runs
them all the same way:

    anonymiser = create("blur", BlurConfig(kernel_size=101), RunContext(method="blur", dataset="celeba"))
    crops = anonymiser.anonymise(batch)          # (N, H, W, 3) uint8, composited into the source

Adding a method takes one class and one catalogue entry:

    class MyMethod(Anonymiser):                      # in my_package/my_method.py
        def anonymise(self, batch: FaceBatch) -> np.ndarray:
            ...

    ANONYMISERS["my-method"] = Entry("my_package.my_method:MyMethod", "my_package/my_method.py")

`from_config` builds it from its typed settings (the params section its `methods` entry names,
loaded into the entry's settings class) and what the stage knows (dataset, identities,
checkpoint); the default calls the class without arguments.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from baselines import catalogue
from facedata.prepared import PreparedDataset
from infra.errors import DataError


@dataclass(frozen=True)
class FaceBatch:
    """Prepared faces to anonymise, all in one frame: the canonical crop, or any for an `Anonymiser.any_frame`."""

    pair_ids: list[int]
    source: np.ndarray  # (N, H, W, 3) uint8, the faces to anonymise
    source_mask: np.ndarray  # (N, H, W) bool, True inside the face
    source_landmarks: np.ndarray  # (N, 68, 2) float32, pixel-centre (x, y)
    condition: np.ndarray  # (N, H, W, 3) uint8, the condition faces (AnonyGAN)
    condition_landmarks: np.ndarray  # (N, 68, 2) float32
    source_identity: list[str]

    def __post_init__(self) -> None:
        n = len(self.pair_ids)
        if self.source.ndim != 4 or self.source.shape[0] != n or self.source.shape[3] != 3:
            raise ValueError(f"FaceBatch.source must be (N={n}, H, W, 3), got {self.source.shape}")
        expected = {
            "source_mask": (self.source_mask, self.source.shape[:3], np.bool_),
            "source_landmarks": (self.source_landmarks, (n, 68, 2), None),
            "condition": (self.condition, self.source.shape, np.uint8),
            "condition_landmarks": (self.condition_landmarks, (n, 68, 2), None),
        }
        if self.source.dtype != np.uint8:
            raise ValueError(f"FaceBatch.source must be uint8, got {self.source.dtype}")
        for name, (array, shape, dtype) in expected.items():
            if array.shape != shape or (dtype is not None and array.dtype != dtype):
                wanted = f"{shape} {np.dtype(dtype).name}" if dtype is not None else f"{shape}"
                raise ValueError(f"FaceBatch.{name} must be {wanted}, got {array.shape} {array.dtype}")
        if len(self.source_identity) != n:
            raise ValueError(f"FaceBatch.source_identity has {len(self.source_identity)} entries for {n} faces")

    def __len__(self) -> int:
        return len(self.pair_ids)


@dataclass(frozen=True)
class RunContext:
    """What the anonymise stage knows when it builds an anonymiser, besides its settings."""

    method: str
    dataset: str
    #: The dataset's source identities in protocol order (see `identity_order`); CIAGAN's target rule uses it.
    identities: tuple[str, ...] = ()
    #: models/<method>/checkpoint.pt, where the method's train stage writes its weights.
    checkpoint: Path | None = None
    #: The method entry's own folder (`methods.<name>.root`), for anonymisers that read files.
    root: Path | None = None
    #: models/<method>/, where `download-released@<method>` puts the authors' released file and its status.
    released: Path | None = None
    batch_size: int = 32
    device: str | None = None  # None: CUDA when available, else CPU


class Anonymiser(ABC):
    """One anonymisation method. Instances may hold models; `anonymise` may be called many times.

    Its settings class and the authors' release it loads are in its `baselines.catalogue` entry.
    """

    #: It draws each face's appearance from FaceBatch.condition (AnonyGAN); others ignore the condition faces.
    needs_condition_faces: ClassVar[bool] = False
    #: It only returns images another program wrote for the benchmark's pairs, so it cannot anonymise new faces.
    reads_stored_images: ClassVar[bool] = False
    #: It anonymises a face in any frame, given the image, the face's mask and landmarks in it (blur, pixelation,
    #: AnonyGAN); the others get canonical crops, pasted back where the stage works in another frame (LFW's photo).
    any_frame: ClassVar[bool] = False

    @classmethod
    def from_config(cls, settings: Any, context: RunContext) -> Anonymiser:
        """Build the anonymiser for a stage run; methods with settings or weights override this."""
        return cls()

    @abstractmethod
    def anonymise(self, batch: FaceBatch) -> np.ndarray:
        """(N, H, W, 3) uint8 anonymised crops in the source frame, composited into the source crop."""


def create(name: str, settings: Any = None, context: RunContext | None = None) -> Anonymiser:
    """The anonymiser `name` of the catalogue, built from its settings (default: the settings class's defaults)."""
    entry = catalogue.entry(name)
    if settings is None and entry.settings is not None:
        settings = entry.settings()
    if entry.settings is not None and not isinstance(settings, entry.settings):
        raise TypeError(f"anonymiser {name!r} takes {entry.settings.__name__} settings, got {type(settings).__name__}")
    return entry.load().from_config(settings, context or RunContext(method=name, dataset=""))


def check_output(batch: FaceBatch, images: np.ndarray, method: str) -> np.ndarray:
    """`images` if it is what `anonymise` promises for `batch`, else a ValueError naming `method`."""
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.shape != batch.source.shape:
        got = f"{images.shape} {images.dtype}" if isinstance(images, np.ndarray) else type(images).__name__
        raise DataError(f"anonymiser {method!r} returned {got}; expected {batch.source.shape} uint8")
    return images


def identity_order(manifest: pd.DataFrame, column: str = "source_identity") -> tuple[str, ...]:
    """The manifest's identities in order of first appearance (the pairs stage writes protocol order)."""
    return tuple(dict.fromkeys(manifest[column].astype(str)))


def load_batch(rows: pd.DataFrame, source: PreparedDataset, condition: PreparedDataset) -> FaceBatch:
    """A FaceBatch for pair-manifest rows (columns pair_id, source, condition).

    `source` and `condition` are the prepared datasets the keys refer to (the same one for CelebA
    and LFW). Rows whose source was not prepared must be filtered out first: PreparedDataset raises
    a KeyError naming the key.
    """
    sources, conditions = list(rows["source"]), list(rows["condition"])
    return FaceBatch(
        pair_ids=[int(pair_id) for pair_id in rows["pair_id"]],
        source=_stack([source.crop(key) for key in sources], (0, 0, 0), np.uint8),
        source_mask=_stack([source.mask(key) for key in sources], (0, 0), np.bool_),
        source_landmarks=_stack([source.landmarks(key) for key in sources], (68, 2), np.float32),
        condition=_stack([condition.crop(key) for key in conditions], (0, 0, 0), np.uint8),
        condition_landmarks=_stack([condition.landmarks(key) for key in conditions], (68, 2), np.float32),
        source_identity=[source.identity(key) for key in sources],
    )


def _stack(arrays: Sequence[np.ndarray], empty_shape: tuple[int, ...], dtype) -> np.ndarray:
    return np.stack(arrays) if arrays else np.zeros((0, *empty_shape), dtype)
