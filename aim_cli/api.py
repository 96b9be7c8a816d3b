"""The public Python API: what the CLI calls, and what users call from their own code.

    import aim_cli.api as aim
    result = aim.push("local", "resnet50", "./checkpoint", tag="v1.0")
    aim.pull("local", "resnet50", "./models/resnet50", tag="v1.0")

``config`` is a path to a model_repos.yaml, a loaded ``Config``, or None (the usual search:
$AIM_CONFIG, then model_repos.yaml in the current directory or its parents).
"""

from __future__ import annotations

import importlib
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, overload

from aim_cli import config as cfgmod
from aim_cli.backends import open_backend
from aim_cli.chunking.cdc import ChunkingParams
from aim_cli.config import Config, RepoConfig
from aim_cli.copy import CopyResult
from aim_cli.defaults import DEFAULT_JOBS
from aim_cli.diff import DiffResult
from aim_cli.errors import ConfigError, UsageError
from aim_cli.format.repo_format import DEFAULT_FORMAT, KNOWN_FORMATS
from aim_cli.format.summary import Summary
from aim_cli.names import check_name
from aim_cli.progress import Progress
from aim_cli.pull.pipeline import PullResult
from aim_cli.pull.plan import PullPlan
from aim_cli.push import PushResult
from aim_cli.repository import Repository, VersionRef

if TYPE_CHECKING:
    from aim_cli.audit.check import CheckReport
    from aim_cli.audit.gc import GcPlan, GcResult
    from aim_cli.audit.verify import LocalReport, VersionReport
    from aim_cli.pull.cache import CacheInfo, PruneResult
    from aim_cli.signing.bundle import SignatureInfo
    from aim_cli.signing.sign import SignResult
    from aim_cli.signing.verify import VerifyResult

#: Path arguments: a string or any os.PathLike of one.
PathArg = str | os.PathLike[str]
#: ``config=``: a model_repos.yaml path, a loaded Config, or None (the usual search).
ConfigArg = Config | PathArg | None

# Result types of modules that import heavy libraries (cryptography) or that most commands do not
# need: exported by name, imported on first use, so `import aim_cli.api` stays light.
_LAZY_RESULTS = {
    "CheckReport": "aim_cli.audit.check",
    "GcPlan": "aim_cli.audit.gc",
    "GcResult": "aim_cli.audit.gc",
    "LocalReport": "aim_cli.audit.verify",
    "VersionReport": "aim_cli.audit.verify",
    "CacheInfo": "aim_cli.pull.cache",
    "PruneResult": "aim_cli.pull.cache",
    "SignatureInfo": "aim_cli.signing.bundle",
    "SignResult": "aim_cli.signing.sign",
    "VerifyResult": "aim_cli.signing.verify",
}


def __getattr__(name: str) -> Any:
    module = _LAZY_RESULTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = [
    "DEFAULT_JOBS", "CacheInfo", "CheckReport", "Config", "ConfigArg", "CopyResult", "DeleteResult", "DiffResult",
    "ExportResult", "FileInfo", "GcPlan", "GcResult", "Info", "LocalReport", "PathArg", "Progress", "PruneResult",
    "PullPlan", "PullResult", "PushResult", "RepoConfig", "RepoCreated", "Repository", "SignResult",
    "SignatureInfo", "VerifyResult", "VersionDetails", "VersionInfo", "VersionRef", "VersionReport",
    "cache_info", "cache_prune", "check_repo", "collect_garbage", "copy", "create_repo", "delete_repo",
    "delete_versions", "diff", "export_signature", "get_config", "info", "list_models", "list_signatures",
    "list_versions", "open_repository", "plan_pull", "pull", "push", "sign_version", "verify_local",
    "verify_signature", "verify_version", "version_details",
]


def get_config(config: ConfigArg = None, *, must_exist: bool = True) -> Config:
    if isinstance(config, Config):
        return config
    return cfgmod.load_config(config, must_exist=must_exist)


def open_repository(name: str, *, config: ConfigArg = None, jobs: int = DEFAULT_JOBS) -> Repository:
    repo_cfg = get_config(config).repo(name)
    backend = open_backend(repo_cfg, max_connections=jobs)
    backend.check_access()
    return Repository(backend, name, jobs=jobs)


@dataclass(frozen=True)
class Info:
    version: str
    config: str | None  # the model_repos.yaml in use, None when none is found
    repos: list[RepoConfig]


def info(*, config: ConfigArg = None) -> Info:
    """The aim_cli version, the config file in use (``config``, else found as the CLI finds it)
    and its repositories. No storage is reached."""
    from aim_cli import __version__

    path = cfgmod.find_config_path(config)
    cfg = cfgmod.load_config(path) if path else None
    return Info(__version__, str(path) if path else None, list(cfg.repos.values()) if cfg else [])


# -- repositories -----------------------------------------------------------------------------------
def create_repo(name: str, repo_type: str, path: str, *, region: str | None = None,
                endpoint_url: str | None = None, profile: str | None = None,
                addressing_style: str | None = None, chunk_size: int | None = None,
                storage_format: int | None = None, check: bool = True, config: ConfigArg = None) -> RepoCreated:
    """Record the repository in model_repos.yaml (created if needed) and, when the storage can be
    reached (not with ``check=False``), write its aim-repo.json: ``storage_format`` 1 or 2 (the
    default, DEFAULT_FORMAT), or keep the one already there."""
    check_name("repository", name)
    if storage_format is not None and storage_format not in KNOWN_FORMATS:
        raise UsageError(f"--format {storage_format} is not a storage format this aim_cli writes",
                         f"choose one of {', '.join(map(str, KNOWN_FORMATS))}")
    if not check and (chunk_size or storage_format is not None):
        # With --no-check the first push writes aim-repo.json, with the defaults: they would be lost.
        raise UsageError("--chunk-size and --format need the storage, which --no-check does not reach",
                         "drop --no-check (or create the repository when its storage is reachable)")
    cfg = get_config(config, must_exist=False)
    cfgmod.check_unused(cfg, name)  # before touching any storage
    params = None
    if chunk_size:
        try:
            params = ChunkingParams.for_average(chunk_size).validate()
        except ValueError:
            raise UsageError(f"--chunk-size {chunk_size} is out of range",
                             "choose an average chunk size from 1KiB to 4MiB, e.g. 512KiB or 1MiB") from None
    if repo_type == "local" and not os.path.isabs(os.path.expanduser(path)):
        # Typed relative to the current directory; recorded relative to the config file, which
        # is how every later command (run from anywhere) resolves it.
        path = os.path.relpath(os.path.abspath(path), cfg.path.parent)
    raw = {"type": repo_type, "path": path}
    for key, value in (("region", region), ("endpoint_url", endpoint_url), ("profile", profile),
                       ("addressing_style", addressing_style)):
        if value:
            raw[key] = value
    try:
        entry = cfgmod.parse_entry(cfg.path, name, raw, where=f"repository {name!r}")
    except ConfigError as e:  # the values came from the command line: it must change (exit 2)
        raise UsageError(e.message, e.hint) from None
    found_format = None
    if check:
        backend = open_backend(entry)
        backend.check_access()  # StorageError: nothing is written to the config
        repo = Repository(backend, name)
        repo.init(params, version=storage_format or DEFAULT_FORMAT)
        repo.check_conditional_writes()
        found_format = repo.format().version
    cfgmod.add_repo(cfg, entry, path)
    return RepoCreated(entry, found_format is not None, found_format)


@dataclass(frozen=True)
class RepoCreated:
    entry: RepoConfig
    initialised: bool  # its storage was reached and holds aim-repo.json (False with check=False)
    format: int | None  # the storage format it holds (an existing repository keeps its own)


def delete_repo(name: str, *, config: ConfigArg = None) -> RepoConfig:
    """Remove the config entry only; the stored data is not touched."""
    return cfgmod.remove_repo(get_config(config), name)


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

    @classmethod
    def from_summary(cls, s: Summary) -> "VersionInfo":
        """``message`` and ``created_by`` are cut as summary.py says; `version_details` has them whole."""
        return cls(s.model, s.tag, s.digest, s.created_at, s.created_by, s.message, s.total_size, s.files, s.chunks,
                   s.stored_size)


def list_models(repo: str, *, config: ConfigArg = None) -> list[str]:
    """The models with at least one version: one listing, no manifest read."""
    return open_repository(repo, config=config).list_models()


def list_versions(repo: str, model: str, *, config: ConfigArg = None, jobs: int = DEFAULT_JOBS) -> list[VersionInfo]:
    """Oldest first. Read from the versions' summaries (one listing, then small reads on ``jobs``
    threads); a version without one gets it rebuilt from its manifest."""
    return [VersionInfo.from_summary(s) for s in open_repository(repo, config=config, jobs=jobs).list_versions(model)]


# -- transfers ---------------------------------------------------------------------------------------
def push(repo: str, model: str, source: PathArg, *, tag: str, message: str = "",
         jobs: int = DEFAULT_JOBS, follow_symlinks: bool = False, config: ConfigArg = None, progress: Progress | None = None) -> PushResult:
    from aim_cli import push as pushmod

    repository = open_repository(repo, config=config, jobs=jobs)
    return pushmod.push(repository, model, tag, source, message=message, jobs=jobs,
                        follow_symlinks=follow_symlinks, progress=progress)


def plan_pull(repo: str, model: str, dest: PathArg, *, tag: str | None = None, digest: str | None = None,
              jobs: int = DEFAULT_JOBS, references: Sequence[PathArg] = (), config: ConfigArg = None,
              progress: Progress | None = None, include: Sequence[str] = (), exclude: Sequence[str] = (),
              delete: bool = False, require_signature: PathArg | None = None) -> PullPlan:
    """What ``pull`` with the same arguments would do, having created or changed nothing: the
    ``PullPlan`` (``plan.to_json()`` is the shape `model pull --dry-run --json` prints)."""
    from aim_cli.pull import pipeline

    cfg = get_config(config)
    repository = open_repository(repo, config=cfg, jobs=jobs)
    tag, digest = _pin_signed(repository, model, tag, digest, require_signature)
    return pipeline.dry_run(repository, model, dest, tag=tag, digest=digest, references=references,
                            progress=progress, repo_roots=_local_roots(cfg), include=include, exclude=exclude,
                            delete=delete)


@overload
def pull(repo: str, model: str, dest: PathArg, *, tag: str | None = ..., digest: str | None = ...,
         jobs: int = ..., references: Sequence[PathArg] = ..., cache_dir: PathArg | None = ...,
         config: ConfigArg = ..., progress: Progress | None = ..., include: Sequence[str] = ...,
         exclude: Sequence[str] = ..., delete: bool = ..., dry_run: Literal[False] = ...,
         require_signature: PathArg | None = ...) -> PullResult: ...


@overload
def pull(repo: str, model: str, dest: PathArg, *, tag: str | None = ..., digest: str | None = ...,
         jobs: int = ..., references: Sequence[PathArg] = ..., cache_dir: PathArg | None = ...,
         config: ConfigArg = ..., progress: Progress | None = ..., include: Sequence[str] = ...,
         exclude: Sequence[str] = ..., delete: bool = ..., dry_run: Literal[True],
         require_signature: PathArg | None = ...) -> PullPlan: ...


def pull(repo: str, model: str, dest: PathArg, *, tag: str | None = None, digest: str | None = None,
         jobs: int = DEFAULT_JOBS, references: Sequence[PathArg] = (), cache_dir: PathArg | None = None,
         config: ConfigArg = None, progress: Progress | None = None, include: Sequence[str] = (),
         exclude: Sequence[str] = (), delete: bool = False, dry_run: bool = False,
         require_signature: PathArg | None = None) -> PullResult | PullPlan:
    """Pull a version into ``dest``, verified; rerun to resume. Returns a ``PullResult``.

    ``include``/``exclude``: patterns selecting the files, huggingface_hub's ``allow_patterns``/
    ``ignore_patterns`` semantics (aim_cli/util/patterns.py): an include matching no file raises
    UsageError, an exclude matching none logs a warning. ``delete``: also remove the regular
    files of ``dest`` (within the patterns) that the version does not hold. ``require_signature``:
    a public key (PEM) whose signature (either kind) must cover exactly the version's files,
    checked before anything is written; the pull is then pinned to the verified manifest's digest.
    ``dry_run=True`` is deprecated: it returns ``plan_pull(...)``'s plan."""
    if dry_run:
        warnings.warn("pull(dry_run=True) is deprecated: call plan_pull() for the plan", DeprecationWarning,
                      stacklevel=2)
        return plan_pull(repo, model, dest, tag=tag, digest=digest, jobs=jobs, references=references,
                         config=config, progress=progress, include=include, exclude=exclude, delete=delete,
                         require_signature=require_signature)
    from aim_cli.pull import pipeline

    cfg = get_config(config)
    repository = open_repository(repo, config=cfg, jobs=jobs)
    tag, digest = _pin_signed(repository, model, tag, digest, require_signature)
    cache = None
    if cache_dir:
        from aim_cli.pull.cache import ChunkCache

        cache = ChunkCache(cache_dir)
    return pipeline.pull(repository, model, dest, tag=tag, digest=digest, jobs=jobs, references=references,
                         cache=cache, progress=progress, repo_roots=_local_roots(cfg), include=include,
                         exclude=exclude, delete=delete)


def _local_roots(cfg: Config) -> list[str]:
    """The config's local repositories: DEST must stay out of them."""
    return [r.path for r in cfg.repos.values() if r.type == "local"]


def _pin_signed(repository: Repository, model: str, tag: str | None, digest: str | None,
                require_signature: PathArg | None) -> tuple[str | None, str | None]:
    """With ``require_signature``: verify a signature by that key before anything is written, and
    pin the pull to the verified manifest (its tag and digest). Otherwise (tag, digest) as given."""
    if require_signature is None:
        return tag, digest
    from aim_cli.signing.files import read_user_file
    from aim_cli.signing.keys import load_public_key
    from aim_cli.signing.verify import verify_version_signature

    key = load_public_key(read_user_file(require_signature, "public key"), os.fspath(require_signature))
    ref = _resolve(repository, model, tag, digest)
    verify_version_signature(repository, ref, key)
    return ref.manifest.tag, ref.digest


# -- comparing and copying versions (aim_cli/diff.py, aim_cli/copy.py) -----------------------
def diff(repo: str, model: str, tag_a: str, tag_b: str, *, include: Sequence[str] = (), exclude: Sequence[str] = (),
         config: ConfigArg = None) -> DiffResult:
    """What changed from ``model:tag_a`` to ``model:tag_b``: an ``aim_cli.diff.DiffResult`` (files
    added, removed, changed and unchanged with their sizes; what a pull of B over A fetches).
    Reads the two manifests and asks storage the stored size of the chunks B adds; no blob."""
    from aim_cli import diff as diffmod
    from aim_cli.util.patterns import PathFilter

    return diffmod.diff(open_repository(repo, config=config), model, tag_a, tag_b,
                        paths=PathFilter.of(include, exclude))


def copy(src_repo: str, model: str, dst_repo: str, *, tags: Sequence[str] | None = None, jobs: int = DEFAULT_JOBS,
         dry_run: bool = False, config: ConfigArg = None, progress: Progress | None = None) -> CopyResult:
    """Copy versions of ``model`` (``tags``, or all) from ``src_repo`` into ``dst_repo`` with their
    manifests' exact bytes, transferring only the blobs the destination lacks: an
    ``aim_cli.copy.CopyResult``. A tag the destination holds with another digest does
    not raise: it is listed in ``result.conflicts`` and the other versions are copied."""
    from aim_cli import copy as transfer_copy

    cfg = get_config(config)
    source = open_repository(src_repo, config=cfg, jobs=jobs)
    dest = open_repository(dst_repo, config=cfg, jobs=jobs)
    return transfer_copy.copy(source, dest, model, tags, jobs=jobs, dry_run=dry_run, progress=progress)


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


@dataclass(frozen=True)
class DeleteResult:
    model: str
    tags: list[str]
    reclaimable_blobs: int  # named by the deleted versions and by no remaining one
    reclaimable_bytes: int  # their chunk bytes
    reclaimable_stored_bytes: int = 0  # what they take in storage: what `repo gc` frees


def _resolve(repository: Repository, model: str, tag: str | None, digest: str | None) -> VersionRef:
    return repository.resolve_version(model, tag, digest)[0]


def version_details(repo: str, model: str, *, tag: str | None = None, digest: str | None = None,
                    config: ConfigArg = None) -> VersionDetails:
    """One version's manifest: digest, author, message, files with sizes and BLAKE3 (newest without tag)."""
    repository = open_repository(repo, config=config)
    ref = _resolve(repository, model, tag, digest)
    m = ref.manifest
    files = [FileInfo(f.path, f.size, f.mode, f.blake3, len(f.chunks)) for f in m.files]
    chunks = {d: s for f in m.files for d, s in f.chunks}
    stored = repository.stored_sizes(chunks)  # one listing or a HEAD per chunk, whichever is cheaper
    from aim_cli.signing.verify import signatures_of

    return VersionDetails(m.model, m.tag, ref.digest, m.created_at, m.created_by, m.message, m.total_size, files,
                          repository.format().version, sum(chunks.values()), sum(stored.values()),
                          len(chunks) - len(stored), signatures_of(repository, ref))


def verify_version(repo: str, model: str, *, tag: str | None = None, digest: str | None = None,
                   jobs: int = DEFAULT_JOBS, config: ConfigArg = None,
                   progress: Progress | None = None) -> VersionReport:
    """Re-read and re-hash every blob of the version: an ``aim_cli.audit.verify.VersionReport``."""
    from aim_cli.audit import verify

    repository = open_repository(repo, config=config, jobs=jobs)
    return verify.verify_version(repository, _resolve(repository, model, tag, digest), jobs=jobs, progress=progress)


def verify_local(repo: str, model: str, directory: PathArg, *, tag: str | None = None,
                 digest: str | None = None, jobs: int = DEFAULT_JOBS, config: ConfigArg = None, include: Sequence[str] = (),
                 exclude: Sequence[str] = ()) -> LocalReport:
    """Compare ``directory`` with the version by whole-file digests: an ``aim_cli.audit.verify.LocalReport``.
    ``include``/``exclude`` select the files compared (as for `pull`); extra files are reported
    only inside the patterns."""
    from aim_cli.audit import verify

    ref = _resolve(open_repository(repo, config=config), model, tag, digest)
    return verify.verify_local(ref, directory, jobs=jobs, include=include, exclude=exclude)


def check_repo(repo: str, *, read_data: bool = False, jobs: int = DEFAULT_JOBS, config: ConfigArg = None,
               progress: Progress | None = None) -> CheckReport:
    """Check every manifest and the blobs they name: an ``aim_cli.audit.check.CheckReport``."""
    from aim_cli.audit import check

    return check.check_repo(open_repository(repo, config=config, jobs=jobs), read_data=read_data, jobs=jobs,
                            progress=progress)


def collect_garbage(repo: str, *, dry_run: bool = False, config: ConfigArg = None,
                    on_plan: Callable[[GcPlan], None] | None = None) -> GcResult:
    """Delete the blobs no manifest names, under the exclusive lease: an ``aim_cli.audit.gc.GcResult``.
    ``on_plan(plan)`` sees the plan before anything is deleted."""
    from aim_cli.audit import gc

    return gc.collect(open_repository(repo, config=config), dry_run=dry_run, on_plan=on_plan)


def delete_versions(repo: str, model: str, tags: Sequence[str] | None = None, *, config: ConfigArg = None) -> DeleteResult:
    """Delete these versions of ``model`` (all of them, readable or not, when ``tags`` is None) and
    measure what `repo gc` can now free. A tag may also name a stray key exactly (``"v1 copy"``
    for ``versions/v1 copy.json``, ``".DS_Store"``): `repo check` lists them."""
    from aim_cli.audit import gc

    repository = open_repository(repo, config=config)
    if tags is None:
        deleted = [repository.delete_model(model)]
    else:
        deleted = [repository.delete_version(model, t) for t in tags]
    freed = {digest: size for d in deleted for digest, size in d.chunks.items()}
    blobs, nbytes, stored = gc.reclaimable(repository, freed)
    return DeleteResult(model, [name for d in deleted for name in d.names], blobs, nbytes, stored)


# -- the chunk cache ---------------------------------------------------------------------------------
def cache_info(cache_dir: PathArg) -> CacheInfo:
    """(entries, bytes) of the chunk cache at ``cache_dir`` (an ``aim_cli.pull.cache.CacheInfo``)."""
    from aim_cli.pull.cache import ChunkCache

    return ChunkCache(cache_dir).info()


def cache_prune(cache_dir: PathArg, max_size: int = 0, *, dry_run: bool = False) -> PruneResult:
    """Delete the least recently used chunks until the cache holds at most ``max_size`` bytes
    (0 empties it). Returns an ``aim_cli.pull.cache.PruneResult`` (removed, freed, entries, bytes)."""
    from aim_cli.pull.cache import ChunkCache

    return ChunkCache(cache_dir).prune(max_size, dry_run=dry_run)


# -- signatures (aim_cli/signing/) ---------------------------------------------------------
@dataclass(frozen=True)
class ExportResult:
    model: str
    tag: str
    hint: str
    output: str
    bytes: int


def sign_version(repo: str, model: str, *, tag: str, key: PathArg | None = None,
                 password: str | None = None, sha256: bool = False, certificate: PathArg | None = None,
                 certificate_chain: Sequence[PathArg] = (), import_bundle: PathArg | None = None,
                 jobs: int = DEFAULT_JOBS, config: ConfigArg = None) -> SignResult:
    """Sign ``model:tag`` with the EC private key ``key`` (PEM; ``password`` if encrypted) and store
    the bundle: an ``aim_cli.signing.sign.SignResult`` (``created`` False: already signed by that key).
    BLAKE3 (default) reads only the manifest; ``sha256`` streams the verified blobs.
    ``certificate`` (+ ``certificate_chain``): model_signing's certificate method.
    ``import_bundle``: attach a bundle made elsewhere instead, after checking its files."""
    from aim_cli.signing import sign
    from aim_cli.signing.bundle import max_bundle_bytes
    from aim_cli.signing.certificates import load_certificates
    from aim_cli.signing.files import read_user_file
    from aim_cli.signing.keys import load_private_key

    repository = open_repository(repo, config=config, jobs=jobs)
    ref = repository.get_version(model, tag)
    if import_bundle is not None:
        data = read_user_file(import_bundle, "bundle", max_bundle_bytes(ref.manifest))
        return sign.import_bundle(repository, ref, data)
    if key is None:
        raise UsageError("no signing key", "pass --key KEY.pem (or --import BUNDLE)")
    private_key = load_private_key(read_user_file(key, "key"), password, os.fspath(key))
    certificates = load_certificates(private_key, certificate, certificate_chain) if certificate else ()
    return sign.sign_version(repository, ref, private_key, kind="sha256" if sha256 else "blake3",
                             certificates=certificates)


def verify_signature(repo: str, model: str, *, tag: str, public_key: PathArg | None = None,
                     certificate_chain: Sequence[PathArg] = (), local: PathArg | None = None,
                     jobs: int = DEFAULT_JOBS, config: ConfigArg = None) -> VerifyResult:
    """A signature by ``public_key`` (PEM), or by a certificate that ``certificate_chain`` (trust
    roots) vouches for, covering exactly the version's files and digests (or those of the
    directory ``local``): an ``aim_cli.signing.verify.VerifyResult``; IntegrityError otherwise."""
    from aim_cli.signing.certificates import load_trust_roots
    from aim_cli.signing.files import read_user_file
    from aim_cli.signing.keys import load_public_key
    from aim_cli.signing.verify import verify_version_certificates, verify_version_signature

    repository = open_repository(repo, config=config, jobs=jobs)
    ref = repository.get_version(model, tag)
    if public_key is not None:
        key = load_public_key(read_user_file(public_key, "public key"), os.fspath(public_key))
        return verify_version_signature(repository, ref, key, local=local)
    if certificate_chain:
        roots = load_trust_roots(certificate_chain)
        return verify_version_certificates(repository, ref, roots, local=local)
    raise UsageError("no key to verify with", "pass --public-key KEY.pub or --certificate-chain ROOTS.pem")


def export_signature(repo: str, model: str, output: PathArg, *, tag: str, sha256: bool = False,
                     signer: str | None = None, config: ConfigArg = None) -> ExportResult:
    """Write a stored bundle of ``model:tag`` to ``output`` for the upstream tools: the
    ``signer``'s (16 hex; the only one when None) of the BLAKE3 or the ``sha256`` kind."""
    from aim_cli.signing.bundle import max_bundle_bytes, parse_bundle
    from aim_cli.signing.files import write_new_file
    from aim_cli.signing.verify import choose_signature, read_bundle

    repository = open_repository(repo, config=config)
    ref = repository.get_version(model, tag)
    hint = choose_signature(repository.list_signatures(model, tag), "sha256" if sha256 else "blake3",
                            signer, f"{model}:{tag}")
    data = read_bundle(repository, ref, hint)
    parse_bundle(data, max_size=max_bundle_bytes(ref.manifest))
    write_new_file(output, data)
    return ExportResult(model, tag, hint, os.fspath(output), len(data))


def list_signatures(repo: str, model: str, *, tag: str, config: ConfigArg = None) -> list[SignatureInfo]:
    """The version's stored signatures: ``aim_cli.signing.bundle.SignatureInfo`` (hint, kind, method)."""
    from aim_cli.signing.verify import signatures_of

    repository = open_repository(repo, config=config)
    return signatures_of(repository, repository.get_version(model, tag))
