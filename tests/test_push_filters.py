"""`model push --include/--exclude/--no-default-ignores/--dry-run`, and the default ignores on the
way back (`pull --delete`, `verify --local`): through aim_cli.api on the local backend, with two
runs of the console script for what only the CLI does (the stderr line, the JSON of a dry run)."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest

import aim_cli.api as aim
from aim_cli.errors import NotEmptyError, TagExistsError, UsageError
from aim_cli.util.ignores import is_ignored
from tests.helpers import ok, one_line_error, random_bytes, run, write_file, write_model

MODEL = {
    "config.json": b'{"hidden": 8}\n',
    "model.safetensors": random_bytes(200_000, 1),
    "tokenizer/vocab.json": b'{"a": 1}\n',
    "onnx/model.onnx": random_bytes(50_000, 2),
}
#: What `hf upload` and push leave out, at the top and deeper: path -> content.
LITTER = {
    ".git/HEAD": b"ref: refs/heads/main\n",
    ".git/objects/ab/cdef": b"x" * 1000,
    "sub/.git": b"gitdir: ../.git/worktrees/sub\n",  # a worktree's .git is a file
    ".cache/huggingface/download/model.safetensors.metadata": b"etag\n",
    "tokenizer/.cache/huggingface/x.lock": b"",
    "tokenizer/__pycache__/t.cpython-312.pyc": b"pyc",
    ".DS_Store": b"ds",
    "onnx/.DS_Store": b"ds2",
}
#: Names that look like the ignores but are not them: pushed.
LOOKALIKES = {
    "my.git": b"a",
    "git/config": b"b",
    ".cache/other/x": b"c",
    "huggingface/.cache": b"d",
    ".gitattributes": b"*.bin filter=lfs\n",
}


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "model_repos.yaml"
    path.write_text(f"repos:\n  r: {{type: local, path: {tmp_path / 'repo'}}}\n")
    return path


def paths_of(config: Path, tag: str) -> list[str]:
    return [f.path for f in aim.version_details("r", "m", tag=tag, config=config).files]


def storage(tmp_path: Path) -> dict[str, bytes]:
    root = tmp_path / "repo"
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_the_ignore_set_is_hf_uploads_plus_pycache_and_ds_store():
    for path in [*LITTER, ".git", "a/b/.git/x", ".cache/huggingface", "__pycache__", "x/.DS_Store/y"]:
        assert is_ignored(path), path
    for path in [*LOOKALIKES, ".cache/huggingface2/x", "x.DS_Store", ".cache", "huggingface"]:
        assert not is_ignored(path), path


def test_default_ignores_are_left_out_at_any_depth_counted_and_can_be_turned_off(tmp_path, config):
    src = write_model(tmp_path / "src", MODEL | LITTER | LOOKALIKES)
    r = aim.push("r", "m", src, tag="v1", config=config)
    assert paths_of(config, "v1") == sorted(MODEL | LOOKALIKES)
    assert r.ignored == (
        ".DS_Store",
        ".cache/huggingface/",
        ".git/",
        "onnx/.DS_Store",
        "sub/.git",
        "tokenizer/.cache/huggingface/",
        "tokenizer/__pycache__/",
    )
    assert (r.ignored_files, r.ignored_bytes) == (len(LITTER), sum(map(len, LITTER.values())))
    assert r.files == len(MODEL | LOOKALIKES)

    everything = aim.push("r", "m", src, tag="v2", default_ignores=False, config=config)
    assert paths_of(config, "v2") == sorted(MODEL | LITTER | LOOKALIKES)
    assert everything.ignored == () and everything.ignored_files == 0


def test_top_level_aim_names_stay_reserved_whatever_the_options(tmp_path, config):
    src = write_model(tmp_path / "src", MODEL | {".aim/partial/p": b"p", ".aimrc": b"r", "sub/.aim": b"kept"})
    r = aim.push("r", "m", src, tag="v1", default_ignores=False, include=["*"], config=config)
    assert sorted(r.skipped) == [".aim", ".aimrc"]
    assert paths_of(config, "v1") == sorted([*MODEL, "sub/.aim"])


def test_a_symlink_named_git_is_ignored_never_followed(tmp_path, config):
    outside = write_model(tmp_path / "outside", {"secret": b"s"})
    src = write_model(tmp_path / "src", MODEL)
    os.symlink(outside, src / ".git")
    os.symlink(outside / "secret", src / "tokenizer" / ".DS_Store")
    r = aim.push("r", "m", src, tag="v1", config=config)
    assert r.ignored == (".git", "tokenizer/.DS_Store") and r.ignored_files == 2
    assert paths_of(config, "v1") == sorted(MODEL)
    # Without the default ignores it is a symlink like any other: refused, or followed to a file only.
    with pytest.raises(UsageError, match=r"symlinks: \.git, tokenizer/\.DS_Store"):
        aim.push("r", "m", src, tag="v2", default_ignores=False, config=config)
    with pytest.raises(UsageError, match="does not point to a regular file"):
        aim.push("r", "m", src, tag="v2", default_ignores=False, follow_symlinks=True, config=config)


def test_include_and_exclude_select_as_pull_does(tmp_path, config):
    src = write_model(tmp_path / "src", MODEL | LITTER)
    aim.push("r", "m", src, tag="v1", include=["*.json", "onnx/"], exclude=["tokenizer/"], config=config)
    assert paths_of(config, "v1") == ["config.json", "onnx/model.onnx"]
    # The default ignores win over an --include, as in hf upload: --no-default-ignores lets it in.
    aim.push("r", "m", src, tag="v2", include=[".git/"], default_ignores=False, config=config)
    assert paths_of(config, "v2") == [".git/HEAD", ".git/objects/ab/cdef"]
    with pytest.raises(UsageError, match=r"--include '\.git/' matches no file of DIR") as e:
        aim.push("r", "m", src, tag="v3", include=[".git/"], config=config)
    assert "--no-default-ignores" in e.value.hint


@pytest.mark.parametrize("pattern", ["*.gguf", "../*", "../src/*", "/*", f"{Path.cwd()}/*", "src/config.json"])
def test_an_include_that_matches_nothing_or_reaches_outside_dir_is_refused_with_nothing_written(
    tmp_path, config, pattern
):
    """Patterns match paths relative to DIR: one naming the tree from outside matches no file."""
    src = write_model(tmp_path / "src", MODEL)
    with pytest.raises(UsageError, match="matches no file of DIR") as e:
        aim.push("r", "m", src, tag="v1", include=[pattern], config=config)
    assert e.value.exit_code == 2
    assert not (tmp_path / "repo").exists()


def test_an_exclude_that_matches_nothing_warns_and_one_that_leaves_nothing_is_refused(tmp_path, config, caplog):
    src = write_model(tmp_path / "src", MODEL)
    with caplog.at_level(logging.WARNING):
        aim.push("r", "m", src, tag="v1", exclude=["*.gguf"], config=config)
    assert "warning: --exclude '*.gguf' matches no file of DIR" in caplog.messages
    with pytest.raises(UsageError, match="leave no file of"):
        aim.push("r", "m", src, tag="v2", exclude=["*"], config=config)
    with pytest.raises(UsageError, match="non-empty pattern"):
        aim.push("r", "m", src, tag="v2", include=[""], config=config)


def test_what_is_excluded_or_ignored_is_not_looked_at(tmp_path, config):
    """A FIFO, a link or a name no manifest can hold is refused only where it would be pushed."""
    src = write_model(tmp_path / "src", MODEL)
    (src / "scratch").mkdir()
    os.mkfifo(src / "scratch" / "pipe")
    os.symlink("/etc/passwd", src / "scratch" / "link")
    write_file(src / os.fsdecode(b"bad\xff") / "x", b"x")
    os.mkfifo(src / "__pycache__")  # an ignored FIFO: never opened
    with pytest.raises(UsageError, match="not valid UTF-8"):
        aim.push("r", "m", src, tag="v1", exclude=["scratch/"], config=config)
    r = aim.push("r", "m", src, tag="v1", exclude=["scratch/", "bad*"], config=config)
    assert paths_of(config, "v1") == sorted(MODEL) and r.ignored == ("__pycache__",)
    with pytest.raises(UsageError, match="not a regular file"):
        aim.push("r", "m", src, tag="v2", exclude=["scratch/link", "bad*"], config=config)


def test_dry_run_into_a_root_that_does_not_exist_writes_nothing_and_says_so(tmp_path, config):
    src = write_model(tmp_path / "src", MODEL | {"copy.safetensors": MODEL["model.safetensors"]} | LITTER)
    plan = aim.push("r", "m", src, tag="v1", dry_run=True, config=config)
    assert not (tmp_path / "repo").exists()
    assert not plan.repository_exists and plan.storage_format in (1, 2, 3)
    assert [f.path for f in plan.files] == sorted([*MODEL, "copy.safetensors"])
    assert plan.total_size == sum(map(len, MODEL.values())) + len(MODEL["model.safetensors"])
    # Every distinct chunk is new, the copy's chunks once.
    assert plan.new_bytes == sum(map(len, MODEL.values())) and not plan.already_pushed
    assert plan.ignored_files == len(LITTER)
    doc = plan.to_json()
    assert doc["dry_run"] is True and doc["totals"]["new_bytes"] == plan.new_bytes
    assert doc["files"][0] == {"path": "config.json", "size": len(MODEL["config.json"])}
    json.dumps(doc)


def test_dry_run_estimate_is_what_the_push_then_stores(tmp_path, config):
    v1 = write_model(tmp_path / "v1", MODEL)
    aim.push("r", "m", v1, tag="v1", config=config)
    changed = bytearray(MODEL["model.safetensors"])
    changed[150_000:150_100] = random_bytes(100, 9)
    v2 = write_model(tmp_path / "v2", MODEL | {"model.safetensors": bytes(changed), "new.json": b"{}"})
    before = storage(tmp_path)
    plan = aim.push("r", "m", v2, tag="v2", dry_run=True, config=config)
    assert storage(tmp_path) == before  # no blob, no manifest, no lease
    assert plan.repository_exists and 0 < plan.new_bytes < plan.total_size
    pushed = aim.push("r", "m", v2, tag="v2", config=config)
    assert (plan.new_bytes, plan.new_chunks) == (pushed.new_bytes, pushed.new_chunks)
    assert plan.chunks == pushed.chunks and [f.path for f in plan.files] == paths_of(config, "v2")


def test_dry_run_of_an_existing_tag_is_already_pushed_or_the_conflict(tmp_path, config):
    src = write_model(tmp_path / "src", MODEL)
    aim.push("r", "m", src, tag="v1", config=config)
    before = storage(tmp_path)
    plan = aim.push("r", "m", src, tag="v1", dry_run=True, config=config)
    assert plan.already_pushed and plan.new_bytes == 0
    (src / "config.json").write_bytes(b"{}")
    with pytest.raises(TagExistsError):
        aim.push("r", "m", src, tag="v1", dry_run=True, config=config)
    assert storage(tmp_path) == before


def test_dry_run_refuses_a_root_that_cannot_become_a_repository(tmp_path, config):
    write_file(tmp_path / "repo" / "someone's.txt", b"data")
    src = write_model(tmp_path / "src", MODEL)
    with pytest.raises(NotEmptyError, match="is not empty and holds no repository"):
        aim.push("r", "m", src, tag="v1", dry_run=True, config=config)
    assert [p.name for p in (tmp_path / "repo").iterdir()] == ["someone's.txt"]


def test_pull_delete_and_verify_local_leave_the_ignores_alone(tmp_path, config):
    src = write_model(tmp_path / "src", MODEL | LITTER)
    aim.push("r", "m", src, tag="v1", config=config)
    dest = tmp_path / "dest"
    aim.pull("r", "m", dest, tag="v1", config=config)
    for path, data in LITTER.items():
        write_file(dest / path, data)
    write_file(dest / "stale.bin", b"stale")
    report = aim.verify_local("r", "m", dest, tag="v1", config=config)
    assert report.extra == ["stale.bin"] and not report.missing and not report.modified
    assert aim.plan_pull("r", "m", dest, tag="v1", delete=True, config=config).delete == ["stale.bin"]
    result = aim.pull("r", "m", dest, tag="v1", delete=True, config=config)
    assert result.deleted == ["stale.bin"]
    assert all((dest / path).read_bytes() == data for path, data in LITTER.items())


def test_a_version_holding_ignored_paths_is_compared_by_them(tmp_path, config):
    """Pushed with --no-default-ignores, .git/HEAD is the version's file: verify --local misses it
    when it is gone, a pull writes it; an extra file beside it under .git/ is still left alone."""
    src = write_model(tmp_path / "src", MODEL | {".git/HEAD": b"ref\n"})
    aim.push("r", "m", src, tag="v1", default_ignores=False, config=config)
    dest = write_model(tmp_path / "dest", MODEL | {".git/index": b"idx"})
    report = aim.verify_local("r", "m", dest, tag="v1", config=config)
    assert report.missing == [".git/HEAD"] and report.extra == []
    aim.pull("r", "m", dest, tag="v1", delete=True, config=config)
    assert (dest / ".git/HEAD").read_bytes() == b"ref\n" and (dest / ".git/index").read_bytes() == b"idx"
    assert aim.verify_local("r", "m", dest, tag="v1", config=config).ok


def test_cli_dry_run_json_and_the_stderr_line(tmp_path, config):
    src = write_model(tmp_path / "src", MODEL | LITTER)
    res = ok(
        run(
            ["--config", config, "model", "push", "r", "m", src, "--tag", "v1", "--dry-run", "--json"]
            + ["--include", "*.json", "--exclude", "*.gguf"],
            cwd=tmp_path,
        )
    )
    doc = json.loads(res.stdout)
    assert set(doc) == {
        "dry_run",
        "model",
        "tag",
        "directory",
        "repository",
        "repository_exists",
        "storage_format",
        "include",
        "exclude",
        "default_ignores",
        "files",
        "skipped",
        "ignored",
        "totals",
        "elapsed",
    }
    assert set(doc["totals"]) == {
        "files",
        "size",
        "chunks",
        "new_bytes",
        "new_chunks",
        "already_pushed",
        "ignored_files",
        "ignored_bytes",
    }
    assert [f["path"] for f in doc["files"]] == ["config.json", "tokenizer/vocab.json"]
    assert doc["repository_exists"] is False and not (tmp_path / "repo").exists()
    lines = res.stderr.strip().splitlines()
    assert lines[0] == "warning: --exclude '*.gguf' matches no file of DIR"
    assert lines[1].startswith(f"left out {len(LITTER)} files (") and "--no-default-ignores" in lines[1]
    assert len(lines) == 2


def test_cli_include_matching_nothing_is_one_line_exit_2(tmp_path, config):
    src = write_model(tmp_path / "src", MODEL)
    res = run(["--config", config, "model", "push", "r", "m", src, "-t", "v1", "--include", "*.gguf"], cwd=tmp_path)
    one_line_error(res, 2, "--include '*.gguf'", "matches no file of DIR")
    assert not (tmp_path / "repo").exists()
