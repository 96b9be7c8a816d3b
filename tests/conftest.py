"""Shared fixtures (pytest finds them without imports). The S3 server fixtures live in
tests/s3_fixtures.py; the helpers in tests/helpers.py."""

import pytest

from aim_cli import api
from aim_cli.chunking.cdc import ChunkingParams
from aim_cli.format.repo_format import DEFAULT_FORMAT
from tests.helpers import BACKENDS, NAME, RepoEnv

pytest_plugins = ["tests.s3_fixtures"]


def pytest_configure(config):
    """Compile aim_cli's own modules once, before the workers start: the tests run the console
    script thousands of times, and where PYTHONDONTWRITEBYTECODE is set (uv's compile-bytecode
    covers the dependencies, not an editable install) each run would compile them again, ~60 ms
    of CPU a command. Existing bytecode is read whatever that variable says."""
    if hasattr(config, "workerinput"):  # a pytest-xdist worker: the controller did it
        return
    import compileall
    from pathlib import Path

    import aim_cli

    compileall.compile_dir(Path(aim_cli.__file__).parent, quiet=2)


#: The extra runs of the repo fixture: a local repository of each format other than the default.
OTHER_FORMAT_RUNS = ("local-f1", "local-f2")


@pytest.fixture(params=[*BACKENDS, *OTHER_FORMAT_RUNS])
def repo(request, tmp_path) -> RepoEnv:
    """A repository named ``audit`` with small chunks (avg 4 KiB, so that a model of a few
    hundred KiB makes dozens of blobs), on the local backend and, when the S3 fixtures and backend
    exist, on S3 too ("s3": moto, "rgw": Ceph's RADOS Gateway), in the format new repositories
    get (format 3); "local-f1": a local one of format 1 (raw blobs) and "local-f2": a local one of
    format 2 (content-defined cuts inside large tensors, no deltas), which stay readable and
    writable (``RepoEnv.format`` says which).
    ``tests.helpers.LOCAL_ONLY`` keeps a test to the local one of the new format; a test marked
    ``format_neutral`` (its code never reads or writes a blob's bytes) is not run on "local-f1"
    nor "local-f2" (``pytest_collection_modifyitems``). A test module that defines its own ``repo``
    fixture (test_pull, test_push, test_store) uses that."""
    kind, _, version = request.param.partition("-f")
    version = int(version) if version else DEFAULT_FORMAT
    endpoint = None
    if kind in ("s3", "rgw"):
        from tests.s3_fixtures import s3_location, s3_repo_yaml

        endpoint, bucket = s3_location(request, kind)
        text = s3_repo_yaml(NAME, endpoint, bucket)
    else:
        text = f"repos:\n  {NAME}: {{type: local, path: {tmp_path / 'store'}}}\n"
    config = tmp_path / "model_repos.yaml"
    config.write_text(text)
    repository = api.open_repository(NAME, config=str(config))
    repository.init(ChunkingParams.for_average(4096), version=version)
    assert repository.format().version == version
    yield RepoEnv(kind, NAME, config, tmp_path, repository, version, endpoint)
    repository.backend.close()


def pytest_collection_modifyitems(config, items):
    """Leave out the "local-f1" and "local-f2" runs of tests marked ``format_neutral``: they would repeat tests of code
    that does not depend on the storage format (signatures, patterns, leases, summaries), and
    the suite must stay well under CI's 10 minutes."""

    def other_format_run_of_neutral_module(item) -> bool:
        callspec = getattr(item, "callspec", None)
        return (
            callspec is not None
            and callspec.params.get("repo") in OTHER_FORMAT_RUNS
            and item.get_closest_marker("format_neutral") is not None
        )

    neutral = [item for item in items if other_format_run_of_neutral_module(item)]
    if neutral:
        config.hook.pytest_deselected(items=neutral)
        items[:] = [item for item in items if not other_format_run_of_neutral_module(item)]
