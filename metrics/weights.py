"""Pretrained weight files: located in the torch hub cache, verified by SHA-256, fetched when missing.

Every file lives at `torch.hub.get_dir()/checkpoints/<filename>`, the place pytorch-fid's
loader looks for its Inception weights, so one verified copy serves both. A file that is
present but has the wrong digest is an error, never silently replaced or substituted.

Digests (full SHA-256, see docs/decisions.md for where each was checked):
- Inception: torch hub names checkpoints `<name>-<first 8 hex digits of the SHA-256>.pth`,
  and the full digest below starts with `6726825d`, the suffix of pytorch-fid's file name.
- FaceNet: facenet-pytorch publishes no digests; the ones below are those recorded
  independently by several public projects that pin these exact release files.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import torch

from facedata.fetch import ChecksumError, DownloadError, Remote, fetch, file_digest


class WeightsUnavailableError(FileNotFoundError):
    """A pretrained file is missing and could not be downloaded."""


@dataclass(frozen=True)
class PretrainedFile:
    filename: str
    url: str
    sha256: str
    size: int  # bytes, for the error message of a manual download

    @property
    def remote(self) -> Remote:
        return Remote(self.filename, self.url, f"sha256:{self.sha256}")


PRETRAINED = {
    "inception": PretrainedFile(
        "pt_inception-2015-12-05-6726825d.pth",
        "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth",
        "6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2",
        95_628_359,
    ),
    "facenet_casia": PretrainedFile(
        "20180408-102900-casia-webface.pt",
        "https://github.com/timesler/facenet-pytorch/releases/download/v2.2.9/20180408-102900-casia-webface.pt",
        "7a67afdbbc995fce5e10128675e318799a70698c2f433ba75dd7eb9a2f096e7d",
        115_887_415,
    ),
    "facenet_vggface2": PretrainedFile(
        "20180402-114759-vggface2.pt",
        "https://github.com/timesler/facenet-pytorch/releases/download/v2.2.9/20180402-114759-vggface2.pt",
        "281cebca8662831adb987a874bdcb36e73f5b1c6dc5ee5878f305e985625d99b",
        111_898_327,
    ),
}


def checkpoint_dir() -> Path:
    """torch hub's checkpoint folder (honours TORCH_HOME and torch.hub.set_dir)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


@functools.cache
def _verified(path: Path, size: int, mtime_ns: int, sha256: str) -> bool:
    # Keyed by size and mtime so a file is hashed once per process unless it changes.
    return file_digest(path, "sha256") == sha256


def resolve(name: str, *, download: bool = True, retries: int = 2, timeout: float = 60.0) -> Path:
    """Path of the verified pretrained file `name` (a key of PRETRAINED), downloading it if missing.

    Raises ChecksumError for a present file with the wrong digest and WeightsUnavailableError
    when the file is missing and cannot be fetched (offline, or `download=False`).
    """
    if name not in PRETRAINED:
        raise KeyError(f"unknown pretrained file {name!r}; known: {', '.join(sorted(PRETRAINED))}")
    spec = PRETRAINED[name]
    directory = checkpoint_dir()
    path = directory / spec.filename
    if path.is_file():
        stat = path.stat()
        if _verified(path, stat.st_size, stat.st_mtime_ns, spec.sha256):
            return path
        raise ChecksumError(
            f"{path} does not have the SHA-256 of {spec.filename} ({spec.sha256}): it is a different or "
            f"corrupted file. Delete it to download the original from {spec.url}.")
    where = (f"Download it by hand from {spec.url} ({spec.size:,} bytes, SHA-256 {spec.sha256}) "
             f"and place it at {path}.")
    if not download:
        raise WeightsUnavailableError(f"{spec.filename} is not at {path} and downloads are off. {where}")
    try:
        return fetch(spec.remote, directory, retries=retries, timeout=timeout)
    except ChecksumError:
        raise
    except (DownloadError, OSError) as error:
        raise WeightsUnavailableError(f"{spec.filename} is not at {path} and could not be downloaded "
                                      f"({error}). {where}") from error

