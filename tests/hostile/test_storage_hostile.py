"""Issue 8, the storage layer, through the installed console script: a repository tree that does
not look the way aim_cli wrote it (links, FIFOs, stray names, hostile aim-repo.json), and operator
mistakes (gc, check or cache prune on the wrong directory, a new repository over other data or
inside another repository). Each test runs on the local backend and, where the case exists
there, on S3 (the ``repo`` fixture of tests/conftest.py)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import blake3
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aim_cli.backends.local import LocalBackend
from aim_cli.chunking.cdc import ChunkingParams
from aim_cli.errors import ConfigError, DamagedStorageError, IntegrityError, KeyNotFoundError
from aim_cli.format import layout
from aim_cli.format import manifest as mf
from aim_cli.format.layout import blob_key, manifest_key
from aim_cli.format.repo_format import parse_meta
from aim_cli.pull.cache import ChunkCache
from aim_cli.repository import Repository
from tests.helpers import BACKENDS, LOCAL_ONLY, chunks_of, make_variant_model, ok, one_line_error, tree


def _v1(repo, tmp_path, tag="v1", variant=1):
    repo.push("m", make_variant_model(tmp_path / f"src-{tag}", variant=variant), tag)
    return repo.manifest("m", tag)


def _root(repo) -> Path:
    return Path(repo.repository.backend.root)


def _keys(repo) -> dict[str, int]:
    return {i.key: i.size for i in repo.repository.backend.list("")}


# == defect 2: links and special files below a local root ======================================
def _link_in_place(root: Path, where: str, elsewhere: Path) -> None:
    """Move ``root/where`` to ``elsewhere`` and leave a symlink to it in its place: the tree reads
    the same through the link, which is exactly what gc must not half-see."""
    elsewhere.parent.mkdir(parents=True, exist_ok=True)
    (root / where).rename(elsewhere)
    (root / where).symlink_to(elsewhere)


@LOCAL_ONLY
@pytest.mark.parametrize(
    "where", ["models", "models/m", "models/m/versions", "models/m/versions/v1.json", "blob shard", "blob"]
)
def test_a_link_below_the_root_is_damage_for_every_command(repo, tmp_path, where):
    m = _v1(repo, tmp_path)
    digest = m.files[1].chunks[0][0]
    where = {"blob shard": f"blobs/{digest[:2]}", "blob": blob_key(digest)}.get(where, where)
    root = _root(repo)
    _link_in_place(root, where, tmp_path / "elsewhere" / "x")
    blobs = (tree(tmp_path / "elsewhere"), tree(root / "blobs"))
    commands = [
        ("repo", "gc", repo.name),
        ("repo", "check", repo.name, "--read-data"),
        ("model", "pull", repo.name, "m", str(tmp_path / "dest"), "--tag", "v1", "-q"),
    ]
    if where.startswith("models"):
        commands += [("model", "list", repo.name), ("model", "versions", repo.name, "m")]
    for args in commands:
        one_line_error(repo.cli(*args), 5, f"{where} in ", "symbolic link")
    assert (tree(tmp_path / "elsewhere"), tree(root / "blobs")) == blobs  # gc deleted nothing
    assert not (tmp_path / "dest" / "weights.bin").exists()


@LOCAL_ONLY
@pytest.mark.parametrize("where", ["manifest", "blob"])
def test_a_fifo_below_the_root_is_damage_and_never_opened(repo, tmp_path, where):
    """Opening a FIFO blocks until a writer comes: a command that opened one would hang (the
    run's timeout would fail the test)."""
    m = _v1(repo, tmp_path)
    digest = m.files[1].chunks[0][0]
    key = manifest_key("m", "v2") if where == "manifest" else blob_key(digest)
    (_root(repo) / key).unlink(missing_ok=True)
    os.mkfifo(_root(repo) / key)
    tag = "v2" if where == "manifest" else "v1"
    for args in (
        ("model", "pull", repo.name, "m", str(tmp_path / "dest"), "--tag", tag, "-q"),
        ("repo", "check", repo.name),
        ("repo", "gc", repo.name),
    ):
        one_line_error(repo.cli(*args, timeout=60), 5, key, "FIFO")


@LOCAL_ONLY
def test_the_root_itself_may_be_a_link(repo, tmp_path):
    m = _v1(repo, tmp_path)
    root = _root(repo)
    root.rename(tmp_path / "real-store")
    root.symlink_to(tmp_path / "real-store")
    ok(
        repo.cli(
            "model", "push", repo.name, "m", str(make_variant_model(tmp_path / "v2", variant=2)), "--tag", "v2", "-q"
        )
    )
    ok(repo.cli("model", "delete-version", repo.name, "m", "--tag", "v2"))
    ok(repo.cli("repo", "gc", repo.name))
    ok(repo.cli("repo", "check", repo.name, "--read-data"))
    ok(repo.cli("model", "pull", repo.name, "m", str(tmp_path / "dest"), "-q"))
    assert (tmp_path / "dest" / "weights.bin").read_bytes() == (tmp_path / "src-v1" / "weights.bin").read_bytes()
    assert set(chunks_of(m)) <= set(repo.blobs())


@pytest.mark.parametrize("inside", [False, True], ids=["link-out-of-the-root", "link-within-the-root"])
def test_local_backend_refuses_links_in_every_operation(tmp_path, inside):
    """Reading and listing agree: what get would not read, list does not hide."""
    backend = LocalBackend(tmp_path / "root")
    backend.put("models/a/versions/v1.json", b"{}")
    outside = tmp_path / "root" / "models" / "a" if inside else tmp_path / "outside"
    outside.mkdir(parents=True, exist_ok=True)
    (outside / "versions").mkdir(exist_ok=True)
    (outside / "versions" / "v2.json").write_bytes(b"target")
    (tmp_path / "root" / "models" / "b").symlink_to(outside)
    key = "models/b/versions/v2.json"
    for call in (
        lambda: backend.get(key),
        lambda: backend.exists(key),
        lambda: backend.size(key),
        lambda: list(backend.list("models/")),
        lambda: list(backend.list("models/b/")),
        lambda: backend.delete(key),
        lambda: backend.put(key, b"x"),
        lambda: backend.put_if_absent(key, b"x"),
    ):
        with pytest.raises(DamagedStorageError) as err:
            call()
        assert err.value.key == "models/b" and err.value.exit_code == 5
    assert (outside / "versions" / "v2.json").read_bytes() == b"target"  # nothing written or deleted through it
    expected = {"models/a/versions/v1.json"} | ({"models/a/versions/v2.json"} if inside else set())
    assert {i.key for i in backend.list("models/a/")} == expected  # the link's neighbours list as ever


# == defect 3: every read bounded; aim-repo.json parsed with limits =============================
BAD_META = {
    "min_size 1e400": b'{"format": 1, "hash": "blake3", "chunking": {"algorithm": "fastcdc2020", '
    b'"min_size": 1e400, "avg_size": 1048576, "max_size": 4194304}}',
    "avg_size -5": b'{"format": 1, "hash": "blake3", "chunking": {"algorithm": "fastcdc2020", '
    b'"min_size": 262144, "avg_size": -5, "max_size": 4194304}}',
    "max_size NaN": b'{"format": 1, "hash": "blake3", "chunking": {"algorithm": "fastcdc2020", '
    b'"min_size": 262144, "avg_size": 1048576, "max_size": NaN}}',
    "a 5000-digit size": b'{"format": 1, "hash": "blake3", "chunking": {"algorithm": "fastcdc2020", '
    b'"min_size": ' + b"9" * 5000 + b', "avg_size": 1048576, "max_size": 4194304}}',
    "format 1e400": b'{"format": 1e400, "hash": "blake3", "chunking": {}}',
    "format true": b'{"format": true, "hash": "blake3", "chunking": {}}',
    "deep nesting": b"[" * 30_000 + b"]" * 30_000,
    "not UTF-8": b'{"format": 1, "hash": "\xff\xfe"}',
    "larger than 64 KiB": b'{"format": 1, "pad": "' + b"x" * (70 * 1024) + b'"}',
}


@LOCAL_ONLY
@pytest.mark.parametrize("case", sorted(BAD_META))
def test_a_hostile_aim_repo_json_is_exit_5(repo, tmp_path, case):
    repo.repository.backend.put("aim-repo.json", BAD_META[case])
    one_line_error(repo.cli("repo", "gc", repo.name), 5, "aim-repo.json")
    one_line_error(
        repo.cli("model", "push", repo.name, "m", str(make_variant_model(tmp_path / "src")), "--tag", "v1"),
        5,
        "aim-repo.json",
    )
    assert not repo.repository.has_version("m", "v1")


def test_a_hostile_aim_repo_json_is_exit_5_in_check(repo, tmp_path):
    _v1(repo, tmp_path)
    repo.repository.backend.put("aim-repo.json", BAD_META["min_size 1e400"])
    checked = repo.cli("repo", "check", repo.name)
    assert checked.returncode == 5 and "Traceback" not in checked.stderr
    assert "broken    aim-repo.json" in checked.stdout and checked.stderr.count("\n") == 1


_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=2**60)
    | st.floats()
    | st.text(max_size=8)
    | st.sampled_from([1, 64, 1024, 262144, 1048576, 4194304, "fastcdc2020", "blake3"])
)
_JSON = st.recursive(
    _SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                ["format", "hash", "chunking", "algorithm", "min_size", "avg_size", "max_size", "normalization", "seed"]
            )
            | st.text(max_size=4),
            inner,
            max_size=6,
        )
    ),
    max_leaves=20,
)
_META = st.fixed_dictionaries(
    {
        "format": st.just(1) | _SCALARS,
        "hash": st.just("blake3") | _SCALARS,
        "chunking": st.dictionaries(
            st.sampled_from(["algorithm", "min_size", "avg_size", "max_size", "normalization", "seed"]),
            _SCALARS | st.just("fastcdc2020"),
            max_size=6,
        )
        | _JSON,
    }
)


@settings(max_examples=300, deadline=None)
@given(_JSON | _META)
def test_any_aim_repo_json_parses_or_is_refused_with_a_documented_error(value):
    raw = json.dumps(value).encode()
    try:
        params = parse_meta(raw, "r")
    except (IntegrityError, ConfigError) as e:
        assert e.exit_code in (5, 7)
    else:
        assert isinstance(params, ChunkingParams)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_as_aim_repo_json_give_a_documented_error(raw):
    with pytest.raises((IntegrityError, ConfigError)):
        parse_meta(raw, "r")


def test_an_oversized_manifest_is_refused_after_reading_the_bound(tmp_path, monkeypatch):
    from tests.fakes import FaultyBackend

    backend = FaultyBackend(LocalBackend(tmp_path / "store"))
    repo = Repository(backend, "r")
    repo.init()
    monkeypatch.setattr(mf, "MAX_MANIFEST_BYTES", 4096)
    backend.put(manifest_key("m", "v1"), b" " * 100_000)
    with pytest.raises(IntegrityError, match="larger than the 4096 bytes"):
        repo.get_version("m", "v1")
    assert ("get", manifest_key("m", "v1"), 4096) in backend.calls


def test_an_oversized_cache_entry_is_refused_without_reading_it_whole(tmp_path):
    data = b"chunk"
    digest = blake3.blake3(data).hexdigest()
    cache = ChunkCache(tmp_path / "cache")
    cache.put(digest, data)
    with open(cache.path_of(digest), "wb") as f:  # a planted 64 MiB file (sparse: no disk used)
        f.truncate(64 * 2**20)
    reads = []
    real_get = cache._store.get
    cache._store.get = lambda key, max_size=None: reads.append(max_size) or real_get(key, max_size)
    assert cache.get(digest, len(data)) is None
    assert reads == [len(data)] and not cache.path_of(digest).exists()


@LOCAL_ONLY
def test_pull_through_a_cache_holding_an_oversized_entry(repo, tmp_path):
    m = _v1(repo, tmp_path)
    cache = tmp_path / "cache"
    ok(repo.cli("model", "pull", repo.name, "m", str(tmp_path / "a"), "-q", "--cache-dir", str(cache)))
    digest, size = m.files[1].chunks[0]
    with open(cache / digest[:2] / digest, "r+b") as f:
        f.truncate(size + 10 * 2**20)
    ok(repo.cli("model", "pull", repo.name, "m", str(tmp_path / "b"), "-q", "--cache-dir", str(cache)))
    assert (tmp_path / "b" / "weights.bin").read_bytes() == (tmp_path / "src-v1" / "weights.bin").read_bytes()
    assert (cache / digest[:2] / digest).stat().st_size == size  # replaced by the verified chunk


# == defect 6: only the store's own layout, only in a repository or a cache ======================
def _plant_user_files(repo, old: float) -> None:
    """Files a user may keep in a directory: a temp-file look-alike in the root and deeper."""
    backend = repo.repository.backend
    for key in ("notes.txt", "sub/data.bin", "blobs/ab/readme"):
        backend.put(key, b"keep me")
    if repo.kind == "local":
        root = _root(repo)
        for rel in (".tmp-notes.txt.0123456789ab", "sub/.tmp-data.bin.0123456789ab"):
            (root / rel).write_bytes(b"keep me too")
            os.utime(root / rel, (old, old))


def test_gc_and_check_refuse_a_path_that_is_not_a_repository(repo, tmp_path):
    repo.repository.backend.delete("aim-repo.json")  # the fixture made one: this is "a typo"
    _plant_user_files(repo, time.time() - 7 * 86400)
    before = tree(_root(repo)) if repo.kind == "local" else _keys(repo)
    for args in (("repo", "gc", repo.name), ("repo", "gc", repo.name, "--dry-run"), ("repo", "check", repo.name)):
        one_line_error(repo.cli(*args), 3, "no repository", "aim-repo.json")
    assert (tree(_root(repo)) if repo.kind == "local" else _keys(repo)) == before  # not even locks/


@LOCAL_ONLY
def test_gc_removes_temp_files_only_where_aim_cli_writes(repo, tmp_path):
    _v1(repo, tmp_path)
    root = _root(repo)
    old = time.time() - 7 * 86400
    ours = [
        "blobs/ab/.tmp-ab01.0123456789ab",
        ".tmp-aim-repo.json.0123456789ab",
        "models/m/versions/.tmp-v9.json.0123456789ab",
        "locks/.tmp-x.json.0123456789ab",
    ]
    theirs = [
        "notes/.tmp-a.0123456789ab",
        "models/m/.tmp-b.0123456789ab",
        "blobs/.tmp-c.0123456789ab",
        "blobs/ab/.tmp-not-our-pattern",
        "blobs/zz/.tmp-d.0123456789ab",
    ]
    for rel in ours + theirs:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"x")
        os.utime(root / rel, (old, old))
    young = root / "blobs/cd/.tmp-cd01.0123456789ab"
    young.parent.mkdir(exist_ok=True)
    young.write_bytes(b"x")
    res = ok(repo.cli("repo", "gc", repo.name))
    assert f"removed {len(ours)} temp files" in res.stdout
    assert not any((root / rel).exists() for rel in ours)
    assert all((root / rel).exists() for rel in theirs) and young.exists()


@LOCAL_ONLY
def test_cache_prune_refuses_what_is_not_a_cache(repo, tmp_path):
    _v1(repo, tmp_path)
    plain = tmp_path / "photos"
    (plain / "ab").mkdir(parents=True)
    (plain / "ab" / ("ab" * 32)).write_bytes(b"looks like a chunk")
    (plain / "ab" / ".tmp-x.0123456789ab").write_bytes(b"looks like a temp file")
    os.utime(plain / "ab" / ".tmp-x.0123456789ab", (0, 0))
    before = tree(plain)
    one_line_error(
        repo.cli("cache", "prune", "--all", "--cache-dir", str(plain)), 3, "no chunk cache", "aim-cache.json"
    )
    assert tree(plain) == before

    inside = _root(repo) / "blobs"
    (inside / "aim-cache.json").write_text("{}")  # even with a marker planted
    for cache_dir in (_root(repo), inside):
        one_line_error(repo.cli("cache", "prune", "--all", "--cache-dir", str(cache_dir)), 2, "repository")
    assert set(chunks_of(repo.manifest("m", "v1"))) <= set(repo.blobs())

    ok(repo.cli("cache", "prune", "--all", "--cache-dir", str(tmp_path / "never-made")))  # nothing there to delete


@LOCAL_ONLY
def test_pull_never_turns_a_foreign_directory_into_a_cache(repo, tmp_path):
    _v1(repo, tmp_path)
    plain = tmp_path / "home"
    (plain / "doc.txt").parent.mkdir()
    (plain / "doc.txt").write_text("mine")
    before = tree(plain)
    res = ok(repo.cli("model", "pull", repo.name, "m", str(tmp_path / "dest"), "-q", "--cache-dir", str(plain)))
    assert "not writing to the chunk cache" in res.stderr and "not a chunk cache" in res.stderr
    assert tree(plain) == before
    fresh = tmp_path / "cache"
    ok(repo.cli("model", "pull", repo.name, "m", str(tmp_path / "dest2"), "-q", "--cache-dir", str(fresh)))
    assert (fresh / "aim-cache.json").is_file()
    ok(repo.cli("cache", "prune", "--all", "--cache-dir", str(fresh)))


def _create_args(repo, path: str, request) -> list[str]:
    if repo.kind == "local":
        return ["repo", "create", "new", "--type", "local", "--path", path]
    from tests.s3_fixtures import s3_region

    return [
        "repo",
        "create",
        "new",
        "--type",
        "s3",
        "--path",
        path,
        "--region",
        s3_region(),
        "--endpoint-url",
        repo.endpoint,
    ]


def _location(repo, rel: str) -> str:
    """A path next to the fixture's repository: a directory, or a prefix of its bucket."""
    if repo.kind == "local":
        return str(_root(repo).parent / rel)
    return f"s3://{repo.repository.backend.bucket}/{rel}"


def test_repo_create_refuses_a_root_that_is_not_empty(repo, tmp_path, request):
    config = repo.config.read_text()
    other = _location(repo, "data")
    if repo.kind == "local":
        Path(other).mkdir()
        (Path(other) / "file.txt").write_text("someone's")
    else:
        from tests.s3_fixtures import client_for

        client_for(repo.endpoint).put_object(
            Bucket=repo.repository.backend.bucket, Key="data/file.txt", Body=b"someone's"
        )
    one_line_error(repo.cli(*_create_args(repo, other, request)), 4, "not empty", "no repository")
    assert repo.config.read_text() == config
    if repo.kind == "local":
        assert sorted(os.listdir(other)) == ["file.txt"]


@pytest.mark.parametrize("where", ["inside", "around"])
def test_repositories_never_nest(repo, tmp_path, request, where):
    config = repo.config.read_text()
    before = _keys(repo)
    # inside: a prefix below the repository (s3://b/repo/models beside s3://b/repo/aim-repo.json);
    # around: the bucket or directory holding it, which is not empty.
    path = (
        _location(repo, "repo/models" if repo.kind != "local" else "store/models")
        if where == "inside"
        else (f"s3://{repo.repository.backend.bucket}" if repo.kind != "local" else str(tmp_path))
    )
    line = one_line_error(repo.cli(*_create_args(repo, path, request)), 4)
    assert ("inside the repository at" in line) if where == "inside" else ("not empty" in line)
    assert repo.config.read_text() == config and _keys(repo) == before


def test_a_first_push_into_a_foreign_root_writes_nothing(repo, tmp_path):
    repo.repository.backend.delete("aim-repo.json")
    repo.repository.backend.put("their/file.bin", b"someone's")
    before = _keys(repo)
    one_line_error(
        repo.cli("model", "push", repo.name, "m", str(make_variant_model(tmp_path / "src")), "--tag", "v1"),
        4,
        "not empty",
        "no repository",
    )
    assert _keys(repo) == before
    if repo.kind == "local":
        assert sorted(os.listdir(_root(repo))) == ["their"]  # no locks/, no blobs/


# == defect 9: stray names under versions/ =====================================================
def test_stray_names_are_skipped_reported_kept_and_removable(repo, tmp_path):
    v1 = _v1(repo, tmp_path)
    repo.push("m", make_variant_model(tmp_path / "src-v2", variant=2), "v2")
    backend = repo.repository.backend
    raw_v1 = backend.get(manifest_key("m", "v1"))
    strays = {
        "models/m/versions/v1 copy.json": raw_v1,
        "models/m/versions/.DS_Store": b"\0\0\0\1Bud1",
        "models/m/versions/x.json.bak": b"{",
        "models/m/v0.json": raw_v1,
    }
    for key, data in strays.items():
        backend.put(key, data)

    listed = ok(repo.cli("model", "versions", repo.name, "m"))
    assert [line.split()[0] for line in listed.stdout.splitlines()[1:]] == ["v1", "v2"]
    assert all(key in listed.stderr for key in strays if "/versions/" in key)
    pulled = ok(repo.cli("model", "pull", repo.name, "m", str(tmp_path / "dest"), "-q"))
    assert "m:v2 (newest)" in pulled.stdout

    checked = repo.cli("repo", "check", repo.name)
    assert checked.returncode == 5 and checked.stderr.count("\n") == 1 and "Traceback" not in checked.stderr
    assert all(f"broken    {key}" in checked.stdout for key in strays)
    assert "--tag 'v1 copy'" in checked.stdout and "by hand" in checked.stdout

    blobs = repo.blobs()
    one_line_error(repo.cli("repo", "gc", repo.name), 5, "gc refuses", ".DS_Store")
    assert repo.blobs() == blobs
    for name in (".DS_Store", "x.json.bak", "v1"):
        ok(repo.cli("model", "delete-version", repo.name, "m", "--tag", name))
    backend.delete("models/m/v0.json")  # not in versions/: no command names it, as check said

    # "v1 copy.json" parses as a manifest: gc keeps what it names, v1's own blobs included.
    collected = ok(repo.cli("repo", "gc", repo.name))
    assert "v1 copy.json" in collected.stderr and "deleted 0 blobs" in collected.stdout
    assert set(chunks_of(v1)) <= set(repo.blobs())
    ok(repo.cli("model", "delete-version", repo.name, "m", "--tag", "v1 copy"))
    ok(repo.cli("repo", "gc", repo.name))
    assert not set(chunks_of(v1)) - set(chunks_of(repo.manifest("m", "v2"))) & set(repo.blobs())
    ok(repo.cli("repo", "check", repo.name, "--read-data"))


def test_delete_version_refuses_a_name_that_matches_two_keys(repo, tmp_path):
    _v1(repo, tmp_path)
    repo.repository.backend.put("models/m/versions/v1", b"a stray without .json")
    one_line_error(repo.cli("model", "delete-version", repo.name, "m", "--tag", "v1"), 2, "two stored keys")
    assert repo.repository.has_version("m", "v1")
    one_line_error(repo.cli("model", "delete-version", repo.name, "m", "--tag", "nope"), 3, "'nope'")
    one_line_error(repo.cli("model", "delete-version", repo.name, "m", "--tag", "../v1"), 2, "invalid tag")


def test_a_stray_in_blobs_is_reported_and_never_deleted(repo, tmp_path):
    _v1(repo, tmp_path)
    backend = repo.repository.backend
    backend.put("blobs/.DS_Store", b"x")
    backend.put(f"blobs/zz/{'ab' * 32}", b"misplaced")  # a digest in the wrong shard
    checked = repo.cli("repo", "check", repo.name)
    assert checked.returncode == 5 and "broken    blobs/.DS_Store" in checked.stdout
    ok(repo.cli("repo", "gc", repo.name))
    assert backend.exists("blobs/.DS_Store") and backend.exists(f"blobs/zz/{'ab' * 32}")


@pytest.mark.parametrize("damage", ["missing", "broken"])
def test_stray_key_reads_by_any_name(tmp_path, damage):
    """Library level: a stray's reading never raises anything but NotFound or Integrity."""
    repo = Repository(LocalBackend(tmp_path / "store"), "r")
    repo.init()
    vk = layout.parse_version_key("models/m/versions/weird name.json")
    assert (vk.model, vk.tag, vk.name) == ("m", None, "weird name")
    if damage == "missing":
        with pytest.raises(KeyNotFoundError):
            repo.read_key(vk)
    else:
        repo.backend.put(vk.key, b"\xff" * 10)
        with pytest.raises(IntegrityError, match="weird name"):
            repo.read_key(vk)


@pytest.mark.skipif("s3" not in BACKENDS, reason="needs the S3 fixtures")
@pytest.mark.parametrize("repo", ["s3"], indirect=True)
def test_s3_folder_markers_are_not_strays(repo, tmp_path):
    """S3 consoles make an empty ``a/b/`` object for each "folder": no key of the layout ends
    with "/", and an empty object names no blob, so none of them is damage or blocks gc."""
    _v1(repo, tmp_path)
    for key in ("models/", "models/m/", "models/m/versions/", "blobs/", "blobs/ab/"):
        repo.repository.backend.put(key, b"")
    listed = ok(repo.cli("model", "versions", repo.name, "m"))
    assert listed.stderr == ""
    ok(repo.cli("repo", "check", repo.name))
    ok(repo.cli("repo", "gc", repo.name))
