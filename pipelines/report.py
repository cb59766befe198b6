"""Stage `report`: Tables 1 (CelebA) and 2 (LFW) beside the paper's numbers, and the figures.

Reads results/<dataset>/<method>.json (+ .pairs.csv), outputs/<dataset>/<method>/ and
dvclive/<method>/; writes reports/table{1,2}.{md,csv,tex}, the attacks tables reports/attacks_{celeba,lfw}.{md,csv}
(pipelines.attacks) and reports/figures/*.png.
A metric that was not computed (e.g. pretrained weights missing) shows as "-"; a method that
could not run (its released weights not available) as "not available", with the reason.

    python -m pipelines.report
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import yaml

from facedata.images import image_file, read_rgb
from facedata.prepared import PreparedDataset
from infra.atomic import atomic_path, write_bytes, write_table
from infra.errors import MissingInputError, ParamsError
from infra.records import ANONYMISED, PAIR_RESULTS, AnonymiseSummary, Results
from pipelines import attacks, stage
from pipelines.config import Params
from pipelines.layout import Layout
from pipelines.tables import table, to_latex, to_markdown

TABLES = {"celeba": (1, "Table 1: CelebA test set"), "lfw": (2, "Table 2: LFW (re-id: mean ± std over folds)")}


def load_results(layout: Layout, dataset: str, methods: list[str]) -> dict[str, Results]:
    found = {}
    for method in methods:
        path = layout.results(dataset, method)
        if path.is_file():
            found[method] = Results.read(path)
        else:
            print(f"report: no results for {dataset}/{method} ({path} missing); its row is left out")
    return found


def save_figure(figure: plt.Figure, target: Path) -> None:
    with atomic_path(target) as tmp:
        figure.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    plt.close(figure)


def privacy_utility(all_results: dict, paper: dict, target: Path) -> None:
    """Re-identification against image quality, one point per method; the paper's beside ours.

    Left: the paper's axes (FID, FaceNet casia re-id); our points appear where the Inception
    and FaceNet weights were available. Right: the offline axes (dlib detection, dlib
    verification re-id), always computed. Our points carry their intervals as error bars.
    """
    figure, axes = plt.subplots(len(all_results), 2, figsize=(12, 5 * len(all_results)), squeeze=False)
    for row, (dataset, results) in enumerate(all_results.items()):
        ours = pd.DataFrame([{"method": m, **_point(r, "fid", "fid"), **_point(r, "reid_facenet_casia", "reid"),
                              **_point(r, "detection_dlib", "detection"), **_point(r, "verification_dlib", "verified")}
                             for m, r in results.items()])
        theirs = pd.DataFrame(
            [
                {
                    "method": m,
                    "fid": v["fid"],
                    "reid": v["reid_facenet_casia"][0]
                    if isinstance(v["reid_facenet_casia"], list)
                    else v["reid_facenet_casia"],
                }
                for m, v in paper.get(dataset, {}).items()
            ]
        )
        left, right = axes[row]
        left.scatter(
            theirs["fid"], 100 * theirs["reid"], marker="o", facecolors="none", edgecolors="grey", label="paper"
        )
        _with_error_bars(left, ours, "fid", "reid", 1.0, "tab:blue", "ours (95 % intervals)")
        for frame, colour in ((theirs, "grey"), (ours, "tab:blue")):
            for item in frame.itertuples():
                if np.isfinite(item.fid) and np.isfinite(item.reid):
                    left.annotate(item.method, (item.fid, 100 * item.reid), fontsize=7, color=colour)
        missing = ours["fid"].isna().all() or ours["reid"].isna().all()
        left.set(
            title=f"{dataset}: paper axes" + (" (ours not computed: weights missing)" if missing else ""),
            xlabel="FID (lower is better)",
            ylabel="re-id, FaceNet casia top-1 (%)",
        )
        left.legend()
        _with_error_bars(right, ours, "detection", "verified", 100.0, "tab:orange", None)
        for item in ours.itertuples():
            if np.isfinite(item.detection) and np.isfinite(item.verified):
                right.annotate(item.method, (100 * item.detection, 100 * item.verified), fontsize=7)
        right.set(
            title=f"{dataset}: offline axes",
            xlabel="dlib detection (%, higher is better)",
            ylabel="re-id, dlib verification (%, lower is better)",
        )
    save_figure(figure, target)


def _point(result: Results, metric: str, name: str) -> dict[str, float]:
    """A method's value of `metric` and its interval as columns `name`, `name_low`, `name_high`."""
    low, high = result.interval(metric)
    return {name: result.value(metric), f"{name}_low": low, f"{name}_high": high}


def _with_error_bars(axis: plt.Axes, points: pd.DataFrame, x: str, y: str, x_scale: float, colour: str,
                     label: str | None) -> None:
    """Each method's point with its intervals as error bars (none where it has no interval)."""
    def errors(name: str, scale: float) -> np.ndarray:
        below, above = points[name] - points[f"{name}_low"], points[f"{name}_high"] - points[name]
        return scale * np.nan_to_num(np.vstack([below, above]).clip(min=0))

    axis.errorbar(x_scale * points[x], 100 * points[y], xerr=errors(x, x_scale), yerr=errors(y, 100.0), fmt="o",
                  color=colour, ecolor=colour, elinewidth=1, capsize=2, label=label)


def detection(all_results: dict, paper: dict, target: Path) -> None:
    """Detection rates per method and detector, with their intervals, and the paper's as black marks."""
    rows = []
    for dataset, results in all_results.items():
        for method, result in results.items():
            for metric, detector in (("detection_dlib", "dlib"), ("detection_mtcnn", "MTCNN")):
                reference = paper.get(dataset, {}).get(method, {}).get(metric)
                low, high = result.interval(metric)
                rows.append(
                    {
                        "dataset": dataset,
                        "method": method,
                        "detector": detector,
                        "ours": 100 * result.value(metric),
                        "low": 100 * low,
                        "high": 100 * high,
                        "paper": math.nan if reference is None else 100 * reference,
                    }
                )
    frame = pd.DataFrame(rows)
    grid = sns.catplot(frame, x="method", y="ours", hue="detector", col="dataset", kind="bar", height=4, aspect=1.6)
    for axis, (_, part) in zip(grid.axes.flat, frame.groupby("dataset", sort=False), strict=True):
        order = [label.get_text() for label in axis.get_xticklabels()]
        for offset, detector in ((-0.2, "dlib"), (0.2, "MTCNN")):
            points = part[part["detector"] == detector].set_index("method").reindex(order)
            spread = np.nan_to_num(np.vstack([points["ours"] - points["low"], points["high"] - points["ours"]]))
            axis.errorbar(np.arange(len(order)) + offset, points["ours"], yerr=spread.clip(min=0), fmt="none",
                          ecolor="black", elinewidth=1, capsize=2)
            if points["paper"].isna().all():  # none of the paper's rows (matplotlib cannot place only NaNs)
                continue
            axis.scatter(
                np.arange(len(order)) + offset,
                points["paper"],
                marker="_",
                s=200,
                color="black",
                label="paper" if detector == "dlib" else None,
            )
        axis.tick_params(axis="x", rotation=45)
        axis.set(ylabel="faces detected (%)", ylim=(0, 105))
    if grid.axes.flat[0].get_legend_handles_labels()[0]:
        grid.axes.flat[0].legend(loc="lower left")
    save_figure(grid.figure, target)


def pose_errors(layout: Layout, all_results: dict, target: Path) -> None:
    frames = []
    for dataset, results in all_results.items():
        for method in results:
            path = layout.pair_results(dataset, method)
            if path.is_file():
                per_pair = PAIR_RESULTS.read(path)
                if "pose_error" in per_pair:
                    frames.append(per_pair[["pose_error"]].dropna().assign(dataset=dataset, method=method))
    figure, axis = plt.subplots(figsize=(12, 4))
    if frames:
        sns.boxplot(pd.concat(frames), x="method", y="pose_error", hue="dataset", ax=axis, showfliers=False)
    axis.set(ylabel="pose error (L1 / outer-eye distance)",
             title="pose error per image (where its detector found both faces)")
    axis.tick_params(axis="x", rotation=45)
    save_figure(figure, target)


def training_curves(live: Path, methods: list[str], target: Path) -> None:
    """Every scalar DVCLive logged for each trained method, against its step."""
    frames = []
    for method in methods:
        for path in sorted((live / method / "plots" / "metrics").rglob("*.tsv")):
            series = pd.read_csv(path, sep="\t")
            name = path.relative_to(live / method / "plots" / "metrics").with_suffix("").as_posix()
            frames.append(
                pd.DataFrame(
                    {"method": method, "metric": name, "step": series["step"], "value": series[series.columns[-1]]}
                )
            )
    if not frames:
        figure, axis = plt.subplots(figsize=(6, 2))
        axis.text(0.5, 0.5, "no training logs in dvclive/", ha="center", va="center")
        axis.axis("off")
        save_figure(figure, target)
        return
    curves = pd.concat(frames)
    grid = sns.relplot(
        curves,
        x="step",
        y="value",
        hue="metric",
        col="method",
        col_wrap=3,
        kind="line",
        height=3,
        aspect=1.4,
        facet_kws={"sharey": False, "sharex": False},
    )
    save_figure(grid.figure, target)


def qualitative(layout: Layout, dataset: str, methods: list[str], names: dict[str, str], pairs: int,
                target: Path) -> None:
    """The paper's Figure 3 layout: condition, source, then every method's output for the same pair.

    Methods without images (not available) are left out, and the stage says so.
    """
    manifests = {
        m: ANONYMISED.read(layout.outputs(dataset, m) / "manifest.csv")
        for m in methods
        if (layout.outputs(dataset, m) / "manifest.csv").is_file()
    }
    for method in [m for m, frame in manifests.items() if not (frame["status"] == "ok").any()]:
        print(f"report: {dataset}/{method} has no anonymised images; left out of the qualitative figure")
        del manifests[method]
    if not manifests:
        raise MissingInputError(f"no anonymised outputs under {layout.outputs_root / dataset}")
    shown = list(manifests)
    ready = set.intersection(*(set(f.loc[f["status"] == "ok", "pair_id"]) for f in manifests.values()))
    first = next(iter(manifests.values()))
    rows = first[first["pair_id"].isin(ready)].head(pairs)
    summaries = {m: AnonymiseSummary.read(layout.outputs(dataset, m) / "summary.json") for m in shown}
    faces = PreparedDataset(layout.framed(dataset, summaries[shown[0]].frame))  # the frame the methods were shown in
    columns = ["condition", "source", *shown]
    figure, axes = plt.subplots(len(rows), len(columns), figsize=(1.2 * len(columns), 1.5 * len(rows)), squeeze=False)
    for r, row in enumerate(rows.itertuples()):
        images = [faces.crop(row.condition), faces.crop(row.source)]
        images += [read_rgb(layout.outputs(dataset, m) / image_file(row.pair_id, summaries[m].image_format))
                   for m in shown]
        for c, image in enumerate(images):
            axes[r, c].imshow(image)
            axes[r, c].set_xticks([])
            axes[r, c].set_yticks([])
            if r == 0:
                axes[r, c].set_title(names.get(columns[c], columns[c]).replace(" ", "\n", 1), fontsize=6)
    save_figure(figure, target)


def run(params: Params, layout: Layout) -> dict[str, pd.DataFrame]:
    methods = list(params.methods)
    if not methods:
        raise ParamsError("params.yaml methods is empty: the tables need at least one method")
    paper = yaml.safe_load(layout.paper_numbers.read_text())
    all_results = {dataset: load_results(layout, dataset, methods) for dataset in TABLES}
    tables = {}
    for dataset, (number, caption) in TABLES.items():
        frame = table(all_results[dataset], paper[dataset], paper["rows"], with_std=dataset == "lfw")
        write_table(layout.reports / f"table{number}.csv", frame)
        write_bytes(layout.reports / f"table{number}.md", to_markdown(frame, caption).encode())
        write_bytes(layout.reports / f"table{number}.tex",
                    to_latex(frame, caption, params.report.latex_intervals).encode())
        tables[dataset] = frame
        print(to_markdown(frame, caption))
    attacks.run(layout.reports, all_results)  # the naive and the parrot attacker: reports/attacks_*, not Tables 1-2
    figures = layout.reports / "figures"
    privacy_utility(all_results, paper, figures / "privacy_utility.png")
    detection(all_results, paper, figures / "detection.png")
    pose_errors(layout, all_results, figures / "pose_error.png")
    training_curves(layout.live_root, methods, figures / "training_curves.png")
    for dataset in TABLES:
        qualitative(layout, dataset, methods, paper["rows"], params.report.grid_pairs,
                    figures / f"qualitative_{dataset}.png")
    return tables


def main(argv: list[str] | None = None, layout: Layout = Layout()) -> None:
    stage.main(run, "report", __doc__, argv=argv, layout=layout)


if __name__ == "__main__":
    main()
