"""The acceptance run's measurements: training steps at the authors' 2 x 32 and the metric networks' images/s.

Each measurement runs inside a time budget: warm-up calls, then timed calls while another call still
fits in what is left (estimated from the slowest call so far). The run's orchestrator also kills a
part's process at its budget, so a call that hangs cannot overrun either.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

import runtime
from acceptance.faces import face_batch, faces_root, hybrid_rows, pair_data, training_batch
from anonygan.config import ModelConfig, TrainConfig
from anonygan.training import Trainer

#: One training sample (G update, then D_app and D_lm, hybrid mix) of the full model at 220x180, counted with
#: torch.utils.flop_counter.FlopCounterMode around a real Trainer.step (docs/benchmarks.md, "expected cost").
FLOP_PER_SAMPLE = 603e9
#: Dense peak rates by the vendor's datasheets, (bf16, tf32) FLOP/s; fp32 training runs its convolutions in TF32
#: (PyTorch's default for cuDNN). Matched in order against torch.cuda.get_device_name().
PEAK_FLOPS = (("H100 PCIe", 756e12, 378e12), ("H100", 989.4e12, 494.7e12), ("H200", 989.4e12, 494.7e12))
#: (warm-up, most timed) calls: on a GPU the first calls pick kernels and fill caches; --tiny only shows it runs.
CALLS = {False: (3, 50), True: (0, 2)}
#: The small profile's networks (profiles/small.yaml): what --tiny trains on a CPU.
TINY_MODEL = ModelConfig(base_channels=8, graph_blocks=2, discriminator_channels=8)


class Budget:
    """Seconds left of a part's allowance, from its creation."""

    def __init__(self, seconds: float):
        self.deadline = time.perf_counter() + seconds

    def left(self) -> float:
        return self.deadline - time.perf_counter()


def timed_calls(call: Callable[[], object], budget: Budget, warmup: int, most: int) -> list[float]:
    """Seconds of each timed call of `call` after `warmup` untimed ones, stopping before the budget runs out."""
    slowest = 0.0
    times: list[float] = []
    for number in range(warmup + most):
        if budget.left() < slowest * 1.2:
            break
        start = time.perf_counter()
        call()
        elapsed = time.perf_counter() - start
        slowest = max(slowest, elapsed)
        if number >= warmup:
            times.append(elapsed)
    return times


def synchronised(call: Callable[[], object], device: torch.device) -> Callable[[], None]:
    """`call`, then wait for the device: CUDA runs asynchronously, so a timer must wait for its work."""

    def run() -> None:
        call()
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    return run


def peak_rate(device: torch.device, precision: str) -> float | None:
    """The device's dense peak FLOP/s for the precision (None: not a GPU in PEAK_FLOPS)."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for marker, bf16, tf32 in PEAK_FLOPS:
        if marker in name:
            return bf16 if precision == "bf16" else tf32
    return None


def step_configs(precision: str, tiny: bool) -> tuple[ModelConfig, TrainConfig]:
    """The authors' step, 2 micro-batches of 32, with the full model; --tiny: the small profile's networks, 2 x 2."""
    batch = 2 if tiny else 32
    train = TrainConfig(batch_size=batch, batches_per_step=2, samples_per_epoch=2 * batch, epochs=1, workers=0,
                        precision=precision)
    return (TINY_MODEL if tiny else ModelConfig()), train


def training_step(precision: str, tiny: bool, seconds: float) -> dict:
    """Steady-state time of one optimiser step (G, D_app, D_lm over both micro-batches), samples/s, MFU, memory."""
    device = runtime.default_device()
    model, train = step_configs(precision, tiny)
    data = pair_data(faces_root())
    with tempfile.TemporaryDirectory() as folder:
        trainer = Trainer(model, train, data, Path(folder) / "checkpoint.pt", device=device)
        batches = [trainer.inputs(training_batch(data, hybrid_rows(data, train.batch_size, offset=k)))
                   for k in range(train.batches_per_step)]
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        times = timed_calls(synchronised(lambda: trainer.step(batches), device), Budget(seconds), *CALLS[tiny])
    result = {"device": device_name(device), "precision": precision if device.type == "cuda" else "fp32",
              "model": "small profile" if tiny else "full", "samples_per_step": train.step_samples,
              "steps_timed": len(times)}
    if not times:
        return result | {"note": "the budget ended during the warm-up steps"}
    step = statistics.median(times)
    samples_per_s = train.step_samples / step
    peak = peak_rate(device, precision)
    result |= {"step_s": round(step, 4), "step_s_min": round(min(times), 4), "samples_per_s": round(samples_per_s, 2),
               "peak_memory_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
               if device.type == "cuda" else None}
    if tiny:
        return result | {"mfu": None, "mfu_note": f"MFU counts {FLOP_PER_SAMPLE / 1e9:.0f} GFLOP per sample of the "
                                                  "full model; not computed for the small profile's networks"}
    achieved = samples_per_s * FLOP_PER_SAMPLE
    return result | {"achieved_tflops": round(achieved / 1e12, 1),
                     "peak_tflops": None if peak is None else round(peak / 1e12, 1),
                     "mfu": None if peak is None else round(achieved / peak, 4)}


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"


def random_inception(folder: Path) -> torch.nn.Module:
    """pytorch-fid's FID Inception (metrics.inception) with seeded random weights: its speed is its architecture's."""
    from runtime.torchvision_compat import ensure_torchvision

    ensure_torchvision()
    from torchvision.models.inception import Inception3

    from infra.fetch import file_digest
    from metrics import inception
    from metrics.weights import WeightsFile

    torch.manual_seed(0)
    path = folder / "inception-random.pth"
    torch.save(Inception3(num_classes=1008, aux_logits=False, init_weights=True).state_dict(), path)
    weights = WeightsFile(path, file_digest(path, "sha256"), "random")
    return inception.network(weights, resize_input=False, normalize_input=False)


def random_facenet() -> torch.nn.Module:
    """facenet-pytorch's InceptionResnetV1 classifier (CASIA-WebFace's 10,575 classes), seeded random weights."""
    from runtime.torchvision_compat import ensure_torchvision

    ensure_torchvision()
    from facenet_pytorch import InceptionResnetV1

    torch.manual_seed(0)
    return InceptionResnetV1(classify=True, num_classes=10575).eval()


def images_per_second(call: Callable[[], object], images: int, device: torch.device, budget: Budget,
                      tiny: bool) -> dict:
    times = timed_calls(synchronised(call, device), budget, *CALLS[tiny])
    if not times:
        return {"images": images, "note": "the budget ended during the warm-up calls"}
    return {"images": images, "calls_timed": len(times), "images_per_s": round(images / statistics.median(times), 1)}


def metric_networks(tiny: bool, seconds: float) -> dict:
    """Images/s of the Inception (299x299), MTCNN (whole 220x180 crops, its own weights) and FaceNet (160x160)."""
    from runtime.torchvision_compat import ensure_torchvision

    ensure_torchvision()
    from facenet_pytorch import MTCNN

    device = runtime.default_device()
    images = 4 if tiny else 64
    crops = face_batch(faces_root(), images).source
    results: dict = {"device": device_name(device)}
    with tempfile.TemporaryDirectory() as folder, torch.inference_mode():
        inception = random_inception(Path(folder)).to(device, memory_format=torch.channels_last)
        facenet = random_facenet().to(device)
        mtcnn = MTCNN(keep_all=True, device=device)
        pixels = torch.rand(images, 3, 299, 299, device=device).contiguous(memory_format=torch.channels_last)
        faces = torch.rand(images, 3, 160, 160, device=device) * 2 - 1
        runs = {"inception": lambda: inception(pixels), "mtcnn": lambda: mtcnn.detect(crops),
                "facenet": lambda: facenet(faces)}
        budget = Budget(seconds)
        for number, (name, call) in enumerate(runs.items()):
            share = Budget(budget.left() / (len(runs) - number))  # what an earlier network left over passes on
            results[name] = images_per_second(call, images, device, share, tiny)
        boxes, _ = mtcnn.detect(crops)
    results["mtcnn"]["faces_found"] = sum(found is not None and len(found) > 0 for found in boxes)
    return results
