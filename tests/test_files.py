"""byol/files.py: a failed write leaves the old file and no temporary behind; a damaged file read back
is a UserError naming it."""

import os

import pytest

from byol.errors import UserError
from byol.files import read_csv, read_json, write_atomic, write_text


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


@pytest.mark.parametrize(
    "content, message",
    [
        (b"epoch,loss\n1,0.5\n", r"lacks the column\(s\) knn_acc; run it again"),
        (b"\xff\xfe\x00 not text", r"is not a readable CSV \('utf-8' codec"),
        (b"", r"is not a readable CSV \(No columns to parse"),
        (b'a,b\n1,2,3,4\n"unclosed', "is not a readable CSV"),
    ],
)
def test_a_damaged_or_foreign_csv_is_a_user_error_naming_it(tmp_path, content, message):
    path = tmp_path / "byol_metrics.csv"
    path.write_bytes(content)
    with pytest.raises(UserError, match=rf"^{path}.*{message}"):
        read_csv(path, ["epoch", "knn_acc"], "run it again")


def test_read_csv_returns_the_frame_when_the_columns_are_there(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("epoch,knn_acc,extra\n0,0.5,1\n")
    assert read_csv(path, ["epoch", "knn_acc"], "").to_dict("records") == [
        {"epoch": 0, "knn_acc": 0.5, "extra": 1}
    ]


@pytest.mark.parametrize("content", ["{bad", "[1, 2]", "\udcff"])
def test_a_damaged_json_file_is_a_user_error_naming_it(tmp_path, content):
    path = tmp_path / "config.json"
    path.write_text(content, errors="surrogateescape")
    with pytest.raises(UserError, match=rf"^{path} .*; start over"):
        read_json(path, "start over")
    path.write_text('{"a": 1}')
    assert read_json(path, "") == {"a": 1}
