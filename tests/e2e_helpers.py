"""Helpers for the end-to-end tests: run the installed console script, build model directories,
snapshot directory trees and compare them.

The console script is the one a user runs: ``<venv>/bin/aim_cli``, next to the test's Python.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import stat
import subprocess
import sys
from pathlib import Path

AIM = Path(sys.executable).parent / "aim_cli"

#: Variables that change how aim_cli finds its config or cache: never inherited by a test run.
_SCRUBBED_ENV = ("AIM_CONFIG", "AIM_CACHE_DIR")


def base_env(**extra: str) -> dict[str, str]:
    """The environment of a CLI run: this process's (so the S3 fixture's AWS variables are
    inherited) without AIM_CONFIG / AIM_CACHE_DIR, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED_ENV}
    env.update(extra)
    return env


def run(args, *, cwd, env: dict[str, str] | None = None, prefix=(), timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``aim_cli ARGS`` with no terminal on stdin and both outputs captured as text."""
    return subprocess.run(
        [*prefix, str(AIM), *map(str, args)],
        cwd=cwd,
        env=base_env() if env is None else env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def describe(res: subprocess.CompletedProcess) -> str:
    return f"exit {res.returncode}\n--- stdout\n{res.stdout}\n--- stderr\n{res.stderr}"


def ok(res: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert res.returncode == 0, describe(res)
    assert "Traceback" not in res.stderr, describe(res)
    return res


def one_line_error(res: subprocess.CompletedProcess, code: int, *needles: str) -> str:
    """Assert exit ``code``, exactly one line on stderr (no traceback), nothing on stdout, and
    that the line contains every one of ``needles`` (case-insensitive). Return the line."""
    assert res.returncode == code, describe(res)
    assert "Traceback" not in res.stderr, describe(res)
    line = res.stderr.strip()
    assert line, describe(res)
    assert line.count("\n") == 0, f"stderr is not one line:\n{describe(res)}"
    assert res.stdout == "", describe(res)
    # "what went wrong; what to do": the CLI's one-line format carries a hint after "; ".
    assert line.startswith("error: ") and "; " in line, f"no hint in {line!r}"
    for needle in needles:
        assert needle.lower() in line.lower(), f"{needle!r} not in {line!r}"
    return line


# -- model directories ------------------------------------------------------------------------
def write_file(path: Path, data: bytes, mode: int = 0o644) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.chmod(path, mode)
    return path


def random_bytes(seed: int, n: int) -> bytes:
    return random.Random(seed).randbytes(n)


def make_model(root: Path, *, seed: int = 1, weights: int = 2 * 1024 * 1024) -> Path:
    """A small model directory: a large random 'weights' file, a second binary, text files with
    different modes, an empty file and a nested directory."""
    write_file(root / "weights" / "model.safetensors", random_bytes(seed, weights))
    write_file(root / "weights" / "extra.bin", random_bytes(seed + 1000, 300 * 1024))
    write_file(root / "config.json", b'{"hidden_size": 768, "layers": 12}\n')
    write_file(root / "run.sh", b"#!/bin/sh\necho run\n", 0o755)
    write_file(root / "secret.key", b"not really a secret\n", 0o600)
    write_file(root / "empty.txt", b"")
    write_file(root / "deep" / "a" / "b" / "c.txt", b"deep file\n", 0o640)
    return root


def tree(root: Path, *, mtimes: bool = False, skip_aim: bool = False) -> dict[str, tuple]:
    """Every entry under ``root`` (not following symlinks): directories, files (mode, size,
    sha256, optionally mtime) and symlinks (their target)."""
    out: dict[str, tuple] = {}
    root = Path(root)
    for dirpath, dirnames, filenames in os.walk(root):
        if skip_aim and Path(dirpath) == root:
            dirnames[:] = [d for d in dirnames if not d.startswith(".aim")]
            filenames = [f for f in filenames if not f.startswith(".aim")]
        for name in sorted(dirnames + filenames):
            p = Path(dirpath) / name
            rel = p.relative_to(root).as_posix()
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(p))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", st.st_mtime_ns) if mtimes else ("dir",)
            elif stat.S_ISREG(st.st_mode):
                entry = ("file", stat.S_IMODE(st.st_mode), st.st_size, hashlib.sha256(p.read_bytes()).hexdigest())
                out[rel] = entry + (st.st_mtime_ns,) if mtimes else entry
            else:
                out[rel] = ("special", stat.S_IFMT(st.st_mode))
    return out


def files_of(root: Path) -> dict[str, tuple]:
    """Regular files only (mode, size, sha256) outside aim_cli's ``.aim`` working directory."""
    return {k: v for k, v in tree(root, skip_aim=True).items() if v[0] == "file"}


def assert_same_tree(src: Path, dest: Path) -> None:
    """``dest`` holds exactly the files of ``src``, byte for byte and mode for mode, the same
    directories, and no aim_cli working files."""
    a, b = tree(src), tree(dest)
    assert a.keys() == b.keys(), f"only in source: {sorted(a.keys() - b.keys())}; only in dest: {sorted(b.keys() - a.keys())}"
    for k in a:
        assert a[k] == b[k], f"{k}: {a[k]} != {b[k]}"


# -- parsing human output --------------------------------------------------------------------------
_UNITS = {"byte": 1, "bytes": 1, "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4}


def parse_size(text: str) -> float:
    """'2.9 MiB' -> 3040870.4; '0 Bytes' -> 0 (humanize's binary units)."""
    m = re.fullmatch(r"([\d.]+)\s*(\w+)", text.strip())
    assert m, text
    return float(m.group(1)) * _UNITS[m.group(2).lower()]


PUSH_LINE = re.compile(
    r"pushed (?P<model>[^:\s]+):(?P<tag>\S+): (?P<files>\d+) files, (?P<total>[\d.]+ \w+), "
    r"(?P<new>[\d.]+ \w+) new \((?P<dedup>[\d.]+)% deduplicated\), digest (?P<digest>[0-9a-f]{64}), [\d.]+s"
)
