"""Stage `download@<dataset>`: fetch and verify a dataset, or verify a local copy in place.

Writes data/raw/<dataset>/source.json, which tells later stages where the images and
protocol files are. With data.<dataset>.root set, nothing is downloaded or copied.

    python -m pipelines.download celeba|lfw
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from facedata import datasets
from facedata.atomic import write_bytes, write_json
from facedata.fetch import DownloadError, UnsafeArchiveError, extract, fetch, matches
from pipelines.params import choice, dataset_stage, integer, section

RAW = Path("data/raw")


class LayoutError(FileNotFoundError):
    pass


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


def download(dataset: str, variant: str, out: Path, retries: int, timeout: float) -> Path:
    """Fetch the official files into `out` and extract the archives; returns the dataset root (= out)."""
    for remote in datasets.remotes(dataset, variant):
        try:
            path = fetch(remote, out / "archives", retries=retries, timeout=timeout)
        except DownloadError as error:
            raise DownloadError(f"{error}. If you have {dataset} on disk, set data.{dataset}.root instead") from None
        if remote.filename.endswith((".zip", ".tgz", ".tar")):
            marker = out / f".{remote.filename}.extracted"
            if not marker.exists() or marker.read_text() != remote.checksum:
                print(f"extracting {remote.filename}")
                extract(path, out)
                marker.write_text(remote.checksum)
        else:
            write_bytes(out / remote.filename, path.read_bytes())
    return out


def run(dataset: str, params: dict) -> dict:
    config = section(params, f"data.{dataset}")
    options = section(params, "download")
    variant = config.get("variant")
    choice(
        variant,
        f"data.{dataset}.variant",
        list(datasets.CELEBA_FOLDERS if dataset == "celeba" else datasets.LFW_FOLDERS),
    )
    out = RAW / dataset
    out.mkdir(parents=True, exist_ok=True)
    if config.get("root"):
        root = Path(str(config["root"])).expanduser()
        print(f"{dataset}: verifying the local copy at {root} (nothing is downloaded or copied)")
    else:
        root = download(
            dataset,
            variant,
            out,
            integer(options.get("retries"), "download.retries", 0),
            float(options.get("timeout_s", 60)),
        )
    report = verify_local(dataset, root, variant)
    report["local_copy"] = bool(config.get("root"))
    write_json(out / "source.json", report)
    for name, value in sorted(report.items()):
        if name.startswith("n_") or name.endswith("_official"):
            print(f"  {name}: {value}")
    return report


def main(argv: list[str] | None = None) -> None:
    errors = (LayoutError, DownloadError, UnsafeArchiveError, ValueError)  # ValueError: bad params and protocol files
    dataset_stage("download", run, __doc__, argv, errors=errors)


if __name__ == "__main__":
    main()
