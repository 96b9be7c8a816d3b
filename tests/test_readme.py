"""The README runs as written (issue 20): every fenced block marked ``<!-- readme-test: run -->``
(an HTML comment, invisible on GitHub) runs in README order, in one temporary directory that is
a fresh clone of this repository's checked-in files, and must exit 0 and print what
``EXPECTED_OUTPUT`` says. A marked block without an entry there, or an entry without its block,
fails the test: a marker cannot get lost unseen.

How a block runs:

- ``bash``: one ``bash -euo pipefail`` script per block, in the clone, the test environment's
  ``bin`` first on PATH (the ``aim_cli`` console script, ``model_signing``, ``python3``), stdin
  empty. ``uv run CMD`` runs CMD there (what ``uv run`` does in a synced checkout).
- ``python``: this Python (``-W error::DeprecationWarning``: an example may not use what is
  deprecated), in the clone.
- Set-up and test commands are not re-run: the lines starting with one of ``NOT_RERUN``.

Stand-ins, each a documented mapping; the README's text is otherwise run as it stands:

- **AWS S3** (``s3://my-company-ai-models/...``): ``AWS_ENDPOINT_URL`` points boto3 at the test's
  moto server (tests/s3_fixtures.py) with its dummy keys; the bucket exists, as the README
  requires of the admin.
- **An NFS mount and system directories** (``/mnt/nfs``, ``/srv``, ``/var/cache``): rewritten
  under the temporary directory's ``root/`` (``ROOTED``), where the mount point and the parent
  directories exist.
- **A git remote**: the clone's ``origin`` is a local bare repository holding the checked-in
  files the examples use (``CHECKED_IN``).
- **What a user brings** (``_user_data``): the model directories the examples push
  (``./checkpoint``, ``./checkpoint_v1``, ``./checkpoint_v2``), and in the team's bucket the models
  pushed before (``llama`` v1 and v2, ``resnet50`` v1.0). The placeholders ``<64-hex digest>`` and
  ``<digest>`` stand for ``resnet50`` v1.0's manifest digest, which the user copies from
  ``model info``.

``scripts/demo.sh`` makes and pushes its own model (two versions of 24 MiB): about 2 s, so it runs
as it is. The whole test takes about 17 s on one core.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import boto3

from tests.helpers import base_env, describe, write_model

README = Path(__file__).resolve().parents[1] / "README.md"
REPO_ROOT = README.parent
MARKER = "<!-- readme-test: run -->"
#: The checked-in files the marked examples use (the clone holds these).
CHECKED_IN = ("model_repos.yaml", "scripts/demo.sh")
#: Set-up and test commands: not re-run by the test.
NOT_RERUN = ("pip install", "uv tool install", "uv sync", "uv run pytest")
#: Absolute directories of the user's machine, rooted in the test's temporary directory.
ROOTED = ("mnt/nfs", "srv", "var/cache")
BUCKET = "my-company-ai-models"
BIN = Path(sys.executable).parent

#: What each marked block prints (stdout and stderr together), keyed by a text unique to the block.
EXPECTED_OUTPUT: dict[str, tuple[str, ...]] = {
    "uv tool install": ("Usage: aim_cli",),
    "scripts/demo.sh": (
        "identical: demo-work/pulled == demo-work/model_v1",
        "identical: demo-work/pulled == demo-work/model_v2",
        "intact",
    ),
    "aim_cli info": ("Usage: aim_cli", "model_repos.yaml"),
    "repo create my-repo": (
        "created repository 'my-repo'",
        "already initialised",
        "Add vision team model repo",
    ),
    "./checkpoint_v1": ("pushed resnet50-finetuned:v1.0", "pushed resnet50-finetuned:v2.0"),
    "--exclude 'tokenizer/'": ("config.json", "dry run: resnet50-finetuned:v2.1", "nothing written"),
    "aim_cli model list team-vision-repo": (
        "resnet50-finetuned",
        "pulled resnet50-finetuned:v1.0",
        "pulled resnet50-finetuned:v2.0 (newest)",
    ),
    "repo optimize team-vision-repo --dry-run": (
        "deleted resnet50-finetuned:v1.0",
        "deleted model resnet50-finetuned",
        "team-vision-repo: would re-encode",
    ),
    "--include '*.safetensors'": ("pulled llama:v2",),
    "aim.plan_pull": ("True 2 [] [] []",),
    "# What exactly is this version?": ("model.safetensors", "matches resnet50:v1.0", "intact"),
    "openssl ecparam": ("signed resnet50:v1.0", "verified", "Verification succeeded"),
    "export AIM_CACHE_DIR": ("pulled resnet50:v1.0",),
}


@dataclass
class Block:
    line: int  # of the opening fence, 1-based
    lang: str
    text: str


def marked_blocks(readme: str) -> list[Block]:
    """The fenced blocks whose opening fence follows the marker line."""
    lines = readme.splitlines()
    blocks, i = [], 0
    while i < len(lines):
        fence = re.fullmatch(r"```(\w*)", lines[i])
        if fence is None:
            i += 1
            continue
        end = lines.index("```", i + 1)
        if i > 0 and lines[i - 1].strip() == MARKER:
            blocks.append(Block(i + 1, fence.group(1), "\n".join(lines[i + 1 : end]) + "\n"))
        i = end + 1
    return blocks


def _without_setup_commands(script: str) -> str:
    return "".join(line for line in script.splitlines(keepends=True) if not line.lstrip().startswith(NOT_RERUN))


def _stand_ins(text: str, root: Path, digest: str) -> str:
    for rooted in ROOTED:
        text = re.sub(rf"(?<![\w./])/{re.escape(rooted)}/", f"{root}/{rooted}/", text)
    return text.replace("<64-hex digest>", digest).replace("<digest>", digest)


#: ``uv run CMD`` in a synced checkout runs CMD with the environment on PATH.
BASH_PRELUDE = 'uv() { [ "$1" = run ] || { echo "uv $1: not run by the README test" >&2; return 1; }; shift; "$@"; }\n'


def _run_block(lang: str, script: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    if lang == "bash":
        argv = ["bash", "-euo", "pipefail", "-c", BASH_PRELUDE + script]
    else:
        assert lang == "python", f"a marked block must be bash or python, not {lang!r}"
        argv = [sys.executable, "-W", "error::DeprecationWarning", "-c", script]
    return subprocess.run(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)


def _fresh_clone(tmp: Path) -> Path:
    """A clone of a bare repository holding CHECKED_IN: the user's checkout, with a remote."""
    env = _git_env()
    seed = tmp / "seed"
    for rel in CHECKED_IN:
        dst = seed / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_bytes((REPO_ROOT / rel).read_bytes())
        dst.chmod((REPO_ROOT / rel).stat().st_mode)
    for argv in (["init", "-q", "-b", "main"], ["add", "."], ["commit", "-q", "-m", "checked-in files"]):
        subprocess.run(["git", *argv], cwd=seed, env=env, check=True)
    subprocess.run(["git", "clone", "-q", "--bare", str(seed), str(tmp / "origin.git")], env=env, check=True)
    subprocess.run(["git", "clone", "-q", str(tmp / "origin.git"), str(tmp / "aim_cli")], env=env, check=True)
    return tmp / "aim_cli"


def _git_env() -> dict[str, str]:
    who = {"GIT_AUTHOR_NAME": "Ada", "GIT_AUTHOR_EMAIL": "ada@example.com"}
    who.update(GIT_COMMITTER_NAME="Ada", GIT_COMMITTER_EMAIL="ada@example.com")
    # A developer's git configuration (commit signing, hooks) stays out of the test.
    return base_env(GIT_CONFIG_GLOBAL=os.devnull, GIT_CONFIG_NOSYSTEM="1", **who)


def _user_data(clone: Path, tmp: Path, endpoint: str) -> str:
    """The model directories the examples push, and the earlier models of the team's bucket
    (which exists); returns resnet50 v1.0's manifest digest."""
    import aim_cli.api as aim

    def model(root: Path, seed: int) -> Path:
        weights = bytes((seed * 131 + i * 7) % 251 for i in range(64 * 1024))
        return write_model(
            root,
            {
                "model.safetensors": weights,
                "config.json": b'{"layers": 2}\n',
                "tokenizer/tokenizer.json": b'{"vocab": {}}\n',
            },
        )

    for name, seed in (("checkpoint", 1), ("checkpoint_v1", 2), ("checkpoint_v2", 3)):
        model(clone / name, seed)
    for root in ROOTED:
        (tmp / "root" / root).mkdir(parents=True)

    config = tmp / "team.yaml"
    config.write_text(f'repos:\n  team: {{type: s3, path: "s3://{BUCKET}/vision", endpoint_url: "{endpoint}"}}\n')
    for tag, seed in (("v1", 4), ("v2", 5)):
        llama = model(tmp / f"llama-{tag}", seed)
        write_model(llama, {"onnx/model.onnx": b"onnx" * 100, "pytorch_model.bin": b"bin" * 100})
        aim.push("team", "llama", llama, tag=tag, config=config)
    return aim.push("team", "resnet50", model(tmp / "resnet50", 6), tag="v1.0", config=config).digest


def _empty_bucket(endpoint: str) -> None:
    bucket = boto3.resource("s3", endpoint_url=endpoint).Bucket(BUCKET)
    bucket.objects.all().delete()
    bucket.delete()


def test_every_marked_block_of_the_readme_runs_in_order(tmp_path, moto_endpoint):
    blocks = marked_blocks(README.read_text())
    keys = {key: [b.line for b in blocks if key in b.text] for key in EXPECTED_OUTPUT}
    assert all(len(lines) == 1 for lines in keys.values()), f"each key must name one marked block: {keys}"
    unexpected = [b.line for b in blocks if not any(key in b.text for key in EXPECTED_OUTPUT)]
    assert not unexpected, f"marked blocks at README lines {unexpected} have no EXPECTED_OUTPUT entry"

    clone = _fresh_clone(tmp_path)
    env = _git_env()
    env.update(PATH=f"{BIN}{os.pathsep}{env['PATH']}", AWS_ENDPOINT_URL=moto_endpoint)
    boto3.client("s3", endpoint_url=moto_endpoint).create_bucket(Bucket=BUCKET)
    try:
        digest = _user_data(clone, tmp_path, moto_endpoint)
        for block in blocks:
            expected = next(out for key, out in EXPECTED_OUTPUT.items() if key in block.text)
            script = _stand_ins(_without_setup_commands(block.text), tmp_path / "root", digest)
            res = _run_block(block.lang, script, clone, env)
            where = f"README.md line {block.line}, run as:\n{script}\n{describe(res)}"
            assert res.returncode == 0, where
            assert "Traceback" not in res.stderr, where
            for needle in expected:
                assert needle in res.stdout + res.stderr, f"{needle!r} not printed; {where}"
    finally:
        _empty_bucket(moto_endpoint)


def test_the_marker_finds_blocks_and_the_stand_ins_map_paths(tmp_path):
    readme = f"x\n{MARKER}\n```bash\naim_cli info\n```\n```bash\nnot marked\n```\n{MARKER}\n```python\nprint(1)\n```\n"
    assert [(b.line, b.lang, b.text) for b in marked_blocks(readme)] == [
        (3, "bash", "aim_cli info\n"),
        (10, "python", "print(1)\n"),
    ]
    script = "pip install uv   # x\nuv sync\naim_cli pull r m /srv/models/x --digest <digest>\nuv run pytest\n"
    assert _stand_ins(_without_setup_commands(script), tmp_path, "d" * 64) == (
        f"aim_cli pull r m {tmp_path}/srv/models/x --digest {'d' * 64}\n"
    )
    assert _stand_ins("s3://b/srv/x ./srv/y", tmp_path, "") == "s3://b/srv/x ./srv/y"
