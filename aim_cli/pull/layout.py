"""DEST's own layout while a pull runs, and what preparing DEST establishes before it is planned.

Inside DEST (names starting with ``.aim`` never appear in a manifest):

    DEST/.aim/pull.lock                   one pull at a time (dest_lock.py says how)
    DEST/.aim/partial/<id>                a file being assembled; id = BLAKE3(path NUL file digest)[:32]
    DEST/.aim/case-probe                  for an instant: does DEST's filesystem ignore case?
    DEST/.aim/index.json                  the files pull wrote or verified, by stat (dest_index.py)

The partial names are deterministic, so a rerun after a kill finds them and re-hashes their chunks
against the manifest: only what is still missing is fetched, and no second copy of the model is
made. A partial file is always the owner's, mode 0600: the manifest's mode is applied only after
the rename, so a read-only or write-only file can be re-read for verification and rewritten by a
rerun.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import blake3

from aim_cli.format import manifest as mf

WORK_DIR = ".aim"  # starts with util.walk.OWN_PREFIX: no walk of a model directory ever enters it
PARTIAL_DIR = "partial"
CASE_PROBE = "case-probe"
INDEX_NAME = "index.json"
PARTIAL_MODE = 0o600  # what a partial file always has: readable and writable by its owner only


def partial_name(entry: mf.FileEntry) -> str:
    return blake3.blake3(f"{entry.path}\0{entry.blake3}".encode()).hexdigest()[:32]


@dataclass(frozen=True)
class DestFacts:
    """What was learned of DEST before it is planned, so that the planner itself only reads.

    A pull gets these from ``dest_writer.prepare_dest``, under DEST's lock: the work directories
    exist, every partial file has PARTIAL_MODE, and a version whose paths clash on a filesystem
    that ignores case has been refused. A dry run gets them from ``dest_access.inspect_dest``,
    which writes nothing and takes no lock."""

    partials: tuple[Path, ...]  # the partial files in DEST/.aim/partial: each a regular file of one link
    locked: bool  # gathered under DEST's lock: a plan made from them may be carried out
