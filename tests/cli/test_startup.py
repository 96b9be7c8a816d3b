"""What an S3 command pays before its first request and at its exit (docs/design.md §13): its
client is botocore's (boto3 and s3transfer stay unloaded), making the first one pauses the garbage
collector, and the console script freezes the collector before the interpreter's exit."""

from __future__ import annotations

import gc
import importlib.util
import subprocess
import sys
import uuid

import pytest

from aim_cli.backends.s3.client import gc_paused
from aim_cli.cli.main import main
from tests.cli.test_cli_e2e import heavy_modules_loaded
from tests.helpers import base_env, describe, make_mixed_model, run
from tests.s3_fixtures import MOTO_ONLY, s3_region, s3_repo_yaml

MISSING_BUCKET_COMMANDS = {
    "list": ["model", "list", "team"],
    "versions": ["model", "versions", "team", "m"],
    "pull": ["model", "pull", "team", "m", "dest", "--tag", "v1"],
    "push": ["model", "push", "team", "m", "src", "--tag", "v1"],
}


@pytest.mark.parametrize("command", list(MISSING_BUCKET_COMMANDS))
def test_a_missing_bucket_is_the_access_checks_one_line(tmp_path, s3_endpoint, command):
    """The access check goes out beside the command's first reads, and its error is the one the
    user reads, word for word, whatever those reads met (a HEAD answered 404, a GET NoSuchBucket)."""
    bucket = f"aim-test-missing-{uuid.uuid4().hex[:12]}"
    (tmp_path / "model_repos.yaml").write_text(s3_repo_yaml("team", s3_endpoint, bucket))
    make_mixed_model(tmp_path / "src", seed=5)
    res = run(MISSING_BUCKET_COMMANDS[command], cwd=tmp_path)
    assert res.returncode == 6 and res.stdout == "", describe(res)
    assert res.stderr == (
        f"error: bucket '{bucket}' does not exist (s3://{bucket}/repo); create the bucket, "
        "or fix `path:` (and endpoint_url) for this repository in model_repos.yaml\n"
    )
    assert not (tmp_path / "dest").exists()


@MOTO_ONLY
def test_an_s3_command_loads_botocore_but_not_boto3(tmp_path, s3_endpoint, s3_bucket):
    (tmp_path / "model_repos.yaml").write_text(s3_repo_yaml("team", s3_endpoint, s3_bucket))
    out, last = heavy_modules_loaded(tmp_path, ("boto3", "s3transfer", "botocore"), ["model", "list", "team"])
    assert last == 'HEAVY=["botocore"] CODE=0', (out, last)


@MOTO_ONLY
def test_an_s3_command_leaves_pyopenssl_unloaded_where_it_is_installed(tmp_path, s3_endpoint, s3_bucket):
    """botocore imports urllib3's pyOpenSSL module only for the standard SSLContext, which it
    gets without it: 20-40 ms of every S3 command's start where pyOpenSSL is installed (it is
    here, as a development dependency: the test would prove nothing otherwise)."""
    assert importlib.util.find_spec("OpenSSL") is not None
    (tmp_path / "model_repos.yaml").write_text(s3_repo_yaml("team", s3_endpoint, s3_bucket))
    heavy = ("OpenSSL", "urllib3.contrib.pyopenssl", "botocore.httpsession")
    _, last = heavy_modules_loaded(tmp_path, heavy, ["model", "list", "team"])
    assert last == 'HEAVY=["botocore.httpsession"] CODE=0', last


def test_pyopenssl_is_refused_only_inside_the_block():
    """Refused while botocore is imported, importable again after; and one already loaded (an
    injection into urllib3 needs it) is left as it was."""
    res = subprocess.run(
        [sys.executable, "-c", _PYOPENSSL_BLOCK],
        env=base_env(),
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    assert res.returncode == 0, describe(res)
    assert res.stdout.split() == ["refused", "importable", "kept"], res.stdout


_PYOPENSSL_BLOCK = """
import sys
from aim_cli.backends.s3.client import without_pyopenssl
with without_pyopenssl():
    try:
        import urllib3.contrib.pyopenssl
    except ImportError:
        print("refused")
import urllib3.contrib.pyopenssl as loaded
print("importable" if loaded.orig_util_SSLContext else "")
with without_pyopenssl():
    import urllib3.contrib.pyopenssl as again
print("kept" if again is loaded and sys.modules["urllib3.contrib.pyopenssl"] is loaded else "")
"""


#: Makes a process's first S3 backend, counting the garbage collections that start meanwhile.
_FIRST_BACKEND = """
import gc, sys
from aim_cli.backends.s3.backend import S3Backend
started = []
gc.callbacks.append(lambda phase, info: phase == "start" and started.append(info["generation"]))
backend = S3Backend(sys.argv[1], "repo", endpoint_url=sys.argv[2], region=sys.argv[3])
during = list(started)
backend.check_access()
print(len(during), 2 in during, gc.isenabled())
"""


@MOTO_ONLY
def test_making_the_first_client_pauses_the_collector(s3_endpoint, s3_bucket):
    """Importing botocore and parsing its data leave some 70,000 objects, all kept: without the
    pauses, the collector ran ~120 passes meanwhile, a full one among them (34 ms). With them,
    one young-generation pass as each pause ends, and the collector is on again."""
    res = subprocess.run(
        [sys.executable, "-c", _FIRST_BACKEND, s3_bucket, s3_endpoint, s3_region()],
        env=base_env(),
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    assert res.returncode == 0, describe(res)
    collections, full, enabled = res.stdout.split()
    assert int(collections) <= 2 and full == "False" and enabled == "True", res.stdout


def test_a_pause_leaves_a_collector_that_was_off_off():
    gc.disable()
    try:
        with gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    finally:
        gc.enable()
    with gc_paused(), gc_paused():
        assert not gc.isenabled()
    assert gc.isenabled()


#: The console script's entry point, as the script calls it, reporting at the interpreter's exit.
_AT_EXIT = """
import atexit, gc, sys
atexit.register(lambda: print("frozen at exit:", gc.get_freeze_count() > 0))
from aim_cli.cli.main import main
sys.argv = ["aim_cli", *sys.argv[1:]]
main()
"""


@pytest.mark.parametrize(("args", "code"), [(["info"], 0), (["model", "list", "nowhere"], 3)])
def test_the_console_script_freezes_the_collector_before_it_exits(tmp_path, args, code):
    """On success and on error alike; what the command printed is all there."""
    (tmp_path / "model_repos.yaml").write_text("repos: {}\n")
    res = subprocess.run(
        [sys.executable, "-c", _AT_EXIT, *args],
        cwd=tmp_path,
        env=base_env(),
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    assert res.returncode == code, describe(res)
    assert res.stdout.splitlines()[-1] == "frozen at exit: True"
    if code == 0:
        assert "model_repos.yaml" in res.stdout  # info names the config in use
    else:
        assert res.stderr.startswith("error: ") and "nowhere" in res.stderr


def test_main_called_with_arguments_leaves_the_collector_alone(tmp_path):
    """A caller that passes argv (a test, a host program) goes on after the command."""
    (tmp_path / "model_repos.yaml").write_text("repos: {}\n")
    before = gc.get_freeze_count()
    with pytest.raises(SystemExit):
        main(["--config", str(tmp_path / "model_repos.yaml"), "info"])
    assert gc.get_freeze_count() == before
