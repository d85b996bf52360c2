"""Choosing the precision (byol/device.py): bf16 only where the hardware computes it natively; fp16
only when asked, with loss scaling. And how many cores the process may use."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch
from conftest import ROOT

from byol import device as device_module
from byol.device import grad_scaler, resolve_precision
from byol.errors import UserError


def pretend_cuda(monkeypatch, major: int, minor: int = 5) -> None:
    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    properties = SimpleNamespace(major=major, minor=minor)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: properties)


@pytest.mark.parametrize(
    "major, expected, fp16_hint",
    [(6, "fp32", False), (7, "fp32", True), (8, "bf16", False), (9, "bf16", False)],
)
def test_auto_on_cuda_needs_native_bf16_not_emulation(monkeypatch, caplog, major, expected, fp16_hint):
    # torch.cuda.is_bf16_supported() says True on Pascal/Turing too (emulated, slower than fp32).
    pretend_cuda(monkeypatch, major)
    with caplog.at_level(logging.INFO, logger="byol.device"):
        assert resolve_precision("auto", torch.device("cuda")) == expected
    # Volta/Turing (the T4, RTX 20xx) have fast fp16: auto keeps fp32 but says fp16 is there.
    assert ("--precision fp16" in caplog.text) == fp16_hint


# GTX 10xx (6.1): fp16 at 1/64 of fp32; P100 (6.0): at twice fp32; Volta on: tensor cores.
@pytest.mark.parametrize("major, minor, warned", [(6, 1, True), (6, 0, False), (7, 5, False), (8, 6, False)])
def test_fp16_is_obeyed_and_warned_about_where_it_is_slow(monkeypatch, caplog, major, minor, warned):
    pretend_cuda(monkeypatch, major, minor)
    with caplog.at_level(logging.WARNING, logger="byol.device"):
        assert resolve_precision("fp16", torch.device("cuda")) == "fp16"
    assert ("no fast fp16" in caplog.text) == warned


@pytest.mark.parametrize("has_bf16, expected", [(False, "fp32"), (True, "bf16")])
def test_auto_on_cpu_follows_the_cpu_flags(monkeypatch, has_bf16, expected):
    monkeypatch.setattr(device_module, "cpu_has_bf16", lambda: has_bf16)
    assert resolve_precision("auto", torch.device("cpu")) == expected


CPUINFO_CORE = """processor\t: {n}
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Processor
flags\t\t: fpu vme sse sse2 avx avx2 avx512f avx512bw avx512vl {extra}
bugs\t\t: spectre_v1 spectre_v2
power management:

"""


@pytest.mark.parametrize(
    "extra, expected",
    [("avx512_vnni", "fp32"), ("avx512_vnni avx512_bf16", "bf16"), ("amx_tile amx_bf16 amx_int8", "bf16")],
)
def test_auto_on_cpu_reads_bf16_units_from_the_cpuinfo_text(monkeypatch, tmp_path, extra, expected):
    cpuinfo = tmp_path / "cpuinfo"  # the shape of Linux's /proc/cpuinfo: one block per core
    cpuinfo.write_text("".join(CPUINFO_CORE.format(n=n, extra=extra) for n in range(2)))
    monkeypatch.setattr(device_module, "CPUINFO", cpuinfo)
    assert resolve_precision("auto", torch.device("cpu")) == expected
    assert not device_module.cpu_has_fp16()


def test_bf16_named_outside_the_flags_line_is_not_a_bf16_unit(monkeypatch, tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(CPUINFO_CORE.format(n=0, extra="").replace("Processor", "Processor avx512_bf16"))
    monkeypatch.setattr(device_module, "CPUINFO", cpuinfo)
    assert resolve_precision("auto", torch.device("cpu")) == "fp32"
    monkeypatch.setattr(device_module, "CPUINFO", tmp_path / "absent")  # not Linux: nothing known
    assert resolve_precision("auto", torch.device("cpu")) == "fp32"


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_asking_for_an_emulated_precision_is_obeyed_with_a_warning(monkeypatch, caplog, precision):
    monkeypatch.setattr(device_module, "cpu_flags", lambda: "fpu sse2 avx2")
    with caplog.at_level(logging.WARNING, logger="byol.device"):
        assert resolve_precision(precision, torch.device("cpu")) == precision
        assert resolve_precision("fp32", torch.device("cpu")) == "fp32"
    assert len(caplog.records) == 1 and f"no native {precision} units" in caplog.records[0].getMessage()


@pytest.mark.parametrize(
    "flags, native", [("avx2 avx512_bf16", "bf16"), ("avx2 amx_fp16 avx512_fp16", "fp16")]
)
def test_native_cpu_precisions_are_read_from_the_cpu_flags(monkeypatch, caplog, flags, native):
    monkeypatch.setattr(device_module, "cpu_flags", lambda: flags)
    with caplog.at_level(logging.WARNING, logger="byol.device"):
        resolve_precision(native, torch.device("cpu"))
    assert not caplog.records


def test_only_fp16_scales_the_loss():
    cpu = torch.device("cpu")
    assert [grad_scaler(cpu, p).is_enabled() for p in ("fp32", "bf16", "fp16")] == [False, False, True]


def test_an_unknown_precision_is_a_user_error():
    with pytest.raises(UserError, match="--precision 'fp8'"):
        resolve_precision("fp8", torch.device("cpu"))


@pytest.mark.slow
@pytest.mark.skipif(
    not hasattr(os, "sched_getaffinity") or shutil.which("taskset") is None or (os.cpu_count() or 1) < 2,
    reason="needs Linux's affinity mask, taskset and 2 or more cores",
)
def test_data_split_decodes_with_the_cores_it_was_given_not_the_machines():
    # As under Slurm or docker --cpuset-cpus: one core of the machine's os.cpu_count().
    code = "import data_split; print(data_split.get_args_parser().get_default('workers'))"
    result = subprocess.run(
        ["taskset", "-c", "0", sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-1] == "1"
