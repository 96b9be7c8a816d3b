"""The repository layer over a real local backend. The first test pins the storage layout with
literal keys: format 1 must not drift silently."""

import json

import blake3
import pytest

from aim_cli import manifest as mf
from aim_cli.backends.local import LocalBackend
from aim_cli.chunking import ChunkingParams
from aim_cli.errors import (BlobCorruptError, BlobMissingError, ConfigError, IntegrityError, NotARepositoryError, NotFoundError,
                            ObjectTooLargeError, TagExistsError)
from aim_cli.push import push
from aim_cli.store import Repository
from tests.helpers import write_model


@pytest.fixture
def repo(tmp_path):
    return Repository(LocalBackend(tmp_path / "repo"), "r")


def test_storage_layout_is_pinned(repo, tmp_path):
    src = write_model(tmp_path / "src", {"w.bin": b"hello weights", "sub/c.json": b"{}"})
    result = push(repo, "resnet", "v1.0", src)
    root = tmp_path / "repo"
    keys = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    h1 = blake3.blake3(b"hello weights").hexdigest()
    h2 = blake3.blake3(b"{}").hexdigest()
    assert keys == sorted(["aim-repo.json", f"blobs/{h1[:2]}/{h1}", f"blobs/{h2[:2]}/{h2}",
                           "models/resnet/versions/v1.0.json"])
    meta = json.loads((root / "aim-repo.json").read_bytes())
    assert meta == {"format": 1, "hash": "blake3", "chunking": {
        "algorithm": "fastcdc2020", "min_size": 262144, "avg_size": 1048576, "max_size": 4194304,
        "normalization": 1, "seed": 0}}
    raw = (root / "models/resnet/versions/v1.0.json").read_bytes()
    assert blake3.blake3(raw).hexdigest() == result.digest
    doc = json.loads(raw)
    assert list(doc) == ["format", "model", "tag", "created_at", "created_by", "message", "total_size", "files"]
    assert doc["files"][0] == {"path": "sub/c.json", "size": 2, "mode": 0o644, "blake3": h2, "chunks": [[h2, 2]]}
    assert doc["files"][1]["path"] == "w.bin"
    assert (root / f"blobs/{h1[:2]}/{h1}").read_bytes() == b"hello weights"


def test_init_is_exclusive_and_pins_the_first_parameters(repo):
    first = repo.init(ChunkingParams.for_average(512 * 1024))
    second = Repository(repo.backend, "r").init(ChunkingParams())
    assert first == second == ChunkingParams.for_average(512 * 1024)


def test_unknown_format_is_refused(repo):
    repo.backend.put("aim-repo.json", json.dumps({"format": 2, "chunking": {}, "hash": "blake3"}).encode())
    with pytest.raises(ConfigError, match="format 2"):
        repo.params()


def test_a_root_without_aim_repo_json_is_not_a_repository(repo):
    with pytest.raises(NotARepositoryError, match="no repository 'r' there") as err:
        repo.params()
    assert err.value.exit_code == 3 and err.value.location == repo.backend.location


def test_get_blob_verifies(repo):
    data = b"chunk bytes"
    digest = blake3.blake3(data).hexdigest()
    repo.put_blob(digest, data)
    assert repo.get_blob(digest, len(data)) == data
    repo.backend.put(f"blobs/{digest[:2]}/{digest}", b"chunk bytez")
    with pytest.raises(BlobCorruptError, match="corrupt") as err:
        repo.get_blob(digest, len(data))
    assert err.value.digest == digest
    with pytest.raises(BlobMissingError, match="missing") as err:
        repo.get_blob("0" * 64, 5)
    assert err.value.digest == "0" * 64


def test_get_blob_refuses_an_oversized_object_without_reading_it_whole(repo):
    """A stored object far larger than the chunk a manifest names is refused after reading at
    most size + 1 bytes: the backend reports it too large, the store calls the blob corrupt."""
    data = b"x" * 5
    digest = blake3.blake3(data).hexdigest()
    repo.backend.put(f"blobs/{digest[:2]}/{digest}", b"y" * (4 * 1024 * 1024))
    with pytest.raises(ObjectTooLargeError):
        repo.backend.get(f"blobs/{digest[:2]}/{digest}", max_size=5)
    with pytest.raises(BlobCorruptError, match="not the 5 bytes expected"):
        repo.get_blob(digest, 5)


@pytest.mark.parametrize("stored", [10, 600])
def test_missing_blobs_by_checks_and_by_listing(repo, stored):
    """Few wanted digests: asked one by one; many: a listing. Both give the same answer."""
    digests = [blake3.blake3(str(i).encode()).hexdigest() for i in range(stored + 300)]
    for d in digests[:stored]:
        repo.put_blob(d, b"x")
    assert repo.missing_blobs(digests) == set(digests[stored:])
    assert repo.missing_blobs(digests[:3]) == set()


def _manifest(tag, data=b"abc", message=""):
    h = blake3.blake3(data).hexdigest()
    return mf.Manifest(1, "m", tag, "2026-01-01T00:00:00.000000Z", "u@h", message, len(data),
                       [mf.FileEntry("f", len(data), 0o644, h, [(h, len(data))])])


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
    assert [r.manifest.tag for r in repo.list_versions("m")] == ["v1", "v2"]
    with pytest.raises(NotFoundError, match="version 'v9'"):
        repo.get_version("m", "v9")
    with pytest.raises(NotFoundError, match="model 'nope'"):
        repo.get_version("nope", "v1")
    repo.delete_version("m", "v1")
    assert repo.list_tags("m") == ["v2"]
    assert [d.name for d in repo.delete_model("m")] == ["v2"]
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
