"""The transfer benchmarks of "Fast, resumable transfers": one markdown table, aim_cli against
`cp -r SRC DST && sync` of the same data, timed in the same run.

    uv run python benchmarks/run.py                       # 1 GiB, median of 3 runs
    uv run python benchmarks/run.py --size 256MiB --runs 1 --skip-rss
    uv run python benchmarks/run.py --size 256MiB --runs 3 --skip-rss --format 2   # one format
    uv run python benchmarks/run.py --s3                  # also through a moto S3 server

The real console script of this environment runs in subprocesses (``uv run aim_cli`` would add
uv's own start-up), with a model_repos.yaml written into the work directory. Every timed command
starts after a ``sync``, so no earlier writeback lands on it; the pull figures also drop the page
cache first when that is allowed (root, outside a read-only /proc), and the table says whether it
was. The work directory (default: a temporary directory under the current one, so on the same
filesystem as the repository would be) is removed at the end unless --keep.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

import blake3

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_checkpoints

AIM = Path(sys.executable).with_name("aim_cli")
MiB = 1 << 20


# -- running and timing ------------------------------------------------------------------------------
@dataclass
class Result:
    seconds: float
    stdout: str
    maxrss: int  # bytes (only when run with rss=True)
    cpu: float = 0.0  # user + system seconds of the command and its children

    def json(self) -> dict:
        return json.loads(self.stdout)


def run(cmd: list[str], env: dict | None = None, *, rss: bool = False) -> Result:
    """Run ``cmd``, timed from start to exit. With ``rss``, its peak RSS as GNU time reports it:
    the rusage of a child forked from this (large) Python process would start from our own high
    water mark, since Linux carries it across fork and exec."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, tempfile.NamedTemporaryFile("r") as rss_file:
        if rss:
            cmd = ["/usr/bin/time", "-f", "%M", "-o", rss_file.name, *cmd]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        proc = subprocess.run(cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env)
        seconds = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
        out.seek(0)
        err.seek(0)
        if proc.returncode != 0:
            raise RuntimeError(f"{shlex.join(cmd)} exited {proc.returncode}:\n{err.read().decode(errors='replace')}")
        maxrss = int(rss_file.read().split()[-1]) * 1024 if rss else 0
        return Result(seconds, out.read().decode(), maxrss, cpu)


class PageCache:
    """sync before every timed command; for cold figures also drop the page cache, if allowed."""

    def __init__(self):
        self.can_drop = self._drop()

    @staticmethod
    def _drop() -> bool:
        try:
            with open("/proc/sys/vm/drop_caches", "w") as f:
                f.write("3\n")
            return True
        except OSError:
            return False

    def settle(self, cold: bool = False) -> None:
        os.sync()
        if cold and self.can_drop:
            self._drop()

    @property
    def state(self) -> str:
        return "cold (page cache dropped)" if self.can_drop else "warm (cannot drop the page cache here)"


def cp_baseline(src: Path, dst: Path, cache: PageCache, cold: bool = False, rss: bool = False) -> Result:
    rmtree(dst)
    cache.settle(cold)
    result = run(["bash", "-c", f"cp -r {shlex.quote(str(src))} {shlex.quote(str(dst))} && sync"], rss=rss)
    rmtree(dst)
    return result


def rmtree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def median(values: list[float]) -> float:
    return statistics.median(values)


def tree_digests(root: Path) -> dict[str, str]:
    """The files under ``root`` by BLAKE3, outside aim_cli's own ``.aim`` (a pull's index)."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.relative_to(root).parts[0] != ".aim":
            h = blake3.blake3(max_threads=blake3.blake3.AUTO)
            with open(p, "rb") as f:
                while block := f.read(8 * MiB):
                    h.update(block)
            out[p.relative_to(root).as_posix()] = h.hexdigest()
    return out


def mib(n: float) -> str:
    return f"{n / MiB:.1f} MiB"


# -- the table --------------------------------------------------------------------------------------
@dataclass
class Row:
    figure: str
    aim: str
    baseline: str
    ratio: str
    target: str
    met: bool | None

    def cells(self) -> list[str]:
        met = "—" if self.met is None else ("yes" if self.met else "**NO**")
        return [self.figure, self.aim, self.baseline, self.ratio, self.target, met]


def time_row(figure: str, aim: list[Result], base: list[Result], limit: float | None) -> Row:
    """Median wall time of each side, with its median CPU time (user + system): the CPU time
    does not move with the machine's load, the wall time does."""
    a, b = median([r.seconds for r in aim]), median([r.seconds for r in base])
    ac, bc = median([r.cpu for r in aim]), median([r.cpu for r in base])
    return Row(
        figure,
        f"{a:.2f} s (CPU {ac:.2f} s)",
        f"{b:.2f} s (CPU {bc:.2f} s)",
        f"{a / b:.2f}x",
        f"<= {limit}x" if limit else "—",
        (a / b <= limit) if limit else None,
    )


def cpu_row(figure: str, aim: list[Result], base: list[Result], size: int, limit: float | None) -> Row:
    """Median CPU time (user + system of the aim_cli process and its children) per GiB of data;
    the baseline's the same way. Unlike wall time, it hardly moves with the machine's load. (The
    kernel's writeback of cp's pages runs in its own threads, counted for neither side, but the
    writeback aim_cli starts early, and syncs, is counted on aim_cli's side.)"""
    gib = size / (1 << 30)
    a, b = median([r.cpu for r in aim]) / gib, median([r.cpu for r in base]) / gib
    return Row(
        figure,
        f"{a:.2f} s/GiB",
        f"{b:.2f} s/GiB",
        f"{a / b:.2f}x",
        f"<= {limit} s/GiB" if limit else "—",
        (a <= limit) if limit else None,
    )


def print_table(rows: list[Row]) -> None:
    print_markdown(
        ["figure", "aim_cli", "baseline: cp -r && sync", "ratio", "target", "met"], [r.cells() for r in rows]
    )


def print_markdown(header: list[str], rows: list[list[str]]) -> None:
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for cells in rows:
        print("| " + " | ".join(cells) + " |")


def make(argv: list[str]) -> None:
    """make_checkpoints.py, its stdout (the path of changes.json) kept out of the table."""
    with contextlib.redirect_stdout(sys.stderr):
        make_checkpoints.main(argv)


# -- repositories -------------------------------------------------------------------------------------
class Bench:
    def __init__(self, work: Path, runs: int, cache: PageCache):
        self.work = work
        self.runs = runs
        self.cache = cache
        self.config = work / "model_repos.yaml"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("AIM_")}
        self.s3 = None  # (endpoint, boto3 client) once a moto server runs
        self.format: int | None = None  # --format: the storage format of new local repositories
        self.buckets: list[str] = []

    def aim(self, *args: str) -> list[str]:
        return [str(AIM), "--config", str(self.config), *args]

    def fresh_repo(self, kind: str) -> None:
        """An empty repository named ``bench``: a new directory, or a new bucket."""
        entry = self.new_location(kind)
        if self.format is not None and kind == "local":  # else the first push makes the default format
            self.config.write_text("repos: {}\n")
            path, fmt = entry["path"], str(self.format)
            created = subprocess.run(
                self.aim("repo", "create", "bench", "--type", "local", "--path", path, "--format", fmt),
                env=self.env,
                capture_output=True,
            )
            assert created.returncode == 0, created.stderr
            return
        self.config.write_text("repos:\n  bench: {" + ", ".join(f"{k}: {v}" for k, v in entry.items()) + "}\n")

    def new_location(self, kind: str) -> dict[str, str]:
        """A new empty place for the repository: a directory (the previous one removed) or a new
        bucket (the previous ones dropped); returns its config entry's fields."""
        if kind == "local":
            rmtree(self.work / "repo")
            return {"type": "local", "path": str(self.work / "repo")}
        endpoint, client = self.s3
        self.drop_buckets()
        bucket = f"bench-{uuid.uuid4().hex[:12]}"
        client.create_bucket(Bucket=bucket)
        self.buckets.append(bucket)
        return {"type": "s3", "path": f"s3://{bucket}/repo", "endpoint_url": endpoint, "region": "us-east-1"}

    def drop_buckets(self) -> None:
        if self.s3 is None:
            return
        client = self.s3[1]
        for bucket in self.buckets:
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
                keys = [{"Key": o["Key"]} for o in page.get("Contents", ())]
                if keys:
                    client.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
            client.delete_bucket(Bucket=bucket)
        self.buckets.clear()

    def push(self, version: Path, tag: str, rss: bool = False, jobs: int | None = None) -> Result:
        cmd = self.aim("model", "push", "bench", "m", str(version), "--tag", tag, "--json", "-q")
        return run(cmd + (["--jobs", str(jobs)] if jobs else []), self.env, rss=rss)

    def pull(self, tag: str, dest: Path, jobs: int | None = None) -> list[str]:
        cmd = self.aim("model", "pull", "bench", "m", str(dest), "--tag", tag, "--json", "-q")
        return cmd + (["--jobs", str(jobs)] if jobs else [])


def start_moto(bench: Bench) -> subprocess.Popen:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    aws = bench.work / "aws"
    aws.mkdir(exist_ok=True)
    bench.env.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_CONFIG_FILE=str(aws / "config"),
        AWS_SHARED_CREDENTIALS_FILE=str(aws / "credentials"),
        AWS_EC2_METADATA_DISABLED="true",
    )
    for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        bench.env.pop(var, None)
    log = open(bench.work / "moto.log", "wb")  # noqa: SIM115 (the server writes it for its whole lifetime)
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=log,
        stdin=subprocess.DEVNULL,
        env=bench.env,
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(endpoint + "/moto-api/", timeout=2).close()
            break
        except urllib.error.HTTPError:
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"moto server did not start; see {bench.work / 'moto.log'}") from None
            time.sleep(0.1)  # polling a starting server
    import boto3

    os.environ.update({k: v for k, v in bench.env.items() if k.startswith("AWS_")})
    bench.s3 = (endpoint, boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1"))
    return proc


def stop_moto(bench: Bench, proc: subprocess.Popen) -> None:
    """Drop the buckets of ``bench`` (moto holds them in memory), then stop the server."""
    bench.drop_buckets()
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# -- the figures -----------------------------------------------------------------------------------------
def fig_push(b: Bench, ck: dict, kind: str) -> list[Row]:
    """push v1 into an empty repository, then v2 (near-identical) on top; cp -r of each as baseline.
    Leaves the repository holding v1 and v2 for the pull figures."""
    v1, v2 = Path(ck["versions"][0]["dir"]), Path(ck["versions"][1]["dir"])
    t1, t2, c1, c2, new = [], [], [], [], []
    for _ in range(b.runs):
        b.fresh_repo(kind)
        b.cache.settle()
        t1.append(b.push(v1, "v1"))
        b.cache.settle()
        r = b.push(v2, "v2")
        t2.append(r)
        new.append(r.json()["new_bytes"])
        c1.append(cp_baseline(v1, b.work / "cp-dst", b.cache))
        c2.append(cp_baseline(v2, b.work / "cp-dst", b.cache))
    changed = ck["versions"][1]["changed_tensor_bytes"]
    stored = median(new)
    return [
        # Issue 19's time targets are for the local repository; S3 through moto is measured
        # against raw boto3 by benchmarks/s3_bench.py.
        time_row(f"push v1 into an empty repository ({kind})", t1, c1, 1.7 if kind == "local" else None),
        cpu_row(
            f"push v1: CPU per GiB, user + sys ({kind})",
            t1,
            c1,
            ck["versions"][0]["total_bytes"],
            1.5 if kind == "local" else None,
        ),
        time_row(f"push v2, near-identical ({kind})", t2, c2, 1.5 if kind == "local" else None),
        Row(
            f"push v2: new bytes stored / changed tensor bytes ({kind})",
            mib(stored),
            f"{mib(changed)} changed",
            f"{stored / changed:.2f}x",
            "<= 1.4x",
            stored / changed <= 1.4,
        ),
    ]


def fig_pull_cold(b: Bench, ck: dict, kind: str) -> list[Row]:
    """pull v1 into an empty directory with a cold page cache; cp -r of v1, cold too."""
    v1 = Path(ck["versions"][0]["dir"])
    dest = b.work / "pull-v1"
    t, c = [], []
    for i in range(b.runs):
        rmtree(dest)
        b.cache.settle(cold=True)
        t.append(run(b.pull("v1", dest), b.env))
        if i == 0 and tree_digests(dest) != tree_digests(v1):
            raise RuntimeError(f"pulled {dest} differs from {v1}")
        c.append(cp_baseline(v1, b.work / "cp-dst", b.cache, cold=True))
    rmtree(dest)
    state = "cold" if b.cache.can_drop else "warm"
    return [
        time_row(
            f"pull v1 into an empty directory, {state} page cache ({kind})", t, c, 1.4 if kind == "local" else None
        ),
        cpu_row(
            f"pull v1: CPU per GiB, user + sys ({kind})",
            t,
            c,
            ck["versions"][0]["total_bytes"],
            1.0 if kind == "local" else None,
        ),
    ]


JOBS = (1, 2, 4, 8)


def fig_jobs(b: Bench, ck: dict) -> list[Row]:
    """push v1 into an empty local repository and pull it into an empty directory (page cache
    dropped when allowed) at each --jobs of JOBS, the values interleaved within each run so that
    a change of the machine's load falls on all of them; cp -r of v1 as the baseline of both."""
    v1 = Path(ck["versions"][0]["dir"])
    dest = b.work / "pull-jobs"
    pushes: dict[int, list[Result]] = {j: [] for j in JOBS}
    pulls: dict[int, list[Result]] = {j: [] for j in JOBS}
    cps, cold_cps = [], []
    for _ in range(b.runs):
        for j in JOBS:
            b.fresh_repo("local")
            b.cache.settle()
            pushes[j].append(b.push(v1, "v1", jobs=j))
            rmtree(dest)
            b.cache.settle(cold=True)
            pulls[j].append(run(b.pull("v1", dest, jobs=j), b.env))
            rmtree(dest)
        cps.append(cp_baseline(v1, b.work / "cp-dst", b.cache))
        cold_cps.append(cp_baseline(v1, b.work / "cp-dst", b.cache, cold=True))
    rows = []
    for name, results, base in (("push v1", pushes, cps), ("pull v1, cold", pulls, cold_cps)):
        one = median([r.seconds for r in results[1]])
        for j in JOBS:
            row = time_row(f"{name} --jobs {j} (local)", results[j], base, None)
            row.target = f"{one / median([r.seconds for r in results[j]]):.2f}x the speed of --jobs 1"
            rows.append(row)
    return rows


def fig_pull_update(b: Bench, ck: dict, kind: str) -> list[Row]:
    """pull v2 into the directory holding v1 (pulled first, untimed): bytes fetched vs changed."""
    v2 = Path(ck["versions"][1]["dir"])
    dest = b.work / "pull-update"
    t, c, fetched = [], [], []
    for i in range(b.runs):
        rmtree(dest)
        run(b.pull("v1", dest), b.env)
        b.cache.settle(cold=True)
        r = run(b.pull("v2", dest), b.env)
        t.append(r)
        fetched.append(r.json()["fetched_bytes"])
        if i == 0 and tree_digests(dest) != tree_digests(v2):
            raise RuntimeError(f"pulled {dest} differs from {v2}")
        c.append(cp_baseline(v2, b.work / "cp-dst", b.cache, cold=True))
    rmtree(dest)
    changed = ck["versions"][1]["changed_tensor_bytes"]
    f = median(fetched)
    return [
        time_row(f"pull v2 into the directory holding v1 ({kind})", t, c, None),
        Row(
            f"pull v2 into v1: bytes fetched / changed tensor bytes ({kind})",
            mib(f),
            f"{mib(changed)} changed",
            f"{f / changed:.2f}x",
            "<= 1.4x",
            f / changed <= 1.4,
        ),
    ]


def fig_pull_in_place(b: Bench, size: str, seed: int) -> list[Row]:
    """pull v3 into the directory holding v2 (pulled first, untimed), where v3 re-randomises 10%
    of the tensors and every shard holds some of them; `cp -r v3 && sync` as the baseline. Its
    own checkpoints: four shards of a quarter of ``size`` each, three versions."""
    out = b.work / "ckpt-in-place"
    shard = max(1, make_checkpoints.parse_size(size) // 4)
    versions = ["--versions", "3", "--changed-fraction", "0.1", "--shard-size", str(shard)]
    make(["--out", str(out), "--size", size, "--seed", str(seed), *versions])
    ck = json.loads((out / "changes.json").read_text())
    v2, v3 = Path(ck["versions"][1]["dir"]), Path(ck["versions"][2]["dir"])
    shards_changed = {
        p.name for p in v3.glob("*.safetensors") if blake3.blake3(p.read_bytes()).digest() != _digest(v2 / p.name)
    }
    every = len(shards_changed) == len(list(v3.glob("*.safetensors")))
    b.fresh_repo("local")
    b.push(v2, "v2")
    b.push(v3, "v3")
    dest = b.work / "pull-in-place"
    t, c = [], []
    for i in range(b.runs):
        rmtree(dest)
        run(b.pull("v2", dest), b.env)
        b.cache.settle(cold=True)
        t.append(run(b.pull("v3", dest), b.env))
        if i == 0 and tree_digests(dest) != tree_digests(v3):
            raise RuntimeError(f"pulled {dest} differs from {v3}")
        c.append(cp_baseline(v3, b.work / "cp-dst", b.cache, cold=True))
    rmtree(dest)
    rmtree(out)
    where = "in every shard" if every else f"in {len(shards_changed)} shards of {len(list(v3.glob('*.safetensors')))}"
    return [time_row(f"pull v3 into the directory holding v2 (10% of tensors changed, {where}) (local)", t, c, 1.3)]


def _digest(path: Path) -> bytes:
    return blake3.blake3(path.read_bytes()).digest() if path.exists() else b""


def written_bytes(dest: Path) -> int:
    """Bytes a pull has written so far: allocated blocks (partial files are sparse until filled)."""
    total = 0
    for p in dest.rglob("*"):
        try:
            st = p.lstat()
        except FileNotFoundError:
            continue
        if p.is_file():
            total += st.st_blocks * 512
    return total


def model_verify_local(b: Bench, tag: str, dest: Path) -> bool:
    """`aim_cli model verify --local DEST`: the pulled tree against the version, by file digests."""
    try:
        run(b.aim("model", "verify", "bench", "m", "--tag", tag, "--local", str(dest), "-q"), b.env)
    except RuntimeError as e:
        print(e, file=sys.stderr)
        return False
    return True


def fig_resume(b: Bench, ck: dict) -> list[Row]:
    """pull v1, SIGKILL it once about half the bytes are written, rerun: what the rerun fetches."""
    v1 = ck["versions"][0]
    total = v1["total_bytes"]
    dest = b.work / "pull-killed"
    t, fractions, killed_at, verified = [], [], [], True
    for _ in range(b.runs):
        rmtree(dest)
        b.cache.settle()
        proc = subprocess.Popen(b.pull("v1", dest), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=b.env)
        while proc.poll() is None and written_bytes(dest) < total / 2:
            time.sleep(0.005)  # polling the destination, not synchronising
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        killed_at.append(written_bytes(dest) / total)
        b.cache.settle()
        r = run(b.pull("v1", dest), b.env)
        t.append(r.seconds)
        fractions.append(r.json()["fetched_bytes"] / total)
        verified &= tree_digests(dest) == tree_digests(Path(v1["dir"])) and not (dest / ".aim" / "partial").exists()
        verified &= model_verify_local(b, "v1", dest)
    rmtree(dest)
    f = median(fractions)
    return [
        Row(
            f"pull killed (SIGKILL) at {median(killed_at):.0%} written, rerun: share of bytes the rerun "
            f"fetches; result {'identical and `model verify --local` passes' if verified else '**DIFFERS**'}",
            f"{f:.0%} ({median(t):.2f} s)",
            "—",
            "—",
            "<= 60%",
            f <= 0.6 and verified,
        )
    ]


def fig_rss(b: Bench, size: str) -> list[Row]:
    """Peak RSS of one push and one pull of a ``size`` model (one run each)."""
    out = b.work / "ckpt-rss"
    make(["--out", str(out), "--size", size, "--versions", "1", "--seed", "1"])
    src = out / "v1"
    b.fresh_repo("local")
    b.cache.settle()
    push = b.push(src, "big", rss=True)
    dest = b.work / "pull-rss"
    b.cache.settle()
    pull = run(b.pull("big", dest), b.env, rss=True)
    cp = cp_baseline(src, b.work / "cp-dst", b.cache, rss=True)
    rmtree(dest)
    rmtree(out)
    rmtree(b.work / "repo")
    limit = 400 * 1000 * 1000
    return [
        Row(
            f"peak RSS, push of a {size} model",
            f"{push.maxrss / 1e6:.0f} MB ({push.seconds:.1f} s)",
            f"{cp.maxrss / 1e6:.0f} MB ({cp.seconds:.1f} s)",
            "—",
            "<= 400 MB",
            push.maxrss <= limit,
        ),
        Row(
            f"peak RSS, pull of a {size} model",
            f"{pull.maxrss / 1e6:.0f} MB ({pull.seconds:.1f} s)",
            f"{cp.maxrss / 1e6:.0f} MB",
            "—",
            "<= 400 MB",
            pull.maxrss <= limit,
        ),
    ]


def fig_help(b: Bench) -> list[Row]:
    """`aim_cli --help`, warm; the interpreter's own start-up as the reference."""
    run([str(AIM), "--help"], b.env)  # warm the page cache
    runs = max(b.runs, 5)
    t = [run([str(AIM), "--help"], b.env).seconds for _ in range(runs)]
    base = [run([sys.executable, "-c", "pass"], b.env).seconds for _ in range(runs)]
    a = median(t)
    return [
        Row(
            f"`{AIM.name} --help` (median of {runs})",
            f"{a:.3f} s",
            f"{median(base):.3f} s (python -c pass)",
            "—",
            "<= 0.3 s",
            a <= 0.3,
        )
    ]


# -- main -------------------------------------------------------------------------------------------------
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="aim_cli transfer benchmarks (see the module docstring)")
    ap.add_argument("--size", default="1GiB", help="size of the checkpoints (default 1GiB)")
    ap.add_argument("--runs", type=int, default=3, help="runs per figure; the median is shown (default 3)")
    ap.add_argument("--workdir", type=Path, help="work directory (default: a temporary one under the current)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("--s3", action="store_true", help="also run push and pull through a moto S3 server")
    ap.add_argument("--rss-size", default="4GiB", help="model size of the peak RSS figure (default 4GiB)")
    ap.add_argument("--skip-rss", action="store_true", help="skip the peak RSS figure")
    ap.add_argument("--skip-jobs", action="store_true", help="skip the --jobs scaling rows (1, 2, 4, 8)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--format",
        type=int,
        choices=(1, 2, 3),
        help="storage format of the local repositories (default: the product's)",
    )
    args = ap.parse_args(argv)
    if not AIM.exists():
        sys.exit(f"{AIM} not found: run this with the project's environment (uv run python {sys.argv[0]})")

    if args.workdir:
        args.workdir.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix="aim-bench-", dir=args.workdir))
    else:
        work = Path(tempfile.mkdtemp(prefix=".aim-bench-", dir=Path.cwd()))
    cache = PageCache()
    load_before = os.getloadavg()[0]
    b = Bench(work.absolute(), args.runs, cache)
    b.format = args.format
    moto = None
    rows: list[Row] = []
    try:
        ck_dir = work / "ckpt"
        make(["--out", str(ck_dir), "--size", args.size, "--versions", "2", "--seed", str(args.seed)])
        ck = json.loads((ck_dir / "changes.json").read_text())

        def collect(*figures) -> None:
            for figure in figures:
                for r in figure():
                    print(f"  {r.figure}: {r.aim} vs {r.baseline} ({r.ratio})", file=sys.stderr)
                    rows.append(r)

        collect(
            lambda: fig_push(b, ck, "local"),
            lambda: fig_pull_cold(b, ck, "local"),
            lambda: fig_pull_update(b, ck, "local"),
            lambda: fig_resume(b, ck),
            lambda: fig_pull_in_place(b, args.size, args.seed),  # last: it empties the repository
        )
        if not args.skip_jobs:
            collect(lambda: fig_jobs(b, ck))
        if args.s3:
            moto = start_moto(b)
            collect(
                lambda: fig_push(b, ck, "s3"), lambda: fig_pull_cold(b, ck, "s3"), lambda: fig_pull_update(b, ck, "s3")
            )
        if not args.skip_rss:
            collect(lambda: fig_rss(b, args.rss_size))
        collect(lambda: fig_help(b))
    finally:
        if moto is not None:
            stop_moto(b, moto)
        if not args.keep:
            rmtree(work)

    v1, v2 = ck["versions"][0], ck["versions"][1]
    print(
        f"aim_cli benchmarks: {v1['total_bytes'] / MiB:.0f} MiB checkpoint, {v1['shards']} shards; v2 re-randomises "
        f"{len(v2['changed_tensors'])} tensors and adds {len(v2['added_tensors'])} "
        f"({v2['changed_tensor_bytes'] / MiB:.1f} MiB changed). Median of {args.runs} run(s). "
        f"Pull figures: {cache.state}. {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"work directory on the filesystem of {work.parent}. Load average {load_before:.1f} at the start, "
        f"{os.getloadavg()[0]:.1f} at the end."
    )
    print()
    print_table(rows)
    return 0 if all(r.met is not False for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
