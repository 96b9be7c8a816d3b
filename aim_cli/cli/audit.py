"""The audit commands (aim_cli/audit/): ``model info`` and ``model verify`` read a version,
``repo check`` and ``repo gc`` a whole repository. model.py and repo.py attach them to their
groups. A failed check raises IntegrityError after listing its problems: exit 5."""

from __future__ import annotations

from dataclasses import asdict

import click

from aim_cli.cli import completion
from aim_cli.cli.options import (
    api,
    config,
    jobs_option,
    json_option,
    patterns_option,
    quiet_option,
    transfer_api,
)
from aim_cli.cli.render import digest_line, out, out_json, plural, size
from aim_cli.cli.signatures import verify_signature
from aim_cli.errors import IntegrityError, UsageError


@click.command("info")
@click.argument("repo_name", metavar="REPO", shell_complete=completion.repos)
@click.argument("model_name", metavar="MODEL", shell_complete=completion.models)
@click.option("--tag", "-t", help="Version to show (default: the newest).", shell_complete=completion.tags)
@json_option
def model_info(repo_name, model_name, tag, as_json):
    """Show a version: manifest digest, author, message, each file's size and BLAKE3."""
    v = api().version_details(repo_name, model_name, tag=tag, config=config())
    if as_json:
        out_json(asdict(v))
        return
    out(f"{v.model}:{v.tag}")
    out(f"digest:   {v.digest}")
    from aim_cli.util.quoting import printable

    # Author and message came from storage: escaped (a newline would forge an output line), never cut.
    out(f"created:  {v.created_at} by {printable(v.created_by, len(v.created_by))}")
    out(f"message:  {printable(v.message, len(v.message)) or '-'}")
    out(f"size:     {size(v.total_size)} ({v.total_size} bytes) in {plural(len(v.files), 'file')}")
    missing = f"; {plural(v.missing_blobs, 'blob')} missing (run `aim_cli repo check`)" if v.missing_blobs else ""
    out(f"stored:   {size(v.stored_size)} for {size(v.distinct_size)} of distinct chunks (format {v.format}){missing}")
    for f in v.files:
        out(f"{size(f.size):>11}  {f.blake3}  {f.path}")
    for sig in v.signatures:
        out(f"signed:   by {sig.hint} ({sig.kind}, {sig.method} method)")


@click.command("verify")
@click.argument("repo_name", metavar="REPO", shell_complete=completion.repos)
@click.argument("model_name", metavar="MODEL", shell_complete=completion.models)
@click.option("--tag", "-t", help="Version to verify (default: the newest).", shell_complete=completion.tags)
@click.option("--digest", help="Refuse unless the version's manifest digest is this (64 hex).")
@click.option(
    "--local",
    "local_dir",
    metavar="DIR",
    shell_complete=completion.dirs,
    help="Compare DIR (e.g. a deployment) with the version by file digests, instead of reading blobs.",
)
@click.option(
    "--public-key",
    metavar="KEY.pub",
    shell_complete=completion.files,
    help="Check a signature by this EC public key (PEM) instead: it must cover exactly the version's "
    "files and digests (or those of --local DIR).",
)
@click.option(
    "--certificate-chain",
    "trust_roots",
    multiple=True,
    metavar="ROOTS.pem",
    shell_complete=completion.files,
    help="Check a certificate-method signature whose chain leads to these trusted roots (repeatable).",
)
@patterns_option
@jobs_option
@quiet_option
@json_option
def model_verify(
    repo_name, model_name, tag, digest, local_dir, public_key, trust_roots, include, exclude, jobs, quiet, as_json
):
    """Re-read every blob of a version and check its hash (exit 5 on any problem).
    --include/--exclude select the files --local compares. With --public-key or
    --certificate-chain: check the version's signature instead."""
    from aim_cli.progress import make_progress

    if public_key or trust_roots:
        verify_signature(
            repo_name, model_name, tag, digest, local_dir, public_key, trust_roots, include or exclude, jobs, as_json
        )
        return

    if (include or exclude) and local_dir is None:
        raise UsageError(
            "--include and --exclude select the files of --local DIR",
            "add --local DIR, or drop the patterns to check every blob",
        )
    if local_dir is not None:  # "" too: refused as the empty string, never taken for "no --local"
        _verify_local(repo_name, model_name, local_dir, tag, digest, include, exclude, jobs, quiet, as_json)
        return
    r = transfer_api().verify_version(
        repo_name,
        model_name,
        tag=tag,
        digest=digest,
        jobs=jobs,
        config=config(),
        progress=make_progress(quiet or as_json),
    )
    if as_json:
        out_json(asdict(r) | {"ok": r.ok})
    else:
        for p in r.problems:
            out(f"{p.problem:<8}  blob {p.digest} ({p.detail}); files: {', '.join(p.used_by)}")
        if r.ok:
            out(f"{r.model}:{r.tag}: {_all(r.blobs, 'blob')} ({size(r.bytes)}) intact")
            digest_line(r.digest)
    if not r.ok:
        raise IntegrityError(
            f"{len(r.problems)} of {plural(r.blobs, 'blob')} of {r.model}:{r.tag} "
            f"{'is' if len(r.problems) == 1 else 'are'} missing or corrupt in {repo_name!r}",
            "push a good copy under a new tag to restore missing blobs (delete corrupt ones from storage first), "
            "or delete this version",
        )


def _verify_local(repo_name, model_name, local_dir, tag, digest, include, exclude, jobs, quiet, as_json) -> None:
    """`model verify --local DIR`: compare DIR's files with the version by digest."""
    from aim_cli.progress import make_progress

    r = transfer_api().verify_local(
        repo_name,
        model_name,
        local_dir,
        tag=tag,
        digest=digest,
        jobs=jobs,
        config=config(),
        include=include,
        exclude=exclude,
        progress=make_progress(quiet or as_json),
    )
    if as_json:
        out_json(asdict(r) | {"ok": r.ok})
    else:
        for kind, paths in (("modified", r.modified), ("missing", r.missing), ("extra", r.extra)):
            for path in paths:
                out(f"{kind:<8}  {path}")
        if r.ok:
            out(f"{local_dir} matches {r.model}:{r.tag}: {_all(r.files, 'file')}")
            digest_line(r.digest)
    if not r.ok:
        raise IntegrityError(
            f"{local_dir} differs from {r.model}:{r.tag}: {len(r.modified)} modified, {len(r.missing)} missing, "
            f"{len(r.extra)} extra {'file' if len(r.extra) == 1 else 'files'}",
            f"`aim_cli model pull {repo_name} {r.model} {local_dir} --tag {r.tag} --delete` restores it and "
            "removes the extra files",
        )


def _all(n: int, noun: str) -> str:
    """'all 3 blobs', 'the 1 blob' (never 'all 1 blobs')."""
    return f"all {plural(n, noun)}" if n != 1 else f"the 1 {noun}"


@click.command("check")
@click.argument("repo_name", metavar="REPO", shell_complete=completion.repos)
@click.option("--read-data", is_flag=True, help="Also re-read every blob and check its hash (reads everything).")
@jobs_option
@quiet_option
@json_option
def repo_check(repo_name, read_data, jobs, quiet, as_json):
    """Check that every version is readable and complete (exit 5 if not); count unreferenced blobs."""
    from aim_cli.progress import make_progress

    r = transfer_api().check_repo(
        repo_name, read_data=read_data, jobs=jobs, config=config(), progress=make_progress(quiet or as_json)
    )
    if as_json:
        out_json(asdict(r) | {"ok": r.ok})
    else:
        _show_check(repo_name, r, read_data)
        _show_check_problems(r)
    if not r.ok:
        first = r.broken[0][0] if r.broken else f"blob {r.problems[0].digest}"
        listed = "listed above" if not (r.broken_omitted or r.problems_omitted) else "the first listed above"
        raise IntegrityError(
            f"repository {repo_name!r} has {plural(r.problem_count, 'problem')}, {listed} (first: {first})",
            "delete the affected versions, or push a good copy under a new tag to restore missing blobs "
            "(delete corrupt ones from storage first); then check again",
        )


def _show_check(repo_name: str, r, read_data: bool) -> None:
    """`repo check`'s summary lines."""
    read = f", {r.read} read and intact" if read_data else ""
    out(
        f"repository {repo_name!r}: {plural(r.versions, 'version')}, {plural(r.referenced, 'blob')} referenced, "
        f"{r.stored} stored{read}"
    )
    out(f"referenced: {size(r.raw_bytes)} of chunks in {size(r.stored_bytes)} stored")
    out(
        f"unreferenced: {plural(r.unreferenced, 'blob')}, {size(r.unreferenced_bytes)}"
        + (
            f" (`aim_cli repo gc {repo_name}` frees {'it' if r.unreferenced == 1 else 'them'})"
            if r.unreferenced
            else ""
        )
    )
    if r.deltas or r.markers:
        out(f"deltas: {plural(r.deltas, 'blob')} stored as deltas, {plural(r.markers, 'edge marker')}")
        if r.stale_markers:
            out(f"deltas: {plural(r.stale_markers, 'stale marker')} (`aim_cli repo optimize {repo_name}` removes them)")
        if r.dangling_markers:
            dangling = plural(r.dangling_markers, "marker")
            out(f"deltas: {dangling} of deltas not stored (`aim_cli repo gc {repo_name}` removes them)")


def _show_check_problems(r) -> None:
    """`repo check`'s damage, one line each (up to the report's examples)."""
    for name, why in r.broken:
        out(f"broken    {name}: {why}")
    if r.broken_omitted:
        out(f"broken    ... and {r.broken_omitted} more")
    for p in r.problems:
        more = f" and {plural(p.used_by_omitted, 'more file')}" if p.used_by_omitted else ""
        out(f"{p.problem:<8}  blob {p.digest} ({p.detail}); used by {', '.join(p.used_by) or 'no version'}{more}")
    if r.problems_omitted:
        out(f"blobs     ... and {r.problems_omitted} more missing, corrupt, of the wrong size or with broken edges")


@click.command("gc")
@click.argument("repo_name", metavar="REPO", shell_complete=completion.repos)
@click.option("--dry-run", is_flag=True, help="Print the plan, delete nothing (takes no lease).")
@quiet_option
@json_option
def repo_gc(repo_name, dry_run, quiet, as_json):
    """Delete the blobs no version references, safely while pushes run (see `repo check`)."""
    from aim_cli.progress import make_progress

    def show(plan):
        if not as_json:
            _show_gc_plan(repo_name, plan)

    r = api().collect_garbage(
        repo_name, dry_run=dry_run, config=config(), on_plan=show, progress=make_progress(quiet or as_json)
    )
    if as_json:
        out_json(
            {
                "dry_run": r.dry_run,
                "blobs": len(r.plan.blobs),
                "bytes": r.plan.bytes,
                "deleted": r.deleted,
                "freed_bytes": r.freed_bytes,
                "versions": r.plan.versions,
                "referenced": r.plan.referenced,
                "stored": r.plan.stored,
                "kept_as_base": r.plan.kept_as_base,
                "kept_as_base_bytes": r.plan.kept_as_base_bytes,
                "markers": len(r.plan.markers),
                "markers_deleted": r.markers_deleted,
                "missing_bases": r.plan.missing_bases,
                "incomplete_removed": r.incomplete[0],
                "incomplete_bytes": r.incomplete[1],
            }
        )
    elif dry_run:
        out("dry run: nothing deleted")
    else:
        out(f"deleted {plural(r.deleted, 'blob')}, freed {size(r.freed_bytes)}")
        if r.incomplete[0]:
            out(f"removed {plural(r.incomplete[0], 'temp file')} of interrupted writes ({size(r.incomplete[1])})")
        if r.markers_deleted:
            out(f"removed {plural(r.markers_deleted, 'edge marker')} of deltas no longer stored")


def _show_gc_plan(repo_name: str, plan) -> None:
    """What gc is about to delete, and what it keeps (before the first delete, or --dry-run)."""
    out(
        f"plan: delete {plural(len(plan.blobs), 'unreferenced blob')} ({size(plan.bytes)}); keep "
        f"{plural(plan.referenced, 'blob')} referenced by {plural(plan.versions, 'version')}"
    )
    if plan.kept_as_base:
        out(
            f"plan: keep {plural(plan.kept_as_base, 'unreferenced blob')} ({size(plan.kept_as_base_bytes)}) "
            f"as bases of kept deltas"
        )
    if plan.missing_bases:
        b, d = plan.missing_base_examples[0]
        out(f"damage: {plural(plan.missing_bases, 'kept delta blob')} whose base is not stored:")
        out(f"damage: first {d}, base {b}; `aim_cli repo check {repo_name}` lists them")


@click.command("optimize")
@click.argument("repo_name", metavar="REPO", shell_complete=completion.repos)
@click.option(
    "--model",
    "models",
    multiple=True,
    metavar="MODEL",
    help="Only this model (repeatable).",
    shell_complete=completion.models,
)
@click.option("--dry-run", is_flag=True, help="Print what would be re-encoded, write nothing.")
@jobs_option
@json_option
@quiet_option
def repo_optimize(repo_name, models, dry_run, jobs, as_json, quiet):
    """Store older versions of a format 3 repository as deltas against newer ones.

    The newest version of each model stays whole; each older chunk becomes the XOR of its bytes
    with the same chunk of the next newer version, compressed. Safe beside pushes and pulls,
    resumable after a kill, and a rerun has nothing left to do. Push does this for the version
    before it; run it after `--no-delta` pushes, a copy, or to lay out long histories."""
    from aim_cli.progress import make_progress

    r = transfer_api().optimize_repo(
        repo_name, models=models, dry_run=dry_run, jobs=jobs, config=config(), progress=make_progress(quiet or as_json)
    )
    if as_json:
        out_json(asdict(r))
        return
    what = "would re-encode" if dry_run else "re-encoded"
    count = r.planned if dry_run else r.reencoded
    saved = f" ({size(r.stored_before)} -> {size(r.stored_after)})" if r.reencoded else ""
    out(f"{repo_name}: {what} {plural(count, 'chunk')} of {plural(len(r.models), 'model')} as deltas{saved}")
    out(f"{r.made_whole} made whole, {r.declined} not worth a delta, {plural(r.stale_markers, 'stale marker')} removed")
