"""Fetch the public Microsoft Cats-and-Dogs archive and extract it safely.

The download goes to a `.part` file renamed only when complete, and the archive is checked entry by
entry before anything is written: a path that escapes the target folder or a link is refused.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath
from urllib.parse import urlparse

from tqdm import tqdm

from byol.errors import UserError

PETIMAGES_URL = (
    "https://download.microsoft.com/download/3/E/1/3E1C3F21-ECDB-4869-8368-6DEBA77B919F/"
    "kagglecatsanddogs_5340.zip"
)


def download(url: str, target: Path, timeout_s: float = 60.0) -> Path:
    """Download `url` to `target` (skipped when it is already there), with a progress bar."""
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response, open(part, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=f"download {target.name}") as bar:
                while chunk := response.read(1 << 20):
                    out.write(chunk)
                    bar.update(len(chunk))
    except (urllib.error.URLError, OSError, ValueError) as error:
        part.unlink(missing_ok=True)
        raise UserError(f"could not download {url}: {error}; check the address or pass --url") from None
    os.replace(part, target)
    return target


def archive_name(url: str) -> str:
    return PurePosixPath(urlparse(url).path).name or "archive.zip"


def check_members(archive: zipfile.ZipFile, source: Path) -> list[zipfile.ZipInfo]:
    """Refuse the whole archive if any entry is a link or would land outside the target folder."""
    members = archive.infolist()
    for member in members:
        name = member.filename
        parts = PurePosixPath(name.replace("\\", "/")).parts
        if name.startswith(("/", "\\")) or ".." in parts or (parts and ":" in parts[0]):
            raise UserError(
                f"{source}: entry '{name}' would be written outside the target folder; "
                "refusing to extract this archive"
            )
        if stat.S_ISLNK(member.external_attr >> 16):
            raise UserError(f"{source}: entry '{name}' is a link; refusing to extract this archive")
    return members


def extract(archive_path: Path, target_dir: Path) -> list[str]:
    """Extract a zip into `target_dir` and return its top-level names.

    Extraction goes to a temporary folder that is moved into place entry by entry, so an
    interrupted extraction never leaves a half-filled class folder behind.
    """
    try:
        archive = zipfile.ZipFile(archive_path)
    except zipfile.BadZipFile:
        raise UserError(f"{archive_path} is not a valid zip archive; delete it and download again") from None
    with archive:
        members = check_members(archive, archive_path)
        top_level = sorted({PurePosixPath(m.filename.replace("\\", "/")).parts[0] for m in members})
        if all((target_dir / name).exists() for name in top_level):
            return top_level  # extracted by an earlier run
        target_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".extract-", dir=target_dir))
        try:
            for member in tqdm(members, desc=f"extract {archive_path.name}", unit="file"):
                archive.extract(member, staging)
            for name in top_level:
                if (target_dir / name).exists():
                    continue
                os.replace(staging / name, target_dir / name)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return top_level


def download_and_extract(url: str, target_dir: Path) -> Path:
    """Make sure the archive at `url` is downloaded and extracted in `target_dir`.

    Returns the image folder: the archive's single top-level folder (PetImages for the Microsoft
    archive), or `target_dir` when the archive has none.
    """
    archive_path = download(url, target_dir / archive_name(url))
    top_level = extract(archive_path, target_dir)
    folders = [name for name in top_level if (target_dir / name).is_dir()]
    return target_dir / folders[0] if len(folders) == 1 else target_dir
