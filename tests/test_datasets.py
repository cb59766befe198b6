"""Protocol files: the strict pairs.txt parser and the CelebA identity list."""

from __future__ import annotations

import pytest

from facedata.datasets import (
    ProtocolFileError,
    lfw_key,
    parse_pairs,
    read_identities,
)


def write(tmp_path, text: str):
    path = tmp_path / "pairs.txt"
    path.write_text(text)
    return path


VALID = "2\t1\nAnn\t1\t2\nAnn\t1\tBob\t3\nCid\t2\t4\nDee\t1\tEve\t12\n"


def test_parses_folds_and_pair_kinds(tmp_path):
    pairs = parse_pairs(write(tmp_path, VALID))
    assert [(p.fold, p.same) for p in pairs] == [(0, True), (0, False), (1, True), (1, False)]
    assert pairs[0].first == "Ann/Ann_0001.jpg" and pairs[0].second == "Ann/Ann_0002.jpg"
    assert pairs[3].second == "Eve/Eve_0012.jpg"  # the second photo is the one anonymised


def test_trailing_blank_lines_are_allowed(tmp_path):
    assert len(parse_pairs(write(tmp_path, VALID + "\n\n"))) == 4


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "empty file"),
        ("2 x\n", r":1: expected header"),
        ("2\t1\nAnn\t1\t2\n", "promises 4 pair lines, found 1"),
        ("2\t1\nAnn\t1\t2\tBob\nAnn\t1\tBob\t3\nCid\t2\t4\nDee\t1\tEve\t12\n", r":2: fold 1 expects a same-person"),
        ("2\t1\nAnn\t1\t2\nAnn\t1\tBob\nCid\t2\t4\nDee\t1\tEve\t12\n", r":3: fold 1 expects a different-person"),
        ("2\t1\nAnn\t1\t2\nAnn\t1\tBob\t3\nCid\tone\t4\nDee\t1\tEve\t12\n", r":4: malformed same-person"),
        ("2\t1\nAnn\t1\t2\nAnn\t1\tBob\t0\nCid\t2\t4\nDee\t1\tEve\t12\n", r":3: malformed different-person"),
        (
            "2\t1\nAnn\t1\t1\nAnn\t1\tBob\t3\nCid\t2\t4\nDee\t1\tEve\t12\n",
            r":2: a same-person pair names one image twice",
        ),
    ],
)
def test_malformed_pairs_files_name_the_line(tmp_path, text, message):
    with pytest.raises(ProtocolFileError, match=message):
        parse_pairs(write(tmp_path, text))


def test_lfw_key_uses_four_digits():
    assert lfw_key("George_W_Bush", 7) == "George_W_Bush/George_W_Bush_0007.jpg"


def test_identity_file_parsing_and_errors(tmp_path):
    path = tmp_path / "identity_CelebA.txt"
    path.write_text("000001.jpg 2880\n000002.jpg 2937\n\n")
    assert read_identities(path) == {"000001.jpg": "2880", "000002.jpg": "2937"}
    path.write_text("000001.jpg 2880\n000002.jpg\n")
    with pytest.raises(ProtocolFileError, match=":2: expected"):
        read_identities(path)
    path.write_text("000001.jpg 2880\n000001.jpg 3\n")
    with pytest.raises(ProtocolFileError, match=":2: 000001.jpg is listed twice"):
        read_identities(path)


@pytest.mark.realdata
def test_real_pairs_file_has_6000_pairs_in_10_folds_of_300_and_300(lfw_root):
    pairs = parse_pairs(lfw_root / "pairs.txt")
    assert len(pairs) == 6000
    for fold in range(10):
        in_fold = [p for p in pairs if p.fold == fold]
        assert sum(p.same for p in in_fold) == 300 and sum(not p.same for p in in_fold) == 300
