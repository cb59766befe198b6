"""Protocol files: the strict pairs.txt parser and the CelebA identity list."""

from __future__ import annotations

import pytest

from facedata.datasets import (
    ProtocolFileError,
    lfw_key,
    parse_pairs,
    read_identities,
)
from facedata.protocol import derived_identity_list
from infra.errors import ParamsError


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


# --- keys are data, not paths; lines are checked; another encoding names the file ------------------


@pytest.mark.parametrize("name", ["../../x/face.jpg", "/abs/face.jpg", "a/./b.jpg", "a//b.jpg", "..", "dir\\x.jpg"])
def test_an_identity_file_key_that_is_a_path_is_rejected_with_file_and_line(tmp_path, name):
    path = tmp_path / "identity_CelebA.txt"
    path.write_text(f"000001.jpg 1\n{name} 2\n")
    with pytest.raises(ProtocolFileError, match=r"identity_CelebA.txt:2: file name .*: the key must"):
        read_identities(path)


@pytest.mark.parametrize("line", ["..\t1\t2", "..\t1\tBob\t3", "Ann\t1\t.\t3"])
def test_a_pairs_name_that_is_a_path_component_is_rejected(tmp_path, line):
    text = "1\t1\nAnn\t1\t2\nAnn\t1\tBob\t3\n"
    lines = text.splitlines()
    lines[1 if line.count("\t") == 2 else 2] = line
    with pytest.raises(ProtocolFileError, match=r"pairs.txt:[23]: name '\.\.?' in .*: the key must not have"):
        parse_pairs(write(tmp_path, "\n".join(lines) + "\n"))


def test_a_different_person_line_naming_one_person_twice_is_rejected(tmp_path):
    with pytest.raises(ProtocolFileError, match=r":3: a different-person pair names one person twice"):
        parse_pairs(write(tmp_path, "1\t1\nAnn\t1\t2\nBob\t1\tBob\t3\n"))


@pytest.mark.parametrize(("text", "message"), [
    ("1\t2\nAnn\t1\t2\nAnn\t1\t2\nAnn\t1\tBob\t3\nCid\t1\tDee\t2\n", r":3: repeats the pair of line 2"),
    ("1\t2\nAnn\t1\t2\nAnn\t2\t1\nAnn\t1\tBob\t3\nCid\t1\tDee\t2\n", r":3: repeats the pair of line 2"),
    ("1\t2\nAnn\t1\t2\nCid\t1\t2\nAnn\t1\tBob\t3\nBob\t3\tAnn\t1\n", r":5: repeats the pair of line 4"),
])
def test_a_pair_listed_twice_in_either_order_is_rejected_naming_both_lines(tmp_path, text, message):
    with pytest.raises(ProtocolFileError, match=message):
        parse_pairs(write(tmp_path, text))


@pytest.mark.parametrize("name", ["pairs.txt", "identity_CelebA.txt"])
def test_a_protocol_file_in_another_encoding_names_the_file_and_line(tmp_path, name):
    text = "1\t1\nAnn\t1\t2\nJos\u00e9\t1\tBob\t3\n" if name == "pairs.txt" else "000001.jpg 1\nJos\u00e9.jpg 2\n"
    path = tmp_path / name
    path.write_bytes(text.encode("latin-1"))
    reader = parse_pairs if name == "pairs.txt" else read_identities
    with pytest.raises(ProtocolFileError, match=rf"{name}:[23]: not UTF-8 text \(byte 0xe9\); save the file as UTF-8"):
        reader(path)
    path.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))  # UTF-8 with a byte-order mark is fine
    assert reader(path)


def test_no_eligible_identity_is_a_params_error_naming_the_key():
    with pytest.raises(ParamsError, match=r"data.celeba.min_images_per_identity = 4: no CelebA identity has that "
                                          r"many photos \(the most any has is 3\)"):
        derived_identity_list({f"{i}.jpg": "10" for i in range(3)} | {"b.jpg": "1"}, 4)
