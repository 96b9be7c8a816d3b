"""Storage formats end to end (issue 10, docs/design.md §3): `repo create --format`, format 3
the default (issue 18), formats 2 and 1 kept exactly as they were, an unknown format refused
before any blob is read (a format 3 repository by a client of formats 1 and 2 too), and stored
bytes reported beside raw bytes. Through the real console script."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from aim_cli import api
from aim_cli.format import blob_codec
from aim_cli.format.layout import REPO_META_KEY, blob_key, manifest_key, summary_key
from tests.helpers import file_contents, make_mixed_model, ok, one_line_error, run


def _config(tmp_path: Path) -> Path:
    config = tmp_path / "model_repos.yaml"
    config.write_text("repos: {}\n")
    return config


def _create(tmp_path: Path, name: str, *extra: str) -> Path:
    ok(
        run(
            [
                "--config",
                _config_path(tmp_path),
                "repo",
                "create",
                name,
                "--type",
                "local",
                "--path",
                tmp_path / name,
                *extra,
            ],
            cwd=tmp_path,
        )
    )
    return tmp_path / name


def _config_path(tmp_path: Path) -> Path:
    config = tmp_path / "model_repos.yaml"
    if not config.exists():
        config.write_text("repos: {}\n")
    return config


def _aim(tmp_path: Path, *args):
    return run(["--config", _config_path(tmp_path), *args], cwd=tmp_path)


def _meta(root: Path) -> dict:
    return json.loads((root / REPO_META_KEY).read_text())


def _blob_files(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in (root / "blobs").glob("*/*")}


CHUNKING = {
    "algorithm": "fastcdc2020",
    "min_size": 262144,
    "avg_size": 1048576,
    "max_size": 4194304,
    "normalization": 1,
    "seed": 0,
}
#: Format 2's aim-repo.json, exactly as every aim_cli since issue 10 wrote it.
FORMAT_2_META = {
    "format": 2,
    "chunking": CHUNKING,
    "hash": "blake3",
    "tensor_chunking": {
        "algorithm": "safetensors-v1",
        "max_header_bytes": 16777216,
        "large_tensor_bytes": 262144,
        "group_avg_bytes": 1048576,
        "group_max_bytes": 4194304,
    },
    "codecs": {"zstd_level": 1, "min_saving": 0.03},
}


def test_new_repositories_are_format_3_and_formats_2_and_1_stay_available(tmp_path):
    """Format 3 is the default of `repo create` and of aim.create_repo (issue 18); `--format 2`
    and `--format 1` make the older kinds, their aim-repo.json exactly what it always was: older
    clients read them."""
    assert _meta(_create(tmp_path, "new"))["format"] == 3
    made = api.create_repo("lib", "local", str(tmp_path / "lib"), config=str(_config_path(tmp_path)))
    assert made.format == 3 and _meta(tmp_path / "lib")["format"] == 3
    f2 = _meta(_create(tmp_path, "f2", "--format", "2"))
    assert f2 == FORMAT_2_META and list(f2) == list(FORMAT_2_META)
    assert list(f2["tensor_chunking"]) == list(FORMAT_2_META["tensor_chunking"])
    old = _meta(_create(tmp_path, "old", "--format", "1"))
    assert old == {"format": 1, "chunking": CHUNKING, "hash": "blake3"} and list(old) == ["format", "chunking", "hash"]


#: aim_cli as a client of formats 1 and 2 (before issue 18) runs it: the same check, fewer formats.
CLIENT_OF_FORMATS_1_AND_2 = (
    sys.executable,
    "-c",
    "import sys\n"
    "import aim_cli.format.repo_format as repo_format\n"
    "repo_format.KNOWN_FORMATS = (1, 2)\n"
    "from aim_cli.cli.main import main\n"
    "sys.argv = sys.argv[1:]\n"
    "main()\n",
)


def test_a_client_of_formats_1_and_2_refuses_a_format_3_repository_before_reading_any_blob(tmp_path):
    """A format 3 repository made by default is refused (exit 7, "upgrade aim_cli") by a client
    that knows formats 1 and 2 only, before it reads a blob: with the blobs gone, a client that
    read one first would say "missing" (exit 5). It still reads a format 2 repository."""
    root = _create(tmp_path, "r")
    src = make_mixed_model(tmp_path / "src", weights=600_000)
    ok(_aim(tmp_path, "model", "push", "r", "m", src, "--tag", "v1"))
    shutil.move(root / "blobs", tmp_path / "blobs-aside")
    for args in _refused_commands(tmp_path, src):
        res = run(["--config", _config_path(tmp_path), *args], cwd=tmp_path, prefix=CLIENT_OF_FORMATS_1_AND_2)
        one_line_error(res, 7, "storage format 3", "knows formats 1 and 2", "upgrade aim_cli")
    assert not (tmp_path / "out").exists() and not (root / "blobs").exists()
    assert (root / manifest_key("m", "v1")).exists() and (root / summary_key("m", "v1")).exists()
    _create(tmp_path, "f2", "--format", "2")
    ok(_aim(tmp_path, "model", "push", "f2", "m", src, "--tag", "v1", "-q"))
    ok(
        run(
            ["--config", _config_path(tmp_path), "model", "pull", "f2", "m", tmp_path / "out2", "-q"],
            cwd=tmp_path,
            prefix=CLIENT_OF_FORMATS_1_AND_2,
        )
    )
    assert file_contents(tmp_path / "out2") == file_contents(src)


def test_format_and_chunk_size_are_refused_with_no_check(tmp_path):
    for extra in (["--format", "1"], ["--chunk-size", "512KiB"]):
        res = _aim(tmp_path, "repo", "create", "r", "--type", "local", "--path", tmp_path / "r", "--no-check", *extra)
        one_line_error(res, 2, "--no-check")
        assert not (tmp_path / "r").exists() and "r:" not in (tmp_path / "model_repos.yaml").read_text()
    assert (
        _aim(tmp_path, "repo", "create", "r", "--type", "local", "--path", tmp_path / "r", "--format", "4").returncode
        == 2
    )


@pytest.mark.parametrize("storage_format", ["1", "2", "3"])
def test_a_format_unknown_to_this_client_is_refused_before_any_blob_is_read(tmp_path, storage_format):
    root = _create(tmp_path, "r", "--format", storage_format)
    src = make_mixed_model(tmp_path / "src", weights=600_000)
    ok(_aim(tmp_path, "model", "push", "r", "m", src, "--tag", "v1"))
    meta = _meta(root)
    meta["format"] = 4
    (root / REPO_META_KEY).write_text(json.dumps(meta))
    blobs = _blob_files(root)
    for args in _refused_commands(tmp_path, src):
        one_line_error(_aim(tmp_path, *args), 7, "storage format 4", "upgrade aim_cli")
    assert not (tmp_path / "out").exists() and _blob_files(root) == blobs
    assert (root / manifest_key("m", "v1")).exists() and (root / summary_key("m", "v1")).exists()


def _refused_commands(tmp_path: Path, src: Path) -> list[list]:
    """What a client refuses in a repository of a format it does not know, before it reads a
    blob, writes one, touches DEST or deletes anything."""
    return [
        ["model", "pull", "r", "m", tmp_path / "out"],
        ["model", "verify", "r", "m"],
        ["repo", "check", "r", "--read-data"],
        ["repo", "gc", "r"],
        ["model", "push", "r", "m", src, "--tag", "v2"],
        ["model", "delete-version", "r", "m", "--tag", "v1"],
        ["model", "delete", "r", "m", "--yes"],
    ]


def test_format_1_repositories_keep_raw_blobs_and_summaries_older_clients_read(tmp_path):
    root = _create(tmp_path, "old", "--format", "1")
    src = make_mixed_model(tmp_path / "src")
    pushed = json.loads(ok(_aim(tmp_path, "model", "push", "old", "m", src, "--tag", "v1", "--json")).stdout)
    manifest = json.loads((root / manifest_key("m", "v1")).read_bytes())
    chunks = {d: s for f in manifest["files"] for d, s in f["chunks"]}
    blobs = _blob_files(root)
    # Raw chunks, as format 1 always stored them: each blob file is the chunk itself.
    assert {d: len(b) for d, b in blobs.items()} == chunks
    assert pushed["new_stored_bytes"] == pushed["new_bytes"] == sum(chunks.values())
    # No stored_size in the summary: an older client's strict reader refuses unknown fields.
    assert "stored_size" not in json.loads((root / summary_key("m", "v1")).read_bytes())
    pulled = json.loads(ok(_aim(tmp_path, "model", "pull", "old", "m", tmp_path / "out", "--json")).stdout)
    assert file_contents(tmp_path / "out") == file_contents(src)
    assert pulled["fetched_bytes"] == pulled["fetched_raw_bytes"] == sum(chunks.values())
    ok(_aim(tmp_path, "repo", "check", "old", "--read-data"))


@pytest.mark.parametrize("storage_format", ["2", "3"])
def test_formats_2_and_3_report_stored_bytes_beside_raw_bytes(tmp_path, storage_format):
    root = _create(tmp_path, "new", "--format", storage_format)
    src = make_mixed_model(tmp_path / "src")
    (src / "notes.txt").write_bytes(b"the same line of text, again and again\n" * 20_000)  # compressible
    pushed = json.loads(ok(_aim(tmp_path, "model", "push", "new", "m", src, "--tag", "v1", "--json")).stdout)
    manifest = json.loads((root / manifest_key("m", "v1")).read_bytes())
    chunks = {d: s for f in manifest["files"] for d, s in f["chunks"]}
    blobs = _blob_files(root)
    assert set(blobs) == set(chunks) and all(b[:4] == blob_codec.MAGIC for b in blobs.values())
    stored = sum(len(b) for b in blobs.values())
    assert pushed["new_bytes"] == sum(chunks.values()) and pushed["new_stored_bytes"] == pushed["stored_size"] == stored

    [version] = json.loads(ok(_aim(tmp_path, "model", "versions", "new", "m", "--json")).stdout)
    assert version["stored_size"] == stored
    info = json.loads(ok(_aim(tmp_path, "model", "info", "new", "m", "--json")).stdout)
    assert (info["format"], info["distinct_size"], info["stored_size"], info["missing_blobs"]) == (
        int(storage_format),
        sum(chunks.values()),
        stored,
        0,
    )
    check = json.loads(ok(_aim(tmp_path, "repo", "check", "new", "--read-data", "--json")).stdout)
    assert (check["raw_bytes"], check["stored_bytes"], check["read"]) == (sum(chunks.values()), stored, len(chunks))
    pulled = json.loads(ok(_aim(tmp_path, "model", "pull", "new", "m", tmp_path / "out", "--json")).stdout)
    assert file_contents(tmp_path / "out") == file_contents(src)
    assert (pulled["fetched_bytes"], pulled["fetched_raw_bytes"]) == (stored, sum(chunks.values()))
    text = ok(_aim(tmp_path, "model", "versions", "new", "m")).stdout
    assert "STORED" in text.splitlines()[0]


def test_a_manifest_is_valid_in_either_format_with_the_same_digest(tmp_path):
    """The manifest names raw chunks: its exact bytes, put in a repository of the other format
    beside the same chunks stored that format's way, make the same version with the same digest."""
    old, new = _create(tmp_path, "old", "--format", "1"), _create(tmp_path, "new", "--format", "2")
    src = make_mixed_model(tmp_path / "src")
    ok(_aim(tmp_path, "model", "push", "old", "m", src, "--tag", "v1"))
    config = str(_config_path(tmp_path))
    source, target = api.open_repository("old", config=config), api.open_repository("new", config=config)
    ref = source.get_version("m", "v1")
    for digest, size in {d: s for f in ref.manifest.files for d, s in f.chunks}.items():
        target.put_blob(digest, source.get_blob(digest, size))
    target.backend.put_if_absent(manifest_key("m", "v1"), ref.raw)
    assert target.get_version("m", "v1").digest == ref.digest
    pulled = json.loads(
        ok(_aim(tmp_path, "model", "pull", "new", "m", tmp_path / "out", "--digest", ref.digest, "--json")).stdout
    )
    assert pulled["digest"] == ref.digest and file_contents(tmp_path / "out") == file_contents(src)
    assert _blob_files(new).keys() == _blob_files(old).keys()


def _pushed_one_chunk_file(tmp_path: Path) -> tuple[Path, Path, str, int]:
    """A format 2 repository holding a mixed model: (root, source, digest and size of the one
    chunk of weights/extra.bin), for planting a bad blob in its place."""
    root = _create(tmp_path, "new", "--format", "2")
    src = make_mixed_model(tmp_path / "src")
    ok(_aim(tmp_path, "model", "push", "new", "m", src, "--tag", "v1"))
    manifest = json.loads((root / manifest_key("m", "v1")).read_bytes())
    [(digest, size)] = next(f for f in manifest["files"] if f["path"] == "weights/extra.bin")["chunks"]
    return root, src, digest, size


def test_a_format_1_blob_in_a_format_2_repository_is_corrupt(tmp_path):
    """A raw chunk where format 2 expects header || payload (a blob copied by hand between
    repositories of different formats): exit 5 naming the blob, nothing under a final name."""
    root, src, digest, _ = _pushed_one_chunk_file(tmp_path)
    (root / blob_key(digest)).write_bytes((src / "weights" / "extra.bin").read_bytes())
    one_line_error(_aim(tmp_path, "model", "pull", "new", "m", tmp_path / "out"), 5, digest, "corrupt")
    assert not (tmp_path / "out" / "weights" / "extra.bin").exists()
    for args in (["model", "verify", "new", "m"], ["repo", "check", "new", "--read-data"]):
        audit = _aim(tmp_path, *args)
        assert audit.returncode == 5 and f"corrupt   blob {digest}" in audit.stdout, audit


def _bomb(raw_size: int, *, claimed: int | None = None) -> bytes:
    """A format 2 blob whose zstd frame expands far beyond the chunk it stands for."""
    import struct

    import zstandard

    frame = zstandard.ZstdCompressor(write_content_size=False).compress(bytes(64 * 1024 * 1024))
    header = struct.pack("<4sB3sQ", blob_codec.MAGIC, blob_codec.Codec.ZSTD, b"\0\0\0", claimed or raw_size)
    return header + frame


def test_a_decompression_bomb_is_a_corrupt_blob_everywhere(tmp_path):
    root, _, digest, size = _pushed_one_chunk_file(tmp_path)
    (root / blob_key(digest)).write_bytes(_bomb(size))
    # An unreferenced blob whose header claims a terabyte: check --read-data must not believe it.
    stray = "ab" * 32
    (root / blob_key(stray)).parent.mkdir(exist_ok=True)
    (root / blob_key(stray)).write_bytes(_bomb(0, claimed=2**40))

    one_line_error(_aim(tmp_path, "model", "pull", "new", "m", tmp_path / "out"), 5, digest, "corrupt")
    assert not (tmp_path / "out" / "weights" / "extra.bin").exists()
    verify = _aim(tmp_path, "model", "verify", "new", "m")
    assert verify.returncode == 5 and f"corrupt   blob {digest}" in verify.stdout
    check = _aim(tmp_path, "repo", "check", "new", "--read-data")
    assert check.returncode == 5 and "Traceback" not in check.stderr
    assert f"corrupt   blob {digest}" in check.stdout and f"corrupt   blob {stray}" in check.stdout


def test_pulling_a_version_whose_tensors_moved_reuses_them_from_dest(tmp_path):
    """A tiny tensor inserted at the start shifts every offset of the shard: format 2 still cuts
    the moved tensors into the same chunks, and pull finds them in DEST's older file (re-chunked
    the repository's way), so it fetches only the header and the inserted tensor's group."""
    from tests.helpers import random_bytes, safetensors_bytes

    big = [(f"layer{i}.weight", "BF16", [640, 256], random_bytes(640 * 512, 100 + i)) for i in range(4)]
    tiny = ("inserted.bias", "BF16", [8], random_bytes(16, 7))
    for tag, tensors in (("v1", big), ("v2", [tiny, *big])):
        (tmp_path / tag).mkdir()
        (tmp_path / tag / "model.safetensors").write_bytes(safetensors_bytes(tensors))
    _create(tmp_path, "new", "--format", "2")
    for tag in ("v1", "v2"):
        ok(_aim(tmp_path, "model", "push", "new", "m", tmp_path / tag, "--tag", tag))
    ok(_aim(tmp_path, "model", "pull", "new", "m", tmp_path / "out", "--tag", "v1"))
    again = json.loads(
        ok(_aim(tmp_path, "model", "pull", "new", "m", tmp_path / "out", "--tag", "v2", "--json")).stdout
    )
    assert file_contents(tmp_path / "out") == file_contents(tmp_path / "v2")
    header = (tmp_path / "v2" / "model.safetensors").read_bytes()[:8]
    assert again["fetched_raw_bytes"] <= 8 + int.from_bytes(header, "little") + 16
    assert again["reused_bytes"] == sum(len(t[3]) for t in big)
