"""Real interruptions of real processes: a pull killed with SIGKILL resumes; push and pull draw a
progress bar on a terminal and stay quiet otherwise."""

import json
import os
import pty
import select
import subprocess

from aim_cli.format import blob_codec
from tests.helpers import AIM, base_env, describe, file_contents, random_bytes, sigkill_when, work_files, write_model

MiB = 1 << 20


def _config(tmp_path):
    cfg = tmp_path / "model_repos.yaml"
    cfg.write_text("repos:\n  r: {type: local, path: repo}\n")
    return cfg


def _aim(cfg, *args, **kw):
    return subprocess.run(
        [str(AIM), "--config", str(cfg), *args],
        capture_output=True,
        text=True,
        env=base_env(),
        stdin=subprocess.DEVNULL,
        timeout=120,
        **kw,
    )


def test_pull_killed_with_sigkill_resumes_and_fetches_only_the_rest(tmp_path):
    cfg = _config(tmp_path)
    src = write_model(tmp_path / "src", {f"shard-{i}.bin": random_bytes(16 * MiB, i) for i in range(4)})
    assert _aim(cfg, "model", "push", "r", "m", str(src), "--tag", "v1", "--quiet").returncode == 0
    dest = tmp_path / "dest"
    partial = dest / ".aim" / "partial"

    def written() -> int:  # allocated blocks: partial files are sparse until filled
        total = 0
        for p in partial.glob("*") if partial.exists() else ():
            try:
                total += p.stat().st_blocks * 512
            except FileNotFoundError:  # completed and renamed meanwhile
                pass
        return total

    # Killed once a quarter of the bytes are written.
    sigkill_when(
        ["--config", cfg, "model", "pull", "r", "m", dest, "--tag", "v1", "--quiet", "--jobs", "1"],
        lambda: written() >= 16 * MiB,
        what="pull",
    )
    # Nothing incomplete under a final name; the dead process's lock is left behind.
    for rel, (data, _) in file_contents(dest).items():
        assert data == (src / rel).read_bytes()
    assert (dest / ".aim" / "pull.lock").exists()

    rerun = _aim(cfg, "model", "pull", "r", "m", str(dest), "--tag", "v1", "--json")
    assert rerun.returncode == 0, describe(rerun)
    result = json.loads(rerun.stdout)
    # At most a chunk (4 MiB at most) of the written quarter is fetched again; fetched_bytes counts
    # those chunks as stored, which is never more than each chunk and its blob header.
    assert result["fetched_raw_bytes"] <= result["total_size"] - 16 * MiB + 4 * MiB
    assert result["fetched_bytes"] <= result["fetched_raw_bytes"] + blob_codec.HEADER_SIZE * result["fetched_chunks"]
    assert result["reused_bytes"] >= 16 * MiB - 4 * MiB
    assert file_contents(dest) == file_contents(src)
    assert work_files(dest) == []


def _run_on_a_terminal(args) -> tuple[int, bytes]:
    """Run with stderr (and stdin, stdout) on a pseudo-terminal; return (exit code, what it drew)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(args, stdin=slave, stdout=slave, stderr=slave, env=base_env(), close_fds=True)
    os.close(slave)
    out = b""
    while True:
        ready, _, _ = select.select([master], [], [], 60)
        if not ready:
            proc.kill()
            break
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        out += data
    os.close(master)
    return proc.wait(timeout=60), out


def test_progress_bars_on_a_terminal_only(tmp_path):
    cfg = _config(tmp_path)
    src = write_model(tmp_path / "src", {"w.bin": random_bytes(8 * MiB, 1)})
    code, drawn = _run_on_a_terminal(
        [str(AIM), "--config", str(cfg), "model", "push", "r", "m", str(src), "--tag", "v1"]
    )
    assert code == 0, drawn
    assert b"push" in drawn and b"8.0/8.0 MiB" in drawn and b"pushed m:v1" in drawn
    code, drawn = _run_on_a_terminal([str(AIM), "--config", str(cfg), "model", "pull", "r", "m", str(tmp_path / "d")])
    assert code == 0, drawn
    assert b"pull" in drawn and b"8.0/8.0 MiB" in drawn and b"pulled m:v1" in drawn
    # --quiet on a terminal, and no terminal at all: no bar.
    code, drawn = _run_on_a_terminal(
        [str(AIM), "--config", str(cfg), "model", "pull", "r", "m", str(tmp_path / "d2"), "--quiet"]
    )
    assert code == 0 and b"MiB/s" not in drawn and b"8.0/8.0" not in drawn
    res = _aim(cfg, "model", "pull", "r", "m", str(tmp_path / "d3"))
    assert res.returncode == 0 and res.stderr == ""
