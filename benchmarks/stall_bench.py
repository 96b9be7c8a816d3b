"""A pull through a link where some responses go silent mid-body, against the same pull through a
clean link: what stalls cost, and what the S3 backend did about them (issues 8 and 17).

    uv run python benchmarks/stall_bench.py                     # 96 MiB, 15% of GETs stall, --jobs 8
    uv run python benchmarks/stall_bench.py --stall-after 128KiB   # every stall at one point
    uv run python benchmarks/stall_bench.py --cli               # time the console script instead
    uv run python benchmarks/stall_bench.py --stall-rate 0.3 --seed 7 --runs 5
    uv run python benchmarks/stall_bench.py --trace 1           # which stalls were held over 1 s

The script starts moto's S3 server as benchmarks/s3_bench.py does (the tests' launcher), pushes
``--size`` bytes of random data (files of ``--file-size``; ~1 MiB chunks) straight to it, then per
run pulls the version into an empty directory twice, in alternating order, through two proxies of
its own (FaultyProxy of tests/fakes.py) on 127.0.0.1:
- clean: forwards every request as it is;
- stalling: a ``--stall-rate`` share of GET responses, drawn from a generator seeded with
  ``--seed`` plus the run's number (0 for the warm-up), stop at a point of the body drawn from the
  same generator (uniformly from before the first byte to the last one; ``--stall-after N``: after
  N bytes, always) and keep the connection open and silent until the client closes it (a hung
  load balancer).
A pull is the whole pipeline: ``aim_cli.api.open_repository`` and ``aim_cli.pull.pipeline.pull`` (what
``aim_cli.api.pull`` runs), or with ``--cli`` the console script ``aim_cli model pull``. Every
pulled file is compared with its source byte for byte. The stall deadline is the default one
(start_moto unsets every AIM_* variable, AIM_S3_STALL_SECONDS included). The table shows the
median and the worst time of ``--runs`` runs and, summed over the runs, what the proxy did
(stalled responses, blob GETs beyond one per chunk) and, without ``--cli``, the backend's counters
(``S3Backend.stats``) and the concurrency gate's back-offs. Target: the stalling pull at most 3x
the clean one (issue 17).

``--trace SECONDS`` says where the time of a slow run went: after each run, every response the
proxy held silent for longer than that (the request, how long, how it ended, and whether a twin of
it was sent meanwhile, i.e. it was hedged), and the S3 backend's debug log (hedges, stalls) with
the time since the pull started. Each run's line says what the concurrency gate did (without
``--cli``): its back-offs, and its limit when the pull ended (the ceiling is ``--jobs``).
"""

from __future__ import annotations

import argparse
import filecmp
import logging
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from aim_cli.backends.s3.resilience import DEFAULT_STALL_SECONDS  # noqa: E402
from benchmarks.s3_bench import AIM, MiB, make_source, parse_size, start_moto, stop  # noqa: E402
from tests.fakes import FaultyProxy  # noqa: E402

MODEL, TAG = "m", "v1"
#: The stalling pull may take at most this many times the clean one.
TARGET_RATIO = 3.0


def write_config(path: Path, endpoints: dict[str, str], bucket: str) -> None:
    lines = ["repos:"]
    for name, endpoint in endpoints.items():
        lines.append(
            f'  {name}: {{type: s3, path: "s3://{bucket}/repo", endpoint_url: "{endpoint}", region: us-east-1}}'
        )
    path.write_text("\n".join(lines) + "\n")


def pull(args, config: Path, repo: str, dest: Path) -> tuple[float, Counter]:
    """Seconds for one pull of MODEL:TAG from ``repo`` into ``dest``, and the backend's counters
    (empty with --cli: they live in the child process)."""
    started = time.perf_counter()
    if args.cli:
        subprocess.run(
            [
                str(AIM),
                "--config",
                str(config),
                "model",
                "pull",
                repo,
                MODEL,
                str(dest),
                "--tag",
                TAG,
                "--quiet",
                "--jobs",
                str(args.jobs),
            ],
            check=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
        )
        return time.perf_counter() - started, Counter()
    from aim_cli import api
    from aim_cli.pull import pipeline as pullmod

    repository = api.open_repository(repo, config=config, jobs=args.jobs)
    try:
        pullmod.pull(repository, MODEL, dest, tag=TAG, jobs=args.jobs)
        seconds = time.perf_counter() - started
        backend = repository.backend
        counts = Counter(vars(backend.stats))
        gate = getattr(backend, "gate", None)  # the concurrency gate (S3): its back-offs, its limit
        if gate is not None:
            counts.update(back_offs=gate.concurrency.back_offs, end_limit=gate.concurrency.limit)
    finally:
        repository.backend.close()
    return seconds, counts


def same_files(src: Path, dest: Path) -> None:
    names = sorted(p.name for p in src.iterdir())
    assert sorted(p.name for p in dest.iterdir() if p.is_file()) == names, "pulled files differ from the source"
    for name in names:
        assert filecmp.cmp(src / name, dest / name, shallow=False), f"{name}: pulled bytes differ"


def proxy_counts(proxy: FaultyProxy, chunks: int) -> Counter:
    """What the proxy saw during one pull. A stalled connection counts as left hanging unless the
    client closed it (within 10 s of the pull's end: the proxy notices a close asynchronously)."""
    proxy.wait_until(lambda: proxy.stall_ends["client"] == proxy.stalled, timeout=10)
    blob_gets = sum(n for (method, path), n in proxy.seen.items() if method == "GET" and "/blobs/" in path)
    return Counter(
        stalled=proxy.stalled,
        extra_gets=blob_gets - chunks,
        stalls_left_hanging=proxy.stalled - proxy.stall_ends["client"],
    )


def trace(proxy: FaultyProxy, longer_than: float) -> None:
    """Print the stalls of one pull that the proxy held for longer than ``longer_than`` seconds."""
    for method, path, seconds, end, seen in proxy.stall_log:
        if seconds > longer_than:
            twin = "hedged" if seen > 1 else "no twin sent while held"
            print(f"    held {seconds:.2f}s: {method} {path} (ended by {end}; {twin})", file=sys.stderr)


class SinceStart(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"    {record.relativeCreated / 1000:8.2f}s {record.getMessage()}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", default="96MiB", help="total bytes of the model (default 96MiB)")
    ap.add_argument("--file-size", default="32MiB", help="size of each file (default 32MiB)")
    ap.add_argument("--jobs", "-j", type=int, default=8, help="parallel transfers (default 8)")
    ap.add_argument("--runs", type=int, default=3, help="runs; the table shows the median time (default 3)")
    ap.add_argument("--stall-rate", type=float, default=0.15, help="share of GET responses that stall (0.15)")
    ap.add_argument(
        "--stall-after", default="random", help="body bytes sent before a stall (default: random, per response)"
    )
    ap.add_argument("--seed", type=int, default=8, help="seed of the stall draws (default 8)")
    ap.add_argument("--cli", action="store_true", help="time the console script instead of the library")
    ap.add_argument(
        "--trace", type=float, default=None, metavar="SECONDS", help="list stalls held longer than this, per run"
    )
    args = ap.parse_args()
    if args.trace is not None:
        handler = logging.StreamHandler()
        handler.setFormatter(SinceStart())
        s3_log = logging.getLogger("aim_cli.backends.s3")
        s3_log.addHandler(handler)
        s3_log.setLevel(logging.DEBUG)
    size, file_size = parse_size(args.size), parse_size(args.file_size)
    anywhere = args.stall_after == "random"
    stall_after = 0 if anywhere else parse_size(args.stall_after)

    work = Path(tempfile.mkdtemp(prefix="stallbench-"))
    proc = None
    times: dict[str, list[float]] = {"clean": [], "stalling": []}
    counts: dict[str, Counter] = {"clean": Counter(), "stalling": Counter()}
    try:
        proc, endpoint = start_moto(work)
        src = work / "src"
        files = make_source(src, size, file_size)
        import boto3

        bucket = f"stall-{uuid.uuid4().hex[:12]}"
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=bucket)
        config = work / "model_repos.yaml"
        write_config(config, {"direct": endpoint}, bucket)
        from aim_cli import api

        api.push("direct", MODEL, src, tag=TAG, jobs=args.jobs, config=config)
        manifest = api.open_repository("direct", config=config).get_version(MODEL, TAG).manifest
        chunks = len({digest for entry in manifest.files for digest, _ in entry.chunks})

        for i in range(args.runs + 1):  # run 0: an untimed warm-up
            proxies = {
                "clean": FaultyProxy(endpoint, cut_gets=0, lose_puts=0),
                # A seed per run: the median is over different draws, as a real link would give.
                "stalling": FaultyProxy(
                    endpoint,
                    cut_gets=0,
                    lose_puts=0,
                    stall_rate=args.stall_rate,
                    stall_after=stall_after,
                    stall_anywhere=anywhere,
                    seed=args.seed + i,
                ),
            }
            try:
                write_config(config, {"direct": endpoint, **{k: p.url for k, p in proxies.items()}}, bucket)
                order = ["clean", "stalling"] if i % 2 == 0 else ["stalling", "clean"]
                for name in order:
                    dest = work / f"pulled-{name}"
                    seconds, stats = pull(args, config, name, dest)
                    same_files(src, dest)
                    shutil.rmtree(dest)
                    if i == 0:
                        continue
                    times[name].append(seconds)
                    end_limit = stats.pop("end_limit", None)
                    counts[name] += stats + proxy_counts(proxies[name], chunks)
                    gate = (
                        ""
                        if end_limit is None
                        else f" (gate: {stats['back_offs']} back-offs, limit {end_limit} at the end)"
                    )
                    print(f"run {i}/{args.runs}: {name} {seconds:.2f}s{gate}", file=sys.stderr)
                    if args.trace is not None:
                        trace(proxies[name], args.trace)
            finally:
                for p in proxies.values():
                    p.close()
    finally:
        if proc is not None:
            stop(proc)
        shutil.rmtree(work, ignore_errors=True)

    how = "`aim_cli model pull --quiet`" if args.cli else "`aim_cli.pull.pipeline.pull` (in process)"
    where = "at a random point of the body" if anywhere else f"after {stall_after / 1024:.0f} KiB"
    print(
        f"{size / MiB:.0f} MiB in {len(files)} files, {chunks} chunks; --jobs {args.jobs}; median of {args.runs} "
        f"runs; {args.stall_rate:.0%} of GET responses stall {where} (seeds "
        f"{args.seed + 1}..{args.seed + args.runs}); stall deadline {DEFAULT_STALL_SECONDS:g} s (default); moto on "
        f"127.0.0.1; {os.cpu_count()} CPUs, Python {platform.python_version()}; pull via {how}"
    )
    print(
        f"counters are sums over the {args.runs} runs"
        + ("" if not args.cli else "; backend counters need the in-process mode (no --cli)")
    )
    print()
    print(
        "| pull through | median s | worst s | MiB/s | stalled responses | extra blob GETs | stalls detected "
        "| hedges (won) | of which mid-body | silent copies closed | abandoned | left hanging | gate back-offs |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name in ("clean", "stalling"):
        t, c = statistics.median(times[name]), counts[name]
        backend = (
            ("-",) * 5
            if args.cli
            else (
                c["stalls"],
                f"{c['hedges']} ({c['hedges_won']})",
                c["hedges_mid_body"],
                c["silent_closed"],
                c["abandoned"],
            )
        )
        print(
            f"| {name} proxy | {t:.2f} | {max(times[name]):.2f} | {size / MiB / t:.0f} | "
            f"{c['stalled']} | {c['extra_gets']} | "
            + " | ".join(map(str, backend))
            + f" | {c['stalls_left_hanging']} | {'-' if args.cli else c['back_offs']} |"
        )
    clean = statistics.median(times["clean"])
    ratio, worst = statistics.median(times["stalling"]) / clean, max(times["stalling"]) / clean
    verdict = "met" if ratio <= TARGET_RATIO else "MISSED"
    print(f"\nstalling / clean = {ratio:.2f} (median), {worst:.2f} (worst stalling run / clean median)")
    print(f"target: at most {TARGET_RATIO:g}x: {verdict}" + ("" if worst <= TARGET_RATIO else "; worst run over it"))


if __name__ == "__main__":
    main()
