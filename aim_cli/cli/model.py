"""The ``model`` group: push, pull, list, versions, delete-version, delete, diff and copy. Its
audits (info, verify) come from audit.py, its signatures (sign, export-signature) from
signatures.py, its aliases (``model alias ...``) from alias.py."""

from __future__ import annotations

import os
import sys
from dataclasses import asdict

import click

from aim_cli.cli import alias, audit, completion, signatures
from aim_cli.cli.options import (
    api,
    config,
    jobs_option,
    json_option,
    patterns_option,
    quiet_option,
    transfer_api,
)
from aim_cli.cli.render import (
    digest_line,
    out,
    out_json,
    plural,
    short_digest,
    show_copy,
    show_diff,
    show_left_out,
    show_pull_plan,
    show_push_plan,
    size,
)
from aim_cli.errors import UsageError


@click.group()
def model():
    """Push, pull, list and delete models and their versions."""


@model.command("push")
@click.argument("repo_name", metavar="REPO", shell_complete=completion.repos)
@click.argument("model_name", metavar="MODEL", shell_complete=completion.models)
@click.argument("directory", metavar="DIR", shell_complete=completion.dirs)
@click.option("--tag", "-t", required=True, help="Version tag (immutable).")
@click.option("--message", "-m", default="", help="A note stored with the version.")
@click.option(
    "--follow-symlinks", is_flag=True, help="Store the content of symlinks to files (e.g. a Hugging Face snapshot)."
)
@jobs_option
@quiet_option
@json_option
@click.option(
    "--delta/--no-delta",
    default=None,
    help="Format 3: store the newest version before this one as deltas against it now "
    "(default: leave it whole, `repo optimize` delta-codes the history later).",
)
@click.option(
    "--base",
    metavar="TAG|MODEL:TAG",
    help="Format 3: pair with this version for deltas: a TAG of the model (stored as deltas against "
    "the pushed one), or MODEL:TAG of another model, e.g. a fine-tune's base model (the pushed one is "
    "stored as deltas against it).",
)
@click.option(
    "--reference",
    "references",
    multiple=True,
    metavar="DIR",
    help="Format 3: a local copy of the paired version to read its chunks from (repeatable).",
)
@patterns_option
@click.option(
    "--no-default-ignores",
    is_flag=True,
    help="Also push .git/, .cache/huggingface/, __pycache__/ and .DS_Store (left out by default, as hf upload does).",
)
@click.option("--dry-run", is_flag=True, help="Print the files and an estimate of the new bytes; write nothing.")
def model_push(
    repo_name,
    model_name,
    directory,
    tag,
    message,
    follow_symlinks,
    jobs,
    quiet,
    as_json,
    delta,
    base,
    references,
    include,
    exclude,
    no_default_ignores,
    dry_run,
):
    """Push directory DIR as version --tag of MODEL (creating the model if needed)."""
    from aim_cli.progress import make_progress

    if delta is False and (base or references):
        raise UsageError(f"--no-delta contradicts {'--base' if base else '--reference'}", "drop one of them")
    common = dict(
        tag=tag,
        message=message,
        jobs=jobs,
        follow_symlinks=follow_symlinks,
        config=config(),
        progress=make_progress(quiet or as_json),
        delta=bool(delta),
        base=base,
        references=references,
        include=include,
        exclude=exclude,
        default_ignores=not no_default_ignores,
    )
    if dry_run:
        plan = transfer_api().push(repo_name, model_name, directory, dry_run=True, **common)
        show_left_out(plan)
        show_push_plan(plan, as_json)
        return
    r = transfer_api().push(repo_name, model_name, directory, **common)
    show_left_out(r)
    if as_json:
        out_json(asdict(r) | {"dedup_ratio": r.dedup_ratio})
        return
    if r.already_pushed:
        out(f"already pushed {r.model}:{r.tag} with identical content, nothing written")
        digest_line(r.digest)
        return
    out(
        f"pushed {r.model}:{r.tag}: {plural(r.files, 'file')}, {size(r.total_size)}; {size(r.new_bytes)} new "
        f"({r.dedup_ratio:.1%} deduplicated), {size(r.new_stored_bytes)} stored; {r.elapsed:.2f}s"
    )
    digest_line(r.digest)
    if r.delta_base:
        out(f"paired with {r.delta_base} for deltas: {plural(r.reencoded, 'chunk')} stored as deltas")


@model.command("pull")
@click.argument("repo_name", metavar="REPO", shell_complete=completion.repos)
@click.argument("model_name", metavar="MODEL", shell_complete=completion.models)
@click.argument("dest", metavar="DEST", shell_complete=completion.dirs)
@click.option(
    "--tag", "-t", help="Version to pull, a tag or an alias (default: the newest).", shell_complete=completion.tags
)
@click.option("--digest", help="Refuse unless the version's manifest digest is this (64 hex).")
@click.option(
    "--reference",
    "references",
    multiple=True,
    metavar="DIR",
    help="Local directory to take verified chunks from (repeatable).",
)
@click.option("--cache-dir", envvar="AIM_CACHE_DIR", metavar="DIR", help="Shared chunk cache (off by default).")
@patterns_option
@click.option(
    "--delete", is_flag=True, help="Remove regular files of DEST (within the patterns) that the version does not hold."
)
@click.option("--dry-run", is_flag=True, help="Print the plan; create or change nothing in DEST.")
@click.option(
    "--verify-existing",
    is_flag=True,
    help="Read every file already in DEST again, trusting nothing of DEST's index of what pull wrote.",
)
@click.option(
    "--require-signature",
    metavar="KEY.pub",
    help="Refuse (exit 5, DEST untouched) unless a signature by this EC public key covers the version, and, for "
    "an alias, the key signed its latest entry (not expired, not older than one seen before).",
)
@click.option(
    "--alias",
    "alias_name",
    metavar="NAME",
    help="Version to pull: this alias, never a tag. A signed pull without --tag takes the alias 'latest'.",
)
@jobs_option
@quiet_option
@json_option
def model_pull(
    repo_name,
    model_name,
    dest,
    tag,
    digest,
    references,
    cache_dir,
    include,
    exclude,
    delete,
    dry_run,
    verify_existing,
    require_signature,
    alias_name,
    jobs,
    quiet,
    as_json,
):
    """Pull a version of MODEL into DEST, verified; rerun to resume."""
    from aim_cli.progress import make_progress

    common = dict(
        tag=tag,
        digest=digest,
        jobs=jobs,
        references=references,
        config=config(),
        progress=make_progress(quiet or as_json),
        include=include,
        exclude=exclude,
        delete=delete,
        require_signature=require_signature,
        alias=alias_name,
        verify_existing=verify_existing,
    )
    if dry_run:
        plan = transfer_api().plan_pull(repo_name, model_name, dest, cache_dir=cache_dir or None, **common)
        show_pull_plan(plan, dest, as_json)
        return
    r = transfer_api().pull(repo_name, model_name, dest, cache_dir=cache_dir or None, **common)
    if as_json:
        out_json(asdict(r) | {"dest": os.path.abspath(dest)})
        return
    from aim_cli.util.fs import display_path

    newest = " (newest)" if r.newest else ""
    cached = f", {size(r.cached_bytes)} from cache" if r.cached_bytes else ""
    out(
        f"pulled {r.model}:{r.tag}{newest} into {display_path(dest)}: {plural(r.files, 'file')}, "
        f"{size(r.total_size)}; {r.elapsed:.2f}s"
    )
    out(
        f"fetched {size(r.fetched_bytes)} stored ({size(r.fetched_raw_bytes)} of chunks), "
        f"reused {size(r.reused_bytes)}{cached}"
    )
    if delete:
        out(f"deleted {plural(len(r.deleted), 'file')} the version does not hold")


@model.command("list")
@click.argument("repo_name", metavar="REPO", shell_complete=completion.repos)
@json_option
def model_list(repo_name, as_json):
    """List the models of REPO: plain ones first, then each namespace's (org/model) under `org/`."""
    from aim_cli.names import split_model

    models = api().list_models(repo_name, config=config())
    if as_json:
        out_json(models)
        return
    if not models:
        out(f"no models in {repo_name!r}")
    groups: dict[str | None, list[str]] = {}
    for name in models:
        groups.setdefault(split_model(name)[0], []).append(name)
    for name in groups.pop(None, []):
        out(name)
    for namespace, names in sorted(groups.items()):
        # The full names, indented under a header that no model name can be: each line is
        # what the other commands take.
        out(f"{namespace}/")
        for name in names:
            out(f"  {name}")


@model.command("versions")
@click.argument("repo_name", metavar="REPO", shell_complete=completion.repos)
@click.argument("model_name", metavar="MODEL", shell_complete=completion.models)
@json_option
def model_versions(repo_name, model_name, as_json):
    """List the versions of MODEL, oldest first: tag, created, size, stored size, what its push
    added to storage (NEW), files, digest, message.

    Read from each version's small summary, not from its manifest."""
    from aim_cli.util.quoting import printable

    versions = api().list_versions(repo_name, model_name, config=config())
    if as_json:
        out_json([asdict(v) for v in versions])
        return
    # The message came from storage: one printable line, whatever it holds.
    rows = [
        (
            v.tag,
            v.created_at[:19].replace("T", " "),
            size(v.total_size),
            "-" if v.stored_size is None else size(v.stored_size),
            "-" if v.new_stored_size is None else size(v.new_stored_size),
            plural(v.files, "file"),
            short_digest(v.digest),
            printable(v.message),
        )
        for v in versions
    ]
    header = ("TAG", "CREATED (UTC)", "SIZE", "STORED", "NEW", "FILES", "DIGEST", "MESSAGE")
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]
    for row in (header, *rows):
        out("  ".join(str(x).ljust(w) for x, w in zip(row, widths, strict=True)).rstrip())


@model.command("delete-version")
@click.argument("repo_name", metavar="REPO", shell_complete=completion.repos)
@click.argument("model_name", metavar="MODEL", shell_complete=completion.models)
@click.option(
    "--tag",
    "-t",
    "tags",
    required=True,
    multiple=True,
    help="Version to delete (one per run; a tag, not an alias).",
    shell_complete=completion.tags,
)
@click.option("--force", is_flag=True, help="Also unset the aliases pointing at it (recorded in their history).")
@json_option
def model_delete_version(repo_name, model_name, tags, force, as_json):
    """Delete one version of MODEL (its manifest; shared blobs stay until `repo gc`). A version
    an alias points at is refused (exit 4) unless --force.

    --tag may also name a stray file that `repo check` reports, exactly as it shows it."""
    if len(tags) > 1:  # click keeps the last of a repeated option: it would delete only that one
        raise UsageError(
            f"--tag given {len(tags)} times ({', '.join(map(repr, tags))}); delete-version deletes one version",
            "run it once per version",
        )
    tag = tags[0]
    r = api().delete_versions(repo_name, model_name, [tag], force=force, config=config())
    if as_json:
        out_json(asdict(r))
        return
    unset = f"; unset {plural(len(r.aliases_removed), 'alias', 'aliases')} {', '.join(r.aliases_removed)}"
    out(f"deleted {r.model}:{tag}{unset if r.aliases_removed else ''}")
    _show_reclaimable(r, repo_name)


@model.command("delete")
@click.argument("repo_name", metavar="REPO", shell_complete=completion.repos)
@click.argument("model_name", metavar="MODEL", shell_complete=completion.models)
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@json_option
def model_delete(repo_name, model_name, yes, as_json):
    """Delete MODEL and all its versions."""
    if not yes:
        if not sys.stdin.isatty():
            raise UsageError(
                f"refusing to delete model {model_name!r} without confirmation", "pass --yes to delete it from a script"
            )
        click.confirm(f"Delete model {model_name!r} and ALL its versions from {repo_name!r}?", abort=True)
    r = api().delete_versions(repo_name, model_name, config=config())
    if as_json:
        out_json(asdict(r))
        return
    out(f"deleted model {model_name} ({plural(len(r.tags), 'version')})")
    _show_reclaimable(r, repo_name)


def _show_reclaimable(r, repo_name: str) -> None:
    """What the delete left for gc: one line, and one more for the blobs kept as bases."""
    it = "it" if r.reclaimable_blobs == 1 else "them"
    out(
        f"reclaimable: {plural(r.reclaimable_blobs, 'blob')}, {size(r.reclaimable_stored_bytes)} stored "
        f"({size(r.reclaimable_bytes)} of chunks)"
        + (f"; `aim_cli repo gc {repo_name}` frees {it}" if r.reclaimable_blobs else "")
    )
    if r.kept_as_base_blobs:
        out(
            f"kept: {plural(r.kept_as_base_blobs, 'blob')} ({size(r.kept_as_base_bytes)} of chunks) "
            f"as bases of other versions' deltas"
        )


# -- comparing and copying versions (aim_cli/diff.py, aim_cli/copy.py) -------------------------------
@model.command("diff")
@click.argument("repo_name", metavar="REPO", shell_complete=completion.repos)
@click.argument("model_name", metavar="MODEL", shell_complete=completion.models)
@click.argument("tag_a", metavar="TAG_A", shell_complete=completion.tags)
@click.argument("tag_b", metavar="TAG_B", shell_complete=completion.tags)
@patterns_option
@json_option
def model_diff(repo_name, model_name, tag_a, tag_b, include, exclude, as_json):
    """Show the files TAG_B added, removed and changed since TAG_A of MODEL, and what a pull of
    TAG_B into a directory holding TAG_A fetches. Reads the two manifests only; exit 0 whether
    or not they differ."""
    r = api().diff(repo_name, model_name, tag_a, tag_b, include=include, exclude=exclude, config=config())
    if as_json:
        out_json(asdict(r) | {"identical": r.identical})
        return
    show_diff(r)


@model.command("copy")
@click.argument("src_repo", metavar="SRC_REPO", shell_complete=completion.repos)
@click.argument("model_name", metavar="MODEL", shell_complete=completion.models)
@click.argument("dst_repo", metavar="DST_REPO", shell_complete=completion.repos)
@click.option(
    "--tag",
    "-t",
    "tags",
    multiple=True,
    help="Version to copy (repeatable; default: every version).",
    shell_complete=completion.tags,
)
@click.option("--dry-run", is_flag=True, help="Print what would be copied; write nothing.")
@click.option(
    "--delta",
    is_flag=True,
    help="Format 3 DST_REPO: after each version, re-encode the one before it there as deltas (as push does).",
)
@jobs_option
@quiet_option
@json_option
def model_copy(src_repo, model_name, dst_repo, tags, dry_run, delta, jobs, quiet, as_json):
    """Copy versions of MODEL from SRC_REPO into DST_REPO with the same manifest digests,
    transferring only the blobs DST_REPO lacks; rerun to resume. A tag DST_REPO holds with
    another digest is a conflict: the others are copied, then exit 4."""
    from aim_cli.progress import make_progress

    r = transfer_api().copy(
        src_repo,
        model_name,
        dst_repo,
        tags=tags or None,
        jobs=jobs,
        dry_run=dry_run,
        delta=delta,
        config=config(),
        progress=make_progress(quiet or as_json or dry_run),
    )
    for v in r.versions:  # damaged signatures are left out, never spread: say so on stderr
        for hint, why in v.bad_signatures:
            click.echo(f"warning: signature {hint} of {r.model}:{v.tag} in {r.src!r} not copied: {why}", err=True)
    if as_json:
        out_json(asdict(r) | {"reencoded": r.reencoded})
    else:
        show_copy(r)
    if r.conflicts:
        from aim_cli.errors import TagExistsError

        held = {v.tag: v for v in r.versions}
        named = ", ".join(
            f"{r.model}:{t} (there {held[t].dst_digest}, in {r.src!r} {held[t].digest})" for t in r.conflicts
        )
        raise TagExistsError(
            f"{plural(len(r.conflicts), 'version')} {'exists' if len(r.conflicts) == 1 else 'exist'} in {r.dst!r} "
            f"with another digest: {named}",
            "versions are immutable: the other versions were copied; to replace one, delete it "
            f"there (`aim_cli model delete-version {r.dst} {r.model} --tag TAG`) and copy again",
        )


# The commands on a version's integrity and signatures live with their kind.
for _command in (
    audit.model_info,
    audit.model_verify,
    signatures.model_sign,
    signatures.model_export_signature,
    alias.alias,
):
    model.add_command(_command)
