"""Shell completion (issue 20, item 8): the console script run as a shell runs it at a TAB, with
click's completion variables, against a local repository made in a temporary directory."""

from __future__ import annotations

import pytest

import aim_cli.api as aim
from tests.helpers import base_env, describe, run, write_model


@pytest.fixture(scope="module")
def team(tmp_path_factory):
    """A config with repositories `r` (models m1: v1, v2, m2: base and hf/m1: ns) and `other`; a
    cwd without a config of its own."""
    root = tmp_path_factory.mktemp("completion")
    config = root / "model_repos.yaml"
    config.write_text("repos: {}\n")
    aim.create_repo("r", "local", str(root / "store"), config=config)
    aim.create_repo("other", "local", str(root / "store2"), config=config)
    source = write_model(root / "src", {"a.bin": b"weights"})
    for model, tag in (("m1", "v1"), ("m1", "v2"), ("m2", "base"), ("hf/m1", "ns")):
        aim.push("r", model, source, tag=tag, config=config)
    (root / "elsewhere").mkdir()
    return root


def _complete(team, line: str, shell: str = "bash") -> list[str]:
    """What ``aim_cli --config CFG`` + ``line`` completes (the last word is the incomplete one),
    as (type, value) lines; the shell is told nothing on stderr."""
    words = ["aim_cli", "--config", str(team / "model_repos.yaml"), *line.split(" ")]
    env = base_env(_AIM_CLI_COMPLETE=f"{shell}_complete", COMP_WORDS=" ".join(words), COMP_CWORD=str(len(words) - 1))
    res = run([], cwd=team / "elsewhere", env=env)
    assert res.returncode == 0 and res.stderr == "", describe(res)
    return [line for line in res.stdout.splitlines() if line]


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("mo", ["plain,model"]),  # commands
        ("model pull --ta", ["plain,--tag"]),  # options
        ("model pull ", ["plain,other", "plain,r"]),  # repositories, from model_repos.yaml
        ("model pull r ", ["plain,hf/m1", "plain,m1", "plain,m2"]),  # models, from the repository
        ("model pull r hf", ["plain,hf/m1"]),  # namespaced ones by their full name
        ("model info r hf/m1 --tag ", ["plain,ns"]),
        ("model pull r m1 dest --tag ", ["plain,v1", "plain,v2"]),  # tags (after the arguments: click#2184)
        ("model diff r m1 v1 v", ["plain,v1", "plain,v2"]),
        ("model copy r m2 other -t ", ["plain,base"]),  # SRC_REPO's tags
        ("model verify r m1 -t v2", ["plain,v2"]),
        ("repo delete o", ["plain,other"]),
        ("model pull r m1 de", ["dir,de"]),  # DEST: the shell completes directories
        # A failing lookup completes nothing, and says nothing.
        ("model pull nope ", []),
        ("model pull r nope x --tag ", []),
    ],
)
def test_bash_completes_commands_options_and_names(team, line, expected):
    assert _complete(team, line) == expected


def test_a_damaged_repository_completes_its_tags_without_a_warning(team):
    stray = team / "store" / "models" / "m2" / "versions" / "junk.txt"
    stray.write_bytes(b"")  # a listing warns about it on stderr; a completion must not
    try:
        assert _complete(team, "model info r m2 --tag ") == ["plain,base"]
    finally:
        stray.unlink()


def test_zsh_completes_tags_with_its_own_format(team):
    assert _complete(team, "model pull r m1 d --tag v", shell="zsh") == ["plain", "v1", "_", "plain", "v2", "_"]


@pytest.mark.parametrize(
    ("shell", "needles"),
    [
        ("zsh", ["#compdef aim_cli", "_AIM_CLI_COMPLETE=zsh_complete", "compdef _aim_cli_completion aim_cli"]),
        ("fish", ["_AIM_CLI_COMPLETE=fish_complete", "complete --no-files --command aim_cli"]),
    ],
)
def test_the_shell_scripts_the_readme_installs(tmp_path, shell, needles):
    res = run([], cwd=tmp_path, env=base_env(_AIM_CLI_COMPLETE=f"{shell}_source"))
    assert res.returncode == 0 and res.stderr == "", describe(res)
    assert all(needle in res.stdout for needle in needles), res.stdout
