"""The unmodified source crop, evaluated like any method: the upper bound of detection and
re-identification and the lower bound of FID, beside which every anonymiser is read."""

from __future__ import annotations

import numpy as np

from baselines.interface import Anonymiser, FaceBatch


class Original(Anonymiser):
    """Returns the source crops unchanged."""

    any_frame = True

    def anonymise(self, batch: FaceBatch) -> np.ndarray:
        return batch.source.copy()
