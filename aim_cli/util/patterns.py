"""``--include`` / ``--exclude``: which files of a version a command works on.

The semantics of huggingface_hub's ``allow_patterns`` / ``ignore_patterns``, so a pattern means
what a Hugging Face user expects: ``fnmatch`` on the manifest path (``/``-separated, relative),
where ``*`` also matches ``/`` (``*.safetensors`` selects them in every directory); a pattern
ending in ``/`` means everything under that directory. A file is selected when it matches some
include (or no include is given) and no exclude. Matching is case-sensitive on every platform,
as manifest paths are.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase

from aim_cli.errors import UsageError


def _expand(pattern: str) -> str:
    return pattern + "*" if pattern.endswith("/") else pattern


@dataclass(frozen=True)
class PathFilter:
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    _inc: tuple[str, ...] = field(init=False, repr=False, compare=False)
    _exc: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for option, patterns in (("--include", self.include), ("--exclude", self.exclude)):
            for p in patterns:
                if not p:
                    raise UsageError(f"{option} takes a non-empty pattern", "e.g. '*.safetensors' or 'tokenizer/'")
        object.__setattr__(self, "_inc", tuple(map(_expand, self.include)))
        object.__setattr__(self, "_exc", tuple(map(_expand, self.exclude)))

    @classmethod
    def of(cls, include: Iterable[str] | None = None, exclude: Iterable[str] | None = None) -> PathFilter:
        return cls(tuple(include or ()), tuple(exclude or ()))

    @property
    def everything(self) -> bool:
        return not (self.include or self.exclude)

    def selects(self, path: str) -> bool:
        if self._inc and not any(fnmatchcase(path, p) for p in self._inc):
            return False
        return not any(fnmatchcase(path, p) for p in self._exc)

    def excludes_tree(self, directory: str) -> bool:
        """Whether every path under ``directory`` is excluded, whatever its name: an exclude
        matches ``directory/`` and ends in ``*`` (``dir/`` is expanded so), which then matches any
        tail too. A walk need not enter it (push's scan: an excluded directory is not read)."""
        return any(p.endswith("*") and fnmatchcase(directory + "/", p) for p in self._exc)

    def unmatched(self, paths: Sequence[str]) -> tuple[list[str], list[str]]:
        """(includes, excludes) that match none of ``paths``, as given on the command line."""

        def none_match(pattern: str) -> bool:
            return not any(fnmatchcase(path, pattern) for path in paths)

        return (
            [p for p, e in zip(self.include, self._inc, strict=True) if none_match(e)],
            [p for p, e in zip(self.exclude, self._exc, strict=True) if none_match(e)],
        )

    def check(self, paths: Sequence[str], warn, *, what: str = "the version", hint: str = "") -> None:
        """Refuse an include that matches no file of ``paths`` (exit 2: a silent empty pull would
        look like success); ``warn(message)`` about an exclude that matches none. ``what`` the
        files are ("the version", push's "DIR"); ``hint`` is added to the refusal's."""
        includes, excludes = self.unmatched(paths)
        if includes:
            names = ", ".join(repr(p) for p in includes)
            raise UsageError(
                f"--include {names} matches no file of {what}",
                "check the pattern: it is matched against the whole path, e.g. '*.json' or 'tokenizer/'" + hint,
            )
        for p in excludes:
            warn(f"warning: --exclude {p!r} matches no file of {what}")
