"""CIAGAN's released generator (dvl-tum/ciagan README: "pre-trained model", `modelG.pth`) in our Generator.

The file is a plain state dict of the authors' `Generator()` (1,200 identities, 128 px), which
their test.py loads strictly. Our generator registers its tensors in their order with the same
shapes, so it maps by position (`infra.weight_files.map_by_position`, every pair checked). Their 42
spectrally normalised convolutions use the `nn.utils.spectral_norm` hooks, as ours: each stores
`weight_orig` (parameter), `weight_u` and `weight_v` (buffers) and no plain `weight`; the Linear
layers of `encode_one_hot` and the convolutions of `encode_noise` come last, as our identity
branch does.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from torch import Tensor

from baselines.ciagan.config import CiaganModelConfig
from baselines.ciagan.model import Generator
from infra.fetch import google_drive
from infra.weight_files import CheckpointError, map_by_position, read_weights

RELEASED = google_drive("modelG.pth", "1j5iT-SvvbC-JRy7qvY-eEP4sLzvoh8Ut")


def load(source: Path | Mapping[str, Tensor]) -> tuple[Generator, tuple[str, ...]]:
    """Our CIAGAN generator (the authors' sizes) with the released weights (a path or its state dict), and notes.

    The generator is returned in training mode, as the authors' test.py runs it (it never calls
    eval()); the anonymiser sets the mode its settings ask for.
    """
    if isinstance(source, Mapping):
        state, name, notes = source, "the state dict", ()
    else:
        weights = read_weights(source)
        if weights.lightning:
            raise CheckpointError(f"{source} is a PyTorch Lightning checkpoint, not CIAGAN's generator state dict")
        state, name, notes = weights.state_dict, str(source), (weights.describe(),)
    generator = Generator(CiaganModelConfig())
    generator.load_state_dict(map_by_position(state, generator, f"{name}: CIAGAN generator"), strict=True)
    return generator, notes
