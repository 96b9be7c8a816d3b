"""Moving versions: push, pull (and its plan), diff, copy."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal, overload

from aim_cli.api.common import ConfigArg, PathArg, get_config, open_repository
from aim_cli.defaults import default_local_push_jobs
from aim_cli.errors import IntegrityError, UsageError

if TYPE_CHECKING:  # each function imports the module it calls: `push` loads no pull, `pull` no push
    from datetime import datetime

    from aim_cli.config import Config, RepoConfig
    from aim_cli.copy import CopyResult
    from aim_cli.diff import DiffResult
    from aim_cli.progress import Progress
    from aim_cli.pull.cache import ChunkCache
    from aim_cli.pull.pipeline import PullResult
    from aim_cli.pull.plan import PullPlan
    from aim_cli.push import PushResult
    from aim_cli.push_plan import PushPlan
    from aim_cli.repository import Repository
    from aim_cli.signing.alias_state import SeenKey, SequenceState


# -- transfers ---------------------------------------------------------------------------------------
@overload
def push(
    repo: str,
    model: str,
    source: PathArg,
    *,
    tag: str,
    message: str = ...,
    jobs: int | None = ...,
    follow_symlinks: bool = ...,
    config: ConfigArg = ...,
    progress: Progress | None = ...,
    delta: bool = ...,
    base: str | None = ...,
    references: Sequence[PathArg] = ...,
    include: Sequence[str] = ...,
    exclude: Sequence[str] = ...,
    default_ignores: bool = ...,
    dry_run: Literal[False] = ...,
) -> PushResult: ...


@overload
def push(
    repo: str,
    model: str,
    source: PathArg,
    *,
    tag: str,
    message: str = ...,
    jobs: int | None = ...,
    follow_symlinks: bool = ...,
    config: ConfigArg = ...,
    progress: Progress | None = ...,
    delta: bool = ...,
    base: str | None = ...,
    references: Sequence[PathArg] = ...,
    include: Sequence[str] = ...,
    exclude: Sequence[str] = ...,
    default_ignores: bool = ...,
    dry_run: Literal[True],
) -> PushPlan: ...


def push(
    repo: str,
    model: str,
    source: PathArg,
    *,
    tag: str,
    message: str = "",
    jobs: int | None = None,
    follow_symlinks: bool = False,
    config: ConfigArg = None,
    progress: Progress | None = None,
    delta: bool = False,
    base: str | None = None,
    references: Sequence[PathArg] = (),
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    default_ignores: bool = True,
    dry_run: bool = False,
) -> PushResult | PushPlan:
    """Push ``source`` as ``model:tag``. In a format 3 repository, with ``delta``, then store the
    newest version before it as deltas against it; ``base`` = "TAG" pairs with that version of
    the model instead, "MODEL:TAG" stores the pushed version as deltas against that version of
    another model (a fine-tune's base model); ``references``: local copies of the paired
    version to read its chunks from. Without them, `repo optimize` delta-codes the history.

    ``include``/``exclude`` select the files as pull's do (huggingface_hub's ``allow_patterns``/
    ``ignore_patterns``, matched against paths relative to ``source``): an include matching no
    file raises UsageError, an exclude matching none logs a warning. ``default_ignores`` leaves
    out ``.git/``, ``.cache/huggingface/``, ``__pycache__/`` and ``.DS_Store`` at any depth (the
    result's ``ignored*`` fields say what was). ``dry_run``: write nothing, return the
    ``PushPlan`` (the files, their bytes, the new bytes estimated by chunking them;
    ``plan.to_json()`` is what `model push --dry-run --json` prints)."""
    cfg = get_config(config)
    if jobs is None and cfg.repo(repo).type == "local":
        jobs = default_local_push_jobs()
    repository = open_repository(repo, config=cfg, jobs=jobs)
    jobs = repository.jobs
    if dry_run:
        from aim_cli.push_plan import plan_push

        return plan_push(
            repository,
            model,
            tag,
            source,
            message=message,
            jobs=jobs,
            follow_symlinks=follow_symlinks,
            progress=progress,
            delta=delta,
            base=base,
            references=references,
            include=include,
            exclude=exclude,
            default_ignores=default_ignores,
        )
    from aim_cli import push as pushmod

    return pushmod.push(
        repository,
        model,
        tag,
        source,
        message=message,
        jobs=jobs,
        follow_symlinks=follow_symlinks,
        progress=progress,
        delta=delta,
        base=base,
        references=references,
        include=include,
        exclude=exclude,
        default_ignores=default_ignores,
    )


def plan_pull(
    repo: str,
    model: str,
    dest: PathArg,
    *,
    tag: str | None = None,
    digest: str | None = None,
    jobs: int | None = None,
    references: Sequence[PathArg] = (),
    config: ConfigArg = None,
    progress: Progress | None = None,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    delete: bool = False,
    require_signature: PathArg | None = None,
    cache_dir: PathArg | None = None,
    alias: str | None = None,
    now: datetime | None = None,
    verify_existing: bool = False,
) -> PullPlan:
    """What ``pull`` with the same arguments would do, having created or changed nothing: the
    ``PullPlan`` (``plan.to_json()`` is the shape `model pull --dry-run --json` prints).
    ``cache_dir`` is only checked (with ``delete``, it must not lie inside ``dest``). A signed
    alias is checked as ``pull`` checks it; no sequence number is recorded. ``verify_existing``:
    plan as if DEST had no index (every file in it read)."""
    from aim_cli.pull import pipeline

    cfg = get_config(config)
    repository = open_repository(repo, config=cfg, jobs=jobs)
    jobs = repository.jobs
    signed = _SignedPull(cfg, repo, model, dest, require_signature, now)
    tag, digest = signed.pin(repository, tag, alias, digest)
    return pipeline.dry_run(
        repository,
        model,
        dest,
        tag=tag,
        digest=digest,
        references=references,
        progress=progress,
        repo_roots=_local_roots(cfg),
        include=include,
        exclude=exclude,
        delete=delete,
        cache_dir=cache_dir,
        verify_existing=verify_existing,
    )


@overload
def pull(
    repo: str,
    model: str,
    dest: PathArg,
    *,
    tag: str | None = ...,
    digest: str | None = ...,
    jobs: int | None = ...,
    references: Sequence[PathArg] = ...,
    cache_dir: PathArg | None = ...,
    config: ConfigArg = ...,
    progress: Progress | None = ...,
    include: Sequence[str] = ...,
    exclude: Sequence[str] = ...,
    delete: bool = ...,
    dry_run: Literal[False] = ...,
    require_signature: PathArg | None = ...,
    alias: str | None = ...,
    now: datetime | None = ...,
    verify_existing: bool = ...,
) -> PullResult: ...


@overload
def pull(
    repo: str,
    model: str,
    dest: PathArg,
    *,
    tag: str | None = ...,
    digest: str | None = ...,
    jobs: int | None = ...,
    references: Sequence[PathArg] = ...,
    cache_dir: PathArg | None = ...,
    config: ConfigArg = ...,
    progress: Progress | None = ...,
    include: Sequence[str] = ...,
    exclude: Sequence[str] = ...,
    delete: bool = ...,
    dry_run: Literal[True],
    require_signature: PathArg | None = ...,
    alias: str | None = ...,
    now: datetime | None = ...,
    verify_existing: bool = ...,
) -> PullPlan: ...


def pull(
    repo: str,
    model: str,
    dest: PathArg,
    *,
    tag: str | None = None,
    digest: str | None = None,
    jobs: int | None = None,
    references: Sequence[PathArg] = (),
    cache_dir: PathArg | None = None,
    config: ConfigArg = None,
    progress: Progress | None = None,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    delete: bool = False,
    dry_run: bool = False,
    require_signature: PathArg | None = None,
    alias: str | None = None,
    now: datetime | None = None,
    verify_existing: bool = False,
) -> PullResult | PullPlan:
    """Pull a version into ``dest``, verified; rerun to resume. Returns a ``PullResult``.

    ``include``/``exclude``: patterns selecting the files, huggingface_hub's ``allow_patterns``/
    ``ignore_patterns`` semantics (aim_cli/util/patterns.py): an include matching no file raises
    UsageError, an exclude matching none logs a warning. ``delete``: also remove the regular
    files of ``dest`` (within the patterns) that the version does not hold. ``require_signature``:
    a public key (PEM) whose signature (either kind) must cover exactly the version's files,
    checked before anything is written; the pull is then pinned to the verified manifest's digest.
    For an alias (``tag``, or ``alias``, "latest" without either) the key's statement of it must
    hold too (§12): exit 5 if missing, expired at ``now`` or older than one seen before.
    ``verify_existing``: read every file of ``dest`` again, trusting nothing of DEST's index.
    ``dry_run=True`` is deprecated: it returns ``plan_pull(...)``'s plan."""
    if dry_run:
        warnings.warn(
            "pull(dry_run=True) is deprecated: call plan_pull() for the plan", DeprecationWarning, stacklevel=2
        )
        return plan_pull(
            repo,
            model,
            dest,
            tag=tag,
            digest=digest,
            jobs=jobs,
            references=references,
            config=config,
            progress=progress,
            include=include,
            exclude=exclude,
            delete=delete,
            require_signature=require_signature,
            alias=alias,
            now=now,
            verify_existing=verify_existing,
        )
    from aim_cli.pull import pipeline

    cfg = get_config(config)
    repository = open_repository(repo, config=cfg, jobs=jobs)
    jobs = repository.jobs
    signed = _SignedPull(cfg, repo, model, dest, require_signature, now)
    tag, digest = signed.pin(repository, tag, alias, digest, record=True)
    result = pipeline.pull(
        repository,
        model,
        dest,
        tag=tag,
        digest=digest,
        jobs=jobs,
        references=references,
        cache=_cache(cache_dir),
        progress=progress,
        repo_roots=_local_roots(cfg),
        include=include,
        exclude=exclude,
        delete=delete,
        verify_existing=verify_existing,
    )
    signed.record_in_dest()
    return result


def _cache(cache_dir: PathArg | None) -> ChunkCache | None:
    """The shared chunk cache at ``cache_dir``, or None."""
    if not cache_dir:
        return None
    from aim_cli.pull.cache import ChunkCache

    return ChunkCache(cache_dir)


def _local_roots(cfg: Config) -> list[str]:
    """The config's local repositories: DEST must stay out of them."""
    return [r.path for r in cfg.repos.values() if r.type == "local"]


class _SignedPull:
    """A pull's version when it names an alias or requires a signature (signing/alias_pull.py),
    and the sequence numbers it accepted, recorded in the per-user state file at once and in
    DEST/.aim once the pull is done."""

    def __init__(
        self, cfg: Config, repo: str, model: str, dest: PathArg, key: PathArg | None, now: datetime | None
    ) -> None:
        self.cfg, self.repo, self.model, self.dest, self.key, self.now = cfg, repo, model, dest, key, now
        self.accepted: tuple[SeenKey, int] | None = None

    def states(self) -> list[SequenceState]:
        from aim_cli.pull.layout import WORK_DIR
        from aim_cli.signing.alias_state import SequenceState, user_state_dir

        user = SequenceState(user_state_dir(), "the per-user state file")
        return [user, SequenceState(Path(self.dest) / WORK_DIR, "DEST's state file", nofollow=True)]

    def pin(
        self, repository: Repository, tag: str | None, alias: str | None, digest: str | None, *, record: bool = False
    ) -> tuple[str | None, str | None]:
        if self.key is None:
            return _pin_alias(repository, self.model, tag, alias, digest)
        from datetime import UTC, datetime

        from aim_cli.signing.alias_pull import pin_signed
        from aim_cli.signing.files import read_user_file
        from aim_cli.signing.keys import load_public_key

        key = load_public_key(read_user_file(self.key, "public key"), os.fspath(self.key))
        states = self.states()
        pinned = pin_signed(
            repository,
            _repository_id(self.cfg.repo(self.repo)),
            self.model,
            key,
            tag=tag,
            alias=alias,
            digest=digest,
            states=states,
            now=self.now or datetime.now(UTC),
        )
        if record and pinned.seen_key is not None and pinned.accepted is not None:
            self.accepted = (pinned.seen_key, pinned.accepted.index)
            states[0].record(dict([self.accepted]))
        return pinned.tag, pinned.digest

    def record_in_dest(self) -> None:
        if self.accepted is not None:
            self.states()[1].record(dict([self.accepted]))


def _pin_alias(
    repository: Repository, model: str, tag: str | None, alias: str | None, digest: str | None
) -> tuple[str | None, str | None]:
    """(tag, digest) as given, or, for ``alias``, the version it names (never a tag)."""
    if alias is None:
        return tag, digest
    if tag is not None:
        raise UsageError("--tag and --alias both name a version", "pass one of them")
    ref = repository.alias_target(repository.get_alias(model, alias))
    if digest is not None and ref.digest != digest.lower():
        raise IntegrityError(
            f"alias {alias!r} of model {model!r} names digest {ref.digest}, not the pinned {digest.lower()}",
            "the alias is not at the version you pinned; nothing was downloaded",
        )
    return ref.manifest.tag, ref.digest


def _repository_id(repo_cfg: RepoConfig) -> str:
    """What identifies a repository in the sequence state: its storage, not its name in the config."""
    where = f"{repo_cfg.type}:{repo_cfg.path}"
    return f"{where}@{repo_cfg.endpoint_url}" if repo_cfg.endpoint_url else where


# -- comparing and copying versions (aim_cli/diff.py, aim_cli/copy.py) -----------------------
def diff(
    repo: str,
    model: str,
    tag_a: str,
    tag_b: str,
    *,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    config: ConfigArg = None,
) -> DiffResult:
    """What changed from ``model:tag_a`` to ``model:tag_b``: an ``aim_cli.diff.DiffResult`` (files
    added, removed, changed and unchanged with their sizes; what a pull of B over A fetches).
    Reads the two manifests and asks storage the stored size of the chunks B adds; no blob."""
    from aim_cli import diff as diffmod
    from aim_cli.util.patterns import PathFilter

    return diffmod.diff(
        open_repository(repo, config=config), model, tag_a, tag_b, paths=PathFilter.of(include, exclude)
    )


def copy(
    src_repo: str,
    model: str,
    dst_repo: str,
    *,
    tags: Sequence[str] | None = None,
    jobs: int | None = None,
    dry_run: bool = False,
    delta: bool = False,
    config: ConfigArg = None,
    progress: Progress | None = None,
) -> CopyResult:
    """Copy versions of ``model`` (``tags``, or all) from ``src_repo`` into ``dst_repo`` with their
    manifests' exact bytes, transferring only the blobs the destination lacks: an
    ``aim_cli.copy.CopyResult``. A tag the destination holds with another digest does
    not raise: it is listed in ``result.conflicts`` and the other versions are copied.
    Between format 3 repositories a delta is copied as stored, with the bases it needs;
    ``delta`` (a format 3 destination) re-encodes, after each copied version, the destination's
    version before it as deltas against it, as push does (UsageError into format 1 or 2)."""
    from aim_cli import copy as transfer_copy

    cfg = get_config(config)
    source = open_repository(src_repo, config=cfg, jobs=jobs)
    dest = open_repository(dst_repo, config=cfg, jobs=jobs)
    jobs = max(source.jobs, dest.jobs)
    return transfer_copy.copy(source, dest, model, tags, jobs=jobs, dry_run=dry_run, delta=delta, progress=progress)
