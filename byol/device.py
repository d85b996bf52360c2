"""Where and in what precision to train: device choice, bf16 detection, autocast.

bf16 autocast + channels-last doubles ResNet18's speed where the hardware has bf16 units (CUDA
Ampere+, CPUs with avx512_bf16 or AMX); elsewhere bf16 is emulated and slower, so `auto` picks fp32.
Channels-last pays in fp32 too, so it is always on.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import torch

from byol.errors import UserError

PRECISIONS = ("auto", "fp32", "bf16")

log = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    """'auto' -> cuda when available, else cpu; an unusable device is a UserError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"--device {name!r} is not a device; use auto, cpu or cuda") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name}: no CUDA GPU is available here; use --device cpu or auto")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise UserError(f"--device {name}: only {torch.cuda.device_count()} GPU(s) are visible")
    if device.type not in ("cpu", "cuda"):
        raise UserError(f"--device {name}: only cpu and cuda are supported")
    return device


def cpu_has_bf16() -> bool:
    """True when the CPU has native bf16 instructions (Linux: avx512_bf16 or amx_bf16 in cpuinfo)."""
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        return False
    flags = cpuinfo.read_text(errors="ignore")
    return "avx512_bf16" in flags or "amx_bf16" in flags


def cuda_has_bf16(device: torch.device) -> bool:
    """Native bf16 on this GPU: Ampere (compute capability 8) and later, or ROCm.

    torch.cuda.is_bf16_supported() also says True where bf16 is only emulated (the 8 GB Pascal and
    Turing cards many users have), where it is slower than fp32.
    """
    return bool(torch.version.hip) or torch.cuda.get_device_properties(device).major >= 8


def resolve_precision(name: str, device: torch.device) -> str:
    """'auto' -> 'bf16' where the device computes bf16 natively, else 'fp32'."""
    if name not in PRECISIONS:
        raise UserError(f"--precision {name!r}: use one of {', '.join(PRECISIONS)}")
    native = cuda_has_bf16(device) if device.type == "cuda" else cpu_has_bf16()
    if name == "auto":
        return "bf16" if native else "fp32"
    if name == "bf16" and not native:
        log.warning(
            f"--precision bf16: this {device.type.upper()} has no native bf16, so it is emulated and "
            "slower than fp32 (--precision auto picks fp32 here)"
        )
    return name


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bf16 autocast for the forward pass; losses are computed in fp32 by the loss functions."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


# channels-last everywhere: tensor cores want NHWC, and oneDNN's CPU convolutions run faster in it
# (ResNet18 BYOL step at 64 px, batch 64, fp32 on the 2-core development CPU: 49 vs 42 images/s).
MEMORY_FORMAT = torch.channels_last
