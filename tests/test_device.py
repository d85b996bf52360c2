"""Choosing the precision (byol/device.py): bf16 only where the hardware computes it natively."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest
import torch

from byol import device as device_module
from byol.device import resolve_precision
from byol.errors import UserError


@pytest.mark.parametrize("major, expected", [(6, "fp32"), (7, "fp32"), (8, "bf16"), (9, "bf16")])
def test_auto_on_cuda_needs_native_bf16_not_emulation(monkeypatch, major, expected):
    # torch.cuda.is_bf16_supported() says True on Pascal/Turing too (emulated, slower than fp32).
    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: SimpleNamespace(major=major))
    assert resolve_precision("auto", torch.device("cuda")) == expected


@pytest.mark.parametrize("has_bf16, expected", [(False, "fp32"), (True, "bf16")])
def test_auto_on_cpu_follows_the_cpu_flags(monkeypatch, has_bf16, expected):
    monkeypatch.setattr(device_module, "cpu_has_bf16", lambda: has_bf16)
    assert resolve_precision("auto", torch.device("cpu")) == expected


def test_asking_for_emulated_bf16_is_obeyed_with_a_warning(monkeypatch, caplog):
    monkeypatch.setattr(device_module, "cpu_has_bf16", lambda: False)
    with caplog.at_level(logging.WARNING, logger="byol.device"):
        assert resolve_precision("bf16", torch.device("cpu")) == "bf16"
        assert resolve_precision("fp32", torch.device("cpu")) == "fp32"
    assert len(caplog.records) == 1 and "emulated" in caplog.records[0].getMessage()


def test_an_unknown_precision_is_a_user_error():
    with pytest.raises(UserError, match="--precision 'fp16'"):
        resolve_precision("fp16", torch.device("cpu"))
