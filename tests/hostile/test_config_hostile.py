"""Hostile and mistaken model_repos.yaml files, config writes, S3 paths and size options, through
the installed console script (issue 8, defects 4, 5, 6, 10).

The config arrives through git: whatever it holds, every command answers at once with exit 7 and
one line. The subprocess timeout of ``run`` is the guard against a hang; no test times anything.
"""

from __future__ import annotations

import os
import stat
import string
from itertools import pairwise
from pathlib import Path

import pytest

from aim_cli import config as cfgmod
from aim_cli.errors import ConfigError
from tests.helpers import base_env, ok, one_line_error, run

CONFIG = "model_repos.yaml"
GUARD = 20  # seconds: a hang fails the test through the subprocess timeout
# Commands that all load the config first.
READERS = (
    ["info"],
    ["repo", "list"],
    ["model", "list", "r"],
    ["repo", "delete", "r"],
    ["repo", "create", "z", "--type", "local", "--path", "z", "--no-check"],
)


def alias_bomb(target: str) -> bytes:
    """A 'billion laughs': nine levels of nine aliases (9**9 strings once expanded) under
    ``target``, a few hundred bytes on disk."""
    names = string.ascii_lowercase[:9]
    lines = [f'{names[0]}: &{names[0]} ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for prev, name in pairwise(names):
        lines.append(f"{name}: &{name} [{','.join([f'*{prev}'] * 9)}]")
    return ("\n".join(lines) + f"\nrepos: {{r: {{{target}: *i, path: x}}}}\n").encode()


def refused_everywhere(tmp_path: Path, data: bytes, *needles: str) -> None:
    """Every command refuses the config (exit 7, one line naming the file), writes nothing."""
    cfg = tmp_path / CONFIG
    cfg.write_bytes(data)
    for args in READERS:
        line = one_line_error(run(args, cwd=tmp_path, timeout=GUARD), 7, str(cfg), *needles)
        assert len(line) < 1000, line
    assert cfg.read_bytes() == data
    assert sorted(os.listdir(tmp_path)) == [CONFIG]


# -- defect 4: config bombs ---------------------------------------------------------------------------
@pytest.mark.parametrize("target", ["type", "region"])
def test_alias_bomb_is_refused_at_once(tmp_path, target):
    data = alias_bomb(target)
    assert len(data) < 500
    refused_everywhere(tmp_path, data, "anchors")


def test_aliases_and_merge_keys_are_refused(tmp_path):
    refused_everywhere(tmp_path, b"repos:\n  r: {type: local, path: &p x}\n  s: {type: local, path: *p}\n", "anchors")
    refused_everywhere(tmp_path, b"repos:\n  r:\n    <<: {type: local, path: x}\n", "merge keys", "line 3")


@pytest.mark.parametrize(
    "nesting",
    [
        b"repos: " + b"[" * 5000 + b"]" * 5000 + b"\n",  # flow: libyaml stops at its own bound
        b"repos: " + b"{a: " * 5000 + b"x" + b"}" * 5000 + b"\n",
        b"".join(b"  " * i + b"k%d:\n" % i for i in range(50)) + b"  " * 50 + b"x\n",  # block mappings
    ],
)
def test_deep_nesting_is_refused(tmp_path, nesting):
    refused_everywhere(tmp_path, nesting)


def test_non_utf8_config_is_refused(tmp_path):
    refused_everywhere(tmp_path, b"# ok\nrepos:\n  r: {type: local, path: 'caf\xe9'}\n", "UTF-8", "line 3")
    refused_everywhere(tmp_path, "repos: {}\n".encode("utf-16"), "UTF-8")


@pytest.mark.parametrize(
    "data, needle",
    [
        (b"repos: !!python/object/apply:os.system ['touch pwned']\n", "tags are not allowed"),
        (b"repos:\n  r: !!python/object:aim_cli.config.Config {}\n", "tags are not allowed"),
        (b"repos:\n  r: {type: !!str local, path: x}\n", "tags are not allowed"),
        (b"repos:\n  2024: {type: local, path: x}\n", "not a string"),
        (b"repos:\n  ? [a, b]\n  : {type: local, path: x}\n", "key"),
        (b"repos: {}\n---\nrepos: {}\n", "document"),
        (b'repos:\n  r: {type: local, path: "a\\nb"}\n', "control character"),
        (b"repos:\n  r: {type: local, path: x}\x07\n", "not valid YAML"),
    ],
)
def test_tags_odd_keys_and_controls_are_refused(tmp_path, data, needle):
    refused_everywhere(tmp_path, data, needle)
    assert not (tmp_path / "pwned").exists()


def test_oversized_config_and_huge_values_stay_one_short_line(tmp_path):
    refused_everywhere(tmp_path, b"repos: {}\n" + b"#" * (cfgmod.MAX_CONFIG_BYTES + 1), "larger than")
    refused_everywhere(tmp_path, b"repos: [" + b"a," * cfgmod.MAX_NODES + b"]\n", f"more than {cfgmod.MAX_NODES}")
    # A key longer than 1024 characters must be explicit ("? key"): YAML limits implicit ones.
    refused_everywhere(
        tmp_path, b"repos:\n  ? '" + b"x" * 500_000 + b"'\n  : {type: local, path: x}\n", "invalid repository name"
    )
    refused_everywhere(tmp_path, b"repos:\n  r: {type: '" + b"y" * 500_000 + b"', path: x}\n", "'type'")
    keys = b", ".join(b"k%d: v" % i for i in range(20_000))
    refused_everywhere(tmp_path, b"repos:\n  r: {type: local, path: x, " + keys + b"}\n", "unknown key")


def test_non_utf8_config_path_is_refused(tmp_path):
    odd = tmp_path / os.fsdecode(b"caf\xe9")
    odd.mkdir()
    (odd / CONFIG).write_text("repos:\n  r: {type: local, path: store}\n")
    one_line_error(run(["--config", odd / CONFIG, "repo", "list"], cwd=tmp_path, timeout=GUARD), 7, "UTF-8")
    one_line_error(run(["repo", "list"], cwd=odd, timeout=GUARD), 7, "UTF-8")  # found by the search
    one_line_error(run(["info"], cwd=odd, timeout=GUARD), 7, "UTF-8")


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--type", "local", "--path", os.fsdecode(b"caf\xe9")], "UTF-8"),
        (["--type", "s3", "--path", "s3://bucket/x", "--region", "eu\nforged"], "control character"),
    ],
)
def test_repo_create_refuses_values_it_could_not_write_back(tmp_path, extra, needle):
    one_line_error(run(["repo", "create", "r", *extra, "--no-check"], cwd=tmp_path, timeout=GUARD), 2, needle)
    assert list(tmp_path.iterdir()) == []


def test_the_pure_python_parser_refuses_alike(tmp_path, monkeypatch):
    """Without libyaml (a platform without pyyaml's C extension) the same files are refused."""
    import yaml

    monkeypatch.delattr(yaml, "CSafeLoader", raising=False)
    for data in (
        alias_bomb("type"),
        b"repos: " + b"[" * 5000,
        b"repos:\n  r:\n    <<: {type: local}\n",
        b"repos: !!python/name:os.system x\n",
    ):
        with pytest.raises(ConfigError):
            cfgmod.parse_config(tmp_path / CONFIG, data)


# -- defect 5: config writes never follow a planted symlink --------------------------------------------
HAND_WRITTEN = "# the team's repositories\nrepos:\n  keep: {type: local, path: keep}  # reviewed\n"


def _with_planted_link(cfg_dir: Path, victim: Path) -> list[str]:
    """A prefix for ``run``: before aim_cli starts, plant a symlink to ``victim`` at the temp name
    the old writer used, ``.model_repos.yaml.<pid>.tmp``; ``exec`` keeps that pid for aim_cli."""
    script = f'ln -s "{victim}" "{cfg_dir}/.{CONFIG}.$$.tmp" && exec "$@"'
    return ["sh", "-c", script, "sh"]


@pytest.mark.parametrize(
    "command", [["repo", "create", "new", "--type", "local", "--path", "new", "--no-check"], ["repo", "delete", "keep"]]
)
def test_config_write_ignores_a_planted_symlink(tmp_path, command):
    work = tmp_path / "work"
    work.mkdir()
    cfg = work / CONFIG
    cfg.write_text(HAND_WRITTEN)
    os.chmod(cfg, 0o640)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    ok(run(command, cwd=work, prefix=_with_planted_link(work, victim), timeout=GUARD))
    assert victim.read_text() == "precious\n"
    text = cfg.read_text()
    assert "# the team's repositories" in text
    assert ("new: {type: local, path: new}" in text) if command[1] == "create" else ("keep" not in text)
    assert stat.S_IMODE(os.lstat(cfg).st_mode) == 0o640 and not os.path.islink(cfg)
    # Only the planted link remains beside the config (still pointing at the victim): no temp file.
    others = [p for p in work.iterdir() if p.name != CONFIG]
    assert len(others) == 1 and os.readlink(others[0]) == str(victim)


def test_a_failed_write_leaves_no_temp_file(tmp_path, monkeypatch):
    cfg = tmp_path / CONFIG
    cfg.write_text(HAND_WRITTEN)

    def refuse(src, dst, **_dir_fds):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(cfgmod.os, "replace", refuse)
    loaded = cfgmod.load_config(cfg)
    entry = cfgmod.parse_entry(cfg, "new", {"type": "local", "path": "x"})
    with pytest.raises(ConfigError, match="No space left"):
        cfgmod.add_repo(loaded, entry, "x")
    assert sorted(os.listdir(tmp_path)) == [CONFIG] and cfg.read_text() == HAND_WRITTEN


# -- defect 6 (part): S3 paths ------------------------------------------------------------------------
BAD_S3_PATHS = [
    "s3://bucket/a/../team",
    "s3://bucket//x",
    "s3://bucket/x/./y",
    "s3://bucket/x//",
    "s3://bucket//",
    "s3://bucket/..",
    "s3://ab/x",
    "s3://Bucket/x",
    "s3://my_bucket/x",
    "s3://-bucket/x",
    "s3://a..b/x",
    "s3://192.168.1.1/x",
    "s3://" + "b" * 64 + "/x",
]


@pytest.mark.parametrize("path", BAD_S3_PATHS)
def test_bad_s3_paths_are_refused_at_create_and_in_the_config(tmp_path, path):
    args = ["repo", "create", "r", "--type", "s3", "--path", path, "--region", "us-east-1", "--no-check"]
    one_line_error(run(args, cwd=tmp_path, timeout=GUARD), 2, path)
    assert not (tmp_path / CONFIG).exists()
    (tmp_path / CONFIG).write_text(f"repos:\n  r: {{type: s3, path: '{path}'}}\n")
    one_line_error(run(["repo", "list"], cwd=tmp_path, timeout=GUARD), 7, path, "s3://BUCKET/PREFIX")


def test_one_trailing_slash_is_dropped(tmp_path):
    """A single trailing slash names the same prefix: harmless, so it is accepted and ignored."""
    ok(run(["repo", "create", "r", "--type", "s3", "--path", "s3://bucket/team/", "--no-check"], cwd=tmp_path))
    repo = cfgmod.load_config(tmp_path / CONFIG).repo("r")
    assert (repo.bucket, repo.prefix) == ("bucket", "team")


# -- defect 10 (part): size options ------------------------------------------------------------------------
BAD_SIZES = [
    "1e400",
    "infk",
    "inf",
    "nan",
    "-5",
    "0x10",
    "1_000",
    "99999999999999999999GiB",
    "8EiB",
    "",
    "1.5.5M",
    "١٢",
    "12 parsecs",
]


@pytest.mark.parametrize("size", [*BAD_SIZES, "0"])
def test_bad_chunk_size_is_one_line(tmp_path, size):
    args = ["repo", "create", "r", "--type", "local", "--path", "store", "--chunk-size", size]
    one_line_error(run(args, cwd=tmp_path, timeout=GUARD), 2, "--chunk-size")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("size", BAD_SIZES)
def test_bad_max_size_is_one_line(tmp_path, size):
    cache = tmp_path / "cache"
    cache.mkdir()
    res = run(["cache", "prune", "--cache-dir", cache, "--max-size", size], cwd=tmp_path, env=base_env(), timeout=GUARD)
    one_line_error(res, 2, "--max-size")
    assert list(cache.iterdir()) == []
