"""--download against an HTTP server on 127.0.0.1 (byol/download.py)."""

from __future__ import annotations

import functools
import http.server
import io
import stat
import threading
import zipfile
from pathlib import Path

import pandas as pd
import pytest
from conftest import run_script, run_split
from PIL import Image


def jpeg_bytes(colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (40, 40), colour).save(buffer, "JPEG")
    return buffer.getvalue()


def petimages_zip(path: Path, extra: dict[str, bytes] | None = None, link: str | None = None) -> Path:
    """A small zip laid out like Microsoft's archive, with its Thumbs.db and zero-byte JPEG."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("readme[1].txt", "licence CDLA-Permissive-2.0")
        for class_name, colour in (("Cat", (200, 90, 20)), ("Dog", (20, 90, 200))):
            for i in range(8):
                archive.writestr(f"PetImages/{class_name}/{i}.jpg", jpeg_bytes(colour))
            archive.writestr(f"PetImages/{class_name}/Thumbs.db", b"\xd0\xcf\x11\xe0" + b"\0" * 64)
        archive.writestr("PetImages/Dog/zero.jpg", b"")
        for name, content in (extra or {}).items():
            archive.writestr(name, content)
        if link:
            info = zipfile.ZipInfo(link)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, "/etc/passwd")
    return path


@pytest.fixture
def http_folder(tmp_path):
    """Serve tmp_path/served on 127.0.0.1; yields (folder, base url)."""
    served = tmp_path / "served"
    served.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_download_extracts_and_splits(http_folder, tmp_path):
    served, url = http_folder
    petimages_zip(served / "kagglecatsanddogs_5340.zip")
    data_dir, out = tmp_path / "data", tmp_path / "out"
    download = ["--download", "--url", f"{url}/kagglecatsanddogs_5340.zip"]
    result = run_split(data_dir, out, 4, 4, *download)
    assert result.returncode == 0, result.stderr
    assert (data_dir / "kagglecatsanddogs_5340.zip").is_file()
    assert not list(data_dir.glob("*.part")) and not list(data_dir.glob(".extract-*"))
    splits = pd.read_csv(out / "splits.csv")
    rejected = pd.read_csv(out / "rejected.csv")
    assert len(splits) == 16 and set(splits["class_name"]) == {"Cat", "Dog"}
    assert set(rejected["path"]) == {"Cat/Thumbs.db", "Dog/Thumbs.db", "Dog/zero.jpg"}
    assert (data_dir / "PetImages" / splits["path"][0]).is_file()

    # A second run reuses the archive and the extracted folder: no server needed.
    served.joinpath("kagglecatsanddogs_5340.zip").unlink()
    again = run_split(data_dir, out, 4, 4, *download, "--overwrite")
    assert again.returncode == 0, again.stderr
    pd.testing.assert_frame_equal(pd.read_csv(out / "splits.csv"), splits)


@pytest.mark.parametrize(
    "zip_kwargs, message",
    [
        ({"extra": {"PetImages/Cat/../../../escaped.txt": b"owned"}}, "outside the target folder"),
        ({"extra": {"/tmp/absolute.txt": b"owned"}}, "outside the target folder"),
        ({"link": "PetImages/Cat/link.jpg"}, "is a link"),
    ],
)
def test_unsafe_archive_is_refused_and_nothing_is_extracted(http_folder, tmp_path, zip_kwargs, message):
    served, url = http_folder
    petimages_zip(served / "evil.zip", **zip_kwargs)
    data_dir = tmp_path / "data"
    result = run_script(
        "data_split.py",
        "--download",
        "--url",
        f"{url}/evil.zip",
        "--data-dir",
        data_dir,
        "--out-dir",
        tmp_path / "out",
    )
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    assert sorted(p.name for p in data_dir.iterdir()) == ["evil.zip"]
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path / "out").exists()


def test_unreachable_url_is_a_clear_error_and_leaves_no_partial_file(http_folder, tmp_path):
    _, url = http_folder
    data_dir = tmp_path / "data"
    result = run_script("data_split.py", "--download", "--url", f"{url}/missing.zip", "--data-dir", data_dir)
    assert result.returncode == 2
    assert "could not download" in result.stderr and "Traceback" not in result.stderr
    assert not data_dir.exists() or not any(data_dir.iterdir())
