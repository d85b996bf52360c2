"""Stage 3 (the study's classifier grid) on another machine, from a folder small enough to carry there.

The classifiers read only the labelled and test images and byol.pt; a long run's folder holds 22,000
more images, a 1.2 GB cache and checkpoints. `pack` copies what stage 3 needs into CARRY_DIR (about
55 MiB for the PetImages study: 2,750 JPEGs, the split, byol.pt losslessly compressed), `run` rebuilds
a stage-3 folder from it on the other machine and trains there; the CSVs it writes go back beside the
long run's, where `make long-run` finds the study done and draws the report.

    python experiments/carry_study.py pack RUN_DIR CARRY_DIR
    python experiments/carry_study.py run CARRY_DIR WORK_DIR OUT_DIR [train_classifier.py flags ...]

`run` stands an 8 x 8 grey placeholder in for each unlabelled and validation image (stage 3 never reads
those rows with --labelled-sets split and --bn-images 0, which `run` therefore requires: with per-seed
sets, seeds 1 and up draw their labelled images from the unlabelled ones, and the BatchNorm
recalibration of frozen random backbones reads unlabelled and validation images; the image cache is
built for the whole split, whose checksum must not change), resumes from
CARRY_DIR/run/classifier_metrics.csv when an earlier call left one there, and copies the classifier
CSVs to OUT_DIR as soon as the grid ends or stops (on a time limit, say: `timeout 500 python ...`).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import signal
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RUN_FILES = ["splits.csv", "split_config.json", "byol_config.json"]
PACKED_WEIGHTS = "byol.pt.shz"  # byte-shuffled (the four bytes of each float32 grouped), then zlib
STUDY_OUTPUTS = ["classifier_metrics.csv", "classifier_summary.csv", "classifier_config.json"]
LIMIT_MIB = 60  # what may travel with the repository (64 MiB in all on the lent GPU machines)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def shuffle_pack(data: bytes) -> bytes:
    whole = len(data) // 4 * 4
    grouped = np.frombuffer(data[:whole], dtype=np.uint8).reshape(-1, 4).T.tobytes()
    return zlib.compress(grouped + data[whole:], 6)


def shuffle_unpack(packed: bytes, size: int) -> bytes:
    data = zlib.decompress(packed)
    whole = size // 4 * 4
    grouped = np.frombuffer(data[:whole], dtype=np.uint8).reshape(4, -1).T.tobytes()
    return grouped + data[whole:]


def split_rows(splits_csv: Path) -> list[dict]:
    import csv

    with splits_csv.open(newline="") as file:
        return list(csv.DictReader(file))


def pack(run_dir: Path, carry: Path) -> None:
    config = json.loads((run_dir / "split_config.json").read_text())
    data_dir = Path(config["data_dir"])
    rows = [row for row in split_rows(run_dir / "splits.csv") if row["split"] in ("labelled", "test")]
    for row in rows:
        target = carry / "data" / row["path"]
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(data_dir / row["path"], target)
    (carry / "run").mkdir(parents=True, exist_ok=True)
    for name in RUN_FILES:
        shutil.copyfile(run_dir / name, carry / "run" / name)
    weights = run_dir / "byol.pt"
    (carry / "run" / PACKED_WEIGHTS).write_bytes(shuffle_pack(weights.read_bytes()))
    manifest = {"byol_sha256": sha256(weights), "byol_bytes": weights.stat().st_size, "images": len(rows)}
    (carry / "manifest.json").write_text(json.dumps(manifest, indent=1))
    mib = sum(path.stat().st_size for path in carry.rglob("*") if path.is_file()) / 2**20
    print(f"packed {len(rows)} labelled and test images and byol.pt into {carry}: {mib:.1f} MiB")
    if mib > LIMIT_MIB:
        sys.exit(f"error: {carry} holds {mib:.1f} MiB, over the {LIMIT_MIB} MiB that may travel")


def placeholder_jpeg() -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (128, 128, 128)).save(buffer, format="JPEG")
    return buffer.getvalue()


def run(carry: Path, work: Path, out: Path, classifier_args: list[str]) -> int:
    flags = " ".join(classifier_args).replace("=", " ")
    if flags.count("--labelled-sets split") != 1:
        sys.exit(
            "error: pass --labelled-sets split: the carried folder holds only the split's labelled images"
        )
    if flags.count("--bn-images 0") != 1:
        sys.exit(
            "error: pass --bn-images 0: recalibrating a frozen random backbone's BatchNorm reads unlabelled "
            "and validation images, which stay behind (placeholders here)"
        )
    manifest = json.loads((carry / "manifest.json").read_text())
    work.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    for name in ["splits.csv", "byol_config.json"]:
        shutil.copyfile(carry / "run" / name, work / name)
    config = json.loads((carry / "run" / "split_config.json").read_text())
    config["data_dir"] = str((carry / "data").resolve())
    (work / "split_config.json").write_text(json.dumps(config, indent=2))
    weights = shuffle_unpack((carry / "run" / PACKED_WEIGHTS).read_bytes(), manifest["byol_bytes"])
    if hashlib.sha256(weights).hexdigest() != manifest["byol_sha256"]:
        sys.exit("error: byol.pt did not unpack to the packed file's sha256; pack it again")
    (work / "byol.pt").write_bytes(weights)
    stand_in, missing = placeholder_jpeg(), []
    for row in split_rows(work / "splits.csv"):
        path = carry / "data" / row["path"]
        if row["split"] in ("unlabelled", "validation") and not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(stand_in)
        elif not path.is_file():
            missing.append(row["path"])
    if missing:
        sys.exit(
            f"error: {len(missing)} labelled or test image(s) missing under {carry / 'data'}: {missing[0]}"
        )
    resume = []
    if (carry / "run" / "classifier_metrics.csv").is_file():
        shutil.copyfile(carry / "run" / "classifier_metrics.csv", work / "classifier_metrics.csv")
        resume = ["--resume"]
    command = [
        sys.executable,
        str(ROOT / "train_classifier.py"),
        "--out-dir",
        str(work),
        *classifier_args,
        *resume,
    ]
    print(" ".join(command), flush=True)
    process = subprocess.Popen(command, cwd=ROOT)
    # A time limit's SIGTERM reaches this process: pass it on, wait for the stage to stop, keep its CSVs.
    signal.signal(signal.SIGTERM, lambda *_: process.terminate())
    returncode = process.wait()
    for name in STUDY_OUTPUTS:
        if (work / name).is_file():
            shutil.copyfile(work / name, out / name)
    print(
        f"train_classifier.py exited {returncode}; copied {[n for n in STUDY_OUTPUTS if (out / n).is_file()]}"
    )
    return returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    packing = commands.add_parser("pack")
    packing.add_argument("run_dir", type=Path)
    packing.add_argument("carry", type=Path)
    running = commands.add_parser("run")
    running.add_argument("carry", type=Path)
    running.add_argument("work", type=Path)
    running.add_argument("out", type=Path)
    args, rest = parser.parse_known_args()
    if args.command == "pack":
        pack(args.run_dir, args.carry)
    else:
        sys.exit(run(args.carry, args.work, args.out, rest))


if __name__ == "__main__":
    main()
