"""What an S3 command pays before its first request (docs/design.md §13): its client is
botocore's (boto3 and s3transfer stay unloaded), and making the first one pauses the garbage
collector."""

from __future__ import annotations

import gc
import subprocess
import sys

from aim_cli.backends.s3.client import gc_paused
from tests.cli.test_cli_e2e import heavy_modules_loaded
from tests.helpers import base_env, describe
from tests.s3_fixtures import MOTO_ONLY, s3_region, s3_repo_yaml


@MOTO_ONLY
def test_an_s3_command_loads_botocore_but_not_boto3(tmp_path, s3_endpoint, s3_bucket):
    (tmp_path / "model_repos.yaml").write_text(s3_repo_yaml("team", s3_endpoint, s3_bucket))
    out, last = heavy_modules_loaded(tmp_path, ("boto3", "s3transfer", "botocore"), ["model", "list", "team"])
    assert last == 'HEAVY=["botocore"] CODE=0', (out, last)


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
