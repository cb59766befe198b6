"""HTTP downloads with checksums, resume, retries and safe archive extraction.

Used by the `download` stage (datasets) and by `metrics` (pretrained weights).
"""

from __future__ import annotations

import hashlib
import html.parser
import os
import shutil
import tarfile
import time
import urllib.parse
import zipfile
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Annotated

import requests
from tqdm import tqdm

from infra.atomic import swap_in
from infra.errors import DataError, SuiteError
from infra.settings import above, at_least

CHUNK = 1 << 20
GOOGLE_DRIVE = "https://drive.usercontent.google.com/download?export=download&confirm=t&id="


@dataclass(frozen=True)
class DownloadConfig:
    retries: Annotated[int, at_least(0)] = 5  # attempts after the first, with exponential backoff
    timeout_s: Annotated[float, above(0)] = 60.0  # per connection / read


class DownloadError(SuiteError, RuntimeError):
    """A file could not be fetched; the message names it and its source."""


class ChecksumError(DownloadError):
    """A downloaded (or present) file does not have the expected digest."""


class UnsafeArchiveError(DataError):
    """An archive member would land outside the extraction folder, or is not a plain file or folder."""


@dataclass(frozen=True)
class Remote:
    """A file to fetch. `checksum` is "<algorithm>:<hex>" with algorithm md5 or sha256, or None where no
    digest is published: then any complete download is accepted and the caller records its digest."""

    filename: str
    url: str
    checksum: str | None
    google_drive_id: str | None = None

    def __post_init__(self):
        if self.checksum is None:
            return
        algorithm, _, digest = self.checksum.partition(":")
        if algorithm not in ("md5", "sha256") or not digest:
            raise ValueError(f"{self.filename}: checksum must be 'md5:<hex>' or 'sha256:<hex>', got {self.checksum!r}")


def google_drive(filename: str, file_id: str, checksum: str | None = None) -> Remote:
    """A file shared on Google Drive, fetched from its download endpoint (large files: confirmation page)."""
    return Remote(filename, GOOGLE_DRIVE + file_id, checksum, google_drive_id=file_id)


def file_digest(path: Path, algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def matches(path: Path, checksum: str) -> bool:
    algorithm, _, expected = checksum.partition(":")
    return path.is_file() and file_digest(path, algorithm) == expected.lower()


def fetch(
    remote: Remote,
    directory: Path,
    *,
    retries: int = 5,
    timeout: float = 60.0,
    backoff: float = 1.0,
    session: requests.Session | None = None,
) -> Path:
    """Download `remote` into `directory`, verify it and return its path.

    An existing verified file is reused (any existing file when `remote.checksum` is None: it was
    moved into place complete). A partial `<name>.part` left by an interrupted run is resumed
    with an HTTP Range request. A complete file with the wrong checksum is deleted
    (ChecksumError). When the server sends no length, a dropped connection cannot be told from
    the end of the file: a file that does not verify is then resumed on the next attempt.
    """
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / remote.filename
    if target.is_file() and (remote.checksum is None or matches(target, remote.checksum)):
        return target
    partial = directory / (remote.filename + ".part")
    session = session or requests.Session()
    url = remote.url
    last_error: Exception | str | None = None
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(backoff * 2 ** (attempt - 1))
        try:
            if remote.google_drive_id and url == remote.url:
                url = _google_drive_url(session, remote, timeout)
            length_known = _transfer(session, url, partial, remote.filename, timeout)
        except (
            requests.ConnectionError,
            requests.Timeout,
            requests.exceptions.ChunkedEncodingError,
            _RetryableStatus,
        ) as error:
            last_error = error
            continue
        if remote.checksum is None:
            os.replace(partial, target)
            return target
        algorithm, _, expected = remote.checksum.partition(":")
        actual = file_digest(partial, algorithm)
        if actual == expected.lower():
            os.replace(partial, target)
            return target
        if length_known:
            partial.unlink(missing_ok=True)
            raise ChecksumError(
                f"{remote.filename} from {remote.url}: {algorithm} is {actual}, expected {expected}. "
                "The download was deleted; the source may have changed or been corrupted."
            )
        # Without a length a dropped connection looks like the end of the file: resume and check again.
        last_error = f"the server sent no length and the {partial.stat().st_size} bytes received do not verify"
    raise DownloadError(f"{remote.filename}: failed after {retries + 1} attempts from {remote.url}: {last_error}")


class _RetryableStatus(Exception):
    pass


def _transfer(session: requests.Session, url: str, partial: Path, label: str, timeout: float) -> bool:
    """Append the rest of the file to `partial`; True if its full length is known to have arrived.

    Complete means the server sent a length and it all came, or refused the range because the
    partial file already holds everything (416).
    """
    offset = partial.stat().st_size if partial.exists() else 0
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    with session.get(url, headers=headers, stream=True, timeout=timeout) as response:
        if response.status_code == 416:  # the partial file is already complete
            return True
        if response.status_code >= 500 or response.status_code == 429:
            raise _RetryableStatus(f"HTTP {response.status_code} from {url}")
        if response.status_code not in (200, 206):
            raise DownloadError(f"{label}: HTTP {response.status_code} from {url}")
        if response.status_code == 200:  # server ignored the Range header: start over
            offset = 0
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length is not None else None
        with (
            open(partial, "ab" if offset else "wb") as out,
            tqdm(
                total=total,
                initial=offset,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=label,
                leave=False,
                disable=None,
            ) as bar,
        ):
            for chunk in response.iter_content(CHUNK):
                out.write(chunk)
                bar.update(len(chunk))
        if total is not None and partial.stat().st_size < total:
            raise requests.exceptions.ChunkedEncodingError(
                f"{label}: connection closed at {partial.stat().st_size} of {total} bytes"
            )
        return total is not None


class _FormParser(html.parser.HTMLParser):
    """Collects the action and hidden inputs of the download form on Google Drive's warning page."""

    def __init__(self):
        super().__init__()
        self.action: str | None = None
        self.fields: dict[str, str] = {}

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if tag == "form" and self.action is None:
            self.action = attributes.get("action")
        elif tag == "input" and attributes.get("type") == "hidden" and attributes.get("name"):
            self.fields[attributes["name"]] = attributes.get("value") or ""


def _google_drive_url(session: requests.Session, remote: Remote, timeout: float) -> str:
    """Resolve a Drive file id to a URL that serves the bytes (large files need a confirmation step)."""
    with session.get(remote.url, stream=True, timeout=timeout) as response:
        if response.status_code >= 500 or response.status_code == 429:
            raise _RetryableStatus(f"HTTP {response.status_code} from {remote.url}")
        if "text/html" not in response.headers.get("Content-Type", ""):
            return remote.url
        page = response.text
    form = _FormParser()
    form.feed(page)
    if not form.action or "id" not in form.fields:
        raise DownloadError(
            f"{remote.filename}: Google Drive returned a page without a download form "
            f"(quota exceeded or file moved); download it by hand from "
            f"https://drive.google.com/file/d/{remote.google_drive_id}/view"
        )
    action = urllib.parse.urljoin(remote.url, form.action)
    return f"{action}?{urllib.parse.urlencode(form.fields)}"


def _check_member(name: str, destination: Path, protected: Collection[str] = ()) -> Path:
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or (path.parts and ":" in path.parts[0]):
        raise UnsafeArchiveError(f"archive member {name!r} escapes the extraction folder")
    if path.parts and path.parts[0] in protected:
        raise UnsafeArchiveError(f"archive member {name!r} would replace {path.parts[0]}, which the download "
                                 "stage keeps there")
    resolved = (destination / path).resolve()
    if not resolved.is_relative_to(destination.resolve()):
        raise UnsafeArchiveError(f"archive member {name!r} escapes the extraction folder")
    return resolved


def staging_folder(destination: Path) -> Path:
    """Where `extract` unpacks before moving into `destination`: a sibling, on the same file system."""
    return destination.parent / f".{destination.name}.extracting"


def extract(archive: Path, destination: Path, protected: Collection[str] = ()) -> None:
    """Extract a .tgz/.tar/.zip archive into `destination` after checking every member.

    Absolute paths, `..` components, links pointing outside the folder and top-level names in
    `protected` (what the caller keeps in `destination`, such as its downloads) are rejected
    before anything is written. Extraction goes to a sibling temporary folder whose
    contents are moved into place only when the whole archive succeeded.
    """
    destination.mkdir(parents=True, exist_ok=True)
    staging = staging_folder(destination)
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as bundle:
                for info in bundle.infolist():
                    _check_member(info.filename, staging, protected)
                    if (info.external_attr >> 16) & 0o170000 == 0o120000:
                        raise UnsafeArchiveError(f"archive member {info.filename!r} is a symbolic link")
                bundle.extractall(staging)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as bundle:
                members = bundle.getmembers()
                for member in members:
                    _check_member(member.name, staging, protected)
                    if member.issym() or member.islnk():
                        link = (
                            PurePosixPath(member.name).parent / member.linkname
                            if member.issym()
                            else PurePosixPath(member.linkname)
                        )
                        if PurePosixPath(member.linkname).is_absolute():
                            raise UnsafeArchiveError(
                                f"link {member.name!r} points to absolute path {member.linkname!r}"
                            )
                        _check_member(str(link), staging, protected)
                    elif not (member.isfile() or member.isdir()):
                        raise UnsafeArchiveError(f"archive member {member.name!r} is not a regular file or folder")
                bundle.extractall(staging, filter="data")
        else:
            raise UnsafeArchiveError(f"{archive.name} is neither a tar nor a zip archive")
        for entry in staging.iterdir():
            target = destination / entry.name
            if target.exists() and target.is_dir() != entry.is_dir():  # a file became a folder or the reverse
                shutil.rmtree(target) if target.is_dir() else target.unlink()
            if entry.is_dir():
                swap_in(entry, target)  # the old folder stays whole until the new one is in
            else:
                os.replace(entry, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
