"""Reading a repository's keys, shared by its roles: listings without S3's folder markers, the
keys below ``models/`` parsed (format/layout.py), a manifest's bytes read within their bound; and
the warning for a stray and the error for a missing model that every listing gives alike."""

from __future__ import annotations

import logging
from collections.abc import Iterator

from aim_cli.backends.base import Backend, ObjectInfo
from aim_cli.errors import IntegrityError, ObjectTooLargeError, VersionNotFoundError
from aim_cli.format import manifest as mf
from aim_cli.format.layout import AliasKey, AliasStatementKey, SignatureKey, SummaryKey, VersionKey, parse_model_key

log = logging.getLogger(__name__)


def list_objects(backend: Backend, prefix: str) -> Iterator[ObjectInfo]:
    """The backend's listing without S3 "folder" markers (an empty ``a/b/`` object that S3
    consoles create): no key of the layout ends with "/", and an empty object names nothing."""
    return (info for info in backend.list(prefix) if not (info.size == 0 and info.key.endswith("/")))


class StoredKeys:
    """The keys of the repository ``name`` stored in ``backend``, as its roles read them."""

    def __init__(self, backend: Backend, name: str):
        self.backend = backend
        self.name = name

    def model_keys(
        self, prefix: str
    ) -> Iterator[VersionKey | SummaryKey | SignatureKey | AliasKey | AliasStatementKey]:
        """Every object below ``prefix`` (in ``models/``), parsed. A link or special file there
        raises DamagedStorageError (backends)."""
        for key, _ in self.model_entries(prefix):
            yield key

    def model_entries(
        self, prefix: str
    ) -> Iterator[tuple[VersionKey | SummaryKey | SignatureKey | AliasKey | AliasStatementKey, ObjectInfo]]:
        """As ``model_keys``, each key with what the listing says of its object (its modification
        time: the newest version is cross-checked with it, versions.py)."""
        for info in list_objects(self.backend, prefix):
            yield parse_model_key(info.key), info

    def manifest_bytes(self, key: str, where: str) -> bytes:
        """A manifest's bytes, read at most MAX_MANIFEST_BYTES + 1 of them. KeyNotFoundError passes."""
        try:
            return self.backend.get(key, max_size=mf.MAX_MANIFEST_BYTES)
        except ObjectTooLargeError:
            raise IntegrityError(
                f"manifest {where} in repository {self.name!r} is larger than the {mf.MAX_MANIFEST_BYTES} bytes a "
                f"manifest may have",
                "the version is corrupt or was not written by aim_cli; delete it with `aim_cli model delete-version`",
            ) from None

    def warn_stray(self, vk: VersionKey) -> None:
        fix = (
            f"`aim_cli model delete-version {self.name} {vk.model} --tag {vk.name!r}` removes it"
            if vk.model is not None
            else "remove it from the storage by hand"
        )
        log.warning("warning: skipping %s in repository %r: not a version aim_cli wrote (%s)", vk.key, self.name, fix)

    def model_not_found(self, model: str) -> VersionNotFoundError:
        return VersionNotFoundError(
            f"model {model!r} not found in repository {self.name!r}",
            f"run `aim_cli model list {self.name}`",
            model=model,
        )
