"""The signed payload: an in-toto Statement v1 with predicate type
``https://model_signing/signature/v1.0``, built from a version's digests and parsed back, and
the digests of a version's files (from the manifest, from verified blobs or from a local
directory) it is built from or checked against. As model_signing 1.1.1's ``Payload``:

- payload bytes: ``json_format.MessageToJson(statement)``, i.e. JSON with indent 2 and ASCII
  escapes, keys in the Statement's field order (_type, subject, predicateType, predicate).
  Upstream's predicate is a protobuf Struct whose key order varies from run to run (a hash
  map), so no byte-exact reproduction exists; we fix the order in which upstream builds the
  dicts (serialization: method, hash_type, allow_symlinks, ignore_paths; resource: name,
  algorithm, digest) and the ignore list in ``hashing.Config``'s order.
- resources sorted as ``Manifest.resource_descriptors`` sorts them: by ``PurePath``, i.e. by the
  list of path components ("a/b" before "a.txt"), not by the string.
- subject: the model name and the SHA-256 over the raw digests in resource order (the
  verifier recomputes it). The name is informative only (upstream uses the directory name).
- ignore paths: upstream's defaults ``.git .gitattributes .github .gitignore``; a file at or
  under one of them is left out, exactly as upstream's ``is_relative_to`` test does
  (``.gitmodules`` or ``sub/.gitignore`` stay in).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import blake3

from aim_cli.errors import IntegrityError, UsageError
from aim_cli.format import manifest as mf
from aim_cli.progress import NullProgress, Progress
from aim_cli.signing.strict import field, load_json, malformed
from aim_cli.util.fs import display_path
from aim_cli.util.walk import iter_tree, kind_of, local_directory, open_binary

PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://model_signing/signature/v1.0"
#: upstream hashing.Config's git paths, in its order (relative to the model root).
DEFAULT_IGNORE_PATHS = (".git", ".gitattributes", ".github", ".gitignore")
BLAKE3 = "blake3"
SHA256 = "sha256"
#: Algorithms a resource may name (upstream's hashing_algorithm choices; "blake2" is BLAKE2b-512).
ALGORITHMS = {BLAKE3: 64, SHA256: 64, "blake2": 128}
_HEX = re.compile(r"[0-9a-f]+")


@dataclass(frozen=True)
class Statement:
    """A parsed payload: the signed resources and how they were serialized."""

    name: str
    resources: dict[str, tuple[str, str]]  # path -> (algorithm, hex digest)
    ignore_paths: tuple[str, ...]
    kind: str


def is_ignored(path: str, ignore_paths: Iterable[str]) -> bool:
    """Upstream's ``should_ignore``: ``path`` is an ignore path or lies under one."""
    return any(path == p or path.startswith(p.rstrip("/") + "/") for p in ignore_paths)


def upstream_order(path: str) -> list[str]:
    """The sort key of ``PurePath`` (component lists), which orders upstream's resources."""
    return path.split("/")


def build_statement(
    name: str, digests: Mapping[str, str], algorithm: str, ignore_paths: Sequence[str] = DEFAULT_IGNORE_PATHS
) -> dict:
    """The in-toto statement over ``digests`` (path -> hex), as model_signing's ``Payload``."""
    paths = sorted(digests, key=upstream_order)
    root = hashlib.sha256()
    for path in paths:
        root.update(bytes.fromhex(digests[path]))
    serialization_args = {"method": "files", "hash_type": algorithm, "allow_symlinks": False}
    if ignore_paths:
        serialization_args["ignore_paths"] = list(ignore_paths)
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": name, "digest": {"sha256": root.hexdigest()}}],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "serialization": serialization_args,
            "resources": [{"name": p, "algorithm": algorithm, "digest": digests[p]} for p in paths],
        },
    }


def payload_bytes(statement: dict) -> bytes:
    """protobuf's MessageToJson layout: indent 2, ASCII escapes, no trailing newline."""
    return json.dumps(statement, indent=2, ensure_ascii=True).encode("ascii")


def parse_statement(payload: bytes) -> Statement:
    """The signed statement: type, predicate, one serialization "files", resources with unique
    names and well-formed digests, and a subject digest that matches them."""
    doc = load_json(payload, "the payload")
    if field(doc, "_type", str, "statement") != STATEMENT_TYPE:
        raise malformed(f"statement type is not {STATEMENT_TYPE}")
    if field(doc, "predicateType", str, "statement") != PREDICATE_TYPE:
        raise malformed(f"predicate type is not {PREDICATE_TYPE}")
    subjects = field(doc, "subject", list, "statement")
    if len(subjects) != 1:
        raise malformed(f"{len(subjects)} subjects, expected 1")
    name = field(subjects[0], "name", str, "subject")
    root = field(field(subjects[0], "digest", dict, "subject"), "sha256", str, "subject.digest")
    predicate = field(doc, "predicate", dict, "statement")
    ser = field(predicate, "serialization", dict, "predicate")
    if field(ser, "method", str, "serialization") != "files":
        raise malformed(f'serialization method {ser["method"]!r} is not supported (only "files")')
    kind = field(ser, "hash_type", str, "serialization")
    if kind not in ALGORITHMS:
        raise malformed(f"hash type {kind!r} is not one of {', '.join(sorted(ALGORITHMS))}")
    ignore = ser.get("ignore_paths", [])
    if not isinstance(ignore, list) or not all(isinstance(p, str) for p in ignore):
        raise malformed("serialization.ignore_paths is not a list of strings")
    resources = {}
    digest_of_digests = hashlib.sha256()
    for item in field(predicate, "resources", list, "predicate"):
        path = field(item, "name", str, "resource")
        algorithm = field(item, "algorithm", str, "resource")
        value = field(item, "digest", str, "resource")
        if algorithm != kind:
            raise malformed(f"resource {path!r} uses {algorithm!r}, the serialization says {kind!r}")
        if len(value) != ALGORITHMS[kind] or not _HEX.fullmatch(value):
            raise malformed(f"resource {path!r} has a malformed {kind} digest")
        if path in resources:
            raise malformed(f"resource {path!r} appears twice")
        resources[path] = (algorithm, value)
        digest_of_digests.update(bytes.fromhex(value))
    if digest_of_digests.hexdigest() != root:
        raise malformed("the subject digest does not match the resources (the payload was altered)")
    return Statement(name, resources, tuple(ignore), kind)


# -- the digests a statement lists ----------------------------------------------------------------------
def blake3_digests(manifest: mf.Manifest, ignore_paths: Iterable[str] = DEFAULT_IGNORE_PATHS) -> dict[str, str]:
    """path -> BLAKE3 of every signed file, from the manifest alone (no blob is read)."""
    ignore = tuple(ignore_paths)
    return {f.path: f.blake3 for f in manifest.files if not is_ignored(f.path, ignore)}


def _hasher(algorithm: str):
    if algorithm == BLAKE3:
        return blake3.blake3()
    if algorithm == SHA256:
        return hashlib.sha256()
    if algorithm == "blake2":
        return hashlib.blake2b()
    raise IntegrityError(
        f"unknown digest algorithm {algorithm!r} in the signature",
        f"a signature's resources use one of {', '.join(sorted(ALGORITHMS))}",
    )


def stored_digests(
    repository,
    manifest: mf.Manifest,
    algorithm: str,
    ignore_paths: Iterable[str] = DEFAULT_IGNORE_PATHS,
    progress: Progress | None = None,
) -> dict[str, str]:
    """path -> ``algorithm`` digest of every signed file, streamed from the VERIFIED blobs
    (``Repository.get_blob`` checks each chunk's BLAKE3 and size first), file by file in
    parallel; one chunk per worker in memory. ``progress`` sees the bytes hashed (BLAKE3 reads
    nothing: no bar)."""
    if algorithm == BLAKE3:
        return blake3_digests(manifest, ignore_paths)
    ignore = tuple(ignore_paths)
    files = [f for f in manifest.files if not is_ignored(f.path, ignore)]
    progress = progress or NullProgress()

    def digest(entry: mf.FileEntry) -> str:
        h = _hasher(algorithm)
        for chunk, size in entry.chunks:
            h.update(repository.get_blob(chunk, size, context=f"{manifest.model}:{manifest.tag}/{entry.path}"))
            progress.advance(size)
        return h.hexdigest()

    progress.start(f"hash {algorithm}", sum(f.size for f in files))
    try:
        return dict(zip((f.path for f in files), repository.map_parallel(digest, files), strict=True))
    finally:
        progress.close()


def local_digests(directory: str | os.PathLike, algorithm: str, ignore_paths: Iterable[str]) -> dict[str, str]:
    """path -> digest of every regular file under ``directory`` outside the ignore paths, as
    model_signing hashes a model directory; through the walker and opener plain `verify --local`
    uses (util.walk): DIR/.aim* (pull's working files) is left out, an ignored directory (.git)
    is not entered, a symlink is refused as upstream's default does, and so is any other file
    that is not regular (a FIFO is never opened in blocking mode). A DIR that does not exist or is
    not a directory: UsageError (exit 2)."""
    root = local_directory(directory, "--local", "pass the directory the version was pulled into")
    ignore = tuple(ignore_paths)
    try:
        found = sorted(iter_tree(root, prune=lambda path, _: is_ignored(path, ignore)))
    except OSError as e:
        raise UsageError(
            f"cannot read {display_path(e.filename or root)}: {e.strerror or e}", "check its permissions"
        ) from None
    out: dict[str, str] = {}
    for rel, st in found:
        full = root / rel
        if not stat.S_ISREG(st.st_mode):
            raise IntegrityError(
                f"{display_path(full)} is {kind_of(st.st_mode)}", "signed directories hold regular files only"
            )
        h = _hasher(algorithm)
        try:
            with open_binary(full) as f:
                while block := f.read(1 << 20):
                    h.update(block)
        except OSError as e:
            raise IntegrityError(
                f"cannot read {display_path(full)}: {e.strerror or e}", "signed directories hold regular files only"
            ) from None
        out[rel] = h.hexdigest()
    return out
