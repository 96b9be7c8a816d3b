"""Push and pull time of format 3 against format 2 and `cp`, on checkpoints of a fine-tuning run.

Writes three bf16 safetensors checkpoints (16 MiB tensors; every weight moved by an Adam-like
step between checkpoints, as in delta_codec_bench.py), then, per run and per configuration, pushes
them in order into a fresh local repository and times each push after the first, a cold pull of
the newest and a pull of the newest into the previous checkpoint's directory. Configurations:
format 2; format 3 as push stores it by default (whole); format 3 with `--delta` (the version
before re-encoded at each push); the same with `--reference` (the previous checkpoint read from
its directory). Prints medians of the ratios to format 2's time in the same run, and to `cp -r`.

    uv run python benchmarks/format3_speed.py --size 192MiB --runs 3
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import struct
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from delta_codec_bench import to_dtype

from aim_cli import push as pushmod
from aim_cli.backends.local import LocalBackend
from aim_cli.pull.pipeline import pull
from aim_cli.repository import Repository
from aim_cli.util.sizes import parse_size

MiB = 1 << 20
TENSOR = 16 * MiB
CONFIGS = {  # label: (format, push options)
    "format 2": (2, {}),
    "format 3": (3, {}),
    "format 3 --delta": (3, {"delta": True}),
    "format 3 --delta --reference": (3, {"delta": True, "reference": True}),
}


def write_checkpoint(path: Path, tensors: list[bytes]) -> None:
    header: dict = {}
    offset = 0
    for i, data in enumerate(tensors):
        header[f"layer.{i}.weight"] = {
            "dtype": "BF16",
            "shape": [len(data) // 2],
            "data_offsets": [offset, offset + len(data)],
        }
        offset += len(data)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.mkdir(parents=True)
    with open(path / "model.safetensors", "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text)
        for data in tensors:
            f.write(data)


def checkpoints(root: Path, size: int, step: float = 0.05) -> list[Path]:
    rng = np.random.default_rng(0)
    weights = [rng.normal(0, 0.02, TENSOR // 2).astype(np.float32) for _ in range(max(1, size // TENSOR))]
    out = []
    for i in range(3):
        write_checkpoint(root / f"ckpt{i}", [to_dtype(w, "bf16") for w in weights])
        out.append(root / f"ckpt{i}")
        weights = [w + (step * 0.02 * rng.normal(0, 1, len(w))).astype(np.float32) for w in weights]
    return out


def timed(fn) -> float:
    started = time.monotonic()
    fn()
    os.sync()
    return time.monotonic() - started


def run_config(work: Path, ckpts: list[Path], fmt: int, options: dict) -> dict[str, float]:
    repo = Repository(LocalBackend(work / "repo"), "bench")
    repo.init(version=fmt)
    pushes = []
    for i, ckpt in enumerate(ckpts):
        kw = {"delta": options.get("delta", False)}
        if options.get("reference") and i:
            kw["references"] = [ckpts[i - 1]]
        seconds = timed(lambda ckpt=ckpt, i=i, kw=kw: pushmod.push(repo, "m", f"c{i}", ckpt, **kw))
        if i:
            pushes.append(seconds)
    newest = f"c{len(ckpts) - 1}"
    cold = timed(lambda: pull(repo, "m", work / "cold", tag=newest))
    shutil.copytree(ckpts[-2], work / "over")
    over = timed(lambda: pull(repo, "m", work / "over", tag=newest))
    stored = sum(p.stat().st_size for p in (work / "repo" / "blobs").rglob("*") if p.is_file())
    return {"push": statistics.mean(pushes), "cold pull": cold, "pull over previous": over, "stored": stored}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="192MiB", help="bytes per checkpoint (default 192MiB)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--workdir", type=Path, help="work directory (default: a temporary one under the current)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="aim-f3speed-", dir=args.workdir or Path.cwd()))
    try:
        ckpts = checkpoints(work / "data", parse_size(args.size, option="--size"))
        raw = sum(p.stat().st_size for p in ckpts[0].iterdir())
        ratios: dict[str, dict[str, list[float]]] = {c: {} for c in CONFIGS}
        stored: dict[str, int] = {}
        for run in range(args.runs):
            cp = timed(lambda run=run: shutil.copytree(ckpts[0], work / f"cp{run}"))
            shutil.rmtree(work / f"cp{run}")
            base: dict[str, float] = {}
            for label, (fmt, options) in CONFIGS.items():
                d = work / f"run{run}-{label.replace(' ', '_')}"
                figures = run_config(d, ckpts, fmt, options)
                shutil.rmtree(d)
                stored[label] = int(figures.pop("stored"))
                base = base or figures
                for key, seconds in figures.items():
                    ratios[label].setdefault(f"{key} / format 2", []).append(seconds / base[key])
                    ratios[label].setdefault(f"{key} / cp", []).append(seconds / cp)
        keys = list(next(iter(ratios.values())))
        print(f"{len(ckpts)} checkpoints of {raw / MiB:.0f} MiB (bf16), medians of {args.runs} runs\n")
        print("| configuration | " + " | ".join(keys) + " | stored / raw per checkpoint |")
        print("|---|" + "---|" * (len(keys) + 1))
        for label in CONFIGS:
            cells = [f"{statistics.median(ratios[label][k]):.2f}x" for k in keys]
            print(f"| {label} | " + " | ".join(cells) + f" | {stored[label] / raw / len(ckpts):.3f} |")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
