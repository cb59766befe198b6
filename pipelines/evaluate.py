"""Stage `evaluate@<method>`: every configured metric on one method's anonymised crops, per dataset.

Reads outputs/<dataset>/<method>/ and writes results/<dataset>/<method>.json (infra.records.Results:
the test set's pairs and {metric name: metrics.registry.calc result}, each value with its
interval), results/<dataset>/<method>.pairs.csv (each pair's outcome per metric: pose error,
detected or not, re-identified or not; one row per pair) and results/<dataset>/<method>.features.npz
(the Inception features FID and KID used; empty arrays without them), which pipelines.compare
reads for paired comparisons. A metric whose
pretrained weights are missing or fail their checksum is recorded as {"error": <what is wrong
and what to do>} instead of stopping the stage; the report shows it as not computed. A method
the anonymise stage marked not available gets {"not_available": {"reason": ...}} and no
metric. Real-set statistics and embeddings are cached under evaluate.cache, so each is computed
once per dataset, not once per method. On LFW, `evaluate.lfw_unit: second_photo` counts the image
metrics over one image per distinct second photo, as the authors' folder held them
(MetricInputs.one_image_per_source), and `evaluate.lfw_frame: photo` measures the 256x256 photos
(stage photo-frame) instead of the crops: the real images FID, pose and verification read are then
the real photos in that frame.

    python -m pipelines.evaluate <method>
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from facedata.datasets import DATASETS
from facedata.images import image_file
from facedata.prepared import PreparedDataset
from infra.errors import DataError
from infra.fetch import ChecksumError
from infra.records import (
    ANONYMISED,
    PAIR_RESULTS,
    TEST_PAIRS,
    AnonymiseSummary,
    MetricError,
    MetricResult,
    Results,
    TestSet,
)
from metrics import registry
from metrics.fid import FEATURES, FeatureSets
from metrics.options import metric
from metrics.weights import WeightsUnavailableError
from pipelines import stage
from pipelines.config import Params
from pipelines.layout import Layout, require

#: What results/<dataset>/<method>.features.npz holds when neither FID nor KID was computed.
NO_FEATURES = FeatureSets(np.zeros((0, FEATURES), np.float32), np.zeros((0, FEATURES), np.float32),
                          np.zeros(0, np.int64), "none")


def pair_set(layout: Layout, dataset: str, frame: str = "crop") -> registry.PairSet:
    """The test pairs, their prepared photos in `frame` and the folder of the original photos (download's record)."""
    source = json.loads(require(layout.source(dataset), f"download@{dataset}").read_text())
    return registry.PairSet(TEST_PAIRS[dataset].read(require(layout.test_pairs(dataset), "pairs")),
                            PreparedDataset(require(layout.framed(dataset, frame), "photo-frame")),
                            photos=Path(source["images_dir"]))


def check_outputs(images: Path, summary: AnonymiseSummary, frame: str, method: str) -> None:
    """A DataError where the images are of another frame, or where manifest.csv lists an image that is missing.

    A damaged output folder would otherwise be evaluated with those pairs skipped, as if never anonymised.
    """
    if summary.frame != frame:
        raise DataError(f"{images} holds images in the {summary.frame} frame but evaluate.lfw_frame is {frame}: run "
                        f"`dvc repro anonymise@{method}`")
    written = ANONYMISED.read(images / "manifest.csv")
    for pair_id in written.loc[written["status"] == "ok", "pair_id"]:
        name = image_file(pair_id, summary.image_format)
        if not (images / name).is_file():
            raise DataError(f"{images}: {name} is missing although manifest.csv lists it as anonymised: the "
                            f"folder is damaged; re-run `dvc repro --force anonymise@{method}`")


def run_dataset(params: Params, layout: Layout, method: str, dataset: str) -> Results:
    params.method(method)
    settings = params.evaluate
    images = layout.outputs(dataset, method)
    require(images / "manifest.csv", f"anonymise@{method}")
    frame = params.frame(dataset)
    pairs = pair_set(layout, dataset, frame)
    summary = AnonymiseSummary.read(require(images / "summary.json", f"anonymise@{method}"))
    reason = summary.not_available
    if reason is not None:
        results = Results(pairs_counted(len(pairs.manifest), Counter({"method not available": len(pairs.manifest)}),
                                        frame=frame), not_available=reason)
        PAIR_RESULTS.write(layout.pair_results(dataset, method), pairs.manifest[["pair_id"]])
        NO_FEATURES.write(layout.features(dataset, method))
        results.write(layout.results(dataset, method))
        print(f"{dataset}/{method}: not evaluated, not available ({reason})")
        return results
    check_outputs(images, summary, frame, method)
    inputs = registry.MetricInputs(
        pairs,
        images=images,
        cache=layout.path(settings.cache),
        # Verification thresholds are always chosen on real LFW pairs (LFW calibrates itself).
        calibration=None if dataset == "lfw" else pair_set(layout, "lfw"),
        batch_size=settings.batch_size,
        interval=settings.interval,
        image_format=summary.image_format,
    )
    unit = settings.lfw_unit if dataset == "lfw" else "pair"
    per_image, per_pair_inputs = inputs.one_image_per_source() if unit == "second_photo" else (inputs, inputs)
    by_unit = {"image": per_image, "pair": per_pair_inputs}
    results, per_pair = {}, pd.DataFrame({"pair_id": pairs.manifest["pair_id"]})
    features = NO_FEATURES
    for name in settings.metrics:
        try:
            results[name] = registry.calc(name, by_unit[metric(name).unit], params.metrics[name])
        except (WeightsUnavailableError, ChecksumError) as error:  # the only files this stage fetches are weights
            results[name] = MetricError(name, str(error))
            print(f"{dataset}/{method}: {name} not computed: {error}")
            continue
        result = results[name]
        if "per_pair" in result:
            per_pair = per_pair.merge(result.pop("per_pair"), on="pair_id", how="left")
        features = result.pop("features", features)
        results[name] = MetricResult.of(result)
        value = result.get("value")
        shown = f"{value:.6g}" if isinstance(value, float) else value  # 0.06, not 0.06000000000000001
        print(f"{dataset}/{method}: {name} = {shown} (n={result.get('n')}, skipped {result['n_skipped']}, "
              f"{result['seconds']} s)")
    record = Results(pairs_counted(len(pairs.manifest), by_unit["pair"].evaluable()[1], unit, frame,
                                   summary.image_format), results)
    PAIR_RESULTS.write(layout.pair_results(dataset, method), per_pair)
    features.write(layout.features(dataset, method))
    record.write(layout.results(dataset, method))
    return record


def pairs_counted(pairs: int, skipped: Counter, unit: str = "pair", frame: str = "crop",
                  image_format: str = "png") -> TestSet:
    """The test set's pairs, and those no metric could use (source photo not prepared, no anonymised image)."""
    return TestSet(pairs, sum(skipped.values()), {reason: int(count) for reason, count in sorted(skipped.items())},
                   unit, frame, image_format)


def run(params: Params, layout: Layout, method: str) -> dict[str, Results]:
    return {dataset: run_dataset(params, layout, method, dataset) for dataset in DATASETS}


def main(argv: list[str] | None = None, layout: Layout = Layout()) -> None:
    stage.main(run, "evaluate", __doc__, item="method", argv=argv, layout=layout,
               lock_folder=lambda layout, _: layout.results_root)


if __name__ == "__main__":
    main()
