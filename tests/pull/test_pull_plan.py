"""Plan, then execute: the typed plan of aim_cli/pull_plan.py, `model pull --dry-run` (which
creates and changes nothing in DEST) and the ordered chunk sources of aim_cli/chunk_sources.py."""

from __future__ import annotations

import json

import pytest

from aim_cli import api
from aim_cli.chunking.cdc import ChunkingParams, iter_chunks
from aim_cli.errors import BlobMissingError
from aim_cli.format.repo_format import RepoFormat
from aim_cli.pull import pipeline
from aim_cli.pull.pipeline import pull
from aim_cli.pull.plan import FETCH, KEEP, LOCAL, PullPlan
from aim_cli.pull.sources import CacheSource, LocalFiles, RepositorySource, SourceChain
from aim_cli.repository import Repository
from tests.fakes import CountingBackend
from tests.helpers import LOCAL_ONLY, file_contents, ok, one_line_error, random_bytes, tree, without_index, write_model

#: Nothing here depends on the storage format: no format 1 run of the `repo` fixture (conftest.py).
pytestmark = pytest.mark.format_neutral

FILE_KEYS = {"path", "size", "action", "reuse_bytes", "fetch_raw_bytes"}
TOTAL_KEYS = {
    "files",
    "size",
    "keep_files",
    "keep_bytes",
    "local_files",
    "fetch_files",
    "reuse_bytes",
    "fetch_raw_bytes",
    "fetch_chunks",
    "delta_chunks",
    "delta_bases",
    "delete_files",
    "delete_bytes",
    "space_needed",
    "space_available",
}


def versions(repo, tmp_path):
    """v1 and v2: v2 keeps a.txt, changes the end of big.bin, renames moved.bin, adds new.txt."""
    big = random_bytes(200_000, 1)
    v1 = write_model(
        tmp_path / "v1",
        {
            "a.txt": b"same\n",
            "big.bin": big,
            "dir/moved.bin": random_bytes(50_000, 2),
            "old/only-v1.txt": b"gone in v2\n",
        },
    )
    v2 = write_model(
        tmp_path / "v2",
        {
            "a.txt": b"same\n",
            "big.bin": big[:150_000] + random_bytes(50_000, 3),
            "renamed.bin": (v1 / "dir/moved.bin").read_bytes(),
            "new.txt": b"new\n",
        },
    )
    repo.push("m", v1, "v1")
    repo.push("m", v2, "v2")
    return v1, v2


def dry_run(repo, dest, *args, tag="v2"):
    return repo.cli("model", "pull", repo.name, "m", str(dest), "--tag", tag, "--dry-run", *args)


def test_dry_run_changes_nothing_in_dest_and_creates_nothing(repo, tmp_path):
    versions(repo, tmp_path)
    dest = tmp_path / "out"
    ok(repo.cli("model", "pull", repo.name, "m", str(dest), "--tag", "v1"))
    (dest / "mine.txt").write_bytes(b"mine\n")
    before = tree(dest, mtimes=True)
    for args in ((), ("--json",), ("--delete",), ("--delete", "--json", "--include", "*.bin")):
        ok(dry_run(repo, dest, *args))
        assert tree(dest, mtimes=True) == before, args  # byte-identical, same mtimes, no .aim work dir

    absent = tmp_path / "absent" / "deeper"
    plan = json.loads(ok(dry_run(repo, absent, "--json", "--delete")).stdout)
    assert not (tmp_path / "absent").exists()
    assert {f["action"] for f in plan["files"]} == {FETCH} and plan["delete"] == []


def test_the_json_plan_has_its_documented_shape_and_predicts_the_pull(repo, tmp_path):
    _v1, v2 = versions(repo, tmp_path)
    dest = tmp_path / "out"
    ok(repo.cli("model", "pull", repo.name, "m", str(dest), "--tag", "v1"))
    plan = json.loads(ok(dry_run(repo, dest, "--json", "--delete")).stdout)
    assert set(plan) == {
        "dry_run",
        "model",
        "tag",
        "digest",
        "newest",
        "dest",
        "include",
        "exclude",
        "files",
        "delete",
        "totals",
    }
    assert plan["dry_run"] is True and (plan["model"], plan["tag"], plan["newest"]) == ("m", "v2", False)
    assert plan["dest"] == str(dest) and set(plan["totals"]) == TOTAL_KEYS
    assert all(set(f) == FILE_KEYS for f in plan["files"])
    actions = {f["path"]: f["action"] for f in plan["files"]}
    assert actions == {"a.txt": KEEP, "big.bin": FETCH, "new.txt": FETCH, "renamed.bin": LOCAL}
    assert plan["delete"] == ["dir/moved.bin", "old/only-v1.txt"]
    t = plan["totals"]
    assert (t["files"], t["keep_files"], t["local_files"], t["fetch_files"]) == (4, 1, 1, 2)
    assert t["delete_files"] == 2 and t["delete_bytes"] == 50_000 + len(b"gone in v2\n")
    for f in plan["files"]:
        assert f["reuse_bytes"] + f["fetch_raw_bytes"] == (0 if f["action"] == KEEP else f["size"])

    done = json.loads(
        ok(repo.cli("model", "pull", repo.name, "m", str(dest), "--tag", "v2", "--json", "--delete")).stdout
    )
    assert done["fetched_raw_bytes"] == t["fetch_raw_bytes"] and done["fetched_chunks"] == t["fetch_chunks"]
    assert done["deleted"] == plan["delete"]
    assert without_index(tree(dest)) == tree(v2)

    text = ok(dry_run(repo, dest, "--delete")).stdout
    assert "keep    " in text and "nothing changed" in text and "fetch 0 Bytes of chunks (raw size" in text


@LOCAL_ONLY
def test_the_plan_counts_what_an_interrupted_pull_left(repo, tmp_path):
    """A partial file's verified chunks are reused bytes, not space needed; the library's dry run
    returns the typed plan and leaves the partial files as they were."""
    src = write_model(tmp_path / "src", {"big.bin": random_bytes(400_000, 5)})
    repo.push("m", src, "v1")
    dest = tmp_path / "out"
    cut = CountingBackend(repo.repository.backend, fail_after=20)
    with pytest.raises(ConnectionAbortedError):
        pull(Repository(cut, "r", jobs=1), "m", dest, tag="v1", jobs=1)
    before = tree(dest, mtimes=True)
    plan = pipeline.dry_run(repo.repository, "m", dest, tag="v1")
    assert isinstance(plan, PullPlan) and tree(dest, mtimes=True) == before
    [f] = plan.files
    assert f.action == FETCH and f.reuse_bytes > 0 and f.reuse_bytes + f.fetch_raw_bytes == 400_000
    assert plan.space_needed == 400_000 - f.reuse_bytes
    r = pull(repo.repository, "m", dest, tag="v1")
    assert r.fetched_raw_bytes == f.fetch_raw_bytes and file_contents(dest) == file_contents(src)


@LOCAL_ONLY
def test_api_plan_pull_takes_patterns_and_delete(repo, tmp_path):
    versions(repo, tmp_path)
    dest = tmp_path / "out"
    plan = api.plan_pull(
        repo.name, "m", dest, tag="v2", include=["*.bin"], exclude=["renamed*"], delete=True, config=str(repo.config)
    )
    assert isinstance(plan, PullPlan) and [f.path for f in plan.files] == ["big.bin"] and not dest.exists()
    assert plan.to_json()["include"] == ["*.bin"] and plan.to_json()["exclude"] == ["renamed*"]
    r = api.pull(repo.name, "m", dest, tag="v2", include=["*.bin"], exclude=["renamed*"], config=str(repo.config))
    assert r.files == 1 and list(file_contents(dest)) == ["big.bin"]


@LOCAL_ONLY
def test_a_dry_run_does_not_take_the_lock_nor_need_space(repo, tmp_path, monkeypatch):
    versions(repo, tmp_path)
    dest = tmp_path / "out"
    ok(repo.cli("model", "pull", repo.name, "m", str(dest), "--tag", "v1"))
    (dest / ".aim").mkdir(exist_ok=True)  # the pull left its index there
    (dest / ".aim" / "pull.lock").write_text(json.dumps({"pid": 1, "host": "elsewhere", "nonce": "x"}))
    before = tree(dest, mtimes=True)
    res = ok(dry_run(repo, dest))
    assert tree(dest, mtimes=True) == before and "dry run: m:v2" in res.stdout
    one_line_error(repo.cli("model", "pull", repo.name, "m", str(dest), "--tag", "v2"), 4, "another pull")


# -- the chunk sources ---------------------------------------------------------------------------------
class _Source:
    def __init__(self, name, chunks):
        self.name, self.chunks, self.asked = name, chunks, []

    def read(self, digest, size, path):
        self.asked.append(digest)
        return self.chunks.get(digest)


class _Cache:
    def __init__(self):
        self.kept = {}

    def get(self, digest, size):
        return self.kept.get(digest)

    def put(self, digest, data):
        self.kept[digest] = data


def test_the_chain_asks_sources_in_order_counts_each_and_keeps_fetched_chunks_in_the_cache(repo, tmp_path):
    repo.push("m", write_model(tmp_path / "src", {"x.bin": random_bytes(10_000, 9)}), "v1")
    digest, size = repo.manifest("m", "v1").files[0].chunks[0]
    local = _Source("dest", {"d" * 64: b"local"})
    cache = _Cache()
    chain = SourceChain([local, CacheSource(cache), RepositorySource(repo.repository, "m:v1")])
    assert chain.read("d" * 64, 5, "p") == b"local" and chain.bytes["dest"] == 5
    first = chain.read(digest, size, "x.bin")
    assert cache.kept == {digest: first} and chain.chunks["repository"] == 1 and local.asked[-1] == digest
    assert chain.read(digest, size, "x.bin") == first and chain.chunks["cache"] == 1
    assert chain.chunks["repository"] == 1 and chain.sources[-1].stored_bytes > 0
    with pytest.raises(BlobMissingError):
        chain.read("e" * 64, 3, "x.bin")


def test_local_files_hand_out_only_verified_bytes(tmp_path):
    params = ChunkingParams.for_average(4096)
    data = random_bytes(50_000, 4)
    path = write_model(tmp_path, {"f.bin": data}) / "f.bin"
    files = LocalFiles("reference", RepoFormat.new(1, params))
    files.add_file(path)
    chunk = next(iter_chunks(path, params))
    assert files.read(chunk.digest, chunk.size, "f.bin") == data[chunk.offset : chunk.offset + chunk.size]
    path.write_bytes(b"\0" * 50_000)  # changed since it was indexed: not handed out
    assert files.read(chunk.digest, chunk.size, "f.bin") is None and files.read("0" * 64, 1, "f.bin") is None


@LOCAL_ONLY
def test_a_dry_run_refuses_a_symlinked_work_dir_as_the_pull_does(repo, tmp_path):
    versions(repo, tmp_path)
    elsewhere = write_model(tmp_path / "elsewhere", {"partial/" + "0" * 32: b"not DEST's\n"})
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / ".aim").symlink_to(elsewhere)
    before = tree(elsewhere, mtimes=True)
    one_line_error(dry_run(repo, dest), 2, "symlink")
    one_line_error(repo.cli("model", "pull", repo.name, "m", str(dest), "--tag", "v2"), 2, "symlink")
    assert tree(elsewhere, mtimes=True) == before


def test_dest_is_prepared_by_the_writer_and_only_inspected_for_a_dry_run(tmp_path):
    """The planner reads only: what DEST needs written first (the work directories, partial files
    given their owner's mode) is done by prepare_dest under the lock; a dry run's inspect_dest
    learns the same facts and changes nothing."""
    from aim_cli.pull.dest_access import inspect_dest
    from aim_cli.pull.dest_writer import prepare_dest
    from aim_cli.pull.layout import PARTIAL_DIR, PARTIAL_MODE, WORK_DIR

    dest = tmp_path / "dest"
    partial = dest / WORK_DIR / PARTIAL_DIR / ("0" * 32)
    partial.parent.mkdir(parents=True)
    partial.write_bytes(b"left by an older aim_cli")
    partial.chmod(0o400)
    facts = inspect_dest(dest, ["a", "b/c"])
    assert facts.partials == (partial,) and not facts.locked and partial.stat().st_mode & 0o777 == 0o400
    assert inspect_dest(tmp_path / "absent", ["a"]).partials == () and not (tmp_path / "absent").exists()
    facts = prepare_dest(dest, ["a", "b/c"])
    assert facts.partials == (partial,) and facts.locked and partial.stat().st_mode & 0o777 == PARTIAL_MODE


@LOCAL_ONLY
def test_api_pull_dry_run_still_returns_the_plan_with_a_deprecation_warning(repo, tmp_path):
    """The README documented ``pull(dry_run=True)``: it keeps working, and says what replaces it."""
    versions(repo, tmp_path)
    dest = tmp_path / "out"
    with pytest.warns(DeprecationWarning, match="plan_pull"):
        plan = api.pull(repo.name, "m", dest, tag="v2", include=["big*"], dry_run=True, config=str(repo.config))
    assert isinstance(plan, PullPlan) and [f.path for f in plan.files] == ["big.bin"] and not dest.exists()
    same = api.plan_pull(repo.name, "m", dest, tag="v2", include=["big*"], config=str(repo.config))
    assert plan.files == same.files and plan.digest == same.digest and plan.space_needed == same.space_needed
