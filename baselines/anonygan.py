"""The four AnonyGAN variants as anonymisers, backed by `anonygan.inference.AnonyGANInference`.

Each loads models/<method>/checkpoint.pt, which `train@<method>` writes. The model package is
imported only when a variant is built, so the other methods run without it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from baselines.interface import Anonymiser, FaceBatch, RunContext, register

#: Paper rows: (CM,LA)- 68 lm, (CM,LA)- 29 lm, CM- 68 lm (Landmark Attention on), full model.
ANONYGAN_METHODS = ("anonygan-plain-68", "anonygan-plain-29", "anonygan-la-68", "anonygan-68")


@register(*ANONYGAN_METHODS)
class AnonyGAN(Anonymiser):
    """A trained AnonyGAN checkpoint; its configuration (landmarks, LA, CM) travels in the file.

    `output` chooses raw generator output or the face composited into the source crop; None
    keeps the checkpoint's own setting.
    """

    def __init__(self, checkpoint: str | Path, device: str | None = None, output: str | None = None):
        checkpoint = Path(checkpoint)
        if not checkpoint.is_file():
            raise FileNotFoundError(f"{checkpoint} not found: run `dvc repro train@{checkpoint.parent.name}` first")
        from anonygan.inference import AnonyGANInference

        self.model = AnonyGANInference.from_checkpoint(checkpoint, device=device, test_output=output)

    @classmethod
    def from_params(cls, context: RunContext) -> AnonyGAN:
        """`anonymise.anonygan_output` (raw | composited) overrides the checkpoint's output mode."""
        output = context.params.get("anonymise", {}).get("anonygan_output")
        return cls(context.checkpoint, context.device, output)

    def anonymise(self, batch: FaceBatch) -> np.ndarray:
        return self.model.anonymise(batch.source, batch.source_landmarks, batch.source_mask,
                                    batch.condition, batch.condition_landmarks)
