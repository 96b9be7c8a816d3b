"""Repository: content-addressed blobs and version manifests over one Backend.

The key layout (format 1, DESIGN.md section 2; pinned by tests/test_store.py):

    aim-repo.json                        {"format": 1, "chunking": {...}, "hash": "blake3"}
    blobs/<h[0:2]>/<h>                   one chunk; h = BLAKE3 hex of its bytes
    models/<model>/versions/<tag>.json   one immutable manifest
    locks/<id>.json                      gc/push leases

Everything read through a Repository is verified: ``get_blob`` re-hashes, ``get_manifest`` parses
and validates. Nothing above this module sees an unverified byte or a storage key.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import blake3

from aim_cli import manifest as mf
from aim_cli.backends.base import Backend
from aim_cli.chunking import ChunkingParams
from aim_cli.config import NAME_RE, check_name
from aim_cli.errors import (BlobCorruptError, BlobMissingError, ConfigError, IntegrityError, KeyNotFoundError,
                            NotFoundError, ObjectTooLargeError, StorageError, TagExistsError)

REPO_FORMAT = 1
REPO_META_KEY = "aim-repo.json"
BLOBS = "blobs/"
MODELS = "models/"


def blob_key(digest: str) -> str:
    return f"{BLOBS}{digest[:2]}/{digest}"


def manifest_key(model: str, tag: str) -> str:
    return f"{MODELS}{model}/versions/{tag}.json"


LOCKS = "locks/"


def lease_key(lease_id: str) -> str:
    return f"{LOCKS}{lease_id}.json"


def lease_id_of(key: str) -> str | None:
    """The lease id in ``locks/<id>.json``, or None for any other key (nested, another suffix, or
    an id aim_cli never writes: it is shown in messages, so it must be a plain one-line name)."""
    if not (key.startswith(LOCKS) and key.endswith(".json")):
        return None
    lease_id = key[len(LOCKS) : -len(".json")]
    return lease_id if NAME_RE.fullmatch(lease_id) else None


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


class Repository:
    def __init__(self, backend: Backend, name: str = "", *, jobs: int = 8):
        self.backend = backend
        self.name = name or backend.location
        self.jobs = jobs
        self._params: ChunkingParams | None = None

    # -- repository metadata ---------------------------------------------------------------------
    def init(self, params: ChunkingParams | None = None) -> ChunkingParams:
        """Write aim-repo.json if absent (exclusive create: two first pushes agree on one), then
        return the repository's chunking parameters, which may be another client's."""
        params = (params or ChunkingParams()).validate()
        meta = {"format": REPO_FORMAT, "chunking": params.as_dict(), "hash": "blake3"}
        if not self.backend.exists(REPO_META_KEY):  # a HEAD is cheaper than a refused conditional PUT
            self.backend.put_if_absent(REPO_META_KEY, json.dumps(meta, indent=2).encode() + b"\n")
        self._params = None
        return self.params()

    def check_conditional_writes(self) -> None:
        """Refuse storage that ignores exclusive creates: immutable tags rest on them. Probes
        with aim-repo.json's own bytes, so a server that does overwrite changes nothing."""
        raw = self.backend.get(REPO_META_KEY)
        if self.backend.put_if_absent(REPO_META_KEY, raw):
            raise StorageError(
                f"storage of repository {self.name!r} at {self.backend.location} ignores conditional writes "
                f"(If-None-Match), so two pushes of one tag could both succeed",
                "use a server with conditional writes (AWS S3, recent MinIO, R2, Ceph RGW)",
            )

    def exists(self) -> bool:
        return self.backend.exists(REPO_META_KEY)

    def params(self) -> ChunkingParams:
        """The chunking parameters pinned in aim-repo.json. NotFoundError if there is none yet."""
        if self._params is None:
            try:
                raw = self.backend.get(REPO_META_KEY)
            except KeyNotFoundError:
                raise NotFoundError(
                    f"repository {self.name!r} at {self.backend.location} is empty (no {REPO_META_KEY})",
                    "push a model first, or check the path in model_repos.yaml",
                ) from None
            try:
                meta = json.loads(raw)
                if meta.get("format") != REPO_FORMAT:
                    raise ConfigError(
                        f"repository {self.name!r} has storage format {meta.get('format')!r}, "
                        f"this aim_cli knows format {REPO_FORMAT}",
                        "upgrade aim_cli",
                    )
                if meta.get("hash") != "blake3":
                    raise ValueError("hash")
                self._params = ChunkingParams.from_dict(meta["chunking"]).validate()
            except (ValueError, KeyError, TypeError, AttributeError):
                raise IntegrityError(
                    f"{REPO_META_KEY} of repository {self.name!r} is malformed",
                    "restore it from a backup or another client's copy",
                ) from None
        return self._params

    # -- blobs -------------------------------------------------------------------------------------
    def put_blob(self, digest: str, data) -> None:
        self.backend.put(blob_key(digest), data)

    def get_blob(self, digest: str, size: int, *, context: str = "") -> bytes:
        """The chunk's bytes, verified against ``digest`` and ``size`` (what a manifest names). A
        stored object larger than ``size`` is refused after reading ``size + 1`` bytes, so memory
        stays bounded whatever the storage holds. Missing: BlobMissingError; altered, truncated or
        oversized: BlobCorruptError; both name the blob and carry its digest."""
        where = f" (needed by {context})" if context else ""
        try:
            data = self.backend.get(blob_key(digest), max_size=size)
        except KeyNotFoundError:
            raise BlobMissingError(
                f"blob {digest} is missing from repository {self.name!r}{where}",
                "push the same files again (under a new tag) to restore it; `aim_cli repo check` lists all damage",
                digest=digest,
            ) from None
        except ObjectTooLargeError:
            data = None
        if data is None or len(data) != size or blake3.blake3(data).hexdigest() != digest:
            what = "its content does not match its hash" if data is not None and len(data) == size else (
                f"it is not the {size} bytes expected")
            raise BlobCorruptError(
                f"blob {digest} in repository {self.name!r} is corrupt: {what}{where}",
                "delete that blob, then push the same files again (under a new tag) to restore it; "
                "`aim_cli repo check --read-data` lists all damage",
                digest=digest,
            )
        return data

    def has_blob(self, digest: str) -> bool:
        return self.backend.exists(blob_key(digest))

    def blob_size(self, digest: str) -> int | None:
        return self.backend.size(blob_key(digest))

    def stored_blob_index(self, expected_lookups: int) -> set[str] | None:
        """All stored blob digests when listing them is cheaper than ``expected_lookups`` single
        existence checks, else None (then ask blob by blob with ``has_blob``).

        A check costs one request; a listing one request per ~1000 blobs. Like dvc's
        ``oids_exist``, estimate the number of stored blobs from one of the 256 prefixes."""
        if expected_lookups < 16:
            return None
        sample = f"{random.randrange(256):02x}"
        estimate = 256 * sum(1 for _ in self.backend.list(f"{BLOBS}{sample}/"))
        if estimate / 1000 >= expected_lookups / 4:
            return None
        return {digest for digest, _ in self.iter_blobs()}

    def missing_blobs(self, digests: Iterable[str]) -> set[str]:
        """Which of ``digests`` the repository lacks, asked in bulk (listing or parallel checks)."""
        wanted = set(digests)
        index = self.stored_blob_index(len(wanted))
        if index is not None:
            return wanted - index
        ordered = sorted(wanted)
        if not ordered:
            return set()
        with ThreadPoolExecutor(max(1, min(self.jobs, len(ordered)))) as pool:
            present = pool.map(self.has_blob, ordered)
            return {d for d, ok in zip(ordered, present) if not ok}

    def iter_blobs(self) -> Iterator[tuple[str, int]]:
        """(digest, size) of every stored blob."""
        for info in self.backend.list(BLOBS):
            name = info.key.rsplit("/", 1)[-1]
            if mf.HEX64.fullmatch(name):
                yield name, info.size

    def delete_blobs(self, digests: Iterable[str]) -> None:
        self.backend.delete_many(blob_key(d) for d in digests)

    def sync(self) -> None:
        self.backend.sync()

    def clean_incomplete(self, older_than: float) -> tuple[int, int]:
        """(count, bytes) of abandoned partial writes removed (a killed push's temp files)."""
        return self.backend.clean_incomplete(older_than)

    # -- manifests ---------------------------------------------------------------------------------
    def commit(self, manifest: mf.Manifest) -> CommitResult:
        """Create the version: the exclusive create of its manifest is the commit point.

        The caller has stored (and synced) every blob first. If the tag exists with the same
        files, nothing is written and the stored digest is returned. Once created, the manifest is
        read back: a server that ignored the condition would show another writer's bytes here."""
        raw = mf.encode(manifest)
        key = manifest_key(manifest.model, manifest.tag)
        # Whatever put_if_absent answers, the read-back decides: the stored bytes are the truth.
        self.backend.put_if_absent(key, raw)
        stored = self.get_version(manifest.model, manifest.tag)
        if stored.raw == raw:
            # Ours, byte for byte (created_at has microseconds), even when a retried PUT whose
            # first answer was lost saw 412 for our own write.
            return CommitResult(stored.digest, True)
        return self.against_stored(stored, manifest)

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

    def get_version(self, model: str, tag: str) -> VersionRef:
        check_name("model", model)
        check_name("tag", tag)
        key = manifest_key(model, tag)
        try:
            raw = self.backend.get(key)
        except KeyNotFoundError:
            if not self.model_exists(model):
                raise NotFoundError(
                    f"model {model!r} not found in repository {self.name!r}",
                    f"run `aim_cli model list {self.name}`",
                ) from None
            raise NotFoundError(
                f"version {tag!r} of model {model!r} not found in repository {self.name!r}",
                f"run `aim_cli model versions {self.name} {model}`",
            ) from None
        where = f"{model}:{tag}"
        manifest = mf.decode(raw, where=where)
        if manifest.model != model or manifest.tag != tag:
            raise IntegrityError(
                f"manifest {where} names {manifest.model}:{manifest.tag}",
                "the repository is damaged; run `aim_cli repo check`",
            )
        return VersionRef(manifest, mf.digest_of(raw), raw)

    def list_models(self) -> list[str]:
        models = set()
        for info in self.backend.list(MODELS):
            parts = info.key.split("/")
            if len(parts) == 4 and parts[2] == "versions" and parts[3].endswith(".json"):
                models.add(parts[1])
        return sorted(models)

    def list_tags(self, model: str) -> list[str]:
        check_name("model", model)
        prefix = f"{MODELS}{model}/versions/"
        tags = [info.key[len(prefix) : -len(".json")] for info in self.backend.list(prefix)
                if info.key.endswith(".json") and "/" not in info.key[len(prefix):]]
        return sorted(tags)

    def model_exists(self, model: str) -> bool:
        return bool(self.list_tags(model))

    def list_versions(self, model: str) -> list[VersionRef]:
        """Every version of ``model``, oldest first. NotFoundError if it has none."""
        tags = self.list_tags(model)
        if not tags:
            raise NotFoundError(
                f"model {model!r} not found in repository {self.name!r}",
                f"run `aim_cli model list {self.name}`",
            )
        with ThreadPoolExecutor(max(1, min(self.jobs, len(tags)))) as pool:
            refs = list(pool.map(lambda t: self.get_version(model, t), tags))
        return sorted(refs, key=lambda r: (r.manifest.created_at, r.manifest.tag))

    def iter_manifest_keys(self) -> Iterator[tuple[str, str]]:
        """(model, tag) of every manifest key, valid or not (for check and gc)."""
        for info in self.backend.list(MODELS):
            parts = info.key.split("/")
            if len(parts) == 4 and parts[2] == "versions" and parts[3].endswith(".json"):
                yield parts[1], parts[3][: -len(".json")]

    def delete_version(self, model: str, tag: str) -> VersionRef | None:
        """Delete one manifest; return it, or None when it was unreadable (deleted all the same:
        a broken manifest must not block `repo gc` until its whole model is deleted)."""
        try:
            ref = self.get_version(model, tag)
        except IntegrityError:
            ref = None
        self.backend.delete(manifest_key(model, tag))
        return ref

    def delete_model(self, model: str) -> list[str]:
        """Delete every manifest of ``model`` (readable or not); return the deleted tags."""
        tags = self.list_tags(model)
        if not tags:
            raise NotFoundError(
                f"model {model!r} not found in repository {self.name!r}",
                f"run `aim_cli model list {self.name}`",
            )
        self.backend.delete_many(manifest_key(model, t) for t in tags)
        return tags
