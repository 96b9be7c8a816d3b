"""Case-insensitive filesystems: which paths of a version name one file where case is ignored.

Names are compared folded: case, and Unicode normalisation, which such filesystems ignore too.
Whether DEST's filesystem ignores case is asked of DEST itself (dest_writer.ignores_case under
the lock, dest_access.ignores_case_read_only for a dry run), only when a version has such a pair.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Iterable, Sequence

from aim_cli.errors import UsageError
from aim_cli.util.fs import display_path


def fold(path: str) -> str:
    """``path`` as a filesystem that ignores case compares it (case, and Unicode normalisation,
    which such filesystems ignore too)."""
    return unicodedata.normalize("NFC", unicodedata.normalize("NFC", path).casefold())


def case_clashes(paths: Iterable[str]) -> list[tuple[str, str]]:
    """Pairs of manifest paths that name one file (or a file and a directory) on a filesystem
    that ignores case: ``A.bin`` and ``a.bin``; ``A`` and ``a/x``."""
    seen: dict[str, str] = {}
    clashes = []
    for path in paths:
        key = fold(path)
        if key in seen:
            clashes.append((seen[key], path))
        else:
            seen[key] = path
    # a file whose folded path is a folded directory of another file
    folded_dirs: dict[str, str] = {}
    for key, path in seen.items():
        parts = key.split("/")
        for i in range(1, len(parts)):
            folded_dirs.setdefault("/".join(parts[:i]), path)
    for key, path in seen.items():
        if key in folded_dirs:
            clashes.append((path, folded_dirs[key]))
    return clashes


def check_case_clashes(paths: Sequence[str], ignores_case: Callable[[], bool]) -> None:
    """Refuse (UsageError) a version whose paths collide on DEST's case-insensitive filesystem:
    one file would overwrite the other. A case-sensitive DEST takes any version. ``ignores_case``
    probes DEST, only when the version has such a pair."""
    clashes = case_clashes(paths)
    if clashes and ignores_case():
        a, b = clashes[0]
        more = f" (and {len(clashes) - 1} more pairs)" if len(clashes) > 1 else ""
        raise UsageError(
            f"the version has paths that differ only by case, {display_path(a)!r} and {display_path(b)!r}{more}, "
            f"and the destination's filesystem ignores case",
            "pull onto a case-sensitive filesystem (most Linux filesystems are)",
        )
