"""`aim_cli repo create --type s3`, end to end: the real console script in a subprocess, talking
HTTP to the session's S3 server (tests/s3_fixtures.py), as an admin would run it.

A create that reaches the bucket writes ``aim-repo.json`` under the prefix and then the entry into
model_repos.yaml (comments kept); one that cannot reach it exits 6 with one line and leaves the
config untouched; ``--no-check`` records the entry without contacting anything.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest
import yaml

from tests.helpers import base_env, make_mixed_model, ok, one_line_error, run, tree, without_index
from tests.s3_fixtures import s3_region

#: A hand-edited, git-reviewed config: its comments and order must survive `repo create`.
EXISTING = """\
# Model repositories of the vision team. Reviewed in git: keep the comments.
repos:
  # scratch space on the shared disk
  scratch: {type: local, path: /mnt/nfs/scratch}   # trailing comment
"""
AWS_CREDENTIAL_VARS = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_PROFILE",
)


@pytest.fixture
def work(tmp_path) -> Path:
    cwd = tmp_path / "work"
    cwd.mkdir()
    (cwd / "model_repos.yaml").write_text(EXISTING)
    return cwd


def create_args(name: str, path: str, endpoint: str, *extra: str) -> list[str]:
    return [
        "repo",
        "create",
        name,
        "--type",
        "s3",
        "--path",
        path,
        "--region",
        s3_region(),
        "--endpoint-url",
        endpoint,
        *extra,
    ]


def keys_under(s3_client, bucket: str, prefix: str) -> list[str]:
    return [o["Key"] for o in s3_client.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", ())]


def entries(config: Path) -> dict:
    return yaml.safe_load(config.read_text())["repos"]


def assert_comments_kept(text: str) -> None:
    for line in EXISTING.splitlines():
        assert line in text, f"{line!r} lost from:\n{text}"


def test_create_initialises_the_prefix_and_records_the_entry(work, tmp_path, s3_endpoint, s3_bucket, s3_client):
    path = f"s3://{s3_bucket}/team/vision"
    res = ok(run(create_args("vision", path, s3_endpoint), cwd=work))
    assert "created repository 'vision'" in res.stdout and "initialised" in res.stdout

    # aim-repo.json, under the prefix and nowhere else.
    assert keys_under(s3_client, s3_bucket, "") == ["team/vision/aim-repo.json"]
    meta = json.loads(s3_client.get_object(Bucket=s3_bucket, Key="team/vision/aim-repo.json")["Body"].read())
    # A new repository is format 3 (docs/design.md §3.1): it pins its tensor chunking, codecs and deltas too.
    assert meta["format"] == 3 and meta["hash"] == "blake3" and meta["chunking"]["avg_size"] == 1 << 20
    assert list(meta) == ["format", "chunking", "hash", "tensor_chunking", "codecs", "deltas"]

    text = (work / "model_repos.yaml").read_text()
    assert_comments_kept(text)
    assert text.index("scratch:") < text.index("vision:")  # appended, order kept
    assert entries(work / "model_repos.yaml") == {
        "scratch": {"type": "local", "path": "/mnt/nfs/scratch"},
        "vision": {"type": "s3", "path": path, "region": s3_region(), "endpoint_url": s3_endpoint},
    }
    listing = ok(run(["repo", "list"], cwd=work)).stdout
    assert "vision" in listing and path in listing and f"endpoint={s3_endpoint}" in listing

    # The round trip on the new repository, byte for byte.
    src = make_mixed_model(tmp_path / "ckpt", seed=7)
    pushed = ok(run(["model", "push", "vision", "resnet", src, "--tag", "v1", "--quiet", "--json"], cwd=work))
    digest = json.loads(pushed.stdout)["digest"]
    assert keys_under(s3_client, s3_bucket, "team/vision/models/") == [
        "team/vision/models/resnet/summaries/v1.json",
        "team/vision/models/resnet/versions/v1.json",
    ]
    assert any(k.startswith("team/vision/blobs/") for k in keys_under(s3_client, s3_bucket, "team/vision/"))
    assert ok(run(["model", "list", "vision"], cwd=work)).stdout.split() == ["resnet"]
    versions = json.loads(ok(run(["model", "versions", "vision", "resnet", "--json"], cwd=work)).stdout)
    assert [(v["tag"], v["digest"]) for v in versions] == [("v1", digest)]
    dest = tmp_path / "pulled"
    ok(run(["model", "pull", "vision", "resnet", dest, "--tag", "v1", "--digest", digest, "--quiet"], cwd=work))
    assert without_index(tree(dest)) == tree(src)


def test_missing_bucket_exits_6_and_writes_nothing(work, tmp_path, s3_endpoint):
    bucket = f"aim-test-missing-{uuid.uuid4().hex[:12]}"
    res = run(create_args("vision", f"s3://{bucket}/vision", s3_endpoint), cwd=work)
    one_line_error(res, 6, f"bucket '{bucket}' does not exist", "create the bucket")
    assert (work / "model_repos.yaml").read_text() == EXISTING

    # Without a config file, none is created.
    empty = tmp_path / "empty"
    empty.mkdir()
    res = run(create_args("vision", f"s3://{bucket}/vision", s3_endpoint), cwd=empty)
    one_line_error(res, 6, bucket)
    assert list(empty.iterdir()) == []


def test_unreachable_endpoint_exits_6_quickly(work, closed_port, s3_endpoint):
    endpoint = f"http://127.0.0.1:{closed_port}"
    started = time.monotonic()
    res = run(create_args("vision", "s3://some-bucket/vision", endpoint), cwd=work, timeout=60)
    elapsed = time.monotonic() - started
    one_line_error(res, 6, "cannot reach S3 endpoint", f"127.0.0.1:{closed_port}", "endpoint_url")
    assert elapsed < 30, f"took {elapsed:.1f}s"
    assert (work / "model_repos.yaml").read_text() == EXISTING


def test_unreachable_endpoint_names_the_configured_url(work, closed_port, s3_endpoint):
    endpoint = f"http://127.0.0.1:{closed_port}"
    res = run(create_args("vision", "s3://some-bucket/vision", endpoint), cwd=work, timeout=60)
    line = one_line_error(res, 6, "cannot reach S3 endpoint")
    assert f"cannot reach S3 endpoint {endpoint} while" in line


def test_unknown_profile_is_one_line_exit_6(work, s3_endpoint, s3_bucket, s3_client):
    # The fixture points AWS_CONFIG_FILE/AWS_SHARED_CREDENTIALS_FILE at empty files: no profile exists.
    res = run(create_args("vision", f"s3://{s3_bucket}/vision", s3_endpoint, "--profile", "nosuch"), cwd=work)
    one_line_error(res, 6, "AWS profile 'nosuch' not found", "~/.aws/config")
    assert (work / "model_repos.yaml").read_text() == EXISTING
    assert keys_under(s3_client, s3_bucket, "") == []


def test_no_check_records_the_entry_without_contacting_anything(work, tmp_path, s3_endpoint, s3_bucket, s3_client):
    """An admin without credentials records the entry; the first push (with credentials)
    initialises the storage."""
    env = base_env()
    for var in AWS_CREDENTIAL_VARS:
        env.pop(var, None)
    path = f"s3://{s3_bucket}/vision"
    res = ok(run(create_args("vision", path, s3_endpoint, "--profile", "ml-team", "--no-check"), cwd=work, env=env))
    assert "not checked (--no-check)" in res.stdout
    assert keys_under(s3_client, s3_bucket, "") == []  # nothing was written to the bucket
    text = (work / "model_repos.yaml").read_text()
    assert_comments_kept(text)
    assert entries(work / "model_repos.yaml")["vision"] == {
        "type": "s3",
        "path": path,
        "region": s3_region(),
        "endpoint_url": s3_endpoint,
        "profile": "ml-team",
    }

    # An endpoint that refuses connections is recorded just the same: nothing is contacted.
    ok(run(create_args("dead", "s3://bkt/p", "http://127.0.0.1:9", "--no-check"), cwd=work, env=env))
    assert entries(work / "model_repos.yaml")["dead"]["endpoint_url"] == "http://127.0.0.1:9"

    # The first push initialises the repository. (The profile does not exist here: a developer
    # with credentials in the environment records the entry without it.)
    ok(run(["repo", "delete", "vision"], cwd=work, env=env))
    ok(run(create_args("vision", path, s3_endpoint, "--no-check"), cwd=work, env=env))
    assert keys_under(s3_client, s3_bucket, "") == []
    assert "profile" not in entries(work / "model_repos.yaml")["vision"]
    src = make_mixed_model(tmp_path / "ckpt", seed=3, weights=300_000)
    ok(run(["model", "push", "vision", "m", src, "--tag", "v1", "--quiet"], cwd=work))
    assert "vision/aim-repo.json" in keys_under(s3_client, s3_bucket, "")
    ok(run(["model", "pull", "vision", "m", tmp_path / "pulled", "--quiet"], cwd=work))
    assert without_index(tree(tmp_path / "pulled")) == tree(src)


def test_name_taken_exits_4_and_touches_nothing(work, s3_endpoint, s3_bucket, s3_client):
    res = run(create_args("scratch", f"s3://{s3_bucket}/vision", s3_endpoint), cwd=work)
    one_line_error(res, 4, "'scratch' already exists", "repo delete")
    assert (work / "model_repos.yaml").read_text() == EXISTING
    assert keys_under(s3_client, s3_bucket, "") == []  # the name is checked before the storage
