"""The ``cache`` group: inspect and prune the shared chunk cache of ``model pull --cache-dir``."""

from __future__ import annotations

import os
import sys

import click

from aim_cli.cli import completion
from aim_cli.cli.options import api, json_option
from aim_cli.cli.render import out, out_json, size
from aim_cli.errors import UsageError
from aim_cli.util.sizes import parse_size


@click.group()
def cache():
    """Inspect and prune the shared chunk cache of `model pull --cache-dir`."""


cache_dir_option = click.option(
    "--cache-dir",
    envvar="AIM_CACHE_DIR",
    metavar="DIR",
    shell_complete=completion.dirs,
    help="The chunk cache (default: $AIM_CACHE_DIR).",
)


def _cache_dir(cache_dir: str | None) -> str:
    if not cache_dir:
        raise UsageError("no chunk cache given", "pass --cache-dir DIR or set AIM_CACHE_DIR")
    return cache_dir


@cache.command("info")
@cache_dir_option
@json_option
def cache_info(cache_dir, as_json):
    """Show how many chunks and bytes the cache holds."""
    path = _cache_dir(cache_dir)
    r = api().cache_info(path)
    if as_json:
        out_json({"cache_dir": os.path.abspath(path), "entries": r.entries, "bytes": r.bytes})
        return
    out(f"chunk cache {path}: {r.entries} chunks, {size(r.bytes)}")


@cache.command("prune")
@click.option(
    "--max-size",
    metavar="SIZE",
    help="Keep at most this much (like 10GiB, 500MiB); 0 empties the cache.",
)
@click.option("--all", "everything", is_flag=True, help="Empty the cache (what no --max-size means).")
@click.option("--dry-run", is_flag=True, help="Only print what would be deleted.")
@cache_dir_option
@json_option
def cache_prune(max_size, everything, dry_run, cache_dir, as_json):
    """Delete the least recently used chunks until the cache fits in --max-size; without it
    (or with --all), empty the cache, after asking on a terminal.

    Only a directory that `model pull --cache-dir` made a cache (it holds aim-cache.json) is
    pruned: any other exits 3, a repository exits 2."""
    path = _cache_dir(cache_dir)
    if everything and max_size is not None:
        raise UsageError("--all and --max-size select different things", "pass one of them")
    if max_size is None and not (everything or dry_run):
        _confirm_emptying(path)
    limit = 0 if max_size is None else parse_size(max_size, option="--max-size")
    r = api().cache_prune(path, limit, dry_run=dry_run)
    if as_json:
        out_json({"cache_dir": os.path.abspath(path), "dry_run": dry_run} | r._asdict())
        return
    verb = "would remove" if dry_run else "removed"
    out(f"{verb} {r.removed} chunks ({size(r.freed)}) from {path}; {r.entries} chunks, {size(r.bytes)} left")


def _confirm_emptying(path: str) -> None:
    """A bare `cache prune` empties the cache: a script says so with --all, a person says yes.
    Declining is click's Abort: exit 2, nothing deleted."""
    if not sys.stdin.isatty():
        raise UsageError(
            f"refusing to empty the chunk cache {path} without confirmation",
            "pass --all to empty it, or --max-size SIZE to keep the most recently used chunks",
        )
    click.confirm(f"Delete every chunk of the chunk cache {path}?", abort=True)
