"""Prepare `.gpu-carry/`, the folder a device `run` call carries: wheels, 64 real prepared LFW faces and the
key layout of the authors' released AnonyGAN checkpoint.

    python -m acceptance.carry          # needs PyPI (pip download) and ../shared/data/lfw (dlib landmarks)

The device machine reaches no network and holds torch, torchvision, numpy, pandas, scipy, scikit-learn,
opencv, pillow, pyarrow, pyyaml, requests, tqdm and pytest, but none of this project's other dependencies.
The run needs three of them, all pure Python and small: facenet-pytorch (MTCNN with its bundled weights,
InceptionResnetV1), pytorch-fid (the FID Inception architecture) and ruamel.yaml (imported by the tests'
helpers). dlib, DVC, DVCLive and the pretrained Inception/FaceNet files stay behind: the lane prepares no
photos, runs no pipeline, and compares CPU with CUDA on the real architectures with seeded random weights.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd

from acceptance.faces import CARRY, RELEASED_LAYOUT, REPO
from facedata import datasets
from facedata.prepare_engine import prepare_photos
from facedata.prepared import PreparedDataset
from pipelines import config

WHEELS = CARRY / "wheels"
FACES = CARRY / "faces"
SHARED_LFW = REPO.parent / "shared" / "data" / "lfw"
#: The exact key layout of the AnonyGAN authors' released checkpoint (names, shapes, order; 223 kB).
SHARED_LAYOUT = REPO.parent / "shared" / "reference" / "released-checkpoints" / RELEASED_LAYOUT.name
#: Exact versions: pyproject's pins (facenet-pytorch) and the releases the CPU suite runs with.
REQUIREMENTS = ("facenet-pytorch==2.5.3", "pytorch-fid==0.3.0", "ruamel.yaml==0.19.1")
#: The packages of the device image (KINDS.md's list) that the run imports: with the wheels, all it has.
DEVICE_IMAGE_PACKAGES = ("torch", "torchvision", "numpy", "pandas", "scipy", "scikit-learn", "opencv-python-headless",
                         "pillow", "pyarrow", "pyyaml", "requests", "statsmodels", "tqdm", "pytest", "pytest-benchmark")
#: The device image's Python (KINDS.md): pip matches wheels for it, not for the Python here.
DEVICE_PYTHON = "3.12"
FACE_COUNT = 64


def download_wheels(folder: Path = WHEELS) -> list[Path]:
    """The wheels of REQUIREMENTS for the device's Python, without their dependencies (the image has those)."""
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                    "--python-version", DEVICE_PYTHON, "--implementation", "cp", "--platform",
                    "manylinux_2_28_x86_64", "--platform", "manylinux2014_x86_64", "-d", str(folder),
                    *REQUIREMENTS], check=True)
    return sorted(folder.glob("*.whl"))


def lfw_keys(pairs_file: Path, count: int) -> dict[str, str]:
    """{key: identity} of the photos of LFW's first same-person pairs: `count` photos, two per person."""
    wanted: dict[str, str] = {}
    for pair in datasets.parse_pairs(pairs_file):
        if pair.same and len(wanted) < count:
            wanted.update({key: datasets.lfw_identity(key) for key in (pair.first, pair.second)})
    return dict(list(wanted.items())[:count])


def training_pairs(prepared: PreparedDataset) -> pd.DataFrame:
    """Each face with itself (same image) and with the other photo of its person: the manifest PairData reads."""
    index = prepared.ok
    rows = []
    for _, faces in index.groupby("identity"):
        keys = list(faces["key"])
        rows += [(key, key, True) for key in keys]
        rows += [(key, keys[(i + 1) % len(keys)], False) for i, key in enumerate(keys) if len(keys) > 1]
    frame = pd.DataFrame(rows, columns=["source", "condition", "same_image"])
    frame["source_identity"] = frame["source"].map(index["identity"])
    frame["condition_identity"] = frame["condition"].map(index["identity"])
    frame.insert(0, "pair_id", range(len(frame)))
    return frame


def prepare_faces(lfw_root: Path = SHARED_LFW, out: Path = FACES / "lfw", count: int = FACE_COUNT) -> Path:
    """`count` real LFW photos prepared as the `prepare` stage does (params.yaml's settings), plus pairs.csv."""
    params = config.load(REPO / "params.yaml")
    images = lfw_root / datasets.LFW_FOLDERS[params.data.lfw.variant]
    prepare_photos(params.prepare, images, out, lfw_keys(lfw_root / "pairs.txt", count), "lfw",
                   params.prepare.workers or os.cpu_count() or 1)
    training_pairs(PreparedDataset(out)).to_csv(out / "pairs.csv", index=False)
    # The journal and summary are the prepare engine's bookkeeping; the run reads only crops, masks and the index.
    shutil.rmtree(out / "journal", ignore_errors=True)
    return out


def copy_released_layout(source: Path = SHARED_LAYOUT) -> Path:
    RELEASED_LAYOUT.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, RELEASED_LAYOUT)
    return RELEASED_LAYOUT


def carried_size(folder: Path = CARRY) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lfw", type=Path, default=SHARED_LFW, help="LFW folder (pairs.txt and the photos)")
    args = parser.parse_args(argv)
    wheels = download_wheels()
    faces = prepare_faces(args.lfw)
    copy_released_layout()
    print(f"{CARRY}: {len(wheels)} wheels, {len(PreparedDataset(faces).ok)} faces, "
          f"{carried_size() / 2**20:.1f} MiB (a device call carries at most 64 MiB)")


if __name__ == "__main__":
    main()
