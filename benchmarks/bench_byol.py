"""Is the model the only limit? BYOL training throughput, side by side, in one run.

    python benchmarks/bench_byol.py [--device auto] [--image-size 64] [--batch-size 64] [--steps 8]
                                    [--data-dir ../shared/data/PetImages] [--variants] [--compile]

On the same images, model, batch and image size, it times (training images per second, each image
counted once although BYOL makes two views of it):
  model_only     our step (default precision and memory format) on views already on the device
  pipeline       the image cache + batched on-device views + the same step: train_byol.py's own code
  usual          a DataLoader (workers = cores) decoding the JPEGs with per-image PIL/torchvision
                 transforms, feeding an fp32, contiguous step (the peers' default recipe)
  loader_ours    the same DataLoader feeding our step (tells the data gain from the precision gain)
and the data side alone (views per second, no model) for pipeline and usual, the pipeline at 1,000
and at 20,000 cached images (nothing in the loop may grow with the data), the device's matmul peak in
fp32 and in each reduced precision it has units for (or uses), the step's achieved GFLOP/s and
utilisation of the peak of the precision used, peak memory and the cache's size on disk. --variants
also times the model-only step in each precision and memory format (and with torch.compile when
--compile is given). Runs compared by a ratio (model_only and the two pipelines; the variants) are
timed in interleaved turns of 2 steps and summarised by their median turn, so that this noisy
machine's slow spells hit them alike; the DataLoader runs cannot be interleaved (their workers
prepare batches in the background) and are timed one after the other.
--steps is the number of timed steps per run. The last line is for scripts:
RESULT pipeline_vs_model_only=... pipeline_vs_usual=... pipeline_images_per_s=... utilisation=... ...
"""

from __future__ import annotations

import argparse
import resource
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch
from PIL import Image
from torchvision import transforms

from byol.augment import IMAGENET_MEAN, IMAGENET_STD, VIEW_1, VIEW_2, BYOLViews, ViewConfig
from byol.cache import cache_paths, default_cache_size, load_cache
from byol.data import Split, SplitSizes, available_cpus, make_split, read_split, save_split
from byol.demo_images import make_demo_images
from byol.device import (
    AUTOCAST_DTYPES,
    PRECISIONS,
    grad_scaler,
    native_precisions,
    resolve_device,
    resolve_precision,
)
from byol.distributed import Runtime
from byol.model import BYOL, RESNET18_FEATURES, resnet18_backbone
from byol.optim import default_lr, make_optimizer
from byol.pretrain_config import PretrainConfig
from byol.run_options import CACHE_DIR
from byol.step import Trainer, seeded_generator, step_views, train_step

ROOT = Path(__file__).resolve().parents[1]
REAL_DATA = ROOT.parent / "shared" / "data" / "PetImages"
SMALL, LARGE = 1_000, 20_000  # cached images the pipeline samples from, to show the loop does not grow


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    else:  # Linux: writing 5 to clear_refs resets the peak resident set size (VmHWM)
        try:
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            pass


def peak_memory_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def interleaved(
    run_steps: list[Callable[[], None]], rounds: int, steps_per_turn: int, warmup: int, device: torch.device
) -> list[float]:
    """Seconds per step of each runner, timed in turns: a few steps of each, round after round.

    Each runner's figure is its median turn, so a slow spell of this noisy machine (the same step
    measured 38-46 images/s a minute apart) falls on every runner alike instead of on whichever
    happened to run then. Runners must do no work between their turns (no background workers).
    """
    for run_step in run_steps:
        for _ in range(warmup):
            run_step()
    turns: list[list[float]] = [[] for _ in run_steps]
    for _ in range(rounds):
        for run_step, times in zip(run_steps, turns, strict=True):
            synchronize(device)
            started = time.perf_counter()
            for _ in range(steps_per_turn):
                run_step()
            synchronize(device)
            times.append((time.perf_counter() - started) / steps_per_turn)
    return [statistics.median(times) for times in turns]


def timed(run_step: Callable[[], None], steps: int, warmup: int, device: torch.device) -> float:
    """Seconds per step of one runner, after `warmup` untimed steps: one turn of `steps` steps."""
    return interleaved([run_step], 1, steps, warmup, device)[0]


def make_trainer(runtime: Runtime, batch_size: int, compile_model: bool = False) -> Trainer:
    """A fresh BYOL model (seed 0) and its LARS optimiser, on runtime's device in its memory format."""
    torch.manual_seed(0)
    model = BYOL(resnet18_backbone(), RESNET18_FEATURES).to(
        runtime.device, memory_format=runtime.memory_format
    )
    config = PretrainConfig(optimizer="lars", lr=default_lr("lars", batch_size), weight_decay=1.5e-6)
    optimizer = make_optimizer(config, model)
    train_model = torch.compile(model) if compile_model else model
    return Trainer(train_model, model, optimizer, grad_scaler(runtime.device, runtime.precision), runtime)


def step_runner(trainer: Trainer, next_views: Callable[[], tuple]) -> Callable[[], None]:
    def run_step() -> None:
        loss = train_step(trainer, *next_views(), 0.01, 0.996)
        loss.item()  # as the training loop does: one host sync per step

    return run_step


def pil_view(config: ViewConfig, size: int) -> transforms.Compose:
    """One of the paper's views as per-image PIL transforms (lightly / byol-pytorch style)."""
    kernel = max(3, int(0.1 * size) // 2 * 2 + 1)
    steps = [
        transforms.RandomResizedCrop(size, scale=config.crop_scale, ratio=config.crop_ratio),
        transforms.RandomHorizontalFlip(config.flip_p),
        transforms.RandomApply(
            [transforms.ColorJitter(config.brightness, config.contrast, config.saturation, config.hue)],
            p=config.jitter_p,
        ),
        transforms.RandomGrayscale(config.grayscale_p),
        transforms.RandomApply([transforms.GaussianBlur(kernel, config.blur_sigma)], p=config.blur_p),
        transforms.RandomSolarize(128, p=config.solarize_p),
        transforms.ToTensor(),
        transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ]
    return transforms.Compose(steps)


class JpegPairs(torch.utils.data.Dataset):
    """Decodes a JPEG per item and returns its two views: what the usual recipe does per image."""

    def __init__(self, paths: list[Path], size: int) -> None:
        self.paths = paths
        self.view_1, self.view_2 = pil_view(VIEW_1, size), pil_view(VIEW_2, size)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        with Image.open(self.paths[index]) as image:
            image = image.convert("RGB")
        return self.view_1(image), self.view_2(image)


def endless(loader):
    while True:
        yield from loader


def matmul_gflops(device: torch.device, dtype: torch.dtype) -> float:
    n = 4096 if device.type == "cuda" else 1024
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    repeats = 20 if device.type == "cuda" else 5
    seconds = timed(lambda: torch.mm(a, b), repeats, 1, device)
    return 2 * n**3 / seconds / 1e9


def conv_gflops(device: torch.device, dtype: torch.dtype, memory_format: torch.memory_format) -> float:
    """A large 3x3 convolution's GFLOP/s (256 -> 256 channels on 32x32, the ResNet's own kind of op,
    in its memory format): the network runs its convolutions in oneDNN (cuDNN on a GPU), whose kernels
    can outrun the BLAS behind torch.mm (MKL's sgemm on an AMD EPYC: the matmul "peak" there sat below
    what the step achieved, a utilisation of 1.81)."""
    batch = 64 if device.type == "cuda" else 8
    conv = torch.nn.Conv2d(256, 256, 3, padding=1, bias=False).to(device, dtype, memory_format=memory_format)
    images = torch.randn(batch, 256, 32, 32, device=device, dtype=dtype).contiguous(
        memory_format=memory_format
    )
    repeats = 20 if device.type == "cuda" else 3
    with torch.no_grad():
        seconds = timed(lambda: conv(images), repeats, 1, device)
    return 2 * batch * 32 * 32 * 256 * 256 * 9 / seconds / 1e9


def device_peak(device: torch.device, dtype: torch.dtype, memory_format: torch.memory_format) -> float:
    """The device's measured peak GFLOP/s in `dtype`: the faster of a large matmul and a large
    convolution, so that a step's utilisation of it cannot pass 1 because one library is slow."""
    return max(matmul_gflops(device, dtype), conv_gflops(device, dtype, memory_format))


def step_flops(trainer: Trainer, views: tuple) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        train_step(trainer, *views, 0.0, 1.0)
    return counter.get_total_flops()


def prepare_split(data_dir: Path | None, work_dir: Path, size: int) -> Path:
    """A split of the benchmark images (all unlabelled) in work_dir, with their cache; reused when present."""
    if (work_dir / "splits.csv").is_file():
        return work_dir
    if data_dir is None:
        print(f"no --data-dir and no {REAL_DATA}: generating {LARGE} images", flush=True)
        data_dir = make_demo_images(work_dir / "images", per_class=LARGE // 2, size=size)
    result = make_split(
        data_dir, SplitSizes(2, 0, 0), seed=0, workers=available_cpus(), min_size=8, max_pixels=10**8
    )
    save_split(result, data_dir, work_dir, {"n_labelled": 2, "n_test": 0, "seed": 0})
    return work_dir


def compare_compile(bench: Bench, rounds: int) -> dict[str, float]:
    """Eager vs torch.compile'd training step on the same views: the compile's one-off cost, the
    steady-state ratio (interleaved turns), and the run length from which compiling pays.

    The one-off cost is the first 3 compiled steps' time less 3 eager steps (a second step may
    recompile once when the optimiser's state appears), as `train_byol.py --compile on` pays once per
    process: at the start, and again after each --resume.
    """
    runtime, batch, device = bench.runtime, bench.batch, bench.runtime.device
    next_views = bench.pipeline_views(bench.n_images)
    eager = step_runner(make_trainer(runtime, batch), next_views)
    compiled = step_runner(make_trainer(runtime, batch, compile_model=True), next_views)
    eager_step = timed(eager, 3, 2, device)
    synchronize(device)
    started = time.perf_counter()
    for _ in range(3):
        compiled()
    synchronize(device)
    compile_seconds = time.perf_counter() - started - 3 * eager_step
    eager_s, compiled_s = interleaved([eager, compiled], rounds, 2, 1, device)
    saved = eager_s - compiled_s
    return {
        "compile_seconds": compile_seconds,
        "eager_images_per_s": batch / eager_s,
        "compiled_images_per_s": batch / compiled_s,
        "compiled_vs_eager": eager_s / compiled_s,
        "break_even_steps": compile_seconds / saved if saved > 0 else float("inf"),
    }


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto", choices=PRECISIONS)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--cache-size", type=int, default=0, help="default: 1.15 x --image-size, as training")
    parser.add_argument("--steps", type=int, default=8, help="timed steps per measurement")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--workers", type=int, default=available_cpus(), help="DataLoader workers")
    parser.add_argument("--data-dir", type=Path, default=REAL_DATA if REAL_DATA.is_dir() else None)
    parser.add_argument("--work-dir", type=Path, help="keeps the split and cache between runs")
    parser.add_argument("--variants", action="store_true", help="also time each precision/memory format")
    parser.add_argument("--compile", action="store_true", help="with --variants: also torch.compile")
    parser.add_argument(
        "--compile-only",
        action="store_true",
        help="only eager vs torch.compile (train_byol.py --compile): compile seconds, ratio, break-even",
    )
    return parser


class Bench:
    """One benchmark run: what it runs on, the cached images, and the measurements so far."""

    def __init__(
        self, args: argparse.Namespace, runtime: Runtime, split: Split, images: torch.Tensor
    ) -> None:
        self.args, self.runtime, self.split, self.images = args, runtime, split, images
        self.batch = args.batch_size
        self.n_images = len(split.table)
        self.views = BYOLViews(args.image_size)
        self.small, self.large = min(SMALL, self.n_images), min(LARGE, self.n_images)
        self.rows: list[tuple[str, float, float, str]] = []  # name, images/s, peak MiB, note

    def measure(self, name: str, run_step: Callable[[], None], per_step: int = 0) -> float:
        """Images (or `per_step` items) per second of one runner, timed alone."""
        device = self.runtime.device
        per_step = per_step or self.batch
        reset_peak_memory(device)
        seconds = timed(run_step, self.args.steps, self.args.warmup, device)
        self.rows.append((name, per_step / seconds, peak_memory_mib(device), ""))
        print(f"  {name:<28} {per_step / seconds:8.1f} /s", flush=True)
        return per_step / seconds

    def measure_together(self, named_steps: list[tuple[str, Callable[[], None]]]) -> list[float]:
        """Images/s of each, timed in interleaved turns of 2 steps (see `interleaved`)."""
        device, args = self.runtime.device, self.args
        reset_peak_memory(device)
        run_steps = [run_step for _, run_step in named_steps]
        seconds = interleaved(run_steps, max(1, args.steps // 2), 2, args.warmup, device)
        mib = peak_memory_mib(device)  # the group's peak: the runners share one process
        speeds = [self.batch / s for s in seconds]
        for (name, _), speed in zip(named_steps, speeds, strict=True):
            self.rows.append((name, speed, mib, "interleaved"))
            print(f"  {name:<28} {speed:8.1f} /s   interleaved", flush=True)
        return speeds

    def pipeline_views(self, n_cached: int) -> Callable[[], tuple]:
        """train_byol.py's views: random batches of the first `n_cached` cached images."""
        generator = seeded_generator(0, 0, self.runtime.device)
        order = torch.Generator().manual_seed(0)

        def next_views():
            rows = torch.randint(0, n_cached, (self.batch,), generator=order)
            return step_views(self.images, rows, self.views, generator, self.runtime)

        return next_views


def loader_views(batches, device: torch.device, fmt: torch.memory_format) -> Callable[[], tuple]:
    """The next DataLoader batch's two views, moved to the device in memory format `fmt`."""

    def next_views():
        view_1, view_2 = next(batches)
        return (
            view_1.to(device, non_blocking=True).contiguous(memory_format=fmt),
            view_2.to(device, non_blocking=True).contiguous(memory_format=fmt),
        )

    return next_views


def run_compile_only(bench: Bench) -> None:
    result = compare_compile(bench, max(2, bench.args.steps // 2))
    print(
        f"torch.compile: {result['compile_seconds']:.0f} s to compile; eager "
        f"{result['eager_images_per_s']:.1f} vs compiled {result['compiled_images_per_s']:.1f} images/s "
        f"(interleaved); pays after {result['break_even_steps']:.0f} steps"
    )
    print("RESULT " + " ".join(f"{name}={value:.2f}" for name, value in result.items()))


def measure_data_side(bench: Bench) -> tuple[dict[str, float], object]:
    """Views/s of the pipeline and of the usual DataLoader, no model; and the DataLoader's endless batches."""
    print("data side alone (views/s, two per image):", flush=True)
    args, batch = bench.args, bench.batch
    speeds = {"pipeline_data": bench.measure("pipeline views", bench.pipeline_views(bench.large), 2 * batch)}
    paths = [bench.split.data_dir / path for path in bench.split.table["path"]]
    loader = torch.utils.data.DataLoader(
        JpegPairs(paths, args.image_size),
        batch_size=batch,
        shuffle=True,
        num_workers=args.workers,
        drop_last=True,
        persistent_workers=args.workers > 0,
        pin_memory=bench.runtime.device.type == "cuda",
    )
    batches = endless(loader)
    speeds["usual_data"] = bench.measure("usual DataLoader views", lambda: next(batches), 2 * batch)
    return speeds, batches


def measure_training(bench: Bench, batches) -> tuple[dict[str, float], tuple]:
    """Training images/s: model only, the pipeline at a small and a large cache (interleaved), then the
    usual fp32 recipe and our step fed by the DataLoader; the step's FLOPs; and the model-only views."""
    print("training (images/s):", flush=True)
    runtime, batch = bench.runtime, bench.batch
    trainer = make_trainer(runtime, batch)
    resident = bench.pipeline_views(bench.large)()
    speeds = {"flops": step_flops(trainer, resident)}
    speeds["model_only"], speeds["pipeline_small"], speeds["pipeline"] = bench.measure_together(
        [
            ("model_only", step_runner(trainer, lambda: resident)),
            (f"pipeline ({bench.small} cached)", step_runner(trainer, bench.pipeline_views(bench.small))),
            (f"pipeline ({bench.large} cached)", step_runner(trainer, bench.pipeline_views(bench.large))),
        ]
    )
    # The DataLoader's worker processes keep filling their queue in the background, so these two
    # are timed one after the other, not interleaved with the runners above.
    usual = make_trainer(replace(runtime, precision="fp32", memory_format=torch.contiguous_format), batch)
    device = runtime.device
    views = loader_views(batches, device, torch.contiguous_format)
    speeds["usual"] = bench.measure("usual (fp32, contiguous)", step_runner(usual, views))
    views = loader_views(batches, device, runtime.memory_format)
    speeds["loader_ours"] = bench.measure(f"loader_ours ({runtime.precision})", step_runner(trainer, views))
    return speeds, resident


def utilisation(bench: Bench, flops: float, model_only: float) -> float:
    """The model-only step's achieved GFLOP/s as a fraction of the device's peak in its precision
    (device_peak: the faster of a matmul and a convolution)."""
    runtime = bench.runtime
    # A reduced precision's peak only where it is in use or native: a CPU without bf16 (or fp16) units
    # emulates it at about 1 GFLOP/s, and its 1024x1024 matmuls alone would take a dozen seconds.
    native = native_precisions(runtime.device)
    peak_dtypes = {"fp32": torch.float32} | {
        name: dtype for name, dtype in AUTOCAST_DTYPES.items() if name == runtime.precision or native[name]
    }
    peaks = {
        name: device_peak(runtime.device, dtype, runtime.memory_format) for name, dtype in peak_dtypes.items()
    }
    achieved = flops / 1e9 * model_only / bench.batch
    used = achieved / peaks[runtime.precision]
    print(
        "peak (matmul or conv): "
        + ", ".join(f"{name} {gflops:.0f} GFLOP/s" for name, gflops in peaks.items())
        + "; "
        f"step {flops / 1e9:.1f} GFLOP -> {achieved:.1f} GFLOP/s, utilisation {used:.2f} "
        f"of the {runtime.precision} peak",
        flush=True,
    )
    return used


def measure_variants(bench: Bench, resident: tuple) -> None:
    """The model-only step in each precision and memory format (and compiled, with --compile)."""
    print("model-only variants (images/s):", flush=True)
    runtime = bench.runtime
    options = [
        ("fp32 contiguous", "fp32", torch.contiguous_format, False),
        ("fp32 channels-last", "fp32", torch.channels_last, False),
        ("bf16 channels-last", "bf16", torch.channels_last, False),
    ]
    if runtime.device.type == "cuda":  # fp16 is for GPUs; a CPU emulates it
        options.append(("fp16 channels-last", "fp16", torch.channels_last, False))
    if bench.args.compile:
        options.append(
            (f"{runtime.precision} + torch.compile", runtime.precision, runtime.memory_format, True)
        )
    variant_steps = []
    for name, precision, fmt, compile_model in options:
        trainer = make_trainer(
            replace(runtime, precision=precision, memory_format=fmt), bench.batch, compile_model
        )
        views = tuple(v.contiguous(memory_format=fmt) for v in resident)
        variant_steps.append((f"variant {name}", step_runner(trainer, lambda v=views: v)))
    speeds = bench.measure_together(variant_steps)
    for (name, _), speed in zip(variant_steps, speeds, strict=True):
        print(f"    {name}: ratio to fp32 contiguous {speed / speeds[0]:.2f}", flush=True)


def report(bench: Bench, speeds: dict[str, float]) -> None:
    """The table of every measurement, the ratios, and the RESULT line for scripts."""
    print()
    print(f"{'measurement':<30}{'per s':>10}{'peak MiB':>10}")
    for name, speed, mib, _ in bench.rows:
        print(f"{name:<30}{speed:>10.1f}{mib:>10.0f}")
    s = speeds
    print(
        f"data side: pipeline views {s['pipeline_data']:.0f}/s vs usual DataLoader {s['usual_data']:.0f}/s "
        f"({s['pipeline_data'] / s['usual_data']:.1f}x)"
    )
    print(
        f"data-size check: {s['pipeline_small']:.1f} images/s at {bench.small} cached vs {s['pipeline']:.1f} "
        f"at {bench.large} (ratio {s['pipeline'] / s['pipeline_small']:.2f})"
    )
    print(f"loader_ours vs usual: {s['loader_ours'] / s['usual']:.2f} (the gain from our step alone)")
    runtime, args = bench.runtime, bench.args
    print(
        f"RESULT pipeline_vs_model_only={s['pipeline'] / s['model_only']:.2f} "
        f"pipeline_vs_usual={s['pipeline'] / s['usual']:.2f} pipeline_images_per_s={s['pipeline']:.1f} "
        f"utilisation={s['utilisation']:.2f} device={runtime.device.type} precision={runtime.precision} "
        f"image_size={args.image_size} batch_size={args.batch_size}"
    )


def main() -> None:
    args = get_args_parser().parse_args()
    device = resolve_device(args.device)
    runtime = Runtime(device, resolve_precision(args.precision, device))
    cache_size = args.cache_size or default_cache_size(args.image_size)
    with tempfile.TemporaryDirectory() as temporary:
        work_dir = args.work_dir or Path(temporary)
        work_dir.mkdir(parents=True, exist_ok=True)
        split = read_split(prepare_split(args.data_dir, work_dir, 80))
        cache_dir = work_dir / CACHE_DIR
        bench = Bench(args, runtime, split, load_cache(split, cache_dir, cache_size, device))
        cache_mib = cache_paths(cache_dir, cache_size)[0].stat().st_size / 2**20
        print(
            f"device {device}, precision {runtime.precision}, {torch.get_num_threads()} threads, image "
            f"{args.image_size}px (cache {cache_size}px, {bench.n_images} images, {cache_mib:.0f} MiB on "
            f"disk), batch {args.batch_size}",
            flush=True,
        )
        if args.compile_only:
            run_compile_only(bench)
            return
        speeds, batches = measure_data_side(bench)
        training, resident = measure_training(bench, batches)
        speeds.update(training)
        speeds["utilisation"] = utilisation(bench, speeds["flops"], speeds["model_only"])
        if args.variants:
            measure_variants(bench, resident)
        report(bench, speeds)


if __name__ == "__main__":
    main()
