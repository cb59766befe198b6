"""AnonyGAN as an anonymiser: any trained variant's checkpoint, or the authors' released one, through
`anonygan.inference`.

One registered anonymiser serves every trained variant: a `methods` entry with `anonymiser: anonygan`
loads models/<method>/checkpoint.pt, which `train@<method>` writes; the checkpoint carries the
variant's configuration (landmarks, Landmark Attention, ...). `anonygan-released` loads the
authors' Lightning checkpoint that `download-released@<method>` fetched, in the variant its keys
show, with the authors' architecture.
"""

from __future__ import annotations

import numpy as np
import torch

from anonygan import released
from anonygan.config import InferenceConfig
from anonygan.inference import AnonyGANInference
from baselines.interface import Anonymiser, FaceBatch, RunContext
from infra.errors import MissingInputError
from infra.weight_files import released_file


class AnonyGAN(Anonymiser):
    """A trained AnonyGAN checkpoint; `anonymisers.anonygan` sets the inference conventions."""

    needs_condition_faces = True
    any_frame = True  # fully convolutional: the authors ran it on whole 256x256 LFW photos

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


class ReleasedAnonyGAN(AnonyGAN):
    """The AnonyGAN authors' released checkpoint; `anonymisers.anonygan-released` sets the inference conventions."""

    released_model = "anonygan"

    @classmethod
    def from_config(cls, settings: InferenceConfig, context: RunContext) -> AnonyGAN:
        path, status = released_file(context.released, cls.released_model, context.method)
        # The variant download-released recorded: a file changed since is refused.
        loaded = released.load(path, status.details["landmarks"], status.details["landmark_attention"])
        device = torch.device(context.device) if context.device is not None else None
        return cls(AnonyGANInference(loaded.generator, settings, device, context.batch_size))
