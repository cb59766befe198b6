"""Tables beside the paper's numbers, and applying a parameter profile."""

from __future__ import annotations

import math

import pytest
import yaml

from infra.errors import ParamsError
from infra.records import MetricError, MetricResult, Results, TestSet
from pipelines.config import from_mapping
from pipelines.layout import Layout
from pipelines.profile import apply, overlay
from pipelines.tables import table, to_latex, to_markdown
from tests.helpers import REPO, profile_from

PAPER = yaml.safe_load(Layout(REPO).paper_numbers.read_text())
ROWS = PAPER["rows"]


def result(value, n=100, skipped=0, **details):
    return MetricResult("metric", value, n, skipped, {"no anonymised image": skipped}, {}, 1.0, details)


def evaluated(pairs=100, skipped=0, **metrics) -> Results:
    """The results record of a test set of `pairs` pairs, `skipped` of them without an anonymised image."""
    return Results(TestSet(pairs, skipped, {"no anonymised image": skipped}), metrics)


def test_paper_numbers_file_holds_both_tables_with_every_row():
    assert list(ROWS.values())[0] == "Blurring" and ROWS["anonygan-68"] == "AnonyGAN 68 lm"
    for dataset in ("celeba", "lfw"):
        assert list(PAPER[dataset]) == list(ROWS)
    assert PAPER["celeba"]["anonygan-68"]["fid"] == 22.53 and PAPER["lfw"]["ciagan"]["reid_facenet_casia"] == [
        0.0128,
        0.0032,
    ]


def test_rows_follow_the_paper_order_then_others_with_differences():
    results = {
        "original": evaluated(detection_dlib=result(1.0)),
        "anonygan-68": evaluated(103, 3, fid=result(30.0, skipped=3), detection_dlib=result(0.9, skipped=3),
                                 pose_error=result(0.2, skipped=3, n_failed=7)),
        "blur": evaluated(fid=result(90.0), detection_dlib=result(0.1)),
    }
    frame = table(results, PAPER["celeba"], ROWS, with_std=False)
    assert list(frame["method"]) == ["blur", "anonygan-68", "original"]
    full = frame.set_index("method").loc["anonygan-68"]
    assert full["fid_paper"] == 22.53 and full["fid_diff"] == pytest.approx(30.0 - 22.53)
    assert full["detection_dlib_diff"] == pytest.approx(0.9 - 1.0)
    assert full["n"] == 103 and full["n_skipped"] == 3 and full["pose_failures"] == 7
    assert math.isnan(frame.set_index("method").loc["original", "fid_paper"])


def test_uncomputed_metrics_show_as_dashes_not_numbers():
    results = {"blur": evaluated(fid=MetricError("fid", "pt_inception-2015-12-05-6726825d.pth is not at ..."),
                                 detection_dlib=result(0.05))}
    markdown = to_markdown(table(results, PAPER["lfw"], ROWS, with_std=True), "Table 2")
    row = next(line for line in markdown.splitlines() if line.startswith("| Blurring"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == "- (85.03)"  # FID not computed: ours '-', the paper's kept
    assert cells[2] == "-"  # KID: neither ours nor the paper's
    assert cells[3] == "5.00% (7.00%; -2.00 pp)"


def test_lfw_cells_carry_mean_and_std_only_where_the_paper_does():
    results = {"ciagan": evaluated(reid_facenet_casia=result(0.02, std=0.005), pose_error=result(0.3, std=0.1),
                                   kid=result(0.0123, std=0.004), fid=result(20.0))}
    markdown = to_markdown(table(results, PAPER["lfw"], ROWS, with_std=True), "Table 2")
    assert "2.00% ± 0.50 (1.28% ± 0.32; +0.72 pp)" in markdown
    row = next(line for line in markdown.splitlines() if line.startswith("| CIAGAN"))
    # Pose and KID come without their std; re-id keeps it (ours for casia, the paper's for both).
    assert "| 0.0123 |" in row and "| 0.30 (0.45; -0.15) |" in row and row.count("±") == 3
    celeba = to_markdown(table(results, PAPER["celeba"], ROWS, with_std=False), "Table 1")
    assert "±" not in celeba
    latex = to_latex(table(results, PAPER["lfw"], ROWS, with_std=True), "Table 2")
    assert r"2.00\% $\pm$ 0.50" in latex and latex.count(r"\\") >= 2


def interval(low, high, **more):
    return {"low": low, "high": high, "level": 0.95, "method": "test", **more}


def test_cells_show_our_interval_and_whether_the_papers_value_lies_in_it():
    results = {"blur": evaluated(fid=result(91.35, interval=interval(89.9, 92.8, bootstrap_bias=2.5)),
                                 detection_dlib=result(0.0457, interval=interval(0.0406, 0.0513)),
                                 detection_mtcnn=result(0.17, interval=interval(0.16, 0.18)))}
    frame = table(results, PAPER["lfw"], ROWS, with_std=True)
    row = frame.set_index("method").loc["blur"]
    assert (row["fid_low"], row["fid_high"], row["fid_paper_inside"]) == (89.9, 92.8, False)
    assert row["detection_mtcnn_paper_inside"] and row["fid_bias"] == 2.5 and row["level"] == 0.95
    markdown = to_markdown(frame, "Table 2")
    assert "91.35 [89.90, 92.80] (85.03 out; +6.32)" in markdown
    assert "4.57% [4.06, 5.13%] (7.00% out; -2.43 pp)" in markdown and "17.00% [16.00, 18.00%] (17.00% in;" in markdown
    assert "Cells: ours [95 % interval]" in markdown and "bootstrap estimate here: +2.50 to +2.50" in markdown
    assert "[89.90, 92.80]" in to_latex(frame, "Table 2")
    hidden = to_latex(frame, "Table 2", intervals=False)
    assert "[89.90" not in hidden and " out;" not in hidden and "91.35 (85.03; +6.32)" in hidden


def test_profile_overlay_changes_only_existing_values():
    base = {"a": {"b": 1, "c": [1, 2]}, "d": "x"}
    overlay(base, {"a": {"c": [3]}, "d": "y"})
    assert base == {"a": {"b": 1, "c": [3]}, "d": "y"}
    with pytest.raises(ParamsError, match="profile sets a.typo, which params.yaml does not have"):
        overlay(base, {"a": {"typo": 1}})


def test_small_profile_applies_to_params_and_keeps_comments(tmp_path):
    layout = profile_from(REPO, tmp_path)
    apply("small", layout)
    text = layout.params_file.read_text()
    assert "# Every knob of the pipeline" in text  # comments survive
    applied = yaml.safe_load(text)
    assert applied["data"]["lfw"]["root"] == "../shared/data/lfw"
    assert applied["train"]["epochs"] == 1 and applied["train"]["lr_generator"] == 2.0e-4  # untouched
    assert applied["evaluate"]["metrics"] == ["fid", "kid", "pose_error", "detection_dlib", "detection_mtcnn",
                                              "verification_dlib", "verification_dlib_parrot", "condition_leak"]
    assert applied["metrics"]["pose_error"]["detector"] == "dlib"  # offline, FAN (the default) is not computed
    assert from_mapping(applied).ciagan.model.image_size == 32  # a valid configuration
    with pytest.raises(ParamsError, match="no profile"):
        apply("huge", layout)


def test_n_and_skipped_are_the_test_sets_counts_not_a_metrics():
    results = {"blur": evaluated(200, 2, detection_dlib=result(0.1, n=198, skipped=2),
                                 verification_dlib=result(0.0, n=99, skipped=101))}  # different-person pairs
    row = table(results, PAPER["lfw"], ROWS, with_std=True).iloc[0]
    assert row["n"] == 200 and row["n_skipped"] == 2
    nothing_computed = {"blur": evaluated(200, 2, fid=MetricError("fid", "weights missing"))}
    row = table(nothing_computed, PAPER["lfw"], ROWS, with_std=True).iloc[0]
    assert row["n"] == 200 and row["n_skipped"] == 2


def test_a_method_that_could_not_run_says_not_available_with_the_reason():
    reason = "the authors' weights are not available: modelG.pth: failed after 6 attempts"
    results = {"ciagan": Results(TestSet(30, 30, {"method not available": 30}), not_available=reason),
               "blur": evaluated(detection_dlib=result(0.05))}
    frame = table(results, PAPER["celeba"], ROWS, with_std=False)
    row = frame.set_index("method").loc["ciagan"]
    assert not row["available"] and row["note"] == reason and row["n"] == 30 and row["n_skipped"] == 30
    assert frame.set_index("method").loc["blur", "available"]
    markdown = to_markdown(frame, "Table 1")
    line = next(line for line in markdown.splitlines() if line.startswith("| CIAGAN"))
    assert line.startswith("| CIAGAN | not available (37.94) | not available | not available (96.00%) |")
    assert markdown.rstrip().endswith(f"- Not available: CIAGAN: {reason}")
    assert "not available (37.94)" in to_latex(frame, "Table 1")
