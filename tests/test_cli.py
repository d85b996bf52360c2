"""What the stage scripts share (byol/cli.py): one line and exit status 2 instead of a traceback."""

from __future__ import annotations

import pytest
import torch

from byol.cli import run_stage
from byol.errors import UserError


def raising(error: Exception):
    def main() -> None:
        raise error

    return main


@pytest.mark.parametrize(
    "error, message",
    [
        (UserError("--epochs 0: must be 1 or more"), "error: --epochs 0: must be 1 or more"),
        (
            torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB\nmore detail"),
            "error: out of memory (CUDA out of memory. Tried to allocate 2.00 GiB); start again with a lower",
        ),
        (
            RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory"),
            "error: out of memory ([enforce fail",
        ),
    ],
)
def test_user_errors_and_out_of_memory_are_one_line_and_exit_2(capsys, error, message):
    with pytest.raises(SystemExit) as exit_info:
        run_stage(raising(error))
    assert exit_info.value.code == 2
    stderr = capsys.readouterr().err
    assert stderr.startswith(message) and stderr.count("\n") == 1


def test_other_runtime_errors_keep_their_traceback():
    with pytest.raises(RuntimeError, match="a bug"):
        run_stage(raising(RuntimeError("a bug")))
