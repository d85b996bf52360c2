"""Where and in what precision to train: device choice, bf16 detection, autocast, loss scaling.

bf16 autocast + channels-last doubles ResNet18's speed where the hardware has bf16 units (CUDA
Ampere+, CPUs with avx512_bf16 or AMX); elsewhere bf16 is emulated and slower, so `auto` picks fp32.
fp16 autocast with loss scaling is the choice left to GPUs with fast fp16 but no bf16 (Volta and
Turing: the T4, V100, RTX 20xx, GTX 16xx; the P100); it is never picked by `auto`, being the one
precision whose range can overflow or underflow. Channels-last pays in fp32 too, so it is always on.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import torch

from byol.errors import UserError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}

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


CPUINFO = Path("/proc/cpuinfo")


def cpu_flags() -> str:
    """The CPU's feature flags: the `flags` lines of Linux's /proc/cpuinfo (empty elsewhere, which
    means "none known")."""
    if not CPUINFO.is_file():
        return ""
    lines = CPUINFO.read_text(errors="ignore").splitlines()
    return " ".join(line.split(":", 1)[1] for line in lines if line.split(":", 1)[0].strip() == "flags")


def cpu_has_bf16() -> bool:
    """True when the CPU has native bf16 instructions (avx512_bf16 or amx_bf16)."""
    flags = cpu_flags().split()
    return "avx512_bf16" in flags or "amx_bf16" in flags


def cpu_has_fp16() -> bool:
    """True when the CPU has native fp16 arithmetic (avx512_fp16 or amx_fp16); elsewhere fp16 is
    emulated: BYOL trained at 0.12x its fp32 speed on the 2-core development CPU (benchmarks/README.md)."""
    flags = cpu_flags().split()
    return "avx512_fp16" in flags or "amx_fp16" in flags


def cuda_has_bf16(device: torch.device) -> bool:
    """Native bf16 on this GPU: Ampere (compute capability 8) and later, or ROCm.

    torch.cuda.is_bf16_supported() also says True where bf16 is only emulated (the 8 GB Pascal and
    Turing cards many users have), where it is slower than fp32.
    """
    return bool(torch.version.hip) or torch.cuda.get_device_properties(device).major >= 8


def cuda_has_fast_fp16(device: torch.device) -> bool:
    """Volta (compute capability 7) and later, with fp16 tensor cores, and the P100 (6.0), whose fp16
    runs at twice its fp32 rate; the other Pascal cards (GTX 10xx, 6.1) run fp16 at 1/64 of it."""
    properties = torch.cuda.get_device_properties(device)
    return bool(torch.version.hip) or properties.major >= 7 or (properties.major, properties.minor) == (6, 0)


def native_precisions(device: torch.device) -> dict[str, bool]:
    """For each reduced precision ('bf16', 'fp16'): whether the device computes it natively (fast
    fp16 on a GPU); elsewhere it is emulated, slower than fp32."""
    if device.type == "cuda":
        return {"bf16": cuda_has_bf16(device), "fp16": cuda_has_fast_fp16(device)}
    return {"bf16": cpu_has_bf16(), "fp16": cpu_has_fp16()}


def resolve_precision(name: str, device: torch.device) -> str:
    """'auto' -> 'bf16' where the device computes bf16 natively, else 'fp32'."""
    if name not in PRECISIONS:
        raise UserError(f"--precision {name!r}: use one of {', '.join(PRECISIONS)}")
    on_cuda = device.type == "cuda"
    native = native_precisions(device)
    native_bf16, native_fp16 = native["bf16"], native["fp16"]
    if name == "auto":
        if on_cuda and native_fp16 and not native_bf16:
            log.info(
                "this GPU has fast fp16 but no bf16: --precision fp16 (mixed precision with loss "
                "scaling) usually trains faster and in less memory than the fp32 that auto picks"
            )
        return "bf16" if native_bf16 else "fp32"
    if (name == "bf16" and not native_bf16) or (name == "fp16" and not native_fp16):
        units = "fast fp16" if on_cuda and name == "fp16" else f"native {name} units"
        log.warning(
            f"--precision {name}: this {device.type.upper()} has no {units}, so {name} runs slower than "
            "fp32 here (--precision auto picks fp32)"
        )
    return name


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bf16/fp16 autocast for the forward pass; losses are computed in fp32 by the loss functions."""
    if precision in AUTOCAST_DTYPES:
        return torch.autocast(device.type, dtype=AUTOCAST_DTYPES[precision])
    return contextlib.nullcontext()


def grad_scaler(device: torch.device, precision: str) -> torch.amp.GradScaler:
    """Loss scaling for fp16, whose small gradients would otherwise round to zero; bf16 has fp32's
    range and needs none. Disabled, the scaler passes the loss and the step through unchanged, so the
    training loops have one code path for every precision."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")


# channels-last everywhere: tensor cores want NHWC, and oneDNN's CPU convolutions run faster in it
# (ResNet18 BYOL step at 64 px, batch 64, fp32 on the 2-core development CPU: 49 vs 42 images/s).
MEMORY_FORMAT = torch.channels_last
