"""Every command that prints a result has ``--json`` with the stable shape README.md documents
("JSON output"): these tests pin each shape's keys, so a renamed or dropped field fails here
before it breaks a user's script. Through the real console script."""

from __future__ import annotations

import json
from pathlib import Path

from tests.helpers import make_variant_model, ok, run

CONFIG_ENTRY = {"name", "type", "path", "region", "endpoint_url", "profile", "addressing_style"}
DELETED = (
    "model",
    "tags",
    "reclaimable_blobs",
    "reclaimable_bytes",
    "reclaimable_stored_bytes",
    "kept_as_base_blobs",
    "kept_as_base_bytes",
    "aliases_removed",
)
SHAPES = {
    "repo create": CONFIG_ENTRY | {"initialised", "format", "existing"},
    "info": {"version", "config", "repos"},
    "repo list": None,  # a list of config entries
    "model push": {
        "model",
        "tag",
        "digest",
        "files",
        "total_size",
        "new_bytes",
        "new_chunks",
        "chunks",
        "already_pushed",
        "elapsed",
        "skipped",
        "new_stored_bytes",
        "stored_size",
        "reencoded",
        "delta_base",
        "ignored",
        "ignored_files",
        "ignored_bytes",
        "dedup_ratio",
    },
    "model list": None,  # a list of model names
    "model versions": None,  # a list of VERSION
    "model info": {
        "model",
        "tag",
        "digest",
        "created_at",
        "created_by",
        "message",
        "total_size",
        "files",
        "format",
        "distinct_size",
        "stored_size",
        "missing_blobs",
        "signatures",
        "alias",
    },
    "model verify": {"model", "tag", "digest", "blobs", "bytes", "problems", "ok"},
    "model verify --local": {"model", "tag", "digest", "directory", "files", "modified", "missing", "extra", "ok"},
    "model pull": {
        "model",
        "tag",
        "digest",
        "files",
        "total_size",
        "fetched_bytes",
        "fetched_raw_bytes",
        "reused_bytes",
        "cached_bytes",
        "fetched_chunks",
        "delta_chunks",
        "kept_files",
        "newest",
        "elapsed",
        "dest",
        "deleted",
    },
    "repo check": {
        "repo",
        "versions",
        "referenced",
        "stored",
        "read",
        "unreferenced",
        "unreferenced_bytes",
        "raw_bytes",
        "stored_bytes",
        "broken",
        "problems",
        "broken_omitted",
        "problems_omitted",
        "deltas",
        "markers",
        "stale_markers",
        "dangling_markers",
        "ok",
    },
    "repo gc": {
        "dry_run",
        "blobs",
        "bytes",
        "deleted",
        "freed_bytes",
        "versions",
        "referenced",
        "stored",
        "kept_as_base",
        "kept_as_base_bytes",
        "markers",
        "markers_deleted",
        "missing_bases",
        "incomplete_removed",
        "incomplete_bytes",
    },
    "model delete-version": {*DELETED},
    "model delete": {*DELETED},
    "cache info": {"cache_dir", "entries", "bytes"},
    "cache prune": {"cache_dir", "dry_run", "entries", "bytes", "removed", "freed"},
    "repo delete": CONFIG_ENTRY,
}
VERSION = {
    "model",
    "tag",
    "digest",
    "created_at",
    "created_by",
    "message",
    "total_size",
    "files",
    "chunks",
    "stored_size",
    "delta_base",
    "new_stored_size",
}


def test_every_command_prints_its_documented_json_shape(tmp_path: Path):
    (tmp_path / "model_repos.yaml").write_text("repos: {}\n")
    src = make_variant_model(tmp_path / "src")
    shown: dict[str, object] = {}

    def aim(name: str, *args) -> object:  # ``name``'s first two words are the command
        result = json.loads(
            ok(
                run(["--config", tmp_path / "model_repos.yaml", *name.split()[:2], *args, "--json"], cwd=tmp_path)
            ).stdout
        )
        shown[name] = result
        return result

    aim("repo create", "r", "--type", "local", "--path", tmp_path / "store")
    aim("info")
    aim("repo list")
    aim("model push", "r", "org/m", src, "--tag", "v1")  # a namespaced model: listed by its full name
    aim("model push", "r", "m", src, "--tag", "v1")
    aim("model list", "r")
    aim("model versions", "r", "m")
    aim("model info", "r", "m")
    aim("model verify", "r", "m")
    aim("model verify --local", "r", "m", "--local", src)
    aim("model pull", "r", "m", tmp_path / "out", "--cache-dir", tmp_path / "cache")
    aim("repo check", "r")
    aim("repo gc", "r", "--dry-run")
    aim("model delete-version", "r", "m", "--tag", "v1")
    aim("cache info", "--cache-dir", tmp_path / "cache")
    aim("cache prune", "--cache-dir", tmp_path / "cache", "--max-size", "1KiB")
    aim("model push", "r", "m", src, "--tag", "v2")
    aim("model delete", "r", "m", "--yes")
    aim("repo delete", "r")

    for name, keys in SHAPES.items():
        if keys is not None:
            assert set(shown[name]) == keys, name
    assert [set(e) for e in shown["repo list"]] == [CONFIG_ENTRY]
    assert shown["model list"] == ["m", "org/m"]
    assert [set(v) for v in shown["model versions"]] == [VERSION]
    assert shown["repo create"]["format"] == 3 and shown["repo create"]["initialised"] is True
    assert shown["model delete"]["tags"] == ["v2"] and shown["model delete-version"]["tags"] == ["v1"]


def test_diff_and_copy_print_their_documented_json_shape(tmp_path: Path):
    (tmp_path / "model_repos.yaml").write_text("repos: {}\n")

    def aim(*args) -> dict:
        return json.loads(ok(run(["--config", tmp_path / "model_repos.yaml", *args, "--json"], cwd=tmp_path)).stdout)

    aim("repo", "create", "r", "--type", "local", "--path", tmp_path / "store")
    aim("repo", "create", "r2", "--type", "local", "--path", tmp_path / "store2")
    for variant in (1, 2):
        aim(
            "model",
            "push",
            "r",
            "m",
            make_variant_model(tmp_path / f"v{variant}", variant=variant),
            "--tag",
            f"v{variant}",
        )
    diff = aim("model", "diff", "r", "m", "v1", "v2")
    assert set(diff) == {
        "repo",
        "model",
        "tag_a",
        "tag_b",
        "digest_a",
        "digest_b",
        "files",
        "totals",
        "changed_bytes",
        "fetch",
        "include",
        "exclude",
        "identical",
    }
    assert all(set(f) == {"path", "status", "size_a", "size_b", "mode_a", "mode_b"} for f in diff["files"])
    assert set(diff["fetch"]) == {"chunks", "raw_bytes", "stored_bytes", "unstored_chunks"}
    copy = aim("model", "copy", "r", "m", "r2")
    assert set(copy) == {
        "src",
        "dst",
        "model",
        "dry_run",
        "src_format",
        "dst_format",
        "dst_created",
        "reencoded",
        "versions",
        "copied",
        "skipped",
        "conflicts",
        "blobs",
        "raw_bytes",
        "read_bytes",
        "stored_bytes",
        "elapsed",
        "signatures",
        "bad_signatures",
        "delta",
        "deltas",
        "bases_copied",
        "base_bytes",
        "reencoded_chunks",
    }
    assert [set(v) for v in copy["versions"]] == 2 * [
        {
            "tag",
            "digest",
            "status",
            "blobs",
            "raw_bytes",
            "read_bytes",
            "stored_bytes",
            "present_blobs",
            "dst_digest",
            "signatures",
            "bad_signatures",
            "deltas",
            "bases_copied",
            "base_bytes",
            "reencoded_chunks",
        }
    ]
