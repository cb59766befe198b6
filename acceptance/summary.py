"""The acceptance run's record: OUT_DIR/summary.json (everything) and OUT_DIR/summary.md (for docs/benchmarks.md)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write(summary: dict[str, Any], out_dir: Path) -> None:
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out_dir / "summary.md").write_text(markdown(summary))


def _cell(value: Any) -> str:
    return "-" if value is None else str(value)


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(_cell(value) for value in row) + " |" for row in rows)]


def markdown(summary: dict[str, Any]) -> str:
    environment, parts = summary["environment"], summary["parts"]
    lines = [f"# GPU acceptance run ({summary['mode']})", "",
             f"{environment['device']}; torch {environment['torch']} (CUDA {_cell(environment['cuda'])}), "
             f"Python {environment['python']}, {environment['cpus']} CPUs. Started {summary['started']}, "
             f"{summary['wall_s']} s in all.", "", "## Parts", ""]
    lines += _table(["part", "status", "seconds", "budget (s)"],
                    [[name, part["status"], part["wall_s"], part["budget_s"]] for name, part in parts.items()])
    lines += _lane(parts.get("gpu-lane"))
    lines += _training(parts)
    lines += _networks(parts.get("metrics"))
    return "\n".join(lines) + "\n"


def _lane(part: dict[str, Any] | None) -> list[str]:
    if part is None:
        return []
    outcomes = part.get("result", {}).get("outcomes", {})
    counts = ", ".join(f"{sum(o == kind for o in outcomes.values())} {kind.lower()}"
                       for kind in ("PASSED", "FAILED", "ERROR", "SKIPPED")
                       if any(o == kind for o in outcomes.values()))
    lines = ["", "## The gpu test lane", "", counts or "no test reported an outcome"]
    problems = [[test, outcome] for test, outcome in outcomes.items() if outcome in ("FAILED", "ERROR")]
    return lines + (["", *_table(["test", "outcome"], problems)] if problems else [])


def _training(parts: dict[str, Any]) -> list[str]:
    rows = [[name, r.get("model"), r.get("precision"), r.get("samples_per_step"), r.get("step_s"),
             r.get("samples_per_s"), r.get("achieved_tflops"), r.get("mfu"), r.get("peak_memory_gib")]
            for name, part in parts.items() if name.startswith("train-") and (r := part.get("result"))]
    if not rows:
        return []
    return ["", "## Training step (G, D_app, D_lm over 2 micro-batches; median of the timed steps)", "",
            *_table(["part", "model", "precision", "samples/step", "step (s)", "samples/s", "TFLOP/s", "MFU",
                     "peak memory (GiB)"], rows)]


def _networks(part: dict[str, Any] | None) -> list[str]:
    result = (part or {}).get("result")
    if not result:
        return []
    rows = [[name, result[name].get("images"), result[name].get("images_per_s")]
            for name in ("inception", "mtcnn", "facenet") if name in result]
    return ["", "## Metric networks (batch of the images below)", "",
            *_table(["network", "images per call", "images/s"], rows)]
