"""`repo optimize` and push's inline pass (aim_cli/optimize.py): a format 3 history becomes delta
chains with the newest whole; every version still pulls byte for byte; a rerun has nothing to do."""

from __future__ import annotations

import json

import numpy as np
import pytest

from aim_cli import push as pushmod
from aim_cli.backends.local import LocalBackend
from aim_cli.errors import UsageError
from aim_cli.optimize import optimize
from aim_cli.pull.pipeline import pull
from aim_cli.repository import Repository
from tests.helpers import file_contents, safetensors_bytes

ROWS, COLS = 1024, 1024  # 2 MiB of bf16 per tensor: two 1 MiB chunks


def _bf16(x: np.ndarray) -> bytes:
    bits = x.astype(np.float32).view(np.uint32)
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16).tobytes()


def _write(path, tensors: dict[str, np.ndarray]) -> None:
    path.mkdir(parents=True, exist_ok=True)
    blob = safetensors_bytes([(name, "BF16", [ROWS, COLS], _bf16(w)) for name, w in sorted(tensors.items())])
    (path / "model.safetensors").write_bytes(blob)


def _history(tmp_path, repo: Repository, n: int) -> list:
    rng = np.random.default_rng(3)
    weights = {"a": rng.normal(0, 0.02, (ROWS, COLS)), "b": rng.normal(0, 0.02, (ROWS, COLS))}
    dirs = []
    for i in range(n):
        weights = {k: w + rng.normal(0, 2e-4, w.shape) for k, w in weights.items()}  # a fine-tuning step
        d = tmp_path / f"v{i + 1}"
        _write(d, weights)
        pushmod.push(repo, "m", f"v{i + 1}", d, delta=False)
        dirs.append(d)
    return dirs


def _bases(repo: Repository, tag: str) -> list[str | None]:
    return [repo.delta_base_of(d) for f in repo.get_version("m", tag).manifest.files for d, s in f.chunks if s > 65536]


@pytest.fixture
def f3(tmp_path):
    repo = Repository(LocalBackend(tmp_path / "repo"), "f3")
    repo.init(version=3)
    return repo


def test_optimize_makes_older_versions_deltas_against_newer_and_everything_still_pulls(tmp_path, f3):
    dirs = _history(tmp_path, f3, 3)
    stored_before = sum(s for _, s in f3.iter_blobs())
    dry = optimize(f3, dry_run=True)
    assert dry.planned == 8 and dry.reencoded == 0 and sum(s for _, s in f3.iter_blobs()) == stored_before
    r = optimize(f3)
    assert r.reencoded == 8 and r.declined == 0 and r.stored_after < 0.6 * r.stored_before
    assert all(b is None for b in _bases(f3, "v3"))  # the newest stays whole
    v2 = {d for f in f3.get_version("m", "v2").manifest.files for d, _ in f.chunks}
    v3 = {d for f in f3.get_version("m", "v3").manifest.files for d, _ in f.chunks}
    assert set(_bases(f3, "v2")) <= v3 and set(_bases(f3, "v1")) <= v2  # chains: v1 -> v2 -> v3
    assert sum(s for _, s in f3.iter_blobs()) < stored_before
    for i, d in enumerate(dirs):
        out = tmp_path / f"out{i}"
        pull(f3, "m", out, tag=f"v{i + 1}")
        assert file_contents(out) == file_contents(d)
    again = optimize(f3)
    assert again.planned == 0 and again.reencoded == 0  # idempotent


def test_push_re_encodes_the_version_before_it(tmp_path, f3):
    rng = np.random.default_rng(5)
    w = {"a": rng.normal(0, 0.02, (ROWS, COLS))}
    _write(tmp_path / "v1", w)
    pushmod.push(f3, "m", "v1", tmp_path / "v1")
    _write(tmp_path / "v2", {k: x + rng.normal(0, 2e-4, x.shape) for k, x in w.items()})
    result = pushmod.push(f3, "m", "v2", tmp_path / "v2", delta=True)
    assert result.reencoded == 2 and result.delta_base == "m:v1"
    assert all(b is not None for b in _bases(f3, "v1")) and all(b is None for b in _bases(f3, "v2"))
    pull(f3, "m", tmp_path / "out", tag="v1")
    assert file_contents(tmp_path / "out") == file_contents(tmp_path / "v1")


def test_optimize_refuses_a_repository_without_deltas(tmp_path):
    repo = Repository(LocalBackend(tmp_path / "repo"), "f2")
    repo.init(version=2)
    with pytest.raises(UsageError, match="format 2"):
        optimize(repo)


def test_repo_optimize_through_the_console_script(tmp_path):
    """`model push --no-delta` leaves the version before whole; `repo optimize --dry-run` says what
    it would do and writes nothing; `repo optimize` does it; every version still pulls; a format 2
    repository is refused with one line, exit 2."""
    from tests.helpers import ok, one_line_error, run

    (tmp_path / "model_repos.yaml").write_text("repos: {}\n")
    ok(run(["repo", "create", "f3", "--type", "local", "--path", "./r3", "--format", "3"], cwd=tmp_path))
    rng = np.random.default_rng(11)
    w = {"a": rng.normal(0, 0.02, (ROWS, COLS))}
    for tag in ("v1", "v2"):
        w = {k: x + rng.normal(0, 2e-4, x.shape) for k, x in w.items()}
        _write(tmp_path / tag, w)
        pushed = json.loads(
            ok(run(["model", "push", "f3", "m", tag, "--tag", tag, "--no-delta", "--json"], cwd=tmp_path)).stdout
        )
        assert pushed["reencoded"] == 0
    blobs = sorted((tmp_path / "r3" / "blobs").rglob("*"))
    sizes = [p.stat().st_size for p in blobs if p.is_file()]
    dry = json.loads(ok(run(["repo", "optimize", "f3", "--dry-run", "--json"], cwd=tmp_path)).stdout)
    assert dry["dry_run"] and dry["planned"] == 2 and dry["reencoded"] == 0
    assert [p.stat().st_size for p in blobs if p.is_file()] == sizes
    done = json.loads(ok(run(["repo", "optimize", "f3", "--json"], cwd=tmp_path)).stdout)
    assert done["reencoded"] == 2 and done["models"] == ["m"] and done["stored_after"] < done["stored_before"]
    ok(run(["model", "pull", "f3", "m", str(tmp_path / "out"), "--tag", "v1"], cwd=tmp_path))
    assert file_contents(tmp_path / "out") == file_contents(tmp_path / "v1")
    ok(run(["repo", "check", "f3", "--read-data"], cwd=tmp_path))
    text = ok(run(["repo", "optimize", "f3"], cwd=tmp_path)).stdout
    assert "re-encoded 0 chunks" in text
    ok(run(["repo", "create", "f2", "--type", "local", "--path", "./r2", "--format", "2"], cwd=tmp_path))
    one_line_error(run(["repo", "optimize", "f2"], cwd=tmp_path), 2, "format 2")
