"""Re-identification: the paper's FaceNet classifier agreement and a face-verification protocol.

Paper protocol, as the authors' evaluation/evaluate.py computed it (SPEC 5): a match is an
anonymised image whose top-1 FaceNet class (classify=True) equals that of its reference real
image. CelebA (`compute_reid`): the share over the test images, the reference being the source
photo itself. LFW (`compute_reid_lfw`): per fold, the share over all its pairs, same- and
different-person alike, the reference being the pair's original *first* photo (`lfw_reference:
first`; `source` compares with the anonymised photo's own original instead); mean and unbiased
std over the folds (`torch.std_mean`). `preprocessing: authors` feeds whole images as the authors
did (LFW's first photo is the original photo file, CelebA images are resized to 256x256 nearest);
`aligned` cuts and standardises the face (metrics.facenet).

Verification protocol (beyond the paper): embeddings compared by Euclidean distance, the
threshold chosen by 10-fold cross-validation on the real LFW pairs. An anonymised image is
re-identified when it is still verified as its source identity: on LFW against the kept
first photo of a same-person pair (threshold of the fold, chosen on the other nine); on
CelebA against each other photo of the source identity (threshold chosen on all LFW
pairs), plus rank-1 identification among the test identities' real photos. Every figure
comes with the same computation on the real source photos, the un-anonymised baseline.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from metrics import facenet, uncertainty
from metrics.dlib_faces import descriptors
from metrics.options import NoOptions, ReidOptions
from metrics.registry import MetricInputs, PairSet, lookup

EMBEDDERS = ("dlib", *facenet.MODELS)
AUTHORS_CELEBA_SIDE = 256  # compute_reid: F.interpolate(b, (256, 256)), nearest


# --- embeddings -------------------------------------------------------------------------------

def _features(model: str, paths: list, landmarks: np.ndarray,
              inputs: MetricInputs) -> tuple[np.ndarray, np.ndarray | None]:
    """(embeddings, top-1 classes or None for dlib) of images aligned with the given landmarks."""
    if model == "dlib":
        return descriptors(paths, landmarks, inputs.cache, inputs.workers), None
    return facenet.cached_outputs(model, paths, inputs.cache, inputs.torch_device, inputs.batch_size,
                                  landmarks=landmarks)


def _landmarks(pairs: PairSet, keys) -> np.ndarray:
    landmarks = [pairs.prepared.landmarks(key) for key in keys]
    return np.stack(landmarks) if landmarks else np.zeros((0, 68, 2))


def _real(model: str, pairs: PairSet, keys: list[str], inputs: MetricInputs):
    return _features(model, [pairs.crop_path(key) for key in keys], _landmarks(pairs, keys), inputs)


def _anonymised(model: str, rows: pd.DataFrame, inputs: MetricInputs, photo: str = "source"):
    """Features of the rows' anonymised images, aligned with the landmarks of the photo each one anonymised."""
    return _features(model, [inputs.image_path(pair_id) for pair_id in rows["pair_id"]],
                     _landmarks(inputs.pairs, rows[photo]), inputs)


def _per_pair(rows: pd.DataFrame, name: str, values) -> pd.DataFrame:
    """Each pair's outcome in a column named after the metric, for paired comparisons."""
    return pd.DataFrame({"pair_id": rows["pair_id"].to_numpy(), name: np.asarray(values)})


def _fold_summary(values: pd.Series, folds: pd.Series) -> dict:
    """Mean over folds and their unbiased std (ddof 1, as the authors' torch.std_mean)."""
    per_fold = values.groupby(folds).mean()
    return {"value": float(per_fold.mean()), "std": float(per_fold.std(ddof=1)),
            "per_fold": {int(fold): float(rate) for fold, rate in per_fold.items()}}


# --- paper protocol ---------------------------------------------------------------------------

def _paper_classes(model: str, inputs: MetricInputs, paths: list, landmarks: np.ndarray,
                   preprocessing: str) -> np.ndarray:
    """Top-1 classes of the images, fed whole as the authors did or as aligned faces."""
    if preprocessing == "aligned":
        return _features(model, paths, landmarks, inputs)[1]
    side = None if inputs.pairs.is_lfw else AUTHORS_CELEBA_SIDE
    return facenet.cached_outputs(model, paths, inputs.cache, inputs.torch_device, inputs.batch_size, side=side)[1]


def _paper_reid(inputs: MetricInputs, model: str, lfw_reference: str, preprocessing: str) -> dict:
    pairs = inputs.pairs
    reference = lfw_reference if pairs.is_lfw else "source"
    rows, skipped = inputs.evaluable(*(("first",) if reference == "first" else ()))
    keys = pairs.prepared_keys(reference)
    # The authors' LFW reference is the original photo file; elsewhere the reference is the prepared crop.
    original_photo = preprocessing == "authors" and pairs.is_lfw
    real_paths = [pairs.photo_path(key) if original_photo else pairs.crop_path(key) for key in keys]
    real_classes = _paper_classes(model, inputs, real_paths, _landmarks(pairs, keys), preprocessing)
    anonymised_paths = [inputs.image_path(pair_id) for pair_id in rows["pair_id"]]
    anonymised_classes = _paper_classes(model, inputs, anonymised_paths, _landmarks(pairs, rows["source"]),
                                        preprocessing)
    match = pd.Series(anonymised_classes == lookup(keys, real_classes, rows[reference]), index=rows.index, dtype=float)
    summary = _fold_summary(match, rows["fold"]) if pairs.is_lfw else {"value": float(match.mean())}
    # On LFW the value is the mean over folds of equal size, so the share of all pairs is the same number.
    return {**summary, "n": len(rows), "n_matches": int(match.sum()),
            "interval": uncertainty.share(int(match.sum()), len(rows), inputs.interval), "skipped": skipped,
            "per_pair": _per_pair(rows, f"reid_facenet_{model}", match.astype(bool))}


def reid_facenet_casia(inputs: MetricInputs, options: ReidOptions) -> dict:
    """Share of anonymised images with the same FaceNet (CASIA-WebFace) top-1 class as their reference.

    options.lfw_reference (LFW only; CelebA always uses the source photo): 'first', the pair's original
    first photo (the authors' code), or 'source', the anonymised photo's own original.
    options.preprocessing: 'authors' (whole images, see the module doc) or 'aligned'.
    """
    return _paper_reid(inputs, "casia", options.lfw_reference, options.preprocessing)


def reid_facenet_vggface2(inputs: MetricInputs, options: ReidOptions) -> dict:
    """As reid_facenet_casia, with FaceNet trained on VGGFace2."""
    return _paper_reid(inputs, "vggface2", options.lfw_reference, options.preprocessing)


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
    distances = _distance(lookup(keys, embeddings, rows["first"]), lookup(keys, embeddings, rows["source"]))
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
    first = lookup(keys, real, rows["first"])
    limit = rows["fold"].map(calibration["thresholds"]).to_numpy(np.float64)
    verified = pd.Series(_distance(anonymised, first) < limit, index=rows.index, dtype=float)
    real_verified = pd.Series(_distance(lookup(keys, real, rows["source"]), first) < limit, index=rows.index,
                              dtype=float)
    return {**_fold_summary(verified, rows["fold"]), "real_rate": float(real_verified.mean()),
            "thresholds": calibration["thresholds"], "n": len(rows), "n_verified": int(verified.sum()),
            "interval": uncertainty.share(int(verified.sum()), len(rows), inputs.interval), "skipped": skipped,
            "per_pair": _per_pair(rows, _metric_name(model), verified.astype(bool))}


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

    def scores(probes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per probe: the share of its identity's other photos it is verified against (NaN if none), rank-1 hit."""
        rates, hits = [], []
        for probe, source in zip(probes, rows["source"], strict=True):
            distances = _distance(gallery, probe)
            others = gallery_keys != source  # never the probe's own original photo
            mates = others & (gallery_identity == identity[source])
            rates.append(float((distances[mates] < threshold).mean()) if mates.any() else np.nan)
            nearest = np.flatnonzero(others)[np.argmin(distances[others])]
            hits.append(gallery_identity[nearest] == identity[source])
        return np.array(rates, np.float64), np.array(hits, bool)

    def mean(values: np.ndarray) -> float:
        values = values[np.isfinite(values)]
        return float(values.mean()) if len(values) else float("nan")

    rates, hits = scores(anonymised)
    real_rates, real_hits = scores(lookup(gallery_keys, gallery, rows["source"]))
    name = _metric_name(model)
    per_pair = _per_pair(rows, name, rates).assign(**{f"{name}_rank1": hits})
    # A probe's rate is a share of a few photos, not one trial: its interval bootstraps the probes.
    return {"value": mean(rates), "interval": uncertainty.mean(rates, inputs.interval),
            "rank1": mean(hits.astype(float)), "rank1_interval": uncertainty.share(int(hits.sum()), len(hits),
                                                                                    inputs.interval),
            "real_rate": mean(real_rates), "real_rank1": mean(real_hits.astype(float)),
            "threshold": threshold, "n": len(rows), "n_gallery": len(gallery_keys),
            "n_identities": len(test_identities), "skipped": skipped, "per_pair": per_pair}


def _metric_name(model: str) -> str:
    return "verification_dlib" if model == "dlib" else f"verification_facenet_{model}"


def _verification(inputs: MetricInputs, model: str) -> dict:
    calibration = _calibrate(inputs, model)
    result = (_verify_lfw if inputs.pairs.is_lfw else _verify_celeba)(inputs, model, calibration)
    return {**result, "real_accuracy": calibration["accuracy"], "real_accuracy_std": calibration["accuracy_std"],
            "n_calibration_pairs": calibration["n_calibration_pairs"]}


def verification_dlib(inputs: MetricInputs, options: NoOptions) -> dict:
    """Re-identification rate under face verification with dlib's ResNet descriptor (see module doc)."""
    return _verification(inputs, "dlib")


def verification_facenet_casia(inputs: MetricInputs, options: NoOptions) -> dict:
    """As verification_dlib, with FaceNet (CASIA-WebFace) embeddings."""
    return _verification(inputs, "casia")


def verification_facenet_vggface2(inputs: MetricInputs, options: NoOptions) -> dict:
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

