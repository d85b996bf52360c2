"""Run by test_distributed.py under torchrun: pretrain, then leave this rank's weights and batches.

argv: out_dir, config as JSON, resume (0/1), stop_after_epochs, and the step at which rank 1 sends
itself SIGTERM (0: never), to check that a signal to one process stops them all at one step.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import torch
from conftest import PLANNING_SPEED

from byol import pretrain as pretrain_module
from byol.errors import Stopped
from byol.pretrain import PretrainConfig, RunOptions, pretrain

out_dir, config, resume, stop_after_epochs, signal_at = (
    Path(sys.argv[1]),
    PretrainConfig(**json.loads(sys.argv[2])),
    sys.argv[3] == "1",
    int(sys.argv[4]),
    int(sys.argv[5]),
)
rank = int(os.environ["RANK"])
rows_seen = []
real_step_views = pretrain_module.step_views


def recording_step_views(images, global_rows, views, generator, runtime):
    start, stop = runtime.ranks.shard_bounds(len(global_rows))
    rows_seen.append({"global": global_rows.tolist(), "mine": global_rows[start:stop].tolist()})
    if rank == 1 and len(rows_seen) == signal_at:
        os.kill(os.getpid(), signal.SIGTERM)
    return real_step_views(images, global_rows, views, generator, runtime)


pretrain_module.step_views = recording_step_views
# As in the suite's own process (conftest.known_speed): the plan's speed is fixed, not measured with a
# fresh model's six steps (4 s of each process's 20 here); byol.budget's tests measure for real.
pretrain_module.measure_speed = lambda run, steps_left=None: PLANNING_SPEED
try:
    # fp32: the comparison with one process is to float32 rounding; bf16 (what "auto" picks on CPUs with
    # bf16 units) rounds to 8 bits and would hide a real difference.
    options = RunOptions(
        device_name="cpu",
        precision_name="fp32",
        resume=resume,
        stop_after_epochs=stop_after_epochs,
        snapshot_epochs="1",
    )
    model = pretrain(config, out_dir, options)
    torch.save(model.state_dict(), out_dir / f"rank{rank}_model.pt")
except Stopped as stopped:
    print(stopped, file=sys.stderr)
    (out_dir / f"rank{rank}_stopped.json").write_text(json.dumps([str(stopped), stopped.exit_code]))
(out_dir / f"rank{rank}_rows.json").write_text(json.dumps(rows_seen))
