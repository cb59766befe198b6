"""python -m acceptance OUT_DIR [--tiny] [--parts ...]: the gpu test lane, then the measurements, each in its own
process under its own time budget; OUT_DIR gets summary.json, summary.md and one log per part.

Budgets (seconds) are sized for one H100/H200 and add up, with the processes' starts, to under 8 minutes.
A part still running at its budget is stopped (its process group killed) and recorded as such; the run
goes on with the next part. The summary is rewritten after every part, so a run cut short keeps what it did.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from acceptance import summary
from acceptance.faces import REPO

#: name: (budget on a GPU, budget with --tiny), seconds. The lane includes its CPU reference computations.
BUDGETS = {"gpu-lane": (270, 240), "train-fp32": (50, 90), "train-bf16": (40, 90), "metrics": (45, 90)}
#: Seconds of a measured part's budget kept for starting Python, importing torch, building the networks and
#: writing the result: the measurement itself gets the rest.
START_ALLOWANCE = 20
LANE_LINE = re.compile(r"^(tests/\S+::\S+) (PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS)\b", re.MULTILINE)


def run_within(command: list[str], seconds: float, log: Path) -> tuple[str, float]:
    """Run `command` from the repository root, output to `log`; kill it and all it started at `seconds`.

    Returns ("ok" | "failed (exit N)" | "stopped at budget", wall seconds).
    """
    start = time.perf_counter()
    with log.open("w") as output:
        process = subprocess.Popen(command, cwd=REPO, stdout=output, stderr=subprocess.STDOUT,
                                   start_new_session=True)  # its own process group: torchrun's workers die with it
        try:
            code = process.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            return "stopped at budget", round(time.perf_counter() - start, 1)
    return ("ok" if code == 0 else f"failed (exit {code})"), round(time.perf_counter() - start, 1)


def lane_outcomes(log_text: str) -> dict[str, str]:
    """{test id: PASSED | FAILED | ERROR | SKIPPED ...} from pytest -v output, also from a run cut short."""
    return {test: outcome for test, outcome in LANE_LINE.findall(log_text)}


def run_lane(budget: float, log: Path) -> dict:
    status, wall = run_within([sys.executable, "-m", "pytest", "tests/gpu", "-m", "gpu", "-v", "-rs",
                               "-p", "no:cacheprovider", "-p", "no:randomly"], budget, log)
    outcomes = lane_outcomes(log.read_text(errors="replace"))
    if status == "failed (exit 5)" and not outcomes:
        status = "failed (no test collected)"
    elif status.startswith("failed") and "FAILED" not in outcomes.values() and "ERROR" not in outcomes.values():
        status = f"{status}: see the log"
    return {"status": status, "wall_s": wall, "result": {"outcomes": outcomes}}


def run_measurement(name: str, budget: float, tiny: bool, log: Path, scratch: Path) -> dict:
    result_file = scratch / f"{name}.json"
    command = [sys.executable, "-m", "acceptance.part", name, "--budget", str(max(budget - START_ALLOWANCE, 1)),
               "--out", str(result_file), *(["--tiny"] if tiny else [])]
    status, wall = run_within(command, budget, log)
    part = {"status": status, "wall_s": wall}
    if result_file.is_file():
        part["result"] = json.loads(result_file.read_text())
    return part


def environment() -> dict:
    cuda = torch.cuda.is_available()
    return {"device": torch.cuda.get_device_name() if cuda else "no CUDA device (CPU)", "torch": torch.__version__,
            "cuda": torch.version.cuda if cuda else None, "python": platform.python_version(),
            "cpus": os.cpu_count(), "host": platform.node()}


def arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="scripts/gpu-acceptance.sh", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir", type=Path, help="folder for summary.json, summary.md and the parts' logs")
    parser.add_argument("--tiny", action="store_true",
                        help="the small profile's sizes and budgets: a dry run on a CPU (the lane skips there)")
    parser.add_argument("--parts", nargs="+", choices=list(BUDGETS), default=list(BUDGETS), metavar="PART",
                        help=f"run only these parts, of: {', '.join(BUDGETS)}")
    args = parser.parse_args(argv)
    if args.out_dir.exists() and not args.out_dir.is_dir():
        parser.error(f"OUT_DIR {args.out_dir} exists and is not a folder")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = arguments(argv)
    out = args.out_dir.resolve()
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    record = {"mode": "tiny (CPU dry run)" if args.tiny else "full", "started":
              datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"), "wall_s": 0.0,
              "environment": environment(), "parts": {}}
    with tempfile.TemporaryDirectory() as scratch:
        for name in args.parts:
            budget = BUDGETS[name][args.tiny]
            print(f"{name}: up to {budget} s ...", flush=True)
            log = out / f"{name}.log"
            part = (run_lane(budget, log) if name == "gpu-lane"
                    else run_measurement(name, budget, args.tiny, log, Path(scratch)))
            record["parts"][name] = {"budget_s": budget, **part}
            record["wall_s"] = round(time.perf_counter() - started, 1)
            summary.write(record, out)
            print(f"{name}: {part['status']} in {part['wall_s']} s", flush=True)
    print(f"{out / 'summary.md'}, {out / 'summary.json'}: {record['wall_s']} s in all")
    return record


if __name__ == "__main__":
    main()
