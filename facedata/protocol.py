"""The paper's protocol: CelebA's identity list, split and pairs; LFW's pairs, folds and condition photos.

CelebA: the protocol is a list of identities in a fixed order (`identity_list`): CIAGAN's
`legit_indices.npy` (1,563 ids sorted as strings), or, for other data, the identities with >=
data.celeba.min_images_per_identity photos in the same string order. List positions
0..train_identities-1 train, the next test_identities test; other listed and unlisted identities
are unused. A local copy keeps each present identity's role; when it leaves a role empty, its
listed identities are split in the protocol's proportion instead (`split_counts`) and the summary
says so. Every test photo is paired with a condition photo of the next listed identity present
(cyclically over the split's identities); training pairs follow the hybrid rule
(`same_image_ratio` of them use the source photo as its own condition).

LFW: pairs.txt's 6,000 pairs in 10 folds; the second photo is anonymised, the first is kept
for re-identification; the condition photo is drawn, seeded, from a third person.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import pandas as pd

from facedata import datasets
from infra.errors import DataError, MissingInputError, ParamsError
from infra.settings import at_least, unit_interval


@dataclass(frozen=True)
class CelebaPairs:
    train_identities: Annotated[int, at_least(1)] = 1200  # list positions 0-1,199 train (CIAGAN/AnonyGAN split)
    test_identities: Annotated[int, at_least(1)] = 363  # the next 363 positions test
    train_pairs_per_identity: Annotated[int, at_least(1)] = 20  # 1,200 x 20 = the protocol's 24,000 training pairs
    same_image_ratio: Annotated[float, unit_interval] = 0.75  # hybrid training: share with condition = source
    different_pairs: Literal["same_identity", "any_identity"] = "same_identity"  # authors' code | any identity
    # The next identity's photo a test photo is conditioned on: rotate, photo j mod m for the identity's j-th photo |
    # fixed, its first prepared photo for all of them (the authors' fair.csv: one condition per identity; which one
    # they chose is unpublished)
    test_condition: Literal["rotate", "fixed"] = "rotate"


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


# --- CelebA's identity list and split -----------------------------------------------------------


def read_identity_list(path: Path) -> list[str]:
    """The identity ids of a protocol list file (CIAGAN's legit_indices.npy: 1-D integers), as strings, in order."""
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:
        raise datasets.ProtocolFileError(f"{path} is not a NumPy array file of identity ids ({error})") from None
    if not isinstance(array, np.ndarray) or array.ndim != 1 or array.dtype.kind not in "iu" or not len(array):
        raise datasets.ProtocolFileError(f"{path} must hold a 1-D array of identity numbers; got "
                                         f"{getattr(array, 'dtype', type(array).__name__)} "
                                         f"{getattr(array, 'shape', '')}")
    ids = [str(int(value)) for value in array]
    twice = [identity for identity, count in Counter(ids).items() if count > 1]
    if twice:
        raise datasets.ProtocolFileError(f"{path} lists identity {twice[0]} more than once")
    return ids


def derived_identity_list(identities: dict[str, str], min_images: int) -> list[str]:
    """Identities with at least `min_images` photos, sorted as strings (the order of CIAGAN's list).

    None eligible is a ParamsError: the protocol would have no photo at all.
    """
    counts = Counter(identities.values())
    listed = sorted(identity for identity, count in counts.items() if count >= min_images)
    if not listed:
        raise ParamsError(f"data.celeba.min_images_per_identity = {min_images}: no CelebA identity has that many "
                          f"photos (the most any has is {max(counts.values(), default=0)}); lower it")
    return listed


def identity_list(settings: datasets.CelebaData, identities: dict[str, str], list_file: str | None) -> list[str]:
    """The protocol's identity list: CIAGAN's file (`identity_list: ciagan`, the file download@celeba
    recorded) or the rule applied to the identity file's {photo: identity} (`derived`)."""
    if settings.identity_list == "derived":
        return derived_identity_list(identities, settings.min_images_per_identity)
    if list_file is None:
        raise MissingInputError("download@celeba recorded no identity list (data.celeba.identity_list was "
                                "derived then): run `dvc repro download@celeba` first")
    return read_identity_list(Path(list_file))


@dataclass(frozen=True)
class CelebaSplit:
    """Training and test identities in list order; `cycle`: the split's identities, in list order, for
    "the next identity"; `scaled`: the protocol roles left one side empty and the split was scaled."""

    train: list[str]
    test: list[str]
    cycle: list[str]
    scaled: bool


def celeba_split(listed: Sequence[str], present: Iterable[str], n_train: int, n_test: int) -> CelebaSplit:
    """Each present identity's role by its list position (train below n_train, test up to n_train + n_test).

    When that leaves no training or no test identity (a small copy), the listed identities present
    are split in the protocol's proportion instead (`split_counts`).
    """
    present = set(present)
    train = [identity for identity in listed[:n_train] if identity in present]
    test = [identity for identity in listed[n_train:n_train + n_test] if identity in present]
    if train and test:
        return CelebaSplit(train, test, train + test, scaled=False)
    usable = [identity for identity in listed if identity in present]
    n_train, n_test, _ = split_counts(len(usable), n_train, n_test)
    cycle = usable[:n_train + n_test]
    return CelebaSplit(cycle[:n_train], cycle[n_train:], cycle, scaled=True)


def split_counts(n_identities: int, n_train: int, n_test: int) -> tuple[int, int, bool]:
    """(train, test, scaled). With fewer identities than train + test, both shrink in proportion.

    train = round(n * n_train / (n_train + n_test)), kept within [1, n - 1] so both sides exist;
    test = the rest. With more identities, the surplus at the end of the order is unused.
    """
    if n_identities < 2:
        raise DataError(f"the CelebA protocol needs at least 2 listed identities in the data, found {n_identities}")
    if n_identities >= n_train + n_test:
        return n_train, n_test, False
    train = min(max(round(n_identities * n_train / (n_train + n_test)), 1), n_identities - 1)
    return train, n_identities - train, True


def _next_with_photos(cycle: list[str], identity: str, ok: dict[str, list[str]]) -> str:
    """The identity after `identity` in `cycle` (wrapping round) that has a prepared photo."""
    start = cycle.index(identity)
    for offset in range(1, len(cycle)):
        candidate = cycle[(start + offset) % len(cycle)]
        if ok.get(candidate):
            return candidate
    raise DataError(f"no other CelebA identity of the split has a prepared photo to serve as condition for {identity}")


def celeba_pairs(index: pd.DataFrame, listed: Sequence[str], settings: CelebaPairs, seed: int
                 ) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """(training pairs, test pairs, summary) from a prepared CelebA index and the protocol's identity list."""
    per_identity, ratio, different = (settings.train_pairs_per_identity, settings.same_image_ratio,
                                      settings.different_pairs)
    index = index.assign(identity=index["identity"].astype(str))
    present = set(index["identity"])
    split = celeba_split(listed, present, settings.train_identities, settings.test_identities)
    ok = {identity: sorted(group["key"]) for identity, group in index[index["status"] == "ok"].groupby("identity")}
    photos = {identity: sorted(group["key"]) for identity, group in index.groupby("identity")}
    status = dict(zip(index["key"], index["status"], strict=True))

    test_rows = []
    for identity in split.test:
        next_identity = _next_with_photos(split.cycle, identity, ok)
        conditions = ok[next_identity]
        for j, key in enumerate(photos[identity]):
            test_rows.append(
                {
                    "fold": 1,
                    "source": key,
                    "condition": conditions[j % len(conditions) if settings.test_condition == "rotate" else 0],
                    "source_identity": identity,
                    "condition_identity": next_identity,
                    "source_status": status[key],
                }
            )

    rng = np.random.default_rng([seed, 0])
    n_same = round(ratio * per_identity)
    train_rows, skipped = [], {}
    for identity in split.train:
        usable = ok.get(identity, [])
        if not usable or (different == "same_identity" and n_same < per_identity and len(usable) < 2):
            skipped[identity] = f"{len(usable)} prepared photos"
            continue
        sources = rng.choice(usable, size=per_identity, replace=len(usable) < per_identity)
        for j, source in enumerate(sources):
            if j < n_same:
                condition, condition_identity = source, identity
            elif different == "same_identity":
                condition, condition_identity = rng.choice([p for p in usable if p != source]), identity
            else:
                condition_identity = rng.choice([i for i in split.train if i != identity and ok.get(i)])
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

    listed_present = present.intersection(listed)
    summary = {
        "listed_identities": len(listed),
        "listed_identities_present": len(listed_present),
        "unlisted_identities_present": len(present - listed_present),
        "train_identities": len(split.train),
        "test_identities": len(split.test),
        "scaled_split": split.scaled,
        "unused_identities": len(present) - len(split.train) - len(split.test),
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
