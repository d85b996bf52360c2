"""Atomic writes (byol/files.py): a failed write leaves the old file and no temporary behind."""

import os

import pytest

from byol.files import write_atomic, write_text


def test_failed_write_keeps_the_previous_file(tmp_path):
    target = tmp_path / "metrics.csv"
    write_text(target, "old\n")

    def half_write(tmp):
        tmp.write_text("half")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        write_atomic(target, half_write)
    assert target.read_text() == "old\n"
    assert list(tmp_path.iterdir()) == [target]


def test_atomic_writes_get_the_usual_file_mode(tmp_path):
    umask = os.umask(0o022)
    try:
        write_text(tmp_path / "out.txt", "x")
    finally:
        os.umask(umask)
    assert (tmp_path / "out.txt").stat().st_mode & 0o777 == 0o644
