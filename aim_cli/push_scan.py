"""What push reads of DIR: the regular files a version is made of, chosen by --include/--exclude
(pull's patterns, util.patterns) and the default ignores (util.ignores), refused where a manifest
cannot represent them faithfully. Shared by the push (push.py) and its dry run (push_plan.py)."""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from aim_cli.errors import UsageError
from aim_cli.format import manifest as mf
from aim_cli.util.fs import display_path
from aim_cli.util.ignores import Ignored
from aim_cli.util.patterns import PathFilter
from aim_cli.util.walk import iter_tree, local_directory

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)  # slots: a push of 100,000 files holds as many
class SourceFile:
    path: str  # relative, '/'-separated: the manifest path
    abspath: str  # what to read (the link's target under --follow-symlinks)
    size: int
    mode: int
    mtime_ns: int  # with size: how push notices a file written to while it was being read


def scan_source(
    root: str | os.PathLike,
    *,
    follow_symlinks: bool = False,
    on_skip: Callable[[str], None] | None = None,
    selection: PathFilter | None = None,
    ignored: Ignored | None = None,
) -> list[SourceFile]:
    """Every regular file under ``root`` that ``selection`` selects (pull's --include/--exclude),
    sorted by manifest path, through the one walker of a user's directory (util.walk.iter_tree;
    files are later opened by util.walk.open_regular). ``ignored``: leave out the default ignores
    (util.ignores: .git/, __pycache__/ ...) and tally them there. What is left out is not looked
    at: an excluded FIFO or an ignored symlink named .git is no reason to refuse. Refuses
    (UsageError) what a manifest cannot represent faithfully among the selected files: symlinks
    (unless followed to a regular file, whose resolved path is then read), special files,
    unreadable files, names that are not valid manifest paths (manifest.check_path: not UTF-8,
    too long, too deep; a directory's name is checked before it is entered); and an --include
    that matches no file. ``on_skip(name)`` hears of each top-level ``.aim*`` name left out."""
    root = local_directory(root, "DIR", "check the path to the model directory")
    selection = selection or PathFilter()
    excluded_dirs: list[str] = []

    def prune(path: str, is_dir: bool) -> bool:
        if ignored is not None and ignored.add(root, path, is_dir):
            return True
        if is_dir and selection.excludes_tree(path):
            excluded_dirs.append(path + "/")
            return True
        if is_dir:
            _refuse_bad_name(root, path)
        return False

    try:
        found = list(iter_tree(root, on_skip=on_skip, prune=prune))
    except OSError as e:
        shown = display_path(e.filename or root)
        raise UsageError(f"cannot read directory {shown}: {e.strerror}", "check its permissions") from None
    if not selection.everything:
        hint = (
            f"; what push ignores by default ({ignored.summary()}) needs --no-default-ignores"
            if ignored and ignored.paths
            else ""
        )
        selection.check([p for p, _ in found] + excluded_dirs, log.warning, what="DIR", hint=hint)
        found = [(p, st) for p, st in found if selection.selects(p)]
    files = _source_files(root, found, follow_symlinks)
    if not files:
        if not selection.everything:
            raise UsageError(f"--include/--exclude leave no file of {display_path(root)} to push", "check the patterns")
        why = f" but what push ignores by default ({ignored.summary()})" if ignored and ignored.paths else ""
        raise UsageError(
            f"directory {display_path(root)} contains no files{why}", "push a directory holding the model's files"
        )
    files.sort(key=lambda f: f.path)
    return files


def _refuse_bad_name(root: Path, path: str) -> None:
    why = mf.check_path(path)
    if why:
        raise UsageError(f"cannot store {display_path(root / path)}: {why}", "rename or move it")


def _source_files(root: Path, found: list[tuple[str, os.stat_result]], follow_symlinks: bool) -> list[SourceFile]:
    files: list[SourceFile] = []
    links: list[str] = []
    for path, st in found:
        _refuse_bad_name(root, path)
        full = os.path.join(root, path)
        if stat.S_ISLNK(st.st_mode):
            if not follow_symlinks:
                links.append(path)
            else:
                files.append(_linked_file(path, full))
        elif stat.S_ISREG(st.st_mode):
            if not os.access(full, os.R_OK):
                raise UsageError(f"cannot read {display_path(full)}", "check its permissions")
            files.append(SourceFile(path, full, st.st_size, stat.S_IMODE(st.st_mode) & mf.MODE_MASK, st.st_mtime_ns))
        else:
            raise UsageError(f"{display_path(full)} is not a regular file", "remove it from the directory")
    if links:
        shown = ", ".join(sorted(links)[:3]) + (f" and {len(links) - 3} more" if len(links) > 3 else "")
        raise UsageError(
            f"{display_path(root)} contains symlinks: {shown}",
            "pass --follow-symlinks to store the content of the files they point to",
        )
    return files


def _linked_file(path: str, full: str) -> SourceFile:
    """The file a symlink of DIR points to (push --follow-symlinks): a regular file, read through
    its resolved path, so the opener's O_NOFOLLOW holds there too."""
    try:
        st = os.stat(full)
    except OSError:
        raise UsageError(f"symlink {display_path(full)} is broken", "remove it or fix its target") from None
    if not stat.S_ISREG(st.st_mode):
        raise UsageError(
            f"symlink {display_path(full)} does not point to a regular file",
            "only links to files are followed; copy the directory instead",
        )
    target = os.path.realpath(full)
    return SourceFile(path, target, st.st_size, stat.S_IMODE(st.st_mode) & mf.MODE_MASK, st.st_mtime_ns)
