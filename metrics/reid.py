"""Re-identification: the paper's FaceNet classifier agreement and a face-verification protocol.

Paper protocol (SPEC 5): a match is an anonymised image whose top-1 FaceNet class
(classify=True) equals that of its reference real image; CelebA reports the share over
the test images, LFW the share per fold over its 600 pairs, mean and std over folds.

Verification protocol (beyond the paper): embeddings compared by Euclidean distance, the
threshold chosen by 10-fold cross-validation on the real LFW pairs. An anonymised image is
re-identified when it is still verified as its source identity: on LFW against the kept
first photo of a same-person pair (threshold of the fold, chosen on the other nine); on
CelebA against each other photo of the source identity (threshold chosen on all LFW
pairs), plus rank-1 identification among the test identities' real photos. Every figure
comes with the same computation on the real source photos, the un-anonymised baseline.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd

from metrics import facenet
from metrics.dlib_faces import descriptors
from metrics.registry import MetricInputs, PairSet, register

EMBEDDERS = ("dlib", *facenet.MODELS)
#: Which real photo an anonymised image is compared with: its own source, or (LFW) the pair's first photo.
Reference = Literal["source", "first"]


# --- embeddings -------------------------------------------------------------------------------

def _features(model: str, paths: list, landmarks: np.ndarray,
              inputs: MetricInputs) -> tuple[np.ndarray, np.ndarray | None]:
    """(embeddings, top-1 classes or None for dlib) of images aligned with the given landmarks."""
    if model == "dlib":
        return descriptors(paths, landmarks, inputs.cache, inputs.workers), None
    return facenet.cached_outputs(model, paths, landmarks, inputs.cache, inputs.torch_device, inputs.batch_size)


def _real(model: str, pairs: PairSet, keys: list[str], inputs: MetricInputs):
    landmarks = np.stack([pairs.prepared.landmarks(key) for key in keys]) if keys else np.zeros((0, 68, 2))
    return _features(model, [pairs.crop_path(key) for key in keys], landmarks, inputs)


def _anonymised(model: str, rows: pd.DataFrame, inputs: MetricInputs):
    prepared = inputs.pairs.prepared
    landmarks = np.stack([prepared.landmarks(key) for key in rows["source"]]) if len(rows) else np.zeros((0, 68, 2))
    return _features(model, [inputs.image_path(pair_id) for pair_id in rows["pair_id"]], landmarks, inputs)


def _lookup(keys: list[str], values: np.ndarray, wanted) -> np.ndarray:
    position = {key: i for i, key in enumerate(keys)}
    return values[[position[key] for key in wanted]]


def _fold_summary(values: pd.Series, folds: pd.Series) -> dict:
    per_fold = values.groupby(folds).mean()
    return {"value": float(per_fold.mean()), "std": float(per_fold.std(ddof=0)),
            "per_fold": {int(fold): float(rate) for fold, rate in per_fold.items()}}


# --- paper protocol ---------------------------------------------------------------------------

def _paper_reid(inputs: MetricInputs, model: str, reference: str) -> dict:
    if reference not in ("source", "first"):
        raise ValueError(f"reference must be 'source' or 'first', got {reference!r}")
    if reference == "first" and not inputs.pairs.is_lfw:
        raise ValueError("reference='first' needs an LFW manifest (columns fold, same, first)")
    also_prepared = ("first",) if reference == "first" else ()
    rows, skipped = inputs.evaluable(*also_prepared)
    keys = inputs.pairs.prepared_keys(reference)
    _, real_classes = _real(model, inputs.pairs, keys, inputs)
    _, anonymised_classes = _anonymised(model, rows, inputs)
    match = pd.Series(anonymised_classes == _lookup(keys, real_classes, rows[reference]), index=rows.index, dtype=float)
    summary = _fold_summary(match, rows["fold"]) if inputs.pairs.is_lfw else {"value": float(match.mean())}
    return {**summary, "n": len(rows), "n_matches": int(match.sum()), "skipped": skipped}


@register
def reid_facenet_casia(inputs: MetricInputs, *, reference: Reference = "source") -> dict:
    """Share of anonymised images with the same FaceNet (CASIA-WebFace) top-1 class as their reference.

    reference: 'source' (the photo before anonymisation, the paper's "source faces") or, on
    LFW, 'first' (the kept first photo of the pair).
    """
    return _paper_reid(inputs, "casia", reference)


@register
def reid_facenet_vggface2(inputs: MetricInputs, *, reference: Reference = "source") -> dict:
    """As reid_facenet_casia, with FaceNet trained on VGGFace2."""
    return _paper_reid(inputs, "vggface2", reference)


# --- verification protocol --------------------------------------------------------------------

def best_threshold(distances: np.ndarray, same: np.ndarray) -> float:
    """Distance threshold maximising pair accuracy (same person iff distance < threshold).

    Candidates lie midway between consecutive sorted distances (and beyond both ends).
    """
    order = np.argsort(distances, kind="stable")
    ordered, is_same = np.asarray(distances, np.float64)[order], np.asarray(same, bool)[order]
    same_below = np.concatenate([[0], np.cumsum(is_same)])
    different_above = (~is_same).sum() - np.concatenate([[0], np.cumsum(~is_same)])
    cut = int(np.argmax(same_below + different_above))
    edges = np.concatenate([[ordered[0] - 1.0], ordered, [ordered[-1] + 1.0]])
    return float((edges[cut] + edges[cut + 1]) / 2)


def cross_validate(distances: np.ndarray, same: np.ndarray, folds: np.ndarray) -> tuple[dict, dict]:
    """Per fold: the threshold chosen on the other folds and the accuracy it gives on this one."""
    thresholds, accuracies = {}, {}
    for fold in np.unique(folds):
        train, test = folds != fold, folds == fold
        thresholds[int(fold)] = best_threshold(distances[train], same[train])
        accuracies[int(fold)] = float(((distances[test] < thresholds[int(fold)]) == same[test]).mean())
    return thresholds, accuracies


def _distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.linalg.norm(np.asarray(a, np.float64) - np.asarray(b, np.float64), axis=-1)


def _calibrate(inputs: MetricInputs, model: str) -> dict:
    """Real LFW pair distances with 10-fold thresholds, from `inputs.calibration` or LFW itself."""
    pairs = inputs.calibration or inputs.pairs
    if not pairs.is_lfw:
        raise ValueError("verification needs real LFW pairs for its threshold: pass "
                         "calibration=PairSet(<lfw pair manifest>, PreparedDataset(<prepared lfw>))")
    ok = pairs.prepared.ok.index
    rows = pairs.manifest[pairs.manifest["first"].isin(ok) & pairs.manifest["source"].isin(ok)]
    keys = pairs.prepared_keys("first", "source")
    embeddings, _ = _real(model, pairs, keys, inputs)
    distances = _distance(_lookup(keys, embeddings, rows["first"]), _lookup(keys, embeddings, rows["source"]))
    same, folds = rows["same"].to_numpy(bool), rows["fold"].to_numpy()
    thresholds, accuracies = cross_validate(distances, same, folds)
    return {"rows": rows, "distances": distances, "thresholds": thresholds,
            "accuracy": float(np.mean(list(accuracies.values()))),
            "accuracy_std": float(np.std(list(accuracies.values()))),
            "threshold": best_threshold(distances, same),
            "n_calibration_pairs": len(rows),
            "n_calibration_skipped": len(pairs.manifest) - len(rows)}


def _verify_lfw(inputs: MetricInputs, model: str, calibration: dict) -> dict:
    rows, skipped = inputs.evaluable("first")
    different = ~rows["same"].astype(bool)
    skipped["different-person pair"] += int(different.sum())
    rows = rows[~different]
    keys = inputs.pairs.prepared_keys("first", "source")
    real, _ = _real(model, inputs.pairs, keys, inputs)
    anonymised, _ = _anonymised(model, rows, inputs)
    first = _lookup(keys, real, rows["first"])
    limit = rows["fold"].map(calibration["thresholds"]).to_numpy(np.float64)
    verified = pd.Series(_distance(anonymised, first) < limit, index=rows.index, dtype=float)
    real_verified = pd.Series(_distance(_lookup(keys, real, rows["source"]), first) < limit, index=rows.index,
                              dtype=float)
    return {**_fold_summary(verified, rows["fold"]), "real_rate": float(real_verified.mean()),
            "thresholds": calibration["thresholds"], "n": len(rows), "skipped": skipped}


def _verify_celeba(inputs: MetricInputs, model: str, calibration: dict) -> dict:
    rows, skipped = inputs.evaluable()
    prepared = inputs.pairs.prepared
    identity = prepared.ok["identity"].astype(str)
    test_identities = {prepared.identity(key) for key in inputs.pairs.prepared_keys("source")}
    gallery_keys = np.array(sorted(identity.index[identity.isin(test_identities)]))
    gallery, _ = _real(model, inputs.pairs, list(gallery_keys), inputs)
    gallery_identity = identity[gallery_keys].to_numpy()
    anonymised, _ = _anonymised(model, rows, inputs)
    threshold = calibration["threshold"]

    def scores(probes: np.ndarray) -> tuple[float, float]:
        rates, hits = [], []
        for probe, source in zip(probes, rows["source"], strict=True):
            distances = _distance(gallery, probe)
            others = gallery_keys != source  # never the probe's own original photo
            mates = others & (gallery_identity == identity[source])
            if mates.any():
                rates.append(float((distances[mates] < threshold).mean()))
            nearest = np.flatnonzero(others)[np.argmin(distances[others])]
            hits.append(gallery_identity[nearest] == identity[source])
        return float(np.mean(rates)) if rates else float("nan"), float(np.mean(hits)) if hits else float("nan")

    rate, rank1 = scores(anonymised)
    real_rate, real_rank1 = scores(_lookup(gallery_keys, gallery, rows["source"]))
    return {"value": rate, "rank1": rank1, "real_rate": real_rate, "real_rank1": real_rank1,
            "threshold": threshold, "n": len(rows), "n_gallery": len(gallery_keys),
            "n_identities": len(test_identities), "skipped": skipped}


def _verification(inputs: MetricInputs, model: str) -> dict:
    calibration = _calibrate(inputs, model)
    result = (_verify_lfw if inputs.pairs.is_lfw else _verify_celeba)(inputs, model, calibration)
    return {**result, "real_accuracy": calibration["accuracy"], "real_accuracy_std": calibration["accuracy_std"],
            "n_calibration_pairs": calibration["n_calibration_pairs"]}


@register
def verification_dlib(inputs: MetricInputs) -> dict:
    """Re-identification rate under face verification with dlib's ResNet descriptor (see module doc)."""
    return _verification(inputs, "dlib")


@register
def verification_facenet_casia(inputs: MetricInputs) -> dict:
    """As verification_dlib, with FaceNet (CASIA-WebFace) embeddings."""
    return _verification(inputs, "casia")


@register
def verification_facenet_vggface2(inputs: MetricInputs) -> dict:
    """As verification_dlib, with FaceNet (VGGFace2) embeddings."""
    return _verification(inputs, "vggface2")


def lfw_verification_accuracy(pairs: PairSet, model: str, cache, workers: int = 0) -> dict:
    """Real LFW verification accuracy alone (10-fold cross-validated), for checking an embedder."""
    if model not in EMBEDDERS:
        raise ValueError(f"unknown embedder {model!r}; known: {EMBEDDERS}")
    inputs = MetricInputs(pairs, images=pairs.prepared.root, cache=cache, workers=workers)
    calibration = _calibrate(inputs, model)
    return {key: calibration[key] for key in ("accuracy", "accuracy_std", "threshold", "thresholds",
                                              "n_calibration_pairs", "n_calibration_skipped")}

