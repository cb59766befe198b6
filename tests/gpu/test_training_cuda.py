"""AnonyGAN training on CUDA: every variant at full size in fp32 and bf16, CPU agreement, torchrun with NCCL."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import pytest
import torch

from acceptance.benchmarks import TINY_MODEL
from acceptance.faces import REPO, hybrid_rows, training_batch
from anonygan.config import TrainConfig
from anonygan.data import NetworkInputs
from anonygan.model import Generator, LandmarkAttention, load_checkpoint
from anonygan.training import LOSS_NAMES, Trainer
from tests.gpu.steps import BATCH, SEEDS, VARIANTS, one_step, variant

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("name", VARIANTS)
def test_a_full_size_step_of_every_variant_runs_on_cuda(tmp_path, pairs, cuda, name, precision):
    model, train = variant(name, precision=precision)
    trainer = Trainer(model, train, pairs, tmp_path / "checkpoint.pt", device=cuda)
    losses = one_step(trainer, pairs)
    assert set(losses) == set(LOSS_NAMES)
    assert all(torch.isfinite(torch.tensor(value)) for value in losses.values()), losses
    for network in (trainer.generator, trainer.d_app, trainer.d_lm):
        assert {parameter.device.type for parameter in network.parameters()} == {"cuda"}

    trainer.save()
    state = load_checkpoint(trainer.checkpoint)
    assert {tensor.device.type for tensor in state["modules"]["generator"].values()} == {"cpu"}
    on_cpu = Generator(model)
    on_cpu.load_state_dict(state["modules"]["generator"])
    reloaded = on_cpu.state_dict()
    for key, value in trainer.generator.state_dict().items():
        assert torch.equal(reloaded[key], value.cpu()), key


def test_landmark_attention_weights_survive_bf16_autocast(pairs, cuda):
    """On landmark maps the weights are 0.5 + ~1e-5: computed in bf16, every one of them would be exactly 0.5."""
    model, _ = variant("anonygan-68")
    x = NetworkInputs.build(training_batch(pairs, hybrid_rows(pairs, BATCH)), model.landmark_indices, cuda,
                            maps="resized")
    maps = torch.cat([x.condition_maps, x.source_maps], dim=1)
    torch.manual_seed(0)
    attention = LandmarkAttention(model.attention_kernel).to(cuda)
    drawn = maps.sum(dim=(2, 3)) > 0
    with torch.autocast("cuda", dtype=torch.bfloat16):
        weighted = attention(maps)
    weights = (weighted.sum(dim=(2, 3)) / maps.sum(dim=(2, 3)).clamp_min(1e-12))[drawn]
    reference = (attention(maps).sum(dim=(2, 3)) / maps.sum(dim=(2, 3)).clamp_min(1e-12))[drawn]
    assert weighted.dtype == torch.float32
    assert (weights != 0.5).float().mean() > 0.9, "the attention weights collapsed to 0.5 under bf16"
    torch.testing.assert_close(weights, reference, rtol=0, atol=1e-6)


def test_a_tiny_step_on_cuda_agrees_with_the_cpu(tmp_path, pairs, exact_fp32):
    """Same seed, same batch, fp32 without TF32, no dropout (CPU and CUDA draw different random masks).

    Tolerance: losses within 1e-4 relative; every gradient within 1e-3 of its tensor's largest magnitude,
    room for float32 summation-order differences through BatchNorm and the graph blocks.
    """
    model = dataclasses.replace(TINY_MODEL, dropout=0.0)
    train = TrainConfig(batch_size=BATCH, batches_per_step=1, samples_per_epoch=BATCH, epochs=1, workers=0)
    trainers = {device: Trainer(model, train, pairs, tmp_path / f"{device}.pt", device=torch.device(device))
                for device in ("cpu", "cuda")}
    losses = {device: one_step(trainer, pairs) for device, trainer in trainers.items()}
    for name in LOSS_NAMES:
        assert losses["cuda"][name] == pytest.approx(losses["cpu"][name], rel=1e-4, abs=1e-6), name
    for network in ("generator", "d_app", "d_lm"):
        on_cpu = dict(getattr(trainers["cpu"], network).named_parameters())
        for key, parameter in getattr(trainers["cuda"], network).named_parameters():
            expected = on_cpu[key].grad
            scale = expected.abs().max().item() + 1e-12
            assert (parameter.grad.cpu() - expected).abs().max().item() <= 1e-3 * scale, f"{network}.{key}"


def test_torchrun_with_nccl_gives_the_single_process_step(tmp_path, pairs, cuda, exact_fp32):
    """`torchrun --nproc_per_node 1` in an NCCL process group: the losses and gradients of this process's step.

    Same GPU, same kernels: only the few non-deterministic backward kernels differ, hence 1e-4 of each
    gradient's largest magnitude.
    """
    out = tmp_path / "torchrun.pt"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1",
               str(REPO / "tests" / "gpu" / "steps.py"), str(out)]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=180,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [
                                str(REPO), os.environ.get("PYTHONPATH")]))})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    launched = torch.load(out, weights_only=True)
    assert launched["backend"] == "nccl" and launched["all_reduce"] == 1.0

    model, train = variant("anonygan-68", batches_per_step=2, samples_per_epoch=2 * BATCH)
    trainer = Trainer(model, train, pairs, tmp_path / "single.pt", device=cuda)
    losses = one_step(trainer, pairs, batches=2, seeds=SEEDS)
    for name in LOSS_NAMES:
        assert launched["losses"][name] == pytest.approx(losses[name], rel=1e-4, abs=1e-6), name
    for key, parameter in trainer.generator.named_parameters():
        expected = parameter.grad.cpu()
        scale = expected.abs().max().item() + 1e-12
        assert (launched["gradients"][key] - expected).abs().max().item() <= 1e-4 * scale, key
