"""The paper's protocol: CelebA's identity split and pairs, LFW's pairs, folds and condition photos.

CelebA: identities with >= data.celeba.min_images_per_identity photos, in ascending
identity number; the first `train_identities` train, the next `test_identities` test.
A local copy with fewer identities scales both counts in the same proportion (see
`split_counts`). Every test photo is paired with a condition photo of the next identity in
that order; training pairs follow the hybrid rule (`same_image_ratio` of them use the source
photo as its own condition).

LFW: pairs.txt's 6,000 pairs in 10 folds; the second photo is anonymised, the first is kept
for re-identification; the condition photo is drawn, seeded, from a third person.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Literal

import numpy as np
import pandas as pd

from facedata import datasets
from facedata.config import at_least, unit_interval
from facedata.errors import DataError


@dataclass(frozen=True)
class CelebaPairs:
    train_identities: Annotated[int, at_least(1)] = 1200  # CIAGAN/AnonyGAN split of the 1,563 eligible identities
    test_identities: Annotated[int, at_least(1)] = 363
    train_pairs_per_identity: Annotated[int, at_least(1)] = 20  # 1,200 x 20 = the protocol's 24,000 training pairs
    same_image_ratio: Annotated[float, unit_interval] = 0.75  # hybrid training: share with condition = source
    different_pairs: Literal["same_identity", "any_identity"] = "same_identity"  # authors' code | any identity


@dataclass(frozen=True)
class LfwPairs:
    # None: all 300 + 300 pairs of each fold | k: the first k same and k different per fold (small runs)
    pairs_per_class: Annotated[int, at_least(1)] | None = None
    # all_pairs: any prepared photo pairs.txt names | same_fold: only photos of the same fold; always a third person
    condition_pool: Literal["all_pairs", "same_fold"] = "all_pairs"


@dataclass(frozen=True)
class PairsConfig:
    seed: Annotated[int, at_least(0)] = 0
    celeba: CelebaPairs = field(default_factory=CelebaPairs)
    lfw: LfwPairs = field(default_factory=LfwPairs)


def split_counts(n_identities: int, n_train: int, n_test: int) -> tuple[int, int, bool]:
    """(train, test, scaled). With fewer identities than train + test, both shrink in proportion.

    train = round(n * n_train / (n_train + n_test)), kept within [1, n - 1] so both sides exist;
    test = the rest. With more identities, the surplus at the end of the order is unused.
    """
    if n_identities < 2:
        raise DataError(f"the CelebA protocol needs at least 2 eligible identities, found {n_identities}")
    if n_identities >= n_train + n_test:
        return n_train, n_test, False
    train = min(max(round(n_identities * n_train / (n_train + n_test)), 1), n_identities - 1)
    return train, n_identities - train, True


def _ok_photos(index: pd.DataFrame) -> dict[str, list[str]]:
    ok = index[index["status"] == "ok"]
    return {identity: sorted(group["key"]) for identity, group in ok.groupby("identity")}


def celeba_pairs(index: pd.DataFrame, settings: CelebaPairs, seed: int) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """(training pairs, test pairs, summary) from a prepared CelebA index."""
    n_train, n_test = settings.train_identities, settings.test_identities
    per_identity, ratio, different = (settings.train_pairs_per_identity, settings.same_image_ratio,
                                      settings.different_pairs)

    order = sorted(index["identity"].astype(str).unique(), key=int)
    train_count, test_count, scaled = split_counts(len(order), n_train, n_test)
    train_ids, test_ids = order[:train_count], order[train_count : train_count + test_count]
    ok = _ok_photos(index)
    status = dict(zip(index["key"], index["status"], strict=True))

    test_rows = []
    for position, identity in enumerate(test_ids):
        # The next identity in the fixed order; the last test identity wraps to the first eligible one.
        next_identity = order[(train_count + position + 1) % len(order)]
        conditions = ok.get(next_identity, [])
        if not conditions:
            raise DataError(f"CelebA identity {next_identity} has no prepared photo to serve as condition")
        photos = sorted(index.loc[index["identity"] == identity, "key"])
        for j, key in enumerate(photos):
            test_rows.append(
                {
                    "fold": 1,
                    "source": key,
                    "condition": conditions[j % len(conditions)],
                    "source_identity": identity,
                    "condition_identity": next_identity,
                    "source_status": status[key],
                }
            )

    rng = np.random.default_rng([seed, 0])
    n_same = round(ratio * per_identity)
    train_rows, skipped = [], {}
    for identity in train_ids:
        photos = ok.get(identity, [])
        if not photos or (different == "same_identity" and n_same < per_identity and len(photos) < 2):
            skipped[identity] = f"{len(photos)} prepared photos"
            continue
        sources = rng.choice(photos, size=per_identity, replace=len(photos) < per_identity)
        for j, source in enumerate(sources):
            if j < n_same:
                condition, condition_identity = source, identity
            elif different == "same_identity":
                condition, condition_identity = rng.choice([p for p in photos if p != source]), identity
            else:
                condition_identity = rng.choice([i for i in train_ids if i != identity and ok.get(i)])
                condition = rng.choice(ok[condition_identity])
            train_rows.append(
                {
                    "source": str(source),
                    "condition": str(condition),
                    "source_identity": identity,
                    "condition_identity": str(condition_identity),
                    "same_image": bool(j < n_same),
                }
            )

    summary = {
        "eligible_identities": len(order),
        "train_identities": len(train_ids),
        "test_identities": len(test_ids),
        "scaled_split": scaled,
        "unused_identities": len(order) - len(train_ids) - len(test_ids),
        "train_pairs": len(train_rows),
        "train_same_image": sum(r["same_image"] for r in train_rows),
        "train_identities_skipped": skipped,
        "test_pairs": len(test_rows),
        "test_sources_not_ok": sum(r["source_status"] != "ok" for r in test_rows),
    }
    return _numbered(pd.DataFrame(train_rows)), _numbered(pd.DataFrame(test_rows)), summary


def first_pairs_per_fold(pairs: list[datasets.LfwPair], per_class: int) -> list[datasets.LfwPair]:
    """The first `per_class` same-person and `per_class` different-person pairs of every fold, in file order."""
    kept, seen = [], {}
    for pair in pairs:
        count = seen.get((pair.fold, pair.same), 0)
        if count < per_class:
            kept.append(pair)
            seen[(pair.fold, pair.same)] = count + 1
    return kept


def lfw_pairs(
    pairs: list[datasets.LfwPair], index: pd.DataFrame, settings: LfwPairs, seed: int
) -> tuple[pd.DataFrame, dict]:
    """(test pairs with fold, first photo and condition photo, summary) from pairs.txt and a prepared LFW index."""
    pool_rule, per_class = settings.condition_pool, settings.pairs_per_class
    if per_class is not None:
        pairs = first_pairs_per_fold(pairs, per_class)
    ok_keys = set(index.loc[index["status"] == "ok", "key"])
    status = dict(zip(index["key"], index["status"], strict=True))
    pools: dict[int | None, np.ndarray] = {}
    for fold in sorted({p.fold for p in pairs}) if pool_rule == "same_fold" else [None]:
        named = {k for p in pairs if fold is None or p.fold == fold for k in (p.first, p.second)}
        pools[fold] = np.array(sorted(named & ok_keys))
    pool_identities = {fold: np.array([datasets.lfw_identity(k) for k in keys]) for fold, keys in pools.items()}

    rng = np.random.default_rng([seed, 1])
    rows = []
    for pair in pairs:
        fold = pair.fold if pool_rule == "same_fold" else None
        excluded = {datasets.lfw_identity(pair.first), datasets.lfw_identity(pair.second)}
        candidates = pools[fold][~np.isin(pool_identities[fold], list(excluded))]
        if len(candidates) == 0:
            raise DataError(f"no condition photo of a third person is available for fold {pair.fold + 1}")
        condition = str(candidates[rng.integers(len(candidates))])
        rows.append(
            {
                "fold": pair.fold + 1,
                "same": pair.same,
                "first": pair.first,
                "source": pair.second,
                "condition": condition,
                "first_identity": datasets.lfw_identity(pair.first),
                "source_identity": datasets.lfw_identity(pair.second),
                "condition_identity": datasets.lfw_identity(condition),
                "first_status": status.get(pair.first, "missing"),
                "source_status": status.get(pair.second, "missing"),
            }
        )
    frame = _numbered(pd.DataFrame(rows))
    summary = {
        "pairs": len(frame),
        "folds": int(frame["fold"].nunique()),
        "same_pairs": int(frame["same"].sum()),
        "different_pairs": int((~frame["same"]).sum()),
        "sources_not_ok": int((frame["source_status"] != "ok").sum()),
        "firsts_not_ok": int((frame["first_status"] != "ok").sum()),
        "condition_pool": pool_rule,
        "pairs_per_class": per_class,
    }
    return frame, summary


def _numbered(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.reset_index(drop=True).rename_axis("pair_id").reset_index()
