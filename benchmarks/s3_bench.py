"""aim_cli against plain boto3 on the same S3 server, in the same run: push and pull throughput.

    uv run python benchmarks/s3_bench.py                         # 256 MiB, --jobs 8, median of 3
    uv run python benchmarks/s3_bench.py --size 1GiB --jobs 16 --runs 5
    uv run python benchmarks/s3_bench.py --cli                   # time the console script instead
    uv run python benchmarks/s3_bench.py --rgw                   # also against Ceph's RADOS Gateway
    uv run python benchmarks/s3_bench.py --link --size 1GiB      # a distant store: against rclone, restic

The script starts its own S3 server, moto's, as a subprocess on 127.0.0.1 and a free port, with
the launcher of the tests (``tests/s3_fixtures.py --serve``). It writes ``--size`` bytes of
checkpoint-like data (random bytes: every chunk is new, nothing deduplicates) as files of
``--file-size``, then per run, into fresh buckets:

- push: ``aim_cli.api.push`` (or ``aim_cli model push --quiet --jobs J``) of the directory, against
  ``put_object`` of the same bytes cut into objects of exactly the sizes of aim_cli's chunks (read
  from the pushed manifest), from memory, by a ThreadPoolExecutor of J threads;
- pull: ``aim_cli.api.pull`` (or ``model pull``) into an empty directory, against ``get_object`` of
  the same objects (read into memory and dropped) by J threads.

Both sides use one botocore configuration (the one S3Backend uses: standard retries, a pool of J
connections, checksums only when required) and create their client inside the timed section.
aim_cli's side also does its real work: chunking and hashing on push; per-chunk verification,
writing, fsync and a whole-file re-hash on pull. The order of the two sides alternates between
runs, after one small untimed warm-up round of each. The table reports the median of ``--runs``
runs; ratio = aim_cli / boto3.
Note: moto keeps objects in memory; buckets are emptied after each run.

``--rgw`` runs the same benchmark, on the same files, a second time against Ceph's RADOS Gateway
16 (the tests' throw-away single-node cluster, ``tests/rgw.py``: one memstore OSD, so objects are
in RAM there too) and prints one table per server and their ratio RGW / moto.

``--link`` measures a cold pull from a distant store instead: moto behind the shaping proxy
(``shaping_proxy.py``: 30 ms to an answer's first byte, 40 MB/s per connection, ``--ttfb`` and
``--rate``), the console script ``aim_cli model pull --quiet`` (``--jobs`` if given, else its
default) against ``rclone copy`` of the same files stored as plain objects in the same server,
with rclone's default flags, and ``restic restore`` of a snapshot of them, each tool when
installed; the order of the tools rotates between runs. Each side is a separate process, timed
from its start to its exit; its peak RSS and CPU seconds come from GNU time, and the share of
the machine's CPUs busy meanwhile (the tool, the proxy and the server) from /proc/stat: near
100%, the machine binds, not the link. The table reports the median of ``--runs`` runs; ratio =
the tool's time / rclone's (below 1: faster). With ``--rgw``
the same race runs a second time against Ceph RGW behind the same proxy, and the last line gives
each tool's time on RGW / on moto. ``--link --push`` also races pushes of the same files, each
into a fresh prefix through the same proxy (emptied after each run, untimed): ``aim_cli model
push`` against ``rclone copy`` to the server and ``restic backup`` (its repository initialised
untimed); the files are random, so every byte is new to each.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from tests import rgw, s3_fixtures  # noqa: E402  (the tests' launchers of moto and Ceph RGW)

AIM = Path(sys.executable).with_name("aim_cli")
MiB = 1 << 20
PREFIX = "repo"
T = TypeVar("T")


def parse_size(text: str) -> int:
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    t = text.strip().lower().removesuffix("ib").removesuffix("b")
    return int(float(t[:-1]) * units[t[-1]]) if t[-1] in units else int(t)


# -- the server ------------------------------------------------------------------------------------
def start_moto(work: Path) -> tuple[subprocess.Popen, str]:
    """moto's S3 server via the tests' launcher; dummy credentials in os.environ, ~/.aws kept out."""
    set_env(work)
    log_path = work / "moto.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-P", s3_fixtures.__file__, "--serve"],
            stdout=subprocess.PIPE,
            stderr=log,
            stdin=subprocess.DEVNULL,
        )
    port = s3_fixtures._read_port(proc, log_path)
    endpoint = f"http://127.0.0.1:{port}"
    s3_fixtures._wait_until_answering(endpoint + "/moto-api/", time.monotonic() + s3_fixtures.STARTUP_DEADLINE)
    return proc, endpoint


def set_env(work: Path) -> None:
    aws = work / "aws"
    aws.mkdir()
    os.environ.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_CONFIG_FILE=str(aws / "config"),
        AWS_SHARED_CREDENTIALS_FILE=str(aws / "credentials"),
        AWS_EC2_METADATA_DISABLED="true",
    )
    for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        os.environ.pop(var, None)
    for var in [v for v in os.environ if v.startswith("AIM_")]:
        os.environ.pop(var)


def stop(proc: subprocess.Popen) -> None:
    s3_fixtures.stop_server(proc)


def client(endpoint: str, jobs: int):
    """A boto3 client configured as S3Backend configures its own."""
    import boto3
    from botocore.config import Config

    from aim_cli.backends.s3 import client as s3mod

    config = Config(
        retries={"mode": "standard", "max_attempts": s3mod.BOTOCORE_MAX_ATTEMPTS},
        connect_timeout=s3mod.CONNECT_TIMEOUT,
        read_timeout=s3mod.READ_TIMEOUT,
        max_pool_connections=max(jobs, 10),
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    return boto3.session.Session().client("s3", endpoint_url=endpoint, region_name="us-east-1", config=config)


def drop_bucket(admin, bucket: str) -> None:
    for page in admin.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys = [{"Key": o["Key"]} for o in page.get("Contents", ())]
        if keys:
            admin.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
    admin.delete_bucket(Bucket=bucket)


# -- the data ----------------------------------------------------------------------------------------
def make_source(src: Path, size: int, file_size: int) -> list[Path]:
    """Files of ``file_size`` (the last one may be shorter) holding ``size`` random bytes."""
    src.mkdir(parents=True)
    files, left, i = [], size, 0
    while left > 0:
        n = min(file_size, left)
        path = src / f"model-{i + 1:05d}.safetensors"
        with open(path, "wb") as f:
            for off in range(0, n, 16 * MiB):
                f.write(os.urandom(min(16 * MiB, n - off)))
        files.append(path)
        left, i = left - n, i + 1
    return files


def chunk_objects(src: Path, manifest) -> list[tuple[str, bytes]]:
    """(key, bytes) of every chunk of the manifest, cut from the source files: the objects the
    boto3 baseline uploads. Keys as aim_cli lays them out (a duplicate chunk is stored once)."""
    objects: dict[str, bytes] = {}
    for entry in manifest.files:
        data = (src / entry.path).read_bytes()
        offset = 0
        for digest, size in entry.chunks:
            objects.setdefault(f"{PREFIX}/blobs/{digest[:2]}/{digest}", data[offset : offset + size])
            offset += size
    return list(objects.items())


# -- one run -------------------------------------------------------------------------------------------
class Bench:
    def __init__(self, args, work: Path, endpoint: str):
        self.args, self.work, self.endpoint = args, work, endpoint
        self.jobs = args.jobs
        self.config = work / "model_repos.yaml"
        self.admin = client(endpoint, 4)

    def fresh_bucket(self) -> str:
        bucket = f"bench-{uuid.uuid4().hex[:12]}"
        self.admin.create_bucket(Bucket=bucket)
        return bucket

    def write_config(self, bucket: str) -> None:
        self.config.write_text(
            f'repos:\n  bench: {{type: s3, path: "s3://{bucket}/{PREFIX}", '
            f'endpoint_url: "{self.endpoint}", region: us-east-1}}\n'
        )

    def aim_push(self, src: Path) -> float:
        return self._aim("push", src)

    def aim_pull(self, dest: Path) -> float:
        return self._aim("pull", dest)

    def _aim(self, verb: str, path: Path) -> float:
        """Seconds for one `model push|pull` of v1: the console script with --cli, else the API."""
        started = time.perf_counter()
        if self.args.cli:
            subprocess.run(
                [
                    str(AIM),
                    "--config",
                    str(self.config),
                    "model",
                    verb,
                    "bench",
                    "m",
                    str(path),
                    "--tag",
                    "v1",
                    "--quiet",
                    "--jobs",
                    str(self.jobs),
                ],
                check=True,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
            )
        else:
            from aim_cli import api

            getattr(api, verb)("bench", "m", path, tag="v1", jobs=self.jobs, config=self.config)
        return time.perf_counter() - started

    def boto3_put(self, bucket: str, objects: list[tuple[str, bytes]]) -> float:
        started = time.perf_counter()
        c = client(self.endpoint, self.jobs)
        with ThreadPoolExecutor(self.jobs) as pool:
            list(pool.map(lambda kv: c.put_object(Bucket=bucket, Key=kv[0], Body=kv[1]), objects))
        c.close()
        return time.perf_counter() - started

    def boto3_get(self, bucket: str, keys: list[str]) -> float:
        started = time.perf_counter()
        c = client(self.endpoint, self.jobs)

        def get(key: str) -> int:
            body = c.get_object(Bucket=bucket, Key=key)["Body"]
            try:
                return len(body.read())
            finally:
                body.close()

        with ThreadPoolExecutor(self.jobs) as pool:
            got = sum(pool.map(get, keys))
        c.close()
        # Stored blobs are the chunks plus a few bytes of header each (storage format 2).
        assert self.chunk_bytes <= got <= self.chunk_bytes + 64 * len(keys), (got, self.chunk_bytes)
        return time.perf_counter() - started

    def manifest(self):
        from aim_cli import api

        return api.open_repository("bench", config=self.config).get_version("m", "v1").manifest

    def warm_up(self) -> None:
        """One small untimed round of each side: imports, the first connections, moto's own start."""
        small = self.work / "warm"
        make_source(small, 2 * MiB, MiB)
        bucket = self.fresh_bucket()
        self.write_config(bucket)
        try:
            self.aim_push(small)
            self.aim_pull(self.work / "warm-pulled")
            objects = chunk_objects(small, self.manifest())
            self.boto3_put(bucket, objects)
            c = client(self.endpoint, 1)
            c.get_object(Bucket=bucket, Key=objects[0][0])["Body"].read()
            c.close()
        finally:
            drop_bucket(self.admin, bucket)
            shutil.rmtree(small)
            shutil.rmtree(self.work / "warm-pulled", ignore_errors=True)

    def run_once(self, index: int, src: Path) -> dict[str, float]:
        aim_bucket, base_bucket = self.fresh_bucket(), self.fresh_bucket()
        self.write_config(aim_bucket)
        dest = self.work / "pulled"
        shutil.rmtree(dest, ignore_errors=True)
        baseline_first = index % 2 == 1
        t: dict[str, float] = {}
        try:
            # The objects of the baseline come from the manifest, so on the first run aim_cli must
            # push first; later runs reuse them and alternate the order.
            if baseline_first and self.objects is not None:
                t["put"] = self.boto3_put(base_bucket, self.objects)
                t["push"] = self.aim_push(src)
            else:
                t["push"] = self.aim_push(src)
                if self.objects is None:
                    self.objects = chunk_objects(src, self.manifest())
                    self.chunk_bytes = sum(len(b) for _, b in self.objects)
                t["put"] = self.boto3_put(base_bucket, self.objects)
            keys = [k for k, _ in self.objects]
            if baseline_first:
                t["get"] = self.boto3_get(aim_bucket, keys)
                t["pull"] = self.aim_pull(dest)
            else:
                t["pull"] = self.aim_pull(dest)
                t["get"] = self.boto3_get(aim_bucket, keys)
            # The pull was real: the pulled files are the source's (sizes; pull verified digests).
            assert sorted(p.name for p in dest.iterdir() if p.is_file()) == sorted(p.name for p in src.iterdir())
        finally:
            drop_bucket(self.admin, aim_bucket)
            drop_bucket(self.admin, base_bucket)
            shutil.rmtree(dest, ignore_errors=True)
        return t

    objects: list[tuple[str, bytes]] | None = None
    chunk_bytes = 0


# -- a distant store: aim_cli against rclone and restic ----------------------------------------------------
def timed_child(argv: list[str], env: dict, cwd: Path | None = None) -> Child:
    """One child process, which must succeed, timed from its start to its exit. The RSS and CPU
    come from GNU time: a rusage read here would count the pages of this process that the child
    shared between its fork and its exec."""
    with tempfile.NamedTemporaryFile("r") as usage:
        machine = machine_busy()
        started = time.perf_counter()
        subprocess.run(
            ["/usr/bin/time", "-f", "%M %U %S", "-o", usage.name, *argv],
            env=env,
            cwd=cwd,
            check=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
        )
        seconds = time.perf_counter() - started
        rss, user, system = usage.read().split()[-3:]
        return Child(seconds, int(rss) * 1024, float(user) + float(system), machine())


@dataclass
class Child:
    seconds: float
    rss: int  # peak, bytes
    cpu: float  # user + system seconds of the child
    busy: float  # share of all the machine's CPUs busy meanwhile (the child, the proxy, the server)


def machine_busy() -> Callable[[], float]:
    """A function giving the share of the machine's CPU time spent busy since this call
    (/proc/stat: everything but idle and iowait); nan where there is no /proc/stat."""

    def sample() -> tuple[int, int] | None:
        try:
            with open("/proc/stat") as f:
                fields = [int(x) for x in f.readline().split()[1:]]
        except OSError:
            return None
        return sum(fields) - fields[3] - fields[4], sum(fields)

    before = sample()

    def since() -> float:
        after = sample()
        if before is None or after is None or after[1] == before[1]:
            return float("nan")
        return (after[0] - before[0]) / (after[1] - before[1])

    return since


class LinkBench:
    """The stores of one ``--link`` benchmark: aim_cli's repository (pushed unshaped), the files as
    objects for rclone, a restic repository; then cold pulls of each through the proxy."""

    def __init__(self, args, work: Path, endpoint: str, shaped: str, src: Path):
        self.args, self.work, self.endpoint, self.shaped, self.src = args, work, endpoint, shaped, src
        self.admin = client(endpoint, 4)
        self.bucket = f"link-{uuid.uuid4().hex[:12]}"
        self.admin.create_bucket(Bucket=self.bucket)
        self.config = work / "model_repos.yaml"
        self.tools = ["aim_cli"] + [t for t in ("rclone", "restic") if shutil.which(t)]
        # rclone refuses a CA bundle for a plain-HTTP endpoint (its transport takes none)
        self.env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
        self.env.update(
            RCLONE_CONFIG_BENCH_TYPE="s3",
            RCLONE_CONFIG_BENCH_PROVIDER="Other",
            RCLONE_CONFIG_BENCH_ENDPOINT=shaped,
            RCLONE_CONFIG_BENCH_ACCESS_KEY_ID="testing",
            RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY="testing",
            RCLONE_CONFIG_BENCH_REGION="us-east-1",
            RCLONE_CONFIG=str(work / "rclone.conf"),  # none: the remote comes from the environment
            RESTIC_PASSWORD="bench",
            RESTIC_CACHE_DIR=str(work / "restic-cache"),
        )

    def prepare(self) -> None:
        """Store the data three ways, unshaped (not timed)."""
        from aim_cli import api

        self.write_config(self.endpoint)
        api.push("bench", "m", self.src, tag="v1", config=self.config)
        self.write_config(self.shaped)
        if "rclone" in self.tools:
            c = client(self.endpoint, 4)
            for path in sorted(self.src.iterdir()):
                c.upload_file(str(path), self.bucket, f"files/{path.name}")
            c.close()
        if "restic" in self.tools:
            repo = f"s3:{self.endpoint}/{self.bucket}/restic"
            for argv in (["restic", "-r", repo, "init"], ["restic", "-r", repo, "backup", "."]):
                subprocess.run(argv, env=self.env, cwd=self.src, check=True, stdout=subprocess.DEVNULL)

    def write_config(self, endpoint: str, prefix: str = PREFIX, config: Path | None = None) -> Path:
        """A model_repos.yaml naming repository "bench" at ``prefix`` of the bucket through
        ``endpoint``, written to ``config`` (default: the race's own); its path."""
        config = config or self.config
        config.write_text(
            f'repos:\n  bench: {{type: s3, path: "s3://{self.bucket}/{prefix}", '
            f'endpoint_url: "{endpoint}", region: us-east-1}}\n'
        )
        return config

    def pull(self, tool: str, dest: Path) -> Child:
        """One cold pull into ``dest`` (absent), through the proxy."""
        if tool == "aim_cli":
            jobs = ["--jobs", str(self.args.jobs)] if self.args.jobs_given else []
            argv = [str(AIM), "--config", str(self.config), "model", "pull", "bench", "m", str(dest), "--tag", "v1"]
            return timed_child([*argv, "--quiet", *jobs], self.env)
        if tool == "rclone":
            return timed_child(["rclone", "copy", f"bench:{self.bucket}/files", str(dest)], self.env)
        repo = f"s3:{self.shaped}/{self.bucket}/restic"
        return timed_child(["restic", "-r", repo, "restore", "latest", "--target", str(dest)], self.env)

    def run(self) -> dict[str, list[Child]]:
        return self._race("link run", self._checked_pull)

    def _checked_pull(self, tool: str, n: int) -> Child:
        dest = self.work / f"pulled-{tool}"
        shutil.rmtree(dest, ignore_errors=True)
        child = self.pull(tool, dest)
        got = sum(p.stat().st_size for p in dest.rglob("*") if p.is_file() and ".aim" not in p.parts)
        assert got == self._size(), (tool, got)  # the pull was real
        shutil.rmtree(dest)
        return child

    def _size(self) -> int:
        return sum(p.stat().st_size for p in self.src.iterdir())

    def _race(self, label: str, one: Callable[[str, int], Child]) -> dict[str, list[Child]]:
        """``one(tool, run)`` of every tool, ``--runs`` times, the order rotating between runs."""
        results: dict[str, list[Child]] = {t: [] for t in self.tools}
        for i in range(self.args.runs):
            order = self.tools[i % len(self.tools) :] + self.tools[: i % len(self.tools)]
            for tool in order:
                results[tool].append(one(tool, i))
            line = ", ".join(f"{t} {results[t][-1].seconds:.2f}s" for t in order)
            print(f"{label} {i + 1}/{self.args.runs}: {line}", file=sys.stderr)
        return results

    def push(self, tool: str, n: int) -> Child:
        """One push of the files into a fresh prefix, through the proxy; the prefix is emptied
        after (unshaped, untimed), so that the server's memory does not fill over the runs."""
        prefix = f"up-{tool}-{n}"
        if tool == "aim_cli":
            config = self.write_config(self.shaped, prefix, self.work / f"{prefix}.yaml")
            jobs = ["--jobs", str(self.args.jobs)] if self.args.jobs_given else []
            argv = [str(AIM), "--config", str(config), "model", "push", "bench", "m", str(self.src), "--tag", "v1"]
            child = timed_child([*argv, "--quiet", *jobs], self.env)
        elif tool == "rclone":
            child = timed_child(["rclone", "copy", str(self.src), f"bench:{self.bucket}/{prefix}"], self.env)
        else:
            repo = f"s3:{self.shaped}/{self.bucket}/{prefix}"
            subprocess.run(["restic", "-r", repo, "init"], env=self.env, check=True, stdout=subprocess.DEVNULL)
            child = timed_child(["restic", "-r", repo, "backup", "."], self.env, cwd=self.src)
        stored = drop_prefix(self.admin, self.bucket, prefix + "/")
        assert stored >= self._size() * 0.99, (tool, stored)  # it was real
        return child

    def run_pushes(self) -> dict[str, list[Child]]:
        return self._race("link push run", self.push)


def drop_prefix(admin, bucket: str, prefix: str) -> int:
    """Delete every object under ``prefix``; the bytes they held."""
    total = 0
    for page in admin.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        objects = page.get("Contents", ())
        total += sum(o["Size"] for o in objects)
        if objects:
            admin.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": o["Key"]} for o in objects], "Quiet": True})
    return total


def on_servers(args, work: Path, run: Callable[[str, str], T]) -> dict[str, T]:
    """``run(server, endpoint)`` against a moto server, then (--rgw) against a Ceph RGW cluster,
    each started for it and stopped after: the results by the server's name in the tables."""
    results = {}
    proc, endpoint = start_moto(work)
    try:
        results["moto"] = run("moto", endpoint)
    finally:
        stop(proc)
    if args.rgw:
        try:
            cluster = rgw.start_cluster("testing", "testing", work / "ceph")
        except rgw.RgwUnavailable as e:
            sys.exit(f"error: {e}")
        try:
            results["Ceph RGW 16"] = run("rgw", cluster.endpoint)
        finally:
            cluster.stop()
    return results


def link_main(args, work: Path, size: int, file_size: int) -> None:
    """The cold-pull race through the shaping proxy against moto, and with --rgw against Ceph RGW
    too (the same files, the same proxy settings): one table per server (and per race, --push)."""
    files = make_source(work / "src", size, file_size)
    tables = on_servers(args, work, lambda server, endpoint: link_on(args, work / server, endpoint))
    jobs = f"--jobs {args.jobs}" if args.jobs_given else "default --jobs"
    for server, races in tables.items():
        for race, results in races.items():
            what = f"cold pull of {size / MiB:.0f} MiB in {len(files)} files of {file_size / MiB:.0f} MiB from"
            if race == "push":
                what = f"push of the same {size / MiB:.0f} MiB (random: all new) to"
            print(
                f"{what} {server} behind the shaping proxy ({args.ttfb * 1000:.0f} ms to first byte, "
                f"{args.rate / 1e6:.0f} MB/s per connection); aim_cli {jobs}; median of {args.runs} runs; "
                f"{os.cpu_count()} CPUs, Python {platform.python_version()}"
            )
            print()
            print_race(results, size)
    print(
        "its CPU: the tool's own user + system seconds; machine busy: the share of all CPUs busy while it "
        "ran, the proxy's and the server's work included (near 100%: the machine, not the link, binds)."
    )
    if len(tables) == 2:
        (moto, ceph) = (races["pull"] for races in tables.values())
        line = ", ".join(
            f"{t} {_median(ceph[t], 'seconds') / _median(moto[t], 'seconds'):.2f}x" for t in moto if t in ceph
        )
        print(f"pull time on RGW / time on moto: {line}")


def print_race(results: dict[str, list[Child]], size: int) -> None:
    print("| tool | seconds | MiB/s | its CPU s | machine busy | peak RSS MB | time / rclone |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    base = _median(results["rclone"], "seconds") if "rclone" in results else None
    for tool, runs in results.items():
        t = _median(runs, "seconds")
        ratio = f"{t / base:.2f}x" if base else "n/a"
        print(
            f"| {tool} | {t:.2f} | {size / MiB / t:.0f} | {_median(runs, 'cpu'):.2f} | "
            f"{_median(runs, 'busy'):.0%} | {max(r.rss for r in runs) / 1e6:.0f} | {ratio} |"
        )
    print()


def _median(runs: list[Child], figure: str) -> float:
    return statistics.median(getattr(r, figure) for r in runs)


def link_on(args, work: Path, endpoint: str) -> dict[str, dict[str, list[Child]]]:
    """The link benchmark against one server at ``endpoint``: each tool's runs, by race ("pull",
    and with --push "push")."""
    import shaping_proxy

    work.mkdir()
    shaper, shaped = shaping_proxy.start(endpoint, args.ttfb, args.rate)
    try:
        bench = LinkBench(args, work, endpoint, shaped, work.parent / "src")
        bench.prepare()
        races = {"pull": bench.run()}
        if args.push:
            races["push"] = bench.run_pushes()
        return races
    finally:
        shaper.terminate()
        shaper.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", default="256MiB", help="total bytes of the model (default 256MiB)")
    ap.add_argument("--file-size", default="64MiB", help="size of each file (default 64MiB)")
    ap.add_argument("--jobs", "-j", type=int, help="parallel transfers, both sides (default 8; --link: aim_cli's)")
    ap.add_argument("--runs", type=int, default=3, help="runs; the table shows the median (default 3)")
    ap.add_argument("--cli", action="store_true", help="time the console script instead of aim_cli.api")
    ap.add_argument(
        "--rgw", action="store_true", help="also run against Ceph's RADOS Gateway (tests/rgw.py); with --link too"
    )
    ap.add_argument("--link", action="store_true", help="cold pull through the shaping proxy, against rclone/restic")
    ap.add_argument(
        "--push", action="store_true", help="--link: also race pushes (aim_cli, rclone copy, restic backup)"
    )
    ap.add_argument("--ttfb", type=float, default=0.030, help="--link: seconds to an answer's first byte (0.03)")
    ap.add_argument("--rate", type=float, default=40e6, help="--link: bytes/s per connection (40e6)")
    ap.add_argument("--work", type=Path, help="work directory (default: a temporary one, removed at the end)")
    args = ap.parse_args()
    args.jobs_given = args.jobs is not None
    args.jobs = args.jobs or 8
    size, file_size = parse_size(args.size), parse_size(args.file_size)

    work = (
        Path(tempfile.mkdtemp(prefix="s3bench-", dir=args.work))
        if args.work
        else Path(tempfile.mkdtemp(prefix="s3bench-"))
    )
    if args.link:
        try:
            link_main(args, work, size, file_size)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return
    results = {}
    try:
        files = make_source(work / "src", size, file_size)
        results = on_servers(args, work, lambda server, endpoint: bench_on(server, args, work, endpoint, size))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    how = "`aim_cli model push/pull --quiet`" if args.cli else "`aim_cli.api.push/pull`"
    for server, (mbs, bench) in results.items():
        chunks = len(bench.objects)
        print(
            f"{size / MiB:.0f} MiB in {len(files)} files of {file_size / MiB:.0f} MiB, {chunks} chunks "
            f"(mean {bench.chunk_bytes / chunks / MiB:.2f} MiB); --jobs {args.jobs}; median of {args.runs} runs; "
            f"{server} on 127.0.0.1; {os.cpu_count()} CPUs, Python {platform.python_version()}; aim_cli via {how}"
        )
        print()
        print("| operation | aim_cli MiB/s | plain boto3 MiB/s | ratio |")
        print("|---|---:|---:|---:|")
        for op, aim_key, base_key, base in (
            ("push", "push", "put", "put_object"),
            ("pull", "pull", "get", "get_object"),
        ):
            ratio = mbs[aim_key] / mbs[base_key]
            print(f"| {op} vs {base} | {mbs[aim_key]:.1f} | {mbs[base_key]:.1f} | {ratio:.2f} |")
        print()
    if len(results) == 2:
        (moto, _), (ceph, _) = results.values()
        print("RGW / moto (MiB/s): " + ", ".join(f"{k} {ceph[k] / moto[k]:.2f}x" for k in moto))


def bench_on(server: str, args, work: Path, endpoint: str, size: int) -> tuple[dict[str, float], Bench]:
    """Warm up, then ``--runs`` timed runs against one server: (median MiB/s by side, the bench)."""
    (work / server).mkdir()
    bench = Bench(args, work / server, endpoint)
    bench.warm_up()
    times: dict[str, list[float]] = {"push": [], "put": [], "pull": [], "get": []}
    for i in range(args.runs):
        t = bench.run_once(i, work / "src")
        for k, v in t.items():
            times[k].append(v)
        print(
            f"{server} run {i + 1}/{args.runs}: " + ", ".join(f"{k} {size / MiB / v:.0f} MiB/s" for k, v in t.items()),
            file=sys.stderr,
        )
    return {k: size / MiB / statistics.median(v) for k, v in times.items()}, bench


if __name__ == "__main__":
    main()
