"""aim_cli/config.py: finding, loading, validating and saving model_repos.yaml (docs/design.md §7)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from aim_cli.config import (
    CONFIG_NAME,
    Config,
    RepoConfig,
    add_repo,
    find_config_path,
    load_config,
    parse_config,
    parse_entry,
    remove_repo,
)
from aim_cli.errors import ConfigError, ConflictError, NotFoundError, UsageError
from aim_cli.names import check_name


@pytest.fixture(autouse=True)
def _no_aim_config(monkeypatch):
    monkeypatch.delenv("AIM_CONFIG", raising=False)


def write_config(path: Path, repos: dict[str, str]) -> Path:
    """A model_repos.yaml with one local repository per name, each with a distinct path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["repos:"] + [f"  {name}: {{type: local, path: {p}}}" for name, p in repos.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def assert_no_config_above(directory: Path) -> None:
    found = [d / CONFIG_NAME for d in (directory, *directory.parents) if (d / CONFIG_NAME).exists()]
    assert not found, f"a stray {found[0]} makes this test meaningless"


# -- discovery ---------------------------------------------------------------------------------------
def test_explicit_path_beats_env_and_cwd(tmp_path, monkeypatch):
    explicit = write_config(tmp_path / "explicit" / "mine.yaml", {"from-flag": "a"})
    env_file = write_config(tmp_path / "env" / CONFIG_NAME, {"from-env": "b"})
    write_config(tmp_path / "cwd" / CONFIG_NAME, {"from-cwd": "c"})
    monkeypatch.chdir(tmp_path / "cwd")
    monkeypatch.setenv("AIM_CONFIG", str(env_file))
    assert find_config_path(explicit) == explicit
    assert list(load_config(explicit).repos) == ["from-flag"]
    assert list(load_config(str(explicit)).repos) == ["from-flag"]


def test_env_beats_cwd(tmp_path, monkeypatch):
    env_file = write_config(tmp_path / "env" / "team.yaml", {"from-env": "b"})
    write_config(tmp_path / "cwd" / CONFIG_NAME, {"from-cwd": "c"})
    monkeypatch.chdir(tmp_path / "cwd")
    monkeypatch.setenv("AIM_CONFIG", str(env_file))
    assert find_config_path() == env_file
    assert list(load_config().repos) == ["from-env"]


def test_relative_explicit_and_env_paths_are_made_absolute(tmp_path, monkeypatch):
    write_config(tmp_path / "conf" / "x.yaml", {"r": "a"})
    monkeypatch.chdir(tmp_path)
    assert find_config_path("conf/x.yaml") == tmp_path / "conf" / "x.yaml"
    monkeypatch.setenv("AIM_CONFIG", "conf/x.yaml")
    assert find_config_path() == tmp_path / "conf" / "x.yaml"
    assert find_config_path().is_absolute()


def test_empty_env_var_is_ignored(tmp_path, monkeypatch):
    cfg = write_config(tmp_path / CONFIG_NAME, {"r": "a"})
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AIM_CONFIG", "")
    assert find_config_path() == cfg


def test_found_in_cwd_or_nearest_parent(tmp_path, monkeypatch):
    top = write_config(tmp_path / CONFIG_NAME, {"top": "a"})
    deep = tmp_path / "project" / "src" / "pkg"
    deep.mkdir(parents=True)
    monkeypatch.chdir(deep)
    assert find_config_path() == top
    assert list(load_config().repos) == ["top"]
    nearer = write_config(tmp_path / "project" / CONFIG_NAME, {"nearer": "b"})
    assert find_config_path() == nearer
    assert list(load_config().repos) == ["nearer"]
    here = write_config(deep / CONFIG_NAME, {"here": "c"})
    assert find_config_path() == here
    assert find_config_path(cwd=tmp_path / "project" / "src") == nearer


def test_a_directory_named_like_the_config_is_skipped(tmp_path, monkeypatch):
    top = write_config(tmp_path / CONFIG_NAME, {"top": "a"})
    (tmp_path / "sub" / CONFIG_NAME).mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "sub")
    assert find_config_path() == top


def test_none_found(tmp_path, monkeypatch):
    assert_no_config_above(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert find_config_path() is None
    with pytest.raises(ConfigError) as e:
        load_config()
    assert e.value.exit_code == 7
    assert "no model_repos.yaml found" in e.value.message
    assert "--config" in e.value.hint and "AIM_CONFIG" in e.value.hint and "repo create" in e.value.hint
    # For `repo create`: an empty config that will be written in the current directory.
    cfg = load_config(must_exist=False)
    assert cfg.path == tmp_path / CONFIG_NAME and cfg.repos == {}
    assert not cfg.path.exists()


def test_named_file_missing(tmp_path, monkeypatch):
    write_config(tmp_path / CONFIG_NAME, {"r": "a"})
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as e:
        load_config(tmp_path / "missing.yaml")
    assert e.value.exit_code == 7 and "missing.yaml" in e.value.message
    # $AIM_CONFIG naming a missing file is an error too: no silent fallback to the cwd's file.
    monkeypatch.setenv("AIM_CONFIG", str(tmp_path / "gone.yaml"))
    with pytest.raises(ConfigError) as e:
        load_config()
    assert "gone.yaml" in e.value.message
    assert load_config(must_exist=False).path == tmp_path / "gone.yaml"


@pytest.mark.parametrize("text", ["", "# only a comment\n", "repos:\n", "repos: {}\n"])
def test_empty_configs_have_no_repos(tmp_path, text):
    p = tmp_path / CONFIG_NAME
    p.write_text(text)
    assert load_config(p).repos == {}


# -- paths -----------------------------------------------------------------------------------------
def test_relative_local_paths_are_relative_to_the_config_file(tmp_path, monkeypatch):
    cfg_dir = tmp_path / "team"
    cfg_path = cfg_dir / CONFIG_NAME
    cfg_dir.mkdir()
    cfg_path.write_text(
        "repos:\n"
        "  here: {type: local, path: .aim/repo}\n"
        "  up: {type: local, path: ../shared/./store}\n"
        f"  abs: {{type: local, path: {tmp_path / 'abs' / 'x'}}}\n"
        "  home: {type: local, path: ~/models}\n"
    )
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the cwd plays no part
    repos = load_config(cfg_path).repos
    assert repos["here"].path == str(cfg_dir / ".aim" / "repo")
    assert repos["up"].path == str(tmp_path / "shared" / "store")
    assert repos["abs"].path == str(tmp_path / "abs" / "x")
    assert repos["home"].path == str(tmp_path / "home" / "models")
    # Found through the parent search, the same file gives the same paths.
    (cfg_dir / "sub").mkdir()
    monkeypatch.chdir(cfg_dir / "sub")
    assert load_config().repos["here"].path == str(cfg_dir / ".aim" / "repo")


def test_s3_entry(tmp_path):
    cfg = parse_config(
        tmp_path / CONFIG_NAME,
        (
            "repos:\n"
            "  vision: {type: s3, path: 's3://my-company-ai-models/vision/', region: us-east-1,\n"
            "           endpoint_url: 'http://127.0.0.1:9000', profile: team, addressing_style: path}\n"
            "  whole: {type: s3, path: 's3://bucket'}\n"
        ),
    )
    v = cfg.repos["vision"]
    assert (v.type, v.region, v.endpoint_url, v.profile, v.addressing_style) == (
        "s3",
        "us-east-1",
        "http://127.0.0.1:9000",
        "team",
        "path",
    )
    assert v.bucket == "my-company-ai-models" and v.prefix == "vision"
    w = cfg.repos["whole"]
    assert w.bucket == "bucket" and w.prefix == "" and w.region is None


# -- invalid files ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text, line",
    [
        ("repos:\n  r: {type: local, path: store}\n  bad: x: y\n", 3),
        ("repos:\n  r: {type: local, path: a}\n\tx: {type: local, path: b}\n", 3),
        ("# a comment\nrepos:\n  r: {type: local, path: 'unclosed}\n  s: {type: local, path: b}\n", 3),
    ],
)
def test_malformed_yaml_names_the_line(tmp_path, text, line):
    p = tmp_path / CONFIG_NAME
    p.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert e.value.exit_code == 7
    assert str(p) in e.value.message and f"line {line}" in e.value.message, e.value.message
    assert e.value.hint


def _config_error(tmp_path: Path, text: str) -> ConfigError:
    p = tmp_path / CONFIG_NAME
    p.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert e.value.exit_code == 7 and str(p) in e.value.message and e.value.hint
    return e.value


def test_unknown_key_in_an_entry_is_named(tmp_path):
    err = _config_error(tmp_path, "repos:\n  r: {type: s3, path: 's3://bkt/p', regoin: us-east-1}\n")
    assert "regoin" in err.message and "'r'" in err.message
    assert "region" in err.hint  # the keys it accepts
    # An S3-only key on a local repository is unknown there.
    err = _config_error(tmp_path, "repos:\n  r: {type: local, path: x, region: us-east-1}\n")
    assert "region" in err.message


def test_unknown_top_level_key_is_named(tmp_path):
    err = _config_error(tmp_path, "repos: {}\nextra_setting: 1\n")
    assert "extra_setting" in err.message


def test_duplicate_repository_name_is_an_error(tmp_path):
    """A hand-merged file naming a repository twice must not silently keep one of them."""
    err = _config_error(tmp_path, "repos:\n  a: {type: local, path: x}\n  a: {type: local, path: y}\n")
    assert "'a'" in err.message or "duplicate" in err.message.lower()


@pytest.mark.parametrize(
    "text, needle",
    [
        ("repos:\n  r: {type: ftp, path: x}\n", "ftp"),
        ("repos:\n  r: {path: x}\n", "type"),
        ("repos:\n  r: {type: local, path: 5}\n", "'path'"),
        ("repos:\n  r: {type: local, path: ''}\n", "'path'"),
        ("repos:\n  r: {type: s3, path: 's3://bkt/p', region: [a]}\n", "'region'"),
        ("repos:\n  r: just-a-string\n", "mapping"),
        ("repos:\n  - r\n", "'repos'"),
        ("- a\n- b\n", "repos"),
        ("repos:\n  r: {type: s3, path: 's3://bkt/p', addressing_style: sideways}\n", "addressing_style"),
    ],
)
def test_bad_values(tmp_path, text, needle):
    err = _config_error(tmp_path, text)
    assert needle in err.message, err.message


@pytest.mark.parametrize("text", ["repos:\n  r: {type: local}\n", "repos:\n  r: {type: s3, region: x}\n"])
def test_missing_path(tmp_path, text):
    err = _config_error(tmp_path, text)
    assert "path" in err.message and "'r'" in err.message


@pytest.mark.parametrize("path", ["bucket/prefix", "https://bucket/prefix", "s3://", "s3:///prefix", "S3://b/p"])
def test_bad_s3_path(tmp_path, path):
    err = _config_error(tmp_path, f"repos:\n  r: {{type: s3, path: '{path}'}}\n")
    assert path in err.message and "s3://BUCKET/PREFIX" in err.hint


@pytest.mark.parametrize("name", ["bad name", "-dash", ".dot", "a/b", "x" * 129, "é"])
def test_invalid_repository_names_in_the_file(tmp_path, name):
    err = _config_error(tmp_path, f"repos:\n  '{name}': {{type: local, path: x}}\n")
    assert repr(name) in err.message


@pytest.mark.parametrize("name", ["a", "A1", "resnet50-finetuned", "v1.0", "x_y", "9" * 128])
def test_valid_names(name):
    assert check_name("model", name) == name


@pytest.mark.parametrize("name", ["", "-a", ".a", "_a", "a b", "a/b", "../a", "a:b", "x" * 129, "a\n", None])
def test_invalid_names_are_usage_errors(name):
    with pytest.raises(UsageError) as e:
        check_name("tag", name)
    assert e.value.exit_code == 2 and "invalid tag name" in e.value.message and "A-Z" in e.value.hint


def test_unknown_repository_lists_the_known_ones(tmp_path):
    cfg = load_config(write_config(tmp_path / CONFIG_NAME, {"beta": "b", "alpha": "a"}))
    with pytest.raises(NotFoundError) as e:
        cfg.repo("gamma")
    assert e.value.exit_code == 3
    assert "'gamma'" in e.value.message and "alpha, beta" in e.value.message and "repo list" in e.value.hint
    assert cfg.repo("alpha").name == "alpha"


# -- saving: comments, order, atomicity -----------------------------------------------------------------
HAND_WRITTEN = """\
# Team model repositories: reviewed in git, edit with care.
repos:
  # production weights (read-only for most)
  prod: {type: s3, path: s3://bucket/prod, region: us-east-1}  # owned by infra
  scratch:
    path: .aim/repo   # fast disk; path before type on purpose
    type: local
  nfs: {type: local, path: /mnt/nfs/models}
# end of file
"""


def _local(cfg: Config, name: str, given: str) -> RepoConfig:
    return parse_entry(cfg.path, name, {"type": "local", "path": given})


def test_add_then_remove_keeps_comments_and_order(tmp_path):
    p = tmp_path / CONFIG_NAME
    p.write_text(HAND_WRITTEN)
    cfg = load_config(p)
    new = add_repo(cfg, _local(cfg, "newrepo", "store"), "store")
    text = p.read_text()
    for comment in (
        "# Team model repositories: reviewed in git, edit with care.",
        "# production weights (read-only for most)",
        "# owned by infra",
        "# fast disk; path before type on purpose",
        "# end of file",
    ):
        assert comment in text, f"lost {comment!r}:\n{text}"
    # Repositories in their order, the new one last; keys inside an entry in their order.
    positions = [text.index(f"  {n}:") for n in ("prod", "scratch", "nfs", "newrepo")]
    assert positions == sorted(positions), text
    assert text.index("path: .aim/repo") < text.index("type: local\n")
    # The original lines are all still there, verbatim.
    for line in HAND_WRITTEN.splitlines():
        assert line in text.splitlines(), f"changed line {line!r}:\n{text}"
    # The new entry: written as given (relative), resolved on load.
    assert list(new.repos) == ["prod", "scratch", "nfs", "newrepo"]
    assert new.repos["newrepo"].path == str(tmp_path / "store")
    assert "path: store" in text

    removed = remove_repo(load_config(p), "newrepo")
    assert removed.name == "newrepo" and removed.path == str(tmp_path / "store")
    assert p.read_text() == HAND_WRITTEN


def test_remove_a_hand_written_entry_keeps_the_rest(tmp_path):
    p = tmp_path / CONFIG_NAME
    p.write_text(HAND_WRITTEN)
    remove_repo(load_config(p), "scratch")
    text = p.read_text()
    assert "scratch" not in text and ".aim/repo" not in text
    for kept in (
        "# Team model repositories",
        "# production weights",
        "# owned by infra",
        "# end of file",
        "  prod: {type: s3, path: s3://bucket/prod, region: us-east-1}",
        "  nfs: {type: local, path: /mnt/nfs/models}",
    ):
        assert kept in text, text
    assert list(load_config(p).repos) == ["prod", "nfs"]


def test_add_s3_entry_round_trips(tmp_path):
    p = tmp_path / CONFIG_NAME
    p.write_text(HAND_WRITTEN)
    cfg = load_config(p)
    entry = parse_entry(
        p,
        "vision",
        {
            "type": "s3",
            "path": "s3://bkt/vision",
            "region": "eu-west-1",
            "endpoint_url": "http://minio:9000",
            "addressing_style": "path",
        },
    )
    add_repo(cfg, entry, "s3://bkt/vision")
    assert load_config(p).repos["vision"] == entry


def test_write_is_atomic_and_leaves_no_temp_file(tmp_path):
    p = tmp_path / CONFIG_NAME
    p.write_text(HAND_WRITTEN)
    inode = os.stat(p).st_ino
    cfg = add_repo(load_config(p), _local(load_config(p), "a", "a"), "a")
    # Replaced by a rename (a new inode), not rewritten in place; nothing else left in the directory.
    assert os.stat(p).st_ino != inode
    assert sorted(os.listdir(tmp_path)) == [CONFIG_NAME]
    remove_repo(cfg, "a")
    assert sorted(os.listdir(tmp_path)) == [CONFIG_NAME]


def test_add_creates_the_file(tmp_path, monkeypatch):
    assert_no_config_above(tmp_path)
    monkeypatch.chdir(tmp_path)
    cfg = load_config(must_exist=False)
    new = add_repo(cfg, _local(cfg, "first", ".aim/repo"), ".aim/repo")
    assert new.path == tmp_path / CONFIG_NAME
    assert new.repos["first"].path == str(tmp_path / ".aim" / "repo")
    assert list(load_config().repos) == ["first"]
    assert sorted(os.listdir(tmp_path)) == [CONFIG_NAME]


def test_add_to_an_empty_or_comment_only_file(tmp_path):
    p = tmp_path / CONFIG_NAME
    p.write_text("# repositories of the vision team\nrepos:\n")
    cfg = load_config(p)
    add_repo(cfg, _local(cfg, "r", "x"), "x")
    assert "# repositories of the vision team" in p.read_text()
    assert list(load_config(p).repos) == ["r"]


def test_add_existing_name_conflicts_and_changes_nothing(tmp_path):
    p = tmp_path / CONFIG_NAME
    p.write_text(HAND_WRITTEN)
    cfg = load_config(p)
    with pytest.raises(ConflictError) as e:
        add_repo(cfg, _local(cfg, "nfs", "elsewhere"), "elsewhere")
    assert e.value.exit_code == 4 and "'nfs'" in e.value.message and "repo delete" in e.value.hint
    assert p.read_text() == HAND_WRITTEN


def test_remove_unknown_changes_nothing(tmp_path):
    p = tmp_path / CONFIG_NAME
    p.write_text(HAND_WRITTEN)
    with pytest.raises(NotFoundError) as e:
        remove_repo(load_config(p), "ghost")
    assert e.value.exit_code == 3
    assert p.read_text() == HAND_WRITTEN
    assert sorted(os.listdir(tmp_path)) == [CONFIG_NAME]


# -- issue 8: hostile files, S3 paths, what the writer can edit ----------------------------------------
@pytest.mark.parametrize(
    "url, bucket, prefix",
    [
        ("s3://bucket", "bucket", ""),
        ("s3://bucket/", "bucket", ""),
        ("s3://bucket/team/", "bucket", "team"),
        ("s3://my.bucket-1/a/b", "my.bucket-1", "a/b"),
        ("s3://" + "b" * 63 + "/x", "b" * 63, "x"),
    ],
)
def test_s3_paths_accepted(url, bucket, prefix):
    from aim_cli.config import parse_s3_url

    assert parse_s3_url(url) == (bucket, prefix)


@pytest.mark.parametrize(
    "url",
    [
        "s3://bucket//",
        "s3://bucket/a//b",
        "s3://bucket/./a",
        "s3://bucket/a/..",
        "s3://ab",
        "s3://UPPER/x",
        "s3://bu_cket/x",
        "s3://bucket-/x",
        "s3://10.0.0.1/x",
    ],
)
def test_s3_paths_refused(url):
    from aim_cli.config import parse_s3_url

    with pytest.raises(ConfigError) as e:
        parse_s3_url(url)
    assert repr(url) in e.value.message and e.value.exit_code == 7


def test_values_that_yaml_reads_as_other_types_are_named_as_written(tmp_path):
    err = _config_error(tmp_path, "repos:\n  r: {type: 1e3, path: x}\n")
    assert "not '1e3'" in err.message
    err = _config_error(tmp_path, "repos:\n  r: {type: local, path: " + "9" * 10_000 + "}\n")
    assert "'path' must be a non-empty string" in err.message and len(err.message) < 300


def test_a_key_the_writer_reads_otherwise_is_refused_on_delete(tmp_path):
    """pyyaml (YAML 1.1) reads the key 0o17 as a string, ruamel (YAML 1.2) as the number 15."""
    p = tmp_path / CONFIG_NAME
    p.write_text("repos:\n  0o17: {type: local, path: x}\n")
    cfg = load_config(p)
    assert list(cfg.repos) == ["0o17"]
    with pytest.raises(ConfigError) as e:
        remove_repo(cfg, "0o17")
    assert "quote the name" in e.value.hint and p.read_text() == "repos:\n  0o17: {type: local, path: x}\n"
    p.write_text("repos:\n  '0o17': {type: local, path: x}\n")
    remove_repo(load_config(p), "0o17")
    assert load_config(p).repos == {}
