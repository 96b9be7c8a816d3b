"""A repository's deletion role: `model delete-version` and `model delete`. A version goes with
its summary and signatures (those first, so a delete killed midway never leaves a summary or a
signature without its version); a stray goes by its exact name. What was deleted is returned
with the blobs it named, for the bytes `repo gc` can now free."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from aim_cli.backends.readahead import ReadAhead
from aim_cli.errors import ConflictError, IntegrityError, NotFoundError, UsageError, VersionNotFoundError
from aim_cli.format import manifest as mf
from aim_cli.format.layout import (
    MANIFEST_SUFFIX,
    AliasKey,
    AliasStatementKey,
    SignatureKey,
    SummaryKey,
    VersionKey,
    model_prefix,
    parse_version_key,
    signature_key,
    summary_key,
    versions_prefix,
)
from aim_cli.names import check_name, valid_model_name
from aim_cli.repository.aliases import Aliases, describe
from aim_cli.repository.keys import StoredKeys
from aim_cli.repository.signatures import Signatures
from aim_cli.repository.versions import Versions


@dataclass(frozen=True)
class Deleted:
    """What a deletion removed: the tags (or strays' names), and digest -> size of every blob the
    readable ones named (for the bytes `repo gc` can now free). Not the manifests: a model's 100
    versions of a 70B model's manifests, decoded, took 3 GB."""

    names: list[str]
    chunks: dict[str, int]
    aliases_removed: list[str] = field(default_factory=list)  # aliases unset with the version (--force)


def _check_segment(kind: str, name: str) -> str:
    """``name`` as one key segment, where a stored key may hold any name (delete-version)."""
    if not isinstance(name, str) or name in ("", ".", "..") or "/" in name or "\x00" in name or len(name) > 1024:
        raise UsageError(
            f"invalid {kind} name {name!r}", "give it as `aim_cli model versions` or `aim_cli repo check` shows it"
        )
    return name


class Deletion:
    """Deletes from the repository ``keys`` reads; manifests are read ``jobs`` ahead.
    ``check_format`` reads aim-repo.json before the first delete: a format this client does not
    know is refused (exit 7) with nothing deleted, as every other command refuses it."""

    def __init__(
        self,
        keys: StoredKeys,
        versions: Versions,
        signatures: Signatures,
        aliases: Aliases,
        jobs: int,
        check_format: Callable[[], object],
    ):
        self.check_format = check_format
        self.keys = keys
        self.backend = keys.backend
        self.name = keys.name
        self.versions = versions
        self.signatures = signatures
        self.aliases = aliases
        self.jobs = jobs

    def find_version_key(self, model: str, name: str) -> VersionKey:
        """The one stored key that ``name`` names in ``model``'s versions/: ``<name>.json`` (a
        version, or a stray such as ``v1 copy.json``) or exactly ``<name>`` (``.DS_Store``)."""
        prefix = versions_prefix(model if valid_model_name(model) else _check_segment("model", model))
        _check_segment("tag", name)
        found = [k for k in (f"{prefix}{name}{MANIFEST_SUFFIX}", f"{prefix}{name}") if self.backend.exists(k)]
        if not found:
            check_name("model", model)  # a name no key holds: say what names look like (exit 2)
            check_name("tag", name)
            raise self.versions.not_found(model, name)
        if len(found) > 1:
            raise UsageError(
                f"{name!r} names two stored keys of model {model!r}: {found[0]} and {found[1]}",
                "remove the one you mean from the storage by hand",
            )
        return parse_version_key(found[0])

    def _chunks_named(self, vks: Sequence[VersionKey]) -> dict[str, int]:
        """digest -> size of every blob the readable manifests under ``vks`` name, folded one
        manifest at a time while the next ``jobs`` are read ahead (unreadable ones name none)."""
        chunks: dict[str, int] = {}
        with ReadAhead(self.backend, [vk.key for vk in vks], max_size=mf.MAX_MANIFEST_BYTES, jobs=self.jobs) as ahead:
            reader = self.versions.reading_through(ahead)
            for vk in vks:
                try:
                    manifest = reader.read_key(vk).manifest
                except (IntegrityError, NotFoundError):
                    continue
                for f in manifest.files:
                    chunks.update(f.chunks)
                del manifest  # before the next one is decoded
        return chunks

    def delete_version(self, model: str, tag: str, *, force: bool = False) -> Deleted:
        """Delete the one key ``tag`` names (``find_version_key``: a stray too), and a version's
        summary. The manifest is returned when it could be read, and deleted all the same when
        not: a broken manifest must not block `repo gc` until its whole model is deleted.

        The summary goes first: a delete killed in between leaves a version whose summary the
        next listing rebuilds, never a summary without its version. A summary or signatures
        already without one (a listing rebuilt it, or a signer stored one, while a delete ran)
        are deleted by the tag.

        A version that aliases point at is refused (ConflictError) unless ``force``, which first
        unsets those aliases, each with a history entry saying why (aliases.py): killed in
        between, the version stays and the aliases are unset, never an alias left dangling."""
        try:
            vk = self.find_version_key(model, tag)
        except VersionNotFoundError:
            # What an interrupted delete left (names valid: find_version_key checked): deleted by its tag.
            left = [signature_key(model, tag, h) for h in self.signatures.list_signatures(model, tag)]
            left += [summary_key(model, tag)] if self.backend.exists(summary_key(model, tag)) else []
            if not left:
                raise
            self.check_format()
            self.backend.delete_many(left)
            return Deleted([tag], {})
        self.check_format()
        removed = self._release_aliases(model, vk.tag, force) if vk.tag is not None else []
        deleted = Deleted([tag], self._chunks_named([vk]), removed)
        if vk.tag is not None:
            signers = self.signatures.list_signatures(model, vk.tag)
            self.backend.delete_many([signature_key(model, vk.tag, h) for h in signers])
            self.backend.delete(summary_key(model, vk.tag))
        self.backend.delete(vk.key)
        return deleted

    def _release_aliases(self, model: str, tag: str, force: bool) -> list[str]:
        pointing = self.aliases.pointing_at(model, tag)
        if pointing and not force:
            shown = ", ".join(describe(r) for r in pointing[:5]) + (" ..." if len(pointing) > 5 else "")
            raise ConflictError(
                f"version {tag!r} of model {model!r} is what {len(pointing)} alias(es) point at: {shown}",
                f"move them first (`aim_cli model alias set {self.name} {model} ALIAS --tag TAG`), or pass --force "
                f"to delete the version and unset them (their history records it)",
            )
        return [r.alias for r in self.aliases.remove_pointing_at(model, tag)] if pointing else []

    def delete_model(self, model: str) -> Deleted:
        """Delete every key in ``model``'s versions/ (readable or not, strays too) and every
        summary, signature and alias entry (the model's aliases and their histories go with it);
        summaries first (see ``delete_version``). The deleted versions are returned."""
        keys = [
            k
            for k in self.keys.model_keys(model_prefix(check_name("model", model)))
            if not isinstance(k, VersionKey) or k.model is not None
        ]
        versions = [k for k in keys if isinstance(k, VersionKey)]
        if not keys:
            raise self.keys.model_not_found(model)
        self.check_format()
        deleted = Deleted([vk.tag or vk.name for vk in versions], self._chunks_named(versions))
        # Signatures first, then summaries, then manifests: a delete killed midway leaves a
        # version unsigned or unsummarised, never a signature or summary without its version.
        self.backend.delete_many([k.key for k in keys if isinstance(k, (SignatureKey, AliasKey, AliasStatementKey))])
        self.backend.delete_many([k.key for k in keys if isinstance(k, SummaryKey)] + [vk.key for vk in versions])
        return deleted
