"""Pull and push against a hostile or careless destination and source, through the installed
console script (issue 8: defects 1, 7, 8, 10 and 12). Each case asserts the exit code, one line on
stderr, and that nothing wrong sits under a final name."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import blake3
import pytest

from aim_cli import api
from aim_cli.format import manifest as mf
from tests.helpers import (
    describe,
    drop_dac_caps,
    files_of,
    ok,
    one_line_error,
    random_bytes,
    run,
    tree,
    version_bytes,
    work_files,
    write_file,
)

REPO = "r"
MiB = 1 << 20


@dataclass
class Env:
    cwd: Path

    @property
    def store(self) -> Path:
        return self.cwd / "store"

    def aim(self, *args, **kw):
        return run(args, cwd=self.cwd, **kw)

    def push(self, src: Path, tag: str = "v1", *extra):
        return ok(self.aim("model", "push", REPO, "m", src, "--tag", tag, "-q", *extra))

    def pull(self, dest, *extra, tag: str = "v1", **kw):
        return self.aim("model", "pull", REPO, "m", dest, "--tag", tag, "-q", *extra, **kw)

    def manifest(self, tag: str = "v1") -> mf.Manifest:
        raw = (self.store / "models" / "m" / "versions" / f"{tag}.json").read_bytes()
        return mf.decode(raw, where=tag)

    def storage(self) -> dict:
        """The repository's files (leases aside), with mtimes: what a stray write would change."""
        return {k: v for k, v in tree(self.store, mtimes=True).items() if not k.startswith("locks")}


@pytest.fixture
def env(tmp_path) -> Env:
    cwd = tmp_path / "work"
    cwd.mkdir()
    (cwd / "model_repos.yaml").write_text(f"repos:\n  {REPO}: {{type: local, path: store}}\n")
    return Env(cwd)


def _model(root: Path) -> Path:
    write_file(root / "empty", b"")
    write_file(root / "a.txt", b"top level\n")
    write_file(root / "w.bin", random_bytes(3 * MiB, 1))
    write_file(root / "sub" / "deep" / "c.txt", b"nested\n", 0o640)
    return root


def _partial(dest: Path, entry: mf.FileEntry) -> Path:
    """Where pull assembles ``entry`` (the layout of aim_cli/pull/pipeline.py's docstring)."""
    name = blake3.blake3(f"{entry.path}\0{entry.blake3}".encode()).hexdigest()[:32]
    return dest / ".aim" / "partial" / name


def _json(res) -> dict:
    return json.loads(res.stdout)


# -- defect 1: a file of the wrong size is never complete --------------------------------------------
def test_files_of_the_wrong_size_in_dest_are_replaced(env, tmp_path):
    src = _model(tmp_path / "src")
    env.push(src)
    dest = tmp_path / "dest"
    write_file(dest / "empty", b"stale bytes")  # the version's file has no chunks: none to check
    write_file(dest / "a.txt", b"top level\nand more")  # longer than the version's file
    write_file(dest / "w.bin", (src / "w.bin").read_bytes() + b"tail")  # every chunk right, then more
    result = _json(ok(env.pull(dest, "--json")))
    assert files_of(dest) == files_of(src)
    assert result["kept_files"] == 0
    again = _json(ok(env.pull(dest, "--json")))  # now they are complete: kept, nothing fetched
    assert again["kept_files"] == 4 and again["fetched_bytes"] == 0


def test_partial_files_with_trailing_bytes_are_cut_to_size(env, tmp_path):
    src = _model(tmp_path / "src")
    env.push(src)
    dest = tmp_path / "dest"
    for entry in env.manifest().files:  # every chunk in place, then bytes the file does not have
        write_file(_partial(dest, entry), (src / entry.path).read_bytes() + b"trailing junk", 0o600)
    result = _json(ok(env.pull(dest, "--json")))
    assert files_of(dest) == files_of(src)
    assert result["fetched_bytes"] == 0  # the partials' chunks were used, their tails cut
    assert work_files(dest) == []


def test_cache_entries_of_the_wrong_size_are_not_used(env, tmp_path):
    src = _model(tmp_path / "src")
    env.push(src)
    cache = tmp_path / "cache"
    ok(env.pull(tmp_path / "first", "--cache-dir", cache))
    entries = [p for p in cache.rglob("*") if p.is_file() and mf.HEX64.fullmatch(p.name)]
    assert entries
    for p in entries:  # each one byte longer than the chunk it is named after
        p.write_bytes(p.read_bytes() + b"x")
    dest = tmp_path / "dest"
    result = _json(ok(env.pull(dest, "--cache-dir", cache, "--json")))
    assert files_of(dest) == files_of(src)
    # Every chunk came from the repository: its stored objects over the wire, its chunks in full.
    repository = api.open_repository(REPO, config=str(env.cwd / "model_repos.yaml"))
    assert result["cached_bytes"] == 0 and result["fetched_raw_bytes"] == result["total_size"]
    assert (result["fetched_raw_bytes"], result["fetched_bytes"]) == version_bytes(repository, "m", "v1")


def test_reference_files_of_the_wrong_size_give_only_their_right_chunks(env, tmp_path):
    src = _model(tmp_path / "src")
    env.push(src)
    ref = tmp_path / "ref"
    for path, data in (
        ("empty", b"not empty"),
        ("a.txt", b"top level\nmore"),
        ("w.bin", (src / "w.bin").read_bytes() + b"tail"),
    ):
        write_file(ref / path, data)
    dest = tmp_path / "dest"
    result = _json(ok(env.pull(dest, "--reference", ref, "--json")))
    assert files_of(dest) == files_of(src)
    assert result["reused_bytes"] > 0  # w.bin's leading chunks came from the reference


# -- defect 7: never into a repository; "" is not a directory ----------------------------------------
def test_pull_never_writes_into_or_around_a_repository(env, tmp_path):
    src = _model(tmp_path / "src")
    env.push(src)
    before = env.storage()
    other = tmp_path / "other-repo"  # a repository the config does not name
    write_file(other / "aim-repo.json", (env.store / "aim-repo.json").read_bytes())
    (tmp_path / "link-to-store").symlink_to(env.store, target_is_directory=True)
    write_file(tmp_path / "around" / "nested" / "aim-repo.json", b"{}")  # an immediate subdirectory
    write_file(tmp_path / "deeper" / "sub" / "deep" / "aim-repo.json", b"{}")  # where the version writes
    cases = [
        (env.store, "is the repository"),
        (env.store / "models", "lies inside the repository"),
        (env.store / "blobs" / "new", "lies inside the repository"),  # DEST does not exist yet
        (tmp_path / "link-to-store", "is the repository"),
        (env.cwd, "contains the repository"),  # the config's repository, inside DEST
        (tmp_path, "contains the repository"),
        (other, "is the repository"),
        (other / "sub", "lies inside the repository"),
        (tmp_path / "around", "contains the repository"),
        (tmp_path / "deeper", "repository's directory"),
    ]
    for dest, needle in cases:
        one_line_error(env.pull(dest), 2, needle, "outside every repository")
    assert env.storage() == before
    assert sorted(p.name for p in other.iterdir()) == ["aim-repo.json"]
    assert list((tmp_path / "deeper").rglob("*.txt")) == [] and not (tmp_path / "deeper" / ".aim").exists()
    assert not (tmp_path / "around" / ".aim").exists()


def test_the_empty_string_is_not_a_directory(env, tmp_path):
    src = _model(tmp_path / "src")
    env.push(src)
    listing = sorted(p.name for p in env.cwd.iterdir())
    one_line_error(env.pull(""), 2, "empty string", "use . for the current one")
    one_line_error(env.pull(tmp_path / "dest", "--reference", ""), 2, "empty string")
    one_line_error(env.aim("model", "push", REPO, "m", "", "--tag", "v2"), 2, "DIR", "empty string")
    assert sorted(p.name for p in env.cwd.iterdir()) == listing  # nothing pulled into the current directory
    assert not (env.store / "models" / "m" / "versions" / "v2.json").exists()


# -- defect 8: the mode comes after the rename ------------------------------------------------------
def _modes_model(root: Path) -> Path:
    write_file(root / "read-only.txt", b"look, do not touch\n", 0o444)
    write_file(root / "write-only.bin", random_bytes(300 * 1024, 2), 0o200)
    write_file(root / "run.sh", b"#!/bin/sh\n", 0o755)
    return root


def test_read_only_and_write_only_files_pull_as_a_user(env, tmp_path):
    """As a user (root without its permission override): a 0200 file cannot be re-read once it
    has its mode, a 0444 one not rewritten. Both pull, and pull again."""
    src = _modes_model(tmp_path / "src")
    env.push(src)
    dest = tmp_path / "dest"
    ok(env.pull(dest, prefix=drop_dac_caps()))
    assert files_of(dest) == files_of(src)
    ok(env.pull(dest, prefix=drop_dac_caps()))  # the 0200 file cannot be checked: fetched again
    assert files_of(dest) == files_of(src)
    assert work_files(dest) == []


def test_rerun_after_an_older_pull_left_partials_with_their_final_modes(env, tmp_path):
    """An older aim_cli applied the mode before the rename: killed between the two, it left the
    verified partial read-only (or write-only). The rerun, as a user, finishes from it."""
    src = _modes_model(tmp_path / "src")
    env.push(src)
    dest = tmp_path / "dest"
    for entry in env.manifest().files:
        write_file(_partial(dest, entry), (src / entry.path).read_bytes(), entry.mode)
    result = _json(ok(env.pull(dest, "--json", prefix=drop_dac_caps())))
    assert files_of(dest) == files_of(src)
    assert result["fetched_bytes"] == 0
    assert work_files(dest) == []


# -- defect 10: one line, never a traceback ----------------------------------------------------------
def test_push_refuses_names_that_are_not_utf8_and_messages_that_are_not(env, tmp_path):
    src = _model(tmp_path / "src")
    write_file(src / "sub" / "bad\udcff.bin", b"x")  # the bytes b"bad\xff.bin" on disk
    one_line_error(env.aim("model", "push", REPO, "m", src, "--tag", "v1"), 2, "sub/bad\\xff.bin", "UTF-8")
    (src / "sub" / "bad\udcff.bin").unlink()
    one_line_error(env.aim("model", "push", REPO, "m", src, "--tag", "v1", "-m", "caf\udce9"), 2, "message", "UTF-8")
    assert not (env.store / "models").exists()


def _deep_dirs(base: Path, levels: int) -> Path:
    """``base/d/d/.../d``, made one level at a time (os.makedirs recurses per level)."""
    path = base
    for _ in range(levels):
        path = path / "d"
        os.mkdir(path)
    return path


def _remove_deep_dirs(base: Path, levels: int) -> None:
    """Undo _deep_dirs (as far as it got), bottom-up: shutil.rmtree recurses per level too. What
    hangs off the chain (a pulled model) is shallow and goes with rmtree."""
    chain = [base]
    while len(chain) <= levels and (chain[-1] / "d").is_dir():
        chain.append(chain[-1] / "d")
    for path in reversed(chain[1:]):
        for child in path.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
        path.rmdir()


def test_push_refuses_a_tree_deeper_than_pull_can_write(env, tmp_path):
    src = _model(tmp_path / "src")
    bottom = _deep_dirs(src, 1000)
    write_file(bottom / "f.bin", b"deep")
    try:
        one_line_error(env.aim("model", "push", REPO, "m", src, "--tag", "v1"), 2, "deeper than", "rename or move")
    finally:
        _remove_deep_dirs(src, 1000)
    assert not (env.store / "models").exists()


def test_pull_into_a_deep_destination_does_not_recurse(env, tmp_path):
    src = _model(tmp_path / "src")
    env.push(src)
    levels = 1200  # past Python's recursion limit, within PATH_MAX
    dest = Path(*["d"] * levels)  # relative to the working directory: created by the pull
    try:
        ok(env.pull(dest))
        assert files_of(env.cwd / dest) == files_of(src)
    finally:
        _remove_deep_dirs(env.cwd, levels)


@pytest.mark.parametrize("kind", ["directory", "leftover-directory", "symlink", "fifo", "hard-link"])
def test_a_stray_entry_in_the_partial_directory_is_refused(env, tmp_path, kind):
    src = _model(tmp_path / "src")
    env.push(src)
    entry = next(e for e in env.manifest().files if e.path == "w.bin")
    dest = tmp_path / "dest"
    partial = _partial(dest, entry)
    partial.parent.mkdir(parents=True)
    victim = write_file(tmp_path / "outside" / "victim.bin", b"must stay as it is")
    if kind == "directory":
        partial.mkdir()
    elif kind == "leftover-directory":  # at a name of no file of this version
        (partial.parent / ("0" * 32)).mkdir()
    elif kind == "symlink":
        partial.symlink_to(victim)
    elif kind == "fifo":  # opening it for writing would wait for a reader forever
        os.mkfifo(partial)
    else:
        os.link(victim, partial)
    res = env.pull(dest, timeout=60)
    one_line_error(res, 2, ".aim/partial/", "not a partial file", "remove it")
    assert victim.read_bytes() == b"must stay as it is"
    assert files_of(dest) == {}, describe(res)


# -- defect 12: case clashes, .aim* names --------------------------------------------------------------
def test_paths_differing_by_case_pull_on_a_case_sensitive_destination(env, tmp_path):
    src = tmp_path / "src"
    write_file(src / "A.bin", b"upper")
    write_file(src / "a.bin", b"lower")
    write_file(src / "1:2.txt", b"a colon is not a drive letter")
    env.push(src)
    dest = tmp_path / "dest"
    ok(env.pull(dest))
    assert files_of(dest) == files_of(src)


def test_case_clashes_are_refused_only_where_case_is_ignored():
    from aim_cli.pull.case import case_clashes, check_case_clashes

    paths = ["A.bin", "B/x", "a.bin", "b", "c/D.txt", "c/d.txt", "e/f"]
    assert case_clashes(paths) == [("A.bin", "a.bin"), ("c/D.txt", "c/d.txt"), ("b", "B/x")]
    check_case_clashes(paths, lambda: False)  # a case-sensitive DEST takes them all
    with pytest.raises(Exception) as e:
        check_case_clashes(paths, lambda: True)
    assert e.value.exit_code == 2 and "'A.bin' and 'a.bin'" in str(e.value) and "2 more" in str(e.value)
    probed = []
    check_case_clashes(["a", "b/c"], lambda: probed.append(1) or True)
    assert probed == []  # no pair: DEST is not even probed


def test_push_says_which_aim_names_it_skips(env, tmp_path):
    src = _model(tmp_path / "src")
    write_file(src / ".aimfoo", b"mine")
    write_file(src / ".aim" / "partial" / "x", b"a pull's")
    res = ok(env.aim("model", "push", REPO, "m", src, "--tag", "v1", "--json"))
    assert res.stderr.strip().count("\n") == 0, describe(res)
    assert res.stderr.startswith("warning: skipped .aim, .aimfoo: names starting with .aim"), describe(res)
    assert json.loads(res.stdout)["skipped"] == [".aim", ".aimfoo"]
    dest = tmp_path / "dest"
    ok(env.pull(dest))
    assert ".aimfoo" not in files_of(dest) and files_of(dest) == files_of(src)
    quiet = ok(env.aim("model", "push", REPO, "m", tmp_path / "dest", "--tag", "v2"))
    assert quiet.stderr == ""  # nothing skipped, nothing said


def test_a_destination_name_that_is_not_utf8_is_shown_escaped(env, tmp_path):
    src = _model(tmp_path / "src")
    env.push(src)
    res = ok(env.aim("model", "pull", REPO, "m", tmp_path / "dest\udcff\n", "--tag", "v1"))  # the bytes b"dest\xff\n"
    # The summary's two lines, the name escaped on the first: its newline makes no line of its own.
    lines = res.stdout.splitlines()
    assert len(lines) == 2 and "dest\\xff\\n:" in lines[0] and lines[1].startswith("fetched "), describe(res)
    assert files_of(tmp_path / "dest\udcff\n") == files_of(src)


def test_display_path_is_one_printable_line():
    from aim_cli.util.fs import display_path

    assert display_path("weights/model.safetensors") == "weights/model.safetensors"
    assert display_path("caf\u00e9/a\nb\udcff\t") == "caf\u00e9/a\\nb\\xff\\t"
    assert display_path(b"raw\xfe") == "raw\\xfe"
