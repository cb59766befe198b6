"""Stage `download-released@<method>`: the authors' released weights of `released.<method>`, fetched and checked.

`model: anonygan` is the AnonyGAN authors' PyTorch Lightning checkpoint, `model: ciagan` CIAGAN's
released generator. Both come from the authors' Google Drive links into models/<method>/ the way
the datasets come (confirmation page, resume, retries, atomic). The file is read without running
its pickled code and loaded into this project's networks (AnonyGAN: the variant read from its
keys, refused when `released.<method>.landmarks` or `landmark_attention` ask for another); then
models/<method>/status.json records what it holds.

No checksum is published: the SHA-256 of the first download is printed and recorded in
status.json, and a later download or a changed file must match it (or the digest pinned in
`released.<method>.sha256`). A file placed by hand at models/<method>/<file name> is used as is.

Offline, or when Google Drive refuses the download, the stage still succeeds: status.json says
the method is not available and why, and its anonymise, evaluate and report stages show it so.
Once online: `dvc repro --force download-released@<method>`, then `dvc repro`.

    python -m pipelines.download_released <method>
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from anonygan import released as anonygan_released
from baselines.ciagan import released as ciagan_released
from infra.fetch import ChecksumError, DownloadError, Remote, fetch, file_digest
from infra.records import STATUS, ReleaseStatus
from infra.weight_files import CheckpointError
from pipelines import stage
from pipelines.config import Params, ReleasedConfig
from pipelines.layout import Layout


def inspect_anonygan(path: Path, settings: ReleasedConfig) -> dict[str, Any]:
    loaded = anonygan_released.load(path, settings.landmarks, settings.landmark_attention)
    variant = loaded.variant
    return {"landmarks": variant.landmarks, "landmark_attention": variant.landmark_attention,
            "variant": variant.describe(), "evidence": list(variant.evidence), "notes": list(loaded.notes)}


def inspect_ciagan(path: Path, settings: ReleasedConfig) -> dict[str, Any]:
    _, notes = ciagan_released.load(path)
    return {"notes": list(notes)}


#: Per `released.<method>.model`: the file and how to check what it holds (raises a DataError if it cannot be used).
RELEASES: dict[str, tuple[Remote, Callable[[Path, ReleasedConfig], dict[str, Any]]]] = {
    "anonygan": (anonygan_released.RELEASED, inspect_anonygan),
    "ciagan": (ciagan_released.RELEASED, inspect_ciagan),
}


def run(params: Params, layout: Layout, method: str) -> ReleaseStatus:
    settings = params.release(method)
    remote, inspect = RELEASES[settings.model]
    folder = layout.released(method)
    target = folder / remote.filename
    previous = ReleaseStatus.read(folder)
    recorded = previous.sha256 if previous else None
    expected = (settings.sha256 or recorded or "").lower() or None
    origin = (f"pinned in released.{method}.sha256" if settings.sha256
              else f"recorded at the first download in {folder / STATUS}")
    release = ReleaseStatus(method, settings.model, remote.filename, remote.url, available=False)
    if not target.is_file():
        try:
            fetch(dataclasses.replace(remote, checksum=expected and f"sha256:{expected}"), folder,
                  retries=params.download.retries, timeout=params.download.timeout_s)
        except ChecksumError as error:
            raise ChecksumError(f"{error} The expected digest is the one {origin}.") from None
        except DownloadError as error:
            return not_available(folder, target, dataclasses.replace(release, sha256=recorded), error)
    digest = file_digest(target, "sha256")
    if expected is not None and digest != expected:
        raise ChecksumError(f"{target} has SHA-256 {digest}, not {expected} ({origin}): the file changed. Delete it "
                            f"to download it again, or pin the digest you trust in released.{method}.sha256")
    try:
        contents = inspect(target, settings)
    except CheckpointError as error:
        raise CheckpointError(f"{error}. Delete it to download it again") from None
    status = dataclasses.replace(release, available=True, bytes=target.stat().st_size, sha256=digest,
                                 sha256_pinned=bool(settings.sha256), details=contents)
    status.write(folder)
    checked = f"matches the digest {origin}" if expected else f"first check of this file: recorded in {STATUS}"
    print(f"{method}: {target}, {status.bytes:,} bytes, SHA-256 {digest} ({checked})")
    for line in contents.get("evidence", []) + contents["notes"]:
        print(f"  {line}")
    if "variant" in contents:
        print(f"  variant: {contents['variant']}")
    return status


def not_available(folder: Path, target: Path, release: ReleaseStatus, error: DownloadError) -> ReleaseStatus:
    """Record (and print) that the file could not be fetched; the method's later stages report it."""
    status = dataclasses.replace(release, available=False, reason=str(error))
    status.write(folder)
    print(f"{status.method}: not available: {error}\n  Its rows will say so. Place the file by hand at {target}, "
          f"or once online run `dvc repro --force download-released@{status.method}`, then `dvc repro`.")
    return status


def main(argv: list[str] | None = None, layout: Layout = Layout()) -> None:
    stage.main(run, "download-released", __doc__, item="method", argv=argv, layout=layout)


if __name__ == "__main__":
    main()
