"""The key layout of a repository (docs/design.md §2; pinned by tests/repository/test_store.py):
where each stored object lives, and what a stored key names. Pure functions and constants: no I/O.

    aim-repo.json                               {"format": 1, "chunking": {...}, "hash": "blake3"}
    blobs/<h[0:2]>/<h>                          one chunk; h = BLAKE3 hex of its bytes
    models/<model>/versions/<tag>.json          one immutable manifest: the commit point
    models/<model>/summaries/<tag>.json         its summary (summary.py): what listings read
    models/<model>/signatures/<tag>/<hint>.sig  one signer's signature of the version
    models/<model>/aliases/<alias>/<n>.json     entry n (1, 2, ...) of an alias's history (alias.py)
    models/<model>/aliases/<alias>/<n>.<signer>.sig  one signer's signed statement of entry n
    models/@<org>/<model>/...                   the same for the namespaced model <org>/<model>
    locks/<id>.json                             gc/push leases
    edges/<b[0:2]>/<b>/<d>                      empty: blob d is (about to be) a delta against blob b (format 3)

``<model>`` above stands for the model's *segments*: a plain model's one (its name), a namespaced
model's two (``@<org>/<model>``, ``model_segments``). No plain name starts with ``@``, so the first
segment alone says which, whatever folders either holds (docs/design.md §2.2 lists the cases).

Keys are built and parsed only here. A key below ``models/`` that is not ``<model>/versions/<tag>.json``,
``<model>/summaries/<tag>.json``, a signature's or an alias entry's with valid names (``v1 copy.json``,
``.DS_Store``, a nested file) is a *stray*: aim_cli never writes one, but people and tools do. Listings skip a stray
with a warning on stderr; `repo check` reports it as damage; `model delete-version` removes it
by its exact name; gc keeps the blobs it names if it parses as a manifest and refuses to run if it cannot tell.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from aim_cli.format import manifest as mf
from aim_cli.format.alias import MAX_INDEX as MAX_ALIAS_INDEX
from aim_cli.names import NAME_RE, NAMESPACE_SEP, check_name, split_model, valid_name, valid_namespace

REPO_META_KEY = "aim-repo.json"
#: aim-repo.json holds a few hundred bytes; anything larger is not one (and is not read whole).
MAX_REPO_META_BYTES = 64 * 1024
BLOBS = "blobs/"
MODELS = "models/"
VERSIONS = "versions"
SUMMARIES = "summaries"
SIGNATURES = "signatures"
SIGNATURE_SUFFIX = ".sig"
ALIASES = "aliases"
#: The bound on reading a signature when its version's own bound is not at hand (`repo check`,
#: `model copy`): a bundle lists every file of the version (~300 bytes of base64 JSON each, so
#: ~2 MB for 10,000 files), so it is bounded like a big manifest. signing.max_bundle_bytes gives
#: the tighter bound of one version.
MAX_SIGNATURE_BYTES = 64 * 1024 * 1024
MANIFEST_SUFFIX = ".json"
#: The 256 shard directories of a content-addressed store (``blobs/<xx>/``, the chunk cache's ``<xx>/``).
SHARDS = tuple(f"{i:02x}" for i in range(256))


def shard_key(digest: str) -> str:
    """``<h[0:2]>/<h>``: where a digest lives in a content-addressed store."""
    return f"{digest[:2]}/{digest}"


def digest_of_shard_key(key: str) -> str | None:
    """The digest that ``key`` (relative to the store) holds, or None if it is no such key."""
    shard, _, name = key.partition("/")
    return name if mf.HEX64.fullmatch(name) and shard == name[:2] else None


def blob_key(digest: str) -> str:
    return BLOBS + shard_key(digest)


#: Format 3's delta edges, one empty object per edge, keyed by the base (docs/design.md §2):
#: listing ``edges_prefix(b)`` gives b's dependents, listing EDGES every edge.
EDGES = "edges/"


def edges_prefix(base: str) -> str:
    """``edges/<b[0:2]>/<b>/``: where the markers of ``base``'s dependents live."""
    return f"{EDGES}{shard_key(base)}/"


def edge_key(base: str, dependent: str) -> str:
    """The marker saying that blob ``dependent`` is, or is about to be, a delta against ``base``."""
    return edges_prefix(base) + dependent


def edge_of_key(key: str) -> tuple[str, str] | None:
    """(base, dependent) that ``key`` (a full key below EDGES) names, or None for any other key."""
    if not key.startswith(EDGES):
        return None
    shard, _, rest = key[len(EDGES) :].partition("/")
    base, _, dependent = rest.partition("/")
    if digest_of_shard_key(f"{shard}/{base}") is None or not mf.HEX64.fullmatch(dependent):
        return None
    return base, dependent


#: What starts a namespace's segment below ``models/``: never the first character of a plain name.
NAMESPACE_MARK = "@"


def model_segments(model: str) -> str:
    """What stands for ``model`` below ``models/``: ``<model>``, or ``@<org>/<model>`` for
    ``<org>/<model>``. A name with a slash or an ``@`` must be a valid one (names.py: no ``..``, no
    empty segment, at most one slash), so the key stays in the model's own folder below ``models/``;
    another single segment is left to the backends, which refuse ``..`` and empty segments (a
    stray's folder, `model delete-version`)."""
    namespace, own = split_model(model)
    if namespace is not None or model.startswith(NAMESPACE_MARK):
        check_name("model", model)  # whatever the caller checked: never a key outside the model's folder
    return own if namespace is None else f"{NAMESPACE_MARK}{namespace}/{own}"


def _split_model(parts: list[str]) -> tuple[str | None, list[str]]:
    """(the valid model the segments below ``models/`` (at least one) begin with, or None; the
    segments after it). A first segment starting with NAMESPACE_MARK and the one after it name a namespaced
    model; any other first segment names a plain one."""
    if parts[0].startswith(NAMESPACE_MARK):
        namespace, rest = parts[0][len(NAMESPACE_MARK) :], parts[1:]
        if not rest:
            return None, []
        model = f"{namespace}{NAMESPACE_SEP}{rest[0]}"
        return (model if valid_namespace(namespace) and valid_name(rest[0]) else None), rest[1:]
    return (parts[0] if valid_name(parts[0]) else None), parts[1:]


def _model_parts(key: str) -> tuple[str | None, list[str]]:
    """``_split_model`` of a full key; (None, []) for a key outside ``models/``."""
    return _split_model(key[len(MODELS) :].split("/")) if key.startswith(MODELS) else (None, [])


def model_prefix(model: str) -> str:
    return f"{MODELS}{model_segments(model)}/"


def versions_prefix(model: str) -> str:
    return f"{model_prefix(model)}{VERSIONS}/"


def manifest_key(model: str, tag: str) -> str:
    return f"{versions_prefix(model)}{tag}{MANIFEST_SUFFIX}"


def summary_key(model: str, tag: str) -> str:
    return f"{model_prefix(model)}{SUMMARIES}/{tag}{MANIFEST_SUFFIX}"


def signatures_prefix(model: str, tag: str) -> str:
    return f"{model_prefix(model)}{SIGNATURES}/{tag}/"


def signature_key(model: str, tag: str, hint: str) -> str:
    """``models/<model>/signatures/<tag>/<hint>.sig``: one signer's Sigstore bundle of the
    version (issue 12). Outside versions/: a signature never changes the manifest or its digest."""
    return f"{signatures_prefix(model, tag)}{hint}{SIGNATURE_SUFFIX}"


def aliases_prefix(model: str) -> str:
    """``models/<model>/aliases/``: every alias of the model, each a directory of its history."""
    return f"{model_prefix(model)}{ALIASES}/"


def alias_prefix(model: str, alias: str) -> str:
    return f"{aliases_prefix(model)}{alias}/"


def alias_entry_key(model: str, alias: str, index: int) -> str:
    """``models/<model>/aliases/<alias>/<index>.json``: entry ``index`` of the alias's history,
    created exclusively. The index is written in decimal without leading zeros, so each index has
    exactly one key and the exclusive create decides between two writers of it."""
    return f"{alias_prefix(model, alias)}{index}{MANIFEST_SUFFIX}"


def alias_statement_key(model: str, alias: str, index: int, signer: str) -> str:
    """``models/<model>/aliases/<alias>/<index>.<signer>.sig``: a signer's signed statement of
    entry ``index`` (signing/alias_statement.py), beside the entry, created exclusively;
    ``signer`` is the 16 hex of the key hint, as a version signature's name."""
    return f"{alias_prefix(model, alias)}{index}.{signer}{SIGNATURE_SUFFIX}"


#: Where aim_cli's own writes leave temp files (a killed writer's): the only places gc cleans.
#: ("locks" is leases.py's directory; "*" is every subdirectory, "@*" every one starting with
#: "@": ``models/*/`` is every plain model, ``models/@*/*/`` every namespaced one.)
_MODEL_DIRS = ("*", f"{NAMESPACE_MARK}*/*")
WRITE_DIRS = (
    "",
    "locks",
    *(BLOBS + s for s in SHARDS),
    f"{EDGES}*/*",
    *(f"{MODELS}{m}/{d}" for m in _MODEL_DIRS for d in (VERSIONS, SUMMARIES, f"{SIGNATURES}/*", f"{ALIASES}/*")),
)


def _model_dir_of(key: str) -> str | None:
    """The folder of a model (valid name or not) that ``key`` lies in below it: ``aliases`` for
    ``models/<m>/aliases/x/y`` and ``models/@<org>/<m>/aliases/x/y``; None for a key directly in it."""
    if not key.startswith(MODELS):
        return None
    parts = key[len(MODELS) :].split("/")
    rest = parts[2:] if parts[0].startswith(NAMESPACE_MARK) else parts[1:]
    return rest[0] if len(rest) > 1 else None


def in_aliases(key: str) -> bool:
    """Whether ``key`` lies in some model's aliases/ directory: a stray there is not an alias
    entry (`repo check` says so), not a misplaced version."""
    return _model_dir_of(key) == ALIASES


def in_signatures(key: str) -> bool:
    """Whether ``key`` lies in some model's signatures/ directory: a stray there is a malformed
    signature (`repo check` says so), not a misplaced version."""
    return _model_dir_of(key) == SIGNATURES


@dataclass(frozen=True)
class VersionKey:
    """A key below ``models/``, parsed. ``tag`` is None for a stray (not a key aim_cli writes);
    ``model`` is None unless the key lies in ``models/<valid model>/versions/``."""

    key: str
    model: str | None = None
    tag: str | None = None

    @property
    def name(self) -> str:
        """What ``model delete-version --tag`` takes for this key."""
        last = self.key.rsplit("/", 1)[-1]
        return last[: -len(MANIFEST_SUFFIX)] if last.endswith(MANIFEST_SUFFIX) and last != MANIFEST_SUFFIX else last

    @property
    def label(self) -> str:
        """``model:tag`` for a version, the key itself for a stray."""
        return f"{self.model}:{self.tag}" if self.tag is not None else self.key


@dataclass(frozen=True)
class SummaryKey:
    """``models/<model>/summaries/<tag>.json`` with valid names: the store's own, never a stray."""

    key: str
    model: str
    tag: str


@dataclass(frozen=True)
class SignatureKey:
    """``models/<model>/signatures/<tag>/<hint>.sig`` with valid names: the store's own, never
    a stray, never read by gc (a signature names no blob)."""

    key: str
    model: str
    tag: str
    hint: str


@dataclass(frozen=True)
class AliasKey:
    """``models/<model>/aliases/<alias>/<index>.json`` with valid names and a canonical index: the
    store's own, never a stray, never a version (gc and listings of versions never read it)."""

    key: str
    model: str
    alias: str
    index: int


@dataclass(frozen=True)
class AliasStatementKey:
    """``models/<model>/aliases/<alias>/<index>.<signer>.sig`` with valid names, a canonical index
    and a 16-hex signer: a signed statement of an alias entry, never a stray, never a version."""

    key: str
    model: str
    alias: str
    index: int
    signer: str


_SIGNER = re.compile(r"[0-9a-f]{16}")


def _alias_statement(model: str, alias: str, name: str, key: str) -> AliasStatementKey | None:
    index_text, _, rest = name.partition(".")
    signer = rest[: -len(SIGNATURE_SUFFIX)] if rest.endswith(SIGNATURE_SUFFIX) else ""
    index = _alias_index(index_text + MANIFEST_SUFFIX)
    if index is None or not _SIGNER.fullmatch(signer):
        return None
    return AliasStatementKey(key, model, alias, index, signer)


def _alias_index(name: str) -> int | None:
    """The index that ``<index>.json`` names: decimal, no sign, no leading zero, 1..MAX_INDEX."""
    digits = name[: -len(MANIFEST_SUFFIX)] if name.endswith(MANIFEST_SUFFIX) else ""
    if not (digits.isascii() and digits.isdigit()) or digits.startswith("0") or len(digits) > 7:
        return None
    index = int(digits)
    return index if index <= MAX_ALIAS_INDEX else None


def parse_model_key(key: str) -> VersionKey | SummaryKey | SignatureKey | AliasKey | AliasStatementKey:
    """A key below ``models/``: a summary's, a signature's or an alias entry's, else a version's
    or a stray (``parse_version_key``)."""
    model, rest = _model_parts(key)
    if model is None:
        return VersionKey(key)
    if len(rest) == 3 and rest[0] == ALIASES and valid_name(rest[1]):
        index = _alias_index(rest[2])
        if index is not None:
            return AliasKey(key, model, rest[1], index)
        statement = _alias_statement(model, rest[1], rest[2], key)
        if statement is not None:
            return statement
    if len(rest) == 2 and rest[0] == SUMMARIES and rest[1].endswith(MANIFEST_SUFFIX):
        tag = rest[1][: -len(MANIFEST_SUFFIX)]
        if valid_name(tag):
            return SummaryKey(key, model, tag)
    if len(rest) == 3 and rest[0] == SIGNATURES and rest[2].endswith(SIGNATURE_SUFFIX):
        tag, hint = rest[1], rest[2][: -len(SIGNATURE_SUFFIX)]
        if valid_name(tag) and valid_name(hint):
            return SignatureKey(key, model, tag, hint)
    return parse_version_key(key)


def parse_version_key(key: str) -> VersionKey:
    model, rest = _model_parts(key)
    if model is None or len(rest) != 2 or rest[0] != VERSIONS:
        return VersionKey(key)
    last = rest[1]
    tag = last[: -len(MANIFEST_SUFFIX)] if last.endswith(MANIFEST_SUFFIX) else None
    return VersionKey(key, model, tag if tag is not None and valid_name(tag) else None)


LOCKS = "locks/"


def lease_key(lease_id: str) -> str:
    return f"{LOCKS}{lease_id}.json"


def lease_id_of(key: str) -> str | None:
    """The lease id in ``locks/<id>.json``, or None for any other key (nested, another suffix, or
    an id aim_cli never writes: it is shown in messages, so it must be a plain one-line name)."""
    if not (key.startswith(LOCKS) and key.endswith(".json")):
        return None
    lease_id = key[len(LOCKS) : -len(".json")]
    return lease_id if NAME_RE.fullmatch(lease_id) else None
