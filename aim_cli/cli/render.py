"""How results look on stdout: sizes, plain lines, JSON, and the printers of the results too long
for their command (a pull's plan, a diff, a copy). Progress and errors go to stderr elsewhere.

The conventions every command follows: sizes in IEC units (``size``), counts with their noun
(``plural``: "1 file"), a summary line within ``SUMMARY_COLUMNS`` for ordinary names, a full
manifest digest on a line of its own (``digest_line``), and in listings the first
``LISTING_DIGEST_CHARS`` hex of a digest (``short_digest``); errors and JSON carry digests whole."""

from __future__ import annotations

import json

import click


def size(n: int) -> str:
    """A size in IEC units (util.sizes, which the progress bars use too)."""
    from aim_cli.util.sizes import human_size

    return human_size(n)


SUMMARY_COLUMNS = 100
LISTING_DIGEST_CHARS = 12


def short_digest(digest: str) -> str:
    """A digest as every listing shows it: its first 12 hex, enough to tell versions apart by eye."""
    return digest[:LISTING_DIGEST_CHARS]


def digest_line(digest: str) -> None:
    """The full manifest digest, alone on its line (for `--digest`, and easy to copy)."""
    out(f"digest: {digest}")


class StdoutClosed(Exception):
    """Whoever read stdout has gone (`aim_cli model info ... | head -1`): main() exits 0 quietly.

    Not an OSError: click takes any EPIPE raised in a command for its own and exits 1."""


def out(text: str) -> None:
    try:
        click.echo(text)
    except BrokenPipeError as e:
        raise StdoutClosed from e


def out_json(obj) -> None:
    out(json.dumps(obj, indent=2, default=str))


def show_pull_plan(plan, dest: str, as_json: bool) -> None:
    """`model pull --dry-run`: one line per file (its action), one per file --delete would
    remove, then the totals."""
    doc = plan.to_json()
    if as_json:
        out_json(doc)
        return
    from aim_cli.util.fs import display_path

    for f in plan.files:
        out(f"{f.action:<6}  {size(f.size):>11}  {display_path(f.path)}")
    for path in plan.delete:
        out(f"{'delete':<6}  {'':>11}  {display_path(path)}")
    t = doc["totals"]
    newest = " (newest)" if plan.newest else ""
    space = "" if t["space_needed"] <= t["space_available"] else " (NOT ENOUGH: the pull would stop, exit 6)"
    out(
        f"dry run: {plan.model}:{plan.tag}{newest} into {display_path(dest)}: {plural(t['files'], 'file')}, "
        f"{size(t['size'])}; nothing changed"
    )
    out(
        f"files: keep {t['keep_files']}, write {t['local_files']} from local files, fetch {t['fetch_files']}"
        + (f", delete {t['delete_files']} ({size(t['delete_bytes'])})" if plan.delete else "")
    )
    out(
        f"bytes: fetch {size(t['fetch_raw_bytes'])} of chunks (raw size; stored size known once fetched), "
        f"reuse {size(t['reuse_bytes'])}"
    )
    out(f"space: {size(t['space_needed'])} needed, {size(t['space_available'])} free{space}")


def plural(n: int, noun: str, nouns: str | None = None) -> str:
    """'1 file', '2 files', '0 files'; ``nouns`` where adding an s is wrong ('1 delta', ...)."""
    return f"{n} {noun}" if n == 1 else f"{n} {nouns or noun + 's'}"


def show_left_out(r) -> None:
    """One line on stderr for what push left out of DIR: its own .aim* names, the default ignores."""
    from aim_cli.util.fs import display_path

    if r.skipped:
        click.echo(
            f"warning: skipped {', '.join(map(display_path, r.skipped))}: names starting with .aim at the "
            f"top of DIR are aim_cli's own (a pull's working files); rename them to push them",
            err=True,
        )
    if r.ignored:
        from aim_cli.util.ignores import summary

        click.echo(
            f"left out {plural(r.ignored_files, 'file')} ({size(r.ignored_bytes)}) push ignores by default: "
            f"{summary(map(display_path, r.ignored))}; --no-default-ignores pushes them",
            err=True,
        )


def show_push_plan(plan, as_json: bool) -> None:
    """`model push --dry-run`: one line per file, then the totals and the estimate."""
    if as_json:
        out_json(plan.to_json())
        return
    from aim_cli.util.fs import display_path

    for f in plan.files:
        out(f"{size(f.size):>11}  {display_path(f.path)}")
    into = repr(plan.repository)
    if not plan.repository_exists:
        into += f" (not a repository yet: the push would create it, storage format {plan.storage_format})"
    out(
        f"dry run: {plan.model}:{plan.tag} into {into}: {plural(len(plan.files), 'file')}, "
        f"{size(plan.total_size)}; nothing written"
    )
    if plan.already_pushed:
        out("estimate: already pushed with identical content")
    else:
        out(
            f"estimate: about {size(plan.new_bytes)} new, {plan.new_chunks} of {plural(plan.chunks, 'chunk')} "
            f"(raw size; stored size known once encoded)"
        )


def show_diff(r) -> None:
    """`model diff`: one line per file (status, size, path, mode change), the totals, and what a
    pull of TAG_B into TAG_A would fetch."""
    from aim_cli.util.quoting import printable

    out(f"{r.model}: {r.tag_a} (digest {short_digest(r.digest_a)}) -> {r.tag_b} (digest {short_digest(r.digest_b)})")
    for f in r.files:
        out(f"{f.status:<9}  {_diff_sizes(f):>24}  {printable(f.path, len(f.path))}{_diff_mode(f)}")
    t = r.totals
    out(
        f"files: {t['added'].files} added ({size(t['added'].bytes_b)}), {t['removed'].files} removed "
        f"({size(t['removed'].bytes_a)}), {t['changed'].files} changed, {t['unchanged'].files} unchanged"
    )
    out(f"{size(r.changed_bytes)} of {r.tag_b} in added or changed files")
    out(
        f"a pull of {r.tag_b} into a directory holding {r.tag_a} fetches {plural(r.fetch.chunks, 'chunk')}: "
        f"{size(r.fetch.stored_bytes)} stored ({size(r.fetch.raw_bytes)} of chunks)"
    )
    if r.fetch.unstored_chunks:
        out(f"{r.fetch.unstored_chunks} of those chunks are not stored (run `aim_cli repo check`)")


def _diff_sizes(f) -> str:
    """A file's size, or both when it changed: "1.0 MiB", "1.0 MiB -> 1.1 MiB"."""
    if f.size_a is None or f.size_b is None or f.size_a == f.size_b:
        return size(f.size_b if f.size_a is None else f.size_a)
    return f"{size(f.size_a)} -> {size(f.size_b)}"


def _diff_mode(f) -> str:
    if f.mode_a is None or f.mode_b is None or f.mode_a == f.mode_b:
        return ""
    return f" (mode {f.mode_a:o} -> {f.mode_b:o})"


def _copy_deltas(v) -> str:
    """A copied version's format 3 counts, when there are any."""
    said = []
    if v.deltas:
        said.append(f"{plural(v.deltas, 'delta')} as stored")
    if v.bases_copied:
        said.append(f"{plural(v.bases_copied, 'base')} ({size(v.base_bytes)})")
    if v.reencoded_chunks:
        said.append(f"{plural(v.reencoded_chunks, 'chunk')} of the version before re-encoded as deltas")
    return f"          {', '.join(said)}" if said else ""


def show_copy(r) -> None:
    """`model copy`: one line per version (skipped, conflict, copied), then the totals."""
    would = "would copy" if r.dry_run else "copied"
    for v in r.versions:
        label = f"{r.model}:{v.tag}  {short_digest(v.digest)}"
        signed = f"; {would} {plural(v.signatures, 'signature')}" if v.signatures else ""
        if v.status == "skipped":
            out(f"skipped   {label}  {r.dst!r} holds it with the same digest{signed}")
        elif v.status == "conflict":
            out(f"conflict  {label}  {r.dst!r} holds {short_digest(v.dst_digest or '')} under this tag")
        else:
            stored = "" if v.stored_bytes is None else f" ({size(v.stored_bytes)} stored)"
            out(
                f"{would:<9} {label}  {plural(v.blobs, 'blob')}, {size(v.raw_bytes)} of chunks{stored}, "
                f"{v.present_blobs} already there{signed}"
            )
            if deltas := _copy_deltas(v):
                out(deltas)
    if r.reencoded:
        note = (
            " (a format 1 repository records no dtypes: chunks compressed as plain bytes)" if r.src_format == 1 else ""
        )
        out(
            f"blobs {'would be ' if r.dry_run else ''}re-encoded from format {r.src_format} to format "
            f"{r.dst_format}{note}"
        )
    created = f"; {'would create' if r.dry_run else 'created'} repository {r.dst!r}" if r.dst_created else ""
    stored = "" if r.stored_bytes is None else f", {size(r.stored_bytes)} stored"
    dry = "; dry run: nothing written" if r.dry_run else ""
    bad = f" ({r.bad_signatures} damaged left out)" if r.bad_signatures else ""
    out(
        f"{would} {len(r.copied)} of {len(r.versions)} versions of {r.model} from {r.src!r} to {r.dst!r} "
        f"({len(r.skipped)} skipped, {plural(len(r.conflicts), 'conflict')}); {r.elapsed:.2f}s{dry}"
    )
    out(
        f"{plural(r.blobs, 'blob')}, {size(r.raw_bytes)} of chunks{stored}, "
        f"{plural(r.signatures, 'signature')}{bad}{created}"
    )
