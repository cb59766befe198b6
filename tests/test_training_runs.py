"""AnonyGAN's training run as the authors': 64-sample steps as 2 x 32 (accumulated in one process, or split over
processes with torch.distributed on gloo), exact resumes of several processes, and what a checkpoint of other
settings or a NaN stop leaves behind. Faces are synthetic: these tests are about the training loop."""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from anonygan.data import PairData
from anonygan.model import build, load_checkpoint
from anonygan.training import NETWORKS, Trainer
from facedata.framing import face_mask
from facedata.prepared import PreparedDataset
from infra.errors import ParamsError
from runtime import NonFiniteLossError
from tests.helpers import SMALL, pair_manifest, tiny_configs, write_prepared


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> tuple[Path, pd.DataFrame]:
    """(prepared root, pair manifest) of 8 noise faces of 2 identities at the 64x52 test crop."""
    rng = np.random.default_rng(0)
    height, width = SMALL
    faces = []
    for number in range(8):
        landmarks = rng.uniform([8, 8], [width - 8, height - 8], size=(68, 2)).astype(np.float32)
        faces.append({"key": f"{number:06d}.jpg", "identity": str(number // 4), "landmarks": landmarks,
                      "crop": rng.integers(0, 256, (height, width, 3), dtype=np.uint8),
                      "mask": face_mask(landmarks, SMALL)})
    root = write_prepared(tmp_path_factory.mktemp("synthetic"), faces)
    return root, pair_manifest(root)


def configs(**overrides):
    return tiny_configs(**{f"train.{key}": value for key, value in overrides.items()})


def pair_data(synthetic) -> PairData:
    root, manifest = synthetic
    return PairData(PreparedDataset(root), manifest)


class Stop(Exception):
    """Ends a worker's run before an epoch, as an interruption would."""


def train_in_group(rank: int, world: int, init_file: str, model, config, synthetic, checkpoint: Path,
                   stop_before: int | None) -> None:
    """One process of a gloo group: fit, or stop before epoch `stop_before + 1` (checkpoints are kept)."""
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    torch.set_num_threads(1)
    try:
        trainer = Trainer(model, config, pair_data(synthetic), checkpoint, device=torch.device("cpu"))
        train_epoch = trainer.train_epoch

        def interruptible(progress):
            if trainer.epoch == stop_before:
                raise Stop
            return train_epoch(progress)

        trainer.train_epoch = interruptible
        with contextlib.suppress(Stop):
            trainer.fit()
    finally:
        dist.destroy_process_group()


def in_two_processes(tmp_path: Path, model, config, synthetic, checkpoint: Path, stop_before: int | None = None):
    init_file = tmp_path / f"init-{checkpoint.stem}-{stop_before}"
    mp.spawn(train_in_group, args=(2, str(init_file), model, config, synthetic, checkpoint, stop_before), nprocs=2)


def parameters(modules: dict, model) -> dict[str, torch.Tensor]:
    """Every network parameter in checkpoint `modules` (BatchNorm running statistics left out)."""
    return {f"{name}.{key}": modules[name][key]
            for name, network in zip(NETWORKS, build(model), strict=True) for key, _ in network.named_parameters()}


@pytest.mark.slow
def test_two_processes_give_the_weights_of_one_process_accumulating_two_micro_batches(synthetic, tmp_path):
    model, one = configs(samples_per_epoch=16)  # 2 steps of 2 micro-batches x 4
    assert (one.batches_per_step, one.steps_per_epoch) == (2, 2)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        Trainer(model, one, pair_data(synthetic), tmp_path / "one.pt", device=torch.device("cpu")).fit()
    finally:
        torch.set_num_threads(threads)
    in_two_processes(tmp_path, model, dataclasses.replace(one, processes=2), synthetic, tmp_path / "two.pt")

    accumulated = parameters(load_checkpoint(tmp_path / "one.pt")["modules"], model)
    distributed = parameters(load_checkpoint(tmp_path / "two.pt")["modules"], model)
    untrained = Trainer(model, one, None, tmp_path / "untrained.pt")
    initial = parameters({name: getattr(untrained, name).state_dict() for name in NETWORKS}, model)
    assert all(not torch.equal(accumulated[key], initial[key]) for key in ("generator.image_decoder.7.bias",
                                                                           "d_app.logits.bias", "d_lm.logits.bias"))
    for key, value in accumulated.items():
        torch.testing.assert_close(distributed[key], value, msg=key)


@pytest.mark.slow
def test_a_resumed_two_process_run_equals_the_uninterrupted_one(synthetic, tmp_path):
    model, config = configs(epochs=3, samples_per_epoch=8, checkpoint_every=1, lr_decay_start_epoch=1, processes=2)
    in_two_processes(tmp_path, model, config, synthetic, tmp_path / "uninterrupted.pt")
    in_two_processes(tmp_path, model, config, synthetic, tmp_path / "resumed.pt", stop_before=2)
    assert load_checkpoint(tmp_path / "resumed.pt")["epoch"] == 2
    in_two_processes(tmp_path, model, config, synthetic, tmp_path / "resumed.pt")

    uninterrupted, resumed = load_checkpoint(tmp_path / "uninterrupted.pt"), load_checkpoint(tmp_path / "resumed.pt")
    assert uninterrupted["epoch"] == resumed["epoch"] == 3
    flat_a, flat_b = flatten(uninterrupted["modules"]), flatten(resumed["modules"])
    assert flat_a.keys() == flat_b.keys()
    for key, value in flat_a.items():
        assert torch.equal(value, flat_b[key]) if isinstance(value, torch.Tensor) else value == flat_b[key], key


def flatten(state, prefix: str = "") -> dict:
    if isinstance(state, dict):
        return {k: v for key, value in state.items() for k, v in flatten(value, f"{prefix}{key}.").items()}
    if isinstance(state, list | tuple):
        return {k: v for i, value in enumerate(state) for k, v in flatten(value, f"{prefix}{i}.").items()}
    return {prefix: state}


def test_the_stage_refuses_a_process_count_other_than_train_processes(monkeypatch, tmp_path):
    from pipelines import train as train_stage
    from pipelines.layout import Layout
    from tests.helpers import params

    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ParamsError, match=r"train.processes is 1 for anonygan-68 but 2 process\(es\) were launched: "
                                          r"run `torchrun --standalone --nproc_per_node 1 -m pipelines.train"):
        train_stage.run(params("small"), Layout(tmp_path), "anonygan-68")
    with pytest.raises(ParamsError, match="train.processes .3. must divide batches_per_step .2."):
        configs(processes=3)


def nan_at(epoch: int):
    """A train_epoch that poisons the generator before epoch `epoch + 1`: its losses become NaN."""
    train_epoch = Trainer.train_epoch

    def poisoned(self, progress):
        if self.epoch == epoch:
            with torch.no_grad():
                self.generator.image_decoder[-2].weight.fill_(float("nan"))
        return train_epoch(self, progress)

    return poisoned


@pytest.mark.slow
def test_after_a_nan_stop_the_advice_goes_on_from_the_last_good_checkpoint(synthetic, tmp_path, monkeypatch):
    model, config = configs(epochs=2, samples_per_epoch=8, checkpoint_every=1)
    checkpoint = tmp_path / "checkpoint.pt"
    monkeypatch.setattr(Trainer, "train_epoch", nan_at(1))
    with pytest.raises(NonFiniteLossError, match=r"at epoch 2, step 1: training stopped. .*checkpoint.pt still holds "
                                                 r"the last good state \(epoch 1\); to go on from it, lower the "
                                                 r"learning rates or set train.precision: fp32, and set "
                                                 r"train.resume: continue"):
        Trainer(model, config, pair_data(synthetic), checkpoint).fit()
    monkeypatch.undo()
    good = checkpoint.read_bytes()
    assert load_checkpoint(checkpoint)["epoch"] == 1

    lower = dataclasses.replace(config, lr_generator=1e-4, lr_discriminator=1e-6, resume="continue")
    trainer = Trainer(model, lower, pair_data(synthetic), checkpoint)
    trainer.fit()
    assert trainer.optimizers["generator"].param_groups[0]["lr"] == 1e-4 * lower.lr_factor(1, 0)
    state = load_checkpoint(checkpoint)
    assert state["epoch"] == 2 and state["train_config"]["lr_generator"] == 1e-4
    assert state["continued"] == [{"epoch": 1, "changes": {"lr_discriminator": [2e-6, 1e-6],
                                                           "lr_generator": [2e-4, 1e-4]}}]
    # The continued run is the new settings' own checkpoint now: a plain re-run resumes it.
    assert Trainer(model, dataclasses.replace(lower, resume="same_settings"), None, checkpoint).resume()
    assert good != checkpoint.read_bytes()


def test_a_checkpoint_of_other_settings_is_kept_aside_never_overwritten(synthetic, tmp_path):
    model, config = configs(epochs=1, samples_per_epoch=8)
    checkpoint = tmp_path / "checkpoint.pt"
    Trainer(model, config, pair_data(synthetic), checkpoint).fit()
    trained = checkpoint.read_bytes()
    # Settings that do not change what is computed resume it.
    quiet = dataclasses.replace(config, workers=1, checkpoint_every=2, sample_every=3, processes=2, resume="continue")
    assert Trainer(model, quiet, None, checkpoint).resume()
    # continue may change learning rates and precision only, and leaves the file as it is otherwise.
    other = dataclasses.replace(config, seed=1)
    with pytest.raises(ParamsError, match=r"train.resume: continue may change only lr_discriminator, lr_generator, "
                                          r"precision, but .*checkpoint.pt was trained with other settings: "
                                          r"seed 0 -> 1"):
        Trainer(model, dataclasses.replace(other, resume="continue"), None, checkpoint).resume()
    assert checkpoint.read_bytes() == trained
    # A fresh run of other settings keeps it beside its own checkpoint, under a name of its own each time.
    for kept in ("checkpoint.epoch-0001.pt", "checkpoint.epoch-0001-2.pt"):
        trainer = Trainer(model, other, None, checkpoint)
        assert not trainer.resume() and trainer.epoch == 0 and not checkpoint.exists()
        assert (tmp_path / kept).read_bytes() == trained
        checkpoint.write_bytes(trained)
