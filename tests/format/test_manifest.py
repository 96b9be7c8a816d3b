import msgspec
import pytest

from aim_cli.errors import IntegrityError
from aim_cli.format import manifest as mf

H = "a" * 64


def make(files, total=None):
    entries = [mf.FileEntry(path, size, 0o644, H, [(H, size)] if size else []) for path, size in files]
    return mf.Manifest(
        mf.FORMAT,
        "m",
        "t",
        "2026-01-01T00:00:00.000000Z",
        "u@h",
        "",
        sum(s for _, s in files) if total is None else total,
        entries,
    )


def test_encode_has_fixed_key_order_and_round_trips():
    m = make([("a/b.safetensors", 10), ("c.json", 3)])
    raw = mf.encode(m)
    assert raw.startswith(b'{"format":1,"model":"m","tag":"t","created_at":')
    assert raw.index(b'"total_size"') < raw.index(b'"files"')
    assert b'"chunks":[["' + H.encode() + b'",10]]' in raw
    assert mf.decode(raw, where="x") == m
    assert mf.digest_of(raw) == mf.digest_of(mf.encode(mf.decode(raw, where="x")))


@pytest.mark.parametrize("path", ["../x", "/etc/x", "a/../b", "a//b", "./a", "a/", ".aim/x", ".aimx", "a\\b", ""])
def test_hostile_paths_are_refused(path):
    with pytest.raises(IntegrityError) as e:
        mf.validate(make([(path, 1)]), where="m:t")
    assert e.value.exit_code == 5


def test_duplicate_and_unsorted_paths_are_refused():
    with pytest.raises(IntegrityError, match="sorted and unique"):
        mf.validate(make([("a", 1), ("a", 1)]), where="m:t")
    with pytest.raises(IntegrityError, match="sorted and unique"):
        mf.validate(make([("b", 1), ("a", 1)]), where="m:t")


def test_file_and_directory_clash_is_refused():
    with pytest.raises(IntegrityError, match="both a file and a directory"):
        mf.validate(make([("a", 1), ("a/b", 1)]), where="m:t")


def test_sizes_must_add_up():
    m = make([("a", 5)])
    m.files[0].chunks = [(H, 4)]
    with pytest.raises(IntegrityError, match="add up"):
        mf.validate(m, where="m:t")
    with pytest.raises(IntegrityError, match="total_size"):
        mf.validate(make([("a", 5)], total=6), where="m:t")


def test_setuid_mode_and_bad_digests_are_refused():
    m = make([("a", 5)])
    m.files[0].mode = 0o4755
    with pytest.raises(IntegrityError, match="mode"):
        mf.validate(m, where="m:t")
    m = make([("a", 5)])
    m.files[0].blake3 = "XYZ"
    with pytest.raises(IntegrityError):
        mf.validate(m, where="m:t")


def test_garbage_and_unknown_fields_are_integrity_errors():
    with pytest.raises(IntegrityError, match="cannot be parsed"):
        mf.decode(b"{not json", where="m:t")
    data = msgspec.json.decode(mf.encode(make([("a", 1)])))
    data["extra"] = 1
    with pytest.raises(IntegrityError):
        mf.decode(msgspec.json.encode(data), where="m:t")
    data.pop("extra")
    data["format"] = 2
    with pytest.raises(IntegrityError, match="unknown format"):
        mf.decode(msgspec.json.encode(data), where="m:t")


def test_same_content_ignores_message_and_time():
    a = make([("a", 1)])
    b = make([("a", 1)])
    b.message, b.created_at = "other", "2027-01-01T00:00:00.000000Z"
    assert a.same_content(b)
    b.files[0].mode = 0o755
    assert not a.same_content(b)


def test_chunks_larger_than_any_repository_cuts_are_refused():
    """Pull's memory bound (jobs x max chunk size) must hold against a hostile manifest."""
    big = mf.MAX_CHUNK_SIZE + 1
    m = make([("a", big)])
    with pytest.raises(IntegrityError, match="bad chunk"):
        mf.validate(m, where="m:t")
    mf.validate(make([("a", mf.MAX_CHUNK_SIZE)]), where="m:t")


# -- issue 8: names, limits, bounded decoding ---------------------------------------------------------
@pytest.mark.parametrize("path", ["1:2.txt", "a:b", "sub/C:", "x/1:2/y", "é/ü.bin", "Cx:/y", "a b/c d"])
def test_colons_that_are_not_drive_letters_are_names(path):
    assert mf.check_path(path) is None
    mf.validate(make([(path, 1)]), where="m:t")


@pytest.mark.parametrize("path", ["C:", "C:/x", "z:/", "c:"])
def test_drive_letters_are_absolute(path):
    assert mf.check_path(path) == "absolute path"


@pytest.mark.parametrize(
    "path, reason",
    [
        ("a\nb", "control character"),
        ("a\rb", "control character"),
        ("a\tb", "control character"),
        ("a\x00b", "control character"),
        ("\x1b[2Jx", "control character"),
        ("a\x7f", "control character"),
        ("a\x9b", "control character"),
        ("bad\udcffname", "not valid UTF-8"),
        ("\ud800", "not valid UTF-8"),
        ("x" * (mf.MAX_NAME_BYTES + 1), "longer than 255 bytes"),
        ("é" * (mf.MAX_NAME_BYTES // 2 + 1), "longer than 255 bytes"),  # bytes, not characters
        ("/".join(["d"] * mf.MAX_PATH_DEPTH + ["f"]), "deeper than 64"),
        ("/".join(["d" * 200] * 21), "longer than 4096 bytes"),
    ],
)
def test_paths_beyond_the_limits_are_refused_with_a_printable_reason(path, reason):
    why = mf.check_path(path)
    assert why is not None and reason in why
    with pytest.raises(IntegrityError) as e:
        mf.validate(make([(path, 1)]), where="m:t")
    e.value.message.encode("utf-8")  # printable: surrogates and controls are escaped
    assert "\n" not in e.value.message and len(e.value.message) < 400


def test_the_limits_themselves_are_accepted():
    assert mf.check_path("x" * mf.MAX_NAME_BYTES) is None
    assert mf.check_path("/".join(["d"] * (mf.MAX_PATH_DEPTH - 1) + ["f"])) is None
    longest = "/".join(["d" * 255] * 15 + ["e" * 200, "f" * 55])
    assert len(longest) == mf.MAX_PATH_BYTES and mf.check_path(longest) is None
    assert "longer than" in mf.check_path(longest + "f")


def test_file_directory_clash_is_found_past_siblings_that_sort_between():
    # "a" < "a.txt" < "a/b" in plain order: the clash is not between neighbours there.
    with pytest.raises(IntegrityError, match="'a' is both a file and a directory"):
        mf.validate(make([("a", 1), ("a.txt", 1), ("a/b", 1)]), where="m:t")
    mf.validate(make([("a.txt", 1), ("a/b", 1), ("ab", 1)]), where="m:t")


def _raw(**changes) -> bytes:
    data = msgspec.json.decode(mf.encode(make([("a", 1)])))
    data.update(changes)
    return msgspec.json.encode(data)


@pytest.mark.parametrize(
    "raw",
    [
        _raw(total_size=10**40),
        _raw(format=10**40),
        _raw(format=-(10**40)),
        _raw(total_size=-1),
        _raw(files=[{"path": "a", "size": 10**30, "mode": 420, "blake3": H, "chunks": [[H, 10**30]]}]),
        _raw(files=[{"path": "a", "size": 1, "mode": 2**70, "blake3": H, "chunks": [[H, 1]]}]),
        b'{"format": 1, "model": "m", "files": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        b"[" * 1_000_000,
        b'{"format": 1' + b"0" * 5000 + b"}",
        b"\xff\xfe",
        b"",
        b"null",
        b'{"format":1,"model":"\\udcff"}',
        b'{"\x80ormat": 1}',  # invalid UTF-8 in a key: msgspec raises UnicodeDecodeError
        b'{"forged\\nerror: line": 1}',  # msgspec quotes the unknown key in its message
    ],
)
def test_hostile_numbers_and_nesting_are_integrity_errors(raw):
    with pytest.raises(IntegrityError) as e:
        mf.decode(raw, where="m:t")
    assert e.value.exit_code == 5 and len(e.value.message) < 400 and "\n" not in e.value.message


def test_a_manifest_beyond_the_bound_is_refused_before_parsing(monkeypatch):
    raw = mf.encode(make([("a", 1)]))
    monkeypatch.setattr(mf, "MAX_MANIFEST_BYTES", len(raw) - 1)
    with pytest.raises(IntegrityError, match="larger than"):
        mf.decode(raw, where="m:t")
    monkeypatch.setattr(mf, "MAX_MANIFEST_BYTES", len(raw))
    assert mf.decode(raw, where="m:t").files[0].path == "a"


# -- issue 9: per-chunk rules checked by msgspec's decoder, same refusals -----------------------------
def _with_chunk(digest, size) -> bytes:
    """A valid one-file manifest whose only chunk is (digest, size), as stored JSON."""
    data = msgspec.json.decode(mf.encode(make([("w.bin", 5)])))
    data["files"][0]["chunks"] = [[digest, size]]
    return msgspec.json.encode(data)


@pytest.mark.parametrize(
    "digest, size",
    [
        (H[:-1], 5),
        (H + "a", 5),
        ("", 5),  # lengths: refused by msgspec's type
        (H, 0),
        (H, -5),
        (H, mf.MAX_CHUNK_SIZE + 1),  # ranges: refused by msgspec's type
        ("A" * 64, 5),
        ("g" * 64, 5),
        ("../" * 21 + "a", 5),
        ("é" * 64, 5),
        (" " * 64, 5),  # not lowercase hex
    ],
)
def test_a_bad_chunk_is_refused_by_decode_with_the_file_named(digest, size):
    with pytest.raises(IntegrityError) as e:
        mf.decode(_with_chunk(digest, size), where="m:t")
    assert e.value.exit_code == 5
    assert e.value.message == "manifest m:t is invalid: bad chunk in 'w.bin'"


def test_a_chunk_refused_before_malformed_json_names_the_file_by_number():
    raw = _with_chunk(H, 0)
    assert raw.endswith(b"]]}]}")
    with pytest.raises(IntegrityError, match="bad chunk in file number 1"):
        mf.decode(raw[:-5] + b"]]}]x", where="m:t")  # msgspec stops at the chunk; the rest does not parse


def test_validate_refuses_bad_chunks_of_a_manifest_that_was_not_decoded():
    """msgspec checks types only when decoding: validate() checks constructed manifests itself."""
    for chunk in [(H[:-1], 5), (H, 0), ("A" * 64, 5), (5, 5), (H, "5"), (H, True)]:
        m = make([("a", 5)])
        m.files[0].chunks = [chunk]
        with pytest.raises(IntegrityError, match="bad chunk in 'a'"):
            mf.validate(m, where="m:t")


def test_many_chunks_round_trip_byte_for_byte():
    digests = [f"{i:064x}" for i in range(1, 5001)]
    m = make([("a", 5000), ("b", 0)])
    m.files[0].chunks = [(d, 1) for d in digests]
    raw = mf.encode(m)
    assert mf.decode(raw, where="m:t") == m
    assert mf.encode(mf.decode(raw, where="m:t")) == raw
