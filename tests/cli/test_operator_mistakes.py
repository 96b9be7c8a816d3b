"""Operator mistakes a new user makes (issue 17, item 10): each is one line on stderr with an exit
code other than 1, through the installed console script."""

from __future__ import annotations

import json
import os
import subprocess

import blake3
import pytest

from tests.helpers import AIM, base_env, describe, ok, one_line_error, random_bytes, run, write_file


class Env:
    def __init__(self, tmp_path):
        self.tmp = tmp_path
        self.config = tmp_path / "model_repos.yaml"
        self.config.write_text("repos: {}\n")

    def cli(self, *args):
        return run(["--config", self.config, *args], cwd=self.tmp)

    def create(self, name, path, *options):
        return self.cli("repo", "create", name, "--type", "local", "--path", path, *options)


@pytest.fixture
def env(tmp_path):
    return Env(tmp_path)


def test_repo_create_on_an_existing_repository_refuses_other_values_and_says_already_initialised(env, tmp_path):
    store = tmp_path / "store"
    ok(env.create("a", store, "--format", "1", "--chunk-size", "64KiB"))
    meta = (store / "aim-repo.json").read_bytes()
    one_line_error(env.create("b", store, "--format", "2"), 4, "format 1", "65536", "--format 2")
    one_line_error(env.create("c", store, "--chunk-size", "1MiB"), 4, "format 1", "65536", "--chunk-size 1048576")
    one_line_error(env.create("d", store, "--format", "2", "--chunk-size", "1MiB"), 4, "--format 2 and --chunk-size")
    assert (store / "aim-repo.json").read_bytes() == meta  # nothing rewritten
    names = json.loads(ok(env.cli("repo", "list", "--json")).stdout)
    assert [r["name"] for r in names] == ["a"]  # a refused create records nothing

    same = ok(env.create("e", store, "--format", "1", "--chunk-size", "64KiB")).stdout
    assert "already initialised (format 1)" in same
    left_out = json.loads(ok(env.create("f", store, "--json")).stdout)  # an option left out never conflicts
    assert left_out["initialised"] is True and left_out["existing"] is True and left_out["format"] == 1
    fresh = json.loads(ok(env.create("g", tmp_path / "fresh", "--json")).stdout)
    assert fresh["existing"] is False
    assert "initialised (format 3)" in ok(env.create("h", tmp_path / "fresh2")).stdout  # the default


@pytest.mark.parametrize("size", ["256", "1023", "4MiB1", "5MiB", "0"])
def test_chunk_size_outside_1kib_to_4mib_is_refused(env, tmp_path, size):
    res = env.create("a", tmp_path / "store", "--chunk-size", size)
    assert res.returncode == 2, describe(res)
    assert not (tmp_path / "store" / "aim-repo.json").exists()


@pytest.mark.parametrize("size", ["1KiB", "4MiB"])
def test_chunk_size_bounds_are_accepted(env, tmp_path, size):
    ok(env.create("a", tmp_path / "store", "--chunk-size", size))


def _pushed(env, tmp_path, *tags):
    ok(env.create("r", tmp_path / "store"))
    write_file(tmp_path / "m" / "a.bin", random_bytes(20_000, 1))
    for tag in tags:
        ok(env.cli("model", "push", "r", "m", tmp_path / "m", "--tag", tag, "-q"))


def test_delete_version_refuses_a_repeated_tag_and_deletes_nothing(env, tmp_path):
    _pushed(env, tmp_path, "a", "b")
    one_line_error(env.cli("model", "delete-version", "r", "m", "--tag", "a", "--tag", "b"), 2, "'a'", "'b'")
    assert [v["tag"] for v in json.loads(ok(env.cli("model", "versions", "r", "m", "--json")).stdout)] == ["a", "b"]
    ok(env.cli("model", "delete-version", "r", "m", "--tag", "a"))
    assert [v["tag"] for v in json.loads(ok(env.cli("model", "versions", "r", "m", "--json")).stdout)] == ["b"]


def test_copy_dry_run_into_a_path_nested_in_the_source_refuses_like_the_copy(env, tmp_path):
    _pushed(env, tmp_path, "v1")
    ok(env.cli("repo", "create", "inner", "--type", "local", "--path", tmp_path / "store" / "sub", "--no-check"))
    dry = one_line_error(env.cli("model", "copy", "r", "m", "inner", "--dry-run"), 4, "inside the repository")
    real = one_line_error(env.cli("model", "copy", "r", "m", "inner"), 4, "inside the repository")
    assert dry == real
    assert not (tmp_path / "store" / "sub").exists()
    # Into a directory that holds other data: refused the same way too.
    write_file(tmp_path / "data" / "x", b"x")
    ok(env.cli("repo", "create", "data", "--type", "local", "--path", tmp_path / "data", "--no-check"))
    one_line_error(env.cli("model", "copy", "r", "m", "data", "--dry-run"), 4, "not empty")


def _on_a_terminal(env, *args, answer: bytes) -> subprocess.CompletedProcess:
    """Run ``aim_cli ARGS`` with a terminal on stdin (the command asks) that answers ``answer``."""
    primary, secondary = os.openpty()
    try:
        os.write(primary, answer)
        return subprocess.run(
            [str(AIM), "--config", str(env.config), *map(str, args)],
            stdin=secondary,
            capture_output=True,
            text=True,
            env=base_env(),
            timeout=60,
        )
    finally:
        os.close(secondary)
        os.close(primary)


def _declined(res: subprocess.CompletedProcess) -> None:
    assert res.returncode == 2, describe(res)
    assert res.stderr.strip().count("\n") == 0 and "declined" in res.stderr, describe(res)
    assert "Traceback" not in res.stderr


def test_declining_the_confirmation_exits_2_and_deletes_nothing(env, tmp_path):
    _pushed(env, tmp_path, "v1")
    _declined(_on_a_terminal(env, "model", "delete", "r", "m", answer=b"n\n"))
    assert json.loads(ok(env.cli("model", "versions", "r", "m", "--json")).stdout)[0]["tag"] == "v1"


def test_repo_create_refuses_a_missing_parent_unless_given_parents(env, tmp_path):
    # A mistyped mount point must not quietly become a repository on the local disk.
    mistyped = tmp_path / "mnt" / "nsf" / "models"
    one_line_error(env.create("r", mistyped), 2, f"{tmp_path / 'mnt' / 'nsf'} of", "does not exist", "--parents")
    assert not (tmp_path / "mnt").exists()
    assert json.loads(ok(env.cli("repo", "list", "--json")).stdout) == []
    ok(env.create("r", mistyped, "--parents"))
    assert (mistyped / "aim-repo.json").is_file()


def test_cache_prune_without_a_selection_asks_or_needs_all(env, tmp_path):
    from aim_cli.pull.cache import ChunkCache

    cache = ChunkCache(tmp_path / "cache")
    data = random_bytes(4096, 3)
    cache.put(blake3.blake3(data).hexdigest(), data)
    prune = ("cache", "prune", "--cache-dir", tmp_path / "cache")
    one_line_error(env.cli(*prune), 2, "refusing to empty", "--all", "--max-size")  # no terminal: refused
    _declined(_on_a_terminal(env, *prune, answer=b"n\n"))
    one_line_error(env.cli(*prune, "--all", "--max-size", "0"), 2, "--all and --max-size")
    assert cache.info() == (1, 4096)
    assert "removed 1 chunks" in ok(_on_a_terminal(env, *prune, answer=b"y\n")).stdout
    cache.put(blake3.blake3(data).hexdigest(), data)
    assert "removed 1 chunks" in ok(env.cli(*prune, "--all")).stdout
    assert cache.info() == (0, 0)
