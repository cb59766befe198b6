"""Stage `pairs`: the protocol's splits, pairs and folds.

CelebA: identities with >= data.celeba.min_images_per_identity photos, in ascending
identity number; the first `train_identities` train, the next `test_identities` test.
A local copy with fewer identities scales both counts in the same proportion (see
`split_counts`). Every test photo is paired with a condition photo of the next identity in
that order; training pairs follow the hybrid rule (`same_image_ratio` of them use the source
photo as its own condition).

LFW: pairs.txt's 6,000 pairs in 10 folds; the second photo is anonymised, the first is kept
for re-identification; the condition photo is drawn, seeded, from a third person.

    python -m pipelines.pairs
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from facedata import datasets
from facedata.atomic import write_json, write_table
from pipelines.params import ParamsError, choice, fraction, integer, run_stage, section

PAIRS = Path("data/pairs")


def split_counts(n_identities: int, n_train: int, n_test: int) -> tuple[int, int, bool]:
    """(train, test, scaled). With fewer identities than train + test, both shrink in proportion.

    train = round(n * n_train / (n_train + n_test)), kept within [1, n - 1] so both sides exist;
    test = the rest. With more identities, the surplus at the end of the order is unused.
    """
    if n_identities < 2:
        raise ValueError(f"the CelebA protocol needs at least 2 eligible identities, found {n_identities}")
    if n_identities >= n_train + n_test:
        return n_train, n_test, False
    train = min(max(round(n_identities * n_train / (n_train + n_test)), 1), n_identities - 1)
    return train, n_identities - train, True


def _ok_photos(index: pd.DataFrame) -> dict[str, list[str]]:
    ok = index[index["status"] == "ok"]
    return {identity: sorted(group["key"]) for identity, group in ok.groupby("identity")}


def celeba_pairs(index: pd.DataFrame, settings: dict, seed: int) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    n_train = integer(settings.get("train_identities"), "pairs.celeba.train_identities", 1)
    n_test = integer(settings.get("test_identities"), "pairs.celeba.test_identities", 1)
    per_identity = integer(settings.get("train_pairs_per_identity"), "pairs.celeba.train_pairs_per_identity", 1)
    ratio = fraction(settings.get("same_image_ratio"), "pairs.celeba.same_image_ratio")
    different = choice(
        settings.get("different_pairs"), "pairs.celeba.different_pairs", ("same_identity", "any_identity")
    )

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
            raise ValueError(f"CelebA identity {next_identity} has no prepared photo to serve as condition")
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
    pairs: list[datasets.LfwPair], index: pd.DataFrame, settings: dict, seed: int
) -> tuple[pd.DataFrame, dict]:
    pool_rule = choice(settings.get("condition_pool"), "pairs.lfw.condition_pool", ("all_pairs", "same_fold"))
    per_class = settings.get("pairs_per_class")
    if per_class is not None:
        pairs = first_pairs_per_fold(pairs, integer(per_class, "pairs.lfw.pairs_per_class", 1))
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
            raise ValueError(f"no condition photo of a third person is available for fold {pair.fold + 1}")
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


def run(params: dict, prepared: Path = Path("data/prepared"), raw: Path = Path("data/raw"), out: Path = PAIRS) -> dict:
    settings = section(params, "pairs")
    seed = integer(settings.get("seed"), "pairs.seed", 0)
    celeba_index = pd.read_parquet(prepared / "celeba" / "index.parquet")
    train, test, celeba_summary = celeba_pairs(celeba_index, section(params, "pairs.celeba"), seed)
    if celeba_summary["scaled_split"]:
        print(
            f"celeba: only {celeba_summary['eligible_identities']} eligible identities; split scaled to "
            f"{celeba_summary['train_identities']} train / {celeba_summary['test_identities']} test (1,200 : 363)"
        )
    source = json.loads((raw / "lfw" / "source.json").read_text())
    lfw, lfw_summary = lfw_pairs(
        datasets.parse_pairs(Path(source["pairs_file"])),
        pd.read_parquet(prepared / "lfw" / "index.parquet"),
        section(params, "pairs.lfw"),
        seed,
    )
    write_table(out / "celeba_train.csv", train)
    write_table(out / "celeba_test.csv", test)
    write_table(out / "lfw_test.csv", lfw)
    summary = {"celeba": celeba_summary, "lfw": lfw_summary}
    write_json(out / "summary.json", summary)
    print(json.dumps(summary, indent=2))
    return summary


def main() -> None:
    run_stage("pairs", run, errors=(ParamsError, ValueError, FileNotFoundError))


if __name__ == "__main__":
    main()
