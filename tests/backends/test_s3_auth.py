"""Credentials that S3 refuses, end to end: the real console script in subprocesses, against a moto
server of this module's own with IAM authentication switched on.

moto checks signatures and IAM policies only when its server process has the environment variable
INITIAL_NO_AUTH_ACTION_COUNT=N: the first N authenticated actions (IAM or S3 calls; requests to
/moto-api/ do not count) are let through unchecked, every later one is authenticated and
authorised (moto/core/authorization.py). The fixture spends exactly those N actions creating the
IAM users, their access keys and policies, and the bucket, then checks that authentication is on.

Each refusal must reach the user as exit 6 and one clear line within 30 seconds, and must leave
the bucket and model_repos.yaml as they were.
"""

from __future__ import annotations

import json
import os
import secrets
import string
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

import tests.s3_fixtures as s3_fixtures
from tests.helpers import base_env, describe, make_mixed_model, ok, one_line_error, run, tree, without_index
from tests.s3_fixtures import REGION, STARTUP_DEADLINE, _read_port, _wait_until_answering

#: Every error must be reported within this many seconds (the issue's requirement).
DEADLINE = 30
#: Setup actions spent before authentication starts: see ``SETUP`` in ``auth_server``.
SETUP_ACTIONS = 9
#: A hand-edited model_repos.yaml that a refused `repo create` must leave as it is.
EXISTING = "# reviewed in git\nrepos:\n  scratch: {type: local, path: /mnt/nfs/scratch}  # keep me\n"


@dataclass(frozen=True)
class Key:
    access_key_id: str
    secret: str


@dataclass(frozen=True)
class AuthServer:
    url: str
    bucket: str
    writer: Key  # s3:* on the bucket
    lister: Key  # s3:ListBucket only: passes the access check, may not read or write objects
    stranger: Key  # a valid key with no policy at all
    aws_dir: Path  # empty AWS config and credentials files


def _boto_client(service: str, url: str, key: Key):
    import boto3

    return boto3.client(
        service,
        endpoint_url=url,
        region_name=REGION,
        aws_access_key_id=key.access_key_id,
        aws_secret_access_key=key.secret,
    )


def _random_key() -> Key:
    """A well-formed key that no IAM user owns."""
    alphabet = string.ascii_uppercase + string.digits
    return Key("AKIA" + "".join(secrets.choice(alphabet) for _ in range(16)), secrets.token_urlsafe(30))


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("s3auth")
    aws_dir = tmp / "aws"
    aws_dir.mkdir()
    (aws_dir / "config").write_text("")
    (aws_dir / "credentials").write_text("")
    server_env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MOTO_"))}
    server_env["INITIAL_NO_AUTH_ACTION_COUNT"] = str(SETUP_ACTIONS)

    log_path = tmp / "moto.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-P", str(Path(s3_fixtures.__file__).resolve()), "--serve"],
            stdout=subprocess.PIPE,
            stderr=log,
            stdin=subprocess.DEVNULL,
            env=server_env,
        )
    try:
        port = _read_port(proc, log_path)
        url = f"http://127.0.0.1:{port}"
        # /moto-api/ is not an action: polling it spends none of the unauthenticated ones.
        _wait_until_answering(url + "/moto-api/", time.monotonic() + STARTUP_DEADLINE)

        with pytest.MonkeyPatch.context() as mp:  # keep a developer's ~/.aws out of the set-up
            mp.setenv("AWS_CONFIG_FILE", str(aws_dir / "config"))
            mp.setenv("AWS_SHARED_CREDENTIALS_FILE", str(aws_dir / "credentials"))
            bootstrap = _random_key()  # unknown to IAM: accepted only while auth is off
            iam = _boto_client("iam", url, bootstrap)
            s3 = _boto_client("s3", url, bootstrap)
            bucket = f"aim-auth-{uuid.uuid4().hex[:12]}"

            def user(name: str, policy: dict | None) -> Key:
                iam.create_user(UserName=name)  # 1 action
                created = iam.create_access_key(UserName=name)["AccessKey"]  # 1 action
                if policy is not None:
                    iam.put_user_policy(UserName=name, PolicyName=f"{name}-s3", PolicyDocument=json.dumps(policy))
                return Key(created["AccessKeyId"], created["SecretAccessKey"])

            def allow(actions: str, *resources: str) -> dict:
                return {
                    "Version": "2012-10-17",
                    "Statement": [{"Effect": "Allow", "Action": actions, "Resource": list(resources)}],
                }

            # SETUP: 3 + 3 + 2 IAM actions and 1 S3 action = SETUP_ACTIONS.
            writer = user("writer", allow("s3:*", f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"))
            lister = user("lister", allow("s3:ListBucket", f"arn:aws:s3:::{bucket}"))
            stranger = user("stranger", None)
            s3.create_bucket(Bucket=bucket)

            # Authentication is on now: the bootstrap key is refused, the writer's accepted.
            from botocore.exceptions import ClientError

            with pytest.raises(ClientError) as refused:
                s3.list_objects_v2(Bucket=bucket)
            assert refused.value.response["Error"]["Code"] == "InvalidAccessKeyId"
            _boto_client("s3", url, writer).list_objects_v2(Bucket=bucket)
        yield AuthServer(url, bucket, writer, lister, stranger, aws_dir)
    finally:
        s3_fixtures.stop_server(proc)


def cli_env(server: AuthServer, key: Key) -> dict[str, str]:
    """A CLI environment whose only AWS credentials are ``key``."""
    env = {k: v for k, v in base_env().items() if not k.startswith("AWS_")}
    env.update(
        AWS_ACCESS_KEY_ID=key.access_key_id,
        AWS_SECRET_ACCESS_KEY=key.secret,
        AWS_CONFIG_FILE=str(server.aws_dir / "config"),
        AWS_SHARED_CREDENTIALS_FILE=str(server.aws_dir / "credentials"),
        AWS_EC2_METADATA_DISABLED="true",
    )
    return env


def bucket_keys(server: AuthServer) -> list[str]:
    client = _boto_client("s3", server.url, server.writer)
    try:
        return sorted(o["Key"] for o in client.list_objects_v2(Bucket=server.bucket).get("Contents", ()))
    finally:
        client.close()


def create_args(name: str, path: str, server: AuthServer) -> list[str]:
    return ["repo", "create", name, "--type", "s3", "--path", path, "--region", REGION, "--endpoint-url", server.url]


@dataclass(frozen=True)
class Pushed:
    work: Path  # holds model_repos.yaml with the repository "team"
    src: Path
    digest: str
    location: str


@pytest.fixture(scope="module")
def pushed(auth_server, tmp_path_factory) -> Pushed:
    """The writer creates the repository 'team' and pushes resnet:v1 to it."""
    tmp = tmp_path_factory.mktemp("s3auth-work")
    work = tmp / "work"
    work.mkdir()
    env = cli_env(auth_server, auth_server.writer)
    location = f"s3://{auth_server.bucket}/team"
    ok(run(create_args("team", location, auth_server), cwd=work, env=env, timeout=60))
    src = make_mixed_model(tmp / "ckpt", seed=11, weights=512 * 1024)
    res = ok(
        run(["model", "push", "team", "resnet", src, "--tag", "v1", "--quiet", "--json"], cwd=work, env=env, timeout=60)
    )
    return Pushed(work, src, json.loads(res.stdout)["digest"], location)


def test_the_allowed_user_pushes_and_pulls(auth_server, pushed, tmp_path):
    """The control: the server's authentication accepts the writer's key, so the refusals below
    are about the credentials, not about the set-up."""
    keys = bucket_keys(auth_server)
    assert "team/aim-repo.json" in keys and "team/models/resnet/versions/v1.json" in keys
    assert any(k.startswith("team/blobs/") for k in keys)
    dest = tmp_path / "pulled"
    ok(
        run(
            ["model", "pull", "team", "resnet", dest, "--tag", "v1", "--digest", pushed.digest, "--quiet"],
            cwd=pushed.work,
            env=cli_env(auth_server, auth_server.writer),
            timeout=60,
        )
    )
    assert without_index(tree(dest)) == tree(pushed.src)


def _unknown_key(server: AuthServer) -> Key:
    return _random_key()


def _wrong_secret(server: AuthServer) -> Key:
    wrong = secrets.token_urlsafe(30)
    assert wrong != server.writer.secret
    return Key(server.writer.access_key_id, wrong)


def _no_permission(server: AuthServer) -> Key:
    return server.stranger


# case -> (the key, the phrases the error line must hold)
#: What the one line says: the access check's failure (its reads sent beside it failed too, and
#: their errors would not name the check).
REFUSALS = {
    "unknown access key id": (
        _unknown_key,
        ("credentials were rejected (InvalidAccessKeyId) while checking access", "AWS_ACCESS_KEY_ID"),
    ),
    "wrong secret": (
        _wrong_secret,
        ("credentials were rejected (SignatureDoesNotMatch) while checking access", "AWS_SECRET_ACCESS_KEY"),
    ),
    "no permission": (_no_permission, ("access denied while checking access", "policy")),
}


def command(verb: str, src: Path, dest: Path) -> list:
    return {
        "push": ["model", "push", "team", "resnet", src, "--tag", "v2", "--quiet"],
        "pull": ["model", "pull", "team", "resnet", dest, "--tag", "v1", "--quiet"],
        "versions": ["model", "versions", "team", "resnet"],
    }[verb]


@pytest.mark.parametrize("verb", ["push", "pull", "versions"])
@pytest.mark.parametrize("case", list(REFUSALS))
def test_refused_credentials_exit_6_with_one_line(auth_server, pushed, tmp_path, case, verb):
    make_key, phrases = REFUSALS[case]
    before = bucket_keys(auth_server)
    dest = tmp_path / "pulled"
    args = command(verb, pushed.src, dest)
    started = time.monotonic()
    res = run(args, cwd=pushed.work, env=cli_env(auth_server, make_key(auth_server)), timeout=60)
    elapsed = time.monotonic() - started
    line = one_line_error(res, 6, *phrases, pushed.location)
    assert elapsed < DEADLINE, f"{elapsed:.1f}s: {line}"
    assert bucket_keys(auth_server) == before  # nothing written
    assert not dest.exists()  # nothing pulled


def test_permission_to_list_but_not_to_read_or_write(auth_server, pushed, tmp_path):
    """The lister passes the access check (a one-key listing) and is refused at the first object
    it reads or writes. `repo create` meets the refusal on a HEAD request, which S3 answers with a
    bare 403 and no error code; push and pull on a GET, which carries AccessDenied."""
    before = bucket_keys(auth_server)
    env = cli_env(auth_server, auth_server.lister)
    dest = tmp_path / "pulled"
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (fresh / "model_repos.yaml").write_text(EXISTING)
    new_location = f"s3://{auth_server.bucket}/lister-new"
    runs = [  # push reads aim-repo.json before it writes anything (its lease included)
        (
            "reading aim-repo.json",
            (["model", "push", "team", "resnet", pushed.src, "--tag", "v2", "--quiet"], pushed.work, pushed.location),
        ),
        (
            "reading models/resnet/versions/v1.json",
            (["model", "pull", "team", "resnet", dest, "--tag", "v1", "--quiet"], pushed.work, pushed.location),
        ),
        ("looking up aim-repo.json", (create_args("vision", new_location, auth_server), fresh, new_location)),
    ]
    for action, (args, cwd, location) in runs:
        started = time.monotonic()
        res = run(args, cwd=cwd, env=env, timeout=60)
        elapsed = time.monotonic() - started
        line = one_line_error(res, 6, "access denied", action, location, "policy")
        assert "credentials were rejected" not in line
        assert elapsed < DEADLINE, f"{elapsed:.1f}s: {line}"
    # The listing itself is allowed: `model list` works with this key.
    assert ok(run(["model", "list", "team"], cwd=pushed.work, env=env, timeout=60)).stdout.split() == ["resnet"]
    assert bucket_keys(auth_server) == before
    assert not dest.exists()
    assert (fresh / "model_repos.yaml").read_text() == EXISTING


@pytest.mark.parametrize("case", list(REFUSALS))
def test_repo_create_with_refused_credentials_changes_nothing(auth_server, tmp_path, case):
    make_key, phrases = REFUSALS[case]
    work = tmp_path / "work"
    work.mkdir()
    (work / "model_repos.yaml").write_text(EXISTING)
    location = f"s3://{auth_server.bucket}/new-{case.replace(' ', '-')}"
    before = bucket_keys(auth_server)
    env = cli_env(auth_server, make_key(auth_server))

    started = time.monotonic()
    res = run(create_args("vision", location, auth_server), cwd=work, env=env, timeout=60)
    elapsed = time.monotonic() - started
    line = one_line_error(res, 6, *phrases, location)
    assert elapsed < DEADLINE, f"{elapsed:.1f}s: {line}"
    assert (work / "model_repos.yaml").read_text() == EXISTING
    assert sorted(p.name for p in work.iterdir()) == ["model_repos.yaml"]
    assert bucket_keys(auth_server) == before  # no aim-repo.json under the new prefix


def test_repo_create_succeeds_for_the_allowed_user(auth_server, tmp_path):
    """The control for the test above: the same command with the writer's key records the entry."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "model_repos.yaml").write_text(EXISTING)
    location = f"s3://{auth_server.bucket}/created"
    res = run(
        create_args("vision", location, auth_server), cwd=work, env=cli_env(auth_server, auth_server.writer), timeout=60
    )
    assert res.returncode == 0, describe(res)
    assert "vision:" in (work / "model_repos.yaml").read_text()
    assert "created/aim-repo.json" in bucket_keys(auth_server)
