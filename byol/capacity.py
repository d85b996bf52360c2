"""Will a run fit? Disk space for the image cache and memory for a BYOL step, checked before it starts.

Both failures would otherwise kill the process without a word: writing into a memory-mapped file on a
full disk raises SIGBUS, and on Linux a CPU run that needs more memory than there is gets no
allocation error but the OOM killer ("Killed", exit 137), after minutes spent building the cache.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from byol.errors import UserError

# Peak resident memory of one BYOL step of ResNet18 on a CPU (channels-last, two views of each image,
# online forward and backward, target forward), as benchmarks/bench_memory.py measures it: torch, the
# networks, their gradients and optimiser state take 1.0-1.2 GiB, and each image of the batch adds
# 1,041-1,216 bytes per pixel of its view in fp32 (16-256 images at 150 px; the allocator makes it
# uneven) and 429-494 in bf16; fp16 peaked at or below bf16 side by side (16 and 48 images at 96 px).
# The figures below are lower, so the estimate stays under every measured peak: a run the check lets
# through may still not fit, but one it refuses could not have.
RUNTIME_BYTES = 0.8 * 2**30
BYTES_PER_VIEW_PIXEL = {"fp32": 900, "bf16": 360, "fp16": 360}


def readable_size(n_bytes: float) -> str:
    """1536 -> '1.5 KiB'; what the capacity errors print."""
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n_bytes < 1024 or unit == "GiB":
            return f"{n_bytes:.0f} {unit}" if unit == "bytes" else f"{n_bytes:.1f} {unit}"
        n_bytes /= 1024
    raise AssertionError("unreachable")


def check_disk_space(path: Path, needed_bytes: int) -> None:
    """Refuse to write `needed_bytes` to `path` (the image cache) when its disk has less free."""
    path.parent.mkdir(parents=True, exist_ok=True)
    free_bytes = shutil.disk_usage(path.parent).free
    if needed_bytes > free_bytes:
        raise UserError(
            f"the image cache {path} needs {readable_size(needed_bytes)} and its disk has "
            f"{readable_size(free_bytes)} free; free some space or lower --cache-size (or --image-size)"
        )


def byol_step_bytes(batch_size: int, image_size: int, precision: str) -> float:
    """The least resident memory one process needs for a BYOL step at this batch and view size."""
    return RUNTIME_BYTES + BYTES_PER_VIEW_PIXEL[precision] * batch_size * image_size**2


def available_memory_bytes() -> int | None:
    """Memory a new allocation can still get (Linux: MemAvailable + SwapFree); None where unknown."""
    try:
        fields = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
        return sum(int(fields[name].split()[0]) * 1024 for name in ("MemAvailable", "SwapFree"))
    except (OSError, KeyError, ValueError):
        return None


def check_cpu_memory(batch_size: int, image_size: int, precision: str) -> None:
    """Refuse a CPU BYOL run whose step cannot fit in this machine's memory, with every process of
    this machine (torchrun's LOCAL_WORLD_SIZE) holding its own model and batch."""
    available = available_memory_bytes()
    processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    needed = processes * byol_step_bytes(batch_size, image_size, precision)
    if available is not None and needed > available:
        per_process = f", {processes} processes" if processes > 1 else ""
        raise UserError(
            f"--batch-size {batch_size} at --image-size {image_size} ({precision}{per_process}) needs "
            f"about {readable_size(needed)} of memory for a BYOL step and this machine has "
            f"{readable_size(available)} free; lower --batch-size or --image-size"
        )
