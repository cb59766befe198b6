"""CelebA's protocol identity list: CIAGAN's legit_indices.npy (download, checks, roles) and the derived rule,
down to which photos `prepare` processes; with the real protocol files, the paper's 1,200/363 split."""

from __future__ import annotations

import hashlib
import json
from collections import Counter

import numpy as np
import pandas as pd
import pytest

from facedata import datasets, protocol
from facedata.datasets import CelebaData, ProtocolFileError, read_identities
from infra.errors import MissingInputError
from infra.fetch import ChecksumError, Remote, matches
from pipelines import download, prepare
from pipelines.config import from_mapping
from pipelines.layout import Layout

# Identity ids sorted as strings, as CIAGAN's file is.
LISTED = np.array([10000, 10001, 1003, 2, 7201, 7203], dtype=np.int64)


def npy_bytes(array: np.ndarray, tmp_path) -> bytes:
    path = tmp_path / "list.npy"
    np.save(path, array)
    return path.read_bytes()


def test_the_list_file_is_read_in_its_order_and_checked(tmp_path):
    path = tmp_path / "legit_indices.npy"
    np.save(path, LISTED)
    assert protocol.read_identity_list(path) == ["10000", "10001", "1003", "2", "7201", "7203"]
    for bad, message in ((LISTED.reshape(2, 3), "1-D array"), (LISTED.astype(float), "1-D array"),
                         (np.array([], np.int64), "1-D array"), (np.array([5, 7, 5]), "identity 5 more than once")):
        np.save(path, bad)
        with pytest.raises(ProtocolFileError, match=rf"legit_indices.npy .*{message}"):
            protocol.read_identity_list(path)
    path.write_bytes(b"not numpy")
    with pytest.raises(ProtocolFileError, match="legit_indices.npy is not a NumPy array file"):
        protocol.read_identity_list(path)


def test_the_derived_list_counts_photos_and_sorts_ids_as_strings():
    identities = {f"a{i}.jpg": "10" for i in range(3)} | {f"b{i}.jpg": "9" for i in range(3)} | {"c.jpg": "1"}
    assert protocol.derived_identity_list(identities, 3) == ["10", "9"]
    assert protocol.derived_identity_list(identities, 1) == ["1", "10", "9"]
    settings = CelebaData(identity_list="derived", min_images_per_identity=3)
    assert protocol.identity_list(settings, identities, None) == ["10", "9"]


def test_the_official_identity_files_crlf_line_ends_are_read(tmp_path):
    path = tmp_path / "identity_CelebA.txt"
    path.write_bytes(b"000001.jpg 2880\r\n000002.jpg 2937\r\n")
    assert read_identities(path) == {"000001.jpg": "2880", "000002.jpg": "2937"}


def fake_celeba(root, identities: dict[str, str]):
    """A local copy with an (empty) image per photo and an identity file with CRLF line ends."""
    (root / "img_align_celeba").mkdir(parents=True)
    for name in identities:
        (root / "img_align_celeba" / name).write_bytes(b"")
    (root / "identity_CelebA.txt").write_bytes("".join(f"{n} {i}\r\n" for n, i in identities.items()).encode())
    return root


def test_the_download_stage_fetches_verifies_and_records_ciagans_list(file_server, tmp_path, monkeypatch):
    body = npy_bytes(LISTED, tmp_path)
    file_server.files["/legit_indices.npy"] = body
    digest = "sha256:" + hashlib.sha256(body).hexdigest()
    monkeypatch.setattr(datasets, "CIAGAN_IDENTITY_LIST", Remote("legit_indices.npy",
                                                                 file_server.url("/legit_indices.npy"), digest))
    root = fake_celeba(tmp_path / "celeba", {"000001.jpg": "2", "000002.jpg": "99"})
    layout, params = Layout(tmp_path / "repo"), from_mapping({"data": {"celeba": {"root": str(root)}}})
    report = download.run(params, layout, "celeba")
    listed = layout.raw("celeba") / "legit_indices.npy"
    assert report["identity_list_file"] == str(listed.resolve()) and report["identity_list_official"]
    assert report["n_identity_list"] == 6 and report["identity_list_sha256"] == digest.split(":")[1]
    assert json.loads(layout.source("celeba").read_text())["identity_list_file"] == str(listed.resolve())
    download.run(params, layout, "celeba")
    assert len(file_server.requests) == 1  # a verified copy is not fetched again

    listed.unlink()
    file_server.files["/legit_indices.npy"] = npy_bytes(LISTED[:3], tmp_path)  # the source changed
    with pytest.raises(ChecksumError, match="legit_indices.npy .*sha256 is"):
        download.run(params, layout, "celeba")
    assert not listed.exists()


def test_a_local_list_or_the_derived_rule_needs_no_download(file_server, tmp_path, monkeypatch):
    monkeypatch.setattr(datasets, "CIAGAN_IDENTITY_LIST", Remote("legit_indices.npy", file_server.url("/x"),
                                                                 datasets.CIAGAN_IDENTITY_LIST.checksum))
    root = fake_celeba(tmp_path / "celeba", {"000001.jpg": "2"})
    local = tmp_path / "my-list.npy"
    np.save(local, LISTED)
    layout = Layout(tmp_path / "repo")
    report = download.run(from_mapping({"data": {"celeba": {"root": str(root), "identity_list_file": str(local)}}}),
                          layout, "celeba")
    assert report["identity_list_file"] == str(local.resolve()) and report["identity_list_official"] is False
    report = download.run(from_mapping({"data": {"celeba": {"root": str(root), "identity_list": "derived"}}}),
                          layout, "celeba")
    assert report["identity_list"] == "derived" and report["identity_list_file"] is None
    assert file_server.requests == []
    with pytest.raises(download.LayoutError, match="identity_list_file = .*nowhere.npy is not a file"):
        download.run(from_mapping({"data": {"celeba": {"root": str(root), "identity_list_file": "nowhere.npy"}}}),
                     layout, "celeba")


def test_prepare_takes_the_photos_of_listed_identities_or_of_the_derived_rule(tmp_path):
    identities = {"a.jpg": "2", "b.jpg": "2", "c.jpg": "99", "d.jpg": "7203", "e.jpg": "99", "f.jpg": "99"}
    root = fake_celeba(tmp_path, identities)
    np.save(tmp_path / "list.npy", LISTED)
    source = {"identity_file": str(root / "identity_CelebA.txt"), "identity_list_file": str(tmp_path / "list.npy")}
    listed = prepare.protocol_images("celeba", source, from_mapping({}))
    assert listed == {"a.jpg": "2", "b.jpg": "2", "d.jpg": "7203"}  # 99 is not listed
    derived = from_mapping({"data": {"celeba": {"identity_list": "derived", "min_images_per_identity": 2}}})
    assert prepare.protocol_images("celeba", source | {"identity_list_file": None}, derived) == {
        "a.jpg": "2", "b.jpg": "2", "c.jpg": "99", "e.jpg": "99", "f.jpg": "99"}
    with pytest.raises(MissingInputError, match="download@celeba"):
        prepare.protocol_images("celeba", source | {"identity_list_file": None}, from_mapping({}))


# -- the real protocol files (../shared/data/celeba-protocol) --------------------------------------


@pytest.fixture(scope="module")
def official(celeba_protocol_root) -> tuple[dict[str, str], list[str]]:
    """({photo: identity} of the official identity file, CIAGAN's list), both checked against their digests."""
    identity_file = celeba_protocol_root / "identity_CelebA.txt"
    list_file = celeba_protocol_root / "legit_indices.npy"
    assert matches(identity_file, datasets.CELEBA_IDENTITY.checksum)  # torchvision's MD5, CRLF line ends
    assert b"\r\n" in identity_file.read_bytes()[:100]
    assert matches(list_file, datasets.CIAGAN_IDENTITY_LIST.checksum)
    return read_identities(identity_file), protocol.read_identity_list(list_file)


def all_photos_prepared(identities: dict[str, str], kept: set[str]) -> pd.DataFrame:
    """A prepared index in which every photo of the `kept` identities was prepared."""
    rows = [(key, identity) for key, identity in identities.items() if identity in kept]
    return pd.DataFrame(rows, columns=["key", "identity"]).assign(status="ok")


@pytest.mark.realdata
def test_the_protocol_files_alone_give_ciagans_list_and_the_papers_1200_363_split(official):
    identities, listed = official
    counts = Counter(identities.values())
    assert len(identities) == 202_599 and len(counts) == 10_177
    assert len(listed) == 1_563 and listed == sorted(listed)  # string order: 10000, 10001, 10003, ..., 1003, ...
    assert listed[:3] == ["10000", "10001", "10003"] and listed[-1] == "9987"
    assert {counts[identity] for identity in listed} <= set(range(30, 36))
    exactly_30 = {identity for identity, count in counts.items() if count == 30}
    assert len(exactly_30) == 2_343 and len(exactly_30.intersection(listed)) == 1_547

    index = all_photos_prepared(identities, set(listed))
    train, test, summary = protocol.celeba_pairs(index, listed, protocol.CelebaPairs(), seed=0)
    assert (summary["train_identities"], summary["test_identities"], summary["scaled_split"]) == (1_200, 363, False)
    assert list(dict.fromkeys(train["source_identity"])) == listed[:1_200]
    assert list(dict.fromkeys(test["source_identity"])) == listed[1_200:]
    assert listed[1_199] == "7201" and listed[1_200] == "7203"
    assert len(train) == 24_000 and len(test) == sum(counts[identity] for identity in listed[1_200:])
    # Each test identity's condition is the next listed identity; the last wraps to the first.
    following = dict(zip(listed, listed[1:] + listed[:1], strict=True))
    assert all(following[s] == c for s, c in zip(test["source_identity"], test["condition_identity"], strict=True))


@pytest.mark.realdata
def test_the_derived_rule_finds_2360_identities_and_would_train_on_other_people(official):
    identities, listed = official
    derived = protocol.derived_identity_list(identities, 30)
    assert len(derived) == 2_360 and set(listed) < set(derived)
    index = all_photos_prepared(identities, set(derived))
    train, test, summary = protocol.celeba_pairs(index, derived, protocol.CelebaPairs(), seed=0)
    assert (summary["train_identities"], summary["test_identities"], summary["unused_identities"]) == (1_200, 363, 797)
    derived_train, derived_test = set(train["source_identity"]), set(test["source_identity"])
    print(f"\nderived rule: {len(derived_train - set(listed[:1_200]))} of 1,200 training and "
          f"{len(derived_test - set(listed[1_200:]))} of 363 test identities differ from CIAGAN's split")
    assert derived_train != set(listed[:1_200]) and derived_test != set(listed[1_200:])


@pytest.mark.realdata
def test_on_the_wild_mini_the_eleven_test_identities_keep_their_role_and_7201_trains(
        prepared_celeba_wild, official, celeba_wild_root, celeba_protocol_root):
    _, listed = official
    index = pd.read_parquet(prepared_celeba_wild / "index.parquet")  # all 600 photos of its 20 identities
    position = {identity: number for number, identity in enumerate(listed)}
    present = set(index["identity"].astype(str))
    expected_test = sorted((i for i in present if position.get(i, -1) >= 1_200), key=position.get)
    assert len(expected_test) == 11 and position["7201"] == 1_199

    train, test, summary = protocol.celeba_pairs(index, listed, protocol.CelebaPairs(), seed=0)
    assert not summary["scaled_split"]
    assert list(dict.fromkeys(test["source_identity"])) == expected_test
    assert set(train["source_identity"]) == {"7201"}
    assert summary["unlisted_identities_present"] == 8 and summary["unused_identities"] == 8

    # prepare@celeba with the list takes only the 12 listed identities' photos of this copy.
    source = {"identity_file": str(celeba_wild_root / "identity_CelebA.txt"),
              "identity_list_file": str(celeba_protocol_root / "legit_indices.npy")}
    wanted = prepare.protocol_images("celeba", source, from_mapping({}))
    assert len(wanted) == 360 and set(wanted.values()) == set(expected_test) | {"7201"}
