"""The ``model alias`` group: set, list, history and delete (docs/design.md §2.1). Each command
calls one function of aim_cli.api (api/aliases.py) and renders it; ``show_resolutions`` prints
the line that says which version an alias named, for every command that reads one."""

from __future__ import annotations

import logging
from dataclasses import asdict

import click

from aim_cli.cli import completion
from aim_cli.cli.options import api, config, json_option
from aim_cli.cli.render import digest_line, out, out_json, short_digest


@click.group("alias")
def alias():
    """Movable names of versions (prod, latest), each change recorded."""


def _entry_line(e) -> str:
    from aim_cli.util.quoting import printable

    target = f"{e.tag} ({short_digest(e.digest)})" if e.tag else "(deleted)"
    before = f"{e.previous_tag} ({short_digest(e.previous_digest)})" if e.previous_tag else "unset"
    note = f"  {printable(e.message)}" if e.message else ""
    return f"{e.index:>4}  {e.at[:19].replace('T', ' ')}  {printable(e.by)}  {before} -> {target}{note}"


@alias.command("set")
@click.argument("repo_name", metavar="REPO", shell_complete=completion.repos)
@click.argument("model_name", metavar="MODEL", shell_complete=completion.models)
@click.argument("alias_name", metavar="ALIAS")
@click.option("--tag", "-t", required=True, help="The version the alias names.", shell_complete=completion.tags)
@click.option("--message", "-m", default="", help="Why, recorded in the alias's history.")
@click.option(
    "--sign",
    "sign_key",
    metavar="KEY.pem",
    help="Sign a statement of the entry with this EC private key (pull --require-signature checks it).",
)
@click.option("--expires", metavar="DURATION", help="With --sign: the statement expires after this (30d, 12h, 90m).")
@click.option("--password-env", metavar="VAR", help="Environment variable holding the key's password (else a prompt).")
@json_option
def alias_set(repo_name, model_name, alias_name, tag, message, sign_key, expires, password_env, as_json):
    """Point ALIAS of MODEL at version --tag (and its manifest digest). Exit 4 if ALIAS is a tag,
    or if someone else moved it meanwhile (the message says to what). With --sign, a signed
    statement of the entry is stored beside it (an alias already there signed by the key gets a
    new entry, so a new expiry)."""
    from aim_cli.cli.signatures import key_password

    r = api().alias_set(
        repo_name,
        model_name,
        alias_name,
        tag=tag,
        message=message,
        sign=sign_key,
        password=key_password(sign_key, password_env) if sign_key else None,
        expires=expires,
        config=config(),
    )
    if as_json:
        out_json(asdict(r))
        return
    if r.changed:
        was = f" (was {r.alias.previous_tag})" if r.alias.previous_tag else ""
        out(f"alias {alias_name} of {model_name} -> {tag}{was}; entry {r.alias.index}")
        digest_line(r.alias.digest or "")
    else:
        out(f"alias {alias_name} of {model_name} already points at {tag}, nothing written")
    s = r.statement
    if s is not None:
        until = f"expires {s.expires_at}" if s.expires_at else "no expiry"
        verb = "signed" if s.created else "already signed"
        out(f"{verb} entry {s.index} of {alias_name}: signer {s.signer}, {until}")


@alias.command("list")
@click.argument("repo_name", metavar="REPO", shell_complete=completion.repos)
@click.argument("model_name", metavar="MODEL", shell_complete=completion.models)
@json_option
def alias_list(repo_name, model_name, as_json):
    """List the aliases of MODEL that are set: alias, tag, digest, when and by whom."""
    from aim_cli.util.quoting import printable

    found = api().alias_list(repo_name, model_name, config=config())
    if as_json:
        out_json([asdict(a) for a in found])
        return
    if not found:
        out(f"no aliases of {model_name!r} in {repo_name!r}")
        return
    rows = [(a.alias, a.tag, short_digest(a.digest or ""), a.at[:19].replace("T", " "), printable(a.by)) for a in found]
    header = ("ALIAS", "TAG", "DIGEST", "SET (UTC)", "BY")
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]
    for row in (header, *rows):
        out("  ".join(str(x).ljust(w) for x, w in zip(row, widths, strict=True)).rstrip())


@alias.command("history")
@click.argument("repo_name", metavar="REPO", shell_complete=completion.repos)
@click.argument("model_name", metavar="MODEL", shell_complete=completion.models)
@click.argument("alias_name", metavar="ALIAS")
@click.option("--at", "at", metavar="TIME", help="Only what ALIAS was then: a time, or a date (that whole UTC day).")
@json_option
def alias_history(repo_name, model_name, alias_name, at, as_json):
    """Every change of ALIAS, oldest first: index, when, who, from -> to, message. Exit 5 after
    the listing if the history is damaged (a missing entry, one that lies about its past)."""
    h = api().alias_history(repo_name, model_name, alias_name, at=at, config=config())
    if as_json:
        out_json(asdict(h))
    else:
        for e in h.entries:
            out(_entry_line(e))
        if not h.entries:
            out(f"alias {alias_name} of {model_name} had no value then")
    if h.problems:
        from aim_cli.errors import IntegrityError

        key, why = h.problems[0]
        more = f" (and {len(h.problems) - 1} more)" if len(h.problems) > 1 else ""
        raise IntegrityError(
            f"the history of alias {alias_name!r} is damaged: {key}: {why}{more}",
            f"`aim_cli repo check {repo_name}` lists all damage",
        )


@alias.command("delete")
@click.argument("repo_name", metavar="REPO", shell_complete=completion.repos)
@click.argument("model_name", metavar="MODEL", shell_complete=completion.models)
@click.argument("alias_name", metavar="ALIAS")
@click.option("--message", "-m", default="", help="Why, recorded in the alias's history.")
@json_option
def alias_delete(repo_name, model_name, alias_name, message, as_json):
    """Unset ALIAS of MODEL. Its history stays (`alias history`)."""
    e = api().alias_delete(repo_name, model_name, alias_name, message=message, config=config())
    if as_json:
        out_json(asdict(e))
    else:
        out(f"deleted alias {alias_name} of {model_name} (was {e.previous_tag}); entry {e.index}")


class _Stderr(logging.Handler):
    """Writes a record's message to the stderr click sees when it is emitted."""

    def emit(self, record: logging.LogRecord) -> None:
        click.echo(self.format(record), err=True)


def show_resolutions() -> None:
    """Show, on stderr, each alias a command resolves (repository/aliases.py logs it at INFO)."""
    for name in ("aim_cli.repository.aliases", "aim_cli.signing.alias_pull"):  # the latter: signed aliases
        logger = logging.getLogger(name)
        if not any(isinstance(h, _Stderr) for h in logger.handlers):
            logger.addHandler(_Stderr())
        logger.setLevel(logging.INFO)
