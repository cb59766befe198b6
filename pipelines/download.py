"""Stage `download@<dataset>`: fetch and verify a dataset, or verify a local copy in place.

Writes data/raw/<dataset>/source.json, which tells later stages where the images and
protocol files are. With data.<dataset>.root set, nothing is downloaded or copied. CelebA's
identity list (CIAGAN's legit_indices.npy, data.celeba.identity_list: ciagan) is fetched into
data/raw/celeba/ and verified, unless data.celeba.identity_list_file names a local copy.

    python -m pipelines.download celeba|lfw
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from facedata import datasets, protocol
from infra.atomic import write_bytes, write_json
from infra.errors import MissingInputError
from infra.fetch import DownloadConfig, DownloadError, Remote, extract, fetch, file_digest, matches, staging_folder
from pipelines import stage
from pipelines.config import Params
from pipelines.layout import Layout

#: The folder of data/raw/<dataset>/ that holds the downloaded files.
DOWNLOADS = "archives"


class LayoutError(MissingInputError):
    """A local copy of a dataset is not laid out as the official archives extract."""


def verify_local(dataset: str, root: Path, variant: str) -> dict:
    """Check a dataset folder's layout and count its files; raises LayoutError naming what is missing."""
    if not root.is_dir():
        raise LayoutError(f"data.{dataset}.root = {root} is not a folder")
    folder = root / datasets.image_folder(dataset, variant)
    if not folder.is_dir():
        present = ", ".join(sorted(p.name for p in root.iterdir() if p.is_dir())) or "nothing"
        raise LayoutError(f"{dataset} ({variant}) expects the images in {folder}; {root} holds {present}")
    images = datasets.list_images(folder)
    report = {
        "dataset": dataset,
        "variant": variant,
        "root": str(root.resolve()),
        "images_dir": str(folder.resolve()),
        "n_images": len(images),
        "listing_sha1": hashlib.sha1("\n".join(images).encode()).hexdigest(),
    }
    present = set(images)
    if dataset == "celeba":
        identity_file = root / datasets.CELEBA_IDENTITY.filename
        if not identity_file.is_file():
            raise LayoutError(f"CelebA expects {identity_file}")
        identities = datasets.read_identities(identity_file)
        report.update(
            identity_file=str(identity_file.resolve()),
            n_listed=len(identities),
            n_listed_missing=sum(1 for f in identities if f not in present),
            n_identities=len(set(identities.values())),
            identity_file_official=matches(identity_file, datasets.CELEBA_IDENTITY.checksum),
        )
    else:
        pairs_file = root / datasets.LFW_PAIRS.filename
        if not pairs_file.is_file():
            raise LayoutError(f"LFW expects {pairs_file}")
        pairs = datasets.parse_pairs(pairs_file)
        named = {key for pair in pairs for key in (pair.first, pair.second)}
        report.update(
            pairs_file=str(pairs_file.resolve()),
            n_pairs=len(pairs),
            n_pair_images=len(named),
            n_pair_images_missing=len(named - present),
            pairs_file_official=matches(pairs_file, datasets.LFW_PAIRS.checksum),
        )
    return report


def _fetch(remote: Remote, directory: Path, settings: DownloadConfig, local_key: str) -> Path:
    try:
        return fetch(remote, directory, retries=settings.retries, timeout=settings.timeout_s)
    except DownloadError as error:
        raise type(error)(f"{str(error).rstrip('.')}. If you have it on disk, set {local_key} instead") from None


def identity_list(settings: datasets.CelebaData, out: Path, layout: Layout, download: DownloadConfig) -> dict:
    """Where CelebA's protocol list is (a local copy, or CIAGAN's file fetched into `out`), checked."""
    if settings.identity_list == "derived":
        return {"identity_list": "derived", "identity_list_file": None}
    if settings.identity_list_file:
        path = layout.path(settings.identity_list_file)
        if not path.is_file():
            raise LayoutError(f"data.celeba.identity_list_file = {path} is not a file")
    else:
        path = _fetch(datasets.CIAGAN_IDENTITY_LIST, out, download, "data.celeba.identity_list_file")
    return {
        "identity_list": "ciagan",
        "identity_list_file": str(path.resolve()),
        "n_identity_list": len(protocol.read_identity_list(path)),
        "identity_list_sha256": file_digest(path, "sha256"),
        "identity_list_official": matches(path, datasets.CIAGAN_IDENTITY_LIST.checksum),
    }


def download(dataset: str, variant: str, layout: Layout, settings: DownloadConfig) -> Path:
    """Fetch the official files into data/raw/<dataset> and extract the archives; returns that folder.

    Archives may not hold top-level entries named like what the stage keeps beside them (the
    downloads folder, the protocol files, source.json).
    """
    out = layout.raw(dataset)
    remotes = datasets.remotes(dataset, variant)
    protected = {DOWNLOADS, layout.source(dataset).name, datasets.CIAGAN_IDENTITY_LIST.filename,
                 *(remote.filename for remote in remotes)}
    for remote in remotes:
        path = _fetch(remote, out / DOWNLOADS, settings, f"data.{dataset}.root")
        if remote.filename.endswith((".zip", ".tgz", ".tar")):
            marker = out / f".{remote.filename}.extracted"
            if not marker.exists() or marker.read_text() != remote.checksum:
                print(f"extracting {remote.filename}")
                extract(path, out, protected)
                marker.write_text(remote.checksum)
        else:
            write_bytes(out / remote.filename, path.read_bytes())
    return out


def run(params: Params, layout: Layout, dataset: str) -> dict:
    settings = getattr(params.data, dataset)
    out = layout.raw(dataset)
    layout.remove(staging_folder(out))  # left by a killed extraction
    out.mkdir(parents=True, exist_ok=True)
    if settings.root:
        root = layout.path(settings.root)
        print(f"{dataset}: verifying the local copy at {root} (nothing is downloaded or copied)")
    else:
        root = download(dataset, settings.variant, layout, params.download)
    report = verify_local(dataset, root, settings.variant)
    report["local_copy"] = bool(settings.root)
    if dataset == "celeba":
        report.update(identity_list(settings, out, layout, params.download))
    write_json(layout.source(dataset), report)
    for name, value in sorted(report.items()):
        if name.startswith("n_") or name.endswith("_official"):
            print(f"  {name}: {value}")
    return report


def main(argv: list[str] | None = None, layout: Layout = Layout()) -> None:
    stage.main(run, "download", __doc__, item="dataset", choices=datasets.DATASETS, argv=argv, layout=layout)


if __name__ == "__main__":
    main()
