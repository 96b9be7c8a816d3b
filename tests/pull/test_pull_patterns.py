"""`model pull --include/--exclude/--delete` and `model verify --local --include/--exclude`,
through the real console script, on both backends where the repository is involved."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.helpers import LOCAL_ONLY, file_contents, ok, one_line_error, random_bytes, tree, without_index, write_model

#: Nothing here depends on the storage format: no format 1 run of the `repo` fixture (conftest.py).
pytestmark = pytest.mark.format_neutral

MODEL = {
    "config.json": b'{"hidden": 8}\n',
    "model-00001-of-00002.safetensors": random_bytes(40_000, 1),
    "model-00002-of-00002.safetensors": random_bytes(30_000, 2),
    "tokenizer/vocab.json": b'{"a": 1}\n',
    "tokenizer/merges.txt": b"a b\n",
    "onnx/sub/weights.bin": random_bytes(20_000, 3),
}


def pushed(repo, tmp_path: Path, files: dict[str, bytes] = MODEL, tag: str = "v1", name: str = "src") -> Path:
    src = write_model(tmp_path / name, files)
    repo.push("m", src, tag)
    return src


def pull(repo, dest: Path, *args: str, tag: str = "v1"):
    return repo.cli("model", "pull", repo.name, "m", str(dest), "--tag", tag, *args)


def pulled_json(repo, dest: Path, *args: str, tag: str = "v1") -> dict:
    return json.loads(ok(pull(repo, dest, "--json", *args, tag=tag)).stdout)


def only(*paths: str) -> dict[str, bytes]:
    return {p: MODEL[p] for p in paths}


def contents(root: Path) -> dict[str, bytes]:
    return {p: data for p, (data, _) in file_contents(root).items()}


def test_double_star_and_directory_patterns_select_and_count_only_those_files(repo, tmp_path):
    pushed(repo, tmp_path)
    r = pulled_json(repo, tmp_path / "bins", "--include", "**/*.bin")
    assert contents(tmp_path / "bins") == only("onnx/sub/weights.bin")
    assert (r["files"], r["total_size"], r["fetched_raw_bytes"]) == (1, 20_000, 20_000)

    r = pulled_json(repo, tmp_path / "tok", "--include", "tokenizer/", "--include", "*.json")
    assert contents(tmp_path / "tok") == only("config.json", "tokenizer/vocab.json", "tokenizer/merges.txt")
    assert r["files"] == 3 and r["total_size"] == sum(len(MODEL[p]) for p in contents(tmp_path / "tok"))


def test_an_include_matching_nothing_is_exit_2_naming_it_and_touches_nothing(repo, tmp_path):
    pushed(repo, tmp_path)
    res = pull(repo, tmp_path / "out", "--include", "*.gguf", "--include", "*.json")
    one_line_error(res, 2, "--include '*.gguf'", "matches no file")
    assert not (tmp_path / "out").exists()


def test_exclude_only_and_an_exclude_matching_nothing_warns(repo, tmp_path):
    pushed(repo, tmp_path)
    res = ok(pull(repo, tmp_path / "out", "--exclude", "*.safetensors", "--exclude", "nope/"))
    assert contents(tmp_path / "out") == only(
        "config.json", "tokenizer/vocab.json", "tokenizer/merges.txt", "onnx/sub/weights.bin"
    )
    assert res.stderr.strip() == "warning: --exclude 'nope/' matches no file of the version"
    assert "4 files" in res.stdout


def test_a_later_pull_of_the_rest_fetches_only_the_rest(repo, tmp_path):
    src = pushed(repo, tmp_path)
    dest = tmp_path / "out"
    pulled_json(repo, dest, "--include", "tokenizer/")
    r = pulled_json(repo, dest)
    assert contents(dest) == contents(src) and r["kept_files"] == 2
    assert r["fetched_raw_bytes"] == sum(len(v) for k, v in MODEL.items() if not k.startswith("tokenizer/"))


def test_delete_pulling_b_over_a_leaves_exactly_b(repo, tmp_path):
    """A's nested directory that holds only files B lacks goes with them; B's renamed file is
    taken from A's copy (read before it is removed), not fetched again."""
    a = pushed(repo, tmp_path, MODEL, "a", "A")
    b_files = {
        "config.json": b'{"hidden": 16}\n',
        "weights.safetensors": MODEL["model-00001-of-00002.safetensors"],
        "tokenizer/vocab.json": MODEL["tokenizer/vocab.json"],
    }
    b = pushed(repo, tmp_path, b_files, "b", "B")
    dest = tmp_path / "out"
    ok(pull(repo, dest, tag="a"))
    assert contents(dest) == contents(a)
    r = pulled_json(repo, dest, "--delete", tag="b")
    assert without_index(tree(dest)) == tree(b)  # exactly B: no onnx/, no onnx/sub/, no work files
    assert sorted(r["deleted"]) == sorted(set(MODEL) - set(b_files))
    assert r["fetched_raw_bytes"] == len(b_files["config.json"])

    text = ok(pull(repo, dest, "--delete", tag="a")).stdout
    assert without_index(tree(dest)) == tree(a) and "deleted 1 file " in text


def test_delete_stays_within_the_patterns(repo, tmp_path):
    pushed(repo, tmp_path)
    dest = write_model(
        tmp_path / "out", {"mine.txt": b"mine\n", "tokenizer/old.txt": b"old\n", "onnx/stale.bin": b"stale\n"}
    )
    r = pulled_json(repo, dest, "--include", "tokenizer/", "--delete")
    assert r["deleted"] == ["tokenizer/old.txt"]
    assert contents(dest) == {
        "mine.txt": b"mine\n",
        "onnx/stale.bin": b"stale\n",
        **only("tokenizer/vocab.json", "tokenizer/merges.txt"),
    }
    r = pulled_json(repo, dest, "--exclude", "onnx/", "--delete")
    assert r["deleted"] == ["mine.txt"] and contents(dest)["onnx/stale.bin"] == b"stale\n"


@LOCAL_ONLY  # what --delete may touch is a matter of DEST alone
def test_delete_removes_only_regular_files_inside_dest_never_work_files_or_through_links(repo, tmp_path):
    pushed(repo, tmp_path)
    outside = write_model(tmp_path / "outside", {"precious.bin": b"keep me\n", "sub/also.bin": b"me too\n"})
    dest = write_model(
        tmp_path / "out",
        {
            ".aim-notes": b"pull's namespace\n",
            "extra.bin": b"x\n",
            "CONFIG.JSON": b"another file beside the version's config.json: this DEST tells case apart\n",
        },
    )
    os.symlink(outside, dest / "linked-dir")
    os.symlink(outside / "precious.bin", dest / "linked-file.bin")
    os.mkfifo(dest / "fifo.bin")
    before_outside = tree(outside, mtimes=True)

    r = pulled_json(repo, dest, "--delete", "--include", "*")
    assert r["deleted"] == ["CONFIG.JSON", "extra.bin"]  # DEST is exactly the version (issue 17, item 8)
    assert tree(outside, mtimes=True) == before_outside
    assert (dest / ".aim-notes").read_bytes() == b"pull's namespace\n"
    assert os.path.islink(dest / "linked-dir") and os.path.islink(dest / "linked-file.bin")
    assert (dest / "fifo.bin").exists() and not (dest / "CONFIG.JSON").exists()

    # A pattern reaching outside DEST matches no file of the version: refused, nothing touched.
    res = pull(repo, dest, "--delete", "--include", "../*")
    one_line_error(res, 2, "../*")
    assert tree(outside, mtimes=True) == before_outside


@LOCAL_ONLY
def test_a_symlinked_directory_of_dest_is_never_written_or_emptied_through(repo, tmp_path):
    pushed(repo, tmp_path)
    outside = write_model(tmp_path / "outside", {"vocab.json": b"theirs\n", "other.txt": b"theirs too\n"})
    dest = tmp_path / "out"
    dest.mkdir()
    os.symlink(outside, dest / "tokenizer")
    before = tree(outside, mtimes=True)
    res = pull(repo, dest, "--include", "tokenizer/", "--delete")
    one_line_error(res, 2, "symlink")
    assert tree(outside, mtimes=True) == before


def test_verify_local_compares_and_reports_extra_files_only_inside_the_patterns(repo, tmp_path):
    pushed(repo, tmp_path)
    dest = tmp_path / "out"
    ok(pull(repo, dest, "--include", "tokenizer/"))
    (dest / "mine.txt").write_bytes(b"outside the patterns\n")

    def verify(*args):
        return repo.cli("model", "verify", repo.name, "m", "--tag", "v1", "--local", str(dest), *args)

    res = ok(verify("--include", "tokenizer/", "--json"))
    report = json.loads(res.stdout)
    assert report["ok"] and report["files"] == 2 and report["extra"] == []

    (dest / "tokenizer" / "extra.txt").write_bytes(b"inside\n")
    res = verify("--include", "tokenizer/", "--json")
    assert res.returncode == 5 and json.loads(res.stdout)["extra"] == ["tokenizer/extra.txt"]

    res = verify("--exclude", "*.safetensors", "--exclude", "onnx/")  # exclude only: config.json is missing
    assert res.returncode == 5 and "missing   config.json" in res.stdout and "mine.txt" in res.stdout
    assert "safetensors" not in res.stdout

    one_line_error(verify("--include", "*.gguf"), 2, "'*.gguf'")
    one_line_error(repo.cli("model", "verify", repo.name, "m", "--tag", "v1", "--include", "tokenizer/"), 2, "--local")
