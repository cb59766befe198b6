"""Stage `evaluate@<method>`: every configured metric on one method's anonymised crops, per dataset.

Reads outputs/<dataset>/<method>/ and writes results/<dataset>/<method>.json
({metric name: metrics.calc result}) and results/<dataset>/<method>.pairs.csv (the per-pair
values metrics report: pose error, detected or not; one row per pair). A metric whose
pretrained weights are not available is recorded as {"error": <what is missing and where to
put it>} instead of stopping the stage; the report shows it as not computed. Real-set
statistics and embeddings are cached under evaluate.cache, so each is computed once per
dataset, not once per method.

    python -m pipelines.evaluate <method>
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

import metrics
from facedata.atomic import write_json, write_table
from facedata.prepared import PreparedDataset
from metrics.weights import WeightsUnavailableError
from pipelines.params import ParamsError, integer, method_stage, section

RESULTS = Path("results")


def metric_settings(params: dict) -> tuple[list[str], dict[str, dict]]:
    """The metrics to compute (evaluate.metrics) and their options (the `metrics` section)."""
    names = section(params, "evaluate").get("metrics")
    if not isinstance(names, list) or not names:
        raise ParamsError(f"evaluate.metrics must be a non-empty list of metric names; got {names!r}")
    unknown = sorted(set(names) - set(metrics.available()))
    if unknown:
        raise ParamsError(f"evaluate.metrics: unknown metric(s) {unknown}; available: {', '.join(metrics.available())}")
    options = params.get("metrics") or {}
    strays = sorted(set(options) - set(metrics.available()))
    if strays:
        raise ParamsError(f"params.yaml 'metrics' has options for unknown metric(s) {strays}")
    return names, {name: dict(options.get(name) or {}) for name in names}


def run(
    dataset: str,
    method: str,
    params: dict,
    *,
    pairs: Path = Path("data/pairs"),
    prepared: Path = Path("data/prepared"),
    outputs: Path = Path("outputs"),
    out_root: Path = RESULTS,
) -> dict:
    names, options = metric_settings(params)
    settings = section(params, "evaluate")
    images = outputs / dataset / method
    if not (images / "manifest.csv").is_file():
        raise FileNotFoundError(f"{images}/manifest.csv not found: run `dvc repro` for this method's anonymise stage")
    pair_set = metrics.PairSet(pd.read_csv(pairs / f"{dataset}_test.csv"), PreparedDataset(prepared / dataset))
    # Verification thresholds are always chosen on real LFW pairs (LFW calibrates itself).
    calibration = (
        None
        if dataset == "lfw"
        else metrics.PairSet(pd.read_csv(pairs / "lfw_test.csv"), PreparedDataset(prepared / "lfw"))
    )
    inputs = metrics.MetricInputs(
        pair_set,
        images=images,
        cache=Path(settings.get("cache", ".cache/metrics")),
        calibration=calibration,
        batch_size=integer(settings.get("batch_size"), "evaluate.batch_size", 1),
    )
    results, per_pair = {}, pd.DataFrame({"pair_id": pair_set.manifest["pair_id"]})
    for name in names:
        try:
            results[name] = metrics.calc(name, inputs, **options.get(name, {}))
        except WeightsUnavailableError as error:
            results[name] = {"metric": name, "error": str(error)}
            print(f"{dataset}/{method}: {name} not computed: {error}")
            continue
        result = results[name]
        if "per_pair" in result:
            per_pair = per_pair.merge(result.pop("per_pair"), on="pair_id", how="left")
        print(
            f"{dataset}/{method}: {name} = {result.get('value')} (n={result.get('n')}, "
            f"skipped {result['n_skipped']}, {result['seconds']} s)"
        )
    write_table(out_root / dataset / f"{method}.pairs.csv", per_pair)
    write_json(out_root / dataset / f"{method}.json", results)
    return results


def main(argv: list[str] | None = None) -> None:
    method_stage("evaluate", run, __doc__, argv, errors=(ParamsError, FileNotFoundError, ValueError))


if __name__ == "__main__":
    main()
