"""The attacks tables and figure of the report: the naive and the parrot attacker per method (metrics.attacks).

Not part of the paper's Tables 1-2, which keep the paper's columns. One row per method and
embedder whose parrot metric was computed; `original` (the unmodified crop) is the recogniser's
ceiling.

- reports/attacks_lfw.{md,csv}: same-person acceptance rate and verification accuracy, mean ± std
  over folds, of the naive attacker (real first photo, thresholds from real pairs) and of the parrot
  (anonymised first photo, thresholds from anonymised pairs), with the parrot acceptance's interval;
- reports/attacks_celeba.{md,csv}: top-1 and top-5 identification among the test identities, naive
  (real gallery) and parrot (anonymised gallery), the ceiling on real probes, and the condition leak
  (same- minus different-condition linking rate, its interval and p) on the row of its embedder;
- reports/figures/attacks.png: naive against parrot re-identification per method (LFW: acceptance,
  CelebA: top-1), a panel per dataset and embedder.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from infra.atomic import write_bytes, write_table
from infra.records import MetricResult, Results
from metrics.options import METRICS

#: The parrot metrics by embedder label (verification_<embedder>_parrot).
PARROTS = {name.removeprefix("verification_").removesuffix("_parrot"): name
           for name, metric in METRICS.items() if metric.gallery and name.startswith("verification_")}
LEAK = "condition_leak"
#: (column, title, share) of each table; shares print as percentages.
COLUMNS = {
    "lfw": (("naive_acceptance", "naive acceptance", True), ("parrot_acceptance", "parrot acceptance", True),
            ("parrot_interval", "parrot interval", False), ("naive_accuracy", "naive accuracy", True),
            ("parrot_accuracy", "parrot accuracy", True), ("n", "N", False)),
    "celeba": (("naive_rank1", "naive top-1", True), ("naive_rank5", "naive top-5", True),
               ("parrot_rank1", "parrot top-1", True), ("parrot_rank5", "parrot top-5", True),
               ("real_rank1", "real top-1 (ceiling)", True), ("leak", "condition leak", True),
               ("leak_interval", "leak interval", False), ("leak_p", "leak p", False), ("n", "N", False)),
}
CAPTIONS = {"lfw": "Attacks, LFW: naive vs parrot verification (mean ± std over folds)",
            "celeba": "Attacks, CelebA: naive vs parrot identification among the test identities"}


def _share(value) -> float:
    return math.nan if value is None else float(value)


def _bounds(interval: dict | None) -> str:
    return "" if not interval else f"[{100 * interval['low']:.1f}, {100 * interval['high']:.1f}]%"


def rows(dataset: str, results: dict[str, Results]) -> pd.DataFrame:
    """One row per (method, embedder) whose parrot metric has a value."""
    found = []
    for method, result in results.items():
        leak = result.metrics.get(LEAK)
        leak = leak if isinstance(leak, MetricResult) and leak.value is not None else None
        for embedder, name in PARROTS.items():
            parrot = result.metrics.get(name)
            if not isinstance(parrot, MetricResult) or parrot.value is None:
                continue
            details = parrot.details
            row = {"method": method, "embedder": embedder, "n": parrot.n}
            if dataset == "lfw":
                naive = details["naive"]
                row.update(naive_acceptance=_share(naive["value"]), naive_acceptance_std=naive["std"],
                           parrot_acceptance=parrot.value, parrot_acceptance_std=details["std"],
                           parrot_interval=_bounds(details.get("interval")),
                           naive_accuracy=_share(naive["accuracy"]), naive_accuracy_std=naive["accuracy_std"],
                           parrot_accuracy=_share(details["accuracy"]), parrot_accuracy_std=details["accuracy_std"])
            else:
                row.update(naive_rank1=details["naive_rank1"], naive_rank5=details["naive_rank5"],
                           parrot_rank1=parrot.value, parrot_rank5=details["rank5"],
                           real_rank1=details["real_rank1"])
                mine = leak is not None and _leak_embedder(leak) == embedder
                row.update(leak=leak.value if mine else math.nan,
                           leak_interval=_bounds(leak.details.get("interval")) if mine else "",
                           leak_p=leak.details["p"] if mine else math.nan)
            found.append(row)
    return pd.DataFrame(found, columns=["method", "embedder", *(column for column, _, _ in COLUMNS[dataset]),
                                        *(f"{column}_std" for column in ("naive_acceptance", "parrot_acceptance",
                                                                         "naive_accuracy", "parrot_accuracy")
                                          if dataset == "lfw")])


def _leak_embedder(leak: MetricResult) -> str:
    """The parrot label of the leak's embedder (dlib, facenet_casia, facenet_vggface2)."""
    embedder = leak.details["embedder"]
    return embedder if embedder == "dlib" else f"facenet_{embedder}"


def _cell(row: pd.Series, column: str, share: bool) -> str:
    value = row[column]
    if isinstance(value, str):
        return value or "-"
    if value is None or math.isnan(value):
        return "-"
    if not share:
        return f"{value:.3g}" if isinstance(value, float) else str(value)
    std = row.get(f"{column}_std")
    text = f"{100 * value:.1f}%"
    return text if std is None or math.isnan(std) else f"{text} ± {100 * std:.1f}"


def markdown(frame: pd.DataFrame, dataset: str) -> str:
    titles = ["method", "embedder", *(title for _, title, _ in COLUMNS[dataset])]
    lines = [f"{CAPTIONS[dataset]}", "", "| " + " | ".join(titles) + " |", "|" + "---|" * len(titles)]
    for _, row in frame.iterrows():
        cells = [row["method"], row["embedder"], *(_cell(row, column, share) for column, _, share in COLUMNS[dataset])]
        lines.append("| " + " | ".join(cells) + " |")
    if frame.empty:
        lines.append("(no parrot metric computed: add verification_dlib_parrot to evaluate.metrics)")
    return "\n".join(lines) + "\n"


def figure(tables: dict[str, pd.DataFrame], target: Path) -> None:
    """Naive vs parrot re-identification per method, a panel per dataset and embedder."""
    from pipelines.report import save_figure  # report imports this module

    measure = {"lfw": ("acceptance", "same-person acceptance"), "celeba": ("rank1", "top-1 identification")}
    long = pd.concat([pd.DataFrame({"dataset": f"{dataset}: {measure[dataset][1]}", "method": frame["method"],
                                    "embedder": frame["embedder"], "attacker": attacker,
                                    "re-identified (%)": 100 * frame[f"{attacker}_{measure[dataset][0]}"]})
                      for dataset, frame in tables.items() for attacker in ("naive", "parrot")])
    if long.empty:
        canvas, axis = plt.subplots(figsize=(6, 2))
        axis.text(0.5, 0.5, "no parrot metric computed", ha="center", va="center")
        axis.axis("off")
        save_figure(canvas, target)
        return
    grid = sns.catplot(long, x="method", y="re-identified (%)", hue="attacker", col="dataset", row="embedder",
                       kind="bar", height=3.5, aspect=1.6)
    grid.set(ylim=(0, 105))
    for axis in grid.axes.flat:
        axis.tick_params(axis="x", rotation=45)
    grid.figure.suptitle("naive vs parrot attacker (original: the recogniser's ceiling)", y=1.02)
    save_figure(grid.figure, target)


def run(reports: Path, all_results: dict[str, dict[str, Results]]) -> dict[str, pd.DataFrame]:
    """Write the attacks tables of both datasets and the figure; returns the tables."""
    tables = {dataset: rows(dataset, results) for dataset, results in all_results.items()}
    for dataset, frame in tables.items():
        write_table(reports / f"attacks_{dataset}.csv", frame)
        write_bytes(reports / f"attacks_{dataset}.md", markdown(frame, dataset).encode())
        print(markdown(frame, dataset))
    figure(tables, reports / "figures" / "attacks.png")
    return tables
