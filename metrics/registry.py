"""The metric registry and the inputs every metric reads.

A metric is a function `metric(inputs, options) -> dict`, named with its options class in
`metrics.options.METRICS`. `calc` times it and completes its result into a plain dict:

    {"metric": "pose_error", "value": 0.071, ..., "n": 2964, "n_skipped": 36,
     "skipped": {"no anonymised image": 36}, "options": {...}, "seconds": 41.2}

Every value comes with its `interval` (low, high, level, method; metrics.uncertainty), computed
with `inputs.interval`'s settings.

A metric may also return two entries that are not plain JSON, which the evaluate stage writes
to their own files for paired comparisons (pipelines.compare):
- `per_pair`: a DataFrame with a `pair_id` column and a column named after the metric holding
  each pair's outcome (detected or not, re-identified or not, pose error, ...);
- `features`: the `FeatureSets` the value was computed from (FID, KID).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image

from facedata.images import image_file
from facedata.prepared import PreparedDataset, crop_relpath
from infra import settings
from infra.errors import DataError
from metrics.options import IntervalOptions, available, metric  # noqa: F401  (available: re-exported beside calc)

DEFAULT_CACHE = Path(".cache/metrics")
LFW_COLUMNS = ("fold", "same", "first")


@dataclass(frozen=True)
class PairSet:
    """A pair manifest with the prepared dataset its keys refer to.

    `photos` is the folder of the original photos (`<photos>/<key>`), for metrics that read them
    as the authors did (LFW re-identification); None where they are not at hand.
    """

    manifest: pd.DataFrame
    prepared: PreparedDataset
    photos: Path | None = None

    def __post_init__(self):
        missing = {"pair_id", "source"} - set(self.manifest.columns)
        if missing:
            raise DataError(f"pair manifest lacks column(s) {sorted(missing)}; it has {list(self.manifest.columns)}")
        if self.manifest["pair_id"].duplicated().any():
            raise DataError("pair manifest has duplicate pair_id values")

    @property
    def is_lfw(self) -> bool:
        """LFW's manifest names a kept first photo per pair; CelebA's does not."""
        return all(column in self.manifest.columns for column in LFW_COLUMNS)

    def crop_path(self, key: str) -> Path:
        return self.prepared.root / crop_relpath(key)

    def photo_path(self, key: str) -> Path:
        if self.photos is None:
            raise DataError("this metric reads the original photos: build the PairSet with photos=<image folder>")
        return Path(self.photos) / key

    def prepared_keys(self, *columns: str) -> list[str]:
        """Unique keys in `columns` whose photo was prepared, sorted: a set fixed per dataset."""
        keys = set().union(*(self.manifest[column] for column in columns))
        return sorted(keys.intersection(self.prepared.ok.index))


@dataclass(frozen=True)
class MetricInputs:
    """What a metric reads: pairs, real faces (crops, or LFW's photo frame) and a folder of anonymised images.

    `calibration` holds real LFW pairs for the verification metrics' thresholds; on LFW
    itself it may stay None (the dataset calibrates itself).
    """

    pairs: PairSet
    images: Path
    cache: Path = DEFAULT_CACHE
    calibration: PairSet | None = None
    device: str | None = None
    batch_size: int = 32
    workers: int = 0  # processes for the CPU-bound dlib work; 0 = all cores
    interval: IntervalOptions = IntervalOptions()  # how each metric states its uncertainty (metrics.uncertainty)
    shown: Mapping[int, int] | None = None  # pair id -> the pair id whose image stands for it; None: its own
    image_format: str = "png"  # how the anonymised images are stored (anonymise.image_format: png | jpeg75)
    _selection: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def torch_device(self) -> torch.device:
        return torch.device(self.device or ("cuda" if torch.cuda.is_available() else "cpu"))

    def image_path(self, pair_id: int) -> Path:
        shown = pair_id if self.shown is None else self.shown[int(pair_id)]
        return Path(self.images) / image_file(shown, self.image_format)

    def one_image_per_source(self) -> tuple[MetricInputs, MetricInputs]:
        """(per image, per pair) inputs as the authors' LFW folder held the images: one per distinct source photo.

        Their test code names each output after the pair's second photo only (evaluation/evaluate.py l.82, 107),
        so a later pair naming the same photo overwrites an earlier one: the image of the last pair in file
        order is the one left. Metrics over the folder's files see those pairs only; metrics over pairs see
        every pair, with the image its source photo's file holds.
        """
        manifest = self.pairs.manifest
        last = manifest.drop_duplicates("source", keep="last")
        survivor = dict(zip(last["source"], last["pair_id"], strict=True))
        shown = {int(pair): int(survivor[source]) for pair, source in zip(manifest["pair_id"], manifest["source"],
                                                                           strict=True)}
        return (replace(self, pairs=replace(self.pairs, manifest=last), _selection={}),
                replace(self, shown=shown, _selection={}))

    def evaluable(self, *also_prepared: str) -> tuple[pd.DataFrame, Counter]:
        """Rows with an anonymised image and prepared photos in `source` and `also_prepared` columns.

        Returns the rows and the skipped rows counted by reason.
        """
        key = also_prepared
        if key not in self._selection:
            manifest, ok = self.pairs.manifest, self.pairs.prepared.ok.index
            reasons = pd.Series("", index=manifest.index)
            for column in ("source", *also_prepared):
                reasons[(reasons == "") & ~manifest[column].isin(ok)] = f"{column} photo not prepared"
            has_image = np.array([self.image_path(pair_id).is_file() for pair_id in manifest["pair_id"]])
            reasons[(reasons == "") & ~has_image] = "no anonymised image"
            for pair_id in manifest.loc[reasons == "", "pair_id"]:
                self._check_size(self.image_path(pair_id))
            self._selection[key] = (manifest[reasons == ""], Counter(reasons[reasons != ""]))
        rows, skipped = self._selection[key]
        return rows, Counter(skipped)

    @cached_property
    def crop_size(self) -> tuple[int, int]:
        """(W, H) of the prepared crops, which anonymised images must match."""
        with Image.open(self.pairs.crop_path(self.pairs.prepared.ok.index[0])) as crop:
            return crop.size

    def _check_size(self, path: Path) -> None:
        expected = self.crop_size
        try:
            with Image.open(path) as image:
                size = image.size
        except OSError as error:
            raise DataError(f"{path}: not a readable image ({error})") from error
        if size != expected:
            raise DataError(f"{path}: image is {size[0]}x{size[1]} (WxH), expected {expected[0]}x{expected[1]} "
                             "like the prepared crops")


def lookup(keys: list[str], values: np.ndarray, wanted) -> np.ndarray:
    """The rows of `values` (one per key of `keys`) for the keys in `wanted`, in its order."""
    position = {key: i for i, key in enumerate(keys)}
    return values[[position[key] for key in wanted]]


def options(name: str, **values: Any) -> Any:
    """Metric `name`'s options with `values` changed, every value checked (a ParamsError naming a bad one)."""
    return settings.load(metric(name).options, values, f"metrics.{name}")


def calc(name: str, inputs: MetricInputs, options: Any = None) -> dict:
    """Compute metric `name` on `inputs` with its `options` (an instance of its options class; None: the defaults)."""
    entry = metric(name)
    options = entry.options() if options is None else options
    if not isinstance(options, entry.options):
        raise TypeError(f"metric {name!r} takes {entry.options.__name__}, got {type(options).__name__}")
    start = time.perf_counter()
    result = entry.function(name)(inputs, options)
    skipped = {reason: int(count) for reason, count in sorted(result.pop("skipped", {}).items())}
    return {"metric": name, **result, "n_skipped": sum(skipped.values()), "skipped": skipped,
            "options": settings.to_dict(options), "seconds": round(time.perf_counter() - start, 3)}
