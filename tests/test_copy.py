"""`model copy`: versions between repositories with the same manifest digests, only the missing
blobs transferred, through the console script (local and S3, both storage formats)."""

import json
import os

import pytest

from aim_cli import api
from aim_cli.errors import TagExistsError
from aim_cli.format.layout import REPO_META_KEY
from tests.helpers import (
    base_env,
    chunks_of,
    describe,
    file_contents,
    make_variant_model,
    ok,
    one_line_error,
    random_bytes,
    run,
    sigkill_when,
    tree,
    write_model,
)

KiB = 1024
MiB = 1 << 20


class Env:
    """A model_repos.yaml with the repositories a test names: local ones in tmp_path, ``s3`` on
    the moto server."""

    def __init__(self, tmp_path, local=(), s3_entry=None):
        self.tmp = tmp_path
        self.config = tmp_path / "model_repos.yaml"
        lines = ["repos:"] + [f"  {name}: {{type: local, path: {tmp_path / name}}}" for name in local]
        if s3_entry is not None:
            lines.append(f"  s3: {json.dumps(s3_entry)}")
        self.config.write_text("\n".join(lines) + "\n")

    def cli(self, *args, timeout: float = 120):
        return run(["--config", self.config, *args], cwd=self.tmp, timeout=timeout)

    def ok_json(self, *args):
        return json.loads(ok(self.cli(*args, "--json")).stdout)

    def create(self, name: str, *options: str):
        path = self.tmp / name
        text = self.config.read_text().replace(f"  {name}: {{type: local, path: {path}}}\n", "")
        self.config.write_text(text)
        ok(self.cli("repo", "create", name, "--type", "local", "--path", path, *options))

    def push(self, repo: str, model: str, source, tag: str) -> str:
        return self.ok_json("model", "push", repo, model, source, "--tag", tag, "-q")["digest"]

    def digests(self, repo: str, model: str = "m") -> dict[str, str]:
        return {v["tag"]: v["digest"] for v in self.ok_json("model", "versions", repo, model)}

    def repository(self, name: str):
        return api.open_repository(name, config=str(self.config))


def _two_versions(env, repo: str, size: int = 300 * KiB):
    v1 = make_variant_model(env.tmp / "v1", seed=1, variant=0, size=size)
    v2 = make_variant_model(env.tmp / "v2", seed=1, variant=1, size=size)
    env.push(repo, "m", v1, "v1")
    env.push(repo, "m", v2, "v2")
    return v1, v2


def test_copy_local_to_s3_and_back_keeps_every_digest(tmp_path, s3_endpoint, s3_bucket):
    from tests.s3_fixtures import s3_repo_yaml_entry

    env = Env(tmp_path, local=["back"], s3_entry=s3_repo_yaml_entry(s3_endpoint, s3_bucket))
    env.create("local", "--chunk-size", "8KiB")
    _v1, v2 = _two_versions(env, "local")
    pushed = env.digests("local")

    there = env.ok_json("model", "copy", "local", "m", "s3", "-q")
    assert there["copied"] == ["v1", "v2"] and there["conflicts"] == [] and there["dst_created"] is True
    assert env.digests("s3") == pushed
    # v2 shares all but a few chunks with v1: they crossed once.
    stored = dict(env.repository("local").iter_blobs())
    assert there["blobs"] == len(stored) and there["stored_bytes"] == sum(stored.values())
    assert there["versions"][1]["present_blobs"] > there["versions"][1]["blobs"]
    # The new repository got the source's format and chunking: later pushes there cut the same chunks.
    assert env.repository("s3").format() == env.repository("local").format()

    back = env.ok_json("model", "copy", "s3", "m", "back", "--tag", "v2", "-q")
    assert back["copied"] == ["v2"] and env.digests("back") == {"v2": pushed["v2"]}
    ok(env.cli("model", "verify", "back", "m", "--tag", "v2", "-q"))
    ok(env.cli("model", "pull", "back", "m", tmp_path / "dest", "--tag", "v2", "-q"))
    assert file_contents(tmp_path / "dest") == file_contents(v2)

    # Rerun: everything is there with the same digest; nothing moves.
    again = env.ok_json("model", "copy", "local", "m", "s3")
    assert again["skipped"] == ["v1", "v2"] and again["blobs"] == 0 and again["copied"] == []


def test_copy_across_storage_formats_reencodes_and_keeps_the_digest(tmp_path):
    env = Env(tmp_path)
    env.create("f1", "--format", "1", "--chunk-size", "8KiB")
    env.create("f2", "--format", "2")
    env.create("f1b", "--format", "1")
    _, v2 = _two_versions(env, "f1")
    up = env.ok_json("model", "copy", "f1", "m", "f2", "-q")
    assert up["reencoded"] is True and (up["src_format"], up["dst_format"]) == (1, 2)
    text = ok(env.cli("model", "copy", "f2", "m", "f1b", "-q")).stdout
    assert "re-encoded from format 2 to format 1" in text
    assert env.digests("f1") == env.digests("f2") == env.digests("f1b")
    for repo in ("f2", "f1b"):
        ok(env.cli("model", "verify", repo, "m", "--tag", "v2", "-q"))
        dest = tmp_path / f"dest-{repo}"
        ok(env.cli("model", "pull", repo, "m", dest, "--tag", "v2", "-q"))
        assert file_contents(dest) == file_contents(v2)
    # Format 1 stores the raw chunks: what the copy stored is the chunks' size.
    f1b = dict(env.repository("f1b").iter_blobs())
    chunks = {}
    for tag in ("v1", "v2"):
        chunks |= chunks_of(env.repository("f1").get_version("m", tag).manifest)
    assert f1b == chunks


def _blob_names(root) -> set[str]:
    """The blob files of a local repository (temp files of an interrupted write left out)."""
    names = set()
    blobs = root / "blobs"
    for shard in os.scandir(blobs) if blobs.exists() else ():
        names.update(e.name for e in os.scandir(shard.path) if not e.name.startswith("."))
    return names


def test_copy_killed_with_sigkill_resumes_and_copies_only_the_rest(tmp_path):
    env = Env(tmp_path, local=["dst"])
    env.create("src", "--chunk-size", "64KiB")
    src = write_model(tmp_path / "model", {f"shard-{i}.bin": random_bytes(12 * MiB, i) for i in range(4)})
    env.push("src", "m", src, "v1")
    manifest = env.repository("src").get_version("m", "v1").manifest
    chunks = chunks_of(manifest)
    assert len(chunks) > 200

    # Kill it a quarter of the way in.
    sigkill_when(
        ["--config", env.config, "model", "copy", "src", "m", "dst", "--jobs", "1", "--quiet"],
        lambda: len(_blob_names(tmp_path / "dst")) >= len(chunks) // 4,
        what="copy",
    )
    before = _blob_names(tmp_path / "dst")
    assert 0 < len(before) < len(chunks)
    assert env.repository("dst").list_tags("m") == []  # nothing committed

    rerun = env.ok_json("model", "copy", "src", "m", "dst")
    rest = {d: s for d, s in chunks.items() if d not in before}
    assert rerun["copied"] == ["v1"]
    assert rerun["blobs"] == len(rest) and rerun["raw_bytes"] == sum(rest.values())
    assert rerun["versions"][0]["present_blobs"] == len(before)
    assert _blob_names(tmp_path / "dst") == set(chunks)
    assert env.digests("dst") == env.digests("src")
    ok(env.cli("model", "verify", "dst", "m", "-q"))


def test_a_tag_held_with_another_digest_is_a_conflict_the_others_are_copied(tmp_path):
    env = Env(tmp_path, local=["src", "dst"])
    for tag, seed in (("v1", 1), ("v2", 2), ("v3", 3)):
        env.push("src", "m", make_variant_model(tmp_path / tag, seed=seed), tag)
    env.push("dst", "m", make_variant_model(tmp_path / "other", seed=9), "v1")  # other content
    env.push("dst", "m", tmp_path / "v3", "v3")  # the same files, pushed separately: another digest
    held = env.digests("dst")

    res = env.cli("model", "copy", "src", "m", "dst")
    assert res.returncode == 4, describe(res)
    line = res.stderr.strip()
    assert line.count("\n") == 0 and line.startswith("error: ") and "Traceback" not in line
    assert "m:v1" in line and "m:v3" in line and "m:v2" not in line
    assert "copied    m:v2" in res.stdout and "conflict  m:v1" in res.stdout
    after = env.digests("dst")
    assert after["v2"] == env.digests("src")["v2"]
    assert (after["v1"], after["v3"]) == (held["v1"], held["v3"])  # untouched

    again = env.cli("model", "copy", "src", "m", "dst", "--json")
    assert again.returncode == 4, describe(again)
    result = json.loads(again.stdout)
    assert result["conflicts"] == ["v1", "v3"] and result["skipped"] == ["v2"] and result["blobs"] == 0
    conflict = next(v for v in result["versions"] if v["tag"] == "v1")
    assert conflict["dst_digest"] == held["v1"] and conflict["digest"] == env.digests("src")["v1"]


def test_a_corrupt_source_blob_is_exit_5_and_its_version_is_not_committed(tmp_path):
    env = Env(tmp_path, local=["src", "dst"])
    _two_versions(env, "src")
    src = env.repository("src")
    v1, v2 = (chunks_of(src.get_version("m", t).manifest) for t in ("v1", "v2"))
    bad = next(d for d in v2 if d not in v1)
    path = tmp_path / "src" / "blobs" / bad[:2] / bad
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))

    one_line_error(env.cli("model", "copy", "src", "m", "dst"), 5, bad, "m:v2")
    dst = env.repository("dst")
    assert dst.has_version("m", "v1") and not dst.has_version("m", "v2")
    assert not dst.has_blob(bad)


def test_dry_run_writes_nothing_and_plans_what_the_copy_then_does(tmp_path):
    env = Env(tmp_path, local=["src", "dst"])
    _two_versions(env, "src")
    plan = env.ok_json("model", "copy", "src", "m", "dst", "--dry-run")
    assert not (tmp_path / "dst").exists()  # not even the repository
    assert plan["dry_run"] is True and plan["dst_created"] is True and plan["copied"] == ["v1", "v2"]
    text = ok(env.cli("model", "copy", "src", "m", "dst", "--dry-run")).stdout
    assert "would copy" in text and "nothing written" in text and not (tmp_path / "dst").exists()

    done = env.ok_json("model", "copy", "src", "m", "dst", "--tag", "v1", "-q")
    snapshot = tree(tmp_path / "dst", mtimes=True)
    plan2 = env.ok_json("model", "copy", "src", "m", "dst", "--dry-run")
    assert tree(tmp_path / "dst", mtimes=True) == snapshot  # no lease, no blob, no summary
    assert plan2["skipped"] == ["v1"] and plan2["copied"] == ["v2"] and plan2["dst_created"] is False
    rest = env.ok_json("model", "copy", "src", "m", "dst", "-q")
    assert (plan2["blobs"], plan2["raw_bytes"], plan2["stored_bytes"]) == (
        rest["blobs"],
        rest["raw_bytes"],
        rest["stored_bytes"],
    )
    assert plan["blobs"] == done["blobs"] + rest["blobs"]


def test_unknown_model_or_tag_is_exit_3_before_anything_is_written(tmp_path):
    env = Env(tmp_path, local=["src", "dst"])
    _two_versions(env, "src")
    one_line_error(env.cli("model", "copy", "src", "m", "dst", "--tag", "v1", "--tag", "v9"), 3, "'v9'")
    one_line_error(env.cli("model", "copy", "src", "nope", "dst"), 3, "'nope'")
    one_line_error(env.cli("model", "copy", "src", "m", "missing-repo"), 3, "missing-repo")
    assert not (tmp_path / "dst").exists()


def test_the_python_api_returns_a_typed_result(tmp_path):
    env = Env(tmp_path, local=["src", "dst"])
    _two_versions(env, "src")
    r = api.copy("src", "m", "dst", tags=["v2"], config=str(env.config))
    assert isinstance(r, api.CopyResult)
    assert r.copied == ["v2"] and r.versions[0].status == "copied" and not r.reencoded
    assert env.repository("dst").get_version("m", "v2").digest == r.versions[0].digest


def test_commit_raw_writes_the_exact_bytes_once(tmp_path):
    env = Env(tmp_path, local=["src", "dst"])
    _two_versions(env, "src")
    ref = env.repository("src").get_version("m", "v1")
    dst = env.repository("dst")
    dst.init()
    assert dst.commit_raw(ref.raw).digest == ref.digest
    assert dst.get_version("m", "v1").raw == ref.raw
    assert dst.commit_raw(ref.raw).created  # the same bytes again: ours
    other = env.repository("src").get_version("m", "v2").raw.replace(b'"tag":"v2"', b'"tag":"v1"')
    with pytest.raises(TagExistsError):
        dst.commit_raw(other)
    assert (tmp_path / "dst" / REPO_META_KEY).exists()


def test_a_manifest_is_copied_as_stored_even_when_another_encoder_wrote_it(tmp_path):
    import msgspec

    from aim_cli.format import manifest as mf
    from aim_cli.format.layout import manifest_key

    env = Env(tmp_path, local=["src", "dst"])
    _two_versions(env, "src")
    src = env.repository("src")
    m = src.get_version("m", "v1").manifest
    m.tag = "pretty"
    raw = json.dumps(msgspec.to_builtins(m), indent=1).encode()  # valid, but not mf.encode's bytes
    assert raw != mf.encode(m)
    src.backend.put_if_absent(manifest_key("m", "pretty"), raw)
    ok(env.cli("model", "copy", "src", "m", "dst", "--tag", "pretty", "-q"))
    copied = env.repository("dst").get_version("m", "pretty")
    assert copied.raw == raw and copied.digest == mf.digest_of(raw)


def test_copy_takes_the_destinations_push_lease(tmp_path):
    from aim_cli.repository import leases

    env = Env(tmp_path, local=["src", "dst"])
    _two_versions(env, "src")
    dst = env.repository("dst")
    dst.init()
    with leases.acquire(dst, leases.EXCLUSIVE, "gc"):  # a gc running on the destination
        res = run(
            ["--config", env.config, "model", "copy", "src", "m", "dst"],
            cwd=tmp_path,
            env=base_env(AIM_PUSH_WAIT="0.2"),
        )
    one_line_error(res, 4, "copy", "gc")
    assert dst.list_tags("m") == []


def test_a_new_destination_gets_the_sources_whole_format(tmp_path):
    """Copy creates a missing destination with the source's aim-repo.json, tensor chunking and
    codec parameters included, so that pushes there cut the same chunks as in the source."""
    from aim_cli.format.layout import REPO_META_KEY
    from tests.helpers import make_variant_model, ok, run

    config = tmp_path / "model_repos.yaml"
    config.write_text("repos: {}\n")
    aim = ["--config", config]
    ok(
        run(
            [*aim, "repo", "create", "src", "--type", "local", "--path", tmp_path / "src", "--chunk-size", "64KiB"],
            cwd=tmp_path,
        )
    )
    ok(run([*aim, "repo", "create", "dst", "--type", "local", "--path", tmp_path / "dst", "--no-check"], cwd=tmp_path))
    ok(run([*aim, "model", "push", "src", "m", make_variant_model(tmp_path / "model"), "--tag", "v1"], cwd=tmp_path))
    ok(run([*aim, "model", "copy", "src", "m", "dst"], cwd=tmp_path))
    assert (tmp_path / "dst" / REPO_META_KEY).read_bytes() == (tmp_path / "src" / REPO_META_KEY).read_bytes()
