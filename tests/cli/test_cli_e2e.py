"""End-to-end tests: the installed ``aim_cli`` console script, run in a subprocess as a user would,
against a local repository and an S3 one (moto's server, tests/s3_fixtures.py).

Every test works in its own temporary directory holding its own model_repos.yaml. Error cases
assert the exit code of docs/design.md §11, one line on stderr (no traceback) and a hint.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import blake3
import pytest

from tests.helpers import (
    AIM,
    PUSH_LINE,
    altered_blob,
    assert_same_tree,
    base_env,
    describe,
    drop_dac_caps,
    files_of,
    make_mixed_model,
    ok,
    one_line_error,
    parse_size,
    random_bytes,
    run,
    tree,
    version_bytes,
    write_file,
)
from tests.s3_fixtures import S3_SERVERS, s3_location

REPO = "team-repo"
CHUNK = "64KiB"  # small chunks: a 3 MiB model has dozens of them, so dedup is visible


# -- the environment of one test ------------------------------------------------------------------
@dataclass
class AimEnv:
    """A working directory, the arguments of `repo create` for one backend, and access to the
    repository's storage (for tests that tamper with it)."""

    kind: str  # "local" or "s3"
    cwd: Path
    create_args: list[str]
    yaml_entry: str
    s3: dict = field(default_factory=dict)  # bucket, endpoint; and the cached repository

    @property
    def config(self) -> Path:
        return self.cwd / "model_repos.yaml"

    @property
    def local_root(self) -> Path:
        assert self.kind == "local"
        return self.cwd / "store"

    def aim(self, *args, **kw) -> subprocess.CompletedProcess:
        kw.setdefault("cwd", self.cwd)
        t = time.monotonic()
        r = run(args, **kw)
        if os.environ.get("AIM_E2E_TIMING"):
            print(f"{time.monotonic() - t:6.2f}s {' '.join(map(str, args))[:100]}", file=sys.stderr)
        return r

    def write_config(self) -> None:
        self.config.write_text(f"repos:\n  {REPO}: {self.yaml_entry}\n")

    def repository(self):
        """The Repository, opened once per test (an S3 client costs a few hundred ms)."""
        if "repository" not in self.s3:
            from aim_cli import api

            self.s3["repository"] = api.open_repository(REPO, config=str(self.config))
        return self.s3["repository"]

    def storage_snapshot(self) -> dict:
        """Every stored object: key -> content hash (plus mtime for a local repository)."""
        if self.kind == "local":  # files with their mtimes; directories and transient leases aside
            return {
                k: v
                for k, v in tree(self.local_root, mtimes=True).items()
                if v[0] != "dir" and not k.startswith("locks/")
            }
        backend = self.repository().backend
        return {
            info.key: (info.size, blake3.blake3(backend.get(info.key)).hexdigest())
            for info in backend.list("")
            if not info.key.startswith("locks/")
        }

    def corrupt_blob(self, digest: str) -> None:
        """Flip one byte of a stored blob's chunk, behind aim_cli's back (``altered_blob``: a
        valid blob of the repository's format, whose content only the hash can tell wrong)."""
        from aim_cli.format.layout import blob_key

        if self.kind == "local":
            path = self.local_root / blob_key(digest)
            path.write_bytes(altered_blob(self.repository(), path.read_bytes()))
            return
        backend = self.repository().backend
        backend.put(blob_key(digest), altered_blob(self.repository(), backend.get(blob_key(digest))))

    def remove_blob(self, digest: str) -> None:
        from aim_cli.format.layout import blob_key

        self.repository().backend.delete(blob_key(digest))

    def read_manifest(self, model: str, tag: str) -> bytes:
        from aim_cli.format.layout import manifest_key

        return self.repository().backend.get(manifest_key(model, tag))

    def write_manifest(self, model: str, tag: str, raw: bytes) -> None:
        from aim_cli.format.layout import manifest_key

        if self.kind == "local":  # by hand, as the brief of these tests says: a file on disk
            path = self.local_root / manifest_key(model, tag)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(raw)
            return
        self.repository().backend.put(manifest_key(model, tag), raw)

    def data_still_there(self) -> bool:
        if self.kind == "local":
            return (self.local_root / "aim-repo.json").is_file() and any((self.local_root / "blobs").rglob("*"))
        backend = self.repository_raw()
        return backend.exists("aim-repo.json") and any(True for _ in backend.list("blobs/"))

    def repository_raw(self):
        """The S3 backend, without going through the config (used once the entry is removed)."""
        from aim_cli.backends.s3.backend import S3Backend

        return S3Backend(self.s3["bucket"], "models", endpoint_url=self.s3["endpoint"], region="us-east-1")


@pytest.fixture(params=["local", *S3_SERVERS])
def aim_env(request, tmp_path) -> AimEnv:
    """A fresh working directory without a model_repos.yaml, for one backend."""
    cwd = tmp_path / "work"
    cwd.mkdir()
    if request.param == "local":
        return AimEnv("local", cwd, ["--type", "local", "--path", "store"], "{type: local, path: store}")
    endpoint, bucket = s3_location(request, request.param)
    path = f"s3://{bucket}/models"
    return AimEnv(
        "s3",
        cwd,
        ["--type", "s3", "--path", path, "--endpoint-url", endpoint, "--region", "us-east-1"],
        f"{{type: s3, path: '{path}', endpoint_url: '{endpoint}', region: us-east-1}}",
        {"bucket": bucket, "endpoint": endpoint},
    )


@pytest.fixture
def repo_setup(aim_env) -> AimEnv:
    """``aim_env`` with its model_repos.yaml written: one repository named REPO."""
    aim_env.write_config()
    return aim_env


@pytest.fixture
def local_repo(tmp_path) -> AimEnv:
    """A local repository only (for the tests that need a large model or file-system tricks)."""
    cwd = tmp_path / "work"
    cwd.mkdir()
    env = AimEnv("local", cwd, ["--type", "local", "--path", "store"], "{type: local, path: store}")
    env.write_config()
    return env


def push_model(env: AimEnv, model: str, src: Path, tag: str, *extra) -> str:
    """Push and return the manifest digest from the output line."""
    res = ok(env.aim("model", "push", REPO, model, src, "--tag", tag, *extra))
    if "already pushed" in res.stdout:
        return res.stdout.split("digest ")[1].strip()
    m = PUSH_LINE.search(res.stdout)
    assert m, describe(res)
    return m["digest"]


def no_final_files(dest: Path) -> None:
    """DEST holds no file under a final name (aim_cli's .aim working directory aside)."""
    if dest.exists():
        assert files_of(dest) == {}, files_of(dest)


# -- the seed workflow, every role ----------------------------------------------------------------
def test_seed_workflow(aim_env, tmp_path):
    env = aim_env
    # Admin: create the repository (the config file is created in the current directory), check it.
    res = ok(env.aim("repo", "create", REPO, *env.create_args, "--chunk-size", CHUNK))
    assert f"created repository {REPO!r}" in res.stdout and "initialised" in res.stdout
    assert env.config.is_file()
    if env.kind == "local":
        assert (env.local_root / "aim-repo.json").is_file()
        meta = json.loads((env.local_root / "aim-repo.json").read_text())
        assert meta["chunking"]["avg_size"] == 64 * 1024

    listing = ok(env.aim("repo", "list")).stdout
    assert REPO in listing and env.kind in listing
    if env.kind == "local":
        assert str(env.local_root) in listing  # relative path shown resolved against the config's directory
    else:
        assert env.s3["bucket"] in listing and "region=us-east-1" in listing
    info = ok(env.aim("info")).stdout
    assert str(env.config) in info and "repositories: 1" in info and REPO in info

    # Developer: v1.0, then a near-identical v2.0.
    v1 = make_mixed_model(tmp_path / "checkpoint_v1", seed=1)
    v2 = tmp_path / "checkpoint_v2"
    shutil.copytree(v1, v2)
    weights = bytearray((v2 / "weights" / "model.safetensors").read_bytes())
    weights[len(weights) // 2 : len(weights) // 2 + 16] = b"\x00" * 16  # a fine-tuned tensor
    (v2 / "weights" / "model.safetensors").write_bytes(bytes(weights))
    (v2 / "config.json").write_bytes(b'{"hidden_size": 768, "layers": 12, "tuned": true}\n')
    total_v1 = sum(p.stat().st_size for p in v1.rglob("*") if p.is_file())
    total_v2 = sum(p.stat().st_size for p in v2.rglob("*") if p.is_file())

    out1 = ok(env.aim("model", "push", REPO, "resnet50", v1, "--tag", "v1.0", "-m", "first")).stdout
    m1 = PUSH_LINE.search(out1)
    assert m1, out1
    assert m1["files"] == "7" and abs(parse_size(m1["total"]) - total_v1) <= 0.05 * total_v1
    assert abs(parse_size(m1["new"]) - total_v1) <= 0.05 * total_v1  # an empty repository stores it all
    # The printed digest is the BLAKE3 of the manifest as stored.
    assert blake3.blake3(env.read_manifest("resnet50", "v1.0")).hexdigest() == m1["digest"]

    out2 = ok(env.aim("model", "push", REPO, "resnet50", v2, "--tag", "v2.0")).stdout
    m2 = PUSH_LINE.search(out2)
    assert m2, out2
    total2, new2 = parse_size(m2["total"]), parse_size(m2["new"])
    assert new2 < total2 / 10, f"v2 stored {m2['new']} of {m2['total']}: no dedup ({out2})"
    assert float(m2["dedup"]) > 90
    assert m2["digest"] != m1["digest"]
    assert blake3.blake3(env.read_manifest("resnet50", "v2.0")).hexdigest() == m2["digest"]
    ok(env.aim("model", "push", REPO, "bert", v1, "--tag", "v1beta", "-q"))

    # User: list models and versions.
    assert ok(env.aim("model", "list", REPO)).stdout.split() == ["bert", "resnet50"]
    versions = ok(env.aim("model", "versions", REPO, "resnet50")).stdout.splitlines()
    assert versions[0].split()[:2] == ["TAG", "CREATED"]
    assert [line.split()[0] for line in versions[1:]] == ["v1.0", "v2.0"]  # oldest first
    row = re.compile(
        r"(v\d\.0)\s+(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)\s+([\d.]+ \w+)\s+[\d.]+ \w+\s+[\d.]+ \w+\s+7 files\s+"
        r"([0-9a-f]{12})"
    )
    r1, r2 = row.match(versions[1]), row.match(versions[2])
    assert r1 and r2, versions
    assert r1[3] == m1["total"] and r1[4] == m1["digest"][:12] and versions[1].rstrip().endswith("first")
    assert r2[4] == m2["digest"][:12]
    as_json = json.loads(ok(env.aim("model", "versions", REPO, "resnet50", "--json")).stdout)
    assert [(v["tag"], v["digest"], v["files"], v["total_size"]) for v in as_json] == [
        ("v1.0", m1["digest"], 7, total_v1),
        ("v2.0", m2["digest"], 7, total_v2),
    ]

    # Pull v1.0 (pinned by its digest): byte for byte and mode for mode the pushed directory.
    dest = tmp_path / "models" / "resnet50"
    res = ok(env.aim("model", "pull", REPO, "resnet50", dest, "--tag", "v1.0", "--digest", m1["digest"]))
    assert "pulled resnet50:v1.0 into" in res.stdout and "(newest)" not in res.stdout
    assert_same_tree(v1, dest)

    # Without --tag: the newest, named as such. Into the same DEST: only the changed chunks travel.
    res = ok(env.aim("model", "pull", REPO, "resnet50", dest))
    pulled = re.search(
        r"pulled resnet50:v2\.0 \(newest\) into .*: 7 files, ([\d.]+ \w+); [\d.]+s\n"
        r"fetched ([\d.]+ \w+) stored \(([\d.]+ \w+) of chunks\), reused ([\d.]+ \w+)",
        res.stdout,
    )
    assert pulled, res.stdout
    fetched, fetched_chunks, reused = (parse_size(pulled[i]) for i in (2, 3, 4))
    assert fetched < total_v2 / 10 and 0 < fetched_chunks < total_v2 / 10 and reused > total_v2 * 0.8, res.stdout
    assert_same_tree(v2, dest)

    # Maintenance: delete a version, then a model.
    res = ok(env.aim("model", "delete-version", REPO, "resnet50", "--tag", "v1.0"))
    assert "deleted resnet50:v1.0" in res.stdout
    assert [v["tag"] for v in json.loads(ok(env.aim("model", "versions", REPO, "resnet50", "--json")).stdout)] == [
        "v2.0"
    ]
    one_line_error(env.aim("model", "pull", REPO, "resnet50", tmp_path / "gone", "--tag", "v1.0"), 3, "v1.0")

    # No terminal on stdin and no --yes: refused, nothing deleted.
    one_line_error(env.aim("model", "delete", REPO, "resnet50"), 2, "--yes")
    assert "resnet50" in ok(env.aim("model", "list", REPO)).stdout.split()
    res = ok(env.aim("model", "delete", REPO, "resnet50", "--yes"))
    assert "deleted model resnet50 (1 version)" in res.stdout
    assert ok(env.aim("model", "list", REPO)).stdout.split() == ["bert"]
    one_line_error(env.aim("model", "versions", REPO, "resnet50"), 3, "resnet50", "model list")

    # Removing the repository touches only the config.
    res = ok(env.aim("repo", "delete", REPO))
    assert "untouched" in res.stdout
    assert REPO not in env.config.read_text()
    assert ok(env.aim("repo", "list")).stdout.startswith("no repositories")
    assert env.data_still_there()
    one_line_error(env.aim("model", "list", REPO), 3, REPO, "repo list")


def test_config_found_in_parent_and_by_flag(repo_setup, tmp_path):
    """Commands work from a subdirectory (config in a parent) and from elsewhere with --config or
    $AIM_CONFIG; a relative local path stays relative to the config file, not to the cwd."""
    env = repo_setup
    src = write_file(tmp_path / "m" / "w.bin", random_bytes(100_000, 3)).parent
    sub = env.cwd / "a" / "b"
    sub.mkdir(parents=True)
    ok(env.aim("model", "push", REPO, "m", src, "--tag", "v1", cwd=sub))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert ok(env.aim("--config", env.config, "model", "list", REPO, cwd=elsewhere)).stdout.split() == ["m"]
    res = run(["model", "list", REPO], cwd=elsewhere, env=base_env(AIM_CONFIG=str(env.config)))
    assert ok(res).stdout.split() == ["m"]
    if env.kind == "local":
        assert (env.local_root / "models" / "m" / "versions" / "v1.json").is_file()
        assert not (sub / "store").exists() and not (elsewhere / "store").exists()


# -- push: already pushed, conflicts ----------------------------------------------------------------
def test_push_same_tag_identical_content_writes_nothing(repo_setup, tmp_path):
    env = repo_setup
    src = make_mixed_model(tmp_path / "src", weights=500_000)
    digest = push_model(env, "m", src, "v1")
    before = env.storage_snapshot()
    res = ok(env.aim("model", "push", REPO, "m", src, "--tag", "v1", "-m", "another message"))
    assert "already pushed" in res.stdout and digest in res.stdout
    assert env.storage_snapshot() == before


def test_push_same_tag_other_content_conflicts(repo_setup, tmp_path):
    env = repo_setup
    src = make_mixed_model(tmp_path / "src", weights=500_000)
    push_model(env, "m", src, "v1")
    before = env.storage_snapshot()
    (src / "config.json").write_bytes(b"{}\n")
    one_line_error(env.aim("model", "push", REPO, "m", src, "--tag", "v1"), 4, "v1", "already exists", "new --tag")
    assert env.storage_snapshot() == before
    os.chmod(src / "run.sh", 0o644)  # a mode alone is other content too
    (src / "config.json").write_bytes(b'{"hidden_size": 768, "layers": 12}\n')
    one_line_error(env.aim("model", "push", REPO, "m", src, "--tag", "v1"), 4, "new --tag")


# -- not found -----------------------------------------------------------------------------------------
def test_unknown_repo_model_tag(repo_setup, tmp_path):
    env = repo_setup
    src = write_file(tmp_path / "src" / "a.bin", b"x" * 1000).parent
    push_model(env, "m", src, "v1")
    dest = tmp_path / "dest"
    one_line_error(env.aim("model", "list", "nope"), 3, "'nope'", "aim_cli repo list")
    one_line_error(env.aim("model", "push", "nope", "m", src, "--tag", "v2"), 3, "'nope'", "repo list")
    one_line_error(env.aim("model", "pull", "nope", "m", dest), 3, "'nope'")
    one_line_error(env.aim("repo", "delete", "nope"), 3, "'nope'")
    one_line_error(env.aim("model", "versions", REPO, "ghost"), 3, "'ghost'", "aim_cli model list")
    one_line_error(env.aim("model", "pull", REPO, "ghost", dest), 3, "'ghost'", "model list")
    one_line_error(env.aim("model", "pull", REPO, "ghost", dest, "--tag", "v1"), 3, "'ghost'", "model list")
    one_line_error(env.aim("model", "delete", REPO, "ghost", "--yes"), 3, "'ghost'")
    one_line_error(env.aim("model", "delete-version", REPO, "ghost", "--tag", "v1"), 3, "'ghost'")
    one_line_error(env.aim("model", "pull", REPO, "m", dest, "--tag", "v9"), 3, "'v9'", "aim_cli model versions")
    one_line_error(env.aim("model", "delete-version", REPO, "m", "--tag", "v9"), 3, "'v9'", "model versions")
    assert not dest.exists()  # nothing was pulled, not even DEST created


@pytest.mark.parametrize(
    "args",
    [
        ["repo", "create", "bad/name", "--type", "local", "--path", "x"],
        ["repo", "create", ".hidden", "--type", "local", "--path", "x"],
        ["repo", "create", "a" * 129, "--type", "local", "--path", "x"],
        ["model", "list", "../etc"],
        ["model", "push", REPO, "bad name", "SRC", "--tag", "v1"],
        ["model", "push", REPO, "m", "SRC", "--tag", "v1/../../x"],
        ["model", "push", REPO, "..", "SRC", "--tag", "v1"],
        ["model", "push", REPO, "m", "SRC", "--tag", ""],
        ["model", "pull", REPO, "-m", "DEST"],
        ["model", "pull", REPO, "m", "DEST", "--tag", "../v1"],
        ["model", "versions", REPO, "m:x"],
        ["model", "delete-version", REPO, "m", "--tag", ".v1"],
        ["model", "delete", REPO, "a/b/c", "--yes"],  # a/b is a namespaced model (design §2.2); two levels are not
        ["model", "push", REPO, "org/../x", "SRC", "--tag", "v1"],
    ],
)
def test_invalid_names(local_repo, tmp_path, args):
    env = local_repo
    src = write_file(tmp_path / "src" / "a.bin", b"x").parent
    args = [str(src) if a == "SRC" else str(tmp_path / "dest") if a == "DEST" else a for a in args]
    if args[:2] == ["model", "pull"] and args[3] == "-m":
        args[3:4] = ["--", "-m"]  # a name starting with '-' given after '--'
    before = env.config.read_text()
    one_line_error(env.aim(*args), 2, "invalid", "name", "A-Z a-z 0-9")
    assert env.config.read_text() == before
    assert not (tmp_path / "dest").exists() and not (env.cwd / "x").exists()
    assert not (env.local_root / "models").exists()


def test_verbose_adds_the_traceback(local_repo):
    res = local_repo.aim("-v", "model", "list", "nope")
    assert res.returncode == 3, describe(res)
    assert "Traceback" in res.stderr and "NotFoundError" in res.stderr
    assert res.stderr.strip().splitlines()[-1].startswith("error: unknown repository 'nope'")


def test_missing_tag_option_is_a_usage_error(local_repo, tmp_path):
    src = write_file(tmp_path / "src" / "a.bin", b"x").parent
    res = local_repo.aim("model", "push", REPO, "m", src)
    assert res.returncode == 2, describe(res)
    assert "Traceback" not in res.stderr and "--tag" in res.stderr


# -- configuration errors ---------------------------------------------------------------------------
def test_malformed_yaml(tmp_path):
    (tmp_path / "model_repos.yaml").write_text("repos:\n  r: {type: local, path: store}\n  bad: x: y\n")
    for args in (
        ["repo", "list"],
        ["model", "list", "r"],
        ["info"],
        ["repo", "create", "z", "--type", "local", "--path", "z"],
    ):
        one_line_error(run(args, cwd=tmp_path), 7, "not valid YAML", "line 3", str(tmp_path / "model_repos.yaml"))
    assert not (tmp_path / "z").exists()


def test_unknown_key(tmp_path):
    (tmp_path / "model_repos.yaml").write_text("repos:\n  r: {type: local, path: store, regoin: us-east-1}\n")
    one_line_error(run(["repo", "list"], cwd=tmp_path), 7, "regoin", "'r'")
    one_line_error(run(["model", "list", "r"], cwd=tmp_path), 7, "regoin")


@pytest.mark.parametrize(
    "text, needle",
    [
        ("repos:\n  r: {type: ftp, path: store}\n", "ftp"),
        ("repos:\n  r: {type: local}\n", "path"),
        ("repos:\n  r: {type: s3, path: 'http://bucket/x'}\n", "s3://"),
        ("repos:\n  'bad name': {type: local, path: x}\n", "bad name"),
        ("repos:\n  r: {type: local, path: 5}\n", "'path'"),
        ("- just\n- a list\n", "repos"),
    ],
)
def test_invalid_config(tmp_path, text, needle):
    (tmp_path / "model_repos.yaml").write_text(text)
    one_line_error(run(["repo", "list"], cwd=tmp_path), 7, needle)


def test_duplicate_repository_name_in_config(tmp_path):
    """A hand-merged file that names a repository twice: refused (7) by every command, before
    anything is written."""
    text = "repos:\n  a: {type: local, path: x}\n  a: {type: local, path: y}\n"
    (tmp_path / "model_repos.yaml").write_text(text)
    one_line_error(run(["repo", "list"], cwd=tmp_path), 7, "'a'")
    one_line_error(run(["repo", "create", "b", "--type", "local", "--path", "z"], cwd=tmp_path), 7, "'a'")
    assert (tmp_path / "model_repos.yaml").read_text() == text
    assert not (tmp_path / "z").exists()


def test_no_config_found(tmp_path):
    assert not any((d / "model_repos.yaml").exists() for d in (tmp_path, *tmp_path.parents)), (
        "a model_repos.yaml in a parent of the test directory makes this test meaningless"
    )
    env = base_env()
    assert "AIM_CONFIG" not in env
    for args in (["repo", "list"], ["model", "list", "r"], ["repo", "delete", "r"]):
        one_line_error(run(args, cwd=tmp_path, env=env), 7, "no model_repos.yaml found", "--config", "AIM_CONFIG")
    one_line_error(
        run(["--config", tmp_path / "missing.yaml", "repo", "list"], cwd=tmp_path, env=env), 7, "missing.yaml"
    )
    one_line_error(
        run(["repo", "list"], cwd=tmp_path, env=base_env(AIM_CONFIG=str(tmp_path / "gone.yaml"))),
        7,
        "gone.yaml",
        "AIM_CONFIG",
    )
    # `info` is a diagnostic: it says that none was found, and succeeds.
    assert "none found" in ok(run(["info"], cwd=tmp_path, env=env)).stdout
    assert list(tmp_path.iterdir()) == []


def test_repo_create_conflicts_and_storage_errors(local_repo, tmp_path):
    env = local_repo
    ok(env.aim("repo", "create", "second", "--type", "local", "--path", "store2"))
    before = env.config.read_text()
    # The name is taken: exit 4, the config unchanged, and the new path untouched.
    one_line_error(
        env.aim("repo", "create", "second", "--type", "local", "--path", "other"), 4, "second", "already exists"
    )
    assert env.config.read_text() == before
    assert not (env.cwd / "other").exists(), "a refused `repo create` initialised storage anyway"
    # The path is a file: the storage cannot be used (6), nothing is recorded.
    (env.cwd / "afile").write_text("x")
    one_line_error(env.aim("repo", "create", "third", "--type", "local", "--path", "afile"), 6, "afile")
    assert env.config.read_text() == before
    # --no-check records it without touching the storage.
    ok(env.aim("repo", "create", "later", "--type", "local", "--path", "later-store", "--no-check"))
    assert "later" in env.config.read_text() and not (env.cwd / "later-store").exists()


@pytest.mark.parametrize("size", ["abc", "10", "64GiB"])
def test_repo_create_bad_chunk_size(tmp_path, size):
    res = run(["repo", "create", "r", "--type", "local", "--path", "store", "--chunk-size", size], cwd=tmp_path)
    one_line_error(res, 2, "size")
    assert not (tmp_path / "model_repos.yaml").exists() and not (tmp_path / "store").exists()


# -- DIR problems -----------------------------------------------------------------------------------
def test_push_dir_problems(local_repo, tmp_path):
    env = local_repo
    push = lambda d, *extra, **kw: env.aim("model", "push", REPO, "m", d, "--tag", "v1", *extra, **kw)  # noqa: E731
    one_line_error(push(tmp_path / "missing"), 2, "does not exist")
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    one_line_error(push(tmp_path / "empty"), 2, "no files")
    write_file(tmp_path / "plain.bin", b"x")
    one_line_error(push(tmp_path / "plain.bin"), 2, "not a directory")

    # An unreadable file and an unreadable subdirectory (permissions obeyed even when root).
    unreadable = tmp_path / "unreadable"
    write_file(unreadable / "ok.bin", b"fine")
    write_file(unreadable / "locked.bin", b"secret", 0o000)
    line = one_line_error(push(unreadable, prefix=drop_dac_caps()), 2, "locked.bin", "permissions")
    assert "cannot read" in line
    closed = tmp_path / "closed"
    write_file(closed / "ok.bin", b"fine")
    write_file(closed / "sub" / "x.bin", b"x")
    os.chmod(closed / "sub", 0o000)
    try:
        one_line_error(push(closed, prefix=drop_dac_caps()), 2, "sub", "permissions")
    finally:
        os.chmod(closed / "sub", 0o755)

    # A special file (fails for root too).
    fifo_dir = tmp_path / "fifo"
    write_file(fifo_dir / "ok.bin", b"fine")
    os.mkfifo(fifo_dir / "pipe")
    one_line_error(push(fifo_dir), 2, "pipe", "not a regular file")
    assert not (env.local_root / "models").exists()


def test_symlinks_refused_then_followed(repo_setup, tmp_path):
    env = repo_setup
    target = write_file(tmp_path / "hf-cache" / "blobs" / "abc123", random_bytes(300_000, 7), 0o640)
    src = tmp_path / "snapshot"
    write_file(src / "config.json", b"{}\n")
    (src / "weights").mkdir()
    (src / "weights" / "model.safetensors").symlink_to(target)
    one_line_error(
        env.aim("model", "push", REPO, "m", src, "--tag", "v1"), 2, "weights/model.safetensors", "--follow-symlinks"
    )
    assert not env.repository().has_version("m", "v1")

    ok(env.aim("model", "push", REPO, "m", src, "--tag", "v1", "--follow-symlinks"))
    dest = tmp_path / "dest"
    ok(env.aim("model", "pull", REPO, "m", dest, "--tag", "v1"))
    pulled = dest / "weights" / "model.safetensors"
    assert not pulled.is_symlink() and pulled.is_file()
    assert pulled.read_bytes() == target.read_bytes()
    assert files_of(dest).keys() == {"config.json", "weights/model.safetensors"}

    # Links that cannot be followed to a regular file are refused even with --follow-symlinks.
    (src / "dirlink").symlink_to(tmp_path / "hf-cache")
    one_line_error(env.aim("model", "push", REPO, "m", src, "--tag", "v2", "--follow-symlinks"), 2, "dirlink")
    (src / "dirlink").unlink()
    (src / "broken").symlink_to(tmp_path / "nowhere")
    one_line_error(env.aim("model", "push", REPO, "m", src, "--tag", "v2", "--follow-symlinks"), 2, "broken")


# -- integrity --------------------------------------------------------------------------------------
def _manifest(env: AimEnv, model: str, tag: str) -> dict:
    return json.loads(env.read_manifest(model, tag))


def test_altered_blob_fails_the_pull(repo_setup, tmp_path):
    env = repo_setup
    src = tmp_path / "src"
    write_file(src / "a.bin", random_bytes(400_000, 11))
    write_file(src / "b.txt", b"small file\n")
    push_model(env, "m", src, "v1")
    files = {f["path"]: f for f in _manifest(env, "m", "v1")["files"]}
    bad = files["a.bin"]["chunks"][-1][0]
    env.corrupt_blob(bad)
    dest = tmp_path / "dest"
    one_line_error(
        env.aim("model", "pull", REPO, "m", dest, "--tag", "v1"), 5, bad, "corrupt", "does not match its hash"
    )
    assert not (dest / "a.bin").exists()
    for path, info in files_of(dest).items():  # whatever was completed is complete and verified
        assert info == files_of(src)[path]
    # A missing blob is an integrity error too.
    env.remove_blob(bad)
    one_line_error(env.aim("model", "pull", REPO, "m", tmp_path / "dest2", "--tag", "v1"), 5, bad, "missing")
    assert not (tmp_path / "dest2" / "a.bin").exists()


HOSTILE_PATHS = {
    "dotdot": ["../x"],
    "absolute": ["/etc/aim-e2e-hostile"],
    "duplicate": ["a.txt", "a.txt"],
    "inner-dotdot": ["a/../b"],
    "reserved": [".aim/x"],
    "aim-prefix": [".aimx"],
    "backslash": ["..\\x"],
    "file-and-dir": ["a", "a/b"],
    "dot": ["./a"],
    "deep": ["/".join(["d"] * 1000)],  # pull once recursed once per level creating its directories
}


def test_hostile_manifests(repo_setup, tmp_path):
    """Manifests written by hand (valid JSON in the format's key order, naming blobs that exist)
    whose paths would escape DEST or collide: every pull refuses (5) and writes nothing."""
    env = repo_setup
    content = b"payload of the hostile manifest\n"
    src = write_file(tmp_path / "src" / "a.txt", content).parent
    push_model(env, "m", src, "v1")
    good = _manifest(env, "m", "v1")["files"][0]
    parent = tmp_path / "pulls"
    parent.mkdir()
    (parent / "bystander.txt").write_text("untouched")
    for n, (case, paths) in enumerate(sorted(HOSTILE_PATHS.items())):
        tag = f"evil-{case}"
        manifest = {
            "format": 1,
            "model": "m",
            "tag": tag,
            "created_at": f"2030-01-01T00:00:{n:02d}.000000Z",
            "created_by": "mallory@host",
            "message": "",
            "total_size": len(content) * len(paths),
            "files": [
                {"path": p, "size": good["size"], "mode": 0o644, "blake3": good["blake3"], "chunks": good["chunks"]}
                for p in paths
            ],
        }
        env.write_manifest("m", tag, json.dumps(manifest).encode())
        dest = parent / f"dest-{case}"
        before = tree(parent, mtimes=True)
        # Pinned by tag; once also as the newest version (each is the newest by created_at).
        for extra in (["--tag", tag], []) if n == 0 else (["--tag", tag],):
            line = one_line_error(env.aim("model", "pull", REPO, "m", dest, *extra), 5, "manifest", "invalid")
            assert "do not use it" in line, (case, line)
            after = tree(parent, mtimes=True)
            assert {k: v for k, v in after.items() if k != dest.name and not k.startswith(dest.name + "/")} == before, (
                case
            )
            no_final_files(dest)
    assert not Path("/etc/aim-e2e-hostile").exists()
    assert not (tmp_path / "x").exists() and not (parent / "x").exists() and not (parent / "b").exists()
    # The good version is still usable.
    ok(env.aim("model", "pull", REPO, "m", tmp_path / "good", "--tag", "v1"))
    assert (tmp_path / "good" / "a.txt").read_bytes() == content


def test_wrong_digest_pin(repo_setup, tmp_path):
    env = repo_setup
    src = write_file(tmp_path / "src" / "a.bin", b"abc" * 1000).parent
    digest = push_model(env, "m", src, "v1")
    wrong = ("0" if digest[0] != "0" else "1") + digest[1:]
    dest = tmp_path / "dest"
    one_line_error(env.aim("model", "pull", REPO, "m", dest, "--tag", "v1", "--digest", wrong), 5, wrong, "pinned")
    one_line_error(env.aim("model", "pull", REPO, "m", dest, "--tag", "v1", "--digest", digest[:12]), 2, "64")
    no_final_files(dest)


# -- the destination --------------------------------------------------------------------------------
def _two_file_model(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    write_file(src / "a.txt", b"top level\n")
    write_file(src / "sub" / "b.txt", b"in a subdirectory\n")
    return src


def test_pull_refuses_a_symlinked_subdirectory(repo_setup, tmp_path):
    env = repo_setup
    push_model(env, "m", _two_file_model(tmp_path), "v1")
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "sub").symlink_to(outside, target_is_directory=True)
    mtime = os.stat(outside).st_mtime_ns
    one_line_error(env.aim("model", "pull", REPO, "m", dest, "--tag", "v1"), 2, "sub", "symlink", "remove the link")
    assert list(outside.iterdir()) == [] and os.stat(outside).st_mtime_ns == mtime
    no_final_files(dest)
    assert (dest / "sub").is_symlink()


def test_pull_never_writes_through_a_symlinked_work_dir(local_repo, tmp_path):
    """DEST/.aim is where the lock and the partial files go: a symlink there must not redirect them."""
    env = local_repo
    src = _two_file_model(tmp_path)
    push_model(env, "m", src, "v1")
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / ".aim").symlink_to(outside, target_is_directory=True)
    mtime = os.stat(outside).st_mtime_ns
    res = env.aim("model", "pull", REPO, "m", dest, "--tag", "v1")
    assert os.stat(outside).st_mtime_ns == mtime and list(outside.iterdir()) == [], (
        f"the pull wrote into {outside} through the symlink {dest / '.aim'}\n{describe(res)}"
    )
    one_line_error(res, 2, ".aim", "symlink")


def test_pull_replaces_a_symlink_at_a_final_path_without_following_it(repo_setup, tmp_path):
    env = repo_setup
    src = _two_file_model(tmp_path)
    push_model(env, "m", src, "v1")
    victim = write_file(tmp_path / "outside" / "victim.txt", b"must stay as it is\n")
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "a.txt").symlink_to(victim)
    ok(env.aim("model", "pull", REPO, "m", dest, "--tag", "v1"))
    assert victim.read_bytes() == b"must stay as it is\n"
    assert not (dest / "a.txt").is_symlink()
    assert_same_tree(src, dest)


def test_pull_into_a_file_and_a_held_lock(local_repo, tmp_path):
    env = local_repo
    src = _two_file_model(tmp_path)
    push_model(env, "m", src, "v1")
    write_file(tmp_path / "afile", b"x")
    one_line_error(env.aim("model", "pull", REPO, "m", tmp_path / "afile", "--tag", "v1"), 2, "not a directory")
    # A lock held by a live process on this host: refused (4), naming the lock.
    dest = tmp_path / "dest"
    lock = write_file(
        dest / ".aim" / "pull.lock", json.dumps({"pid": os.getpid(), "host": socket.gethostname()}).encode()
    )
    one_line_error(env.aim("model", "pull", REPO, "m", dest, "--tag", "v1"), 4, "another pull", str(lock))
    no_final_files(dest)
    # Left by a process that is gone: taken over.
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock.write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname()}))
    ok(env.aim("model", "pull", REPO, "m", dest, "--tag", "v1"))
    assert_same_tree(src, dest)


# -- Ctrl-C ---------------------------------------------------------------------------------------------
def test_ctrl_c_during_pull_then_resume(local_repo, tmp_path):
    env = local_repo
    src = tmp_path / "big"
    for i in range(4):
        write_file(src / f"shard-{i}.bin", os.urandom(16 * 1024 * 1024))
    push_model(env, "big", src, "v1", "-q")
    dest = tmp_path / "dest"
    partial = dest / ".aim" / "partial"
    proc = subprocess.Popen(
        [str(AIM), "model", "pull", REPO, "big", str(dest), "--tag", "v1", "--jobs", "1"],
        cwd=env.cwd,
        env=base_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # As a terminal's Ctrl-C would find it: a pytest-xdist worker ignores SIGINT, and an
        # ignored signal stays ignored across exec (Python then installs no KeyboardInterrupt).
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, "the pull finished before it could be interrupted:\n" + "".join(
                proc.communicate()
            )
            try:
                if any(p.stat().st_blocks > 0 for p in partial.iterdir()):
                    break
            except FileNotFoundError:
                pass
            assert time.monotonic() < deadline, "no partial data appeared within 30 s"
            time.sleep(0.001)  # a polling interval, bounded by the deadline
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    res = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    assert proc.returncode == 130, describe(res)
    assert "Traceback" not in err and err.strip().count("\n") == 0 and "rerun" in err, describe(res)
    # Whatever has its final name is complete; the partial files are kept for the rerun.
    finals = files_of(dest)
    for path, info in finals.items():
        assert info == files_of(src)[path]
    # A loaded machine may deliver the signal after the last file got its final name: then
    # nothing is partial; else what was interrupted is kept for the rerun.
    if len(finals) < len(files_of(src)):
        assert any(partial.iterdir())
    assert not (dest / ".aim" / "pull.lock").exists()

    res = ok(env.aim("model", "pull", REPO, "big", dest, "--tag", "v1", "--json"))
    result = json.loads(res.stdout)
    raw, stored = version_bytes(env.repository(), "big", "v1")
    assert result["fetched_raw_bytes"] < raw == result["total_size"], f"the rerun fetched everything again: {result}"
    assert result["fetched_bytes"] < stored, f"the rerun fetched everything again: {result}"
    assert_same_tree(src, dest)


# -- stdout closed early ----------------------------------------------------------------------------
def test_output_into_a_pipe_closed_early_exits_0_quietly(local_repo, tmp_path):
    """`aim_cli model info ... | head -1`: the reader left once it had what it wanted. As for
    `git log | head -1`, that is exit 0 with nothing on stderr, not the "bug" exit 1. The output
    outgrows the pipe's buffer, so the writes after the reader left do fail."""
    env = local_repo
    src = tmp_path / "many"
    src.mkdir()
    files = 3000
    for i in range(files):
        (src / f"file-{i:05d}.bin").write_bytes(i.to_bytes(4, "big"))
    ok(env.aim("model", "push", REPO, "many", src, "--tag", "v1", "--quiet"))
    for extra in ([], ["--json"]):
        proc = subprocess.Popen(
            [str(AIM), "model", "info", REPO, "many", "--tag", "v1", *extra],
            cwd=env.cwd,
            env=base_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        if hasattr(fcntl, "F_GETPIPE_SZ"):  # each file's line holds at least its 64 hex digits
            assert files * 64 > 2 * fcntl.fcntl(proc.stdout, fcntl.F_GETPIPE_SZ), "the output would fit the pipe"
        first = os.read(proc.stdout.fileno(), 100)
        proc.stdout.close()
        err = proc.stderr.read()
        proc.stderr.close()
        code = proc.wait(timeout=60)
        assert first.startswith(b"{" if extra else b"many:v1"), first
        assert (code, err) == (0, b""), f"{extra}: exit {code}, stderr {err!r}"


# -- start-up ---------------------------------------------------------------------------------------
def test_python_dash_m(tmp_path):
    res = subprocess.run(
        [sys.executable, "-m", "aim_cli", "--help"],
        cwd=tmp_path,
        env=base_env(),
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    ok(res)
    assert "repo" in res.stdout and "model" in res.stdout and "info" in res.stdout


HEAVY = ("boto3", "botocore", "pyfastcdc", "rich", "cryptography", "zstandard", "numpy")
#: A local listing reads no blob (no zstandard), signs nothing (no cryptography) and decodes no
#: delta (no numpy); the S3 client (boto3) only loads for an S3 repository (docs/design.md §13).
HEAVY_FOR_LOCAL_LISTINGS = ("boto3", "botocore", "zstandard", "cryptography", "numpy")
#: The console script's entry point, run as the console script runs it, then which of the modules
#: named in argv[1] are loaded at exit.
_PROBE = """
import json, sys
from aim_cli.cli.main import main
try:
    main(sys.argv[2:])
except SystemExit as e:
    code = e.code
print("HEAVY=" + json.dumps([m for m in sys.argv[1].split(",") if m in sys.modules]) + " CODE=" + str(code))
"""


def heavy_modules_loaded(cwd: Path, heavy: tuple[str, ...], args: list[str]) -> tuple[list[str], str]:
    """Run ``aim_cli ARGS`` in a fresh interpreter: (its stdout lines, the probe's last line)."""
    res = subprocess.run(
        [sys.executable, "-c", _PROBE, ",".join(heavy), *args],
        cwd=cwd,
        env=base_env(),
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    assert res.returncode == 0, describe(res)
    lines = res.stdout.strip().splitlines()
    return lines[:-1], lines[-1]


@pytest.mark.parametrize("args", [["--help"], ["repo", "list"], ["info"], ["model", "--help"]])
def test_light_commands_do_not_import_heavy_modules(tmp_path, args):
    # An S3 entry in the config: listing it must still not load boto3.
    (tmp_path / "model_repos.yaml").write_text(
        "repos:\n  s3repo: {type: s3, path: 's3://bucket/x', region: us-east-1}\n  loc: {type: local, path: store}\n"
    )
    _, last = heavy_modules_loaded(tmp_path, HEAVY, args)
    assert last == "HEAVY=[] CODE=0", f"{args}: {last}"


@pytest.mark.parametrize(("args", "shown"), [(["model", "list", REPO], "m"), (["model", "versions", REPO, "m"], "v1")])
def test_local_listings_do_not_import_heavy_modules(local_repo, tmp_path, args, shown):
    """`model list` and `model versions` of a local repository load neither the S3 client, the blob
    codec, signing nor delta coding: each command imports what it uses (docs/design.md §13)."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "config.json").write_text('{"hidden_size": 8}\n')
    ok(local_repo.aim("model", "push", REPO, "m", src, "--tag", "v1", "--quiet"))
    out, last = heavy_modules_loaded(local_repo.cwd, HEAVY_FOR_LOCAL_LISTINGS, args)
    assert last == "HEAVY=[] CODE=0", f"{args}: {last}"
    assert shown in [line.split()[0] for line in out if line.strip()], out  # the command did its work


def test_repo_create_from_a_subdirectory_records_the_path_the_user_meant(tmp_path):
    """A relative --path is typed relative to the current directory, but the config records paths
    relative to itself: run from a subdirectory, the repository must land where the user pointed."""
    (tmp_path / "model_repos.yaml").write_text("repos: {}\n")
    sub = tmp_path / "team" / "work"
    sub.mkdir(parents=True)
    ok(run(["repo", "create", "r", "--type", "local", "--path", "store"], cwd=sub))
    assert (sub / "store" / "aim-repo.json").is_file()
    assert "team/work/store" in (tmp_path / "model_repos.yaml").read_text()
    listed = ok(run(["repo", "list"], cwd=tmp_path)).stdout  # from elsewhere: the same directory
    assert str(sub / "store") in listed


def test_pull_into_a_read_only_destination_is_one_line(local_repo, tmp_path):
    """Permissions obeyed even when root: a DEST the user may not write is exit 6, one line."""
    env = local_repo
    src = make_mixed_model(tmp_path / "src")
    ok(env.aim("model", "push", REPO, "m", src, "--tag", "v1"))
    dest = tmp_path / "ro"
    dest.mkdir()
    os.chmod(dest, 0o555)
    try:
        res = env.aim("model", "pull", REPO, "m", dest, "--tag", "v1", prefix=drop_dac_caps())
        one_line_error(res, 6, str(dest))
    finally:
        os.chmod(dest, 0o755)
    assert list(dest.iterdir()) == []


def test_pull_into_a_read_only_subdirectory_is_one_line(local_repo, tmp_path):
    """DEST is writable but one directory the version writes into is not: the rename fails late,
    still as one line with exit 6, and the files that could be placed are complete."""
    env = local_repo
    src = make_mixed_model(tmp_path / "src")
    ok(env.aim("model", "push", REPO, "m", src, "--tag", "v1"))
    dest = tmp_path / "dest"
    (dest / "weights").mkdir(parents=True)
    os.chmod(dest / "weights", 0o555)
    try:
        res = env.aim("model", "pull", REPO, "m", dest, "--tag", "v1", prefix=drop_dac_caps())
        one_line_error(res, 6, "Permission denied", "weights")
    finally:
        os.chmod(dest / "weights", 0o755)
    assert list((dest / "weights").iterdir()) == []
    for path, info in files_of(dest).items():
        assert info == files_of(src)[path]
    ok(env.aim("model", "pull", REPO, "m", dest, "--tag", "v1"))  # then it resumes and completes
    assert_same_tree(src, dest)
