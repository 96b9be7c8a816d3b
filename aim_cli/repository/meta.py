"""A repository's metadata role: aim-repo.json, created once (``init``) and read for the storage
format it pins; the checks that a new repository's root is empty and lies inside no other
repository; and the probe that the storage honours conditional writes."""

from __future__ import annotations

import json

from aim_cli.backends.base import Backend
from aim_cli.chunking.cdc import ChunkingParams
from aim_cli.errors import (
    DamagedStorageError,
    IntegrityError,
    KeyNotFoundError,
    NotARepositoryError,
    NotEmptyError,
    ObjectTooLargeError,
    StorageError,
)
from aim_cli.format.layout import MAX_REPO_META_BYTES, REPO_META_KEY
from aim_cli.format.repo_format import DEFAULT_FORMAT, RepoFormat, parse_meta


def is_empty(backend: Backend) -> bool:
    """True when ``backend`` holds no object. Something it refuses to list as one (a link, a
    FIFO) is content too."""
    try:
        for _ in backend.list(""):
            return False
    except DamagedStorageError:
        return False
    return True


class RepoMeta:
    """aim-repo.json of the repository ``name`` in ``backend``; its format is read once."""

    def __init__(self, backend: Backend, name: str):
        self.backend = backend
        self.name = name
        self._format: RepoFormat | None = None

    def init(
        self, params: ChunkingParams | None = None, *, version: int = DEFAULT_FORMAT, like: RepoFormat | None = None
    ) -> ChunkingParams:
        """Write aim-repo.json if absent (exclusive create: two first pushes agree on one), then
        return the repository's chunking parameters, which may be another client's (and so may
        its format be). A new repository's root must be empty and must not lie inside another
        one: NotEmptyError. ``like``: the whole format of another repository (`model copy`), so
        that both cut the same chunks."""
        try:
            # A repository already there keeps its format, which ``params`` reads (one GET, where a
            # HEAD first would cost a round trip more) and refuses if this client does not know it.
            return self.params()
        except NotARepositoryError:
            pass
        # Built only for a new root.
        meta = (like or RepoFormat.new(version, params)).meta()
        self._check_new_root()
        self.backend.put_if_absent(REPO_META_KEY, json.dumps(meta, indent=2).encode() + b"\n")
        self._format = None
        return self.params()

    def check_can_init(self) -> None:
        """What ``init`` would refuse here (NotEmptyError), without writing: a dry run's check."""
        if not self.backend.exists(REPO_META_KEY):
            self._check_new_root()

    def _check_new_root(self) -> None:
        """Refuse to create a repository inside another one, or over data that is not one (a typo
        in a path must not turn someone's directory into a repository that gc then sweeps)."""
        where = self.backend.location
        outer = self.backend.find_in_parents(REPO_META_KEY)
        if outer is not None:
            raise NotEmptyError(
                f"repository {self.name!r} at {where} would lie inside the repository at {outer}",
                "repositories never nest: choose a path outside it",
                location=where,
            )
        # A concurrent first push may have created it since our look: then it is a repository.
        if not is_empty(self.backend) and not self.backend.exists(REPO_META_KEY):
            raise NotEmptyError(
                f"{where} is not empty and holds no repository (no {REPO_META_KEY}), so repository "
                f"{self.name!r} cannot be created there",
                "choose an empty directory or prefix, or fix the path",
                location=where,
            )

    def _read_meta(self) -> bytes:
        try:
            return self.backend.get(REPO_META_KEY, max_size=MAX_REPO_META_BYTES)
        except KeyNotFoundError:
            raise NotARepositoryError(
                f"no repository {self.name!r} there: {self.backend.location} holds no {REPO_META_KEY}",
                "push a model to create it, or fix the path in model_repos.yaml",
                location=self.backend.location,
            ) from None
        except ObjectTooLargeError:
            raise IntegrityError(
                f"{REPO_META_KEY} of repository {self.name!r} is larger than "
                f"{MAX_REPO_META_BYTES} bytes, so it is not one",
                "restore it from a backup or another client's copy",
            ) from None

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
