"""The one shared fixture: small generated image folders, optionally with the faults of the real archive."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import runpy
import struct
import subprocess
import sys
import traceback
import zlib
from pathlib import Path

import pytest
import torch
from PIL import Image

from byol.budget import Speed
from byol.demo_images import make_demo_images

ROOT = Path(__file__).resolve().parents[1]
REAL_DATA = ROOT.parent / "shared" / "data" / "PetImages"
# train_byol.py flags for a pretraining run of a few seconds on the generated images
# (the library's own defaults, --setting reference, for every flag not given; settings have own tests)
TINY_BYOL = [
    "--setting",
    "reference",
    "--batch-size",
    "8",
    "--image-size",
    "32",
    "--cache-size",
    "36",
    "--max-images",
    "32",
    "--device",
    "cpu",
]


def four_stages(images: Path, device: str, resumed: bool = False) -> list[tuple]:
    """The four stages' (script, *flags) for a run of seconds on a generated folder of 24 images per
    class: 12 labelled, 8 validation, 12 test, 16 pretraining images. `resumed`: the pretraining
    stopped after its first epoch and continued with --resume, as after an interruption."""
    size = ["--image-size", "32", "--cache-size", "36", "--device", device]
    byol = ["train_byol.py", "--epochs", "2", "--batch-size", "8", "--max-images", "16", *size]
    pretraining = [(*byol, "--stop-after-epochs", "1"), (*byol, "--resume")] if resumed else [tuple(byol)]
    classifier = ["--epochs", "2", "--batch-size", "8", "--seeds", "2", "--n-labels", "4,12", *size]
    # A rate choice of 2 rates x 2 folds (the default 3 x 3, 36 fine-tunings here, is test_comparison's)
    classifier += ["--finetune-lrs", "1e-4,1e-3", "--finetune-folds", "2"]
    return [
        (
            "data_split.py",
            "--data-dir",
            images,
            "--n-labelled",
            "12",
            "--n-validation",
            "8",
            "--n-test",
            "12",
        ),
        *pretraining,
        ("train_classifier.py", *classifier),
        ("plot_results.py",),
    ]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The tests marked `longest` first, the rest in file order: pytest-xdist hands tests out round
    the workers in this order, so that a minute-long test never starts last while the other worker
    sits idle. On 2 cores: 286 s, against 293 s in file order and 403 s with every slow test first
    (xdist's first round then gave one worker most of the long ones)."""
    items.sort(key=lambda item: item.get_closest_marker("longest") is None)


def run_script(script: str, *args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run a stage script (`train_byol.py`, `benchmarks/bench_memory.py`) or a module
    (`byol.demo_images`) as a user does, with the same exit status, stdout and stderr (the log
    lines included), but in this process: a new Python process costs seconds of importing torch.
    `run_subprocess` runs it for real, for what only a separate process shows (signals, torchrun)."""
    path = ROOT / script if script.endswith(".py") else None
    argv = [str(path) if path else script, *map(str, args)]
    stdout, stderr = io.StringIO(), io.StringIO()
    handler = logging.StreamHandler(stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    root = logging.getLogger()
    saved = (root.handlers[:], root.level, sys.argv, os.getcwd(), torch.get_num_threads())
    root.handlers[:] = [handler]  # as run_stage's basicConfig sets up in a new process
    root.setLevel(logging.INFO)
    sys.argv = argv
    returncode = 0
    try:
        os.chdir(cwd or ROOT)
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            try:
                if not path:  # a module another script imported: runpy would warn that it runs a second copy
                    sys.modules.pop(script, None)
                runpy.run_path(str(path), run_name="__main__") if path else runpy.run_module(
                    script, run_name="__main__", alter_sys=True
                )
            except SystemExit as exit_:
                returncode = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
                if isinstance(exit_.code, str):
                    print(exit_.code, file=sys.stderr)
            except Exception:  # what Python prints, and exit status 1, as for an uncaught error
                traceback.print_exc()
                returncode = 1
    finally:
        root.handlers[:], level, sys.argv, cwd_before, threads = saved
        root.setLevel(level)
        os.chdir(cwd_before)
        torch.set_num_threads(threads)
    return subprocess.CompletedProcess(argv, returncode, stdout.getvalue(), stderr.getvalue())


def run_split(
    data_dir: Path, out: Path, labelled: int, test: int, *extra: str | Path, validation=0, workers=1
) -> subprocess.CompletedProcess:
    """Stage 1 on `data_dir` into `out` with these counts (no validation set unless asked), in-process."""
    counts = ["--n-labelled", labelled, "--n-test", test, "--n-validation", validation, "--workers", workers]
    return run_script("data_split.py", "--data-dir", data_dir, "--out-dir", out, *counts, *extra)


def run_subprocess(script: str, *args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run a stage script or module in a new Python process, exactly as a user does."""
    target = [str(ROOT / script)] if script.endswith(".py") else ["-m", script]
    return subprocess.run(
        [sys.executable, *target, *map(str, args)], capture_output=True, text=True, cwd=cwd or ROOT
    )


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height: enough to trip the decompression-bomb check."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0"))
        + chunk(b"IEND", b"")
    )


def add_faults(folder: Path, class_name: str) -> dict[str, str]:
    """Put every kind of file the real archive holds into one class folder.

    Returns {relative path: expected reject-reason prefix} for the files that must be rejected.
    """
    class_dir = folder / class_name
    (class_dir / "empty.jpg").write_bytes(b"")
    good = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 30, 30)).save(good, "JPEG")
    (class_dir / "truncated.jpg").write_bytes(good.getvalue()[: len(good.getvalue()) // 2])
    (class_dir / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0" + b"\0" * 500)
    (class_dir / "notes.jpg").write_text("this is text, not a JPEG")
    Image.new("RGB", (12, 40), (0, 0, 0)).save(class_dir / "tiny.jpg")
    (class_dir / "bomb.png").write_bytes(png_header_only(20000, 20000))
    (class_dir / "moved.jpg").symlink_to(class_dir / "no_such_file.jpg")  # a broken link
    # Kept, converted to RGB: the colour modes and lying extensions of the real archive.
    Image.new("CMYK", (48, 48), (10, 200, 30, 0)).save(class_dir / "cmyk.jpg")
    Image.new("L", (48, 48), 128).save(class_dir / "grey.jpg")
    Image.new("P", (48, 48), 3).save(class_dir / "palette.gif")
    Image.new("RGBA", (48, 48), (1, 2, 3, 100)).save(class_dir / "rgba.png")
    Image.new("RGB", (48, 48), (9, 9, 9)).save(class_dir / "really_a_png.jpg", format="PNG")
    prefix = f"{class_name}/"
    return {
        prefix + "empty.jpg": "empty file",
        prefix + "truncated.jpg": "broken image",
        prefix + "Thumbs.db": "not an image",
        prefix + "notes.jpg": "not an image",
        prefix + "tiny.jpg": "too small",
        prefix + "bomb.png": "too large",
        prefix + "moved.jpg": "unreadable: No such file",
    }


# The speed tiny runs plan with instead of measuring it (known_speed; tests/ddp_worker.py's processes)
PLANNING_SPEED = Speed(images_per_s=100.0, monitor_seconds=1.0)


@pytest.fixture(autouse=True)
def known_speed(request, monkeypatch):
    """Tiny test runs skip the speed measurement before training (a few steps and a feature pass,
    which would add about 40 s to the suite) and plan with a fixed speed instead. Tests of the
    measurement itself (marked `measured_speed`) and processes started with run_subprocess measure for
    real; tests/ddp_worker.py fixes the speed in its torchrun processes as this does here."""
    if request.node.get_closest_marker("measured_speed"):
        return
    from byol import grid_plan, pretrain
    from byol.grid_plan import GridSpeed

    monkeypatch.setattr(pretrain, "measure_speed", lambda run, steps_left=None: PLANNING_SPEED)
    # Stage 3's plan and the ceiling's (run as a script, it imports the name afresh) read it from here.
    monkeypatch.setattr(grid_plan, "measure_grid_speed", lambda *args: GridSpeed(0.1, 1000.0))


@pytest.fixture
def image_folder(tmp_path: Path):
    """Factory: `image_folder(per_class=20)` writes a two-class folder (circle, square) and returns it."""

    def make(per_class: int = 20, size: int = 48, name: str = "images") -> Path:
        return make_demo_images(tmp_path / name, per_class=per_class, size=size)

    return make


def write_split(folder: Path, out_dir: Path, n_labelled: int, n_test: int, n_validation: int = 0) -> Path:
    """Split `folder` into `out_dir` as data_split.py does; returns out_dir."""
    from byol.data import SplitSizes, make_split, save_split

    sizes = SplitSizes(n_labelled, n_validation, n_test)
    result = make_split(folder, sizes, seed=0, workers=1, min_size=8, max_pixels=10**8)
    settings = {"n_labelled": n_labelled, "n_validation": n_validation, "n_test": n_test, "seed": 0}
    save_split(result, folder, out_dir, settings)
    return out_dir


@pytest.fixture
def split_dir(image_folder, tmp_path):
    """Factory: a generated folder already split, as data_split.py leaves it; returns the out dir."""

    def make(
        per_class: int = 28, n_labelled: int = 8, n_test: int = 16, size: int = 40, n_validation: int = 8
    ) -> Path:
        folder = image_folder(per_class=per_class, size=size)
        return write_split(folder, tmp_path / "results", n_labelled, n_test, n_validation)

    return make


def assert_one_error_line(stderr: str) -> None:
    """What a user sees for a bad flag, path or file: one `error: ...` line, or argparse's usage
    followed by its one `prog: error: ...` line; no traceback, no progress bar, no second message."""
    lines = stderr.strip().splitlines()
    assert lines, "nothing on stderr"
    if lines[0].startswith("usage:"):
        assert ": error: " in lines[-1] and not any("error" in line for line in lines[:-1]), stderr
    else:
        assert len(lines) == 1 and lines[0].startswith("error: "), stderr
