"""The GPU acceptance run on a CPU: argument handling, part budgets, the summary, the lane's skips, and the whole
command at tiny size in a virtual environment holding only the device image's packages plus the carried wheels,
both made offline from the packages installed here."""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import time
import zipfile
from importlib import metadata
from pathlib import Path

import pytest
import torch

from acceptance import carry, summary
from acceptance.__main__ import BUDGETS, arguments, lane_outcomes, main, run_within
from acceptance.faces import FACES_VARIABLE
from tests.helpers import REPO, installed_closure, link_distributions, pure_python_wheel

SCRIPT = REPO / "scripts" / "gpu-acceptance.sh"
#: The virtual environment is cached here between runs (git-ignored); it is relinked when its package list changes.
VENV = REPO / ".cache" / "gpu-acceptance" / "venv"
no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks what happens without CUDA")


def test_the_script_without_arguments_prints_its_usage():
    result = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.startswith("usage: bash scripts/gpu-acceptance.sh") and "OUT_DIR" in result.stderr


@pytest.mark.parametrize(("argv", "message"), [
    (["--tiny"], "the following arguments are required: out_dir"),
    (["out", "--bogus"], "unrecognized arguments: --bogus"),
    (["out", "--parts", "train-fp64"], "invalid choice: 'train-fp64'"),
])
def test_bad_arguments_stop_with_status_2_and_say_why(capsys, argv, message):
    with pytest.raises(SystemExit) as stop:
        arguments(argv)
    assert stop.value.code == 2
    assert message in capsys.readouterr().err


def test_an_out_dir_that_is_a_file_is_refused(tmp_path, capsys):
    (tmp_path / "taken").write_text("")
    with pytest.raises(SystemExit):
        arguments([str(tmp_path / "taken")])
    assert "exists and is not a folder" in capsys.readouterr().err


def test_arguments_select_the_mode_and_the_parts(tmp_path):
    args = arguments([str(tmp_path), "--tiny", "--parts", "metrics", "gpu-lane"])
    assert args.tiny and args.parts == ["metrics", "gpu-lane"] and args.out_dir == tmp_path
    assert arguments([str(tmp_path)]).parts == list(BUDGETS)


def test_gpu_budgets_fit_8_minutes_with_room_for_the_starts():
    assert sum(gpu for gpu, _ in BUDGETS.values()) <= 420


def test_a_part_over_its_budget_is_stopped_with_everything_it_started(tmp_path):
    """A part that hangs, and a process it started, both end at the budget; the run goes on."""
    pid_file = tmp_path / "child.pid"
    hang = ("import subprocess, sys, time; "
            "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)']); "
            f"open({str(pid_file)!r}, 'w').write(str(child.pid)); print('started', flush=True); time.sleep(120)")
    start = time.perf_counter()
    status, wall = run_within([sys.executable, "-c", hang], 3, tmp_path / "hang.log")
    assert status == "stopped at budget" and 3 <= wall < 10 and time.perf_counter() - start < 10
    assert "started" in (tmp_path / "hang.log").read_text()
    child = Path(f"/proc/{pid_file.read_text()}/status")
    time.sleep(0.5)
    assert not child.exists() or "zombie" in child.read_text()


def test_a_finished_part_reports_its_exit_status(tmp_path):
    assert run_within([sys.executable, "-c", "pass"], 30, tmp_path / "ok.log")[0] == "ok"
    assert run_within([sys.executable, "-c", "raise SystemExit(3)"], 30, tmp_path / "bad.log")[0] == "failed (exit 3)"


def test_lane_outcomes_are_read_from_verbose_pytest_output_also_when_cut_short():
    log = ("tests/gpu/test_a.py::test_one[fp32-anonygan-68] PASSED          [  5%]\n"
           "tests/gpu/test_a.py::test_two SKIPPED (needs a CUDA device)     [ 10%]\n"
           "tests/gpu/test_b.py::test_three FAILED                          [ 15%]\n"
           "tests/gpu/test_b.py::test_four ")
    assert lane_outcomes(log) == {"tests/gpu/test_a.py::test_one[fp32-anonygan-68]": "PASSED",
                                  "tests/gpu/test_a.py::test_two": "SKIPPED",
                                  "tests/gpu/test_b.py::test_three": "FAILED"}


def recorded_run() -> dict:
    """A record as a GPU run writes it, with one lane failure and a part stopped at its budget."""
    return {"mode": "full", "started": "2026-12-03T12:00:00+00:00", "wall_s": 431.2,
            "environment": {"device": "NVIDIA H200", "torch": "2.11.0+cu130", "cuda": "13.0", "python": "3.12.3",
                            "cpus": 16, "host": "gpu"},
            "parts": {"gpu-lane": {"budget_s": 270, "status": "failed (exit 1)", "wall_s": 180.0,
                                   "result": {"outcomes": {"tests/gpu/t.py::a": "PASSED",
                                                           "tests/gpu/t.py::b": "FAILED"}}},
                      "train-bf16": {"budget_s": 40, "status": "ok", "wall_s": 35.0,
                                     "result": {"model": "full", "precision": "bf16", "samples_per_step": 64,
                                                "step_s": 0.2, "samples_per_s": 320.0, "achieved_tflops": 193.0,
                                                "mfu": 0.195, "peak_memory_gib": 41.5}},
                      "metrics": {"budget_s": 45, "status": "stopped at budget", "wall_s": 45.1}}}


def test_the_summary_holds_every_part_in_json_and_markdown(tmp_path):
    record = recorded_run()
    summary.write(record, tmp_path)
    assert json.loads((tmp_path / "summary.json").read_text()) == record
    text = (tmp_path / "summary.md").read_text()
    assert "NVIDIA H200; torch 2.11.0+cu130 (CUDA 13.0), Python 3.12.3, 16 CPUs" in text
    assert "| metrics | stopped at budget | 45.1 | 45 |" in text
    assert "1 passed, 1 failed" in text and "| tests/gpu/t.py::b | FAILED |" in text
    assert "| train-bf16 | full | bf16 | 64 | 0.2 | 320.0 | 193.0 | 0.195 | 41.5 |" in text
    assert "## Metric networks" not in text  # a part stopped before writing its result has no table


@pytest.fixture(scope="session")
def carried(lfw_root, tmp_path_factory) -> Path:
    """64 real LFW faces prepared as `python -m acceptance.carry` does, kept between runs in .cache."""
    return carry.prepare_faces(lfw_root, REPO / ".cache" / "gpu-acceptance" / "faces" / "lfw")


@pytest.mark.realdata
def test_the_carried_faces_are_64_prepared_photos_in_pairs(carried):
    import pandas as pd

    pairs = pd.read_csv(carried / "pairs.csv")
    assert len(pd.read_parquet(carried / "index.parquet")) == 64
    assert pairs["same_image"].sum() == 64 and (~pairs["same_image"]).sum() >= 60
    assert (pairs.loc[~pairs["same_image"], "source"] != pairs.loc[~pairs["same_image"], "condition"]).all()
    assert (pairs["source_identity"] == pairs["condition_identity"]).all()


@pytest.mark.slow
@pytest.mark.realdata
@no_cuda
def test_a_tiny_cpu_run_measures_and_summarises(carried, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(FACES_VARIABLE, str(carried))
    record = main([str(tmp_path), "--tiny", "--parts", "train-bf16", "metrics"])
    assert json.loads((tmp_path / "summary.json").read_text()) == record
    assert record["mode"].startswith("tiny") and record["environment"]["device"].startswith("no CUDA")
    step = record["parts"]["train-bf16"]
    assert step["status"] == "ok", (tmp_path / "train-bf16.log").read_text()[-2000:]
    assert step["result"]["precision"] == "fp32"  # bf16 autocast is CUDA's; a CPU trains in fp32
    assert step["result"]["samples_per_step"] == 4 and step["result"]["samples_per_s"] > 0
    assert step["result"]["mfu"] is None and "603 GFLOP" in step["result"]["mfu_note"]
    networks = record["parts"]["metrics"]["result"]
    assert all(networks[name]["images_per_s"] > 0 for name in ("inception", "mtcnn", "facenet"))
    assert networks["mtcnn"]["faces_found"] == 4  # real faces
    text = (tmp_path / "summary.md").read_text()
    assert "| train-bf16 | small profile | fp32 | 4 |" in text and "| inception | 4 |" in text


@pytest.mark.slow
@no_cuda
def test_the_gpu_lane_skips_cleanly_without_cuda():
    result = subprocess.run([sys.executable, "-m", "pytest", "tests/gpu", "-m", "gpu", "-q", "-p", "no:randomly",
                             "-p", "no:cacheprovider"], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:]
    last = result.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"=* ?\d+ skipped in [\d.]+s ?=*", last), last
    assert int(last.strip("= ").split()[0]) >= 20


#: Installed here in place of a device image package that is not: the same cv2 module, with GUI support.
STAND_INS = {"opencv-python-headless": "opencv-python"}


def installed_here(name: str) -> str:
    try:
        metadata.distribution(name)
        return name
    except metadata.PackageNotFoundError:
        return STAND_INS.get(name, name)


def device_venv() -> Path:
    """A virtual environment (no system site packages) in which only DEVICE_IMAGE_PACKAGES, pip (the device's
    Python has it; the script installs the wheels with it) and what they require are importable: this
    interpreter's installed copies, symlinked, so nothing is downloaded. Kept in .cache while they stay the same."""
    allowed = installed_closure([installed_here(name) for name in (*carry.DEVICE_IMAGE_PACKAGES, "pip")])
    stamp_text = "\n".join([sys.version, *sorted(f"{name}=={dist.version}" for name, dist in allowed.items())])
    stamp = VENV / "packages.txt"
    if stamp.is_file() and stamp.read_text() == stamp_text:
        return VENV
    subprocess.run([sys.executable, "-m", "venv", "--clear", "--without-pip", str(VENV)], check=True)
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    link_distributions(list(allowed.values()), VENV / "lib" / version / "site-packages")
    stamp.write_text(stamp_text)
    return VENV


def test_a_wheel_built_here_records_each_of_its_files_with_digest_and_size(tmp_path):
    base = f"ruamel_yaml-{metadata.version('ruamel.yaml')}"  # the name normalised: runs of -_. become one _
    wheel = pure_python_wheel(f"ruamel.yaml=={metadata.version('ruamel.yaml')}", tmp_path)
    assert wheel.name == f"{base}-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        record = list(csv.reader(io.StringIO(archive.read(f"{base}.dist-info/RECORD").decode())))
        assert record[-1] == [f"{base}.dist-info/RECORD", "", ""] and names[-1] == record[-1][0]
        assert sorted(row[0] for row in record) == sorted(names)
        for path, digest, size in record[:-1]:
            data = archive.read(path)
            expected = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            assert digest == f"sha256={expected}" and int(size) == len(data), path
        assert "Root-Is-Purelib: true\nTag: py3-none-any" in archive.read(f"{base}.dist-info/WHEEL").decode()
        assert "ruamel/yaml/__init__.py" in names and f"{base}.dist-info/METADATA" in names
        assert not any("__pycache__" in name or name.endswith(("INSTALLER", "direct_url.json")) for name in names)


@pytest.mark.slow
@pytest.mark.realdata
@no_cuda
def test_the_command_runs_in_an_environment_of_only_the_device_packages_and_the_carried_wheels(carried, tmp_path):
    venv = device_venv()
    wheels = tmp_path / "wheels"
    for requirement in carry.REQUIREMENTS:
        pure_python_wheel(requirement, wheels)
    python = str(venv / "bin" / "python")
    assert subprocess.run([python, "-c", "import dlib"], capture_output=True).returncode != 0
    assert subprocess.run([python, "-c", "import facenet_pytorch"], capture_output=True).returncode != 0
    environment = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "VIRTUAL_ENV")}
    environment |= {"PATH": f"{venv / 'bin'}:{os.environ['PATH']}", FACES_VARIABLE: str(carried),
                    "GPU_ACCEPTANCE_WHEELS": str(wheels)}
    result = subprocess.run(["bash", str(SCRIPT), "--tiny", str(tmp_path / "out")], cwd=REPO, env=environment,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    record = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert record["environment"]["python"] != "" and set(record["parts"]) == set(BUDGETS)
    logs = {name: (tmp_path / "out" / f"{name}.log").read_text()[-2000:] for name in BUDGETS}
    assert all(part["status"] == "ok" for part in record["parts"].values()), logs
    outcomes = record["parts"]["gpu-lane"]["result"]["outcomes"]
    assert len(outcomes) >= 20 and set(outcomes.values()) == {"SKIPPED"}
    for name in ("train-fp32", "train-bf16"):
        assert record["parts"][name]["result"]["samples_per_s"] > 0
    assert (tmp_path / "out" / "summary.md").read_text().startswith("# GPU acceptance run (tiny")
