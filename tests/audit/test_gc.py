"""aim_cli.audit.gc: plan, then delete exactly the blobs no manifest names; never a blob that a
concurrent push relies on; a push killed midway leaves only garbage that gc collects."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time

import pytest

from aim_cli import api
from aim_cli import push as pushmod
from aim_cli.audit import gc
from aim_cli.audit.check import check_repo
from aim_cli.errors import IntegrityError
from aim_cli.repository import leases
from tests.helpers import AIM, chunks_of, make_variant_model


def test_gc_frees_exactly_what_no_version_uses(repo, tmp_path):
    repo.push("m", make_variant_model(tmp_path / "v1", variant=1), "v1")
    repo.push("m", make_variant_model(tmp_path / "v2", variant=2), "v2")
    only_v1 = {
        d: s for d, s in chunks_of(repo.manifest("m", "v1")).items() if d not in chunks_of(repo.manifest("m", "v2"))
    }
    assert 0 < len(only_v1) < len(chunks_of(repo.manifest("m", "v1"))) / 2  # most chunks are shared

    deleted = api.delete_versions(repo.name, "m", ["v1"], config=str(repo.config))
    assert (deleted.tags, deleted.reclaimable_blobs, deleted.reclaimable_bytes) == (
        ["v1"],
        len(only_v1),
        sum(only_v1.values()),
    )
    before = repo.blobs()
    # gc deletes stored objects: it plans and frees their sizes (format 2: not the chunks' sizes).
    stored_only_v1 = {d: before[d] for d in only_v1}
    planned = []
    dry = gc.collect(repo.repository, dry_run=True, on_plan=planned.append)
    assert dry.plan.blobs == stored_only_v1 and dry.deleted == 0 and planned == [dry.plan]
    assert repo.blobs() == before

    result = gc.collect(repo.repository)
    assert (result.deleted, result.freed_bytes) == (len(only_v1), sum(stored_only_v1.values()))
    assert deleted.reclaimable_stored_bytes == result.freed_bytes  # what the deletion announced
    assert set(repo.blobs()) == set(before) - set(only_v1)
    report = check_repo(repo.repository, read_data=True)
    assert report.ok and report.unreferenced == 0 and report.versions == 1
    assert leases.read_leases(repo.repository) == []


def test_deleting_a_model_reclaims_only_what_other_models_do_not_use(repo, tmp_path):
    repo.push("a", make_variant_model(tmp_path / "a", variant=1), "v1")
    repo.push("b", make_variant_model(tmp_path / "b", variant=2), "v1")
    only_a = set(chunks_of(repo.manifest("a", "v1"))) - set(chunks_of(repo.manifest("b", "v1")))
    deleted = api.delete_versions(repo.name, "a", config=str(repo.config))
    assert deleted.tags == ["v1"] and deleted.reclaimable_blobs == len(only_a) > 0
    assert gc.collect(repo.repository).deleted == len(only_a)
    assert check_repo(repo.repository, read_data=True).ok


def test_gc_refuses_when_a_manifest_cannot_be_read(repo, tmp_path):
    repo.push("m", make_variant_model(tmp_path / "v1"), "v1")
    repo.repository.delete_version("m", "v1")
    repo.repository.backend.put("models/m/versions/v2.json", b"{broken")
    before = repo.blobs()
    with pytest.raises(IntegrityError, match="m:v2"):
        gc.collect(repo.repository)
    assert repo.blobs() == before and leases.read_leases(repo.repository) == []


def _lease_seen(repository, kind: str, done: list, other: str, deadline: float = 30.0) -> None:
    """Poll until a lease of ``kind`` is visible or ``other`` already finished."""
    end = time.monotonic() + deadline
    while other not in done and not any(x.kind == kind for x in leases.read_leases(repository)):
        assert time.monotonic() < end, f"no {kind} lease appeared"
        time.sleep(0.005)  # a pause between polls, not a synchronisation


def test_gc_racing_pushes_that_reuse_the_chunks_it_collects(repo, tmp_path):
    """Each round deletes the only version, then pushes a variant that reuses almost all of its
    chunks while gc runs. Without leases the push finds the chunks stored, skips them, and gc
    deletes them under it; with leases every version that exists stays whole. Rounds rotate
    between a free race, the push taking its lease first (gc must wait, then see the new
    manifest) and gc taking its lease first (the push must wait, then upload again)."""
    rounds = 24 if repo.kind == "local" else 6
    repository = repo.repository
    repo.push("m", make_variant_model(tmp_path / "v0", seed=5, variant=0, size=120_000), "v0")
    for i in range(1, rounds + 1):
        src = make_variant_model(tmp_path / f"v{i}", seed=5, variant=i, size=120_000)
        repository.delete_version("m", f"v{i - 1}")
        mode = ("race", "push-first", "gc-first")[i % 3]
        start = threading.Barrier(2)
        done, failures = [], []

        def run(name, fn, after=None):
            try:
                start.wait()
                if after:
                    after()
                fn()
                done.append(name)
            except BaseException as e:  # re-raised below, in the test's thread
                failures.append(e)

        push_after = (lambda: _lease_seen(repository, leases.EXCLUSIVE, done, "gc")) if mode == "gc-first" else None
        gc_after = (lambda: _lease_seen(repository, leases.SHARED, done, "push")) if mode == "push-first" else None
        threads = [
            threading.Thread(
                target=run, args=("push", lambda: pushmod.push(repository, "m", f"v{i}", src), push_after)
            ),
            threading.Thread(target=run, args=("gc", lambda: gc.collect(repository, wait=60), gc_after)),
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not failures, failures
        report = check_repo(repository, read_data=True)
        assert report.ok, (i, mode, report.broken, report.problems)
        assert report.versions == 1 and repository.has_version("m", f"v{i}")
    assert leases.read_leases(repository) == []


def test_a_push_killed_midway_leaves_garbage_that_gc_collects(repo, tmp_path):
    size = 16 * 2**20 if repo.kind == "local" else 2 * 2**20  # several seconds of uploading either way
    src = tmp_path / "big"
    src.mkdir()
    (src / "weights.bin").write_bytes(os.urandom(size))
    proc = subprocess.Popen(
        [
            AIM,
            "--config",
            str(repo.config),
            "model",
            "push",
            repo.name,
            "m",
            str(src),
            "--tag",
            "v1",
            "--quiet",
            "--jobs",
            "2",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while next(repo.repository.iter_blobs(), None) is None:  # poll until uploads have begun
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline, "the push stored no blob"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    assert not repo.repository.has_version("m", "v1"), "the push finished before it could be killed"
    assert len(leases.read_leases(repo.repository)) == 1  # the dead push's lease is left behind

    check = repo.cli("repo", "check", repo.name, "--json")
    assert check.returncode == 0, check.stdout + check.stderr
    report = json.loads(check.stdout)
    assert report["ok"] and report["versions"] == 0 and report["unreferenced"] > 0

    collected = repo.cli("repo", "gc", repo.name, "--json")  # the dead pid's lease is stale at once
    assert collected.returncode == 0, collected.stderr
    assert json.loads(collected.stdout)["deleted"] == report["unreferenced"]

    after = repo.cli("repo", "check", repo.name, "--read-data", "--json")
    assert after.returncode == 0 and json.loads(after.stdout)["unreferenced"] == 0
    assert leases.read_leases(repo.repository) == []


def test_gc_removes_old_temp_files_of_killed_writes_only(tmp_path, monkeypatch):
    """A local push killed between writing a blob's temp file and renaming it leaves the temp
    file, invisible to list(); gc removes it once older than the lease timeout, never a young one."""
    from aim_cli.audit import gc
    from aim_cli.backends.local import LocalBackend
    from aim_cli.repository import Repository

    monkeypatch.setenv("AIM_LEASE_TIMEOUT", "60")
    repository = Repository(LocalBackend(tmp_path / "repo"), "r")
    repository.init()
    old = tmp_path / "repo/blobs/ab/.tmp-ab12.0123456789ab"
    young = tmp_path / "repo/blobs/cd/.tmp-cd34.0123456789ab"
    for p in (old, young):
        p.parent.mkdir(parents=True)
        p.write_bytes(b"x" * 100)
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    result = gc.collect(repository)
    assert result.incomplete == (1, 100)
    assert not old.exists() and young.exists()
    assert [info.key for info in repository.backend.list("blobs/")] == []
