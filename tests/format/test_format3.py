"""Format 3 (issue 18; docs/design.md §3.1, §4): what `repo create` makes by default (and `--format 3`),
its aim-repo.json parsed strictly, tensor-relative cuts end to end (push, pull, check, verify),
plain blobs as format 2's, a delta blob (codec 4) that decodes to other bytes refused as corrupt,
and `model copy` between formats 1, 2 and 3 keeping every manifest digest. Through the real
console script where a user would see it."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aim_cli.errors import ConfigError, IntegrityError
from aim_cli.format import blob_codec
from aim_cli.format.delta_params import DeltaParams
from aim_cli.format.layout import REPO_META_KEY, blob_key, manifest_key
from aim_cli.format.repo_format import DEFAULT_FORMAT, KNOWN_FORMATS, RepoFormat, parse_meta
from tests.format.test_format2 import _aim, _blob_files, _create, _meta
from tests.helpers import file_contents, ok, one_line_error, random_bytes, safetensors_bytes

KiB = 1024
MiB = 1024 * KiB
FORMAT_3_META = {
    "format": 3,
    "chunking": {
        "algorithm": "fastcdc2020",
        "min_size": 262144,
        "avg_size": 1048576,
        "max_size": 4194304,
        "normalization": 1,
        "seed": 0,
    },
    "hash": "blake3",
    "tensor_chunking": {
        "algorithm": "safetensors-fixed-v1",
        "max_header_bytes": 16777216,
        "large_tensor_bytes": 262144,
        "tensor_chunk_bytes": 1048576,
        "group_avg_bytes": 1048576,
        "group_max_bytes": 4194304,
    },
    "codecs": {"zstd_level": 1, "min_saving": 0.03},
    "deltas": {"algorithm": "xor-v1", "min_saving": 0.1, "max_depth": 4},
}


# -- aim-repo.json -----------------------------------------------------------------------------------
def test_repo_create_format_3_writes_the_pinned_parameters_and_is_the_default(tmp_path):
    assert DEFAULT_FORMAT == 3 and KNOWN_FORMATS == (1, 2, 3)
    res = ok(_aim(tmp_path, "repo", "create", "r3", "--type", "local", "--path", tmp_path / "r3", "--format", "3"))
    assert "initialised (format 3)" in res.stdout
    meta = _meta(tmp_path / "r3")
    assert meta == FORMAT_3_META and list(meta) == list(FORMAT_3_META)
    assert list(meta["tensor_chunking"]) == list(FORMAT_3_META["tensor_chunking"])
    assert _meta(_create(tmp_path, "default"))["format"] == 3
    assert _meta(_create(tmp_path, "r2", "--format", "2"))["format"] == 2
    small = json.loads(
        ok(
            _aim(
                tmp_path,
                *("repo", "create", "small", "--type", "local", "--path", tmp_path / "small"),
                *("--format", "3", "--chunk-size", "4KiB", "--json"),
            )
        ).stdout
    )
    assert small["format"] == 3
    assert _meta(tmp_path / "small")["tensor_chunking"]["tensor_chunk_bytes"] == 4096  # the average chunk size
    # An existing repository of another format: refused, nothing recorded (exit 4).
    one_line_error(
        _aim(tmp_path, "repo", "create", "again", "--type", "local", "--path", tmp_path / "r2", "--format", "3"),
        4,
        "format 2",
        "--format 3",
    )


def test_format_3_meta_round_trips():
    fmt = RepoFormat.new(3)
    assert fmt.meta() == FORMAT_3_META
    assert parse_meta(json.dumps(FORMAT_3_META).encode(), "r") == fmt
    assert fmt.deltas == DeltaParams() and fmt.tensors is not None and fmt.tensors.tensor_chunk_bytes == MiB


_DROP = object()


def _changed(path: tuple, value) -> dict:
    meta = json.loads(json.dumps(FORMAT_3_META))
    node = meta
    for key in path[:-1]:
        node = node[key]
    if value is _DROP:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return meta


BAD_FORMAT_3 = {
    "no deltas": _changed(("deltas",), _DROP),
    "deltas in format 2": {**RepoFormat.new(2).meta(), "deltas": FORMAT_3_META["deltas"]},
    "format 2's tensor chunking": _changed(("tensor_chunking",), RepoFormat.new(2).meta()["tensor_chunking"]),
    "no step": _changed(("tensor_chunking", "tensor_chunk_bytes"), _DROP),
    "step not a multiple of 8": _changed(("tensor_chunking", "tensor_chunk_bytes"), MiB + 4),
    "step 1e400": _changed(("tensor_chunking", "tensor_chunk_bytes"), 1e400),
    "step -8": _changed(("tensor_chunking", "tensor_chunk_bytes"), -8),
    "step 5 MiB": _changed(("tensor_chunking", "tensor_chunk_bytes"), 5 * MiB),
    "step 100": _changed(("tensor_chunking", "tensor_chunk_bytes"), 100),
    "unknown delta algorithm": _changed(("deltas", "algorithm"), "xor-v2"),
    "extra delta key": _changed(("deltas", "level"), 3),
    "min_saving 1": _changed(("deltas", "min_saving"), 1),
    "min_saving -0.1": _changed(("deltas", "min_saving"), -0.1),
    "min_saving true": _changed(("deltas", "min_saving"), True),
    "min_saving '0.1'": _changed(("deltas", "min_saving"), "0.1"),
    "max_depth 0": _changed(("deltas", "max_depth"), 0),
    "max_depth 2.0": _changed(("deltas", "max_depth"), 2.0),
    "max_depth true": _changed(("deltas", "max_depth"), True),
    "max_depth 10**30": _changed(("deltas", "max_depth"), 10**30),
    "deltas a list": _changed(("deltas",), []),
    "an extra key": _changed(("extra",), 1),
}


@pytest.mark.parametrize("case", sorted(BAD_FORMAT_3))
def test_a_malformed_format_3_meta_is_refused(case):
    with pytest.raises(IntegrityError, match="malformed"):
        parse_meta(json.dumps(BAD_FORMAT_3[case]).encode(), "r")


def test_nan_and_huge_numbers_are_malformed():
    text = json.dumps(FORMAT_3_META)
    for bad in ('"min_saving": NaN', '"min_saving": 1e400', '"min_saving": ' + "9" * 5000):
        with pytest.raises(IntegrityError, match="malformed"):
            parse_meta(text.replace('"min_saving": 0.1', bad).encode(), "r")


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)
_LEAVES = [(section, key) for section in ("tensor_chunking", "deltas", "codecs") for key in FORMAT_3_META[section]] + [
    ("format",),
    ("hash",),
    ("deltas",),
    ("tensor_chunking",),
]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(_LEAVES), _json)
def test_any_value_anywhere_parses_as_written_or_is_refused(path, value):
    """Strict: whatever replaces one value, the result is the same format (the value was what
    it was), a ConfigError (another format number) or an IntegrityError; nothing else raises."""
    raw = json.dumps(_changed(path, value)).encode()
    try:
        fmt = parse_meta(raw, "r")
    except (IntegrityError, ConfigError):
        return
    assert fmt.meta() == json.loads(raw)


def test_a_delta_blob_fits_a_format_3_listing_not_a_format_2_one():
    f2, f3 = RepoFormat.new(2), RepoFormat.new(3)
    raw = 1000
    assert f2.max_stored_size(raw) == 16 + raw and f3.max_stored_size(raw) == 48 + 16 + raw
    assert f3.stored_size_fits(48 + 16 + raw, raw) and not f3.stored_size_fits(48 + 16 + raw + 1, raw)
    assert not f2.stored_size_fits(48 + 16 + raw, raw)
    data = random_bytes(raw, 1)
    assert f3.encode(data, 2) == f2.encode(data, 2)  # plain blobs are format 2's
    assert bytes(f3.decode(f3.encode(data, 2), raw)) == data


# -- end to end ------------------------------------------------------------------------------------------
def _bf16_weights(n: int, seed: int) -> bytes:
    """``n`` bf16 weights drawn from N(0, 0.02), as a trained layer holds (their exponent bytes
    compress; random bytes would not)."""
    import numpy as np

    f32 = np.random.default_rng(seed).normal(0, 0.02, n).astype("<f4")
    return (f32.view("<u4") >> 16).astype("<u2").tobytes()


def _checkpoint(root: Path, step: int) -> Path:
    """A bf16 checkpoint: a large tensor (2.5 MiB) and small norms; ``step`` > 0 moves every
    weight of the large tensor (its lowest mantissa bit flips), as a training step does."""
    embed = bytearray(_bf16_weights(1280 * 1024, 3))
    if step:
        flip = bytes(i ^ step for i in range(256))
        embed[0::2] = embed[0::2].translate(flip)
    tensors = [
        ("embed", "BF16", [1280, 1024], bytes(embed)),
        *((f"norm.{i}", "BF16", [1024], random_bytes(2048, 10 + i)) for i in range(8)),
    ]
    root.mkdir(parents=True, exist_ok=True)
    (root / "model.safetensors").write_bytes(safetensors_bytes(tensors))
    (root / "config.json").write_text(json.dumps({"step": step}) + "\n")
    return root


def _chunk_sizes(root: Path, tag: str, path: str = "model.safetensors") -> list[int]:
    manifest = json.loads((root / manifest_key("m", tag)).read_bytes())
    return [size for _, size in next(f for f in manifest["files"] if f["path"] == path)["chunks"]]


def test_a_checkpoint_whose_every_weight_moved_keeps_its_chunk_boundaries(tmp_path):
    r3 = _create(tmp_path, "r3", "--format", "3")
    r2 = _create(tmp_path, "r2", "--format", "2")
    for step, tag in ((0, "v1"), (1, "v2")):
        src = _checkpoint(tmp_path / tag, step)
        for repo, *delta in (("r3", "--delta"), ("r2",)):
            ok(_aim(tmp_path, "model", "push", repo, "m", src, "--tag", tag, "-q", *delta))
    v1, v2 = _chunk_sizes(r3, "v1"), _chunk_sizes(r3, "v2")
    header = 8 + int.from_bytes((tmp_path / "v1" / "model.safetensors").read_bytes()[:8], "little")
    # The header, then the large tensor every 1 MiB from its start, then one group of norms.
    assert v1 == v2 == [header, MiB, MiB, MiB // 2, 8 * 2048]
    assert _chunk_sizes(r2, "v1") != _chunk_sizes(r2, "v2")  # format 2's content-defined cuts moved
    for tag in ("v1", "v2"):
        dest = tmp_path / f"out-{tag}"
        ok(_aim(tmp_path, "model", "pull", "r3", "m", dest, "--tag", tag, "-q"))
        assert file_contents(dest) == file_contents(tmp_path / tag)
    ok(_aim(tmp_path, "model", "verify", "r3", "m"))
    ok(_aim(tmp_path, "repo", "check", "r3", "--read-data"))
    # Plain blobs, compressed as format 2 compresses them: the bf16 chunks byte-grouped.
    codecs = {blob[4] for blob in _blob_files(r3).values()}
    # v2's push re-encoded v1's changed tensor chunks as deltas against v2's (codec 4).
    assert blob_codec.Codec.BG2_ZSTD in codecs and 4 in codecs and codecs <= {0, 1, 2, 3, 4}


def _delta_blob(raw_size: int, base: str) -> bytes:
    """A well-formed codec 4 blob (format3.md): what a later aim_cli writes for a delta."""
    inner = blob_codec.encode(bytes(raw_size))[0]
    return struct.pack("<4sB3sQ", blob_codec.MAGIC, 4, b"\0\0\0", raw_size) + bytes.fromhex(base) + inner


def test_a_delta_blob_that_decodes_to_other_bytes_is_corrupt(tmp_path):
    root = _create(tmp_path, "r3", "--format", "3")
    src = _checkpoint(tmp_path / "v1", 0)
    ok(_aim(tmp_path, "model", "push", "r3", "m", src, "--tag", "v1", "-q"))
    manifest = json.loads((root / manifest_key("m", "v1")).read_bytes())
    chunks = next(f for f in manifest["files"] if f["path"] == "model.safetensors")["chunks"]
    (digest, size), (base, _) = chunks[1], chunks[2]
    (root / blob_key(digest)).write_bytes(_delta_blob(size, base))
    one_line_error(
        _aim(tmp_path, "model", "pull", "r3", "m", tmp_path / "out"), 5, digest, "corrupt", "does not match its hash"
    )
    assert not (tmp_path / "out" / "model.safetensors").exists()
    for args in (["model", "verify", "r3", "m"], ["repo", "check", "r3", "--read-data"]):
        audit = _aim(tmp_path, *args)
        assert audit.returncode == 5 and f"corrupt   blob {digest}" in audit.stdout, audit


def test_a_malformed_format_3_aim_repo_json_is_exit_5(tmp_path):
    root = _create(tmp_path, "r3", "--format", "3")
    (root / REPO_META_KEY).write_text(json.dumps(BAD_FORMAT_3["min_saving 1"]))
    check = _aim(tmp_path, "repo", "check", "r3")
    assert check.returncode == 5 and "broken    aim-repo.json" in check.stdout and "malformed" in check.stdout
    one_line_error(_aim(tmp_path, "repo", "gc", "r3"), 5, "aim-repo.json", "malformed")
    src = _checkpoint(tmp_path / "v1", 0)
    one_line_error(_aim(tmp_path, "model", "push", "r3", "m", src, "--tag", "v1"), 5, "aim-repo.json")
    assert not (root / manifest_key("m", "v1")).exists()


@pytest.mark.parametrize(("first", "second"), [("2", "3"), ("3", "2"), ("3", "1"), ("1", "3")])
def test_copy_between_formats_keeps_every_manifest_digest(tmp_path, first, second):
    src_root = _create(tmp_path, "src", "--format", first)
    dst_root = _create(tmp_path, "dst", "--format", second)
    for step, tag in ((0, "v1"), (1, "v2")):
        ok(_aim(tmp_path, "model", "push", "src", "m", _checkpoint(tmp_path / tag, step), "--tag", tag, "-q"))
    res = json.loads(ok(_aim(tmp_path, "model", "copy", "src", "m", "dst", "--json", "-q")).stdout)
    assert (res["src_format"], res["dst_format"]) == (int(first), int(second)) and res["reencoded"] is True
    for tag in ("v1", "v2"):
        key = manifest_key("m", tag)
        assert (dst_root / key).read_bytes() == (src_root / key).read_bytes()
        dest = tmp_path / f"out-{tag}"
        ok(_aim(tmp_path, "model", "pull", "dst", "m", dest, "--tag", tag, "-q"))
        assert file_contents(dest) == file_contents(tmp_path / tag)
    ok(_aim(tmp_path, "repo", "check", "dst", "--read-data"))
    src_blobs, dst_blobs = _blob_files(src_root), _blob_files(dst_root)
    assert set(dst_blobs) == set(src_blobs)
    if {first, second} == {"2", "3"}:  # plain blobs are alike: copied as stored, compression kept
        plain = {d: b for d, b in src_blobs.items() if b[4] != 4}
        assert {d: dst_blobs[d] for d in plain} == plain
        assert all(dst_blobs[d][4] != 4 for d in src_blobs.keys() - plain.keys())  # a delta is stored whole
