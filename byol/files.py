"""Reading and writing the stages' files.

Every output goes to a temporary name in the same folder, then is renamed, so an interrupted stage
leaves either the previous file or the new one, never half of one. A CSV or JSON file a later stage
reads back that is damaged or from elsewhere is a one-line UserError, not a pandas traceback.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd

from byol.errors import UserError, first_line


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        # mkstemp creates the file private (0600); give it the mode a plain open() would have.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(path: Path, write: Callable[[Path], Any]) -> None:
    with atomic_path(path) as tmp:
        write(tmp)


def write_text(path: Path, text: str) -> None:
    write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_json(path: Path, data: dict) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def write_csv(path: Path, frame: pd.DataFrame) -> None:
    write_atomic(path, lambda tmp: frame.to_csv(tmp, index=False))


def read_csv(path: Path, columns: Iterable[str], remedy: str) -> pd.DataFrame:
    """A CSV an earlier stage wrote, with at least `columns`; a damaged or foreign file is a UserError
    ending in `remedy` (what to run to write it again)."""
    try:
        frame = pd.read_csv(path)
    except (OSError, ValueError) as error:  # pandas' parser errors and UnicodeDecodeError are ValueErrors
        raise UserError(f"{path} is not a readable CSV ({first_line(error)}); {remedy}") from None
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise UserError(f"{path} lacks the column(s) {', '.join(missing)}; {remedy}")
    return frame


def read_json(path: Path, remedy: str) -> dict:
    """A JSON object an earlier stage wrote; a damaged file is a UserError ending in `remedy`."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise UserError(f"{path} is not readable JSON ({first_line(error)}); {remedy}") from None
    if not isinstance(data, dict):
        raise UserError(f"{path} does not hold a JSON object; {remedy}")
    return data


def save_torch(path: Path, obj: Any) -> None:
    import torch  # imported here: stage 1 never needs torch, and importing it costs ~3 s

    write_atomic(path, lambda tmp: torch.save(obj, tmp))


def load_torch(path: Path, remedy: str = "re-run the stage that wrote it", map_location: Any = "cpu") -> Any:
    """Load a checkpoint safely: only tensors and plain containers, never pickled code. A truncated
    or foreign file is a UserError ending in `remedy`."""
    import pickle

    import torch

    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as error:
        raise UserError(f"{path} is not a readable checkpoint ({first_line(error)}); {remedy}") from None
