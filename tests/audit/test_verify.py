"""aim_cli.audit.verify and aim_cli.audit.check: a version's blobs re-read from storage, a local directory against
its manifest, the whole repository; and the `--digest` pin of pull, which must refuse before any download."""

from __future__ import annotations

import pytest

from aim_cli.audit import verify
from aim_cli.audit.check import check_repo
from aim_cli.errors import IntegrityError
from aim_cli.pull import pipeline as pullmod
from aim_cli.repository import Repository
from tests.fakes import CountingBackend
from tests.helpers import LOCAL_ONLY, chunks_of, make_variant_model, stored_sizes


@pytest.fixture
def pushed(repo, tmp_path):
    """``m:v1`` pushed from a model directory; returns (env, source dir, VersionRef)."""
    src = make_variant_model(tmp_path / "src")
    repo.push("m", src, "v1")
    return repo, src, repo.repository.get_version("m", "v1")


def weights_blob(ref) -> str:
    entry = next(f for f in ref.manifest.files if f.path == "weights.bin")
    return entry.chunks[len(entry.chunks) // 2][0]


def test_an_intact_version_verifies(pushed):
    env, _, ref = pushed
    report = verify.verify_version(env.repository, ref, jobs=4)
    assert report.ok and report.problems == []
    assert report.blobs == len({d for f in ref.manifest.files for d, _ in f.chunks}) > 10
    assert report.bytes == ref.manifest.total_size


def test_a_flipped_byte_is_caught_by_verify_by_check_and_by_pull(pushed, tmp_path):
    env, _, ref = pushed
    bad = weights_blob(ref)
    env.flip_byte(bad, offset=100)

    report = verify.verify_version(env.repository, ref, jobs=4)
    assert [(p.digest, p.problem, p.used_by) for p in report.problems] == [(bad, "corrupt", ["weights.bin"])]

    checked = check_repo(env.repository, read_data=True)
    assert [(p.digest, p.problem, p.used_by) for p in checked.problems] == [(bad, "corrupt", ["m:v1/weights.bin"])]
    assert not checked.ok
    # Without --read-data the size still matches: only reading the data finds a flipped byte.
    assert check_repo(env.repository).ok

    dest = tmp_path / "dest"
    with pytest.raises(IntegrityError, match=bad):
        pullmod.pull(env.repository, "m", dest, tag="v1", jobs=4)
    assert not (dest / "weights.bin").exists()


def test_a_deleted_blob_is_caught_by_check_and_verify(pushed):
    env, _, ref = pushed
    gone = weights_blob(ref)
    env.delete_blob(gone)

    checked = check_repo(env.repository)
    assert [(p.digest, p.problem, p.used_by) for p in checked.problems] == [(gone, "missing", ["m:v1/weights.bin"])]
    report = verify.verify_version(env.repository, ref)
    assert [(p.digest, p.problem) for p in report.problems] == [(gone, "missing")]


def test_check_reports_broken_manifests_and_unreferenced_blobs(pushed):
    env, _, ref = pushed
    intact = check_repo(env.repository, read_data=True)
    chunks = chunks_of(ref.manifest)
    assert intact.unreferenced == 0 and intact.read == intact.stored == len(chunks)
    # Each referenced chunk counted once, raw (its manifest size) and stored (its object's size).
    assert (intact.raw_bytes, intact.stored_bytes) == (
        sum(chunks.values()),
        sum(stored_sizes(env.repository, chunks).values()),
    )
    env.repository.backend.put("models/m/versions/v2.json", b'{"format": 1, "model": "m"')
    # Stored under a name that is not its hash: corrupt and unreferenced.
    stray_size = env.repository.put_blob("ab" * 32, b"x")
    assert stray_size == env.blobs()["ab" * 32]

    checked = check_repo(env.repository, read_data=True)
    assert [name for name, _ in checked.broken] == ["m:v2"]
    assert [(p.digest, p.problem, p.used_by) for p in checked.problems] == [("ab" * 32, "corrupt", [])]
    assert (checked.unreferenced, checked.unreferenced_bytes) == (1, stray_size)
    assert checked.versions == 1 and checked.read == checked.stored - 1


@pytest.fixture
def deployed(pushed, tmp_path):
    env, _, ref = pushed
    dest = tmp_path / "deploy"
    pullmod.pull(env.repository, "m", dest, tag="v1", jobs=4)
    (dest / ".aim" / "partial").mkdir(parents=True)  # pull's working files are not part of the model
    (dest / ".aim" / "partial" / "leftover").write_bytes(b"x")
    (dest / ".aimignore").write_text("x")
    return env, ref, dest


@LOCAL_ONLY
def test_a_pulled_directory_matches(deployed):
    _, ref, dest = deployed
    report = verify.verify_local(ref, dest)
    assert report.ok and report.files == 2


@LOCAL_ONLY
@pytest.mark.parametrize(
    "change, expected",
    [
        ("modified", (["weights.bin"], [], [])),
        ("missing", ([], ["config.json"], [])),
        ("extra", ([], [], ["sub/notes.txt"])),
    ],
)
def test_verify_local_finds_each_difference(deployed, change, expected):
    _, ref, dest = deployed
    if change == "modified":  # same size, one byte differs: only the digest can tell
        data = bytearray((dest / "weights.bin").read_bytes())
        data[1234] ^= 0x80
        (dest / "weights.bin").write_bytes(bytes(data))
    elif change == "missing":
        (dest / "config.json").unlink()
    else:
        (dest / "sub").mkdir()
        (dest / "sub" / "notes.txt").write_text("mine")
    report = verify.verify_local(ref, dest)
    assert (report.modified, report.missing, report.extra) == expected
    assert not report.ok


@LOCAL_ONLY
def test_verify_local_reads_no_blob(deployed):
    env, _, dest = deployed
    counting = CountingBackend(env.repository.backend)
    ref = Repository(counting, env.name).get_version("m", "v1")
    assert verify.verify_local(ref, dest).ok
    assert counting.gets == 0


def test_a_wrong_digest_downloads_nothing(pushed, tmp_path):
    env, _, ref = pushed
    counting = CountingBackend(env.repository.backend)
    repository = Repository(counting, env.name)
    dest = tmp_path / "dest"
    wrong = ("0" if ref.digest[0] != "0" else "1") + ref.digest[1:]
    with pytest.raises(IntegrityError, match="pinned"):
        pullmod.pull(repository, "m", dest, tag="v1", digest=wrong)
    assert counting.gets == 0
    assert not dest.exists() or not any(dest.iterdir())

    result = pullmod.pull(repository, "m", dest, tag="v1", digest=ref.digest.upper())
    assert result.digest == ref.digest and counting.gets > 0
    assert verify.verify_local(ref, dest).ok
