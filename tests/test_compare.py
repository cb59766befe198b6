"""`python -m pipelines.compare` on results written by hand into a DVC repository's workspace.

The real runs (`dvc exp run`, revisions) are compared in tests/test_end_to_end.py; here the
tests choose the per-pair outcomes and features, so each number in the table can be checked
against the library computation it should be.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from statsmodels.stats.contingency_tables import mcnemar

from infra.records import PAIR_RESULTS, MetricResult, Results, TestSet
from metrics.fid import FeatureSets, frechet
from pipelines import compare
from pipelines.layout import Layout
from tests.helpers import REPO

N = 200


@pytest.fixture
def repo(tmp_path) -> Layout:
    """An empty git + DVC repository with the project's params.yaml."""
    for command in (["git", "init", "-q"], [sys.executable, "-m", "dvc", "init", "-q"]):
        subprocess.run(command, cwd=tmp_path, check=True, capture_output=True)
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    return Layout(tmp_path)


def write_side(layout: Layout, method: str, detected: np.ndarray, pose: np.ndarray, features: FeatureSets | None,
               dataset: str = "lfw") -> None:
    def result(metric: str, value: float) -> MetricResult:
        return MetricResult(metric, value, len(detected), 0, {}, {}, 0.1)

    metrics = {"detection_dlib": result("detection_dlib", float(detected.mean())),
               "pose_error": result("pose_error", float(np.nanmean(pose)))}
    if features is not None:
        metrics["fid"] = result("fid", frechet(features.real, features.anonymised))
        features.write(layout.features(dataset, method))
    layout.results(dataset, method).parent.mkdir(parents=True, exist_ok=True)
    Results(TestSet(len(detected), 0), metrics).write(layout.results(dataset, method))
    PAIR_RESULTS.write(layout.pair_results(dataset, method), pd.DataFrame(
        {"pair_id": np.arange(len(detected)), "detection_dlib": detected, "pose_error": pose}))


def rows_by_metric(text: str) -> dict[str, list[str]]:
    cells = [line.strip("|").split("|") for line in text.splitlines() if line.startswith("| ") and "---" not in line]
    return {row[0].strip(): [cell.strip() for cell in row] for row in cells[1:]}


def test_two_methods_of_the_workspace_get_mcnemar_a_paired_pose_test_fid_and_holm(repo, capsys):
    rng = np.random.default_rng(0)
    detected_a = rng.random(N) < 0.5
    detected_b = detected_a & (rng.random(N) < 0.5)  # B finds a face in about half the images A does
    pose_a = rng.gamma(2.0, 0.5, N)
    noise = rng.normal(0.0, 0.01, N // 2)
    pose_b = pose_a + np.concatenate([noise, -noise])  # no difference: B's changes cancel out
    pose_b[[*range(5), *range(N // 2, N // 2 + 5)]] = np.nan  # pairs without B's face are left out of the test
    real = rng.standard_normal((300, 8))
    sets = {"a": rng.standard_normal((N, 8)) + 1.0, "b": rng.standard_normal((N, 8))}
    for method, detected, pose in (("a", detected_a, pose_a), ("b", detected_b, pose_b)):
        write_side(repo, method, detected, pose, FeatureSets(real, sets[method], np.arange(N), "weights clean"))

    text = compare.main(["workspace:a", "workspace:b", "--dataset", "lfw"], layout=repo)
    assert text in capsys.readouterr().out
    rows = rows_by_metric(text)
    table = [[int(np.sum(detected_a & detected_b)), int(np.sum(detected_a & ~detected_b))],
             [int(np.sum(~detected_a & detected_b)), int(np.sum(~detected_a & ~detected_b))]]
    detection = rows["detection_dlib"]
    assert detection[1] == str(N) and detection[5] == "McNemar exact"
    assert float(detection[6]) == pytest.approx(mcnemar(table, exact=True).pvalue, rel=1e-2)
    assert detection[8] == "A higher"
    pose = rows["pose_error"]
    assert pose[1] == str(N - 10) and pose[5] == "paired permutation" and pose[8] == "no evidence of a difference"
    fid = rows["fid"]
    assert fid[5] == "paired bootstrap" and fid[8] == "A higher"
    assert float(fid[2]) == pytest.approx(frechet(real, sets["a"]), rel=1e-3)
    holm = sorted(float(row[7]) for row in rows.values())
    raw = sorted(float(row[6]) for row in rows.values())
    assert all(h >= r for h, r in zip(holm, raw, strict=True))  # Holm never lowers a p-value


def test_fid_of_different_pairs_is_compared_on_the_common_ones_and_of_different_real_sets_not_at_all(repo):
    rng = np.random.default_rng(1)
    real = rng.standard_normal((100, 4))
    detected = np.ones(N, bool)
    pose = np.full(N, 0.5)
    write_side(repo, "a", detected, pose, FeatureSets(real, rng.standard_normal((N, 4)), np.arange(N), "w"))
    write_side(repo, "b", detected[:50], pose[:50], FeatureSets(real, rng.standard_normal((50, 4)), np.arange(50), "w"))
    write_side(repo, "c", detected, pose, FeatureSets(real + 1, rng.standard_normal((N, 4)), np.arange(N), "w"))

    fewer = rows_by_metric(compare.run(repo, "workspace:a", "workspace:b", None, ["lfw"]))["fid"]
    assert fewer[1] == "50" and "on the 50 pairs both evaluated (A had 200, B 50)" in fewer[8]
    other_real = rows_by_metric(compare.run(repo, "workspace:a", "workspace:c", None, ["lfw"]))["fid"]
    assert other_real[4] == "-" and "different real sets" in other_real[8]
    same = rows_by_metric(compare.run(repo, "workspace:a", "workspace:a", None, ["lfw"]))["detection_dlib"]
    assert same[4].startswith("+0.00 pp") and same[8] == "no evidence of a difference"


def test_a_side_without_results_or_method_is_one_line(repo, capsys):
    with pytest.raises(SystemExit) as stopped:
        compare.main(["workspace", "workspace:b", "--dataset", "lfw"], layout=repo)
    assert stopped.value.code == 2
    assert "give REV:METHOD, or REV with --method" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        compare.main(["workspace:nothing", "workspace:b", "--dataset", "lfw"], layout=repo)
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "has no results/lfw/nothing.json" in error
