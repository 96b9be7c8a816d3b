"""Property-based tests of every parser of outside input (issue 8): whatever the input, the result
is a valid value or the one documented error, never another exception.

- manifest decoding (random bytes, random JSON, mutated valid manifests): Manifest or IntegrityError
- manifest path checks (random strings with surrogates and control characters): None or a reason,
  and every accepted path is safe to join under a destination
- model_repos.yaml parsing (YAML-ish text, random bytes): Config or ConfigError
- size options: an int in [minimum, MAX_SIZE] or UsageError
"""

from __future__ import annotations

import json
import posixpath
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aim_cli.config import REPO_TYPES, Config, parse_config
from aim_cli.errors import ConfigError, IntegrityError, UsageError
from aim_cli.format import manifest as mf
from aim_cli.names import NAME_RE
from aim_cli.util.quoting import has_control
from aim_cli.util.sizes import MAX_SIZE, parse_size

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
H = "b" * 64


# -- manifest decoding ----------------------------------------------------------------------------------
def _valid_manifest(paths: list[str]) -> dict:
    files = [{"path": p, "size": 3, "mode": 0o644, "blake3": H, "chunks": [[H, 3]]} for p in sorted(set(paths))]
    return {
        "format": 1,
        "model": "m",
        "tag": "t",
        "created_at": "2026-01-01T00:00:00.000000Z",
        "created_by": "u@h",
        "message": "",
        "total_size": 3 * len(files),
        "files": files,
    }


def _decodes_or_refuses(raw: bytes) -> mf.Manifest | None:
    try:
        manifest = mf.decode(raw, where="m:t")
    except IntegrityError as e:
        assert e.exit_code == 5
        assert len(e.message) < 1000 and "\n" not in e.message
        e.message.encode("utf-8")  # printable
        return None
    # Accepted: every invariant pull relies on holds.
    assert isinstance(manifest, mf.Manifest)
    paths = [f.path for f in manifest.files]
    assert paths == sorted(set(paths))
    assert all(mf.check_path(p) is None for p in paths)
    assert sum(f.size for f in manifest.files) == manifest.total_size
    for f in manifest.files:
        assert 0 <= f.mode <= mf.MODE_MASK and sum(size for _, size in f.chunks) == f.size
        assert all(0 < size <= mf.MAX_CHUNK_SIZE for _, size in f.chunks)
    return manifest


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**80), max_value=2**80) | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
field_names = st.sampled_from(
    ["format", "model", "tag", "created_at", "created_by", "message", "total_size", "files", "extra"]
)
file_field_names = st.sampled_from(["path", "size", "mode", "blake3", "chunks", "extra"])
simple_paths = st.lists(st.sampled_from(["a", "b.bin", "d/e", "d/f/g", "1:2.txt", "x y"]), min_size=1, max_size=4)


@FAST
@given(st.binary(max_size=300))
def test_random_bytes_decode_or_refuse(raw):
    _decodes_or_refuses(raw)


@FAST
@given(json_values)
def test_random_json_decodes_or_refuses(value):
    _decodes_or_refuses(json.dumps(value).encode())


@FAST
@given(simple_paths, st.data())
def test_mutated_manifests_decode_or_refuse(paths, data):
    manifest = _valid_manifest(paths)
    for _ in range(data.draw(st.integers(min_value=1, max_value=3))):
        where = data.draw(st.sampled_from(["top", "file", "drop"]))
        if where == "top":
            manifest[data.draw(field_names)] = data.draw(json_values)
        elif where == "file":
            files = manifest.get("files")
            entries = [e for e in files if isinstance(e, dict)] if isinstance(files, list) else []
            entry = data.draw(st.sampled_from(entries)) if entries else None
            if entry is not None:
                entry[data.draw(file_field_names)] = data.draw(json_values | path_strings)
        else:
            manifest.pop(data.draw(field_names), None)
    _decodes_or_refuses(json.dumps(manifest).encode())


@FAST
@given(simple_paths, st.data())
def test_byte_mutations_of_valid_manifests_decode_or_refuse(paths, data):
    raw = bytearray(json.dumps(_valid_manifest(paths)).encode())
    for _ in range(data.draw(st.integers(min_value=1, max_value=4))):
        at = data.draw(st.integers(min_value=0, max_value=len(raw) - 1))
        op = data.draw(st.sampled_from(["flip", "insert", "delete"]))
        if op == "flip":
            raw[at] = data.draw(st.integers(0, 255))
        elif op == "insert":
            raw[at:at] = data.draw(st.binary(min_size=1, max_size=8))
        elif len(raw) > 1:
            del raw[at]
    _decodes_or_refuses(bytes(raw))


def test_an_unmutated_manifest_is_accepted():
    assert _decodes_or_refuses(json.dumps(_valid_manifest(["a", "d/e", "1:2.txt"])).encode()) is not None


# -- manifest paths ------------------------------------------------------------------------------------
path_chars = st.one_of(
    st.sampled_from(list("/.:\\aC\n\r\t\x00\x1b\x7f\x9b é")),
    st.characters(exclude_categories=()),
    st.characters(categories=["Cs"]),  # lone surrogates: a non-UTF-8 file name as Python sees it
)
path_parts = st.one_of(
    st.sampled_from(["", ".", "..", ".aim", ".aimx", "C:", "a", "x" * 256]), st.text(alphabet=path_chars, max_size=12)
)
path_strings = st.one_of(
    st.text(alphabet=path_chars, max_size=40),
    st.lists(path_parts, min_size=1, max_size=6).map("/".join),
    st.integers(min_value=60, max_value=70).map(lambda n: "/".join(["d"] * n)),
)


@settings(max_examples=500, deadline=None)
@given(path_strings)
def test_check_path_gives_a_reason_or_a_safe_path(path):
    why = mf.check_path(path)
    if why is not None:
        assert isinstance(why, str) and why
        return
    encoded = path.encode("utf-8")  # valid UTF-8
    assert len(encoded) <= mf.MAX_PATH_BYTES
    parts = path.split("/")
    assert len(parts) <= mf.MAX_PATH_DEPTH
    assert all(part not in ("", ".", "..") and len(part.encode()) <= mf.MAX_NAME_BYTES for part in parts)
    assert posixpath.normpath(path) == path and not path.startswith("/")
    assert "\\" not in path and not has_control(path)
    assert not (
        len(path) >= 2
        and path[1] == ":"
        and path[0].isascii()
        and path[0].isalpha()
        and (len(path) == 2 or path[2] == "/")
    )
    assert not parts[0].startswith(".aim")
    assert posixpath.normpath(posixpath.join("/dest", path)).startswith("/dest/")


# -- model_repos.yaml ---------------------------------------------------------------------------------
yaml_tokens = st.sampled_from(
    [
        "repos:",
        "\n",
        "  ",
        "    ",
        "{",
        "}",
        "[",
        "]",
        ": ",
        ",",
        "- ",
        "? ",
        "&a ",
        "*a",
        "!!python/name:os.system ",
        "!!str ",
        "<<: ",
        "'",
        '"',
        "#",
        "---\n",
        "%YAML 1.1\n",
        "type",
        "local",
        "s3",
        "path",
        "region",
        "x",
        "r",
        "2024",
        "yes",
        "~",
        "s3://bucket/p",
        "s3://b//x",
        "/abs/dir",
        "\t",
        "\\n",
        "é",
        "\x07",
        "\ufeff",
    ]
)
yaml_texts = st.lists(yaml_tokens, max_size=40).map("".join)
valid_names = st.from_regex(NAME_RE, fullmatch=True)


def _parses_or_refuses(data) -> Config | None:
    try:
        cfg = parse_config(Path("/cfg/model_repos.yaml"), data)
    except ConfigError as e:
        assert e.exit_code == 7 and "\n" not in e.message and len(e.message) < 1000
        e.message.encode("utf-8")
        return None
    for name, repo in cfg.repos.items():
        assert NAME_RE.fullmatch(name) and repo.name == name and repo.type in REPO_TYPES
        assert isinstance(repo.path, str) and repo.path and not has_control(repo.path)
        if repo.type == "s3":
            assert repo.bucket and ".." not in repo.prefix.split("/")
    return cfg


@FAST
@given(yaml_texts)
def test_yaml_ish_text_parses_or_refuses(text):
    _parses_or_refuses(text)


@FAST
@given(st.binary(max_size=200) | yaml_texts.map(lambda t: t.encode("utf-8", "surrogatepass")))
def test_random_bytes_parse_or_refuse(data):
    _parses_or_refuses(data)


@FAST
@given(st.dictionaries(valid_names, st.sampled_from(["store", "../shared", "/abs/x", "s3://bucket/team"]), max_size=5))
def test_valid_configs_are_read_as_written(entries):
    lines = ["repos:"]
    for name, path in entries.items():
        kind = "s3" if path.startswith("s3://") else "local"
        lines.append(f"  '{name}': {{type: {kind}, path: '{path}'}}")
    cfg = _parses_or_refuses("\n".join(lines) + "\n")
    assert cfg is not None and list(cfg.repos) == list(entries)


# -- size options -------------------------------------------------------------------------------------
size_texts = st.one_of(
    st.text(max_size=20),
    st.from_regex(r"\s?-?[0-9]{0,25}(\.[0-9]{0,25})?\s?([kKmMgGtTpPeE][iI]?)?[bB]?", fullmatch=True),
    st.sampled_from(["1e400", "infk", "inf", "nan", "-5", "0x10", "1_000", "8EiB", "8191PiB", "8192PiB"]),
)


@settings(max_examples=500, deadline=None)
@given(size_texts, st.integers(min_value=0, max_value=2))
def test_sizes_parse_in_range_or_are_usage_errors(text, minimum):
    try:
        size = parse_size(text, option="--max-size", minimum=minimum)
    except UsageError as e:
        assert e.exit_code == 2 and "--max-size" in e.message and "\n" not in e.message
        return
    assert isinstance(size, int) and minimum <= size <= MAX_SIZE
