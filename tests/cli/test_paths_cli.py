"""Manifest paths through the installed console script (issue 8, defects 10 and 12): names with a
colon round-trip, and push refuses up front what pull could not write (the limits of
aim_cli.format.manifest), while pull refuses a stored manifest that breaks them (exit 5, one line)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from aim_cli.format import manifest as mf
from tests.helpers import assert_same_tree, ok, one_line_error, run, write_file

REPO = "r"


@pytest.fixture
def work(tmp_path) -> Path:
    work = tmp_path / "work"
    work.mkdir()
    (work / "model_repos.yaml").write_text(f"repos:\n  {REPO}: {{type: local, path: store}}\n")
    return work


def test_a_colon_in_a_name_is_not_a_drive_letter(work, tmp_path):
    src = tmp_path / "src"
    write_file(src / "1:2.txt", b"one colon two\n")
    write_file(src / "sub" / "a:b" / "3:4.bin", b"\x00\x01\x02")
    write_file(src / "C:x", b"not a drive either\n")
    ok(run(["model", "push", REPO, "m", src, "--tag", "v1", "--quiet"], cwd=work))
    dest = tmp_path / "dest"
    ok(run(["model", "pull", REPO, "m", dest, "--tag", "v1", "--quiet"], cwd=work))
    assert_same_tree(src, dest)


def _deep_tree(root: Path, levels: int) -> Path:
    """A file ``levels`` directories deep, made level by level (each path stays short)."""
    here = root
    for _ in range(levels):
        here = here / "d"
    write_file(here / "f", b"deep\n")
    return root


@pytest.mark.parametrize(
    "name, needle",
    [
        (os.fsdecode(b"caf\xe9.bin"), "not valid UTF-8"),  # a Latin-1 file name
        ("two\nlines.txt", "control character"),
        ("bell\x07.txt", "control character"),
        ("C:", "absolute path"),
    ],
)
def test_push_refuses_names_pull_could_not_write_or_print(work, tmp_path, name, needle):
    src = tmp_path / "src"
    write_file(src / "ok.txt", b"fine\n")
    write_file(src / name, b"refused\n")
    line = one_line_error(run(["model", "push", REPO, "m", src, "--tag", "v1"], cwd=work), 2, needle)
    line.encode("utf-8")
    assert not (work / "store" / "models").exists()


def test_push_refuses_a_tree_deeper_than_pull_writes(work, tmp_path):
    src = _deep_tree(tmp_path / "src", mf.MAX_PATH_DEPTH + 10)
    one_line_error(
        run(["model", "push", REPO, "m", src, "--tag", "v1"], cwd=work), 2, f"deeper than {mf.MAX_PATH_DEPTH}"
    )
    assert not (work / "store" / "models").exists()
    # At the limit, it goes through and back.
    src = _deep_tree(tmp_path / "src-ok", mf.MAX_PATH_DEPTH - 1)
    ok(run(["model", "push", REPO, "m", src, "--tag", "v1", "--quiet"], cwd=work))
    ok(run(["model", "pull", REPO, "m", tmp_path / "dest", "--tag", "v1", "--quiet"], cwd=work))
    assert_same_tree(src, tmp_path / "dest")


def _hostile(good: dict, path: str, **changes) -> dict:
    entry = {"path": path, "size": good["size"], "mode": 0o644, "blake3": good["blake3"], "chunks": good["chunks"]}
    manifest = {
        "format": 1,
        "model": "m",
        "tag": "evil",
        "created_at": "2030-01-01T00:00:00.000000Z",
        "created_by": "mallory@host",
        "message": "",
        "total_size": good["size"],
        "files": [entry],
    }
    manifest.update(changes)
    return manifest


@pytest.mark.parametrize("case", ["deep", "control", "drive", "long-name", "long-path", "huge-int"])
def test_pull_refuses_a_manifest_beyond_the_limits(work, tmp_path, case):
    src = write_file(tmp_path / "src" / "a.txt", b"payload\n").parent
    ok(run(["model", "push", REPO, "m", src, "--tag", "v1", "--quiet"], cwd=work))
    versions = work / "store" / "models" / "m" / "versions"
    good = json.loads((versions / "v1.json").read_bytes())["files"][0]
    manifest = {
        "deep": lambda: _hostile(good, "/".join(["d"] * 1000 + ["f"])),
        "control": lambda: _hostile(good, "forged\nerror: line"),
        "drive": lambda: _hostile(good, "C:/Windows/x"),
        "long-name": lambda: _hostile(good, "n" * 256),
        "long-path": lambda: _hostile(good, "/".join(["p" * 250] * 20)),
        "huge-int": lambda: _hostile(good, "a.txt", total_size=10**40),
    }[case]()
    (versions / "evil.json").write_bytes(json.dumps(manifest).encode())
    dest = tmp_path / "dest"
    one_line_error(run(["model", "pull", REPO, "m", dest, "--tag", "evil"], cwd=work), 5, "manifest")
    assert not dest.exists() or not any(p.is_file() for p in dest.rglob("*") if ".aim" not in p.parts)
