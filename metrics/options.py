"""Every metric the suite knows, by name: its options class and the module that computes it, without importing it.

Checking params.yaml needs each metric's options (params `metrics.<name>`) but none of the
networks behind them, so this module is plain dataclasses; `metrics.registry.calc` imports a
metric's module only when it computes it. A metric is the function of that name in its module:
`function(inputs: MetricInputs, options) -> dict` (see `metrics.registry`). The defaults are the
authors' conventions (docs/decisions.md, "Metrics"); params.yaml holds the same values.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Literal

from infra.settings import at_least, between, unit_interval

#: FID/KID image resizing: clean-fid's "clean" (PIL bicubic, NVIDIA scaling) or pytorch-fid's bilinear.
Resize = Literal["clean", "legacy_pytorch"]
#: Landmark detector of the pose error: dlib's HOG + 68-point predictor, or face_alignment's FAN.
Detector = Literal["dlib", "fan"]
#: The real landmarks the generated image's are compared with: detected on the photo (authors) or prepare's.
Reference = Literal["detected", "prepared"]
#: Pose-error scale: mean |dx|, |dy| of the outer eye corners (the authors' code) or their distance.
Normalisation = Literal["paper_code", "euclidean"]
#: Which real LFW photo an anonymised image is compared with: the pair's first photo, or its own source.
LfwReference = Literal["first", "source"]
#: How images enter FaceNet: whole, as the authors fed them, or as aligned, standardised faces.
Preprocessing = Literal["authors", "aligned"]
#: A face embedding: dlib's ResNet descriptor (offline) or a FaceNet (weights fetched at run time).
Embedder = Literal["dlib", "casia", "vggface2"]


@dataclass(frozen=True)
class IntervalOptions:
    """How every metric states its uncertainty (params `evaluate.interval`; metrics.uncertainty)."""

    level: Annotated[float, between(0.5, 0.999)] = 0.95  # two-sided confidence level of every interval and test
    resamples: Annotated[int, at_least(100)] = 2000  # bootstrap resamples of per-pair values (pose error, comparisons)
    # FID/KID resamples: each recomputes a 2048-d covariance and its eigenvalues (about 2 s on 6,000 images)
    feature_resamples: Annotated[int, at_least(20)] = 100
    seed: Annotated[int, at_least(0)] = 0


@dataclass(frozen=True)
class NoOptions:
    """A metric without options."""


@dataclass(frozen=True)
class FidOptions:
    resize: Resize = "clean"


@dataclass(frozen=True)
class KidOptions:
    resize: Resize = "clean"
    subsets: Annotated[int, at_least(1)] = 100  # random subsets the MMD is averaged over
    subset_size: Annotated[int, at_least(2)] = 1000  # images per subset (fewer when a set is smaller)
    seed: Annotated[int, at_least(0)] = 0


@dataclass(frozen=True)
class PoseOptions:
    detector: Detector = "fan"  # the authors'; offline (no FAN/SFD weights) the metric is not computed
    reference: Reference = "detected"
    normalisation: Normalisation = "paper_code"


@dataclass(frozen=True)
class MtcnnOptions:
    threshold: Annotated[float, unit_interval] = 0.7  # MTCNN's final-stage probability threshold (its default)


@dataclass(frozen=True)
class ReidOptions:
    lfw_reference: LfwReference = "first"  # LFW only; CelebA always compares with the source photo
    preprocessing: Preprocessing = "authors"


@dataclass(frozen=True)
class LeakOptions:
    embedder: Embedder = "dlib"  # whose embedding links two anonymised photos (dlib runs offline)


@dataclass(frozen=True)
class Metric:
    module: str  # the module defining the function of the metric's name
    options: type  # its options class (params `metrics.<name>`)
    # It reads the parrot's gallery, outputs/<dataset>/<method>/gallery/, which anonymise builds only for such metrics
    gallery: bool = False
    # What the authors counted it over on LFW: "image", the files of their output folder (one per distinct second
    # photo, evaluate.lfw_unit: second_photo), or "pair", pairs.txt's pairs (re-identification, l.56-152)
    unit: Literal["image", "pair"] = "pair"

    def function(self, name: str) -> Callable[..., dict]:
        return getattr(importlib.import_module(self.module), name)


METRICS: dict[str, Metric] = {
    "fid": Metric("metrics.fid", FidOptions, unit="image"),
    "kid": Metric("metrics.fid", KidOptions, unit="image"),
    "pose_error": Metric("metrics.pose", PoseOptions, unit="image"),
    "detection_dlib": Metric("metrics.pose", NoOptions, unit="image"),
    "detection_mtcnn": Metric("metrics.pose", MtcnnOptions, unit="image"),
    "reid_facenet_casia": Metric("metrics.reid", ReidOptions),
    "reid_facenet_vggface2": Metric("metrics.reid", ReidOptions),
    "verification_dlib": Metric("metrics.reid", NoOptions),
    "verification_facenet_casia": Metric("metrics.reid", NoOptions),
    "verification_facenet_vggface2": Metric("metrics.reid", NoOptions),
    "verification_dlib_parrot": Metric("metrics.attacks", NoOptions, gallery=True),
    "verification_facenet_casia_parrot": Metric("metrics.attacks", NoOptions, gallery=True),
    "verification_facenet_vggface2_parrot": Metric("metrics.attacks", NoOptions, gallery=True),
    "condition_leak": Metric("metrics.attacks", LeakOptions, gallery=True),
}


def available() -> list[str]:
    """The metrics' names, sorted."""
    return sorted(METRICS)


def metric(name: str) -> Metric:
    """The catalogue entry of `name`; a KeyError listing the known metrics otherwise."""
    if name not in METRICS:
        raise KeyError(f"unknown metric {name!r}; available: {', '.join(available())}")
    return METRICS[name]
