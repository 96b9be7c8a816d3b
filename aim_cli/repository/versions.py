"""A repository's versions role: the manifests below ``models/<model>/versions/``.

The exclusive create of a manifest is a version's commit point, and its summary is written right
after (summaries.py). A manifest is read within MAX_MANIFEST_BYTES, parsed and validated, and must
name the version it is stored as. Listings of models and tags skip strays with a warning
(format/layout.py); the newest version is chosen by the summaries, cross-checked with the
manifests' modification times that the listing gives, and read from its manifest.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

from aim_cli.backends.base import Backend
from aim_cli.errors import (
    DamagedStorageError,
    IntegrityError,
    KeyNotFoundError,
    StorageError,
    TagExistsError,
    UsageError,
    VersionNotFoundError,
)
from aim_cli.format import manifest as mf
from aim_cli.format import summary as sm
from aim_cli.format.alias import AliasRecord
from aim_cli.format.layout import MODELS, VersionKey, manifest_key, parse_version_key, summary_key, versions_prefix
from aim_cli.names import check_name, valid_model_name
from aim_cli.repository.keys import StoredKeys, list_objects
from aim_cli.repository.meta import RepoMeta
from aim_cli.repository.parallel import map_parallel
from aim_cli.repository.summaries import Listed, Summaries

log = logging.getLogger(__name__)


def _maybe_later(mtime: float | None, chosen: float | None) -> bool:
    """Whether a manifest listed with ``mtime`` may have been written after the chosen one
    (listed with ``chosen``): not earlier, or unknown. Equal times count: S3 lists LastModified
    to the second, and rounding to the second keeps the order of writes, never inverts it."""
    return mtime is None or chosen is None or mtime >= chosen


@dataclass(frozen=True)
class VersionRef:
    """A manifest resolved once: the immutable id every later step works from."""

    manifest: mf.Manifest
    digest: str
    raw: bytes
    #: The alias entry the version was named through (repository/aliases.py), None for a tag.
    alias: AliasRecord | None = None


@dataclass(frozen=True)
class CommitResult:
    digest: str
    created: bool  # False: the identical version was already there


class Versions:
    """The versions of the repository ``keys`` reads; ``meta`` gives its format (a commit's
    summary depends on it) and ``summaries`` its summaries."""

    def __init__(self, keys: StoredKeys, meta: RepoMeta, summaries: Summaries):
        self.keys = keys
        self.backend = keys.backend
        self.name = keys.name
        self.meta = meta
        self.summaries = summaries

    def reading_through(self, backend: Backend) -> Versions:
        """These versions, read through ``backend`` (a ReadAhead over this repository's backend)."""
        return Versions(StoredKeys(backend, self.name), self.meta, self.summaries)

    # -- commit ------------------------------------------------------------------------------------
    def commit(
        self,
        manifest: mf.Manifest,
        *,
        stored_size: int | None = None,
        delta_base: str | None = None,
        new_stored_size: int | None = None,
    ) -> CommitResult:
        """Create the version: the exclusive create of its manifest is the commit point.

        The caller has stored (and synced) every blob first; ``stored_size`` is what they take
        and ``new_stored_size`` what of it the caller added (for the summary; ignored in format 1,
        see summary.py), ``delta_base`` the version it is paired with for deltas (format 3, for
        the summary). If the tag exists with the same files, nothing is written and the stored
        digest is returned. Once created, the manifest is read back: a server that ignored the
        condition would show another writer's bytes here."""
        raw = mf.encode(manifest)
        stored, ours = self._create_version(manifest.model, manifest.tag, raw, stored_size, delta_base, new_stored_size)
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
            f"digest ({stored.digest}, not {mf.digest_of(raw)})",
            "versions are immutable",
        )

    def _create_version(
        self,
        model: str,
        tag: str,
        raw: bytes,
        stored_size: int | None,
        delta_base: str | None = None,
        new_stored_size: int | None = None,
    ) -> tuple[VersionRef, bool]:
        """The exclusive create of manifest ``raw``, then its read-back: (the stored version,
        whether it is ``raw``). When it is, its summary is written."""
        # Whatever put_if_absent answers, the read-back decides: the stored bytes are the truth.
        self.backend.put_if_absent(manifest_key(model, tag), raw)
        stored = self.get_version(model, tag)
        if stored.raw != raw:
            return stored, False
        # Ours, byte for byte (created_at has microseconds), even when a retried PUT whose
        # first answer was lost saw 412 for our own write.
        fmt = self.meta.format()
        self._write_summary_after_commit(
            stored,
            stored_size if fmt.codecs is not None else None,
            delta_base if fmt.deltas is not None else None,
            new_stored_size if fmt.deltas is not None else None,  # format 3: no older client reads it
        )
        return stored, True

    def _write_summary_after_commit(
        self, ref: VersionRef, stored_size: int | None, delta_base: str | None, new_stored_size: int | None
    ) -> None:
        """The summary comes second: the manifest is the commit point, and a version whose summary
        was not written (a failure here, a kill) gets it rebuilt by the next listing. So a failure
        is a warning, never a failed push."""
        try:
            self.summaries.put_summary(self.summary_of(ref, stored_size, delta_base, new_stored_size))
        except (StorageError, DamagedStorageError) as e:
            log.warning(
                "warning: %s:%s is pushed, but its summary could not be written (%s); the next listing rebuilds it",
                ref.manifest.model,
                ref.manifest.tag,
                e.message,
            )

    def against_stored(self, stored: VersionRef, manifest: mf.Manifest) -> CommitResult:
        """The outcome of pushing ``manifest`` where ``stored`` already holds its tag: the same
        files are "already pushed" (nothing written); other files are a TagExistsError."""
        if stored.manifest.same_content(manifest):
            return CommitResult(stored.digest, False)
        raise TagExistsError(
            f"version {manifest.tag!r} of model {manifest.model!r} already exists in {self.name!r} "
            f"with other content (digest {stored.digest})",
            "versions are immutable: push under a new --tag",
        )

    # -- reads -------------------------------------------------------------------------------------
    def has_version(self, model: str, tag: str) -> bool:
        return self.backend.exists(manifest_key(model, tag))

    def not_found(self, model: str, tag: str) -> VersionNotFoundError:
        if not valid_model_name(model) or not self.model_exists(model):
            return VersionNotFoundError(
                f"model {model!r} not found in repository {self.name!r}",
                f"run `aim_cli model list {self.name}`",
                model=model,
            )
        return VersionNotFoundError(
            f"version {tag!r} of model {model!r} not found in repository {self.name!r}",
            f"run `aim_cli model versions {self.name} {model}`",
            model=model,
            tag=tag,
        )

    def get_version(self, model: str, tag: str) -> VersionRef:
        found = self.find_version(model, tag)
        if found is None:
            raise self.not_found(model, tag)
        return found

    def find_version(self, model: str, tag: str) -> VersionRef | None:
        """``get_version``'s version, or None when the tag holds none: one read, where a HEAD
        before it would be a round trip more whenever the tag is stored."""
        check_name("model", model)
        check_name("tag", tag)
        where = f"{model}:{tag}"
        try:
            raw = self.keys.manifest_bytes(manifest_key(model, tag), where)
        except KeyNotFoundError:
            return None
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
        if vk.model is not None and vk.tag is not None:
            return self.get_version(vk.model, vk.tag)
        raw = self.keys.manifest_bytes(vk.key, vk.key)
        return VersionRef(mf.decode(raw, where=vk.key), mf.digest_of(raw), raw)

    def summary_of(
        self,
        ref: VersionRef,
        stored_size: int | None = None,
        delta_base: str | None = None,
        new_stored_size: int | None = None,
    ) -> sm.Summary:
        m = ref.manifest
        where = f"{m.model}:{m.tag}"
        return sm.of_manifest(
            m, ref.digest, where=where, stored_size=stored_size, delta_base=delta_base, new_stored_size=new_stored_size
        )

    # -- listings ----------------------------------------------------------------------------------
    def iter_version_keys(self, model: str | None = None) -> Iterator[VersionKey]:
        """Every object below ``models/`` (or below ``model``'s versions/), parsed: versions and
        strays alike, without the summaries (the store's own keys, naming no blob)."""
        if model is not None:
            for info in list_objects(self.backend, versions_prefix(check_name("model", model))):
                yield parse_version_key(info.key)
            return
        for key in self.keys.model_keys(MODELS):
            if isinstance(key, VersionKey):
                yield key

    def _versions(self, model: str | None = None) -> list[VersionKey]:
        """The version keys (of ``model``); each stray is skipped with a warning on stderr."""
        found = []
        for vk in self.iter_version_keys(model):
            if vk.tag is None:
                self.keys.warn_stray(vk)
            else:
                found.append(vk)
        return found

    def list_models(self) -> list[str]:
        return sorted({vk.model for vk in self._versions() if vk.model is not None})

    def list_tags(self, model: str) -> list[str]:
        return sorted(vk.tag for vk in self._versions(model) if vk.tag is not None)

    def model_exists(self, model: str) -> bool:
        """Whether ``model`` has a version (quietly: strays are for listings to mention)."""
        return any(vk.tag is not None for vk in self.iter_version_keys(model))

    # -- the newest version --------------------------------------------------------------------------
    def newest_version(self, model: str) -> VersionRef:
        """The newest version of ``model`` (by its manifest's created_at, then tag), chosen by the
        summaries, cross-checked with the listing and read from its manifest.

        The summaries are derived data: a summary that lies (a newer version's created_at set to
        2020) must not make this return an older version. So the listing's own evidence is asked
        too: each manifest's modification time, which S3's LIST and a local directory give for
        free. Every version whose manifest is listed as written no earlier than the chosen one's
        (or whose time is unknown) could be the newer one: its manifest is read too, unless its
        summary was just rebuilt from it. A summary that disagrees with its manifest is damage:
        IntegrityError naming the summary's key. When none does, the manifests' created_at agree
        with the summaries', so the chosen version is the newest the manifests give. A version
        merely listed in another order (a copy, clock skew, S3's 1-second LastModified) costs one
        more manifest read, never an error. In a repository pushed to in order this reads one
        manifest (more when versions were written within the same second on S3)."""
        listed = self.summaries.listed_versions(model)
        chosen = listed[-1]
        ref = self.get_version(model, chosen.summary.tag)
        self._check_summary(chosen.summary, self.summary_of(ref))
        rivals = [found for found in listed[:-1] if not found.rebuilt and _maybe_later(found.mtime, chosen.mtime)]
        for found, expected in zip(
            rivals, map_parallel(self._manifest_summary, rivals, self.summaries.jobs), strict=True
        ):
            if expected is not None:  # None: deleted since the listing
                self._check_summary(found.summary, expected)
        return ref

    def _manifest_summary(self, found: Listed) -> sm.Summary | None:
        """The summary the stored manifest of ``found`` gives (IntegrityError if it is damaged),
        or None if it is gone. The manifest's bytes are not kept."""
        model, tag = found.summary.model, found.summary.tag
        try:
            raw = self.keys.manifest_bytes(manifest_key(model, tag), f"{model}:{tag}")
        except KeyNotFoundError:
            return None
        return sm.of_manifest_bytes(raw, model=model, tag=tag, where=f"{model}:{tag}")

    def _check_summary(self, stored: sm.Summary, expected: sm.Summary) -> None:
        differ = sm.differences(stored, expected)
        if differ:
            raise IntegrityError(
                f"summary {summary_key(stored.model, stored.tag)} in repository {self.name!r} disagrees with its "
                f"manifest ({', '.join(differ)}), so the newest version of {stored.model!r} is unknown",
                f"name the version with --tag; `aim_cli repo check {self.name}` lists all damage",
            )

    def resolve_version(self, model: str, tag: str | None, digest: str | None) -> tuple[VersionRef, bool]:
        """The version to pull, resolved once: (it, whether it was chosen as the newest). Without
        a tag: the newest by created_at, chosen by the versions' summaries, so one manifest is
        read, not all (``newest_version``). ``digest`` pins the manifest's digest."""
        check_name("model", model)
        if digest is not None and not mf.HEX64.fullmatch(digest.lower()):
            raise UsageError(
                "--digest takes the full 64-hex-character manifest digest",
                "copy it from the push output or `aim_cli model versions`",
            )
        if tag is None:
            ref, newest = self.newest_version(model), True
        else:
            ref, newest = self.get_version(model, tag), False
        self.check_pin(ref, digest)
        return ref, newest

    def check_pin(self, ref: VersionRef, digest: str | None) -> None:
        """IntegrityError unless the version's manifest digest is ``digest`` (None: not pinned)."""
        if digest is not None and ref.digest != digest.lower():
            raise IntegrityError(
                f"version {ref.manifest.tag!r} of model {ref.manifest.model!r} has digest {ref.digest}, "
                f"not the pinned {digest.lower()}",
                "the version is not the one you pinned; nothing was downloaded",
            )
