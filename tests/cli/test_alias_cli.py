"""`model alias` through the console script, a few runs (the library tests are
tests/test_aliases.py): the four commands, --json, a read through an alias saying what it
resolved to, and the exit codes of the refusals."""

from __future__ import annotations

import json

from tests.helpers import LOCAL_ONLY, commit_versions, ok, one_line_error, write_model


@LOCAL_ONLY
def test_alias_commands_and_a_pull_through_an_alias(repo, tmp_path):
    commit_versions(repo.repository, "m", ["v1"], chunks=2)
    repo.push("m", write_model(tmp_path / "src", {"a.bin": b"weights" * 100}), "v2")
    set_ = json.loads(
        ok(repo.cli("model", "alias", "set", repo.name, "m", "prod", "--tag", "v2", "-m", "go", "--json")).stdout
    )
    assert set_["changed"] and set_["alias"]["tag"] == "v2" and set_["alias"]["message"] == "go"
    listed = ok(repo.cli("model", "alias", "list", repo.name, "m")).stdout
    assert "prod" in listed and "v2" in listed

    pulled = ok(repo.cli("model", "pull", repo.name, "m", str(tmp_path / "dest"), "--tag", "prod", "--json"))
    assert json.loads(pulled.stdout)["tag"] == "v2"
    assert "alias prod of m: tag v2" in pulled.stderr and len(pulled.stderr.splitlines()) == 1
    assert (tmp_path / "dest" / "a.bin").read_bytes() == b"weights" * 100

    one_line_error(repo.cli("model", "alias", "set", repo.name, "m", "v1", "--tag", "v2"), 4, "is a tag")
    one_line_error(repo.cli("model", "delete-version", repo.name, "m", "--tag", "v2"), 4, "prod")
    forced = json.loads(
        ok(repo.cli("model", "delete-version", repo.name, "m", "--tag", "v2", "--force", "--json")).stdout
    )
    assert forced["aliases_removed"] == ["prod"]
    history = json.loads(ok(repo.cli("model", "alias", "history", repo.name, "m", "prod", "--json")).stdout)
    assert [e["action"] for e in history["entries"]] == ["set", "delete"] and history["problems"] == []


@LOCAL_ONLY
def test_a_damaged_history_is_shown_then_exit_5(repo):
    commit_versions(repo.repository, "m", ["v1", "v2"], chunks=2)
    repo.repository.set_alias("m", "prod", "v1")
    repo.repository.set_alias("m", "prod", "v2")
    repo.repository.backend.delete("models/m/aliases/prod/1.json")
    res = repo.cli("model", "alias", "history", repo.name, "m", "prod")
    assert res.returncode == 5 and "v1 (" in res.stdout and "-> v2" in res.stdout, res
    assert "entries 1 to 1 are missing" in res.stderr and "Traceback" not in res.stderr
    res = repo.cli("model", "alias", "delete", repo.name, "m", "nope")
    assert res.returncode == 3, res
