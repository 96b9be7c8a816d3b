"""Namespaced models (issue 20, item 2; docs/design.md §2): ``org/model`` beside plain models,
stored below ``models/@org/model/``, through every command's library function on the local
backend and S3 (moto; Ceph RGW where it runs). tests/format/test_names_property.py holds the
grammar's and the key layout's properties; tests/cli/test_json_output.py and
tests/cli/test_completion.py run the console script with such names."""

from __future__ import annotations

import json
import logging

import pytest

from aim_cli import api
from aim_cli.errors import UsageError, VersionNotFoundError
from aim_cli.format.layout import MODELS, manifest_key, model_prefix
from tests.helpers import LOCAL_ONLY, file_contents, ok, write_keys, write_model

pytestmark = pytest.mark.format_neutral

ORG = "org"
#: A plain model ``org`` and namespaced models named like its folders, and one that is not.
NEIGHBOURS = ["org/versions", "org/summaries", "org/signatures", "org/aliases", "org/model"]


def _push(env, model: str, tag: str, content: bytes) -> None:
    src = write_model(env.tmp / "src" / model.replace("/", "__") / tag, {"w.bin": content, "config.json": b"{}"})
    api.push(env.name, model, src, tag=tag, config=env.config)


def _content(model: str, tag: str) -> bytes:
    return f"{model}:{tag} ".encode() * 500


@pytest.fixture
def crowded(repo):
    """Model ``org`` (v1, with an alias ``prod``) and every NEIGHBOUR (v1; ``org/model`` v1 and v2),
    each version with its own bytes."""
    for model in [ORG, *NEIGHBOURS]:
        _push(repo, model, "v1", _content(model, "v1"))
    _push(repo, "org/model", "v2", _content("org/model", "v2"))
    api.alias_set(repo.name, ORG, "prod", tag="v1", config=repo.config)
    return repo


def _pulled(env, model: str, tag: str | None, dest: str) -> bytes:
    out = env.tmp / dest
    api.pull(env.name, model, out, tag=tag, config=env.config)
    return file_contents(out)["w.bin"][0]


def test_the_namespaced_keys_and_the_plain_ones_never_meet(crowded, caplog):
    """Each model lists, resolves and reads its own versions only, with no stray warned about."""
    r, cfg, backend = crowded.name, crowded.config, crowded.repository.backend
    caplog.set_level(logging.WARNING)
    assert api.list_models(r, config=cfg) == sorted([ORG, *NEIGHBOURS])
    assert backend.exists("models/@org/model/versions/v1.json") and backend.exists("models/org/versions/v1.json")
    assert backend.exists("models/@org/versions/versions/v1.json") and backend.exists(manifest_key("org/aliases", "v1"))
    assert backend.exists("models/org/aliases/prod/1.json")
    for model in [ORG, *NEIGHBOURS]:
        tags = ["v1", "v2"] if model == "org/model" else ["v1"]
        assert api.list_tags(r, model, config=cfg) == tags
        assert [v.tag for v in api.list_versions(r, model, config=cfg)] == tags
        details = api.version_details(r, model, config=cfg)
        assert (details.model, details.tag) == (model, tags[-1])
        assert _pulled(crowded, model, None, f"out-{model}") == _content(model, tags[-1])
    assert [a.alias for a in api.alias_list(r, ORG, config=cfg)] == ["prod"]
    assert api.alias_list(r, "org/aliases", config=cfg) == []
    assert "skipping" not in caplog.text
    check = api.check_repo(r, config=cfg)
    assert (check.broken, check.problems, check.versions) == ([], [], 7)
    # A model whose name is a namespace's folder is no model: nothing of org's or its namespace's.
    with pytest.raises(VersionNotFoundError):
        api.list_versions(r, "org/nothing", config=cfg)


def test_every_command_takes_a_namespaced_model(crowded, tmp_path):
    r, cfg, m = crowded.name, crowded.config, "org/model"
    assert api.verify_version(r, m, tag="v1", config=cfg).problems == []
    diff = api.diff(r, m, "v1", "v2", config=cfg)
    assert (diff.model, [f.path for f in diff.files if f.status == "changed"]) == (m, ["w.bin"])

    set_ = api.alias_set(r, m, "prod", tag="v1", config=cfg)
    assert (set_.alias.model, set_.alias.tag) == (m, "v1")
    assert crowded.repository.backend.exists("models/@org/model/aliases/prod/1.json")
    assert _pulled(crowded, m, "prod", "via-alias") == _content(m, "v1")
    assert api.version_details(r, m, tag="prod", config=cfg).alias == "prod"

    _, pem, pub = write_keys(tmp_path / "keys")
    signed = api.sign_version(r, m, tag="v2", key=pem, config=cfg)
    assert signed.model == m
    assert api.verify_signature(r, m, tag="v2", public_key=pub, config=cfg).model == m
    assert [s.hint for s in api.list_signatures(r, m, tag="v2", config=cfg)] == [signed.hint]
    assert api.list_signatures(r, "org/signatures", tag="v1", config=cfg) == []

    # Copy to another repository: the namespaced keys there too, the digest kept.
    with open(cfg, "a") as f:
        f.write(f"  other: {{type: local, path: {tmp_path / 'other'}}}\n")
    copied = api.copy(r, m, "other", config=cfg)
    assert copied.copied == ["v1", "v2"]
    assert api.list_models("other", config=cfg) == [m]
    assert (
        api.version_details("other", m, tag="v2", config=cfg).digest
        == api.version_details(r, m, tag="v2", config=cfg).digest
    )
    assert (tmp_path / "other" / "models" / "@org" / "model" / "signatures").is_dir()


def test_deleting_and_gc_keep_the_neighbours(crowded):
    """delete-version, delete and gc of one model leave every other model's versions, aliases
    and bytes: each deletes by its own folder, and no folder holds another's."""
    r, cfg, backend = crowded.name, crowded.config, crowded.repository.backend
    gone = api.delete_versions(r, "org/model", ["v1"], config=cfg)
    assert gone.tags == ["v1"] and gone.reclaimable_blobs > 0
    assert api.list_tags(r, "org/model", config=cfg) == ["v2"]
    assert api.delete_versions(r, ORG, config=cfg).tags == ["v1"]  # the whole model, its alias too
    assert list(backend.list(model_prefix(ORG))) == []
    assert api.delete_versions(r, "org/versions", config=cfg).tags == ["v1"]
    assert api.list_models(r, config=cfg) == ["org/aliases", "org/model", "org/signatures", "org/summaries"]

    result = api.collect_garbage(r, config=cfg)
    assert result.deleted > 0
    for model in ["org/aliases", "org/signatures", "org/summaries"]:
        assert _pulled(crowded, model, "v1", f"after-{model}") == _content(model, "v1")
    assert _pulled(crowded, "org/model", "v2", "after-v2") == _content("org/model", "v2")
    check = api.check_repo(r, config=cfg)
    assert (check.broken, check.problems, check.unreferenced) == ([], [], 0)
    assert not backend.exists("models/org/versions/v1.json") and backend.exists(
        "models/@org/summaries/versions/v1.json"
    )


HOSTILE = [
    "..",
    "org/..",
    "org/../x",
    "../org/x",
    "org//x",
    "/x",
    "org/",
    "/",
    "a/b/c",
    "@org/x",
    "@x",
    "org/@x",
    "-org/x",
    "org-/x",
    "o--rg/x",
    "o..rg/x",
    ".org/x",
    "\uff4frg/x",  # fullwidth o
    "org\u2215x",  # division slash
    "org\u0338/x",
    "org/x\n",
    "org /x",
    "o" * 97 + "/x",
    "org/" + "x" * 129,
]


def test_a_hostile_model_name_is_refused_and_writes_nothing(repo):
    """Refused (exit 2) before any key is made, by the commands that write and those that read;
    the storage holds no key below models/ afterwards."""
    r, cfg = repo.name, repo.config
    src = write_model(repo.tmp / "src", {"w.bin": b"x"})
    calls = (
        lambda name: api.push(r, name, src, tag="v1", config=cfg),
        lambda name: api.pull(r, name, repo.tmp / "out", tag="v1", config=cfg),
        lambda name: api.list_versions(r, name, config=cfg),
        lambda name: api.delete_versions(r, name, config=cfg),
        lambda name: api.alias_set(r, name, "prod", tag="v1", config=cfg),
    )
    for name in HOSTILE:
        for call in calls:
            with pytest.raises(UsageError) as e:
                call(name)
            assert e.value.exit_code == 2, name
    assert list(repo.repository.backend.list(MODELS)) == []


@LOCAL_ONLY
def test_model_list_groups_by_namespace(repo):
    """Plain text: plain models, then each namespace under ``org/``, full names indented (what the
    other commands take). JSON: the flat list of names, as documented."""
    for model in ("zeta", "hf/bert", "alpha", "org/model", "org"):
        _push(repo, model, "v1", b"x")
    shown = ok(repo.cli("model", "list", repo.name)).stdout.splitlines()
    assert shown == ["alpha", "org", "zeta", "hf/", "  hf/bert", "org/", "  org/model"]
    listed = json.loads(ok(repo.cli("model", "list", repo.name, "--json")).stdout)
    assert listed == ["alpha", "hf/bert", "org", "org/model", "zeta"]
    # The name as the listing shows it is what the commands take.
    assert "v1" in ok(repo.cli("model", "versions", repo.name, "hf/bert")).stdout
    refused = repo.cli("model", "versions", repo.name, "hf//bert")
    assert refused.returncode == 2 and "invalid model name" in refused.stderr and "Traceback" not in refused.stderr


@LOCAL_ONLY
def test_gc_cleans_a_killed_writers_temp_files_in_namespaced_folders_only(repo):
    """WRITE_DIRS reach a namespaced model's folders (``models/@*/*/...``), and no other folder."""
    _push(repo, "org/m", "v1", b"x")
    _push(repo, "org", "v1", b"y")
    root = repo.tmp / "store" / "models"
    planted = {
        root / "@org" / "m" / "versions": True,
        root / "@org" / "m" / "aliases" / "prod": True,
        root / "org" / "summaries": True,
        root / "org" / "m" / "versions": False,  # no folder of aim_cli's: a plain model has no "m"
        root / "@org": False,
    }
    for folder in planted:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / ".tmp-x.0123456789ab").write_bytes(b"partial")
    assert repo.repository.clean_incomplete(0) == (3, 21)
    assert {f: not (f / ".tmp-x.0123456789ab").exists() for f in planted} == planted


def test_strays_in_a_namespace_are_told_apart_and_removable(repo, caplog):
    """A copy of a manifest in a namespaced model's versions/ is that model's stray, removable by
    its name; a file in the namespace's own folder, or below a bare ``@``, names no model."""
    r, cfg, backend = repo.name, repo.config, repo.repository.backend
    _push(repo, "org/m", "v1", b"x")
    raw = backend.get(manifest_key("org/m", "v1"))
    for key in ("models/@org/m/versions/v1 copy.json", "models/@org/README.txt", "models/@/m/versions/v1.json"):
        backend.put(key, raw)
    caplog.set_level(logging.WARNING)
    assert api.list_models(r, config=cfg) == ["org/m"]
    assert f"`aim_cli model delete-version {r} org/m --tag 'v1 copy'` removes it" in caplog.text
    assert caplog.text.count("remove it from the storage by hand") == 2
    broken = {key for key, _ in api.check_repo(r, config=cfg).broken}
    assert broken == {"models/@org/m/versions/v1 copy.json", "models/@org/README.txt", "models/@/m/versions/v1.json"}
    assert api.delete_versions(r, "org/m", ["v1 copy"], config=cfg).tags == ["v1 copy"]
    assert not backend.exists("models/@org/m/versions/v1 copy.json") and backend.exists(manifest_key("org/m", "v1"))
