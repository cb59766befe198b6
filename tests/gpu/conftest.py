"""The gpu lane: CUDA against CPU. Every test here is marked `gpu` and skips without CUDA (CI has none):
the skip is this folder's hook, so tests marked `gpu` belong here.

Run it with `python -m pytest -m gpu` on a CUDA machine, or through `scripts/gpu-acceptance.sh` on the
device machine. The real faces are the carried ones (`python -m acceptance.carry`, or ANONYGAN_GPU_FACES).
"""

from __future__ import annotations

import os

import pytest
import torch

from acceptance.faces import FACES_VARIABLE, faces_root, pair_data
from tests.gpu import steps

# cuBLAS reproduces its results only with a fixed workspace; it reads this when CUDA starts, before any test.
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("gpu") and not torch.cuda.is_available():
        pytest.skip("needs a CUDA device (the gpu lane runs on a GPU machine: scripts/gpu-acceptance.sh)")


@pytest.fixture
def cuda() -> torch.device:
    return torch.device("cuda")


@pytest.fixture
def exact_fp32():
    with steps.exact_fp32():
        yield


@pytest.fixture(scope="session")
def faces():
    root = faces_root()
    if not (root / "pairs.csv").is_file():
        pytest.skip(f"no carried faces at {root}: run `python -m acceptance.carry` (or set {FACES_VARIABLE})")
    return root


@pytest.fixture(scope="session")
def pairs(faces):
    return pair_data(faces)
