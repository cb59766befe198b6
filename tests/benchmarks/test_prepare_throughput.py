"""Prepare throughput on the real minis, all cores, from scratch (no reused rows).

    pytest tests/benchmarks/test_prepare_throughput.py --benchmark-only
"""

from __future__ import annotations

import os
import shutil

import pytest

from pipelines import download, prepare
from tests.conftest import default_params

pytestmark = pytest.mark.realdata


def run_fresh(tmp_path, dataset: str, root, **data) -> dict:
    params = default_params(**{dataset: root})
    params["data"][dataset].update(data)
    download.RAW = tmp_path / "raw"
    try:
        download.run(dataset, params)
    finally:
        download.RAW = download.Path("data/raw")
    shutil.rmtree(tmp_path / "prepared", ignore_errors=True)
    return prepare.run(dataset, params, raw=tmp_path / "raw", out_root=tmp_path / "prepared")


@pytest.mark.parametrize("variant", ["aligned", "wild"])
def test_prepare_celeba_throughput(benchmark, tmp_path, celeba_aligned_root, celeba_wild_root, variant):
    root = celeba_aligned_root if variant == "aligned" else celeba_wild_root
    summary = benchmark.pedantic(run_fresh, args=(tmp_path, "celeba", root), kwargs={"variant": variant}, rounds=1)
    benchmark.extra_info.update(
        photos=summary["photos"], ok=summary["status"].get("ok", 0), cores=os.cpu_count(),
        images_per_second=round(summary["photos"] / benchmark.stats.stats.mean, 1),
    )


def test_prepare_lfw_throughput(benchmark, tmp_path, lfw_root):
    summary = benchmark.pedantic(run_fresh, args=(tmp_path, "lfw", lfw_root), rounds=1)
    benchmark.extra_info.update(
        photos=summary["photos"], ok=summary["status"].get("ok", 0), cores=os.cpu_count(),
        images_per_second=round(summary["photos"] / benchmark.stats.stats.mean, 1),
    )
