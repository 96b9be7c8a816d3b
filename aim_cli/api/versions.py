"""Models and versions: listings, one version's details, verification, repo check, deletion and gc."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from aim_cli.api.common import ConfigArg, PathArg, open_repository, resolve
from aim_cli.defaults import DEFAULT_JOBS

if TYPE_CHECKING:
    from aim_cli.audit.check import CheckReport
    from aim_cli.audit.gc import GcPlan, GcResult
    from aim_cli.audit.verify import LocalReport, VersionReport
    from aim_cli.format.summary import Summary
    from aim_cli.optimize import OptimizeResult
    from aim_cli.progress import Progress
    from aim_cli.signing.bundle import SignatureInfo


# -- models and versions ---------------------------------------------------------------------------
@dataclass(frozen=True)
class VersionInfo:
    model: str
    tag: str
    digest: str
    created_at: str
    created_by: str
    message: str
    total_size: int
    files: int
    chunks: int  # chunk references (a chunk shared by two files counts twice)
    stored_size: int | None = None  # its distinct chunks in storage, as push measured (format 2; else None)
    delta_base: str | None = None  # format 3: "model:tag" push paired it with (--delta, --base); display only
    new_stored_size: int | None = None  # what its push added to storage (formats 2, 3; None: not recorded)

    @classmethod
    def from_summary(cls, s: Summary) -> VersionInfo:
        """``message`` and ``created_by`` are cut as summary.py says; `version_details` has them whole."""
        return cls(
            s.model,
            s.tag,
            s.digest,
            s.created_at,
            s.created_by,
            s.message,
            s.total_size,
            s.files,
            s.chunks,
            s.stored_size,
            s.delta_base,
            s.new_stored_size,
        )


def list_models(repo: str, *, config: ConfigArg = None) -> list[str]:
    """The models with at least one version: one listing, no manifest read."""
    return open_repository(repo, config=config).list_models()


def list_tags(repo: str, model: str, *, config: ConfigArg = None) -> list[str]:
    """The tags of ``model``, sorted by name: one listing, no manifest or summary read (what shell
    completion offers). A model without versions has none."""
    return open_repository(repo, config=config).list_tags(model)


def list_versions(repo: str, model: str, *, config: ConfigArg = None, jobs: int | None = None) -> list[VersionInfo]:
    """Oldest first. Read from the versions' summaries (one listing, then small reads on ``jobs``
    threads); a version without one gets it rebuilt from its manifest."""
    return [VersionInfo.from_summary(s) for s in open_repository(repo, config=config, jobs=jobs).list_versions(model)]


# -- audits and garbage collection (aim_cli/audit/) --------------------------------
@dataclass(frozen=True)
class FileInfo:
    path: str
    size: int
    mode: int
    blake3: str  # whole-file digest, as `b3sum` prints it
    chunks: int


@dataclass(frozen=True)
class VersionDetails:
    model: str
    tag: str
    digest: str
    created_at: str
    created_by: str
    message: str
    total_size: int
    files: list[FileInfo]
    format: int = 1  # the repository's storage format
    distinct_size: int = 0  # the bytes of its distinct chunks (a chunk used twice counts once)
    stored_size: int = 0  # what storage holds for them (format 2 compresses; format 1: = distinct_size)
    missing_blobs: int = 0  # chunks not stored at all (`aim_cli repo check` says more)
    signatures: list[SignatureInfo] = field(default_factory=list)  # each stored signature
    alias: str | None = None  # the alias it was named by (None: by its tag, or the newest)


@dataclass(frozen=True)
class DeleteResult:
    model: str
    tags: list[str]
    reclaimable_blobs: int  # named by the deleted versions and by no remaining one
    reclaimable_bytes: int  # their chunk bytes
    reclaimable_stored_bytes: int = 0  # what they take in storage: what `repo gc` frees
    kept_as_base_blobs: int = 0  # named by the deleted versions, kept as bases of others' deltas (format 3)
    kept_as_base_bytes: int = 0  # their chunk bytes
    aliases_removed: list[str] = field(default_factory=list)  # aliases unset with the version (force)


def version_details(
    repo: str, model: str, *, tag: str | None = None, digest: str | None = None, config: ConfigArg = None
) -> VersionDetails:
    """One version's manifest: digest, author, message, files with sizes and BLAKE3 (newest without tag)."""
    repository = open_repository(repo, config=config)
    ref = resolve(repository, model, tag, digest)
    m = ref.manifest
    files = [FileInfo(f.path, f.size, f.mode, f.blake3, len(f.chunks)) for f in m.files]
    chunks = {d: s for f in m.files for d, s in f.chunks}
    stored = repository.stored_sizes(chunks)  # one listing or a HEAD per chunk, whichever is cheaper
    from aim_cli.signing.verify import signatures_of

    return VersionDetails(
        m.model,
        m.tag,
        ref.digest,
        m.created_at,
        m.created_by,
        m.message,
        m.total_size,
        files,
        repository.format().version,
        sum(chunks.values()),
        sum(stored.values()),
        len(chunks) - len(stored),
        signatures_of(repository, ref),
        ref.alias.alias if ref.alias else None,
    )


def verify_version(
    repo: str,
    model: str,
    *,
    tag: str | None = None,
    digest: str | None = None,
    jobs: int | None = None,
    config: ConfigArg = None,
    progress: Progress | None = None,
) -> VersionReport:
    """Re-read and re-hash every blob of the version: an ``aim_cli.audit.verify.VersionReport``."""
    from aim_cli.audit import verify

    repository = open_repository(repo, config=config, jobs=jobs)
    return verify.verify_version(
        repository, resolve(repository, model, tag, digest), jobs=repository.jobs, progress=progress
    )


def verify_local(
    repo: str,
    model: str,
    directory: PathArg,
    *,
    tag: str | None = None,
    digest: str | None = None,
    jobs: int | None = None,
    config: ConfigArg = None,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    progress: Progress | None = None,
) -> LocalReport:
    """Compare ``directory`` with the version by whole-file digests: an ``aim_cli.audit.verify.LocalReport``.
    ``include``/``exclude`` select the files compared (as for `pull`); extra files are reported
    only inside the patterns."""
    from aim_cli.audit import verify

    ref = resolve(open_repository(repo, config=config), model, tag, digest)
    return verify.verify_local(
        ref, directory, jobs=jobs or DEFAULT_JOBS, include=include, exclude=exclude, progress=progress
    )


def check_repo(
    repo: str,
    *,
    read_data: bool = False,
    jobs: int | None = None,
    config: ConfigArg = None,
    progress: Progress | None = None,
) -> CheckReport:
    """Check every manifest and the blobs they name: an ``aim_cli.audit.check.CheckReport``.
    ``progress`` sees the manifests read, then (``read_data``) the bytes of the blobs read."""
    from aim_cli.audit import check

    repository = open_repository(repo, config=config, jobs=jobs)
    return check.check_repo(repository, read_data=read_data, jobs=repository.jobs, progress=progress)


def optimize_repo(
    repo: str,
    *,
    models: Sequence[str] = (),
    dry_run: bool = False,
    jobs: int | None = None,
    config: ConfigArg = None,
    progress: Progress | None = None,
) -> OptimizeResult:
    """Re-encode a format 3 repository's history into delta chains (every model, or ``models``),
    the newest version of each whole, under the optimize lease: an ``aim_cli.optimize.OptimizeResult``."""
    from aim_cli import optimize

    return optimize.optimize(
        open_repository(repo, config=config, jobs=jobs), models=list(models) or None, dry_run=dry_run, progress=progress
    )


def collect_garbage(
    repo: str,
    *,
    dry_run: bool = False,
    config: ConfigArg = None,
    on_plan: Callable[[GcPlan], None] | None = None,
    progress: Progress | None = None,
) -> GcResult:
    """Delete the blobs no manifest names, under the exclusive lease: an ``aim_cli.audit.gc.GcResult``.
    ``on_plan(plan)`` sees the plan before anything is deleted; ``progress`` sees the manifests
    read, then the bytes deleted."""
    from aim_cli.audit import gc

    return gc.collect(open_repository(repo, config=config), dry_run=dry_run, on_plan=on_plan, progress=progress)


def delete_versions(
    repo: str, model: str, tags: Sequence[str] | None = None, *, force: bool = False, config: ConfigArg = None
) -> DeleteResult:
    """Delete these versions of ``model`` (all of them, readable or not, with its aliases, when
    ``tags`` is None) and measure what `repo gc` can now free. A tag may also name a stray key
    exactly (``"v1 copy"`` for ``versions/v1 copy.json``, ``".DS_Store"``): `repo check` lists
    them. A version an alias points at is a ConflictError (exit 4) unless ``force``, which unsets
    those aliases, recording it in their histories. Tags only: an alias names no version here."""
    from aim_cli.audit import gc

    repository = open_repository(repo, config=config)
    if tags is None:
        deleted = [repository.delete_model(model)]
    else:
        deleted = [repository.delete_version(model, t, force=force) for t in tags]
    freed = {digest: size for d in deleted for digest, size in d.chunks.items()}
    r = gc.reclaimable(repository, freed)
    names = [name for d in deleted for name in d.names]
    removed = [alias for d in deleted for alias in d.aliases_removed]
    return DeleteResult(
        model, names, r.blobs, r.chunk_bytes, r.stored_bytes, r.kept_as_base, r.kept_as_base_bytes, removed
    )
