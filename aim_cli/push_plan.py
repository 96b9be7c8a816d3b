"""`model push --dry-run`: what a push of DIR would store, having written nothing.

The files are chosen as the push chooses them (push_scan.py: --include/--exclude, the default
ignores, DIR's own .aim*), then cut and hashed as the push cuts them (push.estimate): the
estimate of new bytes is exact for the repository as listed at that moment, the raw bytes of
the chunks it does not hold. It costs what the push's own hashing costs (every selected byte is
read once; no upload, no compression): a cheaper guess by whole files (paths and sizes already
pushed) would miss what makes a push cheap here, the chunks a fine-tune shares with its base.
What the new chunks take in storage (format 2 compresses them) is known only once encoded.

Nothing is written: not aim-repo.json (a root that is not a repository yet is checked as push
would check it, then planned with the format a push would create), not a lease, not a blob.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass

from aim_cli.defaults import DEFAULT_JOBS
from aim_cli.errors import UsageError
from aim_cli.format import manifest as mf
from aim_cli.format.repo_format import RepoFormat
from aim_cli.names import check_name
from aim_cli.progress import NullProgress
from aim_cli.push import check_message, estimate
from aim_cli.push_pairing import resolve
from aim_cli.push_scan import scan_source
from aim_cli.repository import Repository
from aim_cli.util.ignores import Ignored
from aim_cli.util.patterns import PathFilter


@dataclass(frozen=True, slots=True)
class PlannedPushFile:
    path: str
    size: int


@dataclass(frozen=True)
class PushPlan:
    """What ``push`` with the same arguments would store (see the module docstring)."""

    model: str
    tag: str
    directory: str  # absolute
    repository: str
    repository_exists: bool  # False: the push would create it (aim-repo.json, ``storage_format``)
    storage_format: int
    include: list[str]
    exclude: list[str]
    default_ignores: bool
    files: list[PlannedPushFile]  # selected, by path
    chunks: int  # chunks the files are cut into
    new_bytes: int  # estimate: raw bytes of the distinct chunks the repository does not hold
    new_chunks: int
    already_pushed: bool  # the tag holds these very files: the push would write nothing
    skipped: list[str]  # top-level .aim* names of DIR (aim_cli's own)
    ignored: list[str]  # default ignores found, top-most paths
    ignored_files: int
    ignored_bytes: int
    elapsed: float

    @property
    def total_size(self) -> int:
        return sum(f.size for f in self.files)

    def to_json(self) -> dict:
        """The stable shape of `model push --dry-run --json` (README, "JSON output")."""
        return {
            "dry_run": True,
            "model": self.model,
            "tag": self.tag,
            "directory": self.directory,
            "repository": self.repository,
            "repository_exists": self.repository_exists,
            "storage_format": self.storage_format,
            "include": self.include,
            "exclude": self.exclude,
            "default_ignores": self.default_ignores,
            "files": [{"path": f.path, "size": f.size} for f in self.files],
            "skipped": self.skipped,
            "ignored": self.ignored,
            "totals": {
                "files": len(self.files),
                "size": self.total_size,
                "chunks": self.chunks,
                "new_bytes": self.new_bytes,
                "new_chunks": self.new_chunks,
                "already_pushed": self.already_pushed,
                "ignored_files": self.ignored_files,
                "ignored_bytes": self.ignored_bytes,
            },
            "elapsed": self.elapsed,
        }


def _target_format(
    repo: Repository, model: str, tag: str, *, delta: bool, base: str | None, references: Sequence
) -> RepoFormat:
    """The format the push would cut and store by: the repository's, or the one a push would
    create it with; refused where the push would be refused, having written nothing."""
    if repo.exists():
        fmt = repo.format()  # an unknown format: refused (exit 7) as the push would be
        resolve(repo, model, tag, delta=delta, base=base, references=references)  # read-only checks
        return fmt
    repo.check_can_init()  # nested in a repository, or over other data: refused as push would be
    if delta or base or references:
        option = "--base" if base else "--reference" if references else "--delta"
        raise UsageError(
            f"{option}: repository {repo.name!r} does not exist yet, there is no version to pair with",
            f"dry-run the push without {option}",
        )
    return RepoFormat.new()


def plan_push(
    repo: Repository,
    model: str,
    tag: str,
    source: str | os.PathLike,
    *,
    message: str = "",
    jobs: int = DEFAULT_JOBS,
    follow_symlinks: bool = False,
    progress=None,
    delta: bool = False,
    base: str | None = None,
    references: Sequence[str | os.PathLike] = (),
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    default_ignores: bool = True,
) -> PushPlan:
    """The plan of ``push(repo, model, tag, source, ...)``, refused where the push would be
    refused (a bad name or DIR, an --include matching nothing, a root that cannot become a
    repository, a tag holding other files: TagExistsError), having written nothing."""
    check_name("model", model)
    check_name("tag", tag)
    check_message(message)
    started = time.monotonic()
    skipped: list[str] = []
    ignored = Ignored() if default_ignores else None
    selection = PathFilter.of(include, exclude)
    files = scan_source(
        source, follow_symlinks=follow_symlinks, on_skip=skipped.append, selection=selection, ignored=ignored
    )
    exists = repo.exists()
    fmt = _target_format(repo, model, tag, delta=delta, base=base, references=references)
    existing = repo.find_version(model, tag) if exists else None
    index = None
    if exists and existing is None:
        params = fmt.chunking
        index = repo.stored_blob_index(sum(f.size for f in files) // (params.avg_size + params.min_size) + len(files))
    elif not exists:
        index = {}
    entries, new_bytes, new_chunks = estimate(
        repo, fmt, files, index=index, counting=existing is None, jobs=jobs, progress=progress or NullProgress()
    )
    if existing is not None:  # the push would be "already pushed", or refused (TagExistsError)
        planned = mf.Manifest(mf.FORMAT, model, tag, "", "", message, 0, [entries[f.path] for f in files])
        repo.against_stored(existing, planned)  # compares the files alone
    return PushPlan(
        model,
        tag,
        os.path.abspath(source),
        repo.name,
        exists,
        fmt.version,
        list(selection.include),
        list(selection.exclude),
        default_ignores,
        [PlannedPushFile(f.path, f.size) for f in files],
        sum(len(e.chunks) for e in entries.values()),
        new_bytes,
        new_chunks,
        existing is not None,
        sorted(skipped),
        sorted(ignored.paths) if ignored else [],
        ignored.files if ignored else 0,
        ignored.bytes if ignored else 0,
        time.monotonic() - started,
    )
