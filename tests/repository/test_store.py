"""The repository layer over a real local backend. The first test pins the storage layout of
both formats with literal keys: neither may drift silently."""

import json

import blake3
import pytest

from aim_cli.backends.local import LocalBackend
from aim_cli.chunking.cdc import ChunkingParams
from aim_cli.chunking.tensors import TensorChunkingParams
from aim_cli.errors import (
    BlobCorruptError,
    BlobMissingError,
    ConfigError,
    IntegrityError,
    KeyNotFoundError,
    NotARepositoryError,
    NotEmptyError,
    NotFoundError,
    ObjectTooLargeError,
    TagExistsError,
    UsageError,
    VersionNotFoundError,
)
from aim_cli.format import blob_codec, layout
from aim_cli.format import manifest as mf
from aim_cli.format.delta_params import DeltaParams
from aim_cli.push import push
from aim_cli.repository import Repository
from tests.fakes import FaultyBackend, HookedBackend
from tests.helpers import write_model


@pytest.fixture
def repo(tmp_path):
    return Repository(LocalBackend(tmp_path / "repo"), "r")


DEFAULT_CHUNKING = {
    "algorithm": "fastcdc2020",
    "min_size": 262144,
    "avg_size": 1048576,
    "max_size": 4194304,
    "normalization": 1,
    "seed": 0,
}


@pytest.mark.parametrize("version", [1, 2, 3])
def test_storage_layout_is_pinned(repo, tmp_path, version):
    """Format 1 stores each chunk's raw bytes; format 2 the same keys, each blob ``header ||
    payload`` (its codec's bytes are blob_codec's to pin: only that it decodes is pinned here),
    and aim-repo.json records the tensor chunking and codec parameters too; format 3 the same
    keys and blobs, and its fixed tensor cuts and delta parameters."""
    if version != 3:
        repo.init(version=version)  # a new repository is format 3 unless asked
    src = write_model(tmp_path / "src", {"w.bin": b"hello weights", "sub/c.json": b"{}"})
    result = push(repo, "resnet", "v1.0", src)
    root = tmp_path / "repo"
    keys = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    h1 = blake3.blake3(b"hello weights").hexdigest()
    h2 = blake3.blake3(b"{}").hexdigest()
    assert keys == sorted(
        [
            "aim-repo.json",
            f"blobs/{h1[:2]}/{h1}",
            f"blobs/{h2[:2]}/{h2}",
            "models/resnet/versions/v1.0.json",
            "models/resnet/summaries/v1.0.json",
        ]
    )
    meta = json.loads((root / "aim-repo.json").read_bytes())
    if version == 1:
        assert meta == {"format": 1, "hash": "blake3", "chunking": DEFAULT_CHUNKING}
        assert list(meta) == ["format", "chunking", "hash"]
    elif version == 2:
        # The two parameter sets belong to their modules (and are still changing): built from them.
        assert meta == {
            "format": 2,
            "hash": "blake3",
            "chunking": DEFAULT_CHUNKING,
            "tensor_chunking": TensorChunkingParams().as_dict(),
            "codecs": blob_codec.CodecParams().as_dict(),
        }
        assert list(meta) == ["format", "chunking", "hash", "tensor_chunking", "codecs"]
    else:
        assert meta == {
            "format": 3,
            "hash": "blake3",
            "chunking": DEFAULT_CHUNKING,
            "tensor_chunking": TensorChunkingParams.for_chunking(ChunkingParams(), fixed=True).as_dict(),
            "codecs": blob_codec.CodecParams().as_dict(),
            "deltas": DeltaParams().as_dict(),
        }
        assert list(meta) == ["format", "chunking", "hash", "tensor_chunking", "codecs", "deltas"]
    raw = (root / "models/resnet/versions/v1.0.json").read_bytes()
    assert blake3.blake3(raw).hexdigest() == result.digest
    doc = json.loads(raw)
    assert list(doc) == ["format", "model", "tag", "created_at", "created_by", "message", "total_size", "files"]
    assert doc["files"][0] == {"path": "sub/c.json", "size": 2, "mode": 0o644, "blake3": h2, "chunks": [[h2, 2]]}
    assert doc["files"][1]["path"] == "w.bin"
    stored = (root / f"blobs/{h1[:2]}/{h1}").read_bytes()
    if version == 1:
        assert stored == b"hello weights"
    else:
        assert stored[:4] == blob_codec.MAGIC and blob_codec.decode(stored, 13) == b"hello weights"
    summary = json.loads((root / "models/resnet/summaries/v1.0.json").read_bytes())
    # Format 2 adds what the version's blobs take in storage, format 3 also what this push added
    # (a field older clients would refuse: only format 3's summaries, which they never read, have
    # it); format 1 keeps the old keys only.
    stored = sum(p.stat().st_size for p in (root / "blobs").glob("*/*"))
    stored_size = {"stored_size": stored} if version > 1 else {}
    if version == 3:
        stored_size["new_stored_size"] = stored  # the first push stored every blob
    assert summary == {
        "format": 1,
        "model": "resnet",
        "tag": "v1.0",
        "digest": result.digest,
        "created_at": doc["created_at"],
        "created_by": doc["created_by"],
        "message": "",
        "total_size": 15,
        "files": 2,
        "chunks": 2,
        **stored_size,
    }
    assert list(summary) == [
        "format",
        "model",
        "tag",
        "digest",
        "created_at",
        "created_by",
        "message",
        "total_size",
        "files",
        "chunks",
        *stored_size,
    ]


@pytest.mark.parametrize("version", [1, 2])
def test_init_is_exclusive_and_pins_the_first_parameters(repo, version):
    first = repo.init(ChunkingParams.for_average(512 * 1024), version=version)
    other = Repository(repo.backend, "r")
    second = other.init(ChunkingParams(), version=3 - version)
    assert first == second == ChunkingParams.for_average(512 * 1024)
    assert repo.format().version == other.format().version == version


def test_unknown_format_is_refused(repo):
    repo.backend.put("aim-repo.json", json.dumps({"format": 4, "chunking": {}, "hash": "blake3"}).encode())
    with pytest.raises(ConfigError, match="format 4"):
        repo.params()


def test_format_2_without_its_parameters_is_malformed(repo):
    """A known format must carry every parameter it pins: nothing is guessed."""
    meta = {"format": 2, "chunking": ChunkingParams().as_dict(), "hash": "blake3"}
    repo.backend.put("aim-repo.json", json.dumps(meta).encode())
    with pytest.raises(IntegrityError, match="malformed"):
        repo.params()


def test_a_root_without_aim_repo_json_is_not_a_repository(repo):
    with pytest.raises(NotARepositoryError, match="no repository 'r' there") as err:
        repo.params()
    assert err.value.exit_code == 3 and err.value.location == repo.backend.location


@pytest.mark.parametrize("version", [1, 2])
def test_get_blob_verifies(repo, version):
    repo.init(version=version)
    data = b"chunk bytes"
    digest = blake3.blake3(data).hexdigest()
    repo.put_blob(digest, data)
    assert repo.get_blob(digest, len(data)) == data
    # Other bytes of the same size, stored as this format stores them: only the hash can tell.
    repo.backend.put(f"blobs/{digest[:2]}/{digest}", repo.format().encode(b"chunk bytez"))
    with pytest.raises(BlobCorruptError, match="corrupt: its content does not match its hash") as err:
        repo.get_blob(digest, len(data))
    assert err.value.digest == digest
    with pytest.raises(BlobMissingError, match="missing") as err:
        repo.get_blob("0" * 64, 5)
    assert err.value.digest == "0" * 64


@pytest.mark.parametrize("version, bound", [(1, 5), (2, 5 + blob_codec.HEADER_SIZE)])
def test_get_blob_refuses_an_oversized_object_without_reading_it_whole(tmp_path, version, bound):
    """A stored object far larger than the chunk a manifest names is refused after reading at
    most ``bound`` + 1 bytes (the largest object that can hold the chunk in the repository's
    format): the backend reports it too large, the store calls the blob corrupt."""
    backend = FaultyBackend(LocalBackend(tmp_path / "repo"))
    repo = Repository(backend, "r")
    repo.init(version=version)
    data = b"x" * 5
    digest = blake3.blake3(data).hexdigest()
    key = f"blobs/{digest[:2]}/{digest}"
    backend.put(key, b"y" * (4 * 1024 * 1024))
    with pytest.raises(ObjectTooLargeError):
        backend.get(key, max_size=bound)
    backend.calls.clear()
    with pytest.raises(BlobCorruptError, match=f"corrupt: it is larger than {bound} bytes") as err:
        repo.get_blob(digest, 5)
    assert err.value.digest == digest
    assert [c for c in backend.calls if c[0] == "get"] == [("get", key, bound)]


@pytest.mark.parametrize("stored", [10, 600])
def test_missing_blobs_by_checks_and_by_listing(repo, stored):
    """Few wanted digests: asked one by one; many: a listing. Both give the same answer."""
    repo.init()
    digests = [blake3.blake3(str(i).encode()).hexdigest() for i in range(stored + 300)]
    for d in digests[:stored]:
        repo.put_blob(d, b"x")
    assert repo.missing_blobs(digests) == set(digests[stored:])
    assert repo.missing_blobs(digests[:3]) == set()


def _manifest(tag, data=b"abc", message=""):
    h = blake3.blake3(data).hexdigest()
    return mf.Manifest(
        1,
        "m",
        tag,
        "2026-01-01T00:00:00.000000Z",
        "u@h",
        message,
        len(data),
        [mf.FileEntry("f", len(data), 0o644, h, [(h, len(data))])],
    )


def test_commit_is_exclusive_and_idempotent(repo):
    repo.init()
    first = repo.commit(_manifest("v1"))
    assert first.created
    again = repo.commit(_manifest("v1", message="same files, other message"))
    assert not again.created and again.digest == first.digest
    with pytest.raises(TagExistsError) as e:
        repo.commit(_manifest("v1", data=b"other"))
    assert e.value.exit_code == 4
    assert repo.get_version("m", "v1").digest == first.digest


def test_versions_models_and_deletion(repo):
    repo.init()
    repo.commit(_manifest("v1"))
    m2 = _manifest("v2")
    m2.created_at = "2026-02-01T00:00:00.000000Z"
    repo.commit(m2)
    assert repo.list_models() == ["m"]
    assert [s.tag for s in repo.list_versions("m")] == ["v1", "v2"]
    with pytest.raises(NotFoundError, match="version 'v9'"):
        repo.get_version("m", "v9")
    with pytest.raises(NotFoundError, match="model 'nope'"):
        repo.get_version("nope", "v1")
    repo.delete_version("m", "v1")
    assert repo.list_tags("m") == ["v2"]
    assert repo.delete_model("m").names == ["v2"]
    assert repo.list_models() == []
    with pytest.raises(NotFoundError):
        repo.delete_model("m")


def test_a_manifest_stored_under_another_name_is_refused(repo):
    repo.init()
    raw = mf.encode(_manifest("v1"))
    repo.backend.put("models/m/versions/v2.json", raw)
    with pytest.raises(IntegrityError, match="names m:v1"):
        repo.get_version("m", "v2")


def test_storage_that_ignores_exclusive_creates_is_refused(tmp_path):
    from aim_cli.errors import StorageError

    class IgnoresConditions(LocalBackend):
        def put_if_absent(self, key, data):
            self.put(key, data)
            return True

    repo = Repository(IgnoresConditions(tmp_path / "repo"), "r")
    repo.init()
    before = (tmp_path / "repo/aim-repo.json").read_bytes()
    with pytest.raises(StorageError, match="conditional writes"):
        repo.check_conditional_writes()
    assert (tmp_path / "repo/aim-repo.json").read_bytes() == before
    Repository(LocalBackend(tmp_path / "repo"), "r").check_conditional_writes()  # a real one passes


@pytest.mark.parametrize(
    "key, parsed",
    [
        ("models/resnet/versions/v1.0.json", ("resnet", "v1.0", "v1.0")),
        ("models/m/versions/v1 copy.json", ("m", None, "v1 copy")),
        ("models/m/versions/.DS_Store", ("m", None, ".DS_Store")),
        ("models/m/versions/x.json.bak", ("m", None, "x.json.bak")),
        ("models/m/versions/.json", ("m", None, ".json")),
        ("models/m/versions/-v1.json", ("m", None, "-v1")),
        ("models/m/versions/sub/v1.json", (None, None, "v1")),
        ("models/m/v1.json", (None, None, "v1")),
        ("models/bad name/versions/v1.json", (None, None, "v1")),
        ("models/m//versions/v1.json", (None, None, "v1")),
    ],
)
def test_version_keys_are_parsed_in_one_place(key, parsed):
    vk = layout.parse_version_key(key)
    assert (vk.model, vk.tag, vk.name) == parsed and vk.key == key
    assert vk.label == (f"{vk.model}:{vk.tag}" if vk.tag else key)
    if vk.tag:
        assert layout.manifest_key(vk.model, vk.tag) == key


def test_blob_keys_are_pinned():
    h = "ab" + "0" * 62
    assert layout.blob_key(h) == f"blobs/ab/{h}" and layout.shard_key(h) == f"ab/{h}"
    assert layout.digest_of_shard_key(f"ab/{h}") == h
    for stray in (f"cd/{h}", f"ab/{h}/x", "ab/.DS_Store", f"ab/{h.upper()}", h):
        assert layout.digest_of_shard_key(stray) is None
    assert (
        layout.WRITE_DIRS[:2] == ("", "locks") and "blobs/00" in layout.WRITE_DIRS and "blobs/ff" in layout.WRITE_DIRS
    )
    assert layout.WRITE_DIRS[-8:] == (
        "models/*/versions",
        "models/*/summaries",
        "models/*/signatures/*",
        "models/*/aliases/*",
        "models/@*/*/versions",
        "models/@*/*/summaries",
        "models/@*/*/signatures/*",
        "models/@*/*/aliases/*",
    )
    assert "edges/*/*" in layout.WRITE_DIRS
    assert len(layout.WRITE_DIRS) == 2 + 256 + 1 + 8


def test_edge_keys_are_pinned():
    b, d = "ab" + "0" * 62, "cd" + "1" * 62
    assert layout.edges_prefix(b) == f"edges/ab/{b}/"
    assert layout.edge_key(b, d) == f"edges/ab/{b}/{d}"
    assert layout.edge_of_key(f"edges/ab/{b}/{d}") == (b, d)
    for stray in (
        f"edges/cd/{b}/{d}",
        f"edges/ab/{b}/{d}/x",
        f"edges/ab/{b}/",
        f"blobs/ab/{b}",
        f"edges/ab/{b}/{d.upper()}",
    ):
        assert layout.edge_of_key(stray) is None


def test_not_found_errors_carry_model_and_tag(repo):
    repo.init()
    repo.commit(_manifest("v1"))
    with pytest.raises(VersionNotFoundError) as err:
        repo.get_version("m", "v9")
    assert (err.value.model, err.value.tag) == ("m", "v9")
    for call in (
        lambda: repo.get_version("nope", "v1"),
        lambda: repo.list_versions("nope"),
        lambda: repo.delete_model("nope"),
        lambda: repo.delete_version("nope", "v1"),
    ):
        with pytest.raises(VersionNotFoundError) as err:
            call()
        assert (err.value.model, err.value.tag) == ("nope", None)


def test_a_new_root_must_be_empty_and_not_nested(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "f").write_text("x")
    with pytest.raises(NotEmptyError) as err:
        Repository(LocalBackend(tmp_path / "data"), "r").init()
    assert err.value.location == str(tmp_path / "data") and err.value.exit_code == 4
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["f"]
    Repository(LocalBackend(tmp_path / "outer"), "o").init()
    with pytest.raises(NotEmptyError, match="inside the repository at"):
        Repository(LocalBackend(tmp_path / "outer" / "inner"), "i").init()
    assert not (tmp_path / "outer" / "inner").exists()


def test_a_first_push_racing_another_one_is_no_conflict(tmp_path):
    """Two first pushes: ours looked (no aim-repo.json), then the other created it and stored
    blobs. The root is not empty, but it is a repository now: init goes on."""

    class LookedTooEarly(LocalBackend):
        looked = False

        def get(self, key, max_size=None):
            if key == "aim-repo.json" and not self.looked:
                self.looked = True
                raise KeyNotFoundError(key)
            return super().get(key, max_size)

    other = Repository(LocalBackend(tmp_path / "repo"), "r")
    first = other.init(ChunkingParams.for_average(64 * 1024))
    other.put_blob(blake3.blake3(b"x").hexdigest(), b"x")
    assert Repository(LookedTooEarly(tmp_path / "repo"), "r").init() == first


def test_init_of_an_existing_repository_is_one_read(tmp_path):
    """A push to a repository that exists (most pushes) reads aim-repo.json and nothing else: no
    HEAD before it, a round trip each on S3."""
    first = Repository(LocalBackend(tmp_path / "repo"), "r").init(ChunkingParams.for_average(64 * 1024))
    calls = []
    hooked = HookedBackend(LocalBackend(tmp_path / "repo"), before=lambda op, key: calls.append((op, key)))
    assert Repository(hooked, "r").init() == first
    assert calls == [("get", "aim-repo.json")]


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "a\x00b"])
def test_delete_version_refuses_names_that_are_not_one_key_segment(repo, name):
    repo.init()
    with pytest.raises(UsageError):
        repo.delete_version("m", name)


@pytest.mark.parametrize("model", ["/", ".", "..", "a\x00b", "a/b/c", "a//b", "a/..", "../a", "@a", "@a/b", "a--b/c"])
def test_delete_version_refuses_models_that_are_not_a_model_folder(repo, model):
    """A model is one key segment, or a valid ``org/model`` (two, its first marked): never a
    path that leaves its folder, never another's (``@a`` is namespace a's folder)."""
    repo.init()
    with pytest.raises(UsageError):
        repo.delete_version(model, "v1")


def test_signature_keys_are_the_stores_own_and_leave_with_their_version(repo):
    """models/<m>/signatures/<tag>/<hint>.sig: never a stray, never a version; exclusive per
    signer; delete-version and model delete remove them with the version."""
    from aim_cli.format.layout import SignatureKey, manifest_key, parse_model_key, signature_key

    repo.init()
    key = signature_key("m", "v1", "abc123")
    assert key == "models/m/signatures/v1/abc123.sig"
    assert parse_model_key(key) == SignatureKey(key, "m", "v1", "abc123")
    assert not isinstance(parse_model_key("models/m/signatures/v1/x.txt"), SignatureKey)
    for tag in ("v1", "v2"):
        repo.backend.put(manifest_key("m", tag), b"{}")
        assert repo.put_signature("m", tag, "abc123", b"bundle") and not repo.put_signature("m", tag, "abc123", b"x")
    repo.put_signature("m", "v1", "def456", b"bundle 2")
    assert (
        repo.list_signatures("m", "v1") == ["abc123", "def456"]
        and repo.get_signature("m", "v1", "def456") == b"bundle 2"
    )
    assert repo.list_tags("m") == ["v1", "v2"]
    repo.delete_version("m", "v1")
    assert repo.list_signatures("m", "v1") == [] and repo.list_signatures("m", "v2") == ["abc123"]
    repo.delete_model("m")
    assert list(repo.backend.list("models/")) == []
