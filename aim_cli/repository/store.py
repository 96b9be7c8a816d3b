"""Repository: content-addressed blobs and version manifests over one Backend.

The key layout (format 1, DESIGN.md section 2; pinned by tests/test_store.py):

    aim-repo.json                        {"format": 1, "chunking": {...}, "hash": "blake3"}
    blobs/<h[0:2]>/<h>                   one chunk; h = BLAKE3 hex of its bytes
    models/<model>/versions/<tag>.json   one immutable manifest: the commit point
    models/<model>/summaries/<tag>.json  its summary (summary.py): what listings read
    locks/<id>.json                      gc/push leases

Everything read through a Repository is verified: ``get_blob`` re-hashes, ``get_manifest`` parses
and validates. Nothing above this module sees an unverified byte or a storage key. Every read is
bounded by what is expected: a blob by its chunk's size, a manifest by MAX_MANIFEST_BYTES, a
summary by summary.MAX_SUMMARY_BYTES, aim-repo.json by MAX_REPO_META_BYTES.

Summaries. A manifest of a big model is megabytes (100 of them took `model versions` 16 s and
3.4 GB); listings and the newest-tag resolution read each version's summary instead: one
listing of ``models/<model>/``, then small reads in parallel. Push writes it right after the
commit (``commit``; a failure is a warning). A version without one (a push killed between the two
writes, a repository written by an older aim_cli) gets it rebuilt from its manifest by the next
listing, written back best-effort. A summary without its manifest (a listing's rebuild racing a
delete) is ignored by listings and removed by `delete-version`; one that does not parse, names
another version or disagrees with its manifest is damage (``summary_problems``, for `repo
check`). gc never reads summaries: they name no blob.

Keys are built and parsed only in format/layout.py. A key below ``models/`` that is not ``<model>/versions/<tag>.json``
or ``<model>/summaries/<tag>.json`` with valid names (``v1 copy.json``, ``.DS_Store``, a nested
file) is a *stray*: aim_cli never writes one, but people and tools do. Listings skip a stray
with a warning on stderr; `repo check` reports it as damage; `model delete-version` removes it by its exact name; gc keeps the blobs it
names if it parses as a manifest and refuses to run if it cannot tell. A new repository's root
must be empty and must not lie inside another repository (``init``).
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import blake3

from aim_cli.format import manifest as mf
from aim_cli.format import summary as sm
from aim_cli.backends.base import Backend, ObjectInfo
from aim_cli.backends.readahead import ReadAhead
from aim_cli.chunking.cdc import ChunkingParams
from aim_cli.format.blob_codec import CorruptBlob
from aim_cli.format.layout import (BLOBS, MANIFEST_SUFFIX, MAX_REPO_META_BYTES, MAX_SIGNATURE_BYTES, MODELS,
                                   REPO_META_KEY, SHARDS, WRITE_DIRS, SignatureKey, SummaryKey, VersionKey, blob_key,
                                   digest_of_shard_key, manifest_key, model_prefix, parse_model_key, parse_version_key,
                                   signature_key, signatures_prefix, summary_key, versions_prefix)
from aim_cli.format.repo_format import DEFAULT_FORMAT, RepoFormat, parse_meta
from aim_cli.names import check_name, valid_name
from aim_cli.errors import (BlobCorruptError, BlobMissingError, DamagedStorageError, IntegrityError,
                            KeyNotFoundError, NotARepositoryError, NotEmptyError, NotFoundError,
                            ObjectTooLargeError, StorageError, TagExistsError, UsageError,
                            VersionNotFoundError)

log = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")

#: The bound on a manifest read. manifest.py owns the limit; this fallback holds until it has one.
MAX_MANIFEST_BYTES: int = mf.MAX_MANIFEST_BYTES


def _check_segment(kind: str, name: str) -> str:
    """``name`` as one key segment, where a stored key may hold any name (delete-version)."""
    if not isinstance(name, str) or name in ("", ".", "..") or "/" in name or "\x00" in name or len(name) > 1024:
        raise UsageError(f"invalid {kind} name {name!r}",
                         "give it as `aim_cli model versions` or `aim_cli repo check` shows it")
    return name


def is_empty(backend: Backend) -> bool:
    """True when ``backend`` holds no object. Something it refuses to list as one (a link, a
    FIFO) is content too."""
    try:
        for _ in backend.list(""):
            return False
    except DamagedStorageError:
        return False
    return True


@dataclass(frozen=True)
class VersionRef:
    """A manifest resolved once: the immutable id every later step works from."""

    manifest: mf.Manifest
    digest: str
    raw: bytes


@dataclass(frozen=True)
class CommitResult:
    digest: str
    created: bool  # False: the identical version was already there


@dataclass(frozen=True)
class Deleted:
    """What a deletion removed: the tags (or strays' names), and digest -> size of every blob the
    readable ones named (for the bytes `repo gc` can now free). Not the manifests: a model's 100
    versions of a 70B model's manifests, decoded, took 3 GB."""

    names: list[str]
    chunks: dict[str, int]


class Repository:
    def __init__(self, backend: Backend, name: str = "", *, jobs: int = 8):
        self.backend = backend
        self.name = name or backend.location
        self.jobs = jobs
        self._format: RepoFormat | None = None

    def map_parallel(self, fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
        """``fn`` over ``items`` on up to ``jobs`` threads (each call is a storage request)."""
        if not items:
            return []
        with ThreadPoolExecutor(max(1, min(self.jobs, len(items)))) as pool:
            return list(pool.map(fn, items))

    # -- repository metadata ---------------------------------------------------------------------
    def init(self, params: ChunkingParams | None = None, *, version: int = DEFAULT_FORMAT,
             like: RepoFormat | None = None) -> ChunkingParams:
        """Write aim-repo.json if absent (exclusive create: two first pushes agree on one), then
        return the repository's chunking parameters, which may be another client's (and so may
        its format be). A new repository's root must be empty and must not lie inside another
        one: NotEmptyError. ``like``: the whole format of another repository (`model copy`), so
        that both cut the same chunks."""
        meta = (like or RepoFormat.new(version, params)).meta()
        if not self.backend.exists(REPO_META_KEY):  # a HEAD is cheaper than a refused conditional PUT
            self._check_new_root()
            self.backend.put_if_absent(REPO_META_KEY, json.dumps(meta, indent=2).encode() + b"\n")
        self._format = None
        return self.params()

    def _check_new_root(self) -> None:
        """Refuse to create a repository inside another one, or over data that is not one (a typo
        in a path must not turn someone's directory into a repository that gc then sweeps)."""
        where = self.backend.location
        outer = self.backend.find_in_parents(REPO_META_KEY)
        if outer is not None:
            raise NotEmptyError(f"repository {self.name!r} at {where} would lie inside the repository at {outer}",
                                "repositories never nest: choose a path outside it", location=where)
        # A concurrent first push may have created it since our look: then it is a repository.
        if not is_empty(self.backend) and not self.backend.exists(REPO_META_KEY):
            raise NotEmptyError(f"{where} is not empty and holds no repository (no {REPO_META_KEY}), so repository "
                                f"{self.name!r} cannot be created there",
                                "choose an empty directory or prefix, or fix the path", location=where)

    def _read_meta(self) -> bytes:
        try:
            return self.backend.get(REPO_META_KEY, max_size=MAX_REPO_META_BYTES)
        except KeyNotFoundError:
            raise NotARepositoryError(
                f"no repository {self.name!r} there: {self.backend.location} holds no {REPO_META_KEY}",
                "push a model to create it, or fix the path in model_repos.yaml", location=self.backend.location,
            ) from None
        except ObjectTooLargeError:
            raise IntegrityError(f"{REPO_META_KEY} of repository {self.name!r} is larger than "
                                 f"{MAX_REPO_META_BYTES} bytes, so it is not one",
                                 "restore it from a backup or another client's copy") from None

    def check_conditional_writes(self) -> None:
        """Refuse storage that ignores exclusive creates: immutable tags rest on them. Probes
        with aim-repo.json's own bytes, so a server that does overwrite changes nothing."""
        raw = self._read_meta()
        if self.backend.put_if_absent(REPO_META_KEY, raw):
            raise StorageError(
                f"storage of repository {self.name!r} at {self.backend.location} ignores conditional writes "
                f"(If-None-Match), so two pushes of one tag could both succeed",
                "use a server with conditional writes (AWS S3, recent MinIO, R2, Ceph RGW)",
            )

    def exists(self) -> bool:
        return self.backend.exists(REPO_META_KEY)

    def format(self) -> RepoFormat:
        """The storage format pinned in aim-repo.json. NotARepositoryError if there is none:
        every command that needs a repository (gc and check too) asks this first, and every
        command that reads a blob asks it before (a format 2 blob read as format 1 is "corrupt")."""
        if self._format is None:
            self._format = parse_meta(self._read_meta(), self.name)
        return self._format

    def params(self) -> ChunkingParams:
        """The chunking parameters pinned in aim-repo.json (``format().chunking``)."""
        return self.format().chunking

    # -- blobs -------------------------------------------------------------------------------------
    def _list(self, prefix: str) -> Iterator[ObjectInfo]:
        """The backend's listing without S3 "folder" markers (an empty ``a/b/`` object that S3
        consoles create): no key of the layout ends with "/", and an empty object names nothing."""
        return (info for info in self.backend.list(prefix) if not (info.size == 0 and info.key.endswith("/")))

    def put_blob(self, digest: str, data, element_size: int = 1) -> int:
        """Store the chunk ``data`` (raw bytes, named ``digest``) in the repository's format;
        return the bytes stored. ``element_size`` is the chunker's hint for the codec."""
        stored = self.format().encode(data, element_size)
        self.backend.put(blob_key(digest), stored)
        return len(stored)

    def get_blob(self, digest: str, size: int, *, context: str = "") -> bytes:
        """The chunk's raw bytes, verified against ``digest`` and ``size`` (what a manifest names)."""
        return self.fetch_blob(digest, size, context=context)[0]

    def fetch_blob(self, digest: str, size: int, *, context: str = "") -> tuple[bytes, int]:
        """(the chunk's raw bytes, the bytes read from storage), verified against ``digest`` and
        ``size``. Reads stop past the largest object that can hold ``size`` bytes in this
        repository's format, so memory stays bounded whatever the storage holds; decoding is
        bounded by ``size`` too. Missing: BlobMissingError; altered, truncated, oversized or
        undecodable: BlobCorruptError; both name the blob and carry its digest."""
        where = f" (needed by {context})" if context else ""
        fmt = self.format()
        stored = self._get_stored(digest, fmt.max_stored_size(size), where)
        return self._decoded(digest, stored, size, where), len(stored)

    def _get_stored(self, digest: str, max_size: int, where: str) -> bytes:
        try:
            return self.backend.get(blob_key(digest), max_size=max_size)
        except KeyNotFoundError:
            raise BlobMissingError(
                f"blob {digest} is missing from repository {self.name!r}{where}",
                "push the same files again (under a new tag) to restore it; `aim_cli repo check` lists all damage",
                digest=digest,
            ) from None
        except ObjectTooLargeError:
            raise self._corrupt(digest, f"it is larger than {max_size} bytes, the most its chunk can take",
                                where) from None

    def _decoded(self, digest: str, stored: bytes, size: int, where: str) -> bytes:
        try:
            data = self.format().decode(stored, size)
        except CorruptBlob as e:
            raise self._corrupt(digest, str(e), where) from None
        if blake3.blake3(data).hexdigest() != digest:
            raise self._corrupt(digest, "its content does not match its hash", where)
        return data

    def get_stored_blob(self, digest: str, size: int, *, context: str = "") -> tuple[bytes, bytes]:
        """(the stored object, the chunk's raw bytes), verified as ``fetch_blob`` verifies: for
        copying a blob between repositories of the same format as it is (``put_stored_blob``)."""
        where = f" (needed by {context})" if context else ""
        stored = self._get_stored(digest, self.format().max_stored_size(size), where)
        return stored, self._decoded(digest, stored, size, where)

    def put_stored_blob(self, digest: str, stored: bytes) -> None:
        """Store an object that ``get_stored_blob`` of a repository of this format returned."""
        self.backend.put(blob_key(digest), stored)

    def read_stored_blob(self, digest: str, stored_size: int) -> int:
        """Read and verify a stored blob that no manifest may name (`repo check --read-data`):
        its raw size comes from the object itself. Returns the raw size; BlobMissingError or
        BlobCorruptError as ``fetch_blob``."""
        fmt = self.format()
        stored = self._get_stored(digest, min(stored_size, fmt.max_stored_size(mf.MAX_CHUNK_SIZE)), "")
        try:
            size = fmt.raw_size_of(stored)
        except CorruptBlob as e:
            raise self._corrupt(digest, str(e), "") from None
        if size > mf.MAX_CHUNK_SIZE:  # no chunk is larger: never decode towards what a header claims
            raise self._corrupt(digest, f"its header claims {size} bytes, more than any chunk", "")
        self._decoded(digest, stored, size, "")
        return size

    def _corrupt(self, digest: str, what: str, where: str) -> BlobCorruptError:
        return BlobCorruptError(
            f"blob {digest} in repository {self.name!r} is corrupt: {what}{where}",
            "delete that blob, then push the same files again (under a new tag) to restore it; "
            "`aim_cli repo check --read-data` lists all damage",
            digest=digest, reason=what,
        )

    def has_blob(self, digest: str) -> bool:
        return self.backend.exists(blob_key(digest))

    def stored_size(self, digest: str) -> int | None:
        """The bytes the blob takes in storage, or None if it is not stored (one HEAD)."""
        return self.backend.size(blob_key(digest))

    def stored_sizes(self, digests: Iterable[str]) -> dict[str, int]:
        """digest -> stored bytes of those of ``digests`` that are stored, asked in bulk
        (listing or parallel HEADs, whichever is cheaper)."""
        wanted = set(digests)
        index = self.stored_blob_index(len(wanted))
        if index is not None:
            return {d: index[d] for d in wanted if d in index}
        ordered = sorted(wanted)
        return {d: n for d, n in zip(ordered, self.map_parallel(self.stored_size, ordered)) if n is not None}

    def stored_blob_index(self, expected_lookups: int) -> dict[str, int] | None:
        """digest -> stored size of all stored blobs when listing them is cheaper than ``expected_lookups`` single
        existence checks, else None (then ask blob by blob with ``stored_size``).

        A check costs one request; a listing one request per ~1000 blobs. Like dvc's
        ``oids_exist``, estimate the number of stored blobs from one of the 256 prefixes."""
        if expected_lookups < 16:
            return None
        sample = random.choice(SHARDS)
        estimate = 256 * sum(1 for _ in self.backend.list(f"{BLOBS}{sample}/"))
        if estimate / 1000 >= expected_lookups / 4:
            return None
        return dict(self.iter_blobs())

    def missing_blobs(self, digests: Iterable[str]) -> set[str]:
        """Which of ``digests`` the repository lacks, asked in bulk (listing or parallel checks)."""
        wanted = set(digests)
        return wanted - self.stored_sizes(wanted).keys()

    def iter_blob_keys(self) -> Iterator[tuple[str, str | None, int]]:
        """(key, digest, size) of every object below blobs/; digest None for a key that is not
        ``blobs/<h[0:2]>/<h>`` (a stray: gc never deletes it, `repo check` reports it)."""
        for info in self._list(BLOBS):
            yield info.key, digest_of_shard_key(info.key[len(BLOBS):]), info.size

    def iter_blobs(self) -> Iterator[tuple[str, int]]:
        """(digest, size) of every stored blob."""
        for _, digest, size in self.iter_blob_keys():
            if digest is not None:
                yield digest, size

    def delete_blobs(self, digests: Iterable[str]) -> None:
        self.backend.delete_many(blob_key(d) for d in digests)

    def sync(self) -> None:
        self.backend.sync()

    def clean_incomplete(self, older_than: float) -> tuple[int, int]:
        """(count, bytes) of abandoned partial writes removed (a killed push's temp files), looked
        for only where aim_cli writes (WRITE_DIRS)."""
        return self.backend.clean_incomplete(older_than, WRITE_DIRS)

    # -- manifests ---------------------------------------------------------------------------------
    def commit(self, manifest: mf.Manifest, *, stored_size: int | None = None) -> CommitResult:
        """Create the version: the exclusive create of its manifest is the commit point.

        The caller has stored (and synced) every blob first; ``stored_size`` is what they take
        (for the summary; ignored in format 1, see summary.py). If the tag exists with the same
        files, nothing is written and the stored digest is returned. Once created, the manifest is
        read back: a server that ignored the condition would show another writer's bytes here."""
        stored, ours = self._create_version(manifest.model, manifest.tag, mf.encode(manifest), stored_size)
        return CommitResult(stored.digest, True) if ours else self.against_stored(stored, manifest)

    def commit_raw(self, raw: bytes, *, stored_size: int | None = None) -> CommitResult:
        """Create a version from a manifest's exact bytes, as another repository stores them
        (`model copy`), so that its digest is the same in both; as ``commit`` otherwise. The tag
        held by other bytes is a TagExistsError, even with the same files: its digest differs."""
        manifest = mf.decode(raw, where="the manifest to copy")
        check_name("model", manifest.model)  # before they make a key
        check_name("tag", manifest.tag)
        stored, ours = self._create_version(manifest.model, manifest.tag, raw, stored_size)
        if ours:
            return CommitResult(stored.digest, True)
        raise TagExistsError(
            f"version {manifest.tag!r} of model {manifest.model!r} already exists in {self.name!r} with another "
            f"digest ({stored.digest[:16]}, not {mf.digest_of(raw)[:16]})", "versions are immutable")

    def _create_version(self, model: str, tag: str, raw: bytes, stored_size: int | None) -> tuple[VersionRef, bool]:
        """The exclusive create of manifest ``raw``, then its read-back: (the stored version,
        whether it is ``raw``). When it is, its summary is written."""
        # Whatever put_if_absent answers, the read-back decides: the stored bytes are the truth.
        self.backend.put_if_absent(manifest_key(model, tag), raw)
        stored = self.get_version(model, tag)
        if stored.raw != raw:
            return stored, False
        # Ours, byte for byte (created_at has microseconds), even when a retried PUT whose
        # first answer was lost saw 412 for our own write.
        self._write_summary_after_commit(stored, stored_size if self.format().codecs is not None else None)
        return stored, True

    def _write_summary_after_commit(self, ref: VersionRef, stored_size: int | None) -> None:
        """The summary comes second: the manifest is the commit point, and a version whose summary
        was not written (a failure here, a kill) gets it rebuilt by the next listing. So a failure
        is a warning, never a failed push."""
        try:
            self.put_summary(self.summary_of(ref, stored_size))
        except (StorageError, DamagedStorageError) as e:
            log.warning("warning: %s:%s is pushed, but its summary could not be written (%s); the next listing "
                        "rebuilds it", ref.manifest.model, ref.manifest.tag, e.message)

    def against_stored(self, stored: VersionRef, manifest: mf.Manifest) -> CommitResult:
        """The outcome of pushing ``manifest`` where ``stored`` already holds its tag: the same
        files are "already pushed" (nothing written); other files are a TagExistsError."""
        if stored.manifest.same_content(manifest):
            return CommitResult(stored.digest, False)
        raise TagExistsError(
            f"version {manifest.tag!r} of model {manifest.model!r} already exists in {self.name!r} "
            f"with other content (digest {stored.digest[:16]})",
            "versions are immutable: push under a new --tag",
        )

    def has_version(self, model: str, tag: str) -> bool:
        return self.backend.exists(manifest_key(model, tag))

    def _manifest_bytes(self, key: str, where: str) -> bytes:
        """A manifest's bytes, read at most MAX_MANIFEST_BYTES + 1 of them. KeyNotFoundError passes."""
        try:
            return self.backend.get(key, max_size=MAX_MANIFEST_BYTES)
        except ObjectTooLargeError:
            raise IntegrityError(
                f"manifest {where} in repository {self.name!r} is larger than the {MAX_MANIFEST_BYTES} bytes a "
                f"manifest may have", "the version is corrupt or was not written by aim_cli; delete it with "
                "`aim_cli model delete-version`") from None

    def _not_found(self, model: str, tag: str) -> VersionNotFoundError:
        if not valid_name(model) or not self.model_exists(model):
            return VersionNotFoundError(f"model {model!r} not found in repository {self.name!r}",
                                        f"run `aim_cli model list {self.name}`", model=model)
        return VersionNotFoundError(f"version {tag!r} of model {model!r} not found in repository {self.name!r}",
                                    f"run `aim_cli model versions {self.name} {model}`", model=model, tag=tag)

    def get_version(self, model: str, tag: str) -> VersionRef:
        check_name("model", model)
        check_name("tag", tag)
        where = f"{model}:{tag}"
        try:
            raw = self._manifest_bytes(manifest_key(model, tag), where)
        except KeyNotFoundError:
            raise self._not_found(model, tag) from None
        manifest = mf.decode(raw, where=where)
        if manifest.model != model or manifest.tag != tag:
            raise IntegrityError(
                f"manifest {where} names {manifest.model}:{manifest.tag}",
                "the repository is damaged; run `aim_cli repo check`",
            )
        return VersionRef(manifest, mf.digest_of(raw), raw)

    def read_key(self, vk: VersionKey) -> VersionRef:
        """The manifest under any key below models/: a version (``get_version``), or a stray read
        as a manifest, whatever names it holds (it may be a copy of one). IntegrityError if it
        does not parse; NotFoundError if it is gone."""
        if vk.tag is not None:
            return self.get_version(vk.model, vk.tag)
        raw = self._manifest_bytes(vk.key, vk.key)
        return VersionRef(mf.decode(raw, where=vk.key), mf.digest_of(raw), raw)

    def _model_keys(self, prefix: str) -> Iterator[VersionKey | SummaryKey | SignatureKey]:
        """Every object below ``prefix`` (in ``models/``), parsed. A link or special file there
        raises DamagedStorageError (backends)."""
        for info in self._list(prefix):
            yield parse_model_key(info.key)

    def iter_version_keys(self, model: str | None = None) -> Iterator[VersionKey]:
        """Every object below ``models/`` (or below ``model``'s versions/), parsed: versions and
        strays alike, without the summaries (the store's own keys, naming no blob)."""
        if model is not None:
            for info in self._list(versions_prefix(check_name("model", model))):
                yield parse_version_key(info.key)
            return
        for key in self._model_keys(MODELS):
            if isinstance(key, VersionKey):
                yield key

    def warn_stray(self, vk: VersionKey) -> None:
        fix = (f"`aim_cli model delete-version {self.name} {vk.model} --tag {vk.name!r}` removes it"
               if vk.model is not None else "remove it from the storage by hand")
        log.warning("warning: skipping %s in repository %r: not a version aim_cli wrote (%s)", vk.key, self.name, fix)

    def _versions(self, model: str | None = None) -> list[VersionKey]:
        """The version keys (of ``model``); each stray is skipped with a warning on stderr."""
        found = []
        for vk in self.iter_version_keys(model):
            if vk.tag is None:
                self.warn_stray(vk)
            else:
                found.append(vk)
        return found

    def list_models(self) -> list[str]:
        return sorted({vk.model for vk in self._versions()})

    def list_tags(self, model: str) -> list[str]:
        return sorted(vk.tag for vk in self._versions(model))

    def model_exists(self, model: str) -> bool:
        """Whether ``model`` has a version (quietly: strays are for listings to mention)."""
        return any(vk.tag is not None for vk in self.iter_version_keys(model))

    def _model_not_found(self, model: str) -> VersionNotFoundError:
        return VersionNotFoundError(f"model {model!r} not found in repository {self.name!r}",
                                    f"run `aim_cli model list {self.name}`", model=model)

    # -- summaries (summary.py): what listings read instead of manifests -----------------------------
    def summary_of(self, ref: VersionRef, stored_size: int | None = None) -> sm.Summary:
        m = ref.manifest
        return sm.of_manifest(m, ref.digest, where=f"{m.model}:{m.tag}", stored_size=stored_size)

    def put_summary(self, summary: sm.Summary) -> None:
        """A plain put: a summary is derived from its manifest, so any writer writes the same bytes."""
        self.backend.put(summary_key(summary.model, summary.tag), sm.encode(summary))

    def get_summary(self, model: str, tag: str) -> sm.Summary:
        """The stored summary of ``model:tag``, read with a bound and decoded strictly.
        KeyNotFoundError passes; IntegrityError if it is not a valid summary of that version."""
        key = summary_key(model, tag)
        try:
            found = sm.decode(self.backend.get(key, max_size=sm.MAX_SUMMARY_BYTES), where=key)
        except ObjectTooLargeError:
            raise sm.invalid(key, f"larger than {sm.MAX_SUMMARY_BYTES} bytes") from None
        if (found.model, found.tag) != (model, tag):
            raise sm.invalid(key, f"it names {found.model}:{found.tag}")
        return found

    def _summary_tags(self, model: str) -> tuple[list[str], set[str]]:
        """One listing of ``models/<model>/``: the tags with a manifest, and those with a summary.
        Each stray is skipped with a warning on stderr."""
        tags, summarised = [], set()
        for key in self._model_keys(model_prefix(check_name("model", model))):
            if isinstance(key, SignatureKey):
                continue
            if isinstance(key, SummaryKey):
                summarised.add(key.tag)
            elif key.tag is not None:
                tags.append(key.tag)
            else:
                self.warn_stray(key)
        return sorted(tags), summarised

    def _summary(self, model: str, tag: str, stored: bool) -> sm.Summary | None:
        """The version's summary: the stored one, else (missing, damaged) rebuilt from its
        manifest. None when the version is gone (deleted since the listing)."""
        if stored:
            try:
                return self.get_summary(model, tag)
            except KeyNotFoundError:
                pass  # removed since the listing: a delete in progress; the manifest decides
            except DamagedStorageError:
                raise  # a link or special file: damage for every command alike (backends)
            except IntegrityError as e:
                log.warning("warning: %s in repository %r; rebuilt it from its manifest", e.message, self.name)
        return self._rebuild_summary(model, tag)

    def _rebuild_summary(self, model: str, tag: str) -> sm.Summary | None:
        """The summary of ``model:tag`` from its manifest, written back best-effort: a read-only
        user cannot (StorageError is ignored) and the listing does not need it written."""
        where = f"{model}:{tag}"
        try:
            raw = self._manifest_bytes(manifest_key(model, tag), where)
        except KeyNotFoundError:
            return None
        found = sm.of_manifest_bytes(raw, model=model, tag=tag, where=where)
        del raw  # up to jobs manifests are rebuilt at once: hold none longer than needed
        try:
            self.put_summary(found)
        except StorageError:
            pass
        return found

    def list_versions(self, model: str) -> list[sm.Summary]:
        """The summary of every version of ``model``, oldest first (by created_at, then tag). One
        listing of ``models/<model>/``, then one small read per version, in parallel; no manifest
        is read unless its summary is missing or damaged. VersionNotFoundError if it has none.
        A summary without its manifest is not a version: it is ignored."""
        tags, summarised = self._summary_tags(model)
        found = [s for s in self.map_parallel(lambda t: self._summary(model, t, t in summarised), tags) if s]
        if not found:
            raise self._model_not_found(model)
        return sorted(found, key=lambda s: (s.created_at, s.tag))

    def newest_version(self, model: str) -> VersionRef:
        """The newest version of ``model`` (by created_at, then tag), chosen by the summaries and
        read from its manifest: one manifest read (two when its summary was just rebuilt).
        A summary can make a listing show wrong metadata, never make this return another version
        than the one it describes: the manifest read must give the same summary, digest included,
        else IntegrityError naming the summary's key."""
        chosen = self.list_versions(model)[-1]
        ref = self.get_version(model, chosen.tag)
        differ = sm.differences(chosen, self.summary_of(ref))
        if differ:
            raise IntegrityError(
                f"summary {summary_key(model, chosen.tag)} in repository {self.name!r} disagrees with its manifest "
                f"({', '.join(differ)}), so the newest version of {model!r} is unknown",
                f"name the version with --tag; `aim_cli repo check {self.name}` lists all damage")
        return ref

    def summary_problems(self, known: Mapping[str, sm.Summary] | None = None) -> list[tuple[str, str]]:
        """(key, why) of every damaged summary, for `repo check`: one without its manifest, one
        that is not a valid summary of its version, one that disagrees with its manifest. A
        missing summary is no damage (the next listing rebuilds it), and neither is a manifest
        that cannot be read (the check reports the manifest itself). ``known`` maps a manifest
        key to the summary of the manifest that the caller read already, sparing a second read."""
        manifests, summaries = set(), []
        for key in self._model_keys(MODELS):
            if isinstance(key, SignatureKey):
                continue
            if isinstance(key, SummaryKey):
                summaries.append(key)
            elif key.tag is not None:
                manifests.add(key.key)
        summaries.sort(key=lambda k: k.key)
        found = self.map_parallel(lambda k: self._summary_problem(k, manifests, known or {}), summaries)
        return [(k.key, why) for k, why in zip(summaries, found) if why is not None]

    def _summary_problem(self, sk: SummaryKey, manifests: set[str], known: Mapping[str, sm.Summary]) -> str | None:
        key = manifest_key(sk.model, sk.tag)
        if key not in manifests:
            return (f"a summary without its version (a delete was interrupted); `aim_cli model delete-version "
                    f"{self.name} {sk.model} --tag {sk.tag}` removes it")
        try:
            stored = self.get_summary(sk.model, sk.tag)
        except KeyNotFoundError:
            return None
        except DamagedStorageError:
            raise
        except IntegrityError as e:
            return f"{e.message}; {e.hint}"
        expected = known.get(key) or self._manifest_summary(sk.model, sk.tag)
        differ = sm.differences(stored, expected) if expected is not None else []
        if differ:
            return (f"disagrees with its manifest ({', '.join(differ)}); remove it from the storage: the next "
                    f"listing rebuilds it from the manifest")
        return None

    def _manifest_summary(self, model: str, tag: str) -> sm.Summary | None:
        """The summary the stored manifest gives, or None if it is gone or damaged."""
        try:
            return sm.of_manifest_bytes(self._manifest_bytes(manifest_key(model, tag), f"{model}:{tag}"),
                                        model=model, tag=tag, where=f"{model}:{tag}")
        except (KeyNotFoundError, IntegrityError):
            return None

    def find_version_key(self, model: str, name: str) -> VersionKey:
        """The one stored key that ``name`` names in ``model``'s versions/: ``<name>.json`` (a
        version, or a stray such as ``v1 copy.json``) or exactly ``<name>`` (``.DS_Store``)."""
        prefix = versions_prefix(_check_segment("model", model))
        _check_segment("tag", name)
        found = [k for k in (f"{prefix}{name}{MANIFEST_SUFFIX}", f"{prefix}{name}") if self.backend.exists(k)]
        if not found:
            check_name("model", model)  # a name no key holds: say what names look like (exit 2)
            check_name("tag", name)
            raise self._not_found(model, name)
        if len(found) > 1:
            raise UsageError(f"{name!r} names two stored keys of model {model!r}: {found[0]} and {found[1]}",
                             "remove the one you mean from the storage by hand")
        return parse_version_key(found[0])

    def _chunks_named(self, vks: Sequence[VersionKey]) -> dict[str, int]:
        """digest -> size of every blob the readable manifests under ``vks`` name, folded one
        manifest at a time while the next ``jobs`` are read ahead (unreadable ones name none)."""
        chunks: dict[str, int] = {}
        with ReadAhead(self.backend, [vk.key for vk in vks], max_size=MAX_MANIFEST_BYTES, jobs=self.jobs) as ahead:
            reader = Repository(ahead, self.name, jobs=self.jobs)
            for vk in vks:
                try:
                    manifest = reader.read_key(vk).manifest
                except (IntegrityError, NotFoundError):
                    continue
                for f in manifest.files:
                    chunks.update(f.chunks)
                del manifest  # before the next one is decoded
        return chunks

    # -- signatures (issue 12; signing.py makes and checks them) ----------------------------------
    def put_signature(self, model: str, tag: str, hint: str, bundle: bytes) -> bool:
        """Store one signer's bundle of the version, exclusively: False when that signer's is
        already there (signing again is "already signed"; a bundle is never replaced)."""
        return self.backend.put_if_absent(signature_key(model, tag, check_name("signer hint", hint)), bundle)

    def list_signatures(self, model: str, tag: str) -> list[str]:
        """The signer hints of the version's stored signatures, sorted. Anything else in its
        signatures/ directory is not a signature aim_cli wrote: `repo check` reports it."""
        prefix = signatures_prefix(check_name("model", model), check_name("tag", tag))
        return sorted(k.hint for k in self._model_keys(prefix) if isinstance(k, SignatureKey))

    def iter_signature_keys(self) -> Iterator[SignatureKey]:
        """Every signature of the repository (one listing of models/), for `repo check`."""
        return (k for k in self._model_keys(MODELS) if isinstance(k, SignatureKey))

    def get_signature(self, model: str, tag: str, hint: str, *, max_size: int = MAX_SIGNATURE_BYTES) -> bytes:
        """One stored bundle, read bounded by ``max_size`` (larger is damage, exit 5)."""
        key = signature_key(model, tag, hint)
        try:
            return self.backend.get(key, max_size=max_size)
        except KeyNotFoundError:
            raise NotFoundError(f"no signature {hint!r} of {model}:{tag} in repository {self.name!r}",
                                f"`aim_cli model info {self.name} {model} --tag {tag}` lists its signatures") from None
        except ObjectTooLargeError:
            raise IntegrityError(f"signature {key} is larger than {max_size} bytes, so it is not one",
                                 "remove it from the storage and sign the version again") from None

    def delete_version(self, model: str, tag: str) -> Deleted:
        """Delete the one key ``tag`` names (``find_version_key``: a stray too), and a version's
        summary. The manifest is returned when it could be read, and deleted all the same when
        not: a broken manifest must not block `repo gc` until its whole model is deleted.

        The summary goes first: a delete killed in between leaves a version whose summary the
        next listing rebuilds, never a summary without its version. A summary or signatures
        already without one (a listing rebuilt it, or a signer stored one, while a delete ran)
        are deleted by the tag."""
        try:
            vk = self.find_version_key(model, tag)
        except VersionNotFoundError:
            # What an interrupted delete left (names valid: find_version_key checked): deleted by its tag.
            left = [signature_key(model, tag, h) for h in self.list_signatures(model, tag)]
            left += [summary_key(model, tag)] if self.backend.exists(summary_key(model, tag)) else []
            if not left:
                raise
            self.backend.delete_many(left)
            return Deleted([tag], {})
        deleted = Deleted([tag], self._chunks_named([vk]))
        if vk.tag is not None:
            self.backend.delete_many([signature_key(model, vk.tag, h) for h in self.list_signatures(model, vk.tag)])
            self.backend.delete(summary_key(model, vk.tag))
        self.backend.delete(vk.key)
        return deleted

    def delete_model(self, model: str) -> Deleted:
        """Delete every key in ``model``'s versions/ (readable or not, strays too) and every
        summary; summaries first (see ``delete_version``). The deleted versions are returned."""
        keys = [k for k in self._model_keys(model_prefix(check_name("model", model)))
                if not isinstance(k, VersionKey) or k.model is not None]
        versions = [k for k in keys if isinstance(k, VersionKey)]
        if not keys:
            raise self._model_not_found(model)
        deleted = Deleted([vk.tag or vk.name for vk in versions], self._chunks_named(versions))
        # Signatures first, then summaries, then manifests: a delete killed midway leaves a
        # version unsigned or unsummarised, never a signature or summary without its version.
        self.backend.delete_many([k.key for k in keys if isinstance(k, SignatureKey)])
        self.backend.delete_many([k.key for k in keys if isinstance(k, SummaryKey)] + [vk.key for vk in versions])
        return deleted
