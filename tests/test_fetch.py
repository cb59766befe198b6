"""Downloads against a real HTTP server on 127.0.0.1: success, resume, checksum, retries, archives."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import zipfile
from pathlib import Path

import pytest

from infra.fetch import ChecksumError, DownloadError, Remote, UnsafeArchiveError, extract, fetch
from pipelines.config import from_mapping
from pipelines.layout import Layout
from tests.helpers import google_drive_page

PAYLOAD = os.urandom(3 * (1 << 20) + 12345)  # several chunks, not a multiple of the chunk size


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def test_fetch_downloads_and_verifies(file_server, tmp_path):
    file_server.files["/a.bin"] = PAYLOAD
    path = fetch(Remote("a.bin", file_server.url("/a.bin"), sha256(PAYLOAD)), tmp_path, backoff=0)
    assert path.read_bytes() == PAYLOAD
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin"]


def test_fetch_reuses_a_verified_file_without_a_request(file_server, tmp_path):
    (tmp_path / "a.bin").write_bytes(PAYLOAD)
    fetch(Remote("a.bin", file_server.url("/a.bin"), sha256(PAYLOAD)), tmp_path, backoff=0)
    assert file_server.requests == []


def test_fetch_resumes_after_a_cut_transfer(file_server, tmp_path):
    file_server.files["/a.bin"] = PAYLOAD
    file_server.cut_after["/a.bin"] = 1_500_000
    path = fetch(Remote("a.bin", file_server.url("/a.bin"), sha256(PAYLOAD)), tmp_path, backoff=0)
    assert path.read_bytes() == PAYLOAD
    ranges = [r for _, r in file_server.requests]
    assert ranges[0] is None and ranges[1] is not None and ranges[1].startswith("bytes=")
    resumed_from = int(ranges[1][6:].split("-")[0])
    assert 0 < resumed_from <= 1_500_000  # only the missing tail was fetched again


def test_fetch_resumes_a_partial_file_left_by_an_earlier_run(file_server, tmp_path):
    file_server.files["/a.bin"] = PAYLOAD
    (tmp_path / "a.bin.part").write_bytes(PAYLOAD[:1000])
    fetch(Remote("a.bin", file_server.url("/a.bin"), sha256(PAYLOAD)), tmp_path, backoff=0)
    assert file_server.requests == [("/a.bin", "bytes=1000-")]
    assert (tmp_path / "a.bin").read_bytes() == PAYLOAD


def test_fetch_retries_transient_server_errors(file_server, tmp_path):
    file_server.files["/a.bin"] = PAYLOAD
    file_server.fail_next["/a.bin"] = 2
    fetch(Remote("a.bin", file_server.url("/a.bin"), sha256(PAYLOAD)), tmp_path, retries=2, backoff=0)
    assert len(file_server.requests) == 3


def test_fetch_gives_up_after_the_retries(file_server, tmp_path):
    file_server.files["/a.bin"] = PAYLOAD
    file_server.fail_next["/a.bin"] = 5
    with pytest.raises(DownloadError, match="after 3 attempts"):
        fetch(Remote("a.bin", file_server.url("/a.bin"), sha256(PAYLOAD)), tmp_path, retries=2, backoff=0)


def test_checksum_mismatch_is_a_clear_error_and_leaves_nothing(file_server, tmp_path):
    file_server.files["/a.bin"] = PAYLOAD
    wrong = sha256(b"something else")
    with pytest.raises(ChecksumError, match=r"a\.bin.*sha256 is [0-9a-f]{64}, expected"):
        fetch(Remote("a.bin", file_server.url("/a.bin"), wrong), tmp_path, backoff=0)
    assert list(tmp_path.iterdir()) == []


def test_missing_file_is_not_retried(file_server, tmp_path):
    with pytest.raises(DownloadError, match="HTTP 404"):
        fetch(Remote("a.bin", file_server.url("/nothing"), sha256(PAYLOAD)), tmp_path, retries=3, backoff=0)
    assert len(file_server.requests) == 1


def test_google_drive_confirmation_page_is_followed(file_server, tmp_path):
    file_server.files["/uc"] = ("text/html; charset=utf-8", google_drive_page("/download", "FILEID"))
    file_server.files["/download"] = PAYLOAD
    remote = Remote("big.zip", file_server.url("/uc?id=FILEID"), sha256(PAYLOAD), google_drive_id="FILEID")
    assert fetch(remote, tmp_path, backoff=0).read_bytes() == PAYLOAD
    assert file_server.requests[-1][0] == "/download?id=FILEID&export=download&confirm=t&uuid=u-1"


def test_google_drive_page_without_form_explains_what_to_do(file_server, tmp_path):
    file_server.files["/uc"] = ("text/html", b"<html>Quota exceeded</html>")
    remote = Remote("big.zip", file_server.url("/uc?id=X"), sha256(PAYLOAD), google_drive_id="X")
    with pytest.raises(DownloadError, match=r"without a download form.*by hand from https://drive\.google\.com/file/d/X"):
        fetch(remote, tmp_path, backoff=0)


def test_without_a_published_checksum_any_complete_download_is_kept_and_then_reused(file_server, tmp_path):
    file_server.files["/a.bin"] = PAYLOAD
    file_server.cut_after["/a.bin"] = 1_000_000
    remote = Remote("a.bin", file_server.url("/a.bin"), None)
    assert fetch(remote, tmp_path, backoff=0).read_bytes() == PAYLOAD  # resumed, complete
    requests = len(file_server.requests)
    assert fetch(remote, tmp_path, backoff=0).read_bytes() == PAYLOAD
    assert len(file_server.requests) == requests and sorted(p.name for p in tmp_path.iterdir()) == ["a.bin"]


def test_remote_rejects_an_unknown_checksum_algorithm():
    with pytest.raises(ValueError, match="md5:<hex>"):
        Remote("a", "http://x", "crc32:1234")


# --- archives ---------------------------------------------------------------------------------


def tar_with(members: list[tarfile.TarInfo], data: bytes = b"x") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as bundle:
        for member in members:
            if member.isfile():
                member.size = len(data)
                bundle.addfile(member, io.BytesIO(data))
            else:
                bundle.addfile(member)
    return buffer.getvalue()


def test_extract_unpacks_a_tgz(tmp_path):
    archive = tmp_path / "ok.tgz"
    archive.write_bytes(tar_with([tarfile.TarInfo("lfw/A/A_0001.jpg"), tarfile.TarInfo("lfw/B/B_0001.jpg")]))
    extract(archive, tmp_path / "out")
    assert (tmp_path / "out/lfw/A/A_0001.jpg").read_bytes() == b"x"
    assert not any(p.name.startswith(".") for p in (tmp_path).iterdir())  # no staging folder left


@pytest.mark.parametrize("name", ["../evil.txt", "/tmp/evil.txt", "lfw/../../evil.txt"])
def test_extract_rejects_path_traversal_in_tar(tmp_path, name):
    archive = tmp_path / "bad.tgz"
    archive.write_bytes(tar_with([tarfile.TarInfo("lfw/ok.jpg"), tarfile.TarInfo(name)]))
    with pytest.raises(UnsafeArchiveError, match="escapes"):
        extract(archive, tmp_path / "out")
    assert not (tmp_path / "evil.txt").exists()
    assert list((tmp_path / "out").iterdir()) == []  # nothing from the archive was written


def test_extract_rejects_a_link_pointing_outside(tmp_path):
    link = tarfile.TarInfo("lfw/link")
    link.type, link.linkname = tarfile.SYMTYPE, "../../etc/passwd"
    archive = tmp_path / "bad.tgz"
    archive.write_bytes(tar_with([link]))
    with pytest.raises(UnsafeArchiveError):
        extract(archive, tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []


def test_extract_rejects_path_traversal_in_zip(tmp_path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as bundle:
        bundle.writestr("img_align_celeba/000001.jpg", b"x")
        bundle.writestr("../evil.txt", b"x")
    archive = tmp_path / "bad.zip"
    archive.write_bytes(buffer.getvalue())
    with pytest.raises(UnsafeArchiveError, match="escapes"):
        extract(archive, tmp_path / "out")
    assert not (tmp_path / "evil.txt").exists()


def test_extract_rejects_something_that_is_not_an_archive(tmp_path):
    archive = tmp_path / "notes.txt"
    archive.write_bytes(b"hello")
    with pytest.raises(UnsafeArchiveError, match="neither a tar nor a zip"):
        extract(archive, tmp_path / "out")


def test_download_stage_fetches_extracts_and_verifies_lfw(file_server, tmp_path, monkeypatch):
    """The download stage end to end: the real code, with the official URLs swapped for the local server."""
    from facedata import datasets
    from pipelines import download

    pairs_txt = b"1\t1\nAnn\t1\t2\nAnn\t1\tBob\t1\n"
    images = [
        tarfile.TarInfo(n)
        for n in (
            "lfw-deepfunneled/Ann/Ann_0001.jpg",
            "lfw-deepfunneled/Ann/Ann_0002.jpg",
            "lfw-deepfunneled/Bob/Bob_0001.jpg",
        )
    ]
    archive = tar_with(images)
    file_server.files["/pairs.txt"] = pairs_txt
    file_server.files["/lfw-deepfunneled.tgz"] = archive
    file_server.cut_after["/lfw-deepfunneled.tgz"] = len(archive) // 2
    monkeypatch.setattr(datasets, "LFW_PAIRS", Remote("pairs.txt", file_server.url("/pairs.txt"), sha256(pairs_txt)))
    monkeypatch.setitem(
        datasets.LFW_ARCHIVES,
        "deepfunneled",
        Remote("lfw-deepfunneled.tgz", file_server.url("/lfw-deepfunneled.tgz"), sha256(archive)),
    )
    settings = from_mapping({"data": {"lfw": {"root": None}}, "download": {"retries": 2, "timeout_s": 5}})
    layout = Layout(tmp_path)
    report = download.run(settings, layout, "lfw")
    assert report["n_images"] == 3 and report["n_pairs"] == 2 and report["n_pair_images_missing"] == 0
    assert report["local_copy"] is False and report["pairs_file_official"] is True  # against the patched remote
    assert (layout.raw("lfw") / "lfw-deepfunneled/Bob/Bob_0001.jpg").is_file()
    assert layout.source("lfw").is_file()


@pytest.mark.realdata
def test_download_stage_verifies_a_local_copy_without_copying(lfw_root, tmp_path, monkeypatch):
    from pipelines import download

    layout = Layout(tmp_path)
    report = download.run(from_mapping({"data": {"lfw": {"root": str(lfw_root)}}}), layout, "lfw")
    assert report["local_copy"] is True and report["pairs_file_official"] is True
    assert report["n_pairs"] == 6000 and report["n_images"] == 7701 and report["n_pair_images_missing"] == 0
    assert sorted(p.name for p in layout.raw("lfw").iterdir()) == ["source.json"]


def test_local_copy_with_the_wrong_layout_names_what_is_missing(tmp_path):
    from pipelines.download import LayoutError, verify_local

    (tmp_path / "lfw").mkdir()
    with pytest.raises(LayoutError, match="lfw-deepfunneled.*holds lfw"):
        verify_local("lfw", tmp_path, "deepfunneled")
    with pytest.raises(LayoutError, match="is not a folder"):
        verify_local("lfw", tmp_path / "nowhere", "deepfunneled")
    (tmp_path / "img_align_celeba").mkdir()
    with pytest.raises(LayoutError, match="identity_CelebA.txt"):
        verify_local("celeba", tmp_path, "aligned")
    assert Path(tmp_path).is_dir()


def test_outputs_are_readable_by_others(tmp_path):
    from infra.atomic import write_json

    write_json(tmp_path / "out.json", {"a": 1})
    assert (tmp_path / "out.json").stat().st_mode & 0o044 == 0o044  # not mkstemp's 0600


def test_unreachable_source_is_one_line_with_the_local_copy_hint(file_server, tmp_path, monkeypatch, capsys):
    from facedata import datasets
    from pipelines import download

    monkeypatch.setattr(datasets, "LFW_PAIRS", Remote("pairs.txt", file_server.url("/gone"), sha256(b"x")))
    layout = Layout(tmp_path)
    layout.params_file.write_text("data: {lfw: {root: null}}\ndownload: {retries: 0, timeout_s: 5}\n")
    with pytest.raises(SystemExit) as stop:
        download.main(["lfw"], layout=layout)
    assert stop.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("download@lfw: pairs.txt: HTTP 404")
    assert lines[0].endswith("set data.lfw.root instead")


def test_json_outputs_are_standard_json(tmp_path):
    import json

    from infra.atomic import write_json

    write_json(tmp_path / "r.json", {"pose_error": {"value": float("nan"), "per_fold": [1.0, float("inf")]}})
    assert json.loads((tmp_path / "r.json").read_text(), parse_constant=lambda name: pytest.fail(name)) == {
        "pose_error": {"value": None, "per_fold": [1.0, None]}
    }


# --- dropped transfers without a length, the download folder, staging folders -------------------------------


def test_a_dropped_transfer_without_content_length_is_resumed_and_verified(file_server, tmp_path):
    file_server.files["/a.bin"] = PAYLOAD
    file_server.without_length.add("/a.bin")
    file_server.cut_after["/a.bin"] = 1_500_000  # looks like a complete file: no length to compare with
    path = fetch(Remote("a.bin", file_server.url("/a.bin"), sha256(PAYLOAD)), tmp_path, retries=2, backoff=0)
    assert path.read_bytes() == PAYLOAD
    assert [r for _, r in file_server.requests] == [None, "bytes=1500000-"]


def test_a_changed_source_without_content_length_is_still_a_checksum_error(file_server, tmp_path):
    file_server.files["/a.bin"] = PAYLOAD
    file_server.without_length.add("/a.bin")
    with pytest.raises(ChecksumError, match="the source may have changed"):
        fetch(Remote("a.bin", file_server.url("/a.bin"), sha256(b"other")), tmp_path, retries=3, backoff=0)
    assert list(tmp_path.iterdir()) == []
    assert len(file_server.requests) == 2  # the whole file, then a range past its end (416: it was complete)


def lfw_remotes(file_server, monkeypatch, archive: bytes) -> None:
    """The download stage's LFW sources swapped for the local server: a one-pair pairs.txt and `archive`."""
    from facedata import datasets

    pairs_txt = b"1\t1\nAnn\t1\t2\nAnn\t1\tBob\t1\n"
    file_server.files["/pairs.txt"] = pairs_txt
    file_server.files["/lfw-deepfunneled.tgz"] = archive
    monkeypatch.setattr(datasets, "LFW_PAIRS", Remote("pairs.txt", file_server.url("/pairs.txt"), sha256(pairs_txt)))
    monkeypatch.setitem(datasets.LFW_ARCHIVES, "deepfunneled",
                        Remote("lfw-deepfunneled.tgz", file_server.url("/lfw-deepfunneled.tgz"), sha256(archive)))


@pytest.mark.parametrize("member", ["archives/lfw-deepfunneled.tgz", "archives", "pairs.txt", "source.json"])
def test_an_archive_never_replaces_what_the_download_stage_keeps(file_server, tmp_path, monkeypatch, member):
    from pipelines import download

    archive = tar_with([tarfile.TarInfo("lfw-deepfunneled/Ann/Ann_0001.jpg"), tarfile.TarInfo(member)])
    lfw_remotes(file_server, monkeypatch, archive)
    layout = Layout(tmp_path)
    with pytest.raises(UnsafeArchiveError, match="which the download stage keeps there"):
        download.run(from_mapping({"data": {"lfw": {"root": None}}, "download": {"retries": 0}}), layout, "lfw")
    raw = layout.raw("lfw")
    assert (raw / "archives/lfw-deepfunneled.tgz").read_bytes() == archive  # the download is intact
    assert (raw / "pairs.txt").read_bytes().startswith(b"1\t1") and not (raw / "lfw-deepfunneled").exists()


def test_the_download_stage_removes_a_killed_extraction_first(tmp_path):
    from pipelines import download

    root = tmp_path / "lfw-copy"
    (root / "lfw-deepfunneled/Ann").mkdir(parents=True)
    (root / "lfw-deepfunneled/Ann/Ann_0001.jpg").write_bytes(b"x")
    (root / "lfw-deepfunneled/Ann/Ann_0002.jpg").write_bytes(b"x")
    (root / "pairs.txt").write_text("1\t1\nAnn\t1\t2\nAnn\t1\tBob\t1\n")
    layout = Layout(tmp_path)
    left = tmp_path / "data/raw/.lfw.extracting/lfw-deepfunneled"  # what a SIGKILL during extraction leaves
    left.mkdir(parents=True)
    (left / "half.jpg").write_bytes(b"x")
    download.run(from_mapping({"data": {"lfw": {"root": str(root)}}}), layout, "lfw")
    assert sorted(p.name for p in (tmp_path / "data/raw").iterdir()) == ["lfw"]
