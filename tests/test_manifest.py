import msgspec
import pytest

from aim_cli import manifest as mf
from aim_cli.errors import IntegrityError

H = "a" * 64


def make(files, total=None):
    entries = [mf.FileEntry(path, size, 0o644, H, [(H, size)] if size else []) for path, size in files]
    return mf.Manifest(mf.FORMAT, "m", "t", "2026-01-01T00:00:00.000000Z", "u@h", "", 
                       sum(s for _, s in files) if total is None else total, entries)


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
