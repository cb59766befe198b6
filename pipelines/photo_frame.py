"""Stage `photo-frame`: LFW in the AnonyGAN authors' frame, each whole photo at 256x256 (facedata.photo_frame).

Reads data/prepared/lfw (landmarks and transforms) and the LFW photos download@lfw recorded;
writes data/prepared/lfw-photo/ in the prepared layout plus summary.json. The anonymise and
evaluate stages read it when `evaluate.lfw_frame` is `photo`. Every run rebuilds the folder
(about a minute for all of LFW's 7,701 photos) in a staging folder that then replaces the old
one as a whole, so a killed run leaves the last complete frame and is simply run again.

    python -m pipelines.photo_frame
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from facedata import photo_frame
from facedata.prepared import PreparedDataset
from infra.atomic import finish_swap, swap_in, write_json
from pipelines import stage
from pipelines.config import Params
from pipelines.layout import Layout, require

DATASET = "lfw"


def run(params: Params, layout: Layout) -> dict:
    source = json.loads(require(layout.source(DATASET), f"download@{DATASET}").read_text())
    prepared = PreparedDataset(layout.prepared(DATASET))
    out = layout.framed(DATASET, "photo")
    finish_swap(out, layout.remove)
    staging = out.parent / f".{out.name}.partial"
    layout.remove(staging)
    staging.mkdir(parents=True)
    summary = photo_frame.build(prepared, Path(source["images_dir"]), staging,
                                params.prepare.workers or os.cpu_count() or 1)
    write_json(staging / "summary.json", summary)
    swap_in(staging, out, layout.remove)
    print(f"{DATASET}: {summary['framed']} of {summary['photos']} photos in the {photo_frame.SIZE}x{photo_frame.SIZE} "
          f"photo frame ({summary['not_square']} not square)")
    return summary


def main(argv: list[str] | None = None, layout: Layout = Layout()) -> None:
    stage.main(run, "photo-frame", __doc__, argv=argv, layout=layout)


if __name__ == "__main__":
    main()
