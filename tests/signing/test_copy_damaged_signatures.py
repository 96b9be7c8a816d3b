"""`model copy` does not spread damage (issue 17, item 6): each signature is judged as `repo check`
judges it before it is copied; a damaged one is left out with a warning and a count, and a later
copy from the repaired source brings the good one. Through the installed console script."""

from __future__ import annotations

import json

import pytest

from aim_cli.format.layout import signature_key
from aim_cli.signing.keys import key_hint
from tests.helpers import describe, make_signed_tree, ok, run, write_keys


class Env:
    def __init__(self, tmp_path):
        self.tmp = tmp_path
        self.config = tmp_path / "model_repos.yaml"
        entries = "".join(f"  {name}: {{type: local, path: {tmp_path / name}}}\n" for name in ("src", "dst"))
        self.config.write_text("repos:\n" + entries)

    def cli(self, *args):
        return run(["--config", self.config, *args], cwd=self.tmp)

    def sig(self, repo: str, hint: str):
        return self.tmp / repo / signature_key("m", "v1", hint)


@pytest.fixture
def env(tmp_path):
    e = Env(tmp_path)
    ok(e.cli("model", "push", "src", "m", make_signed_tree(tmp_path / "model"), "--tag", "v1", "-q"))
    return e


@pytest.mark.parametrize(
    "damage",
    [
        b"garbage",
        b"{}",
        b'{"mediaType":' + b"[" * 50 + b"]" * 50 + b"}",
        b" " * (3 * 1024 * 1024),  # more than a signature of this version can take: not parsed
    ],
    ids=["not-json", "empty-object", "nested", "too-large"],
)
def test_a_damaged_signature_is_not_copied_and_a_repaired_source_brings_it_later(env, tmp_path, damage):
    keys = [write_keys(tmp_path / "keys", name=f"k{i}") for i in range(2)]
    hints = [key_hint(key.public_key())[:16] for key, _, _ in keys]
    for _, pem, _ in keys:
        ok(env.cli("model", "sign", "src", "m", "--tag", "v1", "--key", pem))
    good = env.sig("src", hints[1]).read_bytes()
    env.sig("src", hints[1]).write_bytes(damage)

    dry = env.cli("model", "copy", "src", "m", "dst", "--dry-run", "--json")
    assert dry.returncode == 0, describe(dry)
    assert json.loads(dry.stdout)["signatures"] == 1 and json.loads(dry.stdout)["bad_signatures"] == 1

    res = env.cli("model", "copy", "src", "m", "dst", "--json")
    assert res.returncode == 0, describe(res)
    result = json.loads(res.stdout)
    assert result["signatures"] == 1 and result["bad_signatures"] == 1
    [(hint, why)] = result["versions"][0]["bad_signatures"]
    assert hint == hints[1] and why
    [warning] = res.stderr.strip().split("\n")
    assert warning.startswith("warning: signature " + hints[1]) and "not copied" in warning
    assert env.sig("dst", hints[0]).read_bytes() == env.sig("src", hints[0]).read_bytes()
    assert not env.sig("dst", hints[1]).exists()  # its signer's slot stays free
    ok(env.cli("repo", "check", "dst"))  # the destination is undamaged
    assert env.cli("repo", "check", "src").returncode == 5  # the source's damage is still reported there

    env.sig("src", hints[1]).write_bytes(good)  # the source is repaired
    again = json.loads(ok(env.cli("model", "copy", "src", "m", "dst", "--json")).stdout)
    assert again["signatures"] == 1 and again["bad_signatures"] == 0 and again["skipped"] == ["v1"]
    assert env.sig("dst", hints[1]).read_bytes() == good
    ok(env.cli("repo", "check", "dst"))
    _, _, pub = keys[1]
    ok(env.cli("model", "verify", "dst", "m", "--tag", "v1", "--public-key", pub))
    text = ok(env.cli("model", "copy", "src", "m", "dst")).stdout
    assert "0 signatures" in text and "damaged" not in text
