"""The adaptive attacker ("parrot"): re-identification when the attacker anonymises its gallery too.

The naive attacker of metrics.reid matches an anonymised face with real photos and chooses its
threshold on real pairs. The parrot anonymises its own gallery with the same method (the anonymise
stage builds it, pipelines.gallery: outputs/<dataset>/<method>/gallery/) and, where it needs a
threshold, chooses it on anonymised pairs.

- `verification_<embedder>_parrot`, LFW (verification): each pair's anonymised second photo (the
  probe) against its anonymised first photo (the gallery). Each fold's threshold maximises the
  accuracy on the anonymised pairs of the other folds (`metrics.reid.cross_validate`). Value: the
  same-person acceptance rate, mean over folds, with `std` over folds (ddof 1) and a Wilson interval
  on the pooled pairs; `accuracy` (with `accuracy_std`, `accuracy_interval`): the verification
  accuracy over same- and different-person pairs. `naive` holds the same figures for the naive
  attacker on the same pairs: the anonymised probe against the real first photo, thresholds chosen
  on real pairs.
- `verification_<embedder>_parrot`, CelebA (closed-set identification): every anonymised test photo
  is a probe; the gallery is every *other* test photo, anonymised again (parrot) or real (naive:
  `naive_rank1`, `naive_rank5`); real probes against the real gallery give the recogniser's ceiling
  (`real_rank1`, `real_rank5`). The gallery's identities are ranked by their nearest photo. Value:
  top-1 accuracy (Wilson interval); `rank5`: top-5.
- `condition_leak`, CelebA: whether two anonymised photos of one person are linked more often when
  both were anonymised with the same condition identity. The test pairs give every photo of a person
  the same condition identity (the protocol's next identity), so the anonymised test photos are the
  same-condition side; the gallery, anonymised with `anonymise.gallery_condition: different`, is the
  other side: the same mate photos under other identities' conditions. Per probe: the share of its
  mates within the real-LFW verification threshold, each side; value: the mean paired difference
  (same - different), a paired BCa bootstrap interval and a sign-flip permutation test
  (metrics.uncertainty.paired_values). On LFW, or with a gallery of the probes' own conditions, it
  is not computed (value null) and `skipped` says why.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.spatial.distance import cdist

from infra.errors import DataError
from infra.records import ANONYMISED
from metrics import uncertainty
from metrics.options import IntervalOptions, LeakOptions, NoOptions
from metrics.registry import MetricInputs, lookup
from metrics.reid import _anonymised, _calibrate, _distance, _fold_summary, _per_pair, _real, cross_validate

GALLERY = "gallery"  # pipelines.gallery.GALLERY (metrics never import the stages)
RANKS = (1, 5)
PAIRED = "paired BCa bootstrap over probes"


def gallery(inputs: MetricInputs) -> tuple[MetricInputs, pd.DataFrame]:
    """The inputs of the parrot's gallery (images `gallery/<pair_id>.png`) and its anonymise manifest."""
    folder = Path(inputs.images) / GALLERY
    if not (folder / "manifest.csv").is_file():
        raise DataError(f"{folder}: no parrot gallery; the anonymise stage builds it when evaluate.metrics has a "
                        "parrot metric: re-run `dvc repro anonymise@<method>`")
    # Each pair's own anonymised first photo, whatever image stands for its second (evaluate.lfw_unit).
    return (dataclasses.replace(inputs, images=folder, shown=None, _selection={}),
            ANONYMISED.read(folder / "manifest.csv"))


def _with_gallery(inputs: MetricInputs, gallery_inputs: MetricInputs, *prepared: str) -> tuple[pd.DataFrame, Counter]:
    """The evaluable rows that also have a gallery image, and the skipped rows by reason."""
    rows, skipped = inputs.evaluable(*prepared)
    kept = rows["pair_id"].isin(gallery_inputs.evaluable(*prepared)[0]["pair_id"])
    if (~kept).any():
        skipped["no gallery image"] += int((~kept).sum())
    return rows[kept], skipped


def decisions(distances: np.ndarray, same: np.ndarray, folds: np.ndarray, thresholds: dict,
              options: IntervalOptions) -> tuple[dict, np.ndarray]:
    """Same-person acceptance and accuracy at each fold's threshold (mean and std over folds, Wilson intervals).

    Also returns whether each pair was accepted (distance under its fold's threshold).
    """
    accepted = np.asarray(distances) < pd.Series(folds).map(thresholds).to_numpy(np.float64)
    frame = pd.DataFrame({"fold": folds, "same": np.asarray(same, bool), "accepted": accepted})
    frame["correct"] = frame["accepted"] == frame["same"]
    mates = frame[frame["same"]]
    acceptance = _fold_summary(mates["accepted"].astype(float), mates["fold"])
    accuracy = _fold_summary(frame["correct"].astype(float), frame["fold"])
    return {**acceptance, "interval": uncertainty.share(mates["accepted"].sum(), len(mates), options),
            "accuracy": accuracy["value"], "accuracy_std": accuracy["std"], "accuracy_per_fold": accuracy["per_fold"],
            "accuracy_interval": uncertainty.share(frame["correct"].sum(), len(frame), options),
            "n_same": len(mates)}, accepted


def _verify_lfw(inputs: MetricInputs, model: str, name: str) -> dict:
    gallery_inputs, manifest = gallery(inputs)
    rows, skipped = _with_gallery(inputs, gallery_inputs, "first")
    if rows.empty:
        return {"value": None, "n": 0, "skipped": skipped}
    same, folds = rows["same"].to_numpy(bool), rows["fold"].to_numpy()
    # Embedded in two sets: the same-person probes are the set verification_<embedder> embeds (its cache serves both).
    parts = [_anonymised(model, rows[part], inputs)[0] for part in (same, ~same)]
    probes = np.concatenate(parts)[np.argsort(np.concatenate([np.flatnonzero(same), np.flatnonzero(~same)]))]
    kept, _ = _anonymised(model, rows, gallery_inputs, "first")
    distances = _distance(probes, kept)
    thresholds, _ = cross_validate(distances, same, folds)  # each fold's from the other folds' anonymised pairs
    parrot, accepted = decisions(distances, same, folds, thresholds, inputs.interval)
    # The naive attacker on the same pairs: the real first photo, thresholds from real pairs (metrics.reid).
    keys = inputs.pairs.prepared_keys("first", "source")  # the set metrics.reid embeds: its cache serves both
    real, _ = _real(model, inputs.pairs, keys, inputs)
    naive_thresholds = _calibrate(inputs, model)["thresholds"]
    naive, _ = decisions(_distance(probes, lookup(keys, real, rows["first"])), same, folds, naive_thresholds,
                         inputs.interval)
    # Each same-person pair's outcome: re-identified (accepted) or not.
    per_pair = _per_pair(rows[same], name, accepted[same])
    return {**parrot, "thresholds": thresholds, "naive": {**naive, "thresholds": naive_thresholds}, "n": len(rows),
            "skipped": skipped, "condition_rule": _rule(manifest), "per_pair": per_pair}


def ranks(probes: np.ndarray, probe_keys, gallery_features: np.ndarray, gallery_keys, identity: pd.Series,
          chunk: int = 1024) -> np.ndarray:
    """Per probe, the rank of its identity among the gallery's, by each identity's nearest photo (1 = first).

    The probe's own photo is never in its gallery; NaN where the gallery has no other photo of its identity.
    Probes go in chunks: CelebA's ~11,000 test photos against as many would be a 1 GB distance matrix.
    """
    codes, _ = pd.factorize(np.concatenate([np.asarray(probe_keys, str), np.asarray(gallery_keys, str)]))
    probe_codes, gallery_codes = codes[:len(probes)], codes[len(probes):]
    gallery_identity = identity[gallery_keys].to_numpy()
    order = np.argsort(gallery_identity, kind="stable")  # each identity's photos side by side
    labels, starts = np.unique(gallery_identity[order], return_index=True)
    gallery_features, gallery_codes = np.asarray(gallery_features, np.float64)[order], gallery_codes[order]
    own_identity = identity[probe_keys].to_numpy()
    column = np.minimum(np.searchsorted(labels, own_identity), len(labels) - 1)
    known = labels[column] == own_identity
    result = np.full(len(probes), np.nan)
    for first in range(0, len(probes), chunk):
        part = slice(first, first + chunk)
        distances = cdist(np.asarray(probes[part], np.float64), gallery_features)
        distances[probe_codes[part][:, None] == gallery_codes[None, :]] = np.inf
        nearest = np.minimum.reduceat(distances, starts, axis=1)  # probes x identities
        own = np.where(known[part], nearest[np.arange(len(nearest)), column[part]], np.inf)
        result[part] = np.where(np.isfinite(own), (nearest < own[:, None]).sum(axis=1) + 1.0, np.nan)
    return result


def _rates(rank: np.ndarray) -> dict:
    return {f"rank{k}": float(np.mean(rank <= k)) for k in RANKS}


def _identify_celeba(inputs: MetricInputs, model: str, name: str) -> dict:
    gallery_inputs, manifest = gallery(inputs)
    rows, skipped = _with_gallery(inputs, gallery_inputs)
    identity = inputs.pairs.prepared.ok["identity"].astype(str)
    sources = rows["source"].to_numpy()
    probes, _ = _anonymised(model, rows, inputs)
    anonymised_gallery, _ = _anonymised(model, rows, gallery_inputs)
    keys = inputs.pairs.prepared_keys("source")  # every prepared test photo: the real gallery
    real, _ = _real(model, inputs.pairs, keys, inputs)
    parrot = ranks(probes, sources, anonymised_gallery, sources, identity)
    counted = np.isfinite(parrot)
    if (~counted).any():
        skipped["no other photo of the identity in the gallery"] += int((~counted).sum())
    if not counted.any():
        return {"value": None, "n": 0, "skipped": skipped}
    naive = ranks(probes, sources, real, keys, identity)[counted]
    ceiling = ranks(lookup(keys, real, sources), sources, real, keys, identity)[counted]
    parrot = parrot[counted]
    rates = _rates(parrot)
    n = int(counted.sum())
    return {"value": rates["rank1"], "rank5": rates["rank5"],
            "interval": uncertainty.share((parrot <= 1).sum(), n, inputs.interval),
            "rank5_interval": uncertainty.share((parrot <= 5).sum(), n, inputs.interval),
            **{f"naive_{key}": value for key, value in _rates(naive).items()},
            "naive_interval": uncertainty.share((naive <= 1).sum(), n, inputs.interval),
            **{f"real_{key}": value for key, value in _rates(ceiling).items()},
            "n": n, "n_gallery": len(rows), "n_identities": int(identity[sources].nunique()), "skipped": skipped,
            "condition_rule": _rule(manifest),
            "per_pair": _per_pair(rows[counted], name, parrot <= 1)}


def _rule(manifest: pd.DataFrame) -> str:
    return ",".join(sorted(set(manifest["condition_rule"].astype(str))))


def _parrot(inputs: MetricInputs, model: str, name: str) -> dict:
    return (_verify_lfw if inputs.pairs.is_lfw else _identify_celeba)(inputs, model, name)


def verification_dlib_parrot(inputs: MetricInputs, options: NoOptions) -> dict:
    """The parrot attacker with dlib's ResNet descriptor: LFW verification, CelebA identification (module doc)."""
    return _parrot(inputs, "dlib", "verification_dlib_parrot")


def verification_facenet_casia_parrot(inputs: MetricInputs, options: NoOptions) -> dict:
    """As verification_dlib_parrot, with FaceNet (CASIA-WebFace) embeddings."""
    return _parrot(inputs, "casia", "verification_facenet_casia_parrot")


def verification_facenet_vggface2_parrot(inputs: MetricInputs, options: NoOptions) -> dict:
    """As verification_dlib_parrot, with FaceNet (VGGFace2) embeddings."""
    return _parrot(inputs, "vggface2", "verification_facenet_vggface2_parrot")


def condition_leak(inputs: MetricInputs, options: LeakOptions) -> dict:
    """Same-condition minus different-condition linking rate of one person's anonymised photos (module doc)."""
    if inputs.pairs.is_lfw:
        return {"value": None, "n": 0,
                "skipped": Counter({"LFW: no person has two photos anonymised": len(inputs.pairs.manifest)})}
    gallery_inputs, manifest = gallery(inputs)
    rows, skipped = _with_gallery(inputs, gallery_inputs)
    rule = _rule(manifest)
    if rule != "different":
        skipped[f"gallery anonymised with the probes' conditions (anonymise.gallery_condition: {rule})"] += len(rows)
        return {"value": None, "n": 0, "skipped": skipped}
    same_condition, _ = _anonymised(options.embedder, rows, inputs)
    other_condition, _ = _anonymised(options.embedder, rows, gallery_inputs)
    threshold = _calibrate(inputs, options.embedder)["threshold"]
    identity = inputs.pairs.prepared.ok["identity"].astype(str)[rows["source"]].to_numpy()
    # Per probe, over its mates (the person's other photos): linked share and mean distance, each side.
    linked, distance = np.full((len(rows), 2), np.nan), np.full((len(rows), 2), np.nan)
    for members in pd.Series(np.arange(len(rows))).groupby(identity).indices.values():
        if len(members) < 2:
            continue
        mates = ~np.eye(len(members), dtype=bool)
        for side, features in enumerate((same_condition, other_condition)):
            between = cdist(same_condition[members], features[members])
            linked[members, side] = np.where(mates, between < threshold, 0).sum(axis=1) / mates.sum(axis=1)
            distance[members, side] = np.where(mates, between, 0).sum(axis=1) / mates.sum(axis=1)
    has_mates = np.isfinite(linked[:, 0])
    if (~has_mates).any():
        skipped["no other photo of the identity"] += int((~has_mates).sum())
    if has_mates.sum() < 2:
        return {"value": None, "n": int(has_mates.sum()), "skipped": skipped}
    rate_same, rate_other = linked[has_mates, 0], linked[has_mates, 1]
    difference = uncertainty.paired_values(rate_same, rate_other, inputs.interval)
    return {"value": difference.difference,
            "interval": uncertainty.interval(difference.low, difference.high, inputs.interval, PAIRED),
            "p": difference.p, "test": difference.test, "same_rate": float(rate_same.mean()),
            "different_rate": float(rate_other.mean()),
            "same_distance": float(distance[has_mates, 0].mean()),
            "different_distance": float(distance[has_mates, 1].mean()),
            "threshold": threshold, "embedder": options.embedder, "n": int(has_mates.sum()), "skipped": skipped,
            "per_pair": _per_pair(rows[has_mates], "condition_leak", rate_same - rate_other)}
