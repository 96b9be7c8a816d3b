"""A repository's summaries role: what listings read instead of manifests (format/summary.py).

A manifest of a big model is megabytes (100 of them took `model versions` 16 s and 3.4 GB);
listings and the newest-tag resolution read each version's summary instead: one listing of
``models/<model>/``, then small reads in parallel. Push writes it right after the commit
(versions.py; a failure is a warning). A version without one (a push killed between the two
writes, a repository written by an older aim_cli) gets it rebuilt from its manifest by the next
listing, written back best-effort. A summary without its manifest (a listing's rebuild racing a
delete) is ignored by listings and removed by `delete-version`; one that does not parse, names
another version or disagrees with its manifest is damage (``summary_problems``, for `repo
check`). gc never reads summaries: they name no blob.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

from aim_cli.errors import DamagedStorageError, IntegrityError, KeyNotFoundError, ObjectTooLargeError, StorageError
from aim_cli.format import summary as sm
from aim_cli.format.layout import (
    MODELS,
    AliasKey,
    AliasStatementKey,
    SignatureKey,
    SummaryKey,
    manifest_key,
    model_prefix,
    summary_key,
)
from aim_cli.names import check_name
from aim_cli.repository.keys import StoredKeys
from aim_cli.repository.parallel import map_parallel

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Listed:
    """A version as a listing gives it: its summary, its manifest's modification time (None where
    the storage does not say) and whether the summary was just rebuilt from the manifest."""

    summary: sm.Summary
    mtime: float | None
    rebuilt: bool


class Summaries:
    """The summaries of the repository ``keys`` reads; up to ``jobs`` are read at once."""

    def __init__(self, keys: StoredKeys, jobs: int):
        self.keys = keys
        self.backend = keys.backend
        self.name = keys.name
        self.jobs = jobs

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

    def _summary_tags(self, model: str) -> tuple[dict[str, float | None], set[str]]:
        """One listing of ``models/<model>/``: the tags with a manifest (each with the manifest's
        modification time as listed), and those with a summary. Each stray is skipped with a
        warning on stderr."""
        tags: dict[str, float | None] = {}
        summarised: set[str] = set()
        for key, info in self.keys.model_entries(model_prefix(check_name("model", model))):
            if isinstance(key, (SignatureKey, AliasKey, AliasStatementKey)):
                continue
            if isinstance(key, SummaryKey):
                summarised.add(key.tag)
            elif key.tag is not None:
                tags[key.tag] = info.mtime
            else:
                self.keys.warn_stray(key)
        return dict(sorted(tags.items())), summarised

    def _summary(self, model: str, tag: str, stored: bool) -> tuple[sm.Summary, bool] | None:
        """The version's summary and whether it was rebuilt: the stored one, else (missing,
        damaged) rebuilt from its manifest. None when the version is gone (deleted since the
        listing)."""
        if stored:
            try:
                return self.get_summary(model, tag), False
            except KeyNotFoundError:
                pass  # removed since the listing: a delete in progress; the manifest decides
            except DamagedStorageError:
                raise  # a link or special file: damage for every command alike (backends)
            except IntegrityError as e:
                log.warning("warning: %s in repository %r; rebuilt it from its manifest", e.message, self.name)
        rebuilt = self._rebuild_summary(model, tag)
        return None if rebuilt is None else (rebuilt, True)

    def _rebuild_summary(self, model: str, tag: str) -> sm.Summary | None:
        """The summary of ``model:tag`` from its manifest, written back best-effort: a read-only
        user cannot (StorageError is ignored) and the listing does not need it written."""
        where = f"{model}:{tag}"
        try:
            raw = self.keys.manifest_bytes(manifest_key(model, tag), where)
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
        return [found.summary for found in self.listed_versions(model)]

    def listed_versions(self, model: str) -> list[Listed]:
        """As ``list_versions``, each summary with its manifest's modification time as listed and
        whether it was just rebuilt from the manifest (for ``Versions.newest_version``)."""
        tags, summarised = self._summary_tags(model)
        found = map_parallel(lambda t: self._summary(model, t, t in summarised), list(tags), self.jobs)
        listed = [Listed(got[0], tags[tag], got[1]) for tag, got in zip(tags, found, strict=True) if got is not None]
        if not listed:
            raise self.keys.model_not_found(model)
        return sorted(listed, key=lambda found: (found.summary.created_at, found.summary.tag))

    def summary_problems(self, known: Mapping[str, sm.Summary] | None = None) -> list[tuple[str, str]]:
        """(key, why) of every damaged summary, for `repo check`: one without its manifest, one
        that is not a valid summary of its version, one that disagrees with its manifest. A
        missing summary is no damage (the next listing rebuilds it), and neither is a manifest
        that cannot be read (the check reports the manifest itself). ``known`` maps a manifest
        key to the summary of the manifest that the caller read already, sparing a second read."""
        manifests, summaries = set(), []
        for key in self.keys.model_keys(MODELS):
            if isinstance(key, (SignatureKey, AliasKey, AliasStatementKey)):
                continue
            if isinstance(key, SummaryKey):
                summaries.append(key)
            elif key.tag is not None:
                manifests.add(key.key)
        summaries.sort(key=lambda k: k.key)
        found = map_parallel(lambda k: self._summary_problem(k, manifests, known or {}), summaries, self.jobs)
        return [(k.key, why) for k, why in zip(summaries, found, strict=True) if why is not None]

    def _summary_problem(self, sk: SummaryKey, manifests: set[str], known: Mapping[str, sm.Summary]) -> str | None:
        key = manifest_key(sk.model, sk.tag)
        if key not in manifests:
            return (
                f"a summary without its version (a delete was interrupted); `aim_cli model delete-version "
                f"{self.name} {sk.model} --tag {sk.tag}` removes it"
            )
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
            return (
                f"disagrees with its manifest ({', '.join(differ)}); remove it from the storage: the next "
                f"listing rebuilds it from the manifest"
            )
        return None

    def _manifest_summary(self, model: str, tag: str) -> sm.Summary | None:
        """The summary the stored manifest gives, or None if it is gone or damaged."""
        try:
            return sm.of_manifest_bytes(
                self.keys.manifest_bytes(manifest_key(model, tag), f"{model}:{tag}"),
                model=model,
                tag=tag,
                where=f"{model}:{tag}",
            )
        except (KeyNotFoundError, IntegrityError):
            return None
