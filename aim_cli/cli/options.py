"""What the commands share besides rendering: the options several of them take, and what a
command reads when it runs (the root group's --config; aim_cli.api, imported only then so that
``aim_cli --help`` stays fast)."""

from __future__ import annotations

import os

import click

from aim_cli.defaults import DEFAULT_JOBS, DEFAULT_S3_JOBS

jobs_option = click.option(
    "--jobs",
    "-j",
    type=click.IntRange(1, 256),
    default=None,
    help=f"Parallel transfers at most [default: {DEFAULT_JOBS} (a local push: the CPUs + 2, at most "
    f"{DEFAULT_JOBS}); S3: {DEFAULT_S3_JOBS}, adapting to the link].",
)
quiet_option = click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
json_option = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")


def patterns_option(f):
    """--include/--exclude PATTERN, repeatable (aim_cli/util/patterns.py: huggingface_hub's semantics)."""
    f = click.option(
        "--exclude",
        "exclude",
        multiple=True,
        metavar="PATTERN",
        help="Leave out the files matching PATTERN (repeatable; as --include).",
    )(f)
    return click.option(
        "--include",
        "include",
        multiple=True,
        metavar="PATTERN",
        help="Only the files matching PATTERN (repeatable): fnmatch on the path, '*' also "
        "matches '/', 'dir/' is everything under dir.",
    )(f)


def api():
    """aim_cli.api, imported when a command runs rather than when the CLI starts. Its names load
    their modules on first use: ``api().list_models`` imports aim_cli.api.versions and what it
    needs, not the pull pipeline, push or signing (docs/design.md §13)."""
    from aim_cli import api

    return api


def transfer_api():
    """aim_cli.api for a command that moves or reads chunks (push, pull, copy, verify, check,
    optimize): the process first keeps freed chunk buffers for reuse (util/allocator.py), a
    setting for the whole process that the command line makes and the library leaves alone."""
    from aim_cli.util.allocator import keep_freed_memory

    keep_freed_memory()
    # numpy (byte grouping, deltas) starts OpenBLAS's thread pool when it loads, ~0.1 s of CPU
    # for threads that aim_cli never uses (it does no linear algebra); the user's value stands.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    return api()


def config():
    """The root group's --config: the model_repos.yaml to use (None: the api looks for one)."""
    return click.get_current_context().find_root().params.get("config_path")
