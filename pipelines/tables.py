"""Tables 1 and 2: our numbers beside the paper's, with the difference, N and failures.

Input: one results record per (dataset, method) as the evaluate stage writes it
(infra.records.Results: the test set's pairs and each metric's result), and
reports/paper_numbers.yaml. A method that could not run (its weights not available) has a
reason in `not_available` and no metric: its row says "not available" in every cell and the
reason is printed under the table.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pandas as pd

from infra.records import MetricError, MetricResult, Results


@dataclass(frozen=True)
class Column:
    metric: str
    title: str
    percent: bool  # shares are printed as percentages, differences in percentage points
    spread: bool = False  # the paper prints mean ± std over folds in its LFW table (re-id only)
    digits: int = 2

TABLE_COLUMNS = (
    Column("fid", "FID", False),
    Column("kid", "KID", False, digits=4),  # not in the paper: FID's unbiased companion (SPEC 5)
    Column("detection_dlib", "det. dlib", True),
    Column("detection_mtcnn", "det. MTCNN", True),
    Column("reid_facenet_casia", "re-id Casia", True, spread=True),
    Column("reid_facenet_vggface2", "re-id VGG", True, spread=True),
    Column("pose_error", "pose", False),
)


def _paper(value: Any) -> tuple[float | None, float | None]:
    """A paper entry: a number, [mean, std] or null."""
    if value is None:
        return None, None
    if isinstance(value, list | tuple):
        return float(value[0]), float(value[1])
    return float(value), None


def _ours(result: MetricResult | MetricError | None) -> tuple[float | None, float | None, float | None, float | None]:
    """(value, std, interval low, high) of one of our results; Nones where it has none."""
    if not isinstance(result, MetricResult) or result.value is None or math.isnan(result.value):
        return None, None, None, None
    bounds = result.details.get("interval") or {}
    return float(result.value), result.details.get("std"), bounds.get("low"), bounds.get("high")


def table(results: dict[str, Results], paper: dict[str, dict], rows: dict[str, str],
          with_std: bool) -> pd.DataFrame:
    """One row per method (the paper's rows in its order, then the others as given); numeric columns.

    `paper` holds the paper's numbers per method, `rows` the paper's row names in its order (both
    from reports/paper_numbers.yaml).

    For each metric: `<metric>` (ours), `<metric>_low` and `<metric>_high` (our interval),
    `<metric>_std` (with_std, only the columns the paper prints with ± on LFW: re-id),
    `<metric>_paper`, `<metric>_paper_std`, `<metric>_paper_inside` (whether the paper's value lies
    in our interval; None where either is missing), `<metric>_diff` (ours - paper). Plus `n` (pairs
    of the test set), `n_skipped` (pairs no metric could evaluate: source photo not prepared, no
    anonymised image or method not available; a metric's own protocol skips, like verification's
    different-person pairs, are not counted), both as the results record counts them,
    `pose_failures` (pairs in whose source or anonymised image the pose metric's detector found
    no face), `fid_bias` (the bootstrap's estimate of FID's upward bias at this N), `level` (the
    intervals' confidence level), `available` and `note` (why not).
    """
    methods = [m for m in rows if m in results] + [m for m in results if m not in rows]
    frame_rows = []
    for method in methods:
        result, reference = results[method], paper.get(method, {})
        row: dict[str, Any] = {"method": method, "name": rows.get(method, method),
                               "available": result.not_available is None, "note": result.not_available or ""}
        for column in TABLE_COLUMNS:
            ours, ours_std, low, high = _ours(result.metrics.get(column.metric))
            theirs, theirs_std = _paper(reference.get(column.metric))
            row[column.metric], row[f"{column.metric}_low"], row[f"{column.metric}_high"] = ours, low, high
            row[f"{column.metric}_paper"] = theirs
            if with_std and column.spread:
                row[f"{column.metric}_std"] = ours_std
                row[f"{column.metric}_paper_std"] = theirs_std
            row[f"{column.metric}_paper_inside"] = (None if theirs is None or low is None or high is None
                                                    else bool(low <= theirs <= high))
            row[f"{column.metric}_diff"] = None if ours is None or theirs is None else ours - theirs
        row["n"], row["n_skipped"] = result.test_set.pairs, result.test_set.n_skipped
        pose, fid = result.metrics.get("pose_error"), result.metrics.get("fid")
        row["pose_failures"] = int(pose.details.get("n_failed", 0)) if isinstance(pose, MetricResult) else 0
        row["fid_bias"] = ((fid.details.get("interval") or {}).get("bootstrap_bias")
                           if isinstance(fid, MetricResult) else None)
        levels = {(r.details.get("interval") or {}).get("level") for r in result.metrics.values()
                  if isinstance(r, MetricResult)}
        row["level"] = max((level for level in levels if level is not None), default=None)
        frame_rows.append(row)
    return pd.DataFrame(frame_rows)


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _number(value: float, percent: bool, digits: int) -> str:
    scale, unit = (100.0, "%") if percent else (1.0, "")
    return f"{value * scale:.{digits}f}{unit}"


def _cell(value: float | None, std: float | None, percent: bool, digits: int = 2,
          bounds: tuple[Any, Any] | None = None) -> str:
    """'value', 'value ± std' and/or 'value [low, high]'; '-' without a value."""
    if _missing(value):
        return "-"
    text = _number(value, percent, digits)
    if not _missing(std):
        text += f" ± {_number(std, percent, digits).rstrip('%')}"
    if bounds is not None and not any(_missing(bound) for bound in bounds):
        text += f" [{_number(bounds[0], percent, digits).rstrip('%')}, {_number(bounds[1], percent, digits)}]"
    return text


def _compared(ours: str, theirs: str, difference: float | None, percent: bool, inside: Any) -> str:
    """'ours (paper in|out; ours - paper)', or just ours where the paper has no number."""
    if theirs == "-":
        return ours
    where = "" if _missing(inside) else (" in" if inside else " out")
    if _missing(difference):
        return f"{ours} ({theirs}{where})"
    return f"{ours} ({theirs}{where}; {difference * (100.0 if percent else 1.0):+.2f}{' pp' if percent else ''})"


def display(frame: pd.DataFrame, intervals: bool = True) -> pd.DataFrame:
    """Readable cells, 'ours [interval] (paper in|out; diff)' per metric, as the markdown and LaTeX tables show."""
    shown = pd.DataFrame({"method": frame["name"]})
    for column in TABLE_COLUMNS:
        cells = []
        for _, row in frame.iterrows():
            bounds = (row[f"{column.metric}_low"], row[f"{column.metric}_high"]) if intervals else None
            ours = (_cell(row[column.metric], row.get(f"{column.metric}_std"), column.percent, column.digits, bounds)
                    if row["available"] else "not available")
            theirs = _cell(row[f"{column.metric}_paper"], row.get(f"{column.metric}_paper_std"), column.percent,
                           column.digits)
            cells.append(_compared(ours, theirs, row[f"{column.metric}_diff"], column.percent,
                                   row[f"{column.metric}_paper_inside"] if intervals else None))
        shown[column.title] = cells
    shown["N"] = frame["n"].astype(int)
    shown["skipped"] = frame["n_skipped"].astype(int)
    shown["pose failures"] = frame["pose_failures"].astype(int)
    return shown


def notes(frame: pd.DataFrame) -> list[str]:
    """What the cells mean, how to read the intervals, and why a row is not available."""
    levels = frame["level"].dropna().unique() if "level" in frame else []
    level = " / ".join(f"{100 * value:g} %" for value in sorted(levels)) or "no"
    lines = [f"Cells: ours [{level} interval] (paper, in or out of our interval; ours - paper). Shares in %, "
             "differences in percentage points (pp). Intervals: Wilson for shares, bootstrap over pairs for pose "
             "and over images of both sets for FID/KID (metrics/uncertainty.py)."]
    biases = frame["fid_bias"].dropna() if "fid_bias" in frame else pd.Series(dtype=float)
    if len(biases):
        lines.append(f"FID and KID intervals hold at this table's N: FID is biased upwards, the more the smaller N "
                     f"(bootstrap estimate here: {biases.min():+.2f} to {biases.max():+.2f}), so a paper value "
                     "measured on more images can lie out of our interval without a failure to reproduce; "
                     "compare FIDs at equal N only.")
    lines += [f"- Not available: {row.name}: {row.note}" for row in frame.itertuples() if not row.available]
    return lines


def to_markdown(frame: pd.DataFrame, caption: str) -> str:
    shown = display(frame)
    header = "| " + " | ".join(shown.columns) + " |"
    rule = "|" + "|".join("---" for _ in shown.columns) + "|"
    lines = ["| " + " | ".join(str(v) for v in row) + " |" for row in shown.itertuples(index=False)]
    return "\n".join([f"**{caption}**", "", header, rule, *lines, "", *notes(frame), ""])


def to_latex(frame: pd.DataFrame, caption: str, intervals: bool = True) -> str:
    """The table for a paper; `intervals=False` leaves the intervals (and the in/out marks) out of the cells."""
    shown = display(frame, intervals).map(lambda v: str(v).replace("%", r"\%").replace("±", r"$\pm$"))
    columns = "l" + "r" * (len(shown.columns) - 1)
    body = [" & ".join(map(str, row)) + r" \\" for row in shown.itertuples(index=False)]
    return "\n".join(
        [
            r"\begin{table}",
            r"\centering",
            f"\\caption{{{caption}}}",
            f"\\begin{{tabular}}{{{columns}}}",
            r"\hline",
            " & ".join(shown.columns) + r" \\",
            r"\hline",
            *body,
            r"\hline",
            r"\end{tabular}",
            r"\end{table}",
            "",
        ]
    )
