"""Shell completion (bash, zsh, fish) through click's own: ``eval "$(_AIM_CLI_COMPLETE=bash_source
aim_cli)"``. Click completes commands and options; the ``shell_complete=`` callbacks below complete
what only aim_cli knows: repository names (model_repos.yaml, no storage reached), model names and
tags (one listing of the repository each, no manifest or summary read).

A completion runs inside the user's shell at every TAB: it never prints (a lookup's warning or
error would land in the middle of the command line) and never hangs the shell (an unreachable S3
endpoint retries for many seconds). A lookup that fails or takes longer than LOOKUP_SECONDS
completes nothing. Like the commands, this module imports aim_cli.api only when a lookup runs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:  # click.shell_completion loads only when a shell asks for completions
    from click.shell_completion import CompletionItem

#: How long a TAB may wait for a repository's listing before it completes nothing.
LOOKUP_SECONDS = 3.0


def _quietly(lookup: Callable[[], Iterable[str]], incomplete: str) -> list[str]:
    """The names ``lookup`` returns that start with ``incomplete``; [] on any failure or after
    LOOKUP_SECONDS. It runs on a daemon thread, so that a stalled request is abandoned at exit."""
    import contextlib
    import io
    import threading

    found: list[list[str]] = []

    def run() -> None:
        try:
            found.append(sorted(name for name in lookup() if name.startswith(incomplete)))
        except Exception:  # no config, unknown repository or model, storage down: nothing to offer
            pass

    # Warnings (a stray key skipped) go to stderr through logging's last resort: swallowed here.
    with contextlib.redirect_stderr(io.StringIO()):
        worker = threading.Thread(target=run, daemon=True)
        worker.start()
        worker.join(LOOKUP_SECONDS)
    return found[0] if found else []


def _config(ctx: click.Context) -> str | None:
    return ctx.find_root().params.get("config_path")


def _typed(ctx: click.Context) -> dict:
    """The values typed so far. Completing an option's value (`--tag <TAB>`), click parses the
    words before it with that option lacking its value, which leaves the arguments unset in
    ctx.params and in ctx.args (pallets/click#2184): parse those again, without the option."""
    if ctx.params.get("model_name") is not None or not ctx.args:
        return ctx.params
    try:
        return ctx.command.make_context(ctx.info_name, list(ctx.args), parent=ctx.parent, resilient_parsing=True).params
    except Exception:
        return ctx.params


def _repo_of(params: dict) -> str | None:
    """The repository the command line names so far (`model copy`'s tags are SRC_REPO's)."""
    return params.get("repo_name") or params.get("src_repo")


def repos(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[str]:
    """The repository names of model_repos.yaml."""
    from aim_cli.cli.options import api

    return _quietly(lambda: api().get_config(_config(ctx)).repos, incomplete)


def models(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[str]:
    """The models of the repository named before."""
    from aim_cli.cli.options import api

    repo = _repo_of(_typed(ctx))
    return _quietly(lambda: api().list_models(repo, config=_config(ctx)), incomplete) if repo else []


def tags(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[str]:
    """The tags of the model named before, in the repository named before."""
    from aim_cli.cli.options import api

    params = _typed(ctx)
    repo, model = _repo_of(params), params.get("model_name")
    if not (repo and model):
        return []
    return _quietly(lambda: api().list_tags(repo, model, config=_config(ctx)), incomplete)


def dirs(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """Directories, completed by the shell itself (an argument without a callback completes nothing)."""
    from click.shell_completion import CompletionItem

    return [CompletionItem(incomplete, type="dir")]


def files(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """Files and directories, completed by the shell itself."""
    from click.shell_completion import CompletionItem

    return [CompletionItem(incomplete, type="file")]
