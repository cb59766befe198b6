"""The adaptive (parrot) attacker: its gallery, its thresholds and ranks against scikit-learn, the condition leak.

The metrics' arithmetic is checked on synthetic embeddings (metrics.reid's one embedding entry
point, `_features`, returns known vectors per image file), against scikit-learn's own
cross-validation (PredefinedSplit, LeaveOneGroupOut) and top-k accuracy. The gallery is built by
the anonymise stage itself on small synthetic faces, with the blur baseline and with a test
anonymiser that returns its condition photo.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.metrics import accuracy_score, top_k_accuracy_score
from sklearn.model_selection import LeaveOneGroupOut, PredefinedSplit, cross_val_predict, cross_validate

from baselines import catalogue
from baselines.interface import Anonymiser, create, identity_order, load_batch
from facedata.images import read_rgb
from facedata.prepared import PreparedDataset
from infra.errors import DataError
from infra.records import ANONYMISED, TEST_PAIRS, MetricResult, Results, TestSet, pair_table
from metrics import attacks, registry, reid
from metrics.reid import best_threshold
from pipelines import anonymise, gallery
from pipelines import attacks as report_attacks
from pipelines.config import from_mapping
from pipelines.layout import Layout
from tests.helpers import fake_test_set, params_mapping, write_prepared

FOLDS = 10
SIDE = 16  # synthetic crops: the metrics only check that every image has the crops' size


# --- synthetic data: photos, pairs and the embeddings of every image file ------------------------

def faces(root, people: int, photos: int, rng) -> PreparedDataset:
    """`people` x `photos` random 16x16 faces, keys P<i>/P<i>_<n>.jpg."""
    return PreparedDataset(write_prepared(root, [
        {"key": f"P{i}/P{i}_{n:04d}.jpg", "identity": f"P{i}", "landmarks": rng.uniform(2, 14, (68, 2)),
         "crop": rng.integers(0, 256, (SIDE, SIDE, 3), dtype=np.uint8)}
        for i in range(people) for n in range(1, photos + 1)]))


def lfw_pairs(prepared: PreparedDataset) -> registry.PairSet:
    """Per fold f: people 3f..3f+2, three same-person pairs (photo 1 with 2), three different-person pairs."""
    rows = []
    for fold in range(FOLDS):
        a, b, c = (f"P{3 * fold + k}" for k in range(3))
        for first, second, same in ((a, a, True), (b, b, True), (c, c, True), (a, b, False), (b, c, False),
                                    (c, a, False)):
            rows.append((fold + 1, same, f"{first}/{first}_0001.jpg", f"{second}/{second}_0002.jpg"))
    fold, same, first, source = zip(*rows, strict=True)
    manifest = pair_table(TEST_PAIRS["lfw"], prepared.index, source, first=first, fold=fold, same=same)
    return registry.PairSet(manifest, prepared)


def write_images(folder, pair_ids) -> None:
    folder.mkdir(parents=True)
    for pair_id in pair_ids:
        Image.fromarray(np.zeros((SIDE, SIDE, 3), np.uint8)).save(folder / f"{pair_id}.png")


def write_gallery(folder, pair_set: registry.PairSet, rule: str) -> None:
    """gallery/<pair_id>.png and its manifest inside the anonymised folder."""
    write_images(folder / "gallery", pair_set.manifest["pair_id"])
    ANONYMISED.write(folder / "gallery" / "manifest.csv", pair_set.manifest[["pair_id", "source", "condition"]].assign(
        status="ok", condition_rule=rule))


def embedded(monkeypatch, vectors: dict) -> None:
    """metrics.reid's embeddings are `vectors[<image path>]` (every metric embeds through `_features`)."""
    def features(model, paths, landmarks, inputs):
        return np.array([vectors[str(path)] for path in paths]).reshape(len(paths), -1), None

    monkeypatch.setattr(reid, "_features", features)


@pytest.fixture
def synthetic_lfw(tmp_path, monkeypatch):
    """Synthetic LFW: real embeddings around each person's centre; the method halves them (plus noise).

    Halving keeps who is who but shrinks every distance, so thresholds chosen on real pairs
    (the naive attacker's) are too wide for anonymised pairs and the parrot's must be narrower.
    Returns (inputs, distances the parrot sees, distances the naive attacker sees, real pair distances,
    the embedding of every image path).
    """
    rng = np.random.default_rng(0)
    pair_set = lfw_pairs(faces(tmp_path / "prepared", 3 * FOLDS, 2, rng))
    manifest = pair_set.manifest
    centres = {f"P{i}": rng.normal(size=8) for i in range(3 * FOLDS)}
    real = {key: centres[pair_set.prepared.identity(key)] + 0.5 * rng.normal(size=8)
            for key in pair_set.prepared.ok.index}
    images = tmp_path / "blur"
    write_images(images, manifest["pair_id"])
    write_gallery(images, pair_set, "different")
    vectors = {str(pair_set.crop_path(key)): vector for key, vector in real.items()}
    halved = {}
    for row in manifest.itertuples():
        halved[row.pair_id] = (0.5 * real[row.source] + 0.05 * rng.normal(size=8),
                               0.5 * real[row.first] + 0.05 * rng.normal(size=8))
        vectors[str(images / f"{row.pair_id}.png")] = halved[row.pair_id][0]
        vectors[str(images / "gallery" / f"{row.pair_id}.png")] = halved[row.pair_id][1]
    embedded(monkeypatch, vectors)
    inputs = registry.MetricInputs(pair_set, images=images, cache=tmp_path / "cache")
    parrot = np.array([np.linalg.norm(probe - kept) for probe, kept in halved.values()])
    naive = np.array([np.linalg.norm(halved[row.pair_id][0] - real[row.first]) for row in manifest.itertuples()])
    real_distances = np.array([np.linalg.norm(real[row.source] - real[row.first]) for row in manifest.itertuples()])
    return inputs, parrot, naive, real_distances, vectors


class Threshold(ClassifierMixin, BaseEstimator):
    """A verifier for scikit-learn: same person iff the distance (the one feature) is under the fitted threshold."""

    def fit(self, X, y):
        self.classes_ = np.array([False, True])
        self.threshold_ = best_threshold(X[:, 0], y)
        return self

    def predict(self, X):
        return X[:, 0] < self.threshold_


def per_fold(values: np.ndarray, folds: np.ndarray) -> dict:
    return {int(fold): pytest.approx(float(rate)) for fold, rate in pd.Series(values).groupby(folds).mean().items()}


# --- LFW: the parrot's thresholds -----------------------------------------------------------------

def test_parrot_thresholds_are_scikit_learns_cross_validation_on_anonymised_pairs(synthetic_lfw):
    inputs, parrot, naive, real_distances, _ = synthetic_lfw
    manifest = inputs.pairs.manifest
    same, folds = manifest["same"].to_numpy(), manifest["fold"].to_numpy()
    result = registry.calc("verification_dlib_parrot", inputs)
    assert result["n"] == 6 * FOLDS and result["n_same"] == 3 * FOLDS and result["condition_rule"] == "different"

    # Each fold is judged by a threshold fitted on the other nine folds' *anonymised* pairs.
    split = PredefinedSplit(folds - 1)
    fitted = cross_validate(Threshold(), parrot[:, None], same, cv=split, scoring="accuracy", return_estimator=True)
    assert result["thresholds"] == {fold: pytest.approx(estimator.threshold_)
                                    for fold, estimator in zip(range(1, FOLDS + 1), fitted["estimator"], strict=True)}
    scores = zip(range(1, FOLDS + 1), fitted["test_score"], strict=True)
    assert result["accuracy_per_fold"] == {fold: pytest.approx(score) for fold, score in scores}
    accepted = cross_val_predict(Threshold(), parrot[:, None], same, cv=split)
    assert result["per_fold"] == per_fold(accepted[same], folds[same])
    assert result["value"] == pytest.approx(pd.Series(accepted[same]).groupby(folds[same]).mean().mean())
    assert result["std"] == pytest.approx(pd.Series(accepted[same]).groupby(folds[same]).mean().std(ddof=1))
    assert result["interval"]["low"] <= accepted[same].mean() <= result["interval"]["high"]

    # The fitted threshold is the best cut of the training folds: no midpoint between their distances does better.
    for train, test in LeaveOneGroupOut().split(parrot[:, None], same, groups=folds):
        fold = int(folds[test][0])
        ordered = np.sort(parrot[train])
        cuts = np.concatenate([[ordered[0] - 1], (ordered[1:] + ordered[:-1]) / 2, [ordered[-1] + 1]])
        best = max(accuracy_score(same[train], parrot[train] < cut) for cut in cuts)
        assert accuracy_score(same[train], parrot[train] < result["thresholds"][fold]) == best

    # The naive attacker on the same pairs: the real first photo, thresholds fitted on the real pairs.
    naive_accepted, naive_thresholds = np.zeros(len(same), bool), {}
    for fold, (train, test) in enumerate(split.split(), start=1):
        naive_thresholds[fold] = Threshold().fit(real_distances[train, None], same[train]).threshold_
        naive_accepted[test] = naive[test] < naive_thresholds[fold]
    assert result["naive"]["thresholds"] == {fold: pytest.approx(value) for fold, value in naive_thresholds.items()}
    assert result["naive"]["per_fold"] == per_fold(naive_accepted[same], folds[same])
    assert result["naive"]["accuracy_per_fold"] == per_fold(naive_accepted == same, folds)
    # Halved embeddings: real thresholds are too wide for anonymised pairs, so the parrot's are narrower.
    assert max(result["thresholds"].values()) < min(naive_thresholds.values())
    assert result["accuracy"] > result["naive"]["accuracy"]

    per_pair = result["per_pair"]
    assert list(per_pair.columns) == ["pair_id", "verification_dlib_parrot"]
    assert per_pair["pair_id"].tolist() == manifest.loc[same, "pair_id"].tolist()
    assert per_pair["verification_dlib_parrot"].tolist() == accepted[same].tolist()


def test_a_missing_gallery_says_how_to_build_it(synthetic_lfw):
    inputs = synthetic_lfw[0]
    inputs = dataclasses.replace(inputs, images=inputs.images / "gallery", _selection={})  # a folder without one
    with pytest.raises(DataError, match="no parrot gallery.*dvc repro anonymise@"):
        registry.calc("verification_dlib_parrot", inputs)


# --- CelebA: identification and the condition leak -------------------------------------------------

@pytest.fixture
def synthetic_celeba(tmp_path, monkeypatch, synthetic_lfw):
    """6 people x 4 photos; each person's anonymised photos sit near its condition identity's point (the
    protocol gives all of a person's photos one condition identity); the gallery is the same photos
    anonymised with other identities' conditions: far from that point. Calibration: the synthetic LFW."""
    rng = np.random.default_rng(1)
    prepared = faces(tmp_path / "celeba", 6, 4, rng)
    keys = sorted(prepared.ok.index)
    manifest = pair_table(TEST_PAIRS["celeba"], prepared.index, keys)
    pair_set = registry.PairSet(manifest, prepared)
    images = tmp_path / "ciagan"
    write_images(images, manifest["pair_id"])
    write_gallery(images, pair_set, "different")
    conditions = {f"P{i}": 3 * rng.normal(size=8) for i in range(6)}
    real = {key: 3 * rng.normal(size=8) for key in keys}
    vectors = {str(pair_set.crop_path(key)): vector for key, vector in real.items()}
    embeddings = {"probe": [], "gallery": []}
    for pair_id, key in zip(manifest["pair_id"], manifest["source"], strict=True):
        probe = conditions[prepared.identity(key)] + 0.05 * rng.normal(size=8) + 0.05 * real[key]
        other = 10 * rng.normal(size=8)
        vectors[str(images / f"{pair_id}.png")], vectors[str(images / "gallery" / f"{pair_id}.png")] = probe, other
        embeddings["probe"].append(probe)
        embeddings["gallery"].append(other)
    vectors.update(synthetic_lfw[4])  # the calibration's real photos
    embedded(monkeypatch, vectors)
    inputs = registry.MetricInputs(pair_set, images=images, cache=tmp_path / "cache",
                                   calibration=synthetic_lfw[0].pairs)
    return inputs, {name: np.array(value) for name, value in embeddings.items()}, real, vectors


def top_k(probes: np.ndarray, probe_keys, gallery_features: np.ndarray, gallery_keys, identity, k: int) -> float:
    """scikit-learn's top-k accuracy, each identity scored by minus the distance of its nearest other photo."""
    labels = sorted(set(identity.values()))
    scores = np.full((len(probes), len(labels)), -np.inf)
    for i, (probe, key) in enumerate(zip(probes, probe_keys, strict=True)):
        for features, gallery_key in zip(gallery_features, gallery_keys, strict=True):
            if gallery_key != key:
                column = labels.index(identity[gallery_key])
                scores[i, column] = max(scores[i, column], -np.linalg.norm(probe - features))
    return top_k_accuracy_score([identity[key] for key in probe_keys], scores, k=k, labels=labels)


def test_parrot_identification_ranks_are_scikit_learns_top_k_accuracy(synthetic_celeba):
    inputs, embeddings, real, _ = synthetic_celeba
    keys = list(inputs.pairs.manifest["source"])
    identity = {key: inputs.pairs.prepared.identity(key) for key in keys}
    result = registry.calc("verification_dlib_parrot", inputs)
    real_features = np.array([real[key] for key in keys])
    for k, name in ((1, "value"), (5, "rank5")):
        assert result[name] == pytest.approx(top_k(embeddings["probe"], keys, embeddings["gallery"], keys, identity, k))
    for k in (1, 5):
        assert result[f"naive_rank{k}"] == pytest.approx(
            top_k(embeddings["probe"], keys, real_features, keys, identity, k))
        assert result[f"real_rank{k}"] == pytest.approx(top_k(real_features, keys, real_features, keys, identity, k))
    assert result["n"] == 24 and result["n_identities"] == 6 and result["n_gallery"] == 24
    probe_ranks = attacks.ranks(embeddings["probe"], keys, embeddings["gallery"], keys, pd.Series(identity))
    assert np.array_equal(attacks.ranks(embeddings["probe"], keys, embeddings["gallery"], keys, pd.Series(identity),
                                        chunk=5), probe_ranks)  # in chunks of probes, as on CelebA's 11,000
    assert result["per_pair"]["verification_dlib_parrot"].mean() == pytest.approx(result["value"])


def test_one_condition_per_person_leaks_and_a_gallery_of_the_same_images_does_not(synthetic_celeba):
    inputs, _, _, vectors = synthetic_celeba
    leak = registry.calc("condition_leak", inputs)
    # Same-condition photos of a person sit together (linked), other-condition ones far apart (never linked).
    assert leak["same_rate"] == 1.0 and leak["different_rate"] == 0.0 and leak["value"] == 1.0
    assert leak["p"] < 0.01 and leak["test"] == "paired permutation" and leak["n"] == 24
    assert leak["same_distance"] < leak["threshold"] < leak["different_distance"]
    # A method without a condition (blur): the gallery holds the same images, nothing to tell apart.
    for pair_id in inputs.pairs.manifest["pair_id"]:
        vectors[str(inputs.images / "gallery" / f"{pair_id}.png")] = vectors[str(inputs.images / f"{pair_id}.png")]
    same_images = registry.calc("condition_leak", dataclasses.replace(inputs, _selection={}))
    assert same_images["value"] == 0.0 and same_images["p"] == 1.0


def test_the_condition_leak_says_why_it_is_not_computed(synthetic_celeba, synthetic_lfw):
    inputs = synthetic_celeba[0]
    on_lfw = registry.calc("condition_leak", synthetic_lfw[0])
    assert on_lfw["value"] is None and on_lfw["skipped"] == {"LFW: no person has two photos anonymised": 60}
    write_images(inputs.images / "same", inputs.pairs.manifest["pair_id"])
    write_gallery(inputs.images / "same", inputs.pairs, "same")
    same = registry.calc("condition_leak", dataclasses.replace(inputs, images=inputs.images / "same", _selection={}))
    reason = "gallery anonymised with the probes' conditions (anonymise.gallery_condition: same)"
    assert same["value"] is None and same["skipped"] == {reason: 24}


# --- the gallery, built by the anonymise stage ----------------------------------------------------

class Echo(Anonymiser):
    """Returns each face's condition photo, and records what it was told (context and identity labels)."""

    built: list = []
    labels: list = []

    @classmethod
    def from_config(cls, settings, context):
        cls.built.append(context)
        return cls()

    def anonymise(self, batch):
        type(self).labels.extend(batch.source_identity)
        return batch.condition.copy()


def stage_layout(root, rng) -> tuple[Layout, pd.DataFrame]:
    """An LFW test set of 5 people x 2 photos with face masks: 6 pairs, each conditioned on a third person."""
    layout = Layout(root)
    mask = np.zeros((64, 52), bool)
    mask[16:48, 12:40] = True
    prepared = PreparedDataset(write_prepared(layout.prepared("lfw"), [
        {"key": f"P{i}/P{i}_{n:04d}.jpg", "identity": f"P{i}", "landmarks": rng.uniform(10, 40, (68, 2)),
         "crop": rng.integers(0, 256, (64, 52, 3), dtype=np.uint8), "mask": mask}
        for i in range(5) for n in (1, 2)]))
    rows = [(True, "P0", "P0", "P2"), (True, "P1", "P1", "P3"), (False, "P0", "P1", "P4"),
            (False, "P2", "P3", "P0"), (True, "P4", "P4", "P1"), (False, "P3", "P4", "P2")]
    same, first, second, condition = zip(*rows, strict=True)
    manifest = pair_table(TEST_PAIRS["lfw"], prepared.index, [f"{p}/{p}_0002.jpg" for p in second],
                          [f"{p}/{p}_0001.jpg" for p in condition], first=[f"{p}/{p}_0001.jpg" for p in first],
                          fold=[1] * 6, same=list(same))
    layout.pairs.mkdir(parents=True)
    TEST_PAIRS["lfw"].write(layout.test_pairs("lfw"), manifest)
    return layout, manifest


def stage_params(rule: str, metrics: list[str], echo: bool = False):
    """params.yaml with the gallery's rule and metrics, and (echo) a method `echo` of the Echo anonymiser."""
    mapping = params_mapping()
    mapping["anonymise"]["gallery_condition"] = rule
    mapping["evaluate"]["metrics"] = metrics
    if echo:
        mapping["methods"]["echo"] = {"anonymiser": "echo", "code": "tests/test_attacks.py",
                                      "depends": "tests/test_attacks.py", "params": "anonymise"}
    return from_mapping(mapping)


@pytest.mark.parametrize("rule", ["same", "different"])
def test_the_gallery_is_anonymised_by_the_same_method_under_the_condition_rule(rule, tmp_path, monkeypatch):
    monkeypatch.setitem(catalogue.ANONYMISERS, "echo", catalogue.Entry("tests.test_attacks:Echo",
                                                                        "tests/test_attacks.py"))
    monkeypatch.setattr(Echo, "built", [])
    monkeypatch.setattr(Echo, "labels", [])
    layout, manifest = stage_layout(tmp_path, np.random.default_rng(2))
    params = stage_params(rule, ["detection_dlib", "verification_dlib_parrot"], echo=True)
    faces = PreparedDataset(layout.prepared("lfw"))

    # Blur: the gallery holds each pair's *first* photo blurred exactly as the method blurs.
    anonymise.run_dataset(params, layout, "blur", "lfw")
    folder = layout.outputs("lfw", "blur") / gallery.GALLERY
    written = ANONYMISED.read(folder / "manifest.csv")
    assert (written["status"] == "ok").all() and (written["condition_rule"] == rule).all()
    assert written["source"].tolist() == manifest["first"].tolist()
    blurred = create("blur", params.anonymiser_settings("blur")).anonymise(
        load_batch(manifest.assign(source=manifest["first"]), faces, faces))
    for pair_id, expected in zip(manifest["pair_id"], blurred, strict=True):
        assert np.array_equal(read_rgb(folder / f"{pair_id}.png"), expected)
        assert not np.array_equal(read_rgb(folder / f"{pair_id}.png"), faces.crop(manifest.at[pair_id, "first"]))

    # A conditioned method: the probe's condition and identity ("same"), or another person's ("different").
    anonymise.run_dataset(params, layout, "echo", "lfw")
    folder = layout.outputs("lfw", "echo") / gallery.GALLERY
    written = ANONYMISED.read(folder / "manifest.csv")
    for row in written.itertuples():
        assert np.array_equal(read_rgb(folder / f"{row.pair_id}.png"), faces.crop(row.condition))
    probe_run, gallery_run = Echo.built
    assert gallery_run.dataset == "lfw/gallery" and probe_run.identities == identity_order(manifest)
    assert Echo.labels[len(manifest):] == manifest["source_identity"].tolist()  # the gallery's labels: the probes'
    if rule == "same":
        assert written["condition"].tolist() == manifest["condition"].tolist()
        assert gallery_run.identities == probe_run.identities
    else:
        people = [{row.first_identity, row.source_identity, row.condition_identity} for row in manifest.itertuples()]
        assert all(faces.identity(key) not in excluded for key, excluded in zip(written["condition"], people,
                                                                                 strict=True))
        assert gallery_run.identities == (gallery.SHIFT, *probe_run.identities)  # CIAGAN: the next identity's target


def test_no_gallery_without_a_metric_that_reads_it(tmp_path):
    layout, _ = stage_layout(tmp_path, np.random.default_rng(3))
    anonymise.run_dataset(stage_params("different", ["detection_dlib"]), layout, "blur", "lfw")
    assert (layout.outputs("lfw", "blur") / "manifest.csv").is_file()
    assert not (layout.outputs("lfw", "blur") / gallery.GALLERY).exists()


# --- the report's attacks tables and figure -------------------------------------------------------

def recorded(result: dict, path) -> MetricResult:
    """A calc result as the evaluate stage records it (per-pair values apart) and the report reads it back."""
    record = Results(TestSet(result["n"], 0), {result["metric"]: MetricResult.of(
        {key: value for key, value in result.items() if key != "per_pair"})})
    record.write(path)
    return Results.read(path).metrics[result["metric"]]


def test_the_attacks_tables_put_naive_beside_parrot_and_the_figure_is_drawn(synthetic_lfw, synthetic_celeba,
                                                                          tmp_path):
    lfw_result = registry.calc("verification_dlib_parrot", synthetic_lfw[0])
    celeba_result = registry.calc("verification_dlib_parrot", synthetic_celeba[0])
    leak = registry.calc("condition_leak", synthetic_celeba[0])
    all_results = {
        "lfw": {"blur": Results(TestSet(60, 0),
                                {"verification_dlib_parrot": recorded(lfw_result, tmp_path / "l.json")}),
                "pixelate": Results(TestSet(60, 0))},  # no parrot metric: no row
        "celeba": {"ciagan": Results(TestSet(24, 0), {
            "verification_dlib_parrot": recorded(celeba_result, tmp_path / "c.json"),
            "condition_leak": recorded(leak, tmp_path / "k.json")})}}
    (tmp_path / "reports" / "figures").mkdir(parents=True)
    tables = report_attacks.run(tmp_path / "reports", all_results)
    lfw_row = pd.read_csv(tmp_path / "reports" / "attacks_lfw.csv").set_index("method").loc["blur"]
    assert list(tables["lfw"]["method"]) == ["blur"] and lfw_row["embedder"] == "dlib"
    assert lfw_row["parrot_acceptance"] == pytest.approx(lfw_result["value"])
    assert lfw_row["naive_acceptance"] == pytest.approx(lfw_result["naive"]["value"])
    assert lfw_row["parrot_accuracy_std"] == pytest.approx(lfw_result["accuracy_std"])
    celeba_row = tables["celeba"].set_index("method").loc["ciagan"]
    assert celeba_row["parrot_rank5"] == pytest.approx(celeba_result["rank5"])
    assert celeba_row["naive_rank1"] == pytest.approx(celeba_result["naive_rank1"])
    assert celeba_row["leak"] == 1.0 and celeba_row["leak_p"] == pytest.approx(leak["p"])
    markdown = (tmp_path / "reports" / "attacks_lfw.md").read_text()
    cell = f"{100 * lfw_result['value']:.1f}% ± {100 * lfw_result['std']:.1f}"
    assert next(line for line in markdown.splitlines() if line.startswith("| blur | dlib |")).split(" | ")[3] == cell
    assert "| ciagan | dlib |" in (tmp_path / "reports" / "attacks_celeba.md").read_text()
    with Image.open(tmp_path / "reports" / "figures" / "attacks.png") as figure:
        assert figure.format == "PNG" and min(figure.size) > 100


def test_a_gallery_photo_without_another_person_to_condition_on_is_skipped_with_the_reason(tmp_path):
    layout = Layout(tmp_path)
    fake_test_set(layout, "lfw")  # two people: the pair's own, no third one
    anonymise.run_dataset(stage_params("different", ["verification_dlib_parrot"]), layout, "original", "lfw")
    folder = layout.outputs("lfw", "original") / gallery.GALLERY
    written = ANONYMISED.read(folder / "manifest.csv")
    assert written["status"].tolist() == [f"skipped: {gallery.NO_OTHER_PERSON}"]
    assert not (folder / "0.png").exists() and (layout.outputs("lfw", "original") / "0.png").is_file()
