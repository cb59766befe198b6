"""CIAGAN as an anonymiser: a trained generator renders each source face as another identity.

Target rule (authors' test code): the source identity's position i in the dataset's identity
order (the pair manifest's order, `baselines.interface.identity_order`) selects training
identity (i + 1) mod N, N = the number of training identities in the checkpoint.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from baselines.ciagan.frame import network_inputs, to_crop, to_network
from baselines.ciagan.model import CiaganConfig, Generator, load_checkpoint
from baselines.interface import Anonymiser, FaceBatch, RunContext, register
from facedata import runtime
from facedata.errors import MissingInputError


@dataclass(frozen=True)
class CiaganInferenceConfig:
    """How a CIAGAN generator anonymises the test sets (params `anonymisers.ciagan`)."""

    precision: Literal["fp32", "bf16"] = "fp32"  # bf16 autocast on CUDA only; CPU always runs fp32


@register("ciagan")
class Ciagan(Anonymiser):
    """A trained CIAGAN generator (models/ciagan/checkpoint.pt from `train-ciagan`)."""

    Settings = CiaganInferenceConfig

    def __init__(self, generator: Generator, identity_order: Sequence[str],
                 settings: CiaganInferenceConfig = CiaganInferenceConfig(),
                 device: str | torch.device | None = None, batch_size: int = 64):
        self.device = torch.device(device) if device is not None else runtime.default_device()
        self.generator = generator.to(self.device, memory_format=runtime.memory_format(self.device)).eval()
        self.position = {identity: index for index, identity in enumerate(identity_order)}
        self.settings = settings
        self.batch_size = batch_size

    @classmethod
    def from_checkpoint(cls, path: str | Path, identity_order: Sequence[str],
                        settings: CiaganInferenceConfig = CiaganInferenceConfig(),
                        device: str | torch.device | None = None, batch_size: int = 64) -> Ciagan:
        path = Path(path)
        if not path.is_file():
            raise MissingInputError(f"{path} not found: run `dvc repro train-ciagan` first")
        state = load_checkpoint(path)
        generator = Generator(CiaganConfig(**state["model_config"]))
        generator.load_state_dict(state["modules"]["generator"])
        return cls(generator, identity_order, settings, device, batch_size)

    @classmethod
    def from_authors_weights(cls, path: str | Path, identity_order: Sequence[str],
                             device: str | torch.device | None = None) -> Ciagan:
        """The authors' released generator (a state dict of their `Generator`, 1,200 identities, 128 px)."""
        generator = Generator(CiaganConfig())
        generator.load_authors_weights(torch.load(path, map_location="cpu", weights_only=True))
        return cls(generator, identity_order, device=device)

    @classmethod
    def from_config(cls, settings: CiaganInferenceConfig, context: RunContext) -> Ciagan:
        if not context.identities:
            raise ValueError("CIAGAN needs the dataset's identity order (RunContext.identities) for its target rule")
        return cls.from_checkpoint(context.checkpoint, context.identities, settings, context.device,
                                   context.batch_size)

    @property
    def identities(self) -> int:
        return self.generator.config.identities

    def targets(self, source_identities: Sequence[str]) -> np.ndarray:
        """Training-identity index for each source: (position in the identity order + 1) mod N."""
        unknown = sorted({identity for identity in source_identities if identity not in self.position})
        if unknown:
            raise KeyError(f"identities not in the CIAGAN identity order: {', '.join(unknown[:5])}")
        return np.array([(self.position[identity] + 1) % self.identities for identity in source_identities])

    def anonymise(self, batch: FaceBatch) -> np.ndarray:
        return self.render(batch, self.targets(batch.source_identity))

    def render(self, batch: FaceBatch, targets: np.ndarray) -> np.ndarray:
        """The sources rendered as the given training identities, composited into the source crops."""
        outputs = []
        for start in range(0, len(batch), self.batch_size):
            part = slice(start, start + self.batch_size)
            planes = network_inputs(batch.source[part], batch.source_mask[part], batch.source_landmarks[part])
            outputs.append(render_planes(self.generator, planes.to(self.device), targets[part],
                                         self.settings.precision))
        return np.concatenate(outputs) if outputs else np.zeros_like(batch.source)


@torch.inference_mode()
def render_planes(generator: Generator, planes: torch.Tensor, targets: np.ndarray,
                  precision: str = "fp32") -> np.ndarray:
    """(N, H, W, 3) uint8: the faces of `network_inputs` planes rendered as `targets`, composited."""
    device, config = planes.device, generator.config
    face, drawing, mask = to_network(planes, config.image_size, config.frame_scale,
                                     memory_format=runtime.memory_format(device))
    one_hot = F.one_hot(torch.as_tensor(targets, device=device), config.identities).float()
    with runtime.autocast(device, precision):
        generated = generator(torch.cat([drawing, face * (1 - mask)], dim=1), one_hot)
    return to_crop(generated.float(), planes, config.frame_scale)
