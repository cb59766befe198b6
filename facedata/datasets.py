"""CelebA and LFW: official sources, on-disk layouts and protocol files.

A dataset root is laid out as the official archives extract:
    CelebA: <root>/img_align_celeba/*.jpg (aligned) or <root>/img_celeba/*.jpg (in the wild),
            <root>/identity_CelebA.txt
    LFW:    <root>/<variant folder>/<Name>/<Name>_<NNNN>.jpg, <root>/pairs.txt
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

from infra.errors import DataError, ParamsError
from infra.fetch import Remote, google_drive
from infra.settings import at_least

_UMASS = "http://vis-www.cs.umass.edu/lfw/"
_FIGSHARE = "https://ndownloader.figshare.com/files/"

# CelebA files on the authors' Google Drive; ids and MD5s as listed by torchvision's CelebA class.
CELEBA_IDENTITY = google_drive(
    "identity_CelebA.txt", "1_ee_0u7vcNLOfNLegJRHmolfH5ICW-XS", "md5:32bd1bd63d3c78cd57e08160ec5ed1e2"
)
CELEBA_ARCHIVES = {
    "aligned": google_drive(
        "img_align_celeba.zip", "0B7EVK8r0v71pZjFTYXZWM3FlRnM", "md5:00d2c5bc6d35e252742224ab0c1e8fcb"
    ),
}
CELEBA_FOLDERS = {"aligned": "img_align_celeba", "wild": "img_celeba"}
# The paper's protocol list: CIAGAN's identity ids (dvl-tum/ciagan, master branch, MIT licence).
CIAGAN_IDENTITY_LIST = Remote(
    "legit_indices.npy",
    "https://raw.githubusercontent.com/dvl-tum/ciagan/master/dataset/celeba/legit_indices.npy",
    "sha256:e2f1efc83f536bde9d7d18ccfedc3caa9b62eb7190e55b3448eed7a761dbfc55",
)

# LFW on the UMass site (MD5s as torchvision lists them); figshare mirrors (SHA-256 as scikit-learn
# lists them) where one exists, preferred because the UMass site is often down.
LFW_PAIRS = Remote(
    "pairs.txt", _FIGSHARE + "5976006", "sha256:ea42330c62c92989f9d7c03237ed5d591365e89b3e649747777b70e692dc1592"
)
LFW_ARCHIVES = {
    "original": Remote(
        "lfw.tgz", _FIGSHARE + "5976018", "sha256:055f7d9c632d7370e6fb4afc7468d40f970c34a80d4c6f50ffec63f5a8d536c0"
    ),
    "funneled": Remote(
        "lfw-funneled.tgz",
        _FIGSHARE + "5976015",
        "sha256:b47c8422c8cded889dc5a13418c4bc2abbda121092b3533a83306f90d900100a",
    ),
    "deepfunneled": Remote(
        "lfw-deepfunneled.tgz", _UMASS + "lfw-deepfunneled.tgz", "md5:68331da3eb755a505a502b5aacb3c201"
    ),
}
LFW_FOLDERS = {"original": "lfw", "funneled": "lfw_funneled", "deepfunneled": "lfw-deepfunneled"}

DATASETS = ("celeba", "lfw")


@dataclass(frozen=True)
class CelebaData:
    # Folder holding img_align_celeba/ (or img_celeba/) and identity_CelebA.txt; None = download.
    root: str | None = None
    variant: Literal["aligned", "wild"] = "aligned"  # aligned (178x218) | wild (img_celeba, local copies only)
    # The protocol's identity list (facedata.protocol): ciagan = CIAGAN's legit_indices.npy, the paper's 1,563
    # identities | derived = identities with >= min_images_per_identity photos; both in string order.
    identity_list: Literal["ciagan", "derived"] = "ciagan"
    identity_list_file: str | None = None  # a local copy of legit_indices.npy; None = download it
    min_images_per_identity: Annotated[int, at_least(1)] = 30  # the derived list's rule (2,360 ids in full CelebA)


@dataclass(frozen=True)
class LfwData:
    root: str | None = None  # folder holding <variant folder>/ and pairs.txt; None = download
    variant: Literal["original", "funneled", "deepfunneled"] = "deepfunneled"


@dataclass(frozen=True)
class DataConfig:
    celeba: CelebaData = field(default_factory=CelebaData)
    lfw: LfwData = field(default_factory=LfwData)


class ProtocolFileError(DataError):
    """A malformed protocol file; the message names the file and line."""


def key_problem(key: str) -> str | None:
    """Why `key` cannot name a photo, or None. Keys are data, not paths.

    A key is a relative path of plain names below the image folder (`000001.jpg`,
    `Name/Name_0001.jpg`): no absolute path, no `.` or `..` component, no empty component, no
    backslash or control character, so no key can name a file outside the folder, and its
    crop (`crops/<key>.png`) cannot land outside the prepared folder.
    """
    if not key or key.startswith("/") or "\\" in key or any(ord(c) < 32 for c in key):
        return "must be a relative path without backslashes or control characters"
    if any(part in ("", ".", "..") for part in key.split("/")):
        return "must not have empty, '.' or '..' components"
    return None


def _lines(path: Path) -> list[str]:
    """The lines of a UTF-8 protocol file (a byte-order mark is allowed); another encoding names the file."""
    try:
        return path.read_bytes().decode("utf-8-sig").splitlines()
    except UnicodeDecodeError as error:
        text = error.object  # the bytes after any byte-order mark, which error.start counts in
        line = text[: error.start].count(b"\n") + 1
        raise ProtocolFileError(f"{path}:{line}: not UTF-8 text (byte 0x{text[error.start]:02x}); "
                                "save the file as UTF-8") from None


def image_folder(dataset: str, variant: str) -> str:
    return {"celeba": CELEBA_FOLDERS, "lfw": LFW_FOLDERS}[dataset][variant]


def remotes(dataset: str, variant: str) -> list[Remote]:
    """Files to download for a dataset variant, archives last."""
    if dataset == "celeba":
        if variant not in CELEBA_ARCHIVES:
            raise ParamsError(
                f"CelebA '{variant}' images come as a multi-part 7z archive that this suite does not "
                "download; extract img_celeba/ yourself and set data.celeba.root"
            )
        return [CELEBA_IDENTITY, CELEBA_ARCHIVES[variant]]
    return [LFW_PAIRS, LFW_ARCHIVES[variant]]


# --- CelebA identities --------------------------------------------------------------------------


def read_identities(path: Path) -> dict[str, str]:
    """Parse identity_CelebA.txt (`<file> <identity>` per line) into {file: identity}."""
    identities: dict[str, str] = {}
    for number, line in enumerate(_lines(path), start=1):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != 2 or not fields[1].isdigit():
            raise ProtocolFileError(f"{path}:{number}: expected '<file> <identity number>', got {line!r}")
        problem = key_problem(fields[0])
        if problem:
            raise ProtocolFileError(f"{path}:{number}: file name {fields[0]!r}: the key {problem}")
        if fields[0] in identities:
            raise ProtocolFileError(f"{path}:{number}: {fields[0]} is listed twice")
        identities[fields[0]] = fields[1]
    return identities


# --- LFW pairs.txt ------------------------------------------------------------------------------


@dataclass(frozen=True)
class LfwPair:
    fold: int  # 0-based
    same: bool
    first: str  # key of the first image (kept)
    second: str  # key of the second image (the one anonymised)


def lfw_key(name: str, number: int) -> str:
    return f"{name}/{name}_{number:04d}.jpg"


_NAME = re.compile(r"^[^\s/\\]+$")


def parse_pairs(path: Path) -> list[LfwPair]:
    """Strict parser for LFW's pairs.txt: header `<folds> <n>`, then per fold n same and n different lines.

    Every line must name two different photos (a different-person line two different people), and
    no pair may be listed twice (in either order).
    """
    lines = _lines(path)
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise ProtocolFileError(f"{path}: empty file")
    header = lines[0].split()
    if len(header) != 2 or not all(v.isdigit() and int(v) > 0 for v in header):
        raise ProtocolFileError(f"{path}:1: expected header '<folds> <pairs per class>', got {lines[0]!r}")
    folds, per_class = map(int, header)
    expected = 1 + folds * 2 * per_class
    if len(lines) != expected:
        raise ProtocolFileError(
            f"{path}: header {lines[0]!r} promises {expected - 1} pair lines, found {len(lines) - 1}"
        )
    pairs, seen = [], {}
    for number, line in enumerate(lines[1:], start=2):
        fold, position = divmod(number - 2, 2 * per_class)
        same = position < per_class
        fields = line.split("\t") if "\t" in line else line.split()
        want = 3 if same else 4
        kind = "same-person 'name n1 n2'" if same else "different-person 'name1 n1 name2 n2'"
        if len(fields) != want:
            raise ProtocolFileError(f"{path}:{number}: fold {fold + 1} expects a {kind} line here, got {line!r}")
        names = [fields[0]] if same else [fields[0], fields[2]]
        numbers = fields[1:3] if same else [fields[1], fields[3]]
        if not all(_NAME.match(n) for n in names) or not all(n.isdigit() and int(n) > 0 for n in numbers):
            raise ProtocolFileError(f"{path}:{number}: malformed {kind} line {line!r}")
        first = lfw_key(names[0], int(numbers[0]))
        second = lfw_key(names[0] if same else names[1], int(numbers[1]))
        for key in (first, second):
            problem = key_problem(key)
            if problem:
                raise ProtocolFileError(f"{path}:{number}: name {lfw_identity(key)!r} in {line!r}: the key {problem}")
        if same and first == second:
            raise ProtocolFileError(f"{path}:{number}: a same-person pair names one image twice: {line!r}")
        if not same and names[0] == names[1]:
            raise ProtocolFileError(f"{path}:{number}: a different-person pair names one person twice: {line!r}")
        pair = frozenset((first, second))
        if pair in seen:
            raise ProtocolFileError(f"{path}:{number}: repeats the pair of line {seen[pair]}: {line!r}")
        seen[pair] = number
        pairs.append(LfwPair(fold, same, first, second))
    return pairs


def lfw_identity(key: str) -> str:
    return key.split("/", 1)[0]


def list_images(folder: Path, keys: Iterable[str] | None = None,
                suffixes: tuple[str, ...] = (".jpg", ".jpeg", ".png")) -> list[str]:
    """Keys (paths relative to `folder`) of the image files in it with one of `suffixes`, sorted; or `keys`, sorted."""
    if keys is not None:
        return sorted(set(keys))
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                  if p.suffix.lower() in suffixes and p.is_file())
