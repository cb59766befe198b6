"""The protocol's rules (facedata.protocol): roles by list position, split scaling, next-identity conditions,
hybrid training pairs, LFW conditions."""

from __future__ import annotations

from dataclasses import replace

import pandas as pd
import pytest

from facedata.datasets import LfwPair
from facedata.protocol import CelebaPairs, LfwPairs, celeba_pairs, derived_identity_list, lfw_pairs, split_counts
from infra.errors import DataError, ParamsError
from infra.settings import load

SETTINGS = CelebaPairs()


def index_of(photos_per_identity: dict[str, int], failed: set[str] = frozenset()) -> pd.DataFrame:
    rows = [
        {"key": f"{identity}_{j:02d}.jpg", "identity": identity}
        for identity, count in photos_per_identity.items()
        for j in range(count)
    ]
    frame = pd.DataFrame(rows)
    frame["status"] = ["no_face" if key in failed else "ok" for key in frame["key"]]
    return frame


def test_split_counts_full_scale_and_scaled():
    assert split_counts(1563, 1200, 363) == (1200, 363, False)
    assert split_counts(2000, 1200, 363) == (1200, 363, False)
    assert split_counts(5, 1200, 363) == (4, 1, True)
    assert split_counts(20, 1200, 363) == (15, 5, True)
    assert split_counts(2, 1200, 363) == (1, 1, True)
    with pytest.raises(DataError, match="at least 2"):
        split_counts(1, 1200, 363)


def listed_in_string_order(index: pd.DataFrame) -> list[str]:
    return derived_identity_list(dict(zip(index["key"], index["identity"], strict=True)), 1)


def test_a_copy_without_test_identities_is_split_in_proportion_in_list_order():
    index = index_of({"3": 4, "10": 4, "2": 4, "7": 4, "5": 4})
    listed = listed_in_string_order(index)
    assert listed == ["10", "2", "3", "5", "7"]  # string order, as CIAGAN's list
    train, test, summary = celeba_pairs(index, listed, SETTINGS, seed=0)
    # All five sit at list positions < 1,200 (training): the split is scaled to 4 train, 1 test.
    assert summary["train_identities"] == 4 and summary["test_identities"] == 1 and summary["scaled_split"]
    assert set(train["source_identity"]) == {"10", "2", "3", "5"}
    assert set(test["source_identity"]) == {"7"} and set(test["condition_identity"]) == {"10"}  # wraps round
    assert list(test["pair_id"]) == list(range(len(test)))


def test_identities_keep_their_list_roles_and_unlisted_ones_are_unused():
    listed = [str(i) for i in range(100, 110)]  # positions 0-5 train, 6-8 test, 9 unused
    index = index_of({"101": 3, "104": 3, "106": 3, "108": 3, "109": 3, "999": 3})
    train, test, summary = celeba_pairs(index, listed, CelebaPairs(train_identities=6, test_identities=3), seed=0)
    assert not summary["scaled_split"]
    assert set(train["source_identity"]) == {"101", "104"} and set(test["source_identity"]) == {"106", "108"}
    assert summary["unlisted_identities_present"] == 1 and summary["unused_identities"] == 2  # 999 and 109
    # The next listed identity present: 106 -> 108; the last test identity wraps to the first of the split.
    assert dict(zip(test["source_identity"], test["condition_identity"], strict=True)) == {"106": "108", "108": "101"}


def test_the_condition_skips_listed_identities_without_a_prepared_photo():
    listed = [str(i) for i in range(1, 7)]
    index = index_of({str(i): 3 for i in range(1, 7)}, failed={"5_00.jpg", "5_01.jpg", "5_02.jpg"})
    _, test, _ = celeba_pairs(index, listed, CelebaPairs(train_identities=3, test_identities=3), seed=0)
    assert dict(zip(test["source_identity"], test["condition_identity"], strict=True)) == {"4": "6", "5": "6",
                                                                                          "6": "1"}


def test_every_test_identity_is_paired_with_the_next_one():
    listed = [str(i) for i in range(1, 21)]
    index = index_of({identity: 3 for identity in listed})
    _, test, summary = celeba_pairs(index, listed, CelebaPairs(train_identities=15, test_identities=5), seed=0)
    assert not summary["scaled_split"] and sorted(set(test["source_identity"]), key=int) == listed[15:]
    for identity, condition in zip(test["source_identity"], test["condition_identity"], strict=True):
        assert int(condition) == int(identity) % 20 + 1


def test_test_conditions_rotate_through_the_next_identitys_photos_or_stay_fixed_as_the_authors():
    listed = [str(i) for i in range(1, 7)]
    index = index_of({"1": 2, "2": 2, "3": 2, "4": 5, "5": 3, "6": 2})
    for rule, expected in (("rotate", ["5_00.jpg", "5_01.jpg", "5_02.jpg", "5_00.jpg", "5_01.jpg"]),
                           ("fixed", ["5_00.jpg"] * 5)):
        _, test, _ = celeba_pairs(index, listed, CelebaPairs(train_identities=3, test_identities=3,
                                                             test_condition=rule), seed=0)
        assert list(test.loc[test["source_identity"] == "4", "condition"]) == expected, rule
        assert set(test.loc[test["source_identity"] == "6", "condition"]) == (
            {"1_00.jpg", "1_01.jpg"} if rule == "rotate" else {"1_00.jpg"})


def test_failed_test_photos_are_kept_and_flagged_but_never_used_as_conditions():
    index = index_of({str(i): 3 for i in range(1, 6)}, failed={"5_00.jpg", "1_01.jpg"})
    _, test, summary = celeba_pairs(index, [str(i) for i in range(1, 6)], SETTINGS, seed=0)
    assert summary["test_sources_not_ok"] == 1
    assert test.loc[test["source"] == "5_00.jpg", "source_status"].item() == "no_face"
    assert "1_01.jpg" not in set(test["condition"])


@pytest.mark.parametrize("rule", ["same_identity", "any_identity"])
def test_hybrid_training_pairs(rule):
    index = index_of({str(i): 6 for i in range(1, 11)})
    train, _, summary = celeba_pairs(index, listed_in_string_order(index), replace(SETTINGS, different_pairs=rule),
                                     seed=0)
    assert len(train) == summary["train_pairs"] == 8 * 20
    assert train["same_image"].mean() == 0.75
    same, different = train[train["same_image"]], train[~train["same_image"]]
    assert (same["source"] == same["condition"]).all()
    assert (different["source"] != different["condition"]).all()
    if rule == "same_identity":
        assert (different["source_identity"] == different["condition_identity"]).all()
    else:
        assert (different["source_identity"] != different["condition_identity"]).all()


def test_pairs_are_deterministic_for_a_seed_and_change_with_it():
    index = index_of({str(i): 6 for i in range(1, 11)})
    listed = listed_in_string_order(index)
    first = celeba_pairs(index, listed, SETTINGS, seed=0)[0]
    assert first.equals(celeba_pairs(index, listed, SETTINGS, seed=0)[0])
    assert not first.equals(celeba_pairs(index, listed, SETTINGS, seed=1)[0])


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("same_image_ratio", 1.5, r"pairs.celeba.same_image_ratio must be in \[0.0, 1.0\]"),
        ("different_pairs", "random", "pairs.celeba.different_pairs must be one of same_identity, any_identity"),
        ("train_identities", 0, "pairs.celeba.train_identities must be >= 1"),
    ],
)
def test_bad_settings_are_clear_errors(key, value, message):
    with pytest.raises(ParamsError, match=message):
        load(CelebaPairs, {key: value}, "pairs.celeba")


def lfw_fixture():
    pairs = [
        LfwPair(0, True, "A/A_0001.jpg", "A/A_0002.jpg"),
        LfwPair(0, False, "B/B_0001.jpg", "C/C_0001.jpg"),
        LfwPair(1, True, "D/D_0001.jpg", "D/D_0002.jpg"),
        LfwPair(1, False, "E/E_0001.jpg", "F/F_0001.jpg"),
    ]
    keys = sorted({k for p in pairs for k in (p.first, p.second)})
    index = pd.DataFrame({"key": keys, "identity": [k.split("/")[0] for k in keys], "status": "ok"})
    index.loc[index["key"] == "F/F_0001.jpg", "status"] = "no_face"
    return pairs, index


@pytest.mark.parametrize("pool", ["all_pairs", "same_fold"])
def test_lfw_conditions_come_from_a_third_person(pool):
    pairs, index = lfw_fixture()
    frame, summary = lfw_pairs(pairs, index, LfwPairs(condition_pool=pool), seed=0)
    assert list(frame["fold"]) == [1, 1, 2, 2] and list(frame["same"]) == [True, False, True, False]
    for row in frame.itertuples():
        assert row.condition_identity not in {row.first_identity, row.source_identity}
        assert row.condition != "F/F_0001.jpg"  # not prepared: never a condition
    assert summary["sources_not_ok"] == 1
    if pool == "same_fold":
        assert set(frame.loc[frame["fold"] == 2, "condition_identity"]) <= {"D", "E"}


def test_lfw_same_fold_pool_can_run_out_and_says_so():
    pairs, index = lfw_fixture()
    two_people = [pairs[0], LfwPair(0, False, "A/A_0001.jpg", "B/B_0001.jpg")]
    with pytest.raises(DataError, match="third person is available for fold 1"):
        lfw_pairs(two_people, index, LfwPairs(condition_pool="same_fold"), seed=0)


def test_lfw_can_keep_the_first_pairs_of_each_class_per_fold():
    pairs, index = lfw_fixture()
    frame, summary = lfw_pairs(pairs, index, LfwPairs(pairs_per_class=1), seed=0)
    assert len(frame) == 4 and summary["pairs_per_class"] == 1  # the fixture has one of each per fold
    more = pairs + [LfwPair(0, True, "A/A_0002.jpg", "A/A_0001.jpg"), LfwPair(1, False, "D/D_0001.jpg", "E/E_0001.jpg")]
    frame, _ = lfw_pairs(more, index, LfwPairs(pairs_per_class=1), seed=0)
    assert list(frame["source"]) == [p.second for p in pairs]  # the first of each (fold, class), in file order
    with pytest.raises(ParamsError, match="pairs.lfw.pairs_per_class must be >= 1"):
        load(LfwPairs, {"pairs_per_class": 0}, "pairs.lfw")
