"""AnonyGAN as an anonymiser: any trained variant's checkpoint, through `anonygan.inference`.

One registered anonymiser serves every variant: a `methods` entry with `anonymiser: anonygan`
loads models/<method>/checkpoint.pt, which `train@<method>` writes; the checkpoint carries the
variant's configuration (landmarks, Landmark Attention, ...).
"""

from __future__ import annotations

import numpy as np

from anonygan.inference import AnonyGANInference, InferenceConfig
from baselines.interface import Anonymiser, FaceBatch, RunContext, register
from facedata.errors import MissingInputError


@register("anonygan")
class AnonyGAN(Anonymiser):
    """A trained AnonyGAN checkpoint; `anonymisers.anonygan` sets the inference conventions."""

    Settings = InferenceConfig

    def __init__(self, model: AnonyGANInference):
        self.model = model

    @classmethod
    def from_config(cls, settings: InferenceConfig, context: RunContext) -> AnonyGAN:
        checkpoint = context.checkpoint
        if checkpoint is None or not checkpoint.is_file():
            raise MissingInputError(f"{checkpoint} not found: run `dvc repro train@{context.method}` first")
        return cls(AnonyGANInference.from_checkpoint(checkpoint, settings, context.device, context.batch_size))

    def anonymise(self, batch: FaceBatch) -> np.ndarray:
        return self.model.anonymise(batch.source, batch.source_landmarks, batch.source_mask,
                                    batch.condition, batch.condition_landmarks)
