"""Stopping cleanly and resuming: signal handling, checking a resumed run's flags, and refusing to
start over silently on top of an earlier run."""

from __future__ import annotations

import signal
from dataclasses import asdict, fields
from pathlib import Path

from byol.data import SPLIT_CONFIG_FILE, SPLITS_FILE
from byol.errors import UserError


class StopRequest:
    """Set by SIGINT/SIGTERM; the loop checks it after each step, saves, and exits cleanly."""

    def __init__(self) -> None:
        self.signal_name: str | None = None
        self.exit_code = 0

    def __call__(self, signum, frame) -> None:
        self.signal_name = signal.Signals(signum).name
        self.exit_code = 128 + signum  # the shell's convention for "killed by signal N"

    def __enter__(self) -> StopRequest:
        self.previous = {sig: signal.signal(sig, self) for sig in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def check_resumable(
    trained: Path,
    saved: dict,
    given: dict,
    remedy: str,
    may_change: tuple[str, ...] = (),
    defaults: dict | None = None,
) -> list[str]:
    """Both stages' --resume check: the settings `given` that differ from those `trained` was made
    with (`saved`). One that is not in `may_change` is refused in one line naming it, both values,
    and `remedy`; those that may change are returned. A setting `saved` lacks (a file written before
    the setting existed) counts as its value in `defaults`, the behaviour it had then."""
    saved = {**(defaults or {}), **saved}
    changed = [name for name, value in given.items() if saved.get(name) != value]
    for name in changed:
        if name not in may_change:
            flag = "the number of processes" if name == "world_size" else "--" + name.replace("_", "-")
            raise UserError(
                f"--resume: {trained} was trained with {flag} {saved.get(name)}, this run has "
                f"{given[name]}; {remedy}"
            )
    return changed


def check_resume_config(checkpoint: Path, saved: dict, given):
    """Pretraining's --resume: the saved config wins; a flag that was changed from its default must
    agree with it (check_resumable).

    `given` is a dataclass instance whose defaults are the command line's defaults.
    """
    config_type = type(given)
    defaults = asdict(config_type())
    flags = {
        field.name: getattr(given, field.name)
        for field in fields(config_type)
        if getattr(given, field.name) != defaults[field.name]
    }
    check_resumable(checkpoint, saved, flags, "drop the flag to resume, or start over with --overwrite")
    return config_type(**saved)


def check_fresh_start(out_dir: Path, earlier_files: tuple[str, ...], resume: bool, overwrite: bool) -> None:
    """Every stage's rule: without --resume or --overwrite, refuse to write over an earlier run's files.

    A forgotten --resume would otherwise replace hours of checkpointed training with a new run, and a
    stage run into a folder of another run's files would leave a mixture. Stage 1 has nothing to
    resume: it is told only of --overwrite.
    """
    if resume and overwrite:
        raise UserError("--resume and --overwrite: pass one or the other")
    found = [name for name in earlier_files if (out_dir / name).is_file()]
    if found and not (resume or overwrite):
        is_split = {SPLITS_FILE, SPLIT_CONFIG_FILE} & set(earlier_files)  # Stage 1 has nothing to resume
        remedy = (
            "replace it with --overwrite"
            if is_split
            else "continue it with --resume, start over with --overwrite"
        )
        earlier = ", ".join(found)
        raise UserError(
            f"{out_dir} already holds an earlier run ({earlier}): {remedy}, or choose another --out-dir"
        )
