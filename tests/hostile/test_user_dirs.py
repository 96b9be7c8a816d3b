"""A user's directories, read and written (issue 17, items 4, 7 and 8), through the installed
console script: one walker and one opener for every read (no link followed, a FIFO never
blocks), one writer beside a target (random O_EXCL|O_NOFOLLOW temp name, fsync, rename), and
`pull --delete` that leaves DEST exactly the version."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aim_cli.util import fs as fsmod
from aim_cli.util.fs import write_beside
from aim_cli.util.walk import NotRegularFileError, iter_tree, open_regular
from tests.helpers import LOCAL_ONLY, make_signed_tree, ok, one_line_error, write_file, write_keys

#: Nothing here depends on the storage format.
pytestmark = pytest.mark.format_neutral

#: A run that takes longer than this has hung (on a FIFO): the test fails, it does not wait forever.
HANG = 60


@pytest.fixture
def signed(repo, tmp_path):
    """m:v1 pushed, signed with a key, and pulled into DEST: (env, DEST, public key)."""
    src = make_signed_tree(tmp_path / "model")
    ok(repo.cli("model", "push", repo.name, "m", str(src), "--tag", "v1", "-q"))
    _key, pem, pub = write_keys(tmp_path / "keys")
    ok(repo.cli("model", "sign", repo.name, "m", "--tag", "v1", "--key", str(pem)))
    dest = tmp_path / "dest"
    ok(repo.cli("model", "pull", repo.name, "m", str(dest), "--tag", "v1", "-q"))
    return repo, dest, pub


def verify_local(env, dest, *key: str):
    return env.cli("model", "verify", env.name, "m", "--tag", "v1", *key, "--local", str(dest), timeout=HANG)


# -- item 4: one walker, one opener ----------------------------------------------------------------------
@LOCAL_ONLY
@pytest.mark.parametrize("where", ["extra.bin", "a.txt", ".github/hook"])
def test_a_fifo_in_dir_never_hangs_verify_local_with_or_without_a_key(signed, where):
    env, dest, pub = signed
    target = dest / where
    target.unlink(missing_ok=True)
    os.mkfifo(target)
    signed_run = verify_local(env, dest, "--public-key", str(pub))
    if where.startswith(".github/"):  # inside the signature's ignored paths: not looked at
        ok(signed_run)
    else:
        one_line_error(signed_run, 5, where.split("/")[-1], "FIFO")
    plain = verify_local(env, dest)
    assert plain.returncode == 5 and "Traceback" not in plain.stderr  # a difference, never a hang
    assert where in plain.stdout + plain.stderr or where == ".github/hook"


@LOCAL_ONLY
def test_verify_local_with_a_key_ignores_aim_working_files_as_plain_local_does(signed):
    env, dest, pub = signed
    write_file(dest / ".aim" / "partial" / "x.part", b"half a file")
    write_file(dest / ".aim-notes", b"aim_cli's own name")
    os.mkfifo(dest / ".aim-fifo")
    ok(verify_local(env, dest, "--public-key", str(pub)))
    ok(verify_local(env, dest))


@LOCAL_ONLY
@pytest.mark.parametrize("key", [True, False])
def test_verify_local_of_a_missing_or_wrong_dir_is_exit_2(signed, tmp_path, key):
    env, _dest, pub = signed
    args = ("--public-key", str(pub)) if key else ()
    one_line_error(verify_local(env, tmp_path / "nowhere", *args), 2, "nowhere", "does not exist")
    write_file(tmp_path / "plain-file", b"x")
    one_line_error(verify_local(env, tmp_path / "plain-file", *args), 2, "plain-file", "not a directory")
    one_line_error(verify_local(env, "", *args), 2, "empty string")


@LOCAL_ONLY
def test_a_version_of_ignored_files_only_does_not_verify_against_a_missing_dir(repo, tmp_path):
    src = tmp_path / "model"
    write_file(src / ".gitattributes", b"*.bin filter=lfs\n")
    write_file(src / ".github" / "ci.yml", b"on: push\n")
    ok(repo.cli("model", "push", repo.name, "m", str(src), "--tag", "v1", "-q"))
    _key, pem, pub = write_keys(tmp_path / "keys")
    ok(repo.cli("model", "sign", repo.name, "m", "--tag", "v1", "--key", str(pem)))
    one_line_error(verify_local(repo, tmp_path / "never-pulled", "--public-key", str(pub)), 2, "does not exist")
    ok(verify_local(repo, src, "--public-key", str(pub)))  # the directory itself still verifies


@LOCAL_ONLY
def test_a_symlink_in_dir_is_refused_by_the_signature_check(signed, tmp_path):
    env, dest, pub = signed
    write_file(tmp_path / "elsewhere", (dest / "a.txt").read_bytes())
    (dest / "a.txt").unlink()
    (dest / "a.txt").symlink_to(tmp_path / "elsewhere")
    one_line_error(verify_local(env, dest, "--public-key", str(pub)), 5, "a.txt", "symbolic link")


@LOCAL_ONLY
def test_push_refuses_a_fifo_without_hanging(repo, tmp_path):
    src = tmp_path / "model"
    write_file(src / "a.bin", b"a")
    os.mkfifo(src / "pipe")
    res = repo.cli("model", "push", repo.name, "m", str(src), "--tag", "v1", timeout=HANG)
    one_line_error(res, 2, "pipe", "not a regular file")


def test_the_opener_refuses_links_and_special_files(tmp_path):
    write_file(tmp_path / "file", b"data")
    fd, st = open_regular(tmp_path / "file")
    os.close(fd)
    assert stat.S_ISREG(st.st_mode) and st.st_size == 4
    (tmp_path / "link").symlink_to(tmp_path / "file")
    with pytest.raises(OSError) as e:
        open_regular(tmp_path / "link")
    assert e.value.errno == 40  # ELOOP: O_NOFOLLOW
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(NotRegularFileError, match="FIFO"):
        open_regular(tmp_path / "fifo")  # returns at once: O_NONBLOCK
    with pytest.raises(NotRegularFileError, match="directory"):
        open_regular(tmp_path)


def test_the_walker_prunes_what_it_is_told_and_leaves_aim_names_out(tmp_path):
    for rel in ("a", "d/b", ".git/objects/x", ".aim/partial/p", "sub/.aim-kept"):
        write_file(tmp_path / rel, b"x")
    skipped: list[str] = []
    found = dict(iter_tree(tmp_path, on_skip=skipped.append, prune=lambda p, _d: p == ".git"))
    assert sorted(found) == ["a", "d/b", "sub/.aim-kept"]
    assert skipped == [".aim"]


# -- item 7: one writer beside a target -------------------------------------------------------------------
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=4096), existing_mode=st.sampled_from([None, 0o600, 0o640, 0o755]))
def test_write_beside_writes_whole_keeps_the_mode_and_leaves_no_temp(tmp_path_factory, data, existing_mode):
    directory = tmp_path_factory.mktemp("w")
    target = directory / "out.bin"
    if existing_mode is not None:
        write_file(target, b"old", existing_mode)
    write_beside(target, data)
    assert target.read_bytes() == data
    if existing_mode is not None:
        assert stat.S_IMODE(target.stat().st_mode) == existing_mode
    assert os.listdir(directory) == ["out.bin"]


def test_write_beside_never_writes_through_a_planted_link(tmp_path, monkeypatch):
    """Another user plants links at the temp names; the write goes elsewhere, the victim is intact."""
    victim = tmp_path / "victim"
    write_file(victim, b"precious")
    names = iter(["planted", "planted", "fresh"])
    import secrets

    monkeypatch.setattr(secrets, "token_hex", lambda _n: next(names))
    (tmp_path / ".out.sig.planted.aim-tmp").symlink_to(victim)
    write_beside(tmp_path / "out.sig", b"bundle")
    assert victim.read_bytes() == b"precious"
    assert (tmp_path / "out.sig").read_bytes() == b"bundle"
    assert (tmp_path / ".out.sig.planted.aim-tmp").is_symlink()  # left alone, not followed
    assert not (tmp_path / ".out.sig.fresh.aim-tmp").exists()


def test_write_beside_gives_up_after_so_many_taken_names(tmp_path, monkeypatch):
    import secrets

    monkeypatch.setattr(secrets, "token_hex", lambda _n: "taken")
    (tmp_path / ".out.taken.aim-tmp").symlink_to(tmp_path / "victim")
    with pytest.raises(FileExistsError):
        write_beside(tmp_path / "out", b"x")
    assert not (tmp_path / "victim").exists() and not (tmp_path / "out").exists()
    assert fsmod._TEMP_TRIES > 1


@LOCAL_ONLY
def test_export_signature_replaces_a_link_at_out_and_refuses_dir_and_empty(signed, tmp_path):
    env, _dest, _pub = signed
    victim = write_file(tmp_path / "victim", b"precious")
    out = tmp_path / "out.sig"
    out.symlink_to(victim)
    export = ("model", "export-signature", env.name, "m", "--tag", "v1", "-o")
    ok(env.cli(*export, str(out)))
    assert victim.read_bytes() == b"precious"
    assert not out.is_symlink() and json.loads(out.read_bytes())["mediaType"].startswith("application/vnd.dev.sigstore")
    assert sorted(os.listdir(tmp_path)).count("out.sig") == 1
    assert not [n for n in os.listdir(tmp_path) if "aim-tmp" in n]
    one_line_error(env.cli(*export, str(tmp_path)), 2, "--output", "is a directory")
    one_line_error(env.cli(*export, ""), 2, "--output", "empty string")
    one_line_error(env.cli(*export, str(tmp_path / "no" / "such" / "dir" / "x.sig")), 2, "--output", "x.sig")


def test_config_writes_keep_a_0600_file_0600_and_leave_no_temp(tmp_path):
    from tests.helpers import run

    cfg = tmp_path / "model_repos.yaml"
    cfg.write_text("repos: {}\n")
    cfg.chmod(0o600)
    ok(run(["--config", cfg, "repo", "create", "r", "--type", "local", "--path", tmp_path / "store"], cwd=tmp_path))
    assert stat.S_IMODE(cfg.stat().st_mode) == 0o600
    assert "r:" in cfg.read_text()
    assert sorted(os.listdir(tmp_path)) == ["model_repos.yaml", "store"]


# -- item 8: pull --delete makes DEST exactly the version -------------------------------------------------
@LOCAL_ONLY
def test_delete_removes_a_name_that_differs_only_by_case_on_a_case_sensitive_dest(repo, tmp_path):
    src = tmp_path / "model"
    write_file(src / "README.md", b"readme\n")
    write_file(src / "sub" / "Caf\u00e9.json", b"{}\n")
    ok(repo.cli("model", "push", repo.name, "m", str(src), "--tag", "v1", "-q"))
    dest = tmp_path / "dest"
    write_file(dest / "readme.md", b"stale lower-case twin\n")
    write_file(dest / "sub" / "cafe\u0301.json", b"decomposed twin\n")  # NFD of the version's NFC name
    write_file(dest / "sub" / "CAF\u00c9.JSON", b"upper-case twin\n")
    res = ok(repo.cli("model", "pull", repo.name, "m", str(dest), "--tag", "v1", "--delete", "--json"))
    deleted = json.loads(res.stdout)["deleted"]
    assert sorted(deleted) == sorted(["readme.md", "sub/cafe\u0301.json", "sub/CAF\u00c9.JSON"])
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file() and ".aim" not in p.parts) == [
        "README.md",
        "sub/Caf\u00e9.json",
    ]
    ok(repo.cli("model", "verify", repo.name, "m", "--tag", "v1", "--local", str(dest)))


def _pull(env, dest: Path, *extra: str):
    return env.cli("model", "pull", env.name, "m", str(dest), "--tag", "v1", "-q", "--delete", *extra)


@LOCAL_ONLY
@pytest.mark.parametrize("dry", [False, True])
def test_delete_refuses_a_cache_or_reference_inside_dest(repo, tmp_path, dry):
    src = write_file(tmp_path / "model" / "w.bin", b"weights" * 1000).parent
    ok(repo.cli("model", "push", repo.name, "m", str(src), "--tag", "v1", "-q"))
    dest = tmp_path / "dest"
    write_file(dest / "ref" / "w.bin", b"weights" * 1000)
    write_file(dest / "cache" / "keep", b"not ours to delete")
    before = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*"))
    extra = ("--dry-run",) if dry else ()
    one_line_error(_pull(repo, dest, "--reference", str(dest / "ref"), *extra), 2, "--reference", "--delete")
    one_line_error(_pull(repo, dest, "--cache-dir", str(dest / "cache"), *extra), 2, "--cache-dir", "inside")
    one_line_error(_pull(repo, dest, "--reference", str(dest), *extra), 2, "--reference")
    link = tmp_path / "link-to-cache"
    link.symlink_to(dest / "cache")
    one_line_error(_pull(repo, dest, "--cache-dir", str(link), *extra), 2, "--cache-dir")
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*")) == before  # nothing touched
    ok(repo.cli("model", "pull", repo.name, "m", str(dest), "--tag", "v1", "-q", "--reference", str(dest / "ref")))


@LOCAL_ONLY
def test_delete_accepts_a_cache_under_an_aim_name_of_dest_and_keeps_it(repo, tmp_path):
    src = write_file(tmp_path / "model" / "w.bin", b"weights" * 1000).parent
    ok(repo.cli("model", "push", repo.name, "m", str(src), "--tag", "v1", "-q"))
    dest = tmp_path / "dest"
    write_file(dest / "stale.bin", b"old")
    ok(_pull(repo, dest, "--cache-dir", str(dest / ".aim-cache")))
    assert (dest / ".aim-cache" / "aim-cache.json").is_file()
    assert not (dest / "stale.bin").exists()
    ok(repo.cli("model", "verify", repo.name, "m", "--tag", "v1", "--local", str(dest)))
