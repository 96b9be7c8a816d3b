"""The aim_cli command line: the root group, its global options and the entry point ``main()``.
Each command parses, calls one function of aim_cli.api and renders; they live by group beside
this module (repo.py, model.py, audit.py, signatures.py, cache.py).

Results go to stdout (``--json`` where a script may read them); progress and errors to stderr.
Every AimError becomes one line, ``error: <what went wrong>; <what to do>``, and its exit code;
``-v`` adds the traceback. Heavy modules (botocore, pyfastcdc, rich) are imported inside the
commands that need them: ``aim_cli --help`` stays fast.
"""

from __future__ import annotations

import gc
import os
import sys

import click

from aim_cli import __version__
from aim_cli.cli.alias import show_resolutions
from aim_cli.cli.cache import cache
from aim_cli.cli.model import model
from aim_cli.cli.render import StdoutClosed
from aim_cli.cli.repo import info, repo
from aim_cli.errors import AimError

_state = {"verbose": False}


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    metavar="PATH",
    help="model_repos.yaml to use (default: $AIM_CONFIG, else the first one in this directory or its parents).",
)
@click.option("-v", "--verbose", is_flag=True, help="Show tracebacks on errors.")
@click.version_option(__version__, prog_name="aim_cli")
def cli(config_path, verbose):
    """aim_cli: AI model weights on your own storage (local/NFS directory or S3),
    deduplicated by content-defined chunks and verified by BLAKE3 end to end."""
    _state["verbose"] = verbose
    show_resolutions()  # a command reading a version through an alias says which one, on stderr


for _command in (info, repo, model, cache):
    cli.add_command(_command)


# -- entry point -------------------------------------------------------------------------------------
def _fail(message: str, code: int) -> None:
    if _state["verbose"]:
        import traceback  # only -v prints one: linecache, tokenize and textwrap load with it

        traceback.print_exc()
    click.echo(message, err=True)
    sys.exit(code)


def _discard_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # no file descriptor behind sys.stdout (a test's capture): nothing to flush
        pass


def main(argv=None) -> None:
    """Run one command and exit (SystemExit, always). ``argv`` None (the console script, ``python
    -m aim_cli``): the process's own arguments, and the process ends with the command."""
    try:
        _run(argv)
    finally:
        if argv is None:
            # The interpreter's exit collects garbage over every object still alive, several
            # times, and finds none worth it: 140 ms of an S3 command's CPU went there, over
            # botocore's modules and data (docs/design.md §13). Frozen objects are only left out
            # of those passes: atexit handlers still run, and what the modules hold is released
            # as before, but for reference cycles, which the OS reclaims (aim_cli closes and
            # syncs every file it writes itself).
            gc.freeze()


def _run(argv) -> None:
    try:
        cli.main(args=argv, prog_name="aim_cli", standalone_mode=False)
    except click.exceptions.Abort as e:
        # click turns Ctrl-C into Abort; a declined confirmation is an Abort too.
        if isinstance(e.__context__, KeyboardInterrupt):
            _fail("interrupted; rerun the same command to resume: what was already transferred is kept", 130)
        _fail("error: aborted: the confirmation was declined, nothing was changed", 2)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except AimError as e:
        message = f"error: {e.message}"
        if e.hint:
            message += f"; {e.hint}"
        _fail(message, e.exit_code)
    except OSError as e:  # a filesystem refusal no code path above turned into a StorageError
        where = f" ({e.filename})" if e.filename else ""
        _fail(f"error: {e.strerror or e}{where}; check the path, its permissions and the free space", 6)
    except KeyboardInterrupt:
        _fail("interrupted; rerun the same command to resume: what was already transferred is kept", 130)
    except StdoutClosed:
        # As `git log | head -1`: the reader has what it wanted, nothing failed. Python flushes stdout
        # at exit; pointed at devnull, that flush cannot fail again and print "Exception ignored".
        _discard_stdout()
        sys.exit(0)
    except Exception as e:  # a bug: say so, keep it one line unless -v
        _fail(
            f"error: unexpected {type(e).__name__}: {e}; this is a bug in aim_cli, "
            f"please report it with the output of `aim_cli -v ...`",
            1,
        )
    sys.exit(0)
