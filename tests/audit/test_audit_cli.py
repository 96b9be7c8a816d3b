"""The audit commands end to end, through the real console script: model info/verify, pull
--digest, repo check/gc, the reclaimable bytes of deletions, and exit codes 4 and 5."""

from __future__ import annotations

import json
import os
import socket
import time

import blake3
import humanize

from aim_cli.repository import leases
from tests.helpers import LOCAL_ONLY, chunks_of, make_variant_model


@LOCAL_ONLY  # reads one manifest: nothing backend-specific
def test_model_info_shows_digest_and_every_file(repo, tmp_path):
    src = make_variant_model(tmp_path / "src")
    repo.push("m", src, "v1")
    digest = repo.repository.get_version("m", "v1").digest

    shown = repo.cli("model", "info", repo.name, "m", "--tag", "v1", "--json")
    assert shown.returncode == 0, shown.stderr
    info = json.loads(shown.stdout)
    assert info["digest"] == digest and info["tag"] == "v1" and "@" in info["created_by"]
    assert info["total_size"] == sum(p.stat().st_size for p in src.iterdir())
    assert {(f["path"], f["size"], f["blake3"]) for f in info["files"]} == {
        (p.name, p.stat().st_size, blake3.blake3(p.read_bytes()).hexdigest()) for p in src.iterdir()
    }

    text = repo.cli("model", "info", repo.name, "m", "--tag", "v1").stdout
    assert digest in text and f"{blake3.blake3((src / 'weights.bin').read_bytes()).hexdigest()}  weights.bin" in text


def test_verify_and_check_exit_5_on_damage(repo, tmp_path):
    repo.push("m", make_variant_model(tmp_path / "src"), "v1")
    weights = repo.manifest("m", "v1").files[1]
    assert weights.path == "weights.bin"
    intact = repo.cli("model", "verify", repo.name, "m", "--tag", "v1")
    assert intact.returncode == 0 and "intact" in intact.stdout

    corrupt, gone = weights.chunks[3][0], weights.chunks[5][0]
    repo.flip_byte(corrupt, offset=7)
    repo.delete_blob(gone)
    verified = repo.cli("model", "verify", repo.name, "m", "--tag", "v1")
    assert verified.returncode == 5, verified.stderr
    assert f"corrupt   blob {corrupt}" in verified.stdout and f"missing   blob {gone}" in verified.stdout
    assert "files: weights.bin" in verified.stdout and "2 of" in verified.stderr

    checked = repo.cli("repo", "check", repo.name)  # sizes only: the missing blob
    assert checked.returncode == 5 and gone in checked.stdout and corrupt not in checked.stdout
    full = repo.cli("repo", "check", repo.name, "--read-data", "--json")
    assert full.returncode == 5
    problems = {(p["digest"], p["problem"]) for p in json.loads(full.stdout)["problems"]}
    assert problems == {(corrupt, "corrupt"), (gone, "missing")}


@LOCAL_ONLY  # the command is the same on S3; test_verify.py pins the digest on both
def test_pull_with_a_wrong_digest_refuses_and_the_right_one_pulls(repo, tmp_path):
    repo.push("m", make_variant_model(tmp_path / "src"), "v1")
    digest = repo.repository.get_version("m", "v1").digest
    dest = tmp_path / "dest"
    wrong = ("f" if digest[0] != "f" else "e") + digest[1:]
    refused = repo.cli("model", "pull", repo.name, "m", str(dest), "--tag", "v1", "--digest", wrong)
    assert refused.returncode == 5 and "pinned" in refused.stderr
    assert not dest.exists() or not any(dest.iterdir())
    pulled = repo.cli("model", "pull", repo.name, "m", str(dest), "--tag", "v1", "--digest", digest, "-q")
    assert pulled.returncode == 0, pulled.stderr
    assert sorted(p.name for p in dest.iterdir() if p.name != ".aim") == ["config.json", "weights.bin"]


@LOCAL_ONLY
def test_verify_local_lists_each_difference(repo, tmp_path):
    repo.push("m", make_variant_model(tmp_path / "src"), "v1")
    dest = tmp_path / "deploy"
    assert repo.cli("model", "pull", repo.name, "m", str(dest), "--tag", "v1", "-q").returncode == 0
    same = repo.cli("model", "verify", repo.name, "m", "--tag", "v1", "--local", str(dest))
    assert same.returncode == 0 and "matches" in same.stdout

    (dest / "config.json").write_text('{"seed": 2, "variant": 0}')
    (dest / "weights.bin").unlink()
    (dest / "notes.txt").write_text("x")
    (dest / ".aim").mkdir(exist_ok=True)  # a pull leaves its index there
    (dest / ".aim" / "pull.lock").write_text("{}")
    differs = repo.cli("model", "verify", repo.name, "m", "--tag", "v1", "--local", str(dest))
    assert differs.returncode == 5
    assert differs.stdout.splitlines() == ["modified  config.json", "missing   weights.bin", "extra     notes.txt"]


def test_deletions_report_reclaimable_bytes_and_gc_frees_them(repo, tmp_path):
    repo.push("m", make_variant_model(tmp_path / "v1", variant=1), "v1")
    repo.push("m", make_variant_model(tmp_path / "v2", variant=2), "v2")
    only_v1 = set(chunks_of(repo.manifest("m", "v1")).items()) - set(chunks_of(repo.manifest("m", "v2")).items())
    freed = sum(s for _, s in only_v1)
    stored = sum(repo.blobs()[d] for d, _ in only_v1)

    deleted = repo.cli("model", "delete-version", repo.name, "m", "--tag", "v1")
    assert deleted.returncode == 0
    size = lambda n: humanize.naturalsize(n, binary=True)  # noqa: E731
    assert f"reclaimable: {len(only_v1)} blobs, {size(stored)} stored ({size(freed)} of chunks)" in deleted.stdout
    assert f"aim_cli repo gc {repo.name}" in deleted.stdout

    before = repo.blobs()
    dry = repo.cli("repo", "gc", repo.name, "--dry-run")
    assert dry.returncode == 0 and f"plan: delete {len(only_v1)} unreferenced blobs" in dry.stdout
    assert "nothing deleted" in dry.stdout and repo.blobs() == before
    collected = repo.cli("repo", "gc", repo.name)
    assert collected.returncode == 0 and f"deleted {len(only_v1)} blobs" in collected.stdout
    assert set(repo.blobs()) == set(before) - {d for d, _ in only_v1}

    v2 = chunks_of(repo.manifest("m", "v2"))
    v2_stored = sum(repo.blobs()[d] for d in v2)
    gone = repo.cli("model", "delete", repo.name, "m", "--yes")
    assert gone.returncode == 0 and "(1 version)" in gone.stdout
    assert f"{len(v2)} blobs, {size(v2_stored)} stored ({size(sum(v2.values()))} of chunks)" in gone.stdout
    check = json.loads(repo.cli("repo", "check", repo.name, "--json").stdout)
    assert check["versions"] == 0 and check["unreferenced"] == len(before) - len(only_v1)


def test_lease_conflicts_exit_4(repo, tmp_path):
    def plant(kind: str) -> None:
        now = time.time()
        body = {
            "id": kind,
            "kind": kind,
            "command": "gc" if kind == leases.EXCLUSIVE else "push",
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "created": now,
            "refreshed": now,
        }
        repo.repository.backend.put(leases.lease_key(kind), json.dumps(body).encode())

    plant(leases.EXCLUSIVE)  # a gc in progress (this test process is alive)
    pushed = repo.cli(
        "model",
        "push",
        repo.name,
        "m",
        str(make_variant_model(tmp_path / "src")),
        "--tag",
        "v1",
        env={"AIM_PUSH_WAIT": "0.2"},
    )
    assert pushed.returncode == 4 and f"gc by pid {os.getpid()}" in pushed.stderr
    assert not repo.repository.has_version("m", "v1")
    repo.repository.backend.delete(leases.lease_key(leases.EXCLUSIVE))

    plant(leases.SHARED)  # a push in progress
    collected = repo.cli("repo", "gc", repo.name, env={"AIM_GC_WAIT": "0.2"})
    assert collected.returncode == 4 and f"push by pid {os.getpid()}" in collected.stderr
    assert [x.id for x in leases.read_leases(repo.repository)] == [leases.SHARED]
