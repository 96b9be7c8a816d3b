"""Format 3 against format 2 on real training checkpoints, through the product itself.

Pushes each phase's checkpoints (written by `training_bench.py --out DIR`) into a fresh local
repository of each format (format 3 as push stores it by default, whole, then `repo optimize`
runs), and prints, per phase: stored bytes per later checkpoint / raw, a pull of the
newest into the previous checkpoint's directory (fetched / raw), cold pulls of the newest and the
oldest against format 2's, and push time against format 2's; then the last fine-tuning checkpoint
pushed with `--base` of the last pretraining one (a fine-tune against its base model).

    uv run python benchmarks/training_bench.py --quick --out /tmp/ckpt
    uv run python benchmarks/format3_bench.py /tmp/ckpt
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from aim_cli import push as pushmod
from aim_cli.backends.local import LocalBackend
from aim_cli.optimize import optimize
from aim_cli.pull.pipeline import pull
from aim_cli.repository import Repository


def _stored(root: Path) -> int:
    return sum(p.stat().st_size for p in (root / "blobs").rglob("*") if p.is_file())


def _size(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())


def measure(ckpts: list[Path], work: Path, fmt: int) -> dict[str, float]:
    root = work / f"repo-f{fmt}"
    repo = Repository(LocalBackend(root), "bench")
    repo.init(version=fmt)
    raw = _size(ckpts[0])
    started = time.monotonic()
    first = 0
    for i, ckpt in enumerate(ckpts):
        pushmod.push(repo, "m", f"c{i}", ckpt)
        first = first or _stored(root)
    push_seconds = time.monotonic() - started
    if fmt >= 3:
        optimize(repo)
    dest = work / f"dest-f{fmt}"
    shutil.copytree(ckpts[-2], dest)
    over_previous = pull(repo, "m", dest, tag=f"c{len(ckpts) - 1}")
    newest = pull(repo, "m", work / f"newest-f{fmt}", tag=f"c{len(ckpts) - 1}")
    oldest = pull(repo, "m", work / f"oldest-f{fmt}", tag="c0")
    return {
        "stored_per_later": (_stored(root) - first) / (len(ckpts) - 1) / raw,
        "newest_over_previous": over_previous.fetched_bytes / raw,
        "cold_newest": newest.fetched_bytes,
        "cold_oldest": oldest.fetched_bytes,
        "push_seconds": push_seconds,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoints", type=Path, help="training_bench.py --out DIR: holds pretrain/ and finetune/")
    args = ap.parse_args()
    print(
        "| phase | stored per later ckpt / raw, f2 -> f3 | newest into previous, fetched / raw, f2 -> f3 "
        "| cold newest f3/f2 | cold oldest f3/f2 | push time f3/f2 |"
    )
    print("|---|---|---|---|---|---|")
    for phase in ("pretrain", "finetune"):
        ckpts = sorted((args.checkpoints / phase).iterdir())
        with tempfile.TemporaryDirectory(prefix="aim-f3-") as tmp:
            f2, f3 = (measure(ckpts, Path(tmp), fmt) for fmt in (2, 3))
        print(
            f"| {phase} | {f2['stored_per_later']:.3f} -> {f3['stored_per_later']:.3f} "
            f"| {f2['newest_over_previous']:.3f} -> {f3['newest_over_previous']:.3f} "
            f"| {f3['cold_newest'] / f2['cold_newest']:.2f}x | {f3['cold_oldest'] / f2['cold_oldest']:.2f}x "
            f"| {f3['push_seconds'] / f2['push_seconds']:.2f}x |"
        )
    with tempfile.TemporaryDirectory(prefix="aim-f3-") as tmp:
        added = fine_tune_against_base(args.checkpoints, Path(tmp))
    print(
        f"\nfine-tuned model pushed with --base of its base model: added stored / raw {added:.3f} (f2: as a checkpoint)"
    )


def fine_tune_against_base(root: Path, work: Path) -> float:
    """The last fine-tuning checkpoint pushed as another model with ``--base`` the last
    pretraining checkpoint (its base model): added stored bytes / raw."""
    base, tuned = sorted((root / "pretrain").iterdir())[-1], sorted((root / "finetune").iterdir())[-1]
    repo = Repository(LocalBackend(work / "repo-base"), "bench")
    repo.init(version=3)
    pushmod.push(repo, "base", "v1", base)
    before = _stored(work / "repo-base")
    pushmod.push(repo, "tuned", "v1", tuned, base="base:v1", references=[base])
    return (_stored(work / "repo-base") - before) / _size(tuned)


if __name__ == "__main__":
    main()
