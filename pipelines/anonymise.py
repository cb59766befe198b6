"""Stage `anonymise@<method>`: one registered anonymiser over the test pairs of every dataset.

For each dataset it writes lossless crops
`outputs/<dataset>/<method>/<pair_id>.png` with a `manifest.csv` (pair_id, source,
condition, status). Pairs whose source photo was not prepared are listed with their
status and get no image. The folder is replaced as a whole only when every batch succeeded.

    python -m pipelines.anonymise <method>

The method is the registered anonymiser of that name, or the one its `methods` entry names
(`anonymiser: folder` evaluates images another program wrote; see the README).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from tqdm import tqdm

from baselines import RunContext, check_output, create, identity_order, load_batch
from facedata.atomic import write_json, write_table
from facedata.prepared import PreparedDataset
from pipelines.params import ParamsError, integer, method_stage, section

OUTPUTS = Path("outputs")


def run(
    dataset: str,
    method: str,
    params: dict,
    *,
    pairs: Path = Path("data/pairs"),
    prepared: Path = Path("data/prepared"),
    models: Path = Path("models"),
    out_root: Path = OUTPUTS,
) -> dict:
    started = time.perf_counter()
    batch_size = integer(section(params, "anonymise").get("batch_size"), "anonymise.batch_size", 1)
    manifest = pd.read_csv(pairs / f"{dataset}_test.csv")
    faces = PreparedDataset(prepared / dataset)
    context = RunContext(
        method=method, dataset=dataset, params=params, identities=identity_order(manifest), models=models
    )
    entry = (params.get("methods") or {}).get(method) or {}
    anonymiser = create(entry.get("anonymiser", method), context)

    runnable = manifest["source"].isin(faces.ok.index) & manifest["condition"].isin(faces.ok.index)
    status = np.where(runnable, "ok", "skipped: " + manifest["source_status"].astype(str))
    out = out_root / dataset / method
    staging = out.parent / f".{method}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    todo = manifest[runnable]
    for start in tqdm(range(0, len(todo), batch_size), desc=f"{dataset}/{method}", unit="batch", disable=None):
        batch = load_batch(todo.iloc[start : start + batch_size], faces, faces)
        images = check_output(batch, anonymiser.anonymise(batch), method)
        for pair_id, image in zip(batch.pair_ids, images, strict=True):
            Image.fromarray(image).save(staging / f"{pair_id}.png", compress_level=1)
    write_table(staging / "manifest.csv", manifest[["pair_id", "source", "condition"]].assign(status=status))
    summary = {
        "dataset": dataset,
        "method": method,
        "pairs": len(manifest),
        "anonymised": len(todo),
        "skipped": int((~runnable).sum()),
        "seconds": round(time.perf_counter() - started, 2),
    }
    write_json(staging / "summary.json", summary)
    shutil.rmtree(out, ignore_errors=True)
    os.replace(staging, out)
    print(
        f"{dataset}/{method}: {summary['anonymised']} of {summary['pairs']} pairs anonymised, "
        f"{summary['skipped']} skipped (source not prepared) in {summary['seconds']} s"
    )
    return summary


def main(argv: list[str] | None = None) -> None:
    method_stage("anonymise", run, __doc__, argv, errors=(ParamsError, FileNotFoundError, KeyError, ValueError))


if __name__ == "__main__":
    main()
