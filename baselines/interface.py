"""The anonymiser interface: a batch of prepared faces in, anonymised 220x180 crops out.

Every method of the benchmark (blurring, pixelation, CIAGAN, the AnonyGAN variants, images a
third-party method wrote) is a class registered under its method name, so the anonymise stage
runs them all the same way:

    anonymiser = create("blur", RunContext(method="blur", dataset="celeba", params=params))
    crops = anonymiser.anonymise(batch)          # (N, H, W, 3) uint8, composited into the source

Adding a method takes one class:

    @register("my-method")
    class MyMethod(Anonymiser):
        def anonymise(self, batch: FaceBatch) -> np.ndarray:
            ...

`from_params` builds it from what the stage knows (params.yaml, dataset, checkpoint folder);
the default calls the class without arguments.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd

from facedata.prepared import PreparedDataset


@dataclass(frozen=True)
class FaceBatch:
    """Prepared faces to anonymise, all in the canonical crop frame (crop coordinates)."""

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
    """What the anonymise stage knows when it builds an anonymiser."""

    method: str
    dataset: str
    params: Mapping[str, Any] = field(default_factory=dict)  # the whole params.yaml
    #: The dataset's source identities in protocol order (see `identity_order`); CIAGAN's target rule uses it.
    identities: tuple[str, ...] = ()
    models: Path = Path("models")
    device: str | None = None  # None: CUDA when available, else CPU

    @property
    def checkpoint(self) -> Path:
        """models/<method>/checkpoint.pt, where the method's `train` stage writes its weights."""
        return self.models / self.method / "checkpoint.pt"


class Anonymiser(ABC):
    """One anonymisation method. Instances may hold models; `anonymise` may be called many times."""

    @classmethod
    def from_params(cls, context: RunContext) -> Anonymiser:
        """Build the anonymiser for a stage run; methods with settings or weights override this."""
        return cls()

    @abstractmethod
    def anonymise(self, batch: FaceBatch) -> np.ndarray:
        """(N, H, W, 3) uint8 anonymised crops in the source frame, composited into the source crop."""


A = TypeVar("A", bound=type[Anonymiser])
_REGISTRY: dict[str, type[Anonymiser]] = {}


def register(*names: str) -> Callable[[A], A]:
    """Class decorator: make the class available to `create` under each of `names`."""

    def decorate(cls: A) -> A:
        for name in names:
            if name in _REGISTRY and _REGISTRY[name] is not cls:
                raise ValueError(f"anonymiser {name!r} is already registered by {_REGISTRY[name].__name__}")
            _REGISTRY[name] = cls
        return cls

    return decorate


def available() -> list[str]:
    """Registered method names, sorted."""
    return sorted(_REGISTRY)


def create(name: str, context: RunContext | None = None) -> Anonymiser:
    """The anonymiser registered as `name`, built for `context` (default: no params, dataset '')."""
    if name not in _REGISTRY:
        raise KeyError(f"unknown anonymiser {name!r}; registered: {', '.join(available())}")
    return _REGISTRY[name].from_params(context or RunContext(method=name, dataset=""))


def check_output(batch: FaceBatch, images: np.ndarray, method: str) -> np.ndarray:
    """`images` if it is what `anonymise` promises for `batch`, else a ValueError naming `method`."""
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.shape != batch.source.shape:
        got = f"{images.shape} {images.dtype}" if isinstance(images, np.ndarray) else type(images).__name__
        raise ValueError(f"anonymiser {method!r} returned {got}; expected {batch.source.shape} uint8")
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
