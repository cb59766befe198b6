"""CIAGAN as an anonymiser: a generator renders each source face as another identity.

`ciagan` runs the generator `train-ciagan` trained; `ciagan-released` the authors' released one
(`download-released@<method>`), through the same code.

Target rule (authors' test code): the source identity's position i in the dataset's identity
order (the pair manifest's order, `baselines.interface.identity_order`) selects training
identity (i + 1) mod N, N = the number of training identities in the checkpoint.

Spectral norm (`spectral_norm`): the authors' test.py never calls eval() (test.py:54-56), so
every forward of their generator runs one power iteration of each spectrally normalised
convolution and updates its `weight_u` / `weight_v` in place, one face per forward (batch size
1, test.py:50). `update` (default) does the same: training mode and one face per forward, in
manifest order. Nothing else in the generator depends on the mode (its instance norms keep no
running statistics). `frozen` runs eval(): the stored u and v, batched.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import runtime
from baselines.ciagan import released
from baselines.ciagan.config import CiaganInferenceConfig, CiaganModelConfig
from baselines.ciagan.frame import network_inputs, to_crop, to_network
from baselines.ciagan.model import Generator, load_checkpoint
from baselines.interface import Anonymiser, FaceBatch, RunContext
from infra.errors import MissingInputError
from infra.weight_files import released_file


class Ciagan(Anonymiser):
    """A trained CIAGAN generator (models/ciagan/checkpoint.pt from `train-ciagan`)."""

    def __init__(self, generator: Generator, identity_order: Sequence[str],
                 settings: CiaganInferenceConfig = CiaganInferenceConfig(),
                 device: str | torch.device | None = None, batch_size: int = 64):
        if not identity_order:
            raise ValueError("CIAGAN needs the dataset's identity order (RunContext.identities) for its target rule")
        self.device = torch.device(device) if device is not None else runtime.default_device()
        self.generator = generator.to(self.device, memory_format=runtime.memory_format(self.device))
        self.generator.train(settings.spectral_norm == "update")
        self.position = {identity: index for index, identity in enumerate(identity_order)}
        self.settings = settings
        # A forward per face where each forward updates spectral norm, as the authors' batch size 1.
        self.batch_size = 1 if settings.spectral_norm == "update" else batch_size

    @classmethod
    def from_checkpoint(cls, path: str | Path, identity_order: Sequence[str],
                        settings: CiaganInferenceConfig = CiaganInferenceConfig(),
                        device: str | torch.device | None = None, batch_size: int = 64) -> Ciagan:
        path = Path(path)
        if not path.is_file():
            raise MissingInputError(f"{path} not found: run `dvc repro train-ciagan` first")
        state = load_checkpoint(path)
        generator = Generator(CiaganModelConfig(**state["model_config"]))
        generator.load_state_dict(state["modules"]["generator"])
        return cls(generator, identity_order, settings, device, batch_size)

    @classmethod
    def from_config(cls, settings: CiaganInferenceConfig, context: RunContext) -> Ciagan:
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


class ReleasedCiagan(Ciagan):
    """The CIAGAN authors' released generator (models/<method>/modelG.pth from `download-released@<method>`)."""

    released_model = "ciagan"

    @classmethod
    def from_config(cls, settings: CiaganInferenceConfig, context: RunContext) -> Ciagan:
        path, _ = released_file(context.released, cls.released_model, context.method)
        generator, _ = released.load(path)
        return cls(generator, context.identities, settings, context.device, context.batch_size)


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
