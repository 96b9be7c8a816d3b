"""Repository: content-addressed blobs and version manifests over one Backend.

Everything read through a Repository is verified: ``get_blob`` re-hashes, ``get_version`` parses
and validates. Nothing above this package sees an unverified byte or a storage key. Every read is
bounded by what is expected: a blob by its chunk's size, a manifest by MAX_MANIFEST_BYTES, a
summary by summary.MAX_SUMMARY_BYTES, aim-repo.json by MAX_REPO_META_BYTES.

``Repository`` is the one object callers hold. It delegates each call to the role that does it:

    meta.py        aim-repo.json: init, format, new-root checks, the conditional-write probe
    blobs.py       the chunks below blobs/ (format 3's deltas decoded by delta_chain.py)
    edges.py       format 3's delta edges below edges/
    versions.py    the manifests: commit, reads, listings, the newest version
    summaries.py   what listings read instead of manifests
    signatures.py  signers' bundles of a version
    aliases.py     movable names of versions, each with its history (resolution: tag, then alias)
    deletion.py    delete-version and delete (model)

The roles share one ``StoredKeys`` (keys.py), through which they list and read the keys below
``models/`` (format/layout.py builds and parses them).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TypeVar

from aim_cli.backends.base import Backend, Bytes
from aim_cli.chunking.cdc import ChunkingParams
from aim_cli.defaults import DEFAULT_JOBS
from aim_cli.format import manifest as mf
from aim_cli.format import summary as sm
from aim_cli.format.alias import AliasRecord
from aim_cli.format.layout import (
    MAX_SIGNATURE_BYTES,
    WRITE_DIRS,
    AliasKey,
    AliasStatementKey,
    SignatureKey,
    VersionKey,
)
from aim_cli.format.repo_format import DEFAULT_FORMAT, RepoFormat
from aim_cli.repository.aliases import Aliases, History
from aim_cli.repository.blobs import Blobs
from aim_cli.repository.deletion import Deleted, Deletion
from aim_cli.repository.delta_chain import BaseSource
from aim_cli.repository.edges import Edges
from aim_cli.repository.keys import StoredKeys
from aim_cli.repository.meta import RepoMeta
from aim_cli.repository.parallel import map_parallel
from aim_cli.repository.signatures import Signatures
from aim_cli.repository.summaries import Summaries
from aim_cli.repository.versions import CommitResult, VersionRef, Versions

T = TypeVar("T")
R = TypeVar("R")


class Repository:
    """The repository ``name`` (default: the backend's location) stored in ``backend``; bulk
    operations make up to ``jobs`` storage requests at once. Each method is its role's (see the
    module docstring), where its documentation is."""

    def __init__(self, backend: Backend, name: str = "", *, jobs: int = DEFAULT_JOBS):
        self.backend = backend
        self.name = name or backend.location
        self.jobs = jobs
        keys = StoredKeys(backend, self.name)
        self._keys = keys
        self._meta = RepoMeta(backend, self.name)
        #: Format 3's delta edges (edges.py): used directly by the delta code, gc and check.
        self.edges = Edges(backend)
        self._blobs = Blobs(backend, self.name, self._meta, jobs, self.edges)
        self._summaries = Summaries(keys, jobs)
        self._versions = Versions(keys, self._meta, self._summaries)
        self._signatures = Signatures(keys)
        self._aliases = Aliases(keys, self._versions, jobs)
        self._deletion = Deletion(keys, self._versions, self._signatures, self._aliases, jobs, self._meta.format)

    def map_parallel(self, fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
        """``fn`` over ``items`` on up to ``jobs`` threads (each call is a storage request)."""
        return map_parallel(fn, items, self.jobs)

    def sync(self) -> None:
        self.backend.sync()

    def clean_incomplete(self, older_than: float) -> tuple[int, int]:
        """(count, bytes) of abandoned partial writes removed (a killed push's temp files), looked
        for only where aim_cli writes (WRITE_DIRS)."""
        return self.backend.clean_incomplete(older_than, WRITE_DIRS)

    # -- repository metadata (meta.py) -------------------------------------------------------------
    def init(
        self, params: ChunkingParams | None = None, *, version: int = DEFAULT_FORMAT, like: RepoFormat | None = None
    ) -> ChunkingParams:
        return self._meta.init(params, version=version, like=like)

    def check_can_init(self) -> None:
        self._meta.check_can_init()

    def check_conditional_writes(self) -> None:
        self._meta.check_conditional_writes()

    def exists(self) -> bool:
        return self._meta.exists()

    def format(self) -> RepoFormat:
        return self._meta.format()

    def params(self) -> ChunkingParams:
        return self._meta.params()

    # -- blobs (blobs.py) --------------------------------------------------------------------------
    def put_blob(self, digest: str, data, element_size: int = 1) -> int:
        return self._blobs.put_blob(digest, data, element_size)

    def get_blob(self, digest: str, size: int, *, context: str = "", base_source: BaseSource | None = None) -> Bytes:
        return self._blobs.get_blob(digest, size, context=context, base_source=base_source)

    def fetch_blob(
        self, digest: str, size: int, *, context: str = "", base_source: BaseSource | None = None
    ) -> tuple[Bytes, int]:
        return self._blobs.fetch_blob(digest, size, context=context, base_source=base_source)

    def fetch_blob_via(
        self, digest: str, size: int, dependent: str, dependent_data, *, context: str = ""
    ) -> tuple[Bytes, int] | None:
        return self._blobs.fetch_blob_via(digest, size, dependent, dependent_data, context=context)

    def get_stored_blob(
        self, digest: str, size: int, *, context: str = "", base_source: BaseSource | None = None
    ) -> tuple[bytes, Bytes]:
        return self._blobs.get_stored_blob(digest, size, context=context, base_source=base_source)

    def put_stored_blob(self, digest: str, stored: bytes) -> None:
        self._blobs.put_stored_blob(digest, stored)

    def get_stored_chain(self, digest: str, size: int, *, context: str = "") -> tuple[list[tuple[str, bytes]], Bytes]:
        return self._blobs.get_stored_chain(digest, size, context=context)

    def put_stored_delta(self, digest: str, stored: bytes, base: str) -> None:
        self._blobs.put_stored_delta(digest, stored, base)

    def read_stored_blob(self, digest: str, stored_size: int) -> int:
        return self._blobs.read_stored_blob(digest, stored_size)

    def put_delta(
        self, digest: str, data, base_digest: str, base_data, element_size: int, plain_size: int
    ) -> int | None:
        return self._blobs.put_delta(digest, data, base_digest, base_data, element_size, plain_size)

    def delta_base_of(self, digest: str) -> str | None:
        return self._blobs.delta_base_of(digest)

    def put_plain(self, digest: str, data, element_size: int = 1) -> int:
        return self._blobs.put_plain(digest, data, element_size)

    def has_blob(self, digest: str) -> bool:
        return self._blobs.has_blob(digest)

    def stored_size(self, digest: str) -> int | None:
        return self._blobs.stored_size(digest)

    def stored_sizes(self, digests: Iterable[str]) -> dict[str, int]:
        return self._blobs.stored_sizes(digests)

    def stored_blob_index(self, expected_lookups: int) -> dict[str, int] | None:
        return self._blobs.stored_blob_index(expected_lookups)

    def missing_blobs(self, digests: Iterable[str]) -> set[str]:
        return self._blobs.missing_blobs(digests)

    def iter_blob_keys(self) -> Iterator[tuple[str, str | None, int]]:
        return self._blobs.iter_blob_keys()

    def iter_blobs(self) -> Iterator[tuple[str, int]]:
        return self._blobs.iter_blobs()

    def delete_blobs(self, digests: Iterable[str]) -> None:
        self._blobs.delete_blobs(digests)

    # -- versions (versions.py) --------------------------------------------------------------------
    def commit(
        self,
        manifest: mf.Manifest,
        *,
        stored_size: int | None = None,
        delta_base: str | None = None,
        new_stored_size: int | None = None,
    ) -> CommitResult:
        return self._versions.commit(
            manifest, stored_size=stored_size, delta_base=delta_base, new_stored_size=new_stored_size
        )

    def commit_raw(self, raw: bytes, *, stored_size: int | None = None) -> CommitResult:
        return self._versions.commit_raw(raw, stored_size=stored_size)

    def against_stored(self, stored: VersionRef, manifest: mf.Manifest) -> CommitResult:
        return self._versions.against_stored(stored, manifest)

    def has_version(self, model: str, tag: str) -> bool:
        return self._versions.has_version(model, tag)

    def get_version(self, model: str, tag: str) -> VersionRef:
        return self._versions.get_version(model, tag)

    def find_version(self, model: str, tag: str) -> VersionRef | None:
        return self._versions.find_version(model, tag)

    def read_key(self, vk: VersionKey) -> VersionRef:
        return self._versions.read_key(vk)

    def summary_of(
        self, ref: VersionRef, stored_size: int | None = None, *, new_stored_size: int | None = None
    ) -> sm.Summary:
        return self._versions.summary_of(ref, stored_size, new_stored_size=new_stored_size)

    def iter_version_keys(self, model: str | None = None) -> Iterator[VersionKey]:
        return self._versions.iter_version_keys(model)

    def warn_stray(self, vk: VersionKey) -> None:
        self._keys.warn_stray(vk)

    def list_models(self) -> list[str]:
        return self._versions.list_models()

    def list_tags(self, model: str) -> list[str]:
        return self._versions.list_tags(model)

    def model_exists(self, model: str) -> bool:
        return self._versions.model_exists(model)

    def newest_version(self, model: str) -> VersionRef:
        return self._versions.newest_version(model)

    def resolve_version(self, model: str, tag: str | None, digest: str | None) -> tuple[VersionRef, bool]:
        return self._aliases.resolve_version(model, tag, digest)  # a tag, else an alias

    # -- summaries (summaries.py) ------------------------------------------------------------------
    def put_summary(self, summary: sm.Summary) -> None:
        self._summaries.put_summary(summary)

    def get_summary(self, model: str, tag: str) -> sm.Summary:
        return self._summaries.get_summary(model, tag)

    def list_versions(self, model: str) -> list[sm.Summary]:
        return self._summaries.list_versions(model)

    def summary_problems(self, known: Mapping[str, sm.Summary] | None = None) -> list[tuple[str, str]]:
        return self._summaries.summary_problems(known)

    # -- signatures (signatures.py) ----------------------------------------------------------------
    def put_signature(self, model: str, tag: str, hint: str, bundle: bytes) -> bool:
        return self._signatures.put_signature(model, tag, hint, bundle)

    def list_signatures(self, model: str, tag: str) -> list[str]:
        return self._signatures.list_signatures(model, tag)

    def iter_signature_keys(self) -> Iterator[SignatureKey]:
        return self._signatures.iter_signature_keys()

    def get_signature(self, model: str, tag: str, hint: str, *, max_size: int = MAX_SIGNATURE_BYTES) -> bytes:
        return self._signatures.get_signature(model, tag, hint, max_size=max_size)

    # -- aliases (aliases.py) ----------------------------------------------------------------------
    def set_alias(
        self,
        model: str,
        alias: str,
        tag: str,
        *,
        message: str = "",
        at: str | None = None,
        by: str | None = None,
        again: bool = False,
    ) -> tuple[AliasRecord, bool]:
        return self._aliases.set_alias(model, alias, tag, message=message, at=at, by=by, again=again)

    def latest_alias_entry(self, model: str, alias: str) -> AliasRecord | None:
        return self._aliases.latest(model, alias)

    def delete_alias(
        self, model: str, alias: str, *, message: str = "", at: str | None = None, by: str | None = None
    ) -> AliasRecord:
        return self._aliases.delete_alias(model, alias, message=message, at=at, by=by)

    def get_alias(self, model: str, alias: str) -> AliasRecord:
        return self._aliases.get(model, alias)

    def current_alias(self, model: str, alias: str) -> AliasRecord | None:
        return self._aliases.current(model, alias)

    def list_aliases(self, model: str) -> list[AliasRecord]:
        return self._aliases.list_aliases(model)

    def alias_history(self, model: str, alias: str) -> History:
        return self._aliases.history(model, alias)

    def alias_target(self, record: AliasRecord) -> VersionRef:
        return self._aliases.target_of(record)

    def iter_alias_keys(self) -> Iterator[AliasKey]:
        return self._aliases.iter_alias_keys()

    def put_alias_statement(self, model: str, alias: str, index: int, signer: str, data: bytes) -> bool:
        return self._aliases.put_statement(model, alias, index, signer, data)

    def get_alias_statement(self, model: str, alias: str, index: int, signer: str, *, max_size: int) -> bytes:
        return self._aliases.get_statement(model, alias, index, signer, max_size=max_size)

    def iter_alias_statement_keys(self) -> Iterator[AliasStatementKey]:
        return self._aliases.iter_statement_keys()

    def refuse_tag_is_alias(self, model: str, tag: str) -> None:
        self._aliases.refuse_tag_is_alias(model, tag)

    # -- deletion (deletion.py) --------------------------------------------------------------------
    def find_version_key(self, model: str, name: str) -> VersionKey:
        return self._deletion.find_version_key(model, name)

    def delete_version(self, model: str, tag: str, *, force: bool = False) -> Deleted:
        return self._deletion.delete_version(model, tag, force=force)

    def delete_model(self, model: str) -> Deleted:
        return self._deletion.delete_model(model)
