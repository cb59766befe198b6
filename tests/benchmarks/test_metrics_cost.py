"""Cost of each metric per anonymised image, of the whole suite without Inception, and Inception's throughput.

    pytest tests/benchmarks/test_metrics_cost.py --benchmark-only

The anonymised set is 1,000 LFW pairs' source crops with every pixel value shifted by one
grey level (a random sign each session), so faces stay intact but no feature is cached. The
real sets' features come from .cache/metrics as in any evaluation: they are computed once
per dataset, never per method (run tests/test_metrics_realdata.py first to fill it). FaceNet
and Inception run on random weights of the real architectures (the pretrained files cannot
be fetched here): the cost is the same. Per method, the suite without Inception costs the
dlib/MTCNN metrics together plus two FaceNet passes (one per model).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from metrics import facenet, registry
from metrics.fid import InceptionFeatures
from tests.helpers import METRICS_CACHE

pytestmark = pytest.mark.realdata
IMAGES = 1000


@pytest.fixture(scope="module")
def anonymised(lfw, tmp_path_factory) -> tuple[registry.PairSet, Path]:
    pairs = registry.PairSet(lfw.manifest[lfw.manifest["source"].isin(lfw.prepared.ok.index)].iloc[:IMAGES],
                            lfw.prepared)
    folder = tmp_path_factory.mktemp("anonymised")
    shift = np.random.default_rng().choice([-1, 1], size=(1, 1, 3))
    for pair_id, source in zip(pairs.manifest["pair_id"], pairs.manifest["source"], strict=True):
        crop = pairs.prepared.crop(source).astype(np.int16)
        Image.fromarray(np.clip(crop + shift, 0, 255).astype(np.uint8)).save(folder / f"{pair_id}.png")
    return registry.PairSet(lfw.manifest, lfw.prepared), folder


def fresh_inputs(anonymised, tmp_path: Path) -> registry.MetricInputs:
    """Inputs with a copy of the persistent cache, so the run computes the anonymised features itself."""
    pairs, folder = anonymised
    shutil.rmtree(tmp_path / "cache", ignore_errors=True)
    shutil.copytree(METRICS_CACHE, tmp_path / "cache")
    return registry.MetricInputs(pairs, images=folder, cache=tmp_path / "cache")


#: Options other than the defaults: the pose error by dlib, sharing detection_dlib's HOG pass (FAN's weights,
#: the default's, cannot be fetched here).
OPTIONS = {"pose_error": registry.options("pose_error", detector="dlib")}


def run(names: list[str], anonymised, tmp_path: Path) -> dict:
    inputs = fresh_inputs(anonymised, tmp_path)
    return {name: registry.calc(name, inputs, OPTIONS.get(name)) for name in names}


def record(benchmark, results: dict) -> None:
    benchmark.extra_info.update(images=IMAGES, cores=len(os.sched_getaffinity(0)),
                                ms_per_image=round(1000 * benchmark.stats.stats.mean / IMAGES, 1),
                                metric_seconds={name: r["seconds"] for name, r in results.items()})


DLIB_AND_MTCNN = ["detection_dlib", "pose_error", "detection_mtcnn", "verification_dlib"]


@pytest.mark.parametrize("name", DLIB_AND_MTCNN)
def test_metric_cost_per_image(benchmark, anonymised, tmp_path, name):
    results = benchmark.pedantic(run, args=([name], anonymised, tmp_path), rounds=1)
    assert results[name]["n"] > 0
    record(benchmark, results)


def test_dlib_and_mtcnn_metrics_together(benchmark, anonymised, tmp_path):
    """pose_error and detection_dlib share one HOG pass per image."""
    results = benchmark.pedantic(run, args=(DLIB_AND_MTCNN, anonymised, tmp_path), rounds=1)
    assert all(results[name]["n"] > 0 for name in DLIB_AND_MTCNN)
    record(benchmark, results)


def test_facenet_cost_per_image(benchmark, anonymised, installed):
    """One FaceNet pass (embedding and top-1 class) per image serves a model's re-id and verification."""
    pairs, folder = anonymised
    rows = pairs.manifest[pairs.manifest["pair_id"].isin([int(p.stem) for p in folder.glob("*.png")])]
    landmarks = np.stack([pairs.prepared.landmarks(key) for key in rows["source"]])
    paths = [folder / f"{pair_id}.png" for pair_id in rows["pair_id"]]
    device = registry.MetricInputs(pairs, images=folder).torch_device
    result = benchmark.pedantic(facenet.outputs, args=("casia", paths, landmarks, device, 32), rounds=1)
    assert result.shape == (IMAGES, 513)
    benchmark.extra_info.update(images=IMAGES, ms_per_image=round(1000 * benchmark.stats.stats.mean / IMAGES, 1))


@pytest.mark.parametrize("resize", ["clean", "legacy_pytorch"])
def test_inception_throughput(benchmark, anonymised, installed, resize):
    _, folder = anonymised
    paths = sorted(folder.glob("*.png"))[:64]
    extractor = InceptionFeatures(resize, registry.MetricInputs(anonymised[0], images=folder).torch_device, 32)
    features = benchmark.pedantic(extractor.compute, args=(paths,), rounds=1)
    assert features.shape == (64, 2048)
    benchmark.extra_info.update(images=len(paths), images_per_second=round(len(paths) / benchmark.stats.stats.mean, 2))
