"""The AnonyGAN authors' released checkpoint in this project's networks.

The file (Fodark/anonygan README: "Download pretrained model", saved as `ckpts/anonygan.ckpt`) is
a PyTorch Lightning checkpoint of their `AnonyGAN` module. Its `state_dict` holds `G.*` (the
generator), `D_gan.*` (appearance discriminator, our D_app), `D_pose.*` (landmark discriminator,
our D_lm) and, when trained with extra flags, `D_gan2.*` or `D_id.*`, which inference never uses
(the authors' test.py loads with strict=False, which ignores them).

Which variant it is, the README does not say; `detect_variant` reads it from the keys:
`G.ch_att.conv.weight` exists only with Landmark Attention, and the landmark channels are
2 x L in `G.stream2_down.1.weight` (136 or 58) and 3 + L in `D_pose.down1.0.weight` (71 or 32).

Our generator and discriminators register their tensors in the authors' order, so the weights map
by position (`infra.weight_files.map_by_position`, every pair checked). The attention decoder's
last layer is the authors' `ConvTranspose2d(64, 1, 1)` (`G.conv_att3.weight`, 64 x 1 x 1 x 1, in x
out) by default (`model.attention_output: conv_transpose`), so its weight is copied as it is. With
`attention_output: conv` ours is `Conv2d(64, 1, 1)` (1 x 64 x 1 x 1, out x in): a 1x1, stride-1,
unpadded transposed convolution is that convolution with the weight's first two dimensions swapped
(flipping a 1x1 kernel changes nothing), so then the weight is transposed on the way in.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from torch import Tensor, nn

from anonygan.config import ModelConfig
from anonygan.model import Generator, PatchDiscriminator, build
from infra.errors import DataError
from infra.fetch import google_drive
from infra.weight_files import LayoutMismatch, map_by_position, read_weights

RELEASED = google_drive("anonygan.ckpt", "1FWMaBIQfm1-1fLy0ZG7eu--VD91OipJP")
#: The authors' submodules and ours.
SUBMODULES = {"G": "generator", "D_gan": "D_app", "D_pose": "D_lm"}
#: Submodules of optional training flags (anonygan.py:24-33), unused at inference.
IGNORED = {"D_gan2": "--double_discriminator", "D_id": "--id_discriminator or --pretrained_id_discriminator"}
ATTENTION_KEY = "G.ch_att.conv.weight"
SHAPE_ENCODER_KEY = "G.stream2_down.1.weight"
D_POSE_KEY = "D_pose.down1.0.weight"
LANDMARK_COUNTS = (68, 29)


class VariantMismatch(DataError):
    """The file is not the variant asked for, or its parts disagree about it."""


@dataclass(frozen=True)
class Variant:
    landmarks: int
    landmark_attention: bool
    evidence: tuple[str, ...] = ()  # the keys and shapes it was read from

    def describe(self) -> str:
        return f"{self.landmarks} landmarks, Landmark Attention {'on' if self.landmark_attention else 'off'}"


def _shape(state: Mapping[str, Tensor], key: str) -> list[int]:
    return list(state[key].shape)


def detect_variant(state: Mapping[str, Tensor], source: str) -> Variant:
    """The variant of an authors' state dict (keys G.*, D_pose.*, ...), from the keys named in the module doc."""
    if SHAPE_ENCODER_KEY not in state:
        prefixes = sorted({key.split(".", 1)[0] for key in state})
        raise VariantMismatch(f"{source} has no {SHAPE_ENCODER_KEY}: not the AnonyGAN authors' checkpoint "
                              f"(its tensors start with {', '.join(prefixes[:8])})")
    shape = _shape(state, SHAPE_ENCODER_KEY)
    landmarks = shape[1] // 2 if len(shape) == 4 else 0
    if landmarks not in LANDMARK_COUNTS or shape[1] % 2:
        raise VariantMismatch(f"{source}: {SHAPE_ENCODER_KEY} {shape} should have 2 x 68 or 2 x 29 landmark "
                              "input channels")
    evidence = [f"{SHAPE_ENCODER_KEY} {shape}: {shape[1]} = 2 x {landmarks} landmark channels"]
    if D_POSE_KEY in state:
        d_pose = _shape(state, D_POSE_KEY)
        if len(d_pose) != 4 or d_pose[1] != 3 + landmarks:
            raise VariantMismatch(f"{source}: {evidence[0]}, but {D_POSE_KEY} {d_pose} should then have "
                                  f"3 + {landmarks} input channels")
        evidence.append(f"{D_POSE_KEY} {d_pose}: {d_pose[1]} = 3 + {landmarks}")
    attention = ATTENTION_KEY in state
    evidence.append(f"{ATTENTION_KEY} {_shape(state, ATTENTION_KEY)} present" if attention
                    else f"{ATTENTION_KEY} absent")
    return Variant(landmarks, attention, tuple(evidence))


def check_variant(found: Variant, landmarks: int | None, landmark_attention: bool | None, source: str) -> None:
    """Refuse a file of another variant than asked for (None: either)."""
    if (landmarks not in (None, found.landmarks)
            or landmark_attention not in (None, found.landmark_attention)):
        wanted = Variant(found.landmarks if landmarks is None else landmarks,
                         found.landmark_attention if landmark_attention is None else landmark_attention)
        raise VariantMismatch(f"{source} holds the variant with {found.describe()} ({'; '.join(found.evidence)}), "
                              f"not the one asked for: {wanted.describe()}")


def conv_transpose_1x1_as_conv(weight: Tensor) -> Tensor:
    """A ConvTranspose2d(C_in, C_out, 1) weight (C_in, C_out, 1, 1) as the equal Conv2d weight (C_out, C_in, 1, 1)."""
    if weight.dim() != 4 or tuple(weight.shape[2:]) != (1, 1):
        raise LayoutMismatch(f"only a 1x1 transposed convolution converts to a convolution; got {list(weight.shape)}")
    return weight.transpose(0, 1).contiguous()


def generator_transforms(generator: Generator) -> dict:
    """How the authors' generator tensors convert to ours: conv_att3 is transposed where our layer is a Conv2d."""
    last = generator.attention_decoder[-2]  # the layer before the sigmoid
    return {"conv_att3.weight": conv_transpose_1x1_as_conv} if isinstance(last, nn.Conv2d) else {}


def split(state: Mapping[str, Tensor], source: str) -> tuple[dict[str, OrderedDict[str, Tensor]], list[str]]:
    """The tensors of each authors' submodule (prefix stripped), without the ignored ones, and notes saying so."""
    groups: dict[str, OrderedDict[str, Tensor]] = {}
    for key, value in state.items():
        prefix, _, rest = key.partition(".")
        groups.setdefault(prefix, OrderedDict())[rest] = value
    unknown = sorted(set(groups) - set(SUBMODULES) - set(IGNORED))
    missing = sorted(set(SUBMODULES) - set(groups))
    if unknown or missing:
        raise LayoutMismatch(f"{source}: submodules {', '.join(sorted(groups))}; an AnonyGAN checkpoint has "
                             f"{', '.join(SUBMODULES)} (and perhaps {', '.join(IGNORED)})")
    notes = [f"ignored {prefix}.* ({len(groups.pop(prefix))} tensors, trained with {flag}): unused at inference"
             for prefix, flag in IGNORED.items() if prefix in groups]
    return groups, notes


@dataclass(frozen=True)
class Released:
    generator: Generator  # in eval mode, as the authors' test loop runs it
    d_app: PatchDiscriminator
    d_lm: PatchDiscriminator
    variant: Variant
    notes: tuple[str, ...]  # what the file holds besides the weights, and what was ignored


def load(source: Path | Mapping[str, Tensor], landmarks: int | None = None,
         landmark_attention: bool | None = None) -> Released:
    """Our generator and discriminators with the weights of the authors' checkpoint (a path or its state dict).

    The architecture is the authors' (ModelConfig's defaults) in the variant the keys show;
    `landmarks` / `landmark_attention` ask for a variant, and a file of another one is refused.
    """
    if isinstance(source, Mapping):
        state, name, notes = source, "the state dict", []
    else:
        weights = read_weights(source)
        state, name, notes = weights.state_dict, str(source), [weights.describe()]
    variant = detect_variant(state, name)
    check_variant(variant, landmarks, landmark_attention, name)
    groups, ignored = split(state, name)
    generator, d_app, d_lm = build(ModelConfig(landmarks=variant.landmarks,
                                               landmark_attention=variant.landmark_attention))
    for prefix, module in zip(SUBMODULES, (generator, d_app, d_lm), strict=True):
        transforms = generator_transforms(generator) if module is generator else None
        module.load_state_dict(map_by_position(groups[prefix], module, f"{name}: {prefix} -> our {SUBMODULES[prefix]}",
                                               transforms), strict=True)
    return Released(generator.eval(), d_app.eval(), d_lm.eval(), variant, tuple(notes + ignored))
