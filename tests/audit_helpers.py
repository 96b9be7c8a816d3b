"""Shared fixtures and helpers of the audit tests (test_verify, test_gc, test_leases, test_audit_cli).

``repo`` is a repository named ``audit`` with small chunks (avg 4 KiB, so that a model of a few
hundred KiB makes dozens of blobs), on the local backend and, when the S3 fixtures and backend
exist, on S3 (moto) too. Import it into a test module with ``from tests.audit_helpers import repo``;
``LOCAL_ONLY`` marks a test whose subject never touches the storage.
"""

from __future__ import annotations

import importlib.util
import json
import os
import random
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from aim_cli import api
from aim_cli import push as pushmod
from aim_cli.chunking import ChunkingParams
from aim_cli.store import Repository, blob_key
from tests.helpers import CountingBackend  # noqa: F401  (re-exported for the audit tests)

NAME = "audit"
AIM = str(Path(sys.executable).with_name("aim_cli"))
S3_AVAILABLE = (Path(__file__).with_name("s3_fixtures.py").exists()
                and importlib.util.find_spec("aim_cli.backends.s3") is not None)
BACKENDS = ["local", "s3"] if S3_AVAILABLE else ["local"]
LOCAL_ONLY = pytest.mark.parametrize("repo", ["local"], indirect=True)


@dataclass
class RepoEnv:
    kind: str
    name: str
    config: Path
    tmp: Path
    repository: Repository

    def cli(self, *args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
        """Run the real console script, as a user would."""
        return subprocess.run([AIM, "--config", str(self.config), *args], capture_output=True, text=True,
                              env=None if env is None else os.environ | env, timeout=timeout)

    def push(self, model: str, source: Path, tag: str):
        return pushmod.push(self.repository, model, tag, source)

    # Raw storage access, for planting faults (both backends speak the same contract).
    def flip_byte(self, digest: str, offset: int = 0) -> None:
        backend = self.repository.backend
        raw = bytearray(backend.get(blob_key(digest)))
        raw[offset % len(raw)] ^= 0x01
        backend.put(blob_key(digest), bytes(raw))

    def delete_blob(self, digest: str) -> None:
        self.repository.backend.delete(blob_key(digest))

    def blobs(self) -> dict[str, int]:
        return dict(self.repository.iter_blobs())

    def manifest(self, model: str, tag: str):
        return self.repository.get_version(model, tag).manifest


@pytest.fixture(params=BACKENDS)
def repo(request, tmp_path) -> RepoEnv:
    if request.param == "s3":
        from tests.s3_fixtures import s3_repo_yaml

        text = s3_repo_yaml(NAME, request.getfixturevalue("s3_endpoint"), request.getfixturevalue("s3_bucket"))
    else:
        text = f"repos:\n  {NAME}: {{type: local, path: {tmp_path / 'store'}}}\n"
    config = tmp_path / "model_repos.yaml"
    config.write_text(text)
    repository = api.open_repository(NAME, config=str(config))
    repository.init(ChunkingParams.for_average(4096))
    yield RepoEnv(request.param, NAME, config, tmp_path, repository)
    repository.backend.close()


def make_model(root: Path, seed: int = 1, variant: int = 0, size: int = 100_000) -> Path:
    """A model directory: ``weights.bin`` (``size`` random bytes from ``seed``; a ``variant`` > 0
    rewrites 1 KiB of it, so variants share most chunks) and a small ``config.json``."""
    data = bytearray(random.Random(seed).randbytes(size))
    if variant:
        at = (variant * 7919) % (size - 1024)
        data[at : at + 1024] = random.Random(10_000 + variant).randbytes(1024)
    root.mkdir(parents=True, exist_ok=True)
    (root / "weights.bin").write_bytes(bytes(data))
    (root / "config.json").write_text(json.dumps({"seed": seed, "variant": variant}))
    return root


def chunks_of(manifest) -> dict[str, int]:
    return {d: s for f in manifest.files for d, s in f.chunks}
