"""Prepare throughput on the real minis, all cores, from scratch (no reused rows), and the cost of a re-run's checks.

    pytest tests/benchmarks/test_prepare_throughput.py --benchmark-only
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from pipelines import config, download, prepare
from pipelines.layout import Layout
from tests.helpers import params_mapping

pytestmark = pytest.mark.realdata


def run_fresh(tmp_path, dataset: str, root, **data) -> dict:
    mapping = params_mapping(**{dataset: root})
    mapping["data"][dataset].update(data)
    params, layout = config.from_mapping(mapping), Layout(tmp_path)
    download.run(params, layout, dataset)
    shutil.rmtree(layout.prepared(dataset), ignore_errors=True)
    return prepare.run(params, layout, dataset)


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


def test_prepare_lfw_rerun_checks_every_row(benchmark, tmp_path, prepared_lfw, lfw_root):
    """A re-run with nothing to do still reads every photo, crop and mask to check their SHA-1s."""
    params, layout = config.from_mapping(params_mapping(lfw=lfw_root)), Layout(tmp_path)
    download.run(params, layout, "lfw")
    shutil.copytree(prepared_lfw, layout.prepared("lfw"), copy_function=os.link)
    summary = benchmark.pedantic(prepare.run, args=(params, layout, "lfw"), rounds=3)
    assert summary["processed"] == 0 and summary["reused"] == 7701
    benchmark.extra_info.update(photos=summary["photos"], bytes_checked=sum(
        p.stat().st_size for p in Path(layout.prepared("lfw")).rglob("*.png")))
