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


def _mean_std(value: Any) -> tuple[float | None, float | None]:
    """Paper entries are a number, [mean, std] or null; ours are metric result records."""
    if value is None or isinstance(value, MetricError):
        return None, None
    if isinstance(value, MetricResult):
        mean, std = value.value, value.details.get("std")
        return (None if mean is None or math.isnan(mean) else float(mean)), std
    if isinstance(value, list | tuple):
        return float(value[0]), float(value[1])
    return float(value), None


def table(results: dict[str, Results], paper: dict[str, dict], rows: dict[str, str],
          with_std: bool) -> pd.DataFrame:
    """One row per method (the paper's rows in its order, then the others as given); numeric columns.

    `paper` holds the paper's numbers per method, `rows` the paper's row names in its order (both
    from reports/paper_numbers.yaml).

    For each metric: `<metric>` (ours), `<metric>_std` (with_std, only the columns the paper prints
    with ± on LFW: re-id), `<metric>_paper`,
    `<metric>_paper_std`, `<metric>_diff` (ours - paper). Plus `n` (pairs of the test set),
    `n_skipped` (pairs no metric could evaluate: source photo not prepared, no anonymised
    image or method not available; a metric's own protocol skips, like verification's
    different-person pairs, are not counted), both as the results record counts them,
    `pose_failures` (pairs in whose source or anonymised image the pose metric's detector found
    no face), `available` and `note` (why not).
    """
    methods = [m for m in rows if m in results] + [m for m in results if m not in rows]
    frame_rows = []
    for method in methods:
        result, reference = results[method], paper.get(method, {})
        row: dict[str, Any] = {"method": method, "name": rows.get(method, method),
                               "available": result.not_available is None, "note": result.not_available or ""}
        for column in TABLE_COLUMNS:
            ours, ours_std = _mean_std(result.metrics.get(column.metric))
            theirs, theirs_std = _mean_std(reference.get(column.metric))
            row[column.metric] = ours
            row[f"{column.metric}_paper"] = theirs
            if with_std and column.spread:
                row[f"{column.metric}_std"] = ours_std
                row[f"{column.metric}_paper_std"] = theirs_std
            row[f"{column.metric}_diff"] = None if ours is None or theirs is None else ours - theirs
        row["n"], row["n_skipped"] = result.test_set.pairs, result.test_set.n_skipped
        pose = result.metrics.get("pose_error")
        row["pose_failures"] = int(pose.details.get("n_failed", 0)) if isinstance(pose, MetricResult) else 0
        frame_rows.append(row)
    return pd.DataFrame(frame_rows)


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _cell(value: float | None, std: float | None, percent: bool, digits: int = 2) -> str:
    if _missing(value):
        return "-"
    scale, unit = (100.0, "%") if percent else (1.0, "")
    text = f"{value * scale:.{digits}f}{unit}"
    return text if _missing(std) else f"{text} ± {std * scale:.{digits}f}"


def _compared(ours: str, theirs: str, difference: float | None, percent: bool) -> str:
    """'ours (paper; ours - paper)', or just ours where the paper has no number."""
    if theirs == "-":
        return ours
    if _missing(difference):
        return f"{ours} ({theirs})"
    return f"{ours} ({theirs}; {difference * (100.0 if percent else 1.0):+.2f}{' pp' if percent else ''})"


def display(frame: pd.DataFrame) -> pd.DataFrame:
    """Human-readable cells: 'ours (paper, diff)' per metric, as the markdown and LaTeX tables show."""
    shown = pd.DataFrame({"method": frame["name"]})
    for column in TABLE_COLUMNS:
        cells = []
        for _, row in frame.iterrows():
            ours = (_cell(row[column.metric], row.get(f"{column.metric}_std"), column.percent, column.digits)
                    if row["available"] else "not available")
            theirs = _cell(row[f"{column.metric}_paper"], row.get(f"{column.metric}_paper_std"), column.percent,
                           column.digits)
            cells.append(_compared(ours, theirs, row[f"{column.metric}_diff"], column.percent))
        shown[column.title] = cells
    shown["N"] = frame["n"].astype(int)
    shown["skipped"] = frame["n_skipped"].astype(int)
    shown["pose failures"] = frame["pose_failures"].astype(int)
    return shown


def to_markdown(frame: pd.DataFrame, caption: str) -> str:
    shown = display(frame)
    header = "| " + " | ".join(shown.columns) + " |"
    rule = "|" + "|".join("---" for _ in shown.columns) + "|"
    lines = ["| " + " | ".join(str(v) for v in row) + " |" for row in shown.itertuples(index=False)]
    note = "Cells: ours (paper; ours - paper). Shares in %, differences in percentage points (pp)."
    missing = [f"- Not available: {row.name}: {row.note}" for row in frame.itertuples() if not row.available]
    return "\n".join([f"**{caption}**", "", header, rule, *lines, "", note, *missing, ""])


def to_latex(frame: pd.DataFrame, caption: str) -> str:
    shown = display(frame).map(lambda v: str(v).replace("%", r"\%").replace("±", r"$\pm$"))
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
