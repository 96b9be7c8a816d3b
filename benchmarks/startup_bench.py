"""What one `aim_cli` command costs to start (docs/design.md §13): wall time and import time.

    uv run python benchmarks/startup_bench.py            # 10 runs of each command
    uv run python benchmarks/startup_bench.py --aim OLD/.venv/bin/aim_cli --aim .venv/bin/aim_cli
    uv run python benchmarks/startup_bench.py --bytecode # aim_cli's own modules from cached bytecode
    uv run python benchmarks/startup_bench.py --s3       # an S3 repository (a local moto server)
    uv run python benchmarks/startup_bench.py --s3 --ttfb 0.03   # ... answering 30 ms after each request

Each command runs through the installed console script, as a user (and the test suite) runs it,
against a local repository in a temporary directory holding one tiny model. The commands:
``--help``, ``info``, ``model list``, ``model versions``, ``model push`` (a re-push of the version
already stored: nothing to upload) and ``model pull`` (into a directory that already holds it:
nothing to fetch).

An editable install (``uv sync`` of this repository) leaves aim_cli's own modules without
compiled bytecode, and with ``PYTHONDONTWRITEBYTECODE`` set each start compiles them again;
an installed wheel has them compiled. ``--bytecode`` measures that case: every module's bytecode
is cached under a temporary ``PYTHONPYCACHEPREFIX`` (written by a first, unmeasured run).

``--s3`` puts the repository in a bucket of a moto server on 127.0.0.1 (started as
``s3_bench.py`` starts it, with dummy credentials in the environment) and measures the commands
that reach it, after baselines in fresh processes of the same Python, measured alike in the
same run: ``python -c pass`` (the interpreter alone), ``import boto3``, a plain boto3 client
(``boto3.client("s3", ...)``) and that client's first request (a one-key ``ListObjectsV2``, as
aim_cli's access check), and the same with botocore alone (``botocore.session.Session()``).
With ``--ttfb SECONDS`` every request goes through ``shaping_proxy.py``, whose answers come that
long after the request began, as from a distant store: then the round trips a command waits for
one after the other show.

With several ``--aim`` console scripts (two builds, before and after a change), their runs
alternate, so that other work on the machine weighs on each alike. For each, the table prints
the median over the runs of
- ``wall``: the wall time of the whole process (interpreter start to exit);
- ``cpu``: its user + system CPU time (less disturbed than wall time by other work on the machine);
- ``aim_cli imports``: the sum of the cumulative import times (``-X importtime``) of the top-level
  imports of aim_cli modules, with all they import in turn (click, yaml, msgspec, ...);
- ``all imports``: the same over every top-level import (the interpreter's own start included);
- ``modules``: how many modules are loaded at exit (from a separate ``-X importtime`` run, which
  lists each module the first time it is imported).
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

AIM = Path(sys.executable).parent / "aim_cli"  # the console script beside this Python
#: ``import time: <self us> | <cumulative us> | <indent><name>``
_LINE = re.compile(r"^import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)$")

#: The commands that reach the repository's storage (``--s3`` measures these).
S3_COMMANDS = ("model list", "model versions", "model push (no-op)", "model pull (no-op)")
COMMANDS: list[tuple[str, list[str]]] = [
    ("--help", ["--help"]),
    ("info", ["info"]),
    ("model list", ["model", "list", "r"]),
    ("model versions", ["model", "versions", "r", "m"]),
    ("model push (no-op)", ["model", "push", "r", "m", "src", "--tag", "v1"]),
    ("model pull (no-op)", ["model", "pull", "r", "m", "dest", "--tag", "v1"]),
]


def _env(pycache: str | None) -> dict[str, str]:
    dropped = ("AIM_CONFIG", "AIM_CACHE_DIR", "PYTHONPROFILEIMPORTTIME", "PYTHONPYCACHEPREFIX")
    env = {k: v for k, v in os.environ.items() if k not in dropped}
    env["AIM_CACHE_DIR"] = "cache"
    if pycache is not None:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = pycache
    return env


def _cpu_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _run(aim: Path, args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(
        [str(aim), *args], cwd=cwd, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False
    )
    if res.returncode != 0:
        sys.exit(f"{aim} {' '.join(args)}: exit {res.returncode}\n{res.stderr}")
    return res


def _baselines(endpoint: str, bucket: str) -> list[tuple[str, list[str]]]:
    """What any Python program pays before its first S3 request (``--s3``): ``python -c CODE``."""
    where = f"endpoint_url={endpoint!r}, region_name='us-east-1'"
    first = f".list_objects_v2(Bucket={bucket!r}, Prefix='repo/', MaxKeys=1)"
    return [
        ("python -c pass", ["-c", "pass"]),
        ("import boto3", ["-c", "import boto3"]),
        ("boto3 client", ["-c", f"import boto3; boto3.client('s3', {where})"]),
        ("boto3 client + LIST", ["-c", f"import boto3; boto3.client('s3', {where}){first}"]),
        (
            "botocore client + LIST",
            ["-c", f"import botocore.session as s; s.Session().create_client('s3', {where}){first}"],
        ),
    ]


def _setup(aim: Path, work: Path, env: dict[str, str], s3: tuple[str, str] | None = None) -> None:
    (work / "model_repos.yaml").write_text("repos: {}\n")
    if s3 is None:
        _run(aim, ["repo", "create", "r", "--type", "local", "--path", "store"], work, env)
    else:
        endpoint, bucket = s3
        where = ["--path", f"s3://{bucket}/repo", "--endpoint-url", endpoint, "--region", "us-east-1"]
        _run(aim, ["repo", "create", "r", "--type", "s3", *where], work, env)
    (work / "src").mkdir()
    (work / "src" / "config.json").write_text('{"hidden_size": 8}\n')
    (work / "src" / "weights.bin").write_bytes(bytes(range(256)) * 16)
    _run(aim, ["model", "push", "r", "m", "src", "--tag", "v1"], work, env)
    _run(aim, ["model", "pull", "r", "m", "dest", "--tag", "v1"], work, env)


def _imports(aim: Path, args: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float, int]:
    """(aim_cli's top-level imports, every top-level import, modules imported), times in ms."""
    res = _run(aim, args, cwd, env | {"PYTHONPROFILEIMPORTTIME": "1"})
    ours = total = 0
    modules = 0
    for line in res.stderr.splitlines():
        m = _LINE.match(line)
        if m is None:
            continue
        modules += 1
        if m.group(3) == " ":  # top level: one space after the bar
            cumulative = int(m.group(2))
            total += cumulative
            name = m.group(4)
            if name == "aim_cli" or name.startswith("aim_cli."):
                ours += cumulative
    return ours / 1000, total / 1000, modules


def _measure(aim: Path, args: list[str], work: Path, env: dict[str, str]) -> tuple[float, ...]:
    """One run of each kind: (wall ms, cpu ms, aim_cli imports ms, all imports ms, modules)."""
    start, cpu = time.perf_counter(), _cpu_children()
    _run(aim, args, work, env)
    wall, cpu = (time.perf_counter() - start) * 1000, (_cpu_children() - cpu) * 1000
    return (wall, cpu, *_imports(aim, args, work, env))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument(
        "--aim", type=Path, action="append", help="a console script to measure (repeatable; default: this venv's)"
    )
    parser.add_argument("--bytecode", action="store_true", help="aim_cli's modules from cached bytecode")
    parser.add_argument("--s3", action="store_true", help="an S3 repository on a local moto server, and baselines")
    parser.add_argument("--ttfb", type=float, help="with --s3: seconds to each answer's first byte (a proxy)")
    opts = parser.parse_args()
    builds = [p.absolute() for p in opts.aim or [AIM]]
    with tempfile.TemporaryDirectory(prefix="aim-startup-") as tmp:
        work = Path(tmp) / "work"
        work.mkdir()
        stop_server, s3 = None, None
        try:
            if opts.s3:
                stop_server, s3 = _start_s3(Path(tmp), opts.ttfb)
            env = _env(str(Path(tmp) / "pycache") if opts.bytecode else None)
            _setup(builds[-1], work, env, s3)
            commands = [(label, args) for label, args in COMMANDS if s3 is None or label in S3_COMMANDS]
            if opts.bytecode:
                for aim in builds:
                    for _, args in commands:
                        _run(aim, args, work, env)  # writes the bytecode of every module the command loads
            ttfb = f", answers {opts.ttfb * 1000:g} ms after each request" if s3 and opts.ttfb else ""
            print(f"median of {opts.runs} runs" + (", bytecode cached" if opts.bytecode else "") + ttfb)
            for i, aim in enumerate(builds):
                print(f"  build {i}: {aim}")
            print(f"{'command':<24} {'build':>5} " + " ".join(f"{c:>{max(len(c), 7)}}" for c in COLUMNS))
            if s3 is not None:
                for label, args in _baselines(*s3):
                    _table(label, [Path(sys.executable)], args, work, env, opts.runs, "-")
            for label, args in commands:
                _table(label, builds, args, work, env, opts.runs)
        finally:
            if stop_server is not None:
                stop_server()


COLUMNS = ("wall ms", "cpu ms", "aim_cli imports ms", "all imports ms", "modules")


def _table(label: str, builds: list[Path], args: list[str], work: Path, env: dict[str, str], runs: int, name: str = ""):
    """Print the medians of ``runs`` runs of ``args`` by each build, the builds' runs alternating."""
    measured: list[list[tuple[float, ...]]] = [[] for _ in builds]
    for _ in range(runs):
        for i, aim in enumerate(builds):
            measured[i].append(_measure(aim, args, work, env))
    for i, rows in enumerate(measured):
        medians = [statistics.median(column) for column in zip(*rows, strict=True)]
        cells = " ".join(f"{m:>{max(len(c), 7)}.0f}" for c, m in zip(COLUMNS, medians, strict=True))
        print(f"{label:<24} {name or i:>5} {cells}")


def _start_s3(tmp: Path, ttfb: float | None):
    """moto's S3 server as s3_bench.py starts it (dummy credentials in os.environ), behind the
    shaping proxy with ``ttfb``, and a bucket: (what stops them, (endpoint, bucket))."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import s3_bench  # its launcher of moto's S3 server (and the tests' fixtures with it)
    import shaping_proxy

    (tmp / "s3").mkdir()
    proc, endpoint = s3_bench.start_moto(tmp / "s3")
    bucket = "startup-bench"
    s3_bench.client(endpoint, 1).create_bucket(Bucket=bucket)
    if not ttfb:
        return partial(s3_bench.stop, proc), (endpoint, bucket)
    proxy, endpoint = shaping_proxy.start(endpoint, ttfb)

    def stop() -> None:
        proxy.terminate()
        proxy.wait()
        if proxy.stdout is not None:
            proxy.stdout.close()
        s3_bench.stop(proc)

    return stop, (endpoint, bucket)


if __name__ == "__main__":
    main()
