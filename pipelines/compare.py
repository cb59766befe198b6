"""Whether two methods, or one method in two runs, differ: paired tests on the same pairs, Holm-corrected.

    python -m pipelines.compare main blur-k51 --method blur          # one method, two revisions or experiments
    python -m pipelines.compare workspace:blur workspace:pixelate    # two methods of one run
    python -m pipelines.compare HEAD~1 workspace --method blur --dataset lfw

A side is `REV` or `REV:METHOD`: REV is a git revision, a DVC experiment name, or `workspace` for
the files on disk; METHOD defaults to --method. Each side's results/<dataset>/<method>.json,
.pairs.csv and .features.npz are read through DVC's Python API (from its cache or remote: no
checkout, nothing re-run). Per metric, on the pairs both sides evaluated (metrics.uncertainty):
shares (detection, re-identification, verification) by McNemar's exact test, pose error by a
paired permutation test, FID and KID by a paired bootstrap that reuses both sides' Inception
features; then Holm's correction across the metrics. FID and KID compare only features of one
Inception and one real set; when the sides evaluated different pairs they are recomputed on the
pairs both have, and the table says which N it used. Levels, resamples and seed are the
workspace params' `evaluate.interval`.

Prints one Markdown table per dataset: metric, N, A, B, A - B with its interval, test, p, Holm's p,
and the verdict at the interval's level.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from facedata.datasets import DATASETS
from infra.errors import DataError, MissingInputError, ParamsError
from infra.records import PAIR_RESULTS, MetricResult, Results
from metrics import uncertainty
from metrics.fid import FeatureSets, MmdResamples, frechet
from metrics.options import IntervalOptions
from pipelines import config, stage
from pipelines.layout import Layout

WORKSPACE = "workspace"
SHARES = ("detection", "reid", "verification")  # metrics whose values are shares, printed in %


@dataclass(frozen=True)
class Side:
    """One side of a comparison: a method's results at one revision."""

    label: str  # REV:METHOD as given
    results: Results
    per_pair: pd.DataFrame
    features: FeatureSets | None  # None where the revision has no features file (evaluated before they were kept)


@dataclass(frozen=True)
class Row:
    metric: str
    n: int
    a: float
    b: float
    difference: uncertainty.Difference | None
    note: str = ""  # why there is no test, or what was compared


def parse_side(text: str, method: str | None) -> tuple[str, str]:
    """(revision, method) of `REV` or `REV:METHOD`."""
    revision, _, named = text.partition(":")
    chosen = named or method
    if not revision or not chosen:
        raise ParamsError(f"side {text!r}: give REV:METHOD, or REV with --method")
    return revision, chosen


def fetch(layout: Layout, revision: str, path: Path, into: Path) -> Path | None:
    """A copy of the repository file `path` at `revision` (via dvc.api), or None where it does not exist there."""
    import dvc.api
    from dvc.exceptions import PathMissingError

    relative = path.relative_to(layout.root)
    target = into / revision.replace("/", "_") / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        with dvc.api.open(str(relative), repo=str(layout.root), rev=None if revision == WORKSPACE else revision,
                          mode="rb") as source, open(target, "wb") as copy:
            shutil.copyfileobj(source, copy)
    except (FileNotFoundError, PathMissingError):
        return None
    return target


def read_side(layout: Layout, text: str, method: str | None, dataset: str, scratch: Path) -> Side:
    revision, name = parse_side(text, method)
    results = fetch(layout, revision, layout.results(dataset, name), scratch)
    if results is None:
        raise MissingInputError(f"{revision} has no {layout.results(dataset, name).relative_to(layout.root)}: "
                                f"was evaluate@{name} run (and its outputs committed or cached) there?")
    per_pair = fetch(layout, revision, layout.pair_results(dataset, name), scratch)
    features = fetch(layout, revision, layout.features(dataset, name), scratch)
    feature_sets = None
    if features is not None:
        with open(features, "rb") as handle:
            feature_sets = FeatureSets.read(handle, f"{revision}:{features.name}")
    return Side(f"{revision}:{name}", Results.read(results),
                PAIR_RESULTS.read(per_pair) if per_pair is not None else pd.DataFrame({"pair_id": []}),
                feature_sets if feature_sets is not None and len(feature_sets.anonymised) else None)


def per_pair_row(metric: str, a: Side, b: Side, options: IntervalOptions) -> Row:
    """The paired test of one metric's per-pair outcomes, on the pairs both sides have a value for."""
    if metric not in a.per_pair or metric not in b.per_pair:
        return Row(metric, 0, a.results.value(metric), b.results.value(metric), None,
                   "no per-pair values on both sides (evaluated before they were kept?)")
    both = a.per_pair[["pair_id", metric]].merge(b.per_pair[["pair_id", metric]], on="pair_id").dropna()
    first, second = both[f"{metric}_x"].astype(float).to_numpy(), both[f"{metric}_y"].astype(float).to_numpy()
    if len(both) < 2:
        return Row(metric, len(both), np.nan, np.nan, None, "fewer than two pairs with a value on both sides")
    binary = np.isin(first, (0.0, 1.0)).all() and np.isin(second, (0.0, 1.0)).all()
    test = uncertainty.paired_binary if binary else uncertainty.paired_values
    difference = test(first.astype(bool) if binary else first, second.astype(bool) if binary else second, options)
    return Row(metric, len(both), float(first.mean()), float(second.mean()), difference)


def feature_row(metric: str, a: Side, b: Side, options: IntervalOptions) -> Row:
    """FID or KID of both sides on the pairs both evaluated, by a paired bootstrap over those pairs and the real set."""
    if a.features is None or b.features is None:
        return Row(metric, 0, a.results.value(metric), b.results.value(metric), None,
                   "no Inception features on both sides (evaluated before they were kept?)")
    if a.features.weights != b.features.weights or not np.array_equal(a.features.real, b.features.real):
        return Row(metric, 0, a.results.value(metric), b.results.value(metric), None,
                   "not compared: different real sets or Inception features, so the distances measure different things")
    common, a_rows, b_rows = np.intersect1d(a.features.pair_ids, b.features.pair_ids, return_indices=True)
    real, first, second = a.features.real, a.features.anonymised[a_rows], b.features.anonymised[b_rows]
    note = "" if len(common) == len(a.features.pair_ids) == len(b.features.pair_ids) else (
        f"on the {len(common)} pairs both evaluated (A had {len(a.features.pair_ids)}, B {len(b.features.pair_ids)})")
    distance: Callable[[np.ndarray, np.ndarray], Callable[[np.ndarray, np.ndarray], float]]
    if metric == "fid":
        def distance(real_set, fake):
            return lambda i, j: frechet(real_set[i], fake[j])
    else:  # KID: the unbiased MMD^2 of all images, as its interval in the results
        distance = MmdResamples
        note = "; ".join(filter(None, ["MMD^2 of all images", note]))
    of_a, of_b = distance(real, first), distance(real, second)
    every = (np.arange(len(real)), np.arange(len(common)))
    value_a, value_b = of_a(*every), of_b(*every)
    difference = uncertainty.paired_sets(lambda i, j: of_a(i, j) - of_b(i, j), (len(real), len(common)),
                                         value_a - value_b, options, metric.upper())
    return Row(metric, len(common), value_a, value_b, difference, note)


def compare(a: Side, b: Side, options: IntervalOptions) -> list[Row]:
    """A row per metric both sides computed a value of, in the order of A's results."""
    rows = []
    for metric in a.results.metrics:
        if not (_has_value(a.results, metric) and _has_value(b.results, metric)):  # not computed on one side
            continue
        rows.append((feature_row if metric in ("fid", "kid") else per_pair_row)(metric, a, b, options))
    return rows


def _has_value(results: Results, metric: str) -> bool:
    result = results.metrics.get(metric)
    return isinstance(result, MetricResult) and result.value is not None


def _number(metric: str, value: float, signed: bool = False) -> str:
    if value is None or not np.isfinite(value):
        return "-"
    share = metric.startswith(SHARES)
    text = f"{100 * value:{'+' if signed else ''}.2f}" if share else f"{value:{'+' if signed else ''}.4g}"
    return text + (" pp" if signed and share else "%" if share else "")


def to_markdown(rows: list[Row], a: Side, b: Side, dataset: str, level: float) -> str:
    tested = [row for row in rows if row.difference is not None]
    adjusted = dict(zip((row.metric for row in tested),
                        uncertainty.holm([row.difference.p for row in tested], level), strict=True))
    lines = [f"**{dataset}: A = {a.label}, B = {b.label}** ({100 * level:g} % intervals; Holm's correction over "
             f"the {len(tested)} tests)", "",
             "| metric | N | A | B | A - B [interval] | test | p | p (Holm) | verdict |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        d = row.difference
        if d is None:
            lines.append(f"| {row.metric} | {row.n} | {_number(row.metric, row.a)} | {_number(row.metric, row.b)} "
                         f"| - | - | - | - | {row.note} |")
            continue
        p_holm = adjusted[row.metric]
        verdict = ("no evidence of a difference" if p_holm >= 1 - level
                   else f"A {'higher' if d.difference > 0 else 'lower'}")
        interval = (f"{_number(row.metric, d.difference, True)} [{_number(row.metric, d.low, True)}, "
                    f"{_number(row.metric, d.high, True)}]")
        lines.append(f"| {row.metric} | {row.n} | {_number(row.metric, row.a)} | {_number(row.metric, row.b)} "
                     f"| {interval} | {d.test} | {d.p:.3g} | {p_holm:.3g} | {verdict}"
                     f"{f' ({row.note})' if row.note else ''} |")
    return "\n".join([*lines, ""])


def run(layout: Layout, first: str, second: str, method: str | None, datasets: list[str]) -> str:
    options = config.load(layout.params_file).evaluate.interval
    tables = []
    with tempfile.TemporaryDirectory(prefix="compare-") as scratch:
        for dataset in datasets:
            a, b = (read_side(layout, side, method, dataset, Path(scratch)) for side in (first, second))
            for side in (a, b):
                if side.results.not_available is not None:
                    raise DataError(f"{side.label} on {dataset} is not available: {side.results.not_available}")
            tables.append(to_markdown(compare(a, b, options), a, b, dataset, options.level))
    return "\n".join(tables)


def main(argv: list[str] | None = None, layout: Layout = Layout()) -> str:
    parser = argparse.ArgumentParser(prog="python -m pipelines.compare", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("a", help="REV or REV:METHOD (REV: git revision, DVC experiment or 'workspace')")
    parser.add_argument("b", help="the other side, the same way")
    parser.add_argument("--method", help="the method of a side given as REV alone")
    parser.add_argument("--dataset", choices=DATASETS, help="one dataset (default: every dataset)")
    args = parser.parse_args(argv)
    datasets = [args.dataset] if args.dataset else list(DATASETS)
    text = stage.guarded("compare", lambda: run(layout, args.a, args.b, args.method, datasets))
    print(text)
    return text


if __name__ == "__main__":
    main()
