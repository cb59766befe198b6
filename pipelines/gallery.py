"""The parrot attacker's gallery: a second output of `anonymise@<method>`, built when a metric reads it.

The adaptive ("parrot") attacker anonymises its own gallery with the same method before matching
(metrics.attacks). The anonymise stage builds that gallery only when `evaluate.metrics` names a
metric that reads it (`metrics.options.Metric.gallery`), inside the method's output folder:

    outputs/<dataset>/<method>/gallery/<pair_id>.png + manifest.csv

- LFW: each pair's *first* photo anonymised (the probe is the pair's anonymised second photo);
- CelebA: each test photo anonymised a second time, under the gallery's condition rule (a probe is
  never matched with its own photo: metrics.attacks leaves it out).

`anonymise.gallery_condition` chooses each gallery photo's condition:
- `same`: the condition the test pairs give. LFW: the probe's (the pair's condition photo, and the identity
  the method derives its condition from is the probe's: CIAGAN's target follows the source identity's
  position); CelebA: the photo's own pair's, whose condition identity all of that person's photos share;
- `different`: another identity's: the condition photo is the (pair_id mod n)-th prepared photo, in key
  order, of a person who is neither the pair's nor its condition's (no such person prepared: that gallery
  photo is skipped, its status says why), and methods that derive the target from the identity order
  (CIAGAN) see that order shifted by one place, so each identity gets the target of the identity after it.
Methods without a condition (original, blur, pixelation) ignore the rule: their gallery is the same either way.
The manifest records the rule in `condition_rule`. A third-party folder method (`anonymiser: folder`) supplies its
gallery as `<root>/<dataset>/gallery/<pair_id>.png`; without that folder every gallery row is "not available".
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from baselines.interface import RunContext, create
from facedata.prepared import PreparedDataset
from infra.errors import MissingInputError
from infra.records import ANONYMISED
from metrics import options
from pipelines.config import Params

if TYPE_CHECKING:
    from pipelines.anonymise import Faces

GALLERY = "gallery"
NO_CONDITION = "-"  # no prepared photo has this key
NO_OTHER_PERSON = "no prepared photo of a person outside the pair to condition on"
#: Prepended to the identity order in the `different` rule: a name no photo has, so every position moves by one.
SHIFT = ""


def wanted(params: Params) -> bool:
    """Whether a metric of `evaluate.metrics` reads the parrot's gallery."""
    return any(options.metric(name).gallery for name in params.evaluate.metrics)


def gallery_pairs(manifest: pd.DataFrame, faces: PreparedDataset, rule: str) -> pd.DataFrame:
    """The gallery's anonymise manifest: pair_id, source (the photo to anonymise), condition, label, source_status.

    `label` is the identity the anonymiser is told the photo has (the probe's: `FaceBatch.source_identity`).
    """
    photo = "first" if "first" in manifest.columns else "source"
    rows = pd.DataFrame({"pair_id": manifest["pair_id"], "source": manifest[photo],
                         "condition": manifest["condition"], "label": manifest["source_identity"],
                         "source_status": manifest[f"{photo}_status"]})
    if rule == "different":
        rows["condition"] = other_conditions(manifest, faces, photo)
        rows.loc[rows["condition"] == NO_CONDITION, "source_status"] = NO_OTHER_PERSON  # its status: skipped, and why
    return rows


def other_conditions(manifest: pd.DataFrame, faces: PreparedDataset, photo: str) -> list[str]:
    """Per pair, a prepared photo of a person other than the gallery photo's, the probe's and the condition's.

    NO_CONDITION where the prepared set has no such person (a tiny test set): that gallery photo is skipped.
    """
    keys = np.array(sorted(faces.ok.index))
    identities = faces.ok.loc[keys, "identity"].astype(str).to_numpy()
    chosen = []
    for row in manifest.itertuples():
        excluded = {row.source_identity, row.condition_identity, getattr(row, f"{photo}_identity")}
        candidates = keys[~np.isin(identities, list(excluded))]
        chosen.append(str(candidates[row.pair_id % len(candidates)]) if len(candidates) else NO_CONDITION)
    return chosen


def build(params: Params, method: str, context: RunContext, manifest: pd.DataFrame, faces: Faces,
          folder: Path) -> int:
    """Anonymise the gallery of `manifest` into `folder` with a fresh anonymiser of the method; images written."""
    from pipelines.anonymise import anonymise_pairs  # the stage imports this module: no import cycle at load

    rule = params.anonymise.gallery_condition
    identities = (SHIFT, *context.identities) if rule == "different" else context.identities
    rows = gallery_pairs(manifest, faces.framed, rule)
    folder.mkdir()
    try:  # a third-party folder method reads its gallery from <root>/<dataset>/gallery/
        anonymiser = create(params.method(method).anonymiser_name(method), params.anonymiser_settings(method),
                            dataclasses.replace(context, identities=identities, dataset=f"{context.dataset}/{GALLERY}"))
    except MissingInputError as error:
        print(f"{context.dataset}/{method}: no parrot gallery ({error})")
        status = np.full(len(rows), f"not available: {error}")
    else:
        status = anonymise_pairs(anonymiser, rows, faces, folder, params.anonymise.batch_size, f"{method} gallery",
                                 context.dataset)
    ANONYMISED.write(folder / "manifest.csv", rows[["pair_id", "source", "condition"]].assign(
        status=status, condition_rule=rule))
    return int((status == "ok").sum())
