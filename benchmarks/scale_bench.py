"""The scale benchmarks of "Scale: many versions of big models, many small files, flat memory":
one markdown table, each figure with its wall time and peak RSS (GNU time), in one run.

    uv run python benchmarks/scale_bench.py                          # every figure
    uv run python benchmarks/scale_bench.py --versions 100 --skip-small-files
    uv run python benchmarks/scale_bench.py --skip-versions --files 5000

Many versions. Pushing 100 versions of a 70B model is out of reach here, so the repository is
made synthetically, as a push would leave it: each version's manifest has the shape of a 70B
model's (30 files, 112k chunks, ~8 MB of JSON) and names real blobs. To keep the blob count
bounded, chunks are 64 bytes of seeded data each (the manifests say so: sizes are small, shapes
are real), and each version shares 99% of its chunks with the one before, as near-identical
checkpoints do. Manifests are written through the library (``Repository.commit``, the call push
makes, which writes each version's summary too), so they are valid, digest-addressed versions
that every command reads as it would read pushed ones. `model versions` is measured three times:
as push leaves the repository (with summaries); then, with every summary removed (a repository
written by an older aim_cli), the first listing, which rebuilds them from the manifests; and the
listing after it. The number of manifests the newest-tag resolution reads is counted in-process
through a backend wrapper.

Many small files. A directory of N files of 4 KiB (and one of 100,000 files of 1 KiB) pushed and
pulled with aim_cli, against ``restic backup`` / ``restic restore`` of the same directory when
restic is installed (``apt-get install restic``), and ``cp -r && sync`` always. Median of
``--runs`` (the 100,000 files once), every run into new directories (see ``fresh``): deleting
thousands of files makes the next thousands of creates slow for minutes on ext4.
"""

from __future__ import annotations

import argparse
import os
import random
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import blake3

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import AIM, PageCache, Result, rmtree, run

from aim_cli.backends.local import LocalBackend
from aim_cli.format import manifest as mf
from aim_cli.repository import Repository

FILES_PER_VERSION = 30
CHUNKS_PER_VERSION = 112_000
CHUNK_BYTES = 64
SHARED = 0.99  # share of a version's chunks that the previous version also has


def chunk(seed: int) -> tuple[str, bytes]:
    data = random.Random(seed).randbytes(CHUNK_BYTES)
    return blake3.blake3(data).hexdigest(), data


def make_versions(repo_dir: Path, versions: int) -> None:
    """``versions`` synthetic versions of model ``big`` (see the module docstring)."""
    backend = LocalBackend(repo_dir)
    repo = Repository(backend, "scale")
    repo.init()
    per_file = CHUNKS_PER_VERSION // FILES_PER_VERSION
    seeds = list(range(CHUNKS_PER_VERSION))
    next_seed = CHUNKS_PER_VERSION
    current = {s: chunk(s) for s in seeds}  # the chunks of the version being made, made once
    written: set[int] = set()
    for v in range(versions):
        if v:
            rng = random.Random(v)
            for i in rng.sample(range(len(seeds)), int(len(seeds) * (1 - SHARED))):
                del current[seeds[i]]
                seeds[i], next_seed = next_seed, next_seed + 1
                current[seeds[i]] = chunk(seeds[i])
        files = []
        for f in range(FILES_PER_VERSION):
            chunks = []
            whole = blake3.blake3()
            for s in seeds[f * per_file : (f + 1) * per_file]:
                digest, data = current[s]
                if s not in written:
                    repo.put_blob(digest, data)
                    written.add(s)
                whole.update(data)
                chunks.append((digest, CHUNK_BYTES))
            files.append(
                mf.FileEntry(
                    f"model-{f:05d}-of-{FILES_PER_VERSION:05d}.safetensors",
                    per_file * CHUNK_BYTES,
                    0o644,
                    whole.hexdigest(),
                    chunks,
                )
            )
        repo.commit(
            mf.Manifest(
                format=mf.FORMAT,
                model="big",
                tag=f"step-{v:05d}",
                created_at=f"2026-01-01T00:00:00.{v:06d}Z",
                created_by="bench@scale",
                message=f"synthetic checkpoint {v}",
                total_size=sum(f.size for f in files),
                files=files,
            )
        )
    backend.sync()


class _ManifestReads:
    """A backend wrapper that counts the gets of manifest keys."""

    def __init__(self, inner):
        self.inner, self.location, self.count = inner, inner.location, 0

    def get(self, key, max_size=None):
        self.count += "/versions/" in key
        return self.inner.get(key, max_size)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def manifests_read_by_newest_pull(repo_dir: Path) -> int:
    """How many manifests a pull without --tag reads to choose and load its version."""
    backend = _ManifestReads(LocalBackend(repo_dir))
    Repository(backend, "scale").resolve_version("big", None, None)
    return backend.count


def make_small_files(root: Path, count: int, size: int) -> None:
    rng = random.Random(count)
    for i in range(count):
        d = root / f"d{i // 1000:03d}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i:06d}.bin").write_bytes(rng.randbytes(size))


class Bench:
    def __init__(self, work: Path):
        self.work = work
        self.config = work / "model_repos.yaml"
        self.cache = PageCache()
        self.serial = 0  # for fresh()

    def repo(self, name: str) -> Path:
        path = self.work / name
        with open(self.config, "a") as f:
            f.write(f"  {name}: {{type: local, path: {name}}}\n")
        return path

    def aim(self, *args: str) -> list[str]:
        return [str(AIM), "--config", str(self.config), *args]

    def timed(self, *args: str, env: dict | None = None) -> Result:
        self.cache.settle()
        return run(self.aim(*args), env=env, rss=True)


def row(figure: str, r: Result, target: str, baseline: Result | None = None) -> str:
    ratio = f"{r.seconds / baseline.seconds:.2f}x" if baseline else ""
    base = f"{baseline.seconds:.2f} s" if baseline else ""
    return f"| {figure} | {r.seconds:.2f} s | {r.maxrss / 1e6:.0f} MB | {base} | {ratio} | {target} |"


def fig_versions(b: Bench, versions: int, audits: bool = True) -> list[str]:
    name = f"v{versions}"
    repo_dir = b.repo(name)
    make_versions(repo_dir, versions)
    manifests = sorted((repo_dir / "models/big/versions").iterdir())
    size = sum(p.stat().st_size for p in manifests) / len(manifests)
    rows = [f"| ({versions} versions, manifests of {size / 1e6:.1f} MB each) | | | | | |"]
    target = "<= 1 s, <= 150 MB" if versions <= 100 else "<= 2 s, <= 150 MB"
    rows.append(row(f"`model versions`, {versions} versions", b.timed("model", "versions", name, "big"), target))
    shutil.rmtree(repo_dir / "models/big/summaries")  # as an older aim_cli left it
    rows.append(
        row(
            "`model versions`, first listing without summaries (rebuilds them)",
            b.timed("model", "versions", name, "big"),
            "",
        )
    )
    rows.append(row("`model versions`, the listing after it", b.timed("model", "versions", name, "big"), target))
    rows.append(row("`model info` without --tag", b.timed("model", "info", name, "big", "--json"), ""))
    if audits:
        rows.append(row("`repo gc --dry-run`", b.timed("repo", "gc", name, "--dry-run"), "<= 5 s, <= 300 MB"))
        rows.append(row("`repo check`", b.timed("repo", "check", name, "--quiet"), "<= 5 s, <= 300 MB"))
    dest = b.work / "pulled"
    read = manifests_read_by_newest_pull(repo_dir)
    rows.append(
        row(
            f"`model pull` without --tag (reads {read} manifest{'s' if read != 1 else ''})",
            b.timed("model", "pull", name, "big", str(dest), "--quiet"),
            "reads <= 2 manifests",
        )
    )
    rmtree(dest)
    return rows


def restic(restic_repo: Path, *args: str) -> list[str]:
    cache = restic_repo.with_name(f"{restic_repo.name}-cache")
    return ["restic", "--repo", str(restic_repo), "--cache-dir", str(cache), "--quiet", *args]


def restic_env() -> dict:
    """A password through the environment: ``--insecure-no-password`` exists only from restic
    0.17, and restic encrypts either way."""
    return {**os.environ, "RESTIC_PASSWORD": "bench"}


def restic_backup_flags() -> list[str]:
    """``--no-scan`` (restic >= 0.15) skips the pass that only sizes the progress bar."""
    help_text = subprocess.run(["restic", "backup", "--help"], capture_output=True, text=True).stdout
    return ["--no-scan"] if "--no-scan" in help_text else []


def fresh(b: Bench, stem: str) -> Path:
    """A path under the work directory that no earlier step used. Small-files figures never
    delete before a timed step: ext4 skips the inodes freed in the last minutes when it creates
    files (``recently_deleted`` in its inode allocator), so creating 5,000 files right after
    deleting 5,000 costs seconds of system time, whichever tool creates them (measured here:
    a pull of 5,000 files of 4 KiB took 3.4-4.4 s after ``rm -rf`` of the previous copy, 0.6 s
    into a new directory). Everything is removed with the work directory at the end."""
    b.serial += 1
    return b.work / f"{stem}-{b.serial}"


def cp_fresh(b: Bench, src: Path) -> Result:
    b.cache.settle()
    dst = fresh(b, "cp")
    return run(["bash", "-c", f"cp -r {shlex.quote(str(src))} {shlex.quote(str(dst))} && sync"], rss=True)


def median_of(results: list[Result]) -> Result:
    """The run of median time, with the highest peak RSS of all runs."""
    chosen = sorted(results, key=lambda r: r.seconds)[len(results) // 2]
    return Result(chosen.seconds, chosen.stdout, max(r.maxrss for r in results), chosen.cpu)


def check_identical(src: Path, dest: Path) -> None:
    """The pulled tree is the pushed one: the same files, bytes and permission bits."""

    def listing(root: Path) -> dict[str, tuple[str, int]]:
        return {
            p.relative_to(root).as_posix(): (blake3.blake3(p.read_bytes()).hexdigest(), p.stat().st_mode & 0o777)
            for p in root.rglob("*")
            if p.is_file()
        }

    if listing(src) != listing(dest):
        raise RuntimeError(f"{dest} differs from {src}")


def fig_small_files(b: Bench, count: int, size: int, with_restic: bool, runs: int) -> list[str]:
    """Median of ``runs``: each push into a new repository, each pull (restore) into a new
    directory, each restic backup into a new restic repository (a second backup into the same
    one would skip the unchanged files by their mtime)."""
    src = b.work / f"small-{count}"
    make_small_files(src, count, size)
    rows = [f"| ({count} files of {size} B, median of {runs}) | | | | | |"]
    cps, pushes, pulls, backups, restores = [], [], [], [], []
    for _ in range(runs):
        cps.append(cp_fresh(b, src))
        name = fresh(b, f"small{count}").name
        b.repo(name)
        pushes.append(b.timed("model", "push", name, "m", str(src), "--tag", "v1", "--quiet"))
        dest = fresh(b, "pulled")
        pulls.append(b.timed("model", "pull", name, "m", str(dest), "--tag", "v1", "--quiet"))
        if len(pulls) == 1:
            check_identical(src, dest)
        if with_restic:
            env = restic_env()
            restic_repo = fresh(b, "restic-repo")
            run(restic(restic_repo, "init"), env=env)
            b.cache.settle()
            backups.append(run(restic(restic_repo, "backup", *restic_backup_flags(), str(src)), env=env, rss=True))
            b.cache.settle()
            restores.append(
                run(restic(restic_repo, "restore", "latest", "--target", str(fresh(b, "restored"))), env=env, rss=True)
            )
    push, pull, cp = median_of(pushes), median_of(pulls), median_of(cps)
    if with_restic:
        rows.append(row("push vs restic backup", push, "<= 1.0x", median_of(backups)))
        rows.append(row("pull vs restic restore", pull, "<= 1.0x", median_of(restores)))
    else:
        target = "completes, RSS <= 300 MB" if count >= 100_000 else "(restic not run)"
        rows.append(row("push", push, target))
        rows.append(row("pull", pull, target))
    rows.append(row("push vs cp -r && sync", push, "", cp))
    rows.append(row("pull vs cp -r && sync", pull, "", cp))
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--versions", type=int, nargs="*", default=[100, 1000])
    p.add_argument("--files", type=int, default=5000)
    p.add_argument("--many-files", type=int, default=100_000, help="files of 1 KiB (0: skip)")
    p.add_argument("--skip-versions", action="store_true")
    p.add_argument("--skip-small-files", action="store_true")
    p.add_argument(
        "--skip-audits",
        action="store_true",
        help="no gc/check figures (until audits stream, they need ~30 GB at 1,000 versions)",
    )
    p.add_argument("--runs", type=int, default=3, help="small files: median of this many runs (default 3)")
    p.add_argument("--workdir", help="where to work (default: a temporary directory here)")
    args = p.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="aim-scale-", dir=args.workdir or "."))
    try:
        bench = Bench(work)
        bench.config.write_text("repos:\n")
        rows = ["| figure | aim_cli | peak RSS | baseline | ratio | target |", "|---|---|---|---|---|---|"]
        if not args.skip_versions:
            for n in args.versions:
                rows += fig_versions(bench, n, audits=not args.skip_audits)
        if not args.skip_small_files:
            with_restic = shutil.which("restic") is not None
            rows += fig_small_files(bench, args.files, 4096, with_restic, args.runs)
            if args.many_files:
                rows += fig_small_files(bench, args.many_files, 1024, False, 1)
        print("\n".join(rows))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
