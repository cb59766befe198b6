"""Metrics: registry, numerics, weights resolution and the FID/FaceNet code paths on synthetic data.

Pretrained weights are not reachable here: the tests write randomly initialised state dicts
of the right shapes, register them with their own digests and load them through the same
code (and a 127.0.0.1 HTTP server), so every path but the real numbers is exercised.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.linalg
from PIL import Image

import metrics
from facedata.errors import ParamsError
from facedata.fetch import ChecksumError
from facedata.prepared import PreparedDataset
from metrics import weights
from metrics.fid import clean_resize, frechet_distance, kernel_inception_distance, statistics
from metrics.pose import normalised_l1
from metrics.reid import best_threshold, cross_validate
from tests.helpers import params_mapping, register_file, write_prepared

REQUIRED = ["detection_dlib", "detection_mtcnn", "fid", "kid", "pose_error", "reid_facenet_casia",
            "reid_facenet_vggface2", "verification_dlib", "verification_facenet_casia",
            "verification_facenet_vggface2"]


# --- synthetic data ---------------------------------------------------------------------------

def anonymised_folder(folder: Path, pairs: metrics.PairSet, images: dict[int, np.ndarray] | None = None) -> Path:
    """`<pair_id>.png` per manifest row: the given images, else a copy of the source crop."""
    folder.mkdir(parents=True, exist_ok=True)
    for pair_id, source in zip(pairs.manifest["pair_id"], pairs.manifest["source"], strict=True):
        rgb = images[pair_id] if images is not None else pairs.prepared.crop(source)
        Image.fromarray(rgb).save(folder / f"{pair_id}.png")
    return folder


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> metrics.PairSet:
    """An LFW-shaped set: 4 people x 3 photos, 2 folds of 2 same- and 2 different-person pairs.

    Every pair has its own source photo, so copies of the sources are the real set itself.
    """
    rng = np.random.default_rng(1)
    people = [f"P{i}" for i in range(4)]
    keys = {f"{p}/{p}_{n:04d}.jpg": p for p in people for n in (1, 2, 3)}
    images = {key: rng.integers(0, 256, size=(220, 180, 3), dtype=np.uint8) for key in keys}
    rng = np.random.default_rng(0)
    faces = [{"key": key, "identity": keys[key], "crop": rgb,
              "landmarks": rng.uniform([40, 60], [140, 180], size=(68, 2))} for key, rgb in images.items()]
    prepared = PreparedDataset(write_prepared(tmp_path_factory.mktemp("prepared"), faces))
    rows = [(1, True, "P0/P0_0001.jpg", "P0/P0_0002.jpg"), (1, True, "P1/P1_0001.jpg", "P1/P1_0003.jpg"),
            (1, False, "P2/P2_0001.jpg", "P3/P3_0002.jpg"), (1, False, "P0/P0_0003.jpg", "P1/P1_0002.jpg"),
            (2, True, "P2/P2_0002.jpg", "P2/P2_0003.jpg"), (2, True, "P3/P3_0001.jpg", "P3/P3_0003.jpg"),
            (2, False, "P1/P1_0001.jpg", "P2/P2_0001.jpg"), (2, False, "P3/P3_0001.jpg", "P0/P0_0001.jpg")]
    manifest = pd.DataFrame(rows, columns=["fold", "same", "first", "source"])
    manifest.insert(0, "pair_id", range(len(manifest)))
    manifest["source_identity"] = [keys[k] for k in manifest["source"]]
    return metrics.PairSet(manifest, prepared)


# --- registry ---------------------------------------------------------------------------------

def test_registry_lists_every_required_metric():
    assert metrics.available() == REQUIRED


def test_calc_rejects_unknown_metric_and_option(synthetic, tmp_path):
    inputs = metrics.MetricInputs(synthetic, images=tmp_path)
    with pytest.raises(KeyError, match="unknown metric 'fld'"):
        metrics.calc("fld", inputs)
    with pytest.raises(ParamsError, match="metrics.fid.resise is not a setting; metrics.fid has resize"):
        metrics.calc("fid", inputs, resize="clean", resise="clean")
    with pytest.raises(ParamsError, match=r"metrics.detection_mtcnn.threshold must be in \[0.0, 1.0\]; got 7"):
        metrics.calc("detection_mtcnn", inputs, threshold=7)


def test_evaluable_counts_missing_images_and_rejects_wrong_sizes(synthetic, tmp_path):
    folder = anonymised_folder(tmp_path / "anon", synthetic)
    (folder / "3.png").unlink()
    rows, skipped = metrics.MetricInputs(synthetic, images=folder).evaluable()
    assert 3 not in set(rows["pair_id"]) and len(rows) == 7
    assert skipped == {"no anonymised image": 1}
    Image.fromarray(np.zeros((100, 100, 3), np.uint8)).save(folder / "5.png")
    with pytest.raises(ValueError, match=r"5\.png: image is 100x100 \(WxH\), expected 180x220"):
        metrics.MetricInputs(synthetic, images=folder).evaluable()


# --- FID / KID numerics -----------------------------------------------------------------------

def _reference_frechet(mu1, sigma1, mu2, sigma2) -> float:
    """The textbook formula with a general matrix square root, independent of frechet_distance."""
    covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(sigma1 + sigma2 - 2 * covmean.real))


def test_frechet_distance_matches_independent_float64_computation():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(500, 32)), rng.normal(0.3, 1.5, size=(400, 32)) @ rng.normal(size=(32, 32))
    expected = _reference_frechet(*statistics(a), *statistics(b))
    assert frechet_distance(*statistics(a), *statistics(b)) == pytest.approx(expected, rel=1e-9)
    assert expected > 1.0


def test_frechet_distance_of_identical_sets_is_zero_even_when_rank_deficient():
    features = np.random.default_rng(0).normal(size=(40, 256)).astype(np.float32)  # fewer images than dims
    mu, sigma = statistics(features)
    assert abs(frechet_distance(mu, sigma, mu, sigma)) < 1e-6


def test_clean_resize_is_pil_bicubic_on_float_without_requantisation():
    rgb = np.random.default_rng(0).integers(0, 256, size=(220, 180, 3), dtype=np.uint8)
    resized = clean_resize(rgb)
    assert resized.shape == (299, 299, 3) and resized.dtype == np.float32
    for channel in range(3):
        plane = Image.fromarray(rgb[:, :, channel].astype(np.float32), mode="F")
        expected = np.clip(np.asarray(plane.resize((299, 299), Image.Resampling.BICUBIC)), 0, 255)
        np.testing.assert_array_equal(resized[:, :, channel], expected)
    # On a smooth image (no overshoot to clip) the float result is the uint8 one before rounding.
    ramp = np.broadcast_to(np.linspace(0, 255, 180)[None, :, None], (220, 180, 3)).astype(np.uint8)
    quantised = np.asarray(Image.fromarray(ramp).resize((299, 299), Image.Resampling.BICUBIC), np.float32)
    smooth = clean_resize(ramp)
    assert np.abs(smooth - quantised).max() <= 1.0
    assert np.any(smooth != np.round(smooth))  # fractional values survive: no re-quantisation


def test_kid_is_near_zero_for_one_distribution_and_adapts_to_small_sets():
    rng = np.random.default_rng(0)
    real, same, shifted = rng.normal(size=(300, 64)), rng.normal(size=(300, 64)), rng.normal(1.0, 1.0, (300, 64))
    unchanged, _, size = kernel_inception_distance(real, same, subsets=20, subset_size=100, seed=0)
    different, _, _ = kernel_inception_distance(real, shifted, subsets=20, subset_size=100, seed=0)
    assert size == 100 and abs(unchanged) < 0.02 < different
    mean, std, size = kernel_inception_distance(real, shifted[:7], subsets=5, subset_size=1000, seed=3)
    assert size == 7 and std > 0
    assert kernel_inception_distance(real, shifted[:7], subsets=5, subset_size=1000, seed=3)[0] == mean
    with pytest.raises(ValueError, match="at least 2 images"):
        kernel_inception_distance(real, shifted[:1], subsets=5, subset_size=10, seed=0)


def test_features_are_cached_by_content_and_order(tmp_path):
    from metrics.store import cached_features, content_digest

    images = [tmp_path / f"{i}.png" for i in range(3)]
    for i, path in enumerate(images):
        Image.fromarray(np.full((4, 4, 3), i, np.uint8)).save(path)
    calls = []

    def extract(paths):
        calls.append(len(paths))
        return np.arange(len(paths), dtype=np.float32)[:, None]

    def features(paths):
        return cached_features(tmp_path / "cache", "test", [content_digest(p) for p in paths], lambda: extract(paths))

    assert features(images).ravel().tolist() == [0, 1, 2] and calls == [3]
    assert features(images).ravel().tolist() == [0, 1, 2] and calls == [3]  # served from disk
    features(images[::-1])
    Image.fromarray(np.full((4, 4, 3), 9, np.uint8)).save(images[1])  # one changed byte is a new set
    features(images)
    assert calls == [3, 3, 3]


# --- pose and verification numerics ----------------------------------------------------------

def test_pose_error_of_a_known_translation():
    reference = np.random.default_rng(0).uniform(0, 180, size=(1, 68, 2))
    reference[0, 36], reference[0, 45] = (50.0, 90.0), (130.0, 90.0)  # outer eye corners 80 px apart
    assert normalised_l1(reference, reference)[0] == 0.0
    assert normalised_l1(reference + (4.0, -2.0), reference)[0] == pytest.approx((4.0 + 2.0) / 2 / 80.0)


def test_best_threshold_and_cross_validation():
    distances = np.array([0.1, 0.2, 0.3, 0.7, 0.8, 0.35, 0.9, 0.25])
    same = np.array([True, True, True, False, False, False, False, True])
    assert 0.3 < best_threshold(distances, same) < 0.35
    folds = np.array([1, 1, 1, 1, 2, 2, 2, 2])
    thresholds, accuracies = cross_validate(distances, same, folds)
    # Fold 1 is judged by fold 2's cut (0.25 | 0.35 -> 0.30) and vice versa (0.3 | 0.7 -> 0.5),
    # so each misjudges exactly one of its pairs.
    assert thresholds == pytest.approx({1: 0.30, 2: 0.5}) and accuracies == {1: 0.75, 2: 0.75}
    noisy = np.array([0.1, 0.5, 0.3, 0.2])
    assert best_threshold(noisy, np.array([True, False, False, True])) == pytest.approx(0.25)


# --- pretrained weights -----------------------------------------------------------------------

def test_real_weight_digests_carry_torch_hub_prefix_and_full_length():
    inception = weights.PRETRAINED["inception"]
    assert inception.filename.rsplit("-", 1)[1].removesuffix(".pth") == inception.sha256[:8]
    assert all(len(spec.sha256) == 64 and int(spec.sha256, 16) >= 0 for spec in weights.PRETRAINED.values())


def test_weights_download_from_local_server_verify_and_reuse(hub, server, monkeypatch):
    folder, base = server
    (folder / "net.pt").write_bytes(b"pretend weights" * 1000)
    register_file(monkeypatch, "facenet_casia", folder / "net.pt", f"{base}/net.pt")
    path = weights.resolve("facenet_casia", retries=0)
    assert path == hub / "net.pt" and path.read_bytes() == (folder / "net.pt").read_bytes()
    (folder / "net.pt").unlink()  # the verified copy is reused without the network
    assert weights.resolve("facenet_casia", retries=0) == path


def test_weights_with_a_wrong_hash_are_an_error_and_never_kept(hub, server, monkeypatch):
    folder, base = server
    (folder / "net.pt").write_bytes(b"tampered")
    spec = weights.PretrainedFile("net.pt", f"{base}/net.pt", "0" * 64, 8)
    monkeypatch.setitem(weights.PRETRAINED, "facenet_vggface2", spec)
    with pytest.raises(ChecksumError, match="net.pt.*sha256 is .*expected 0000"):
        weights.resolve("facenet_vggface2", retries=0)
    assert not (hub / "net.pt").exists() and not (hub / "net.pt.part").exists()
    hub.mkdir(parents=True, exist_ok=True)
    (hub / "net.pt").write_bytes(b"tampered")
    with pytest.raises(ChecksumError, match=f"{hub / 'net.pt'} does not have the SHA-256"):
        weights.resolve("facenet_vggface2", retries=0)
    assert (hub / "net.pt").read_bytes() == b"tampered"  # a user's file is never overwritten


def test_missing_weights_offline_name_file_url_and_place(hub, monkeypatch):
    spec = weights.PRETRAINED["inception"]
    with pytest.raises(weights.WeightsUnavailableError) as error:
        weights.resolve("inception", download=False)
    message = str(error.value)
    assert spec.filename in message and spec.url in message and str(hub / spec.filename) in message
    unreachable = weights.PretrainedFile(spec.filename, "http://127.0.0.1:9/none.pth", spec.sha256, spec.size)
    monkeypatch.setitem(weights.PRETRAINED, "inception", unreachable)
    with pytest.raises(weights.WeightsUnavailableError, match="could not be downloaded"):
        weights.resolve("inception", retries=0)


# --- FID and FaceNet through random-weight files ----------------------------------------------

@pytest.mark.slow
def test_fid_and_kid_through_pytorch_fid_inception(installed, synthetic, tmp_path):
    copies = metrics.MetricInputs(synthetic, images=anonymised_folder(tmp_path / "same", synthetic),
                                  cache=tmp_path / "cache", batch_size=4)
    result = metrics.calc("fid", copies)
    assert abs(result["value"]) < 1e-6 and result["n"] == 8 and result["n_real"] == 8
    assert result["n_skipped"] == 0 and result["seconds"] > 0
    cached = sorted((tmp_path / "cache").glob("inception-*-clean/*.npy"))
    assert len(cached) == 2  # real set (sorted keys) and anonymised set (pair order)
    noise = {i: np.full((220, 180, 3), 30 * i, np.uint8) for i in range(8)}
    flat = metrics.MetricInputs(synthetic, images=anonymised_folder(tmp_path / "flat", synthetic, noise),
                                cache=tmp_path / "cache", batch_size=4)
    legacy = metrics.calc("fid", flat, resize="legacy_pytorch")
    assert legacy["value"] > 1e-3 and legacy["options"]["resize"] == "legacy_pytorch"
    kid = metrics.calc("kid", flat, subsets=10)
    assert kid["subset_size"] == 8 and kid["value"] > 0
    # The real set's features were computed once: only the new anonymised set was added.
    assert len(list((tmp_path / "cache").glob("inception-*-clean/*.npy"))) == 3


def test_facenet_weights_with_wrong_digest_are_refused(installed, synthetic, tmp_path, monkeypatch):
    spec = weights.PRETRAINED["facenet_casia"]
    monkeypatch.setitem(weights.PRETRAINED, "facenet_casia",
                        weights.PretrainedFile(spec.filename, spec.url, "f" * 64, spec.size))
    inputs = metrics.MetricInputs(synthetic, images=anonymised_folder(tmp_path / "a", synthetic), cache=tmp_path)
    with pytest.raises(ChecksumError, match="20180408-102900-casia-webface.pt"):
        metrics.calc("reid_facenet_casia", inputs)


@pytest.mark.slow
def test_facenet_reid_protocols_through_random_weights(installed, synthetic, tmp_path):
    copies = metrics.MetricInputs(synthetic, images=anonymised_folder(tmp_path / "same", synthetic),
                                  cache=tmp_path / "cache", batch_size=4)
    paper = metrics.calc("reid_facenet_casia", copies)
    assert paper["value"] == 1.0 and paper["std"] == 0.0 and set(paper["per_fold"]) == {1, 2}
    against_first = metrics.calc("reid_facenet_vggface2", copies, reference="first")
    assert against_first["n"] == 8 and 0.0 <= against_first["value"] <= 1.0
    verified = metrics.calc("verification_facenet_casia", copies)
    assert verified["value"] == verified["real_rate"]  # unmodified images verify exactly as the real ones
    assert verified["n"] == 4 and verified["skipped"] == {"different-person pair": 4}
    assert verified["n_calibration_pairs"] == 8 and set(verified["thresholds"]) == {1, 2}


def test_params_yaml_metrics_section_holds_the_code_defaults():
    for name, values in params_mapping()["metrics"].items():
        assert set(values) <= set(metrics.options(name)), name
        assert all(metrics.options(name)[key] == value for key, value in values.items()), name  # defaults agree
