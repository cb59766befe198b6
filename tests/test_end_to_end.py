"""The small profile end to end: `dvc repro` on a fresh copy with the real minis, tiny training on CPU.

The authors' released weights are downloaded (or, offline, reported not available). Then a
third-party method's folder of images is added as one more `methods` entry and appears as an
extra row, without re-running anything else.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from facedata import datasets
from facedata.prepared import PreparedDataset
from infra.records import ANONYMISED, AnonymiseSummary, ReleaseStatus, Results
from metrics import weights
from pipelines.profile import apply
from tests.helpers import PROTOCOL_LIST, dvc, git, repository_copy

pytestmark = [pytest.mark.realdata, pytest.mark.slow]
TRAINED = ["original", "blur", "pixelate", "ciagan", "anonygan-plain-68", "anonygan-plain-29", "anonygan-la-68",
           "anonygan-68"]
#: The authors' released weights: "not available" rows on an offline machine (CI), rows with numbers online.
RELEASED = ["anonygan-released", "ciagan-released"]
METHODS = TRAINED + RELEASED


def set_params(layout, change) -> None:
    params = yaml.safe_load(layout.params_file.read_text())
    change(params)
    layout.params_file.write_text(yaml.safe_dump(params, sort_keys=False))


def lfw_of_the_first_pairs(lfw_root: Path, per_class: int, variant: str, out: Path) -> Path:
    """An LFW folder whose pairs.txt keeps each fold's first `per_class` same and different pairs, with their photos.

    The pairs stage keeps exactly these pairs of the full LFW (`pairs.lfw.pairs_per_class`) and draws
    the same conditions from them, so the run's results are those on the full folder; but DVC then
    hashes ~300 prepared files (157 photos) for each stage that reads prepared LFW instead of 15,404.
    """
    lines = (lfw_root / "pairs.txt").read_text().splitlines()
    folds, per_fold = (int(field) for field in lines[0].split())
    kept = [f"{folds}\t{per_class}"]
    for fold in range(folds):
        start = 1 + 2 * per_fold * fold
        kept += lines[start:start + per_class] + lines[start + per_fold:start + per_fold + per_class]
    (out / "pairs.txt").write_text("\n".join(kept) + "\n")
    folder = datasets.image_folder("lfw", variant)
    for key in {key for pair in datasets.parse_pairs(out / "pairs.txt") for key in (pair.first, pair.second)}:
        (out / folder / key).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(lfw_root / folder / key, out / folder / key)
    return out


@pytest.fixture(scope="module")
def small_run(tmp_path_factory, celeba_aligned_root, lfw_root):
    workdir = repository_copy(tmp_path_factory.mktemp("e2e") / "repo")
    apply("small", workdir)
    params = yaml.safe_load(workdir.params_file.read_text())
    lfw_small = lfw_of_the_first_pairs(lfw_root, params["pairs"]["lfw"]["pairs_per_class"],
                                       params["data"]["lfw"]["variant"], tmp_path_factory.mktemp("lfw-small"))

    def roots(params):  # wherever ../shared/data is on this machine
        params["data"]["celeba"]["root"] = str(celeba_aligned_root)
        params["data"]["celeba"]["identity_list_file"] = str(PROTOCOL_LIST)
        params["data"]["lfw"]["root"] = str(lfw_small)

    set_params(workdir, roots)
    started = time.perf_counter()
    log = dvc(workdir, "repro")
    print(f"small profile: dvc repro took {time.perf_counter() - started:.0f} s")
    return workdir, log


def tables(workdir) -> dict[str, pd.DataFrame]:
    return {dataset: pd.read_csv(workdir.reports / f"table{number}.csv").set_index("method")
            for dataset, number in (("celeba", 1), ("lfw", 2))}


def test_every_stage_ran_and_a_second_repro_does_nothing(small_run):
    workdir, log = small_run
    for method in METHODS:
        assert f"Running stage 'anonymise@{method}'" in log and f"Running stage 'evaluate@{method}'" in log
    for method in RELEASED:
        assert f"Running stage 'download-released@{method}'" in log
    assert "Running stage 'report'" in log and "Running stage 'photo-frame'" in log
    assert "Data and pipelines are up to date" in dvc(workdir, "repro")


def test_tables_have_a_row_per_method_with_values_in_range(small_run):
    workdir, _ = small_run
    for dataset, frame in tables(workdir).items():
        assert sorted(frame.index) == sorted(METHODS), dataset
        assert frame.loc[TRAINED, "available"].all(), dataset
        available = frame[frame["available"]]
        for metric in ("detection_dlib", "detection_mtcnn"):
            assert available[metric].between(0, 1).all(), (dataset, metric)
        assert (frame["pose_error"].dropna() >= 0).all()
        lfw_pairs = 10 * 2 * yaml.safe_load(workdir.params_file.read_text())["pairs"]["lfw"]["pairs_per_class"]
        expected_pairs = 30 if dataset == "celeba" else lfw_pairs  # LFW: same and different pairs of 10 folds
        assert (frame["n"] == expected_pairs).all(), (dataset, frame["n"])
        # The paper's numbers sit beside ours for the paper's rows, and nowhere else.
        assert frame.loc["anonygan-68", "fid_paper"] > 0 and np.isnan(frame.loc["original", "fid_paper"])


def test_originals_are_detected_more_often_than_blurred_faces(small_run):
    workdir, _ = small_run
    for dataset, frame in tables(workdir).items():
        assert frame.loc["original", "detection_dlib"] > frame.loc["blur", "detection_dlib"], dataset
        assert frame.loc["original", "detection_mtcnn"] > frame.loc["blur", "detection_mtcnn"], dataset
        assert frame.loc["original", "detection_dlib"] >= 0.95, dataset


def test_fid_and_kid_are_computed_and_facenet_metrics_absent_not_invented(small_run):
    workdir, _ = small_run
    for dataset, frame in tables(workdir).items():
        assert frame.loc[TRAINED, ["fid", "kid"]].notna().all().all(), dataset
        assert frame.loc["original", "fid"] < frame.loc["blur", "fid"], dataset
        assert frame.loc["original", "kid"] < frame.loc["blur", "kid"], dataset
        assert frame["reid_facenet_casia"].isna().all(), dataset  # FaceNet's weights cannot be fetched here
        fid = Results.read(workdir.results(dataset, "blur")).metrics["fid"]
        inception = {weights.PRETRAINED["inception"].sha256, weights.INCEPTION_WHEEL.sha256}
        assert fid.details["weights"]["sha256"] in inception
    row = next(line for line in (workdir.reports / "table1.md").read_text().splitlines()
               if line.startswith("| Blurring"))
    assert "(95.13 " in row and "| - (0.07%) |" in row  # our FID beside the paper's; re-id not computed


def test_every_value_has_its_interval_and_the_tables_say_where_the_paper_lies(small_run):
    workdir, _ = small_run
    for dataset, frame in tables(workdir).items():
        available = frame.loc[TRAINED]
        for metric in ("detection_dlib", "detection_mtcnn", "pose_error"):  # Wilson and BCa hold their estimate
            held = available.dropna(subset=[metric])
            assert ((held[f"{metric}_low"] <= held[metric]) & (held[metric] <= held[f"{metric}_high"])).all()
        assert (available["fid_high"] > available["fid_low"]).all(), dataset
        # FID at 30-100 images is far above the distance: the bootstrap sees it, and the basic interval corrects it.
        assert (available["fid_bias"] > 0).all() and (available["fid_low"] < available["fid"]).all(), dataset
        assert frame.loc["blur", "detection_dlib_paper_inside"] in (True, False)
    markdown = (workdir.reports / "table2.md").read_text()
    assert "Cells: ours [95 % interval]" in markdown and "bootstrap estimate here" in markdown
    per_pair = pd.read_csv(workdir.pair_results("lfw", "blur"))
    assert {"detection_dlib", "detection_mtcnn", "pose_error", "verification_dlib"} <= set(per_pair.columns)


def compare(workdir, *args: str) -> str:
    """`python -m pipelines.compare ARGS` in the run's repository: its output, printed for the log."""
    compared = subprocess.run([sys.executable, "-m", "pipelines.compare", *args], cwd=workdir.root,
                              capture_output=True, text=True)
    assert compared.returncode == 0, compared.stderr
    print(compared.stdout)
    return compared.stdout


def test_two_dvc_experiments_are_compared_through_the_command(small_run):
    """Two `dvc exp run`s of the blur kernel, compared by pipelines.compare from the experiments' refs."""
    workdir, _ = small_run
    git(workdir, "add", "-A")
    git(workdir, "commit", "-q", "-m", "small profile run")
    try:
        for name, kernel in (("blur-k51", 51), ("blur-k75", 75)):
            log = dvc(workdir, "exp", "run", "-n", name, "-S", f"anonymisers.blur.kernel_size={kernel}",
                      "evaluate@blur")
            assert "Running stage 'evaluate@blur'" in log and "Running stage 'evaluate@pixelate'" not in log
        text = compare(workdir, "blur-k51", "blur-k75", "--method", "blur", "--dataset", "lfw")
        assert "**lfw: A = blur-k51:blur, B = blur-k75:blur**" in text and "**celeba:" not in text
        rows = {line.split("|")[1].strip(): [cell.strip() for cell in line.strip("|").split("|")]
                for line in text.splitlines() if line.startswith("| ") and "---" not in line}
        for metric, test in (("detection_dlib", "McNemar exact"), ("detection_mtcnn", "McNemar exact"),
                             ("pose_error", "paired permutation"), ("fid", "paired bootstrap"),
                             ("verification_dlib", "McNemar exact")):
            assert rows[metric][5] == test, rows[metric]
            assert 0 <= float(rows[metric][6]) <= float(rows[metric][7]) <= 1, rows[metric]
        assert rows["fid"][1] == "100"
        # The smaller kernel leaves more of the face: dlib finds more faces in A than in B.
        assert float(rows["detection_dlib"][2].rstrip("%")) >= float(rows["detection_dlib"][3].rstrip("%"))
    finally:  # the other tests read the committed run: put its files back
        git(workdir, "reset", "-q", "--hard")
        dvc(workdir, "checkout", "--force")


def test_released_methods_are_rows_with_numbers_or_not_available_with_the_reason(small_run):
    """Offline (CI) the downloads fail: the rows say "not available" and why; online they hold numbers."""
    workdir, _ = small_run
    markdown = (workdir.reports / "table1.md").read_text()
    for method in RELEASED:
        status = ReleaseStatus.read(workdir.released(method))
        for dataset, frame in tables(workdir).items():
            row = frame.loc[method]
            assert bool(row["available"]) == status.available, (dataset, method)
            if status.available:
                assert 0 <= row["detection_dlib"] <= 1 and row["n_skipped"] == 0
            else:
                assert np.isnan(row["detection_dlib"]) and row["n_skipped"] == row["n"]
                assert row["note"] == f"the authors' weights are not available: {status.reason}"
        assert (f"| {method} | not available |" in markdown) != status.available, method


def test_figures_are_written(small_run):
    workdir, _ = small_run
    for name in ("privacy_utility", "detection", "pose_error", "training_curves", "qualitative_celeba",
                 "qualitative_lfw", "attacks"):
        with Image.open(workdir.reports / "figures" / f"{name}.png") as figure:
            assert figure.format == "PNG" and min(figure.size) > 100, name


def test_the_attacks_tables_put_the_dlib_parrot_beside_the_naive_attacker(small_run):
    """Offline, the dlib parrot metrics have a row per trained method (a third-party folder has no gallery)."""
    workdir, _ = small_run
    attacks = {dataset: pd.read_csv(workdir.reports / f"attacks_{dataset}.csv").set_index("method")
               for dataset in ("celeba", "lfw")}
    for dataset, frame in attacks.items():
        assert sorted(frame.index) == sorted(TRAINED) and (frame["embedder"] == "dlib").all(), dataset
        manifest = ANONYMISED.read(workdir.outputs(dataset, "ciagan") / "gallery" / "manifest.csv")
        assert (manifest["status"] == "ok").all() and (manifest["condition_rule"] == "different").all()
    lfw = attacks["lfw"]
    # Blurring hides a face from real photos, not from blurred ones (measured on the mini: 78 % vs 2 %).
    assert lfw.loc["blur", "parrot_acceptance"] > lfw.loc["blur", "naive_acceptance"]
    assert lfw.loc["original", "parrot_acceptance"] >= lfw.loc["blur", "parrot_acceptance"]
    assert attacks["celeba"]["leak"].notna().all()  # every trained method's condition leak was measured


def test_a_third_party_folder_becomes_an_extra_row(small_run):
    """Bring your own method: images named <pair_id>.png, one methods entry, one dvc repro."""
    workdir, _ = small_run
    for dataset in ("celeba", "lfw"):
        target = workdir.root / "third_party/mirror" / dataset
        target.mkdir(parents=True)
        manifest = ANONYMISED.read(workdir.outputs(dataset, "original") / "manifest.csv")
        for pair_id in manifest.loc[manifest["status"] == "ok", "pair_id"]:
            original = Image.open(workdir.outputs(dataset, "original") / f"{pair_id}.png")
            original.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(target / f"{pair_id}.png")

    def add_method(params):
        params["methods"]["mirror"] = {"anonymiser": "folder", "code": "baselines/folder.py",
                                       "root": "third_party/mirror", "depends": "third_party/mirror",
                                       "params": "anonymisers.folder"}

    # The other tests of this module, in any order, read the run without the extra method: put it back after.
    saved = {path: path.read_bytes() for path in (workdir.params_file, workdir.root / "dvc.lock")}
    set_params(workdir, add_method)
    try:
        log = dvc(workdir, "repro")
        assert "Running stage 'anonymise@mirror'" in log and "Running stage 'evaluate@mirror'" in log
        assert "Running stage 'anonymise@blur'" not in log and "Running stage 'train@" not in log
        for dataset, frame in tables(workdir).items():
            assert frame.index[-1] == "mirror", dataset
            assert frame.loc["mirror", "n"] == frame.loc["original", "n"]
            # A mirrored face is still a face, unlike a blurred one.
            assert frame.loc["mirror", "detection_dlib"] > frame.loc["blur", "detection_dlib"], dataset
    finally:
        for path, content in saved.items():
            path.write_bytes(content)
        dvc(workdir, "checkout", "--force")


def test_the_lfw_part_runs_in_the_authors_photo_frame(small_run):
    """`evaluate.lfw_frame: photo`: on LFW the methods work on, and are measured on, the whole photos at 256x256."""
    workdir, _ = small_run
    saved = {path: path.read_bytes() for path in (workdir.params_file, workdir.root / "dvc.lock")}
    set_params(workdir, lambda params: params["evaluate"].update(lfw_frame="photo"))
    try:
        log = dvc(workdir, "repro", "evaluate@blur", "evaluate@ciagan", "anonymise@anonygan-68")
        assert "Running stage 'anonymise@anonygan-68'" in log and "Running stage 'train@" not in log
        photos = PreparedDataset(workdir.framed("lfw", "photo"))
        for method in ("blur", "ciagan", "anonygan-68"):
            assert AnonymiseSummary.read(workdir.outputs("celeba", method) / "summary.json").frame == "crop"
            summary = AnonymiseSummary.read(workdir.outputs("lfw", method) / "summary.json")
            manifest = ANONYMISED.read(workdir.outputs("lfw", method) / "manifest.csv")
            assert summary.frame == "photo" and summary.anonymised == (manifest["status"] == "ok").sum() > 50
            for row in manifest[manifest["status"] == "ok"].head(5).itertuples():
                with Image.open(workdir.outputs("lfw", method) / f"{row.pair_id}.png") as image:
                    anonymised = np.asarray(image.convert("RGB"))
                photo, mask = photos.crop(row.source), photos.mask(row.source)
                assert anonymised.shape == (256, 256, 3), method
                changed = (anonymised != photo).any(axis=2)
                if method != "anonygan-68":  # blur and CIAGAN's pasted crop change the face, not the background
                    assert changed[mask].mean() > 0.5 and changed[~mask].mean() < 0.1, (method, row.pair_id)
        for method in ("blur", "ciagan"):
            results = Results.read(workdir.results("lfw", method))
            assert results.test_set.frame == "photo" and results.test_set.image_format == "png"
            assert results.value("fid") > 0 and 0 <= results.value("detection_dlib") <= 1, method
            assert Results.read(workdir.results("celeba", method)).test_set.frame == "crop"
    finally:  # the other tests read the crop-frame run: put it back
        for path, content in saved.items():
            path.write_bytes(content)
        dvc(workdir, "checkout", "--force")
