"""The records stages hand each other: each one round-trips, and a malformed one is one line naming file and field."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest

from infra.errors import DataError
from infra.records import (
    ANONYMISED,
    PAIR_RESULTS,
    STATUS,
    TEST_PAIRS,
    TRAIN_PAIRS,
    AnonymiseSummary,
    MetricError,
    MetricResult,
    ReleaseStatus,
    Results,
    TestSet,
    pair_table,
)
from pipelines import anonymise, report
from pipelines.layout import Layout
from tests.helpers import REPO

#: A prepared index: three photos of two people, one of them not prepared.
INDEX = pd.DataFrame({"key": ["a/1.jpg", "a/2.jpg", "NA/1.jpg"], "identity": ["a", "a", "NA"],
                      "status": ["ok", "no_face", "ok"]})


def celeba_test_pairs() -> pd.DataFrame:
    return pair_table(TEST_PAIRS["celeba"], INDEX, ["a/1.jpg", "a/2.jpg"], ["NA/1.jpg", "NA/1.jpg"])


def lfw_test_pairs() -> pd.DataFrame:
    return pair_table(TEST_PAIRS["lfw"], INDEX, ["a/2.jpg", "NA/1.jpg"], ["NA/1.jpg", "a/1.jpg"],
                      first=["a/1.jpg", "gone.jpg"], first_identity=["a", "gone"], fold=[1, 2], same=[True, False])


def results() -> Results:
    fid = MetricResult("fid", 41.5, n=2, n_skipped=1, skipped={"no anonymised image": 1}, options={"resize": "clean"},
                       seconds=1.25, details={"n_real": 3, "weights": {"sha256": "ab"}})
    pose = MetricResult("pose_error", None, n=0, n_skipped=1, skipped={"no anonymised image": 1}, options={},
                        seconds=0.5, details={"n_failed": 2})
    return Results(TestSet(3, 1, {"no anonymised image": 1}),
                   {"fid": fid, "pose_error": pose, "kid": MetricError("kid", "weights missing: put them at ...")})


# --- the builder and round trips ---------------------------------------------------------------------


def test_the_pair_builder_numbers_pairs_and_looks_up_identities_and_statuses():
    celeba = celeba_test_pairs()
    assert list(celeba.columns) == list(TEST_PAIRS["celeba"].columns)
    assert list(celeba["pair_id"]) == [0, 1] and list(celeba["fold"]) == [1, 1]
    assert list(celeba["source_identity"]) == ["a", "a"] and list(celeba["condition_identity"]) == ["NA", "NA"]
    assert list(celeba["source_status"]) == ["ok", "no_face"]
    lfw = lfw_test_pairs()
    assert list(lfw["first_status"]) == ["ok", "missing"] and list(lfw["same"]) == [True, False]
    train = pair_table(TRAIN_PAIRS, INDEX, ["a/1.jpg"], same_image=[True])
    assert train.loc[0, "condition"] == "a/1.jpg"  # the source itself unless told
    with pytest.raises(DataError, match="column 'condition_identity' .* must hold text"):
        pair_table(TRAIN_PAIRS, INDEX, ["a/1.jpg"], ["unknown.jpg"], same_image=[False])


@pytest.mark.parametrize("table, frame", [
    (TEST_PAIRS["celeba"], celeba_test_pairs()),
    (TEST_PAIRS["lfw"], lfw_test_pairs()),
    (TRAIN_PAIRS, pair_table(TRAIN_PAIRS, INDEX, ["a/1.jpg", "a/2.jpg"], ["a/1.jpg", "a/1.jpg"],
                             same_image=[True, False])),
    (ANONYMISED, celeba_test_pairs()[["pair_id", "source", "condition"]].assign(status=["ok", "skipped: no_face"])),
    (PAIR_RESULTS, pd.DataFrame({"pair_id": [0, 1], "pose_error": [0.25, float("nan")]})),
], ids=["celeba-test", "lfw-test", "celeba-train", "anonymised", "pair-results"])
def test_tables_round_trip(table, frame, tmp_path):
    table.write(tmp_path / "table.csv", frame)
    pd.testing.assert_frame_equal(table.read(tmp_path / "table.csv"), frame)


@pytest.mark.parametrize("record", [
    AnonymiseSummary("lfw", "blur", pairs=3, anonymised=2, skipped=1, seconds=0.5),
    AnonymiseSummary("lfw", "ciagan-released", pairs=3, anonymised=0, skipped=3, seconds=0.1,
                     not_available="the authors' weights are not available: offline"),
    results(),
    Results(TestSet(3, 3, {"method not available": 3}), not_available="offline"),
], ids=["summary", "summary-not-available", "results", "results-not-available"])
def test_json_records_round_trip(record, tmp_path):
    record.write(tmp_path / "record.json")
    assert type(record).read(tmp_path / "record.json") == record


def test_results_keep_each_metric_a_top_level_key_for_dvc(tmp_path):
    results().write(tmp_path / "blur.json")
    data = json.loads((tmp_path / "blur.json").read_text())
    assert data["fid"]["value"] == 41.5 and data["fid"]["n_real"] == 3 and data["test_set"]["pairs"] == 3
    assert data["pose_error"]["value"] is None and data["kid"] == {"metric": "kid", "error": "weights missing: "
                                                                                           "put them at ..."}


def test_a_metric_result_records_nan_as_none_like_its_file():
    result = MetricResult.of({"metric": "pose_error", "value": float("nan"), "n": 0, "n_skipped": 0, "skipped": {},
                              "options": {}, "seconds": 0.1, "n_failed": 2})
    assert result.value is None and result.details == {"n_failed": 2}


@pytest.mark.parametrize("status", [
    ReleaseStatus("ciagan-released", "ciagan", "modelG.pth", "https://drive/x", available=True, sha256="ab" * 32,
                  sha256_pinned=False, bytes=1000, details={"notes": ["ignored D_gan2.*"]}),
    ReleaseStatus("ciagan-released", "ciagan", "modelG.pth", "https://drive/x", available=False,
                  reason="failed after 6 attempts"),
], ids=["available", "not-available"])
def test_the_release_status_round_trips(status, tmp_path):
    assert ReleaseStatus.read(tmp_path) is None  # before download-released's first run
    status.write(tmp_path)
    assert ReleaseStatus.read(tmp_path) == status


# --- malformed records: one line naming the file and the field ---------------------------------------


@pytest.mark.parametrize("change, message", [
    (lambda frame: frame.drop(columns="first_status"), "has no column 'first_status'"),
    (lambda frame: frame.assign(pair_id=["0", "x"]), "column 'pair_id' .* must hold integer values"),
    (lambda frame: frame.assign(same=["yes", "no"]), "column 'same' .* must hold true/false values"),
    (lambda frame: frame.assign(pair_id=[4, 4]), "column 'pair_id' of the LFW test pairs table repeats 4"),
    (lambda frame: frame.assign(source=["a/2.jpg", None]), "column 'source' .* must hold text values"),
], ids=["missing-column", "pair-id-not-integer", "same-not-boolean", "duplicate-pair-id", "empty-key"])
def test_a_malformed_table_names_file_and_column(tmp_path, change, message):
    path = tmp_path / "lfw_test.csv"
    change(lfw_test_pairs()).to_csv(path, index=False)
    with pytest.raises(DataError, match=message) as error:
        TEST_PAIRS["lfw"].read(path)
    assert str(error.value).startswith(f"{path}: ") and "\n" not in str(error.value)


def test_an_unreadable_table_names_the_file(tmp_path):
    path = tmp_path / "manifest.csv"
    path.write_bytes(b"pair_id,source\n0,\xff\xfe\n")
    with pytest.raises(DataError, match="not a readable CSV anonymise manifest table") as error:
        ANONYMISED.read(path)
    assert str(error.value).startswith(f"{path}: ") and "\n" not in str(error.value)


def results_data() -> dict:
    return {"test_set": {"pairs": 3, "n_skipped": 1, "skipped": {}},
            "fid": {"metric": "fid", "value": 41.5, "n": 2, "n_skipped": 1, "skipped": {}, "options": {},
                    "seconds": 1.0}}


@pytest.mark.parametrize("record, text, message", [
    (Results, "{not json", "not valid JSON"),
    (Results, "[1, 2]", "must hold a JSON object, not list"),
    (Results, {"fid": results_data()["fid"]}, "field test_set is missing"),
    (Results, {**results_data(), "fid": {**results_data()["fid"], "n": "2"}}, "field fid.n must be an integer"),
    (Results, {**results_data(), "test_set": {"pairs": 3}}, "field test_set.n_skipped is missing"),
    (Results, {**results_data(), "not_available": "offline"}, "field not_available must be an object"),
    (Results, {**results_data(), "fid": {"metric": "fid", "value": 41.5}}, "field fid.n is missing"),
    (AnonymiseSummary, {"dataset": "lfw", "method": "blur", "pairs": 3, "anonymised": 3, "skipped": 0},
     "field seconds is missing"),
    (AnonymiseSummary, {"dataset": "lfw", "method": "blur", "pairs": 3, "anonymised": 3, "skipped": 0,
                        "seconds": 1, "colour": "red"}, "field colour is unknown; the fields are dataset, method"),
    (ReleaseStatus, {"method": "m", "model": "ciagan", "file": "f", "url": "u", "available": "yes"},
     "field available must be true or false"),
], ids=["not-json", "not-an-object", "no-test-set", "wrong-type", "no-count", "reason-not-object",
        "metric-without-n", "summary-without-seconds", "unknown-field", "status-available-not-boolean"])
def test_a_malformed_json_record_names_file_and_field(tmp_path, record, text, message):
    path = tmp_path / STATUS
    path.write_text(text if isinstance(text, str) else json.dumps(text))
    with pytest.raises(DataError, match=message) as error:
        record.read(tmp_path if record is ReleaseStatus else path)
    assert str(error.value).startswith(f"{path}: ") and "\n" not in str(error.value)


# --- through the stages -----------------------------------------------------------------------------


@pytest.fixture
def repository(tmp_path) -> Layout:
    """A layout with the project's params.yaml and the paper's numbers, nothing computed."""
    layout = Layout(tmp_path)
    layout.reports.mkdir()
    shutil.copy(REPO / "params.yaml", layout.params_file)
    shutil.copy(REPO / "reports" / "paper_numbers.yaml", layout.paper_numbers)
    return layout


def test_report_stops_at_a_results_file_without_a_field(repository, capsys):
    path = repository.results("lfw", "blur")
    path.parent.mkdir(parents=True)
    data = results_data()
    del data["fid"]["seconds"]
    path.write_text(json.dumps(data))
    with pytest.raises(SystemExit) as stopped:
        report.main([], layout=repository)
    assert stopped.value.code == 2
    assert capsys.readouterr().err == f"report: {path}: field fid.seconds is missing\n"
    assert not (repository.reports / "table2.csv").exists()


def test_anonymise_stops_at_a_pair_manifest_without_a_column(repository, capsys):
    path = repository.test_pairs("celeba")
    path.parent.mkdir(parents=True)
    celeba_test_pairs().drop(columns="condition").to_csv(path, index=False)
    with pytest.raises(SystemExit) as stopped:
        anonymise.main(["original"], layout=repository)
    assert stopped.value.code == 2
    line = capsys.readouterr().err
    assert line.startswith(f"anonymise@original: {path}: the CelebA test pairs table has no column 'condition'")
    assert line.count("\n") == 1 and not repository.outputs("celeba", "original").exists()
