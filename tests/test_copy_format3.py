"""`model copy` and format 3's deltas (aim_cli/copy.py, copy_deltas.py): between format 3
repositories a delta is copied as stored with the bases it needs, each delta's marker first;
into format 3 with ``delta`` the version before is re-encoded as push does; into format 1 or 2
deltas are stored whole."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from aim_cli import push as pushmod
from aim_cli.audit.check import check_repo
from aim_cli.audit.gc import collect
from aim_cli.backends.local import LocalBackend
from aim_cli.chunking.cdc import ChunkingParams
from aim_cli.copy import copy
from aim_cli.errors import StorageError, UsageError
from aim_cli.format.delta_params import DeltaParams
from aim_cli.format.layout import blob_key, edge_key
from aim_cli.optimize import optimize
from aim_cli.pull.pipeline import pull
from aim_cli.repository import Repository
from tests.fakes import Fault, FaultyBackend
from tests.helpers import file_contents, ok, one_line_error, run, safetensors_bytes

KiB = 1024
PARAMS = ChunkingParams.for_average(64 * KiB)  # min 16 KiB: a tensor of 16 KiB is one chunk in formats 2 and 3
ROWS, COLS = 128, 64  # 16 KiB of bf16 a tensor
TENSORS = ("a", "b", "c", "d")


def _bf16(x: np.ndarray) -> bytes:
    bits = x.astype(np.float32).view(np.uint32)
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16).tobytes()


def _checkpoints(tmp_path, n: int) -> list:
    """``n`` directories, each one safetensors file a fine-tuning step after the one before."""
    rng = np.random.default_rng(7)
    weights = {k: rng.normal(0, 0.02, (ROWS, COLS)) for k in TENSORS}
    dirs = []
    for i in range(n):
        weights = {k: w + rng.normal(0, 2e-4, w.shape) for k, w in weights.items()}
        d = tmp_path / f"ckpt{i + 1}"
        d.mkdir()
        data = safetensors_bytes([(k, "BF16", [ROWS, COLS], _bf16(w)) for k, w in sorted(weights.items())])
        (d / "model.safetensors").write_bytes(data)
        dirs.append(d)
    return dirs


def _repo(path, version: int | None = None, backend=None) -> Repository:
    repo = Repository(backend or LocalBackend(path), path.name)
    if version is not None:
        repo.init(PARAMS, version=version)
    return repo


def _pushed(repo: Repository, dirs) -> None:
    for i, d in enumerate(dirs):
        pushmod.push(repo, "m", f"v{i + 1}", d, delta=False)


def _tensor_chunks(repo: Repository, tag: str) -> list[str]:
    return [d for f in repo.get_version("m", tag).manifest.files for d, s in f.chunks if s == ROWS * COLS * 2]


def _stored(repo: Repository, digest: str) -> bytes:
    return repo.backend.get(blob_key(digest))


@pytest.fixture
def history(tmp_path):
    """A format 3 repository holding v1, v2, v3 of model m, optimized: v1's tensor chunks are
    deltas against v2's, v2's against v3's, v3's whole."""
    src = _repo(tmp_path / "src", 3)
    dirs = _checkpoints(tmp_path, 3)
    _pushed(src, dirs)
    assert optimize(src).reencoded == 8
    assert all(src.delta_base_of(d) in set(_tensor_chunks(src, "v2")) for d in _tensor_chunks(src, "v1"))
    return src, dirs


def _pulls(repo: Repository, tag: str, expected, out) -> None:
    pull(repo, "m", out, tag=tag)
    assert file_contents(out) == file_contents(expected)


def test_a_delta_is_copied_as_stored_with_its_chain_of_bases_each_marker_first(tmp_path, history):
    src, dirs = history
    backend = FaultyBackend(LocalBackend(tmp_path / "dst"))  # no fault: it records every call
    dst = _repo(tmp_path / "dst", backend=backend)
    v1, v2, v3 = (_tensor_chunks(src, t) for t in ("v1", "v2", "v3"))

    dry = copy(src, dst, "m", ["v1"], dry_run=True)
    assert (dry.deltas, dry.bases_copied) == (4, 8) and dry.base_bytes == sum(len(_stored(src, b)) for b in v2 + v3)
    assert not (tmp_path / "dst").exists()

    r = copy(src, dst, "m", ["v1"])
    assert r.copied == ["v1"] and r.deltas == 4 and r.bases_copied == 8 and r.reencoded_chunks == 0
    assert r.base_bytes == sum(len(_stored(src, b)) for b in v2 + v3)
    for d in v1 + v2 + v3:  # the deltas and their bases, the same bytes as the source stores
        assert _stored(dst, d) == _stored(src, d)
    assert {d: dst.delta_base_of(d) for d in v1 + v2} == {d: src.delta_base_of(d) for d in v1 + v2}
    assert all(dst.delta_base_of(d) is None for d in v3)
    puts = [key for op, key, _ in backend.calls if op == "put"]
    for d in v1 + v2:  # each marker before its delta, each base before the deltas against it
        base = dst.delta_base_of(d)
        assert puts.index(edge_key(base, d)) < puts.index(blob_key(d))
        assert puts.index(blob_key(base)) < puts.index(blob_key(d))
    assert check_repo(dst, read_data=True).ok
    _pulls(dst, "v1", dirs[0], tmp_path / "out1")

    gc = collect(dst)  # bases no version names are kept through the markers
    assert gc.deleted == 0
    _pulls(dst, "v1", dirs[0], tmp_path / "out1b")

    later = copy(src, dst, "m", ["v3", "v2"])  # their chunks are there already, as bases
    assert later.copied == ["v3", "v2"] and later.bases_copied == 0 and later.deltas == 0
    assert all(v.blobs == 0 for v in later.versions)  # one file per version: the header chunk is a tensor group
    assert check_repo(dst, read_data=True).ok
    _pulls(dst, "v2", dirs[1], tmp_path / "out2")


def test_a_copy_killed_between_marker_and_delta_leaves_only_what_gc_removes(tmp_path, history):
    src, dirs = history
    victim = _tensor_chunks(src, "v1")[0]
    base = src.delta_base_of(victim)
    faulty = FaultyBackend(LocalBackend(tmp_path / "dst"), Fault("put", "storage", pattern=blob_key(victim)))
    dst = _repo(tmp_path / "dst", backend=faulty)
    with pytest.raises(StorageError):
        copy(src, dst, "m", ["v1"], jobs=1)
    assert not dst.has_version("m", "v1")
    assert faulty.inner.exists(edge_key(base, victim)) and not faulty.inner.exists(blob_key(victim))
    assert check_repo(dst).ok  # no delta without its marker; the marker is a note
    collect(dst)
    assert not list(dst.iter_blobs()) and not dst.edges.edges()

    resumed = copy(src, dst, "m", ["v1"])
    assert resumed.copied == ["v1"] and check_repo(dst, read_data=True).ok
    _pulls(dst, "v1", dirs[0], tmp_path / "out")


def test_a_chain_too_deep_for_the_destination_is_stored_whole(tmp_path, history):
    src, dirs = history
    dst = _repo(tmp_path / "dst")
    shallow = dataclasses.replace(src.format(), deltas=DeltaParams(max_depth=1))
    dst.init(like=shallow)
    r = copy(src, dst, "m", ["v2"])  # v2 -> v3: depth 1, fits
    assert (r.deltas, r.bases_copied) == (4, 4)
    r = copy(src, dst, "m", ["v1"])  # v1 -> v2 -> v3: depth 2, does not
    assert (r.deltas, r.bases_copied) == (0, 0)
    assert all(dst.delta_base_of(d) is None for d in _tensor_chunks(src, "v1"))
    assert check_repo(dst, read_data=True).ok
    _pulls(dst, "v1", dirs[0], tmp_path / "out")


def test_copy_into_format_2_stores_deltas_whole(tmp_path, history):
    src, dirs = history
    dst = _repo(tmp_path / "dst", 2)
    r = copy(src, dst, "m", ["v1"])
    assert r.copied == ["v1"] and r.bases_copied == 0 and r.deltas == 0
    assert not list(dst.backend.list("edges/"))
    for d in _tensor_chunks(src, "v1"):
        assert _stored(dst, d)[4] != 4  # codec 4 is format 3's delta
    assert check_repo(dst, read_data=True).ok
    _pulls(dst, "v1", dirs[0], tmp_path / "out")


@pytest.mark.parametrize("delta", [False, True])
def test_copy_from_format_2_with_delta_re_encodes_the_version_before(tmp_path, delta):
    src = _repo(tmp_path / "src", 2)
    dirs = _checkpoints(tmp_path, 2)
    _pushed(src, dirs)
    dst = _repo(tmp_path / "dst", 3)
    first = copy(src, dst, "m", ["v1"], delta=delta)
    assert first.reencoded_chunks == 0  # nothing before it
    second = copy(src, dst, "m", ["v2"], delta=delta)
    v1, v2 = _tensor_chunks(dst, "v1"), _tensor_chunks(dst, "v2")
    if delta:
        assert second.reencoded_chunks == 4 and second.versions[0].reencoded_chunks == 4
        assert [dst.delta_base_of(d) for d in v1] == v2
    else:
        assert second.reencoded_chunks == 0 and all(dst.delta_base_of(d) is None for d in v1)
    assert check_repo(dst, read_data=True).ok
    _pulls(dst, "v1", dirs[0], tmp_path / "out")


def test_delta_into_a_repository_without_deltas_is_refused(tmp_path, history):
    src, _ = history
    dst = _repo(tmp_path / "dst", 2)
    with pytest.raises(UsageError, match="--delta"):
        copy(src, dst, "m", ["v1"], delta=True)
    assert not dst.has_version("m", "v1")


def test_a_delta_naming_a_missing_base_is_exit_5_and_nothing_is_committed(tmp_path, history):
    src, _ = history
    victim = _tensor_chunks(src, "v1")[0]
    src.delete_blobs([src.delta_base_of(victim)])
    config = tmp_path / "model_repos.yaml"
    config.write_text(
        f"repos:\n  src: {{type: local, path: {tmp_path / 'src'}}}\n  dst: {{type: local, path: {tmp_path / 'dst'}}}\n"
    )
    res = run(["--config", config, "model", "copy", "src", "m", "dst", "--tag", "v1", "-q"], cwd=tmp_path)
    one_line_error(res, 5, victim)
    assert not (tmp_path / "dst" / "models").exists()
    # The rest of the source is sound: the CLI copies v3 (whole, no base), taking --delta.
    out = ok(run(["--config", config, "model", "copy", "src", "m", "dst", "--tag", "v3", "--delta"], cwd=tmp_path))
    assert "copied 1 of 1 versions" in out.stdout


def test_a_base_two_deltas_share_is_copied_once(tmp_path):
    """v2 holds tensors a and b with the same bytes (one chunk), so v1's a and b are deltas
    against one base: the copy's threads write it once, each delta after it."""
    rng = np.random.default_rng(9)
    w = rng.normal(0, 0.02, (ROWS, COLS))
    src = _repo(tmp_path / "src", 3)
    for i, tensors in enumerate([{"a": w + 1e-4, "b": w - 1e-4}, {"a": w, "b": w}]):
        d = tmp_path / f"ckpt{i + 1}"
        d.mkdir()
        data = sorted((k, "BF16", [ROWS, COLS], _bf16(x)) for k, x in tensors.items())
        (d / "model.safetensors").write_bytes(safetensors_bytes(data))
        pushmod.push(src, "m", f"v{i + 1}", d, delta=False)
    optimize(src)
    v1, (shared,) = _tensor_chunks(src, "v1"), set(_tensor_chunks(src, "v2"))
    assert [src.delta_base_of(d) for d in v1] == [shared, shared]
    backend = FaultyBackend(LocalBackend(tmp_path / "dst"))
    dst = _repo(tmp_path / "dst", backend=backend)
    r = copy(src, dst, "m", ["v1"], jobs=4)
    assert (r.deltas, r.bases_copied) == (2, 1)
    puts = [key for op, key, _ in backend.calls if op == "put"]
    assert puts.count(blob_key(shared)) == 1
    assert all(puts.index(blob_key(shared)) < puts.index(blob_key(d)) for d in v1)
    assert check_repo(dst, read_data=True).ok
    _pulls(dst, "v1", tmp_path / "ckpt1", tmp_path / "out")


def test_a_delta_chain_copied_into_s3(tmp_path, history, s3_backend):
    src, dirs = history
    dst = Repository(s3_backend, "s3")
    r = copy(src, dst, "m", ["v1"])
    assert (r.deltas, r.bases_copied) == (4, 8)
    assert all(_stored(dst, d) == _stored(src, d) for d in _tensor_chunks(src, "v1"))
    assert check_repo(dst, read_data=True).ok
    assert collect(dst).deleted == 0
    _pulls(dst, "v1", dirs[0], tmp_path / "out")
