"""Push's pairing for deltas (aim_cli/push_pairing.py): `--delta`, `--base TAG`, `--base
MODEL:TAG`, `--reference DIR`; and `repo optimize` moving deltas off the bases a deletion left."""

from __future__ import annotations

import json

import numpy as np
import pytest

from aim_cli import push as pushmod
from aim_cli.audit import gc
from aim_cli.backends.local import LocalBackend
from aim_cli.errors import UsageError, VersionNotFoundError
from aim_cli.optimize import optimize
from aim_cli.pull.pipeline import pull
from aim_cli.repository import Repository
from tests.audit.test_optimize import COLS, ROWS, _write
from tests.helpers import file_contents, ok, one_line_error, run


def _chunks(repo: Repository, model: str, tag: str) -> list[str]:
    """The version's tensor chunks (the 1 MiB ones: the header and small groups never pair)."""
    files = repo.get_version(model, tag).manifest.files
    return [d for f in files for d, s in f.chunks if s > 65536]


def _bases(repo: Repository, model: str, tag: str) -> list[str | None]:
    return [repo.delta_base_of(d) for d in _chunks(repo, model, tag)]


def _steps(tmp_path, n: int, seed: int = 3, prefix: str = "v") -> list:
    """``n`` checkpoints of a fine-tuning run: every weight moves a little each step."""
    rng = np.random.default_rng(seed)
    weights = {"a": rng.normal(0, 0.02, (ROWS, COLS)), "b": rng.normal(0, 0.02, (ROWS, COLS))}
    dirs = []
    for i in range(n):
        weights = {k: w + rng.normal(0, 2e-4, w.shape) for k, w in weights.items()}
        _write(tmp_path / f"{prefix}{i + 1}", weights)
        dirs.append(tmp_path / f"{prefix}{i + 1}")
    return dirs


@pytest.fixture
def f3(tmp_path):
    repo = Repository(LocalBackend(tmp_path / "repo"), "f3")
    repo.init(version=3)
    return repo


def _pulls_exactly(repo: Repository, model: str, tag: str, src, dest) -> None:
    pull(repo, model, dest, tag=tag)
    assert file_contents(dest) == file_contents(src)


def test_push_stores_plain_by_default_and_delta_pairs_with_the_newest_before(tmp_path, f3):
    v1, v2, v3 = _steps(tmp_path, 3)
    assert pushmod.push(f3, "m", "v1", v1).delta_base is None
    plain = pushmod.push(f3, "m", "v2", v2)
    assert (plain.delta_base, plain.reencoded) == (None, 0) and set(_bases(f3, "m", "v1")) == {None}
    paired = pushmod.push(f3, "m", "v3", v3, delta=True)
    assert (paired.delta_base, paired.reencoded) == ("m:v2", 4)
    assert _bases(f3, "m", "v2") == _chunks(f3, "m", "v3") and set(_bases(f3, "m", "v1")) == {None}
    assert f3.get_summary("m", "v3").delta_base == "m:v2"
    assert f3.get_summary("m", "v2").delta_base is None
    for tag, src in (("v1", v1), ("v2", v2), ("v3", v3)):
        _pulls_exactly(f3, "m", tag, src, tmp_path / f"out-{tag}")


def test_base_tag_pairs_with_that_version_which_becomes_deltas_against_the_pushed_one(tmp_path, f3):
    v1, v2, v3 = _steps(tmp_path, 3)
    pushmod.push(f3, "m", "v1", v1)
    pushmod.push(f3, "m", "v2", v2)
    r = pushmod.push(f3, "m", "v3", v3, base="v1")
    assert (r.delta_base, r.reencoded) == ("m:v1", 4)
    assert _bases(f3, "m", "v1") == _chunks(f3, "m", "v3")
    assert set(_bases(f3, "m", "v2")) == {None} and set(_bases(f3, "m", "v3")) == {None}
    _pulls_exactly(f3, "m", "v1", v1, tmp_path / "out")


def test_base_model_tag_takes_namespaced_models(tmp_path, f3):
    """`--base org/model:TAG` (design §2.2): the pairing, the summary's delta_base and the pull."""
    base_w = _base_weights()
    _write(tmp_path / "base", base_w)
    rng = np.random.default_rng(9)
    _write(tmp_path / "tuned", {k: w + rng.normal(0, 2e-4, w.shape) for k, w in base_w.items()})
    pushmod.push(f3, "meta/llama", "v1", tmp_path / "base")
    r = pushmod.push(f3, "org/med", "v1", tmp_path / "tuned", base="meta/llama:v1")
    assert (r.delta_base, r.reencoded) == ("meta/llama:v1", 4)
    assert f3.get_summary("org/med", "v1").delta_base == "meta/llama:v1"
    assert [s.delta_base for s in f3.list_versions("org/med")] == ["meta/llama:v1"]  # a valid summary, not rebuilt
    _pulls_exactly(f3, "org/med", "v1", tmp_path / "tuned", tmp_path / "out")


def test_base_model_tag_stores_the_fine_tune_as_deltas_against_its_base_model(tmp_path, f3):
    base_w = _base_weights()
    _write(tmp_path / "base", base_w)
    rng = np.random.default_rng(9)  # the fine-tune: the base model's weights, moved a little
    _write(tmp_path / "tuned", {k: w + rng.normal(0, 2e-4, w.shape) for k, w in base_w.items()})
    pushmod.push(f3, "llama", "v1", tmp_path / "base")
    r = pushmod.push(f3, "med", "v1", tmp_path / "tuned", base="llama:v1")
    assert (r.delta_base, r.reencoded) == ("llama:v1", 4)
    assert _bases(f3, "med", "v1") == _chunks(f3, "llama", "v1")  # the base model stays whole
    assert set(_bases(f3, "llama", "v1")) == {None}
    # `repo optimize` keeps the fine-tune against its base model, though it is med's newest.
    assert optimize(f3).reencoded == 0
    assert _bases(f3, "med", "v1") == _chunks(f3, "llama", "v1")
    _pulls_exactly(f3, "med", "v1", tmp_path / "tuned", tmp_path / "out")
    # Deleting the base model keeps its chunks as bases: gc frees nothing the fine-tune needs.
    f3.delete_model("llama")
    assert gc.collect(f3).plan.kept_as_base == 4
    _pulls_exactly(f3, "med", "v1", tmp_path / "tuned", tmp_path / "out-after-gc")


def _base_weights() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(21)
    return {"a": rng.normal(0, 0.02, (ROWS, COLS)), "b": rng.normal(0, 0.02, (ROWS, COLS))}


def test_reference_directory_supplies_the_paired_versions_chunks(tmp_path, f3, monkeypatch):
    v1, v2 = _steps(tmp_path, 2)
    pushmod.push(f3, "m", "v1", v1)
    read: list[str] = []
    original = Repository.get_blob

    def counting(self, digest, size, **kw):
        read.append(digest)
        return original(self, digest, size, **kw)

    monkeypatch.setattr(Repository, "get_blob", counting)
    r = pushmod.push(f3, "m", "v2", v2, delta=True, references=[v1])
    assert r.reencoded == 4
    assert read == []  # every chunk from v2's directory or the reference, none from the repository
    # A reference whose bytes are not the version's: each chunk is verified, so it is fetched.
    v3 = _steps(tmp_path, 3, prefix="w")[2]
    (tmp_path / "stale").mkdir()
    (tmp_path / "stale" / "model.safetensors").write_bytes(b"\0" * (v1 / "model.safetensors").stat().st_size)
    r = pushmod.push(f3, "m", "v3", v3, delta=True, references=[tmp_path / "stale"])
    assert r.reencoded == 4 and set(_chunks(f3, "m", "v2")) <= set(read)
    monkeypatch.undo()
    _pulls_exactly(f3, "m", "v2", v2, tmp_path / "out")


def test_pairing_refusals_come_before_anything_is_pushed(tmp_path, f3):
    [v1] = _steps(tmp_path, 1)
    with pytest.raises(VersionNotFoundError):
        pushmod.push(f3, "m", "v1", v1, base="v0")
    with pytest.raises(VersionNotFoundError):
        pushmod.push(f3, "m", "v1", v1, base="other:v0")
    with pytest.raises(UsageError, match="being pushed"):
        pushmod.push(f3, "m", "v1", v1, base="m:v1")
    with pytest.raises(UsageError, match="not a directory"):
        pushmod.push(f3, "m", "v1", v1, delta=True, references=[tmp_path / "missing"])
    with pytest.raises(UsageError, match="invalid"):
        pushmod.push(f3, "m", "v1", v1, base="bad name:v1")
    assert list(f3.iter_blobs()) == [] and not f3.has_version("m", "v1")
    f2 = Repository(LocalBackend(tmp_path / "f2"), "f2")
    f2.init(version=2)
    pushmod.push(f2, "m", "v1", v1)
    with pytest.raises(UsageError, match="format 3"):
        pushmod.push(f2, "m", "v2", v1, delta=True)
    assert not f2.has_version("m", "v2")


def test_optimize_moves_deltas_off_the_bases_a_deletion_left(tmp_path, f3):
    dirs = _steps(tmp_path, 3)
    for i, d in enumerate(dirs):
        pushmod.push(f3, "m", f"v{i + 1}", d)
    optimize(f3)
    v2_chunks = _chunks(f3, "m", "v2")
    assert _bases(f3, "m", "v1") == v2_chunks
    f3.delete_version("m", "v2")
    kept = gc.collect(f3)
    assert kept.plan.kept_as_base == 4 and all(f3.stored_size(d) for d in v2_chunks)
    r = optimize(f3)
    assert r.reencoded == 4 and _bases(f3, "m", "v1") == _chunks(f3, "m", "v3")
    freed = gc.collect(f3)
    assert freed.plan.kept_as_base == 0 and not any(f3.stored_size(d) for d in v2_chunks)
    _pulls_exactly(f3, "m", "v1", dirs[0], tmp_path / "out")


def test_cli_push_pairing_options(tmp_path):
    (tmp_path / "model_repos.yaml").write_text("repos: {}\n")
    ok(run(["repo", "create", "f3", "--type", "local", "--path", "./r3", "--format", "3"], cwd=tmp_path))
    v1, v2 = _steps(tmp_path, 2)
    ok(run(["model", "push", "f3", "m", v1, "--tag", "v1", "-q"], cwd=tmp_path))
    one_line_error(run(["model", "push", "f3", "m", v2, "--tag", "v2", "--base", "v9"], cwd=tmp_path), 3, "v9")
    res = run(["model", "push", "f3", "m", v2, "--tag", "v2", "--base", "v1", "--no-delta"], cwd=tmp_path)
    one_line_error(res, 2, "--no-delta")
    out = json.loads(
        ok(
            run(["model", "push", "f3", "m", v2, "--tag", "v2", "--delta", "--reference", v1, "--json"], cwd=tmp_path)
        ).stdout
    )
    assert (out["delta_base"], out["reencoded"]) == ("m:v1", 4)
    text = ok(run(["model", "push", "f3", "m", v1, "--tag", "v3", "--base", "v2"], cwd=tmp_path)).stdout
    assert "paired with m:v2 for deltas" in text
    listed = json.loads(ok(run(["model", "versions", "f3", "m", "--json"], cwd=tmp_path)).stdout)
    assert [(v["tag"], v["delta_base"]) for v in listed] == [("v1", None), ("v2", "m:v1"), ("v3", "m:v2")]
