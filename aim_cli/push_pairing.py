"""Which version a format 3 push pairs with for deltas, and the local files it reads them from.

Push stores its version whole, like format 2, then (only when asked: ``--delta`` or ``--base``,
docs/design.md §3.5) re-encodes one pair of versions with the simplest chain rule:
- within a model (``--delta``: the newest version before the push; ``--base TAG``: that one), the
  older side becomes deltas against the version just pushed, which stays whole;
- ``--base MODEL:TAG`` names a version of another model, a fine-tune's base model: that version
  stays whole and the version just pushed becomes deltas against it.
Everything about the pairing is checked before a byte is pushed: a base that does not exist, a
repository that stores no deltas, a ``--reference`` that is not a directory are refused first.

The re-encoding reads raw chunks from local files before the repository: the pushed directory
(the chunks push just cut, at their offsets) and each ``--reference`` directory, read as the
paired version's files at the same paths (a training machine holds the previous checkpoint).
Every chunk read locally is verified by BLAKE3 (pull/sources.py ``read_verified``); one that does
not match is read from the repository instead.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from aim_cli.errors import LockHeldError, UsageError, VersionNotFoundError
from aim_cli.names import check_name
from aim_cli.repository import Repository, VersionRef

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Pairing:
    """The version a push pairs with: ``base`` (None: the model has no version yet, nothing to pair)."""

    base: VersionRef | None
    forward: bool  # the pushed version becomes deltas against ``base`` (another model's version)
    references: tuple[Path, ...] = ()

    @property
    def name(self) -> str | None:
        """``model:tag`` of the paired version, as results and summaries show it."""
        return None if self.base is None else f"{self.base.manifest.model}:{self.base.manifest.tag}"


def resolve(
    repo: Repository,
    model: str,
    tag: str,
    *,
    delta: bool,
    base: str | None,
    references: Sequence[str | os.PathLike] = (),
) -> Pairing | None:
    """The pairing a push of ``model:tag`` asks for (None: store plain, pair nothing), checked
    before anything is pushed. UsageError for options that cannot hold, VersionNotFoundError
    for a ``--base`` version that does not exist."""
    if not (delta or base or references):
        return None
    option = "--base" if base else "--reference" if references else "--delta"
    fmt = repo.format()
    if fmt.deltas is None:
        raise UsageError(
            f"{option} needs a format 3 repository: {repo.name!r} has storage format {fmt.version}, "
            "which stores no deltas",
            f"push without {option}, or copy the model into a format 3 repository (repo create --format 3)",
        )
    refs = tuple(_reference_dir(r) for r in references)
    if base is None:
        try:
            newest = repo.newest_version(model)
        except VersionNotFoundError:
            return Pairing(None, False, refs)
        return Pairing(newest if newest.manifest.tag != tag else None, False, refs)
    base_model, sep, base_tag = base.rpartition(":")
    base_model = base_model if sep else model
    check_name("model", base_model)
    check_name("tag", base_tag)
    if (base_model, base_tag) == (model, tag):
        raise UsageError(f"--base {base} names the version being pushed", "name another version of the model")
    ref = repo.get_version(base_model, base_tag)  # VersionNotFoundError: exit 3, with its hint
    return Pairing(ref, base_model != model, refs)


def _reference_dir(path: str | os.PathLike) -> Path:
    p = Path(path)
    if not p.is_dir():
        raise UsageError(f"--reference {os.fspath(path)} is not a directory", "name the directory of a local copy")
    return p


def reencode(repo: Repository, pairing: Pairing, pushed: VersionRef, source: Mapping[str, str]) -> int:
    """Carry out ``pairing`` for the version just pushed, whose files ``source`` maps from their
    manifest paths to what push read: the chunks stored as deltas, or 0 when another re-encoder
    holds the repository (`repo optimize` does it later)."""
    from aim_cli.optimize import reencode_pair

    if pairing.base is None or pairing.base.digest == pushed.digest:
        return 0
    older, newer = (pushed, pairing.base) if pairing.forward else (pairing.base, pushed)
    base = pairing.base
    local = _local_chunks(
        [(pushed, source.get)] + [(base, lambda path, root=root: str(root / path)) for root in pairing.references]
    )
    try:
        return reencode_pair(repo, older, newer, local=local).reencoded
    except LockHeldError:
        log.info("another re-encoder is running: `aim_cli repo optimize` delta-codes this version later")
        return 0


def _local_chunks(sources: Sequence[tuple[VersionRef, Callable[[str], str | None]]]):
    """``read(digest, size)`` over the files of each (version, where its file at a manifest path
    is): a chunk's verified bytes from the first file holding it at its offset, or None."""
    from aim_cli.pull.sources import LocalFiles

    files = LocalFiles("reference", None)
    for ref, where in sources:
        for entry in ref.manifest.files:
            path = where(entry.path)
            if path is None:
                continue
            offset, found = 0, []
            for digest, size in entry.chunks:
                found.append((digest, offset))
                offset += size
            files.add(path, found)

    def read(digest: str, size: int) -> bytes | None:
        return files.read(digest, size, "")

    return read
