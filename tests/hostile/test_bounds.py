"""Memory stays bounded on hostile input (issue 17, item 5), measured through the console script
with /usr/bin/time: a signature bundle larger than its version's signature can be is damage
without being parsed, safetensors headers are decoded into typed Structs, and `repo check`
reports damage as complete counts plus capped lists of examples."""

from __future__ import annotations

import json
import os
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aim_cli.audit.check import MAX_EXAMPLES, MAX_USERS
from aim_cli.chunking import safetensors
from aim_cli.format.layout import signature_key
from tests.helpers import describe, ok, random_bytes, run, write_file

TIME = "/usr/bin/time"
MB = 1000 * 1000


def peak_rss(env_config, *args, cwd):
    """(result, peak RSS in bytes) of ``aim_cli --config CONFIG ARGS`` under /usr/bin/time."""
    res = run(["--config", env_config, *args], cwd=cwd, prefix=(TIME, "-f", "rss=%M"), timeout=300)
    *rest, last = res.stderr.rstrip("\n").split("\n")
    assert last.startswith("rss="), describe(res)
    res.stderr = "\n".join(rest) + ("\n" if rest else "")
    return res, int(last[4:]) * 1024


def create(config, tmp_path, chunk_size: str) -> None:
    args = ["repo", "create", "r", "--type", "local", "--path", tmp_path / "store", "--chunk-size", chunk_size]
    ok(run(["--config", config, *args], cwd=tmp_path))


@pytest.fixture
def env(tmp_path):
    config = tmp_path / "model_repos.yaml"
    config.write_text("repos: {}\n")
    create(config, tmp_path, "1MiB")
    return config


def test_a_bundle_larger_than_its_version_can_sign_is_damage_without_being_parsed(env, tmp_path):
    write_file(tmp_path / "m" / "a.bin", random_bytes(50_000, 1))
    ok(run(["--config", env, "model", "push", "r", "m", tmp_path / "m", "--tag", "v1", "-q"], cwd=tmp_path))
    # 8 MiB of the JSON that costs Python the most per byte: 2.8 million empty lists (250 MB parsed).
    n = 8 * 1024 * 1024 // 3
    hostile = b'{"mediaType":[' + b",".join([b"[]"] * n) + b"]}"
    key = signature_key("m", "v1", "0" * 16)
    (tmp_path / "store" / key).parent.mkdir(parents=True)
    (tmp_path / "store" / key).write_bytes(hostile)
    res, rss = peak_rss(env, "repo", "check", "r", "--json", cwd=tmp_path)
    assert res.returncode == 5, describe(res)
    report = json.loads(res.stdout)
    [(name, why)] = report["broken"]
    assert name == key and "larger than" in why, why
    assert rss <= 120 * MB, rss

    # A well-formed bundle within the bound is still judged (and this one passes).
    (tmp_path / "store" / key).write_bytes(b"{}")
    res = run(["--config", env, "repo", "check", "r", "--json"], cwd=tmp_path)
    assert res.returncode == 5 and "not a Sigstore bundle" in json.loads(res.stdout)["broken"][0][1], describe(res)


def _zero_tensor_file(path, count: int, salt: int) -> None:
    header = {f"layer.{i:06d}.w{salt}": {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]} for i in range(count)}
    header["__metadata__"] = {"format": "pt"}
    header["big"] = {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}
    raw = json.dumps(header, separators=(",", ":")).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + os.urandom(16))


def test_push_of_headers_with_130000_zero_size_tensors_each_stays_under_150_mb(env, tmp_path):
    for salt in range(2):
        _zero_tensor_file(tmp_path / "st" / f"f{salt}.safetensors", 130_000, salt)
    path = tmp_path / "st" / "f0.safetensors"
    fd = os.open(path, os.O_RDONLY)
    try:
        layout = safetensors.read_layout(fd, path.stat().st_size, 16 << 20)
    finally:
        os.close(fd)
    assert layout is not None and len(layout.tensors) == 130_001  # parsed as safetensors, not as plain bytes
    res, rss = peak_rss(env, "model", "push", "r", "st", tmp_path / "st", "--tag", "v1", "-q", cwd=tmp_path)
    ok(res)
    assert rss <= 150 * MB, rss


def _reference_layout(header: bytes, file_size: int):
    """The generic-dict parser the typed one replaced: both must accept and refuse the same headers.
    NaN and +-Infinity are not JSON (RFC 8259; safetensors' serde_json refuses them): refused here
    too, as Python's json would otherwise take them."""

    def not_json(constant: str):
        raise ValueError(f"{constant} is not JSON")

    try:
        entries = json.loads(header, parse_constant=not_json)
    except ValueError:
        return None
    if type(entries) is not dict:
        return None
    header_end = 8 + len(header)
    tensors = []
    for name, e in entries.items():
        if name == "__metadata__":
            continue
        if type(e) is not dict:
            return None
        dtype, shape, offsets = e.get("dtype"), e.get("shape"), e.get("data_offsets")
        if type(dtype) is not str or type(shape) is not list or type(offsets) is not list or len(offsets) != 2:
            return None
        begin, end = offsets
        if type(begin) is not int or type(end) is not int or not 0 <= begin <= end <= file_size - header_end:
            return None
        if not all(type(d) is int and d >= 0 for d in shape):
            return None
        itemsize = safetensors.DTYPE_SIZES.get(dtype)
        if itemsize is not None:
            size = itemsize
            for d in shape:
                size *= d
            if size != end - begin:
                return None
        tensors.append((header_end + begin, header_end + end))
    tensors.sort()
    pos = header_end
    for b, e in tensors:
        if b != pos:
            return None
        pos = e
    return tensors if pos == file_size else None


small = st.integers(min_value=-2, max_value=40)
value = st.one_of(small, st.booleans(), st.none(), st.text(max_size=3), st.floats(allow_nan=False, max_value=50))
entry = st.one_of(
    st.fixed_dictionaries(
        {
            "dtype": st.one_of(st.sampled_from(["F32", "U8", "BF16", "F4"]), value),
            "shape": st.one_of(st.lists(small, max_size=3), value),
            "data_offsets": st.one_of(st.lists(small, min_size=1, max_size=3), value),
        },
        optional={"extra": value},
    ),
    value,
    st.dictionaries(st.sampled_from(["format", "dtype", "shape"]), st.text(max_size=3)),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(["a", "b", "c", "__metadata__"]), entry, max_size=4), st.integers(0, 60))
def test_the_typed_header_parser_accepts_exactly_what_the_generic_one_did(entries, data_len):
    header = json.dumps(entries).encode()
    file_size = 8 + len(header) + data_len
    layout = safetensors.parse_header(header, file_size)
    expected = _reference_layout(header, file_size)
    if expected is None:
        assert layout is None
    else:
        assert layout is not None and [(t.begin, t.end) for t in layout.tensors] == expected


def test_repo_check_lists_the_first_examples_and_counts_every_problem(tmp_path):
    config = tmp_path / "model_repos.yaml"
    config.write_text("repos: {}\n")
    create(config, tmp_path, "1KiB")
    write_file(tmp_path / "m" / "w.bin", random_bytes(400_000, 7))
    versions = MAX_USERS + 3
    for i in range(versions):
        ok(run(["--config", config, "model", "push", "r", "m", tmp_path / "m", "--tag", f"v{i}", "-q"], cwd=tmp_path))
    blobs = [p for p in (tmp_path / "store" / "blobs").rglob("*") if p.is_file()]
    assert len(blobs) > MAX_EXAMPLES + 10
    for p in blobs:
        p.unlink()
    res = run(["--config", config, "repo", "check", "r", "--json"], cwd=tmp_path)
    assert res.returncode == 5, describe(res)
    report = json.loads(res.stdout)
    assert report["referenced"] == len(blobs) and report["stored"] == 0  # counts stay complete
    assert len(report["problems"]) == MAX_EXAMPLES
    assert report["problems_omitted"] == len(blobs) - MAX_EXAMPLES
    assert report["broken_omitted"] == 0
    first = report["problems"][0]
    assert first["problem"] == "missing" and len(first["used_by"]) == MAX_USERS
    assert first["used_by_omitted"] == versions - MAX_USERS
    assert f"has {len(blobs)} problems" in res.stderr

    text = run(["--config", config, "repo", "check", "r"], cwd=tmp_path)
    assert text.returncode == 5
    assert f"... and {len(blobs) - MAX_EXAMPLES} more" in text.stdout
    assert f"and {versions - MAX_USERS} more files" in text.stdout
    assert text.stdout.count("\nmissing ") == MAX_EXAMPLES
