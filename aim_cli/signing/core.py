"""Signatures of versions in the OpenSSF model-signing format (issue 12), made from the manifest.

A signature is a Sigstore bundle (media type v0.3) holding a DSSE envelope whose payload is an
in-toto Statement v1 with predicate type ``https://model_signing/signature/v1.0``: one resource
per file (path, algorithm, hex digest) and the serialization that produced them. This is what
``model_signing`` 1.1.1 writes (``_signing/signing.py`` ``Payload``, ``sign_ec_key.Signer``,
``sign_certificate.Signer``), so its verifier checks our bundles on a pulled directory and we
check its bundles against a version:

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
- the DSSE signature is ECDSA (P-256/SHA-256, P-384/SHA-384, P-521/SHA-512) over the PAE of the
  payload; ``keyid`` is empty; the key method records ``publicKey.hint`` = SHA-256 hex of the
  public key's PEM SubjectPublicKeyInfo, the certificate method the DER chain, leaf first.

A signature binds file paths and digests: not the tag, not the manifest digest, not modes.

Stored names (``Repository.put_signature`` hints): ``<signer>`` for a BLAKE3 signature and
``<signer>.<algorithm>`` otherwise, where ``<signer>`` is the first 16 hex digits of
upstream's key hint (SHA-256 of the signing key's PEM SubjectPublicKeyInfo; for a certificate,
of its public key). One signer has at most one signature of each kind per version.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import blake3
from cryptography import exceptions as crypto_exceptions
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from aim_cli.format import manifest as mf
from aim_cli.errors import IntegrityError, UsageError
from aim_cli.format.layout import signature_key

PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://model_signing/signature/v1.0"
BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
#: upstream hashing.Config's git paths, in its order (relative to the model root).
DEFAULT_IGNORE_PATHS = (".git", ".gitattributes", ".github", ".gitignore")
BLAKE3 = "blake3"
SHA256 = "sha256"
#: Algorithms a resource may name (upstream's hashing_algorithm choices; "blake2" is BLAKE2b-512).
ALGORITHMS = {BLAKE3: 64, SHA256: 64, "blake2": 128}
_CURVE_HASH = {"secp256r1": hashes.SHA256, "secp384r1": hashes.SHA384, "secp521r1": hashes.SHA512}
SIGNER_HEX = 16
_HEX = re.compile(r"[0-9a-f]+")
_B64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")
# A bundle's fixed part (key hint or a certificate chain, envelope fields) stays far below this;
# the payload grows with the files (see ``max_bundle_bytes``).
BUNDLE_OVERHEAD = 1024 * 1024
MAX_CERTIFICATES = 10
#: The most a bundle may hold when nothing bounds it by a manifest (an --import file, repo check).
MAX_BUNDLE_BYTES = BUNDLE_OVERHEAD + 4 * mf.MAX_MANIFEST_BYTES


@dataclass(frozen=True)
class SignatureInfo:
    """What a bundle says about itself, without any key: the name aim_cli stores it under
    (None if the bundle names no key), the hash kind of its resources, and the method."""

    hint: str | None
    kind: str  # "blake3", "sha256" (or "blake2")
    method: str  # "key", "certificate" (a chain, as model_signing's certificate method) or "sigstore"
    signer: str | None = None  # the 16-hex signer id the hint starts with


@dataclass(frozen=True)
class Bundle:
    """A parsed bundle: checked structure, nothing verified yet."""

    payload: bytes
    signature: bytes
    key_hint: str | None  # upstream's publicKey.hint (64 hex) when the key method made it
    certificates: tuple[bytes, ...]  # DER, leaf first
    method: str


@dataclass(frozen=True)
class Statement:
    """A parsed payload: the signed resources and how they were serialized."""

    name: str
    resources: dict[str, tuple[str, str]]  # path -> (algorithm, hex digest)
    ignore_paths: tuple[str, ...]
    kind: str


# -- the payload ------------------------------------------------------------------------------------
def is_ignored(path: str, ignore_paths: Iterable[str]) -> bool:
    """Upstream's ``should_ignore``: ``path`` is an ignore path or lies under one."""
    return any(path == p or path.startswith(p.rstrip("/") + "/") for p in ignore_paths)


def upstream_order(path: str) -> list[str]:
    """The sort key of ``PurePath`` (component lists), which orders upstream's resources."""
    return path.split("/")


def build_statement(name: str, digests: Mapping[str, str], algorithm: str,
                    ignore_paths: Sequence[str] = DEFAULT_IGNORE_PATHS) -> dict:
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
    raise IntegrityError(f"unknown digest algorithm {algorithm!r} in the signature",
                         f"a signature's resources use one of {', '.join(sorted(ALGORITHMS))}")


def stored_digests(repository, manifest: mf.Manifest, algorithm: str,
                   ignore_paths: Iterable[str] = DEFAULT_IGNORE_PATHS) -> dict[str, str]:
    """path -> ``algorithm`` digest of every signed file, streamed from the VERIFIED blobs
    (``Repository.get_blob`` checks each chunk's BLAKE3 and size first), file by file in
    parallel; one chunk per worker in memory."""
    if algorithm == BLAKE3:
        return blake3_digests(manifest, ignore_paths)
    ignore = tuple(ignore_paths)
    files = [f for f in manifest.files if not is_ignored(f.path, ignore)]

    def digest(entry: mf.FileEntry) -> str:
        h = _hasher(algorithm)
        for chunk, size in entry.chunks:
            h.update(repository.get_blob(chunk, size, context=f"{manifest.model}:{manifest.tag}/{entry.path}"))
        return h.hexdigest()

    return dict(zip((f.path for f in files), repository.map_parallel(digest, files)))


# -- keys ---------------------------------------------------------------------------------------------
def _check_curve(public_key, where: str) -> None:
    if not isinstance(public_key, ec.EllipticCurvePublicKey) or public_key.curve.name not in _CURVE_HASH:
        raise UsageError(f"{where} is not an ECDSA P-256, P-384 or P-521 key",
                         "model_signing's key method signs with those curves only")


def load_private_key(data: bytes, password: str | None, where: str) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(data, None if password is None else password.encode())
    except TypeError:
        raise UsageError(f"{where} is encrypted", "pass --password-env VAR naming a variable that holds its password") from None
    except ValueError:
        raise UsageError(f"cannot read {where} as a PEM private key (or the password is wrong)",
                         "pass an unencrypted or correctly unlocked EC PEM key") from None
    _check_curve(key.public_key(), where)
    return key


def load_public_key(data: bytes, where: str) -> ec.EllipticCurvePublicKey:
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError:
        raise UsageError(f"cannot read {where} as a PEM public key",
                         "pass the public key (`openssl ec -in key.pem -pubout`)") from None
    _check_curve(key, where)
    return key


def key_hint(public_key) -> str:
    """upstream's ``publicKey.hint``: SHA-256 hex of the PEM SubjectPublicKeyInfo."""
    pem = public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(pem).hexdigest()


def stored_hint(signer: str, kind: str) -> str:
    """The name a signature is stored under: ``<signer>`` (BLAKE3) or ``<signer>.<kind>``."""
    return signer if kind == BLAKE3 else f"{signer}.{kind}"


def pae(payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding of an in-toto payload (what is signed)."""
    return b"DSSEv1 %d %s %d %s" % (len(PAYLOAD_TYPE), PAYLOAD_TYPE.encode(), len(payload), payload)


def _ecdsa(public_key) -> ec.ECDSA:
    return ec.ECDSA(_CURVE_HASH[public_key.curve.name]())


# -- making a bundle ----------------------------------------------------------------------------------
def sign_payload(private_key: ec.EllipticCurvePrivateKey, payload: bytes,
                 certificates: Sequence[x509.Certificate] = ()) -> bytes:
    """The bundle JSON exactly as model_signing writes it (compact, its key order): key method
    without ``certificates``, certificate method (leaf first, then the chain) with them."""
    sig = private_key.sign(pae(payload), _ecdsa(private_key.public_key()))
    if certificates:
        chain = [{"rawBytes": _b64(c.public_bytes(serialization.Encoding.DER))} for c in certificates]
        material = {"x509CertificateChain": {"certificates": chain}, "tlogEntries": []}
    else:
        material = {"publicKey": {"hint": key_hint(private_key.public_key())}, "tlogEntries": []}
    bundle = {
        "mediaType": BUNDLE_MEDIA_TYPE,
        "verificationMaterial": material,
        "dsseEnvelope": {"payload": _b64(payload), "payloadType": PAYLOAD_TYPE,
                         "signatures": [{"sig": _b64(sig), "keyid": ""}]},
    }
    return json.dumps(bundle, separators=(",", ":")).encode("ascii")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# -- reading a bundle (strict: every byte may be hostile) --------------------------------------------
def _bad(why: str) -> IntegrityError:
    return IntegrityError(f"malformed signature bundle: {why}",
                          "the bundle is damaged or not a model_signing bundle; sign the version again")


def _field(obj, name: str, kind: type, where: str):
    if not isinstance(obj, dict):
        raise _bad(f"{where} is not an object")
    value = obj.get(name)
    if not isinstance(value, kind) or isinstance(value, bool) != (kind is bool):
        raise _bad(f"{where}.{name} is missing or not a {kind.__name__}")
    return value


def _unb64(text: str, where: str) -> bytes:
    if not _B64.fullmatch(text) or len(text) % 4:
        raise _bad(f"{where} is not base64")
    try:
        return base64.b64decode(text, validate=True)
    except binascii.Error:
        raise _bad(f"{where} is not base64") from None


def _json(data: bytes, where: str):
    try:
        return json.loads(data)
    except (ValueError, RecursionError):
        raise _bad(f"{where} is not JSON") from None


def parse_bundle(data: bytes, *, max_size: int = MAX_BUNDLE_BYTES) -> Bundle:
    """The bundle's parts, with its structure checked; IntegrityError for anything else."""
    if len(data) > max_size:
        raise _bad(f"{len(data)} bytes, more than the {max_size} a signature of this version can take")
    doc = _json(data, "the bundle")
    if _field(doc, "mediaType", str, "bundle") != BUNDLE_MEDIA_TYPE:
        raise _bad(f"media type is not {BUNDLE_MEDIA_TYPE}")
    material = _field(doc, "verificationMaterial", dict, "bundle")
    envelope = _field(doc, "dsseEnvelope", dict, "bundle")
    if _field(envelope, "payloadType", str, "dsseEnvelope") != PAYLOAD_TYPE:
        raise _bad(f"payload type is not {PAYLOAD_TYPE}")
    payload = _unb64(_field(envelope, "payload", str, "dsseEnvelope"), "dsseEnvelope.payload")
    signatures = _field(envelope, "signatures", list, "dsseEnvelope")
    if len(signatures) != 1:
        raise _bad(f"{len(signatures)} signatures in the envelope, expected 1")
    signature = _unb64(_field(signatures[0], "sig", str, "signature"), "signature.sig")
    if not signature:
        raise _bad("empty signature")
    key_hint_value, certificates, method = _material(material)
    return Bundle(payload, signature, key_hint_value, certificates, method)


def _material(material: dict) -> tuple[str | None, tuple[bytes, ...], str]:
    if "publicKey" in material:
        hint = material["publicKey"].get("hint") if isinstance(material["publicKey"], dict) else 0
        if hint is not None and (not isinstance(hint, str) or not re.fullmatch(r"[0-9a-f]{64}", hint)):
            raise _bad("publicKey.hint is not 64 hex digits")
        return hint, (), "key"
    if "x509CertificateChain" in material:
        chain = _field(_field(material, "x509CertificateChain", dict, "verificationMaterial"),
                       "certificates", list, "x509CertificateChain")
        return None, _certificates(chain), "certificate"
    if "certificate" in material:  # Sigstore keyless: the Fulcio leaf alone
        return None, _certificates([material["certificate"]]), "sigstore"
    raise _bad("verificationMaterial names no key and no certificate")


def _certificates(chain: list) -> tuple[bytes, ...]:
    if not 1 <= len(chain) <= MAX_CERTIFICATES:
        raise _bad(f"{len(chain)} certificates, expected 1 to {MAX_CERTIFICATES}")
    ders = tuple(_unb64(_field(c, "rawBytes", str, "certificate"), "certificate.rawBytes") for c in chain)
    for der in ders:
        try:
            x509.load_der_x509_certificate(der)
        except ValueError:
            raise _bad("a certificate is not DER X.509") from None
    return ders


def parse_statement(payload: bytes) -> Statement:
    """The signed statement: type, predicate, one serialization "files", resources with unique
    names and well-formed digests, and a subject digest that matches them."""
    doc = _json(payload, "the payload")
    if _field(doc, "_type", str, "statement") != STATEMENT_TYPE:
        raise _bad(f"statement type is not {STATEMENT_TYPE}")
    if _field(doc, "predicateType", str, "statement") != PREDICATE_TYPE:
        raise _bad(f"predicate type is not {PREDICATE_TYPE}")
    subjects = _field(doc, "subject", list, "statement")
    if len(subjects) != 1:
        raise _bad(f"{len(subjects)} subjects, expected 1")
    name = _field(subjects[0], "name", str, "subject")
    root = _field(_field(subjects[0], "digest", dict, "subject"), "sha256", str, "subject.digest")
    predicate = _field(doc, "predicate", dict, "statement")
    ser = _field(predicate, "serialization", dict, "predicate")
    if _field(ser, "method", str, "serialization") != "files":
        raise _bad(f"serialization method {ser['method']!r} is not supported (only \"files\")")
    kind = _field(ser, "hash_type", str, "serialization")
    if kind not in ALGORITHMS:
        raise _bad(f"hash type {kind!r} is not one of {', '.join(sorted(ALGORITHMS))}")
    ignore = ser.get("ignore_paths", [])
    if not isinstance(ignore, list) or not all(isinstance(p, str) for p in ignore):
        raise _bad("serialization.ignore_paths is not a list of strings")
    resources = {}
    digest_of_digests = hashlib.sha256()
    for item in _field(predicate, "resources", list, "predicate"):
        path = _field(item, "name", str, "resource")
        algorithm = _field(item, "algorithm", str, "resource")
        value = _field(item, "digest", str, "resource")
        if algorithm != kind:
            raise _bad(f"resource {path!r} uses {algorithm!r}, the serialization says {kind!r}")
        if len(value) != ALGORITHMS[kind] or not _HEX.fullmatch(value):
            raise _bad(f"resource {path!r} has a malformed {kind} digest")
        if path in resources:
            raise _bad(f"resource {path!r} appears twice")
        resources[path] = (algorithm, value)
        digest_of_digests.update(bytes.fromhex(value))
    if digest_of_digests.hexdigest() != root:
        raise _bad("the subject digest does not match the resources (the payload was altered)")
    return Statement(name, resources, tuple(ignore), kind)


def describe(data: bytes) -> SignatureInfo:
    """The stored name, kind and method of a bundle, checking its structure but no key."""
    bundle = parse_bundle(data)
    statement = parse_statement(bundle.payload)
    signer = signer_of(bundle)
    return SignatureInfo(None if signer is None else stored_hint(signer, statement.kind), statement.kind,
                         bundle.method, signer)


def bundle_problem(data: bytes) -> str | None:
    """Why ``data`` is not a well-formed signature bundle, or None (no key needed: repo check)."""
    try:
        describe(data)
    except IntegrityError as e:
        return e.message
    return None


def signer_of(bundle: Bundle) -> str | None:
    """The 16-hex signer id: from the key hint, or from the leaf certificate's public key."""
    if bundle.key_hint:
        return bundle.key_hint[:SIGNER_HEX]
    if bundle.certificates:
        return key_hint(x509.load_der_x509_certificate(bundle.certificates[0]).public_key())[:SIGNER_HEX]
    return None


def max_bundle_bytes(manifest: mf.Manifest) -> int:
    """The largest bundle a version's signature can be: a resource per file takes at most
    ~200 bytes of JSON besides its path, whose UTF-8 bytes escape to at most 3 ASCII each
    (``\\uXXXX`` per 2-byte char); base64 adds a third."""
    payload = sum(3 * len(f.path.encode()) + 400 for f in manifest.files) + 4096
    return BUNDLE_OVERHEAD + payload * 4 // 3 + 4


# -- verifying ------------------------------------------------------------------------------------------
def verify_with_key(bundle: Bundle, public_key) -> Statement:
    """The statement, if ``public_key`` made the bundle's signature: else IntegrityError
    naming the check (key hint, then the ECDSA signature over the payload)."""
    if bundle.method == "key" and bundle.key_hint is not None and bundle.key_hint != key_hint(public_key):
        raise IntegrityError("the signature was made by another key (its key hint differs)",
                             "verify with the public key of the signer (`model info` lists signer hints)")
    if bundle.method != "key":
        leaf = x509.load_der_x509_certificate(bundle.certificates[0]).public_key()
        if leaf != public_key:
            raise IntegrityError("the signature's certificate is for another key", "verify with the signer's key")
    _check_signature(bundle, public_key)
    return parse_statement(bundle.payload)


def _check_signature(bundle: Bundle, public_key) -> None:
    try:
        public_key.verify(bundle.signature, pae(bundle.payload), _ecdsa(public_key))
    except crypto_exceptions.InvalidSignature:
        raise IntegrityError("the ECDSA signature does not match the payload (the bundle was altered or made "
                             "by another key)", "sign the version again with the right key") from None


def check_resources(statement: Statement, actual: Mapping[str, str], what: str) -> None:
    """``actual`` (path -> digest of the statement's kind, ignore paths already left out) must
    be exactly the signed resources: IntegrityError naming the first difference."""
    signed = {p: d for p, (_, d) in statement.resources.items()}
    missing = sorted(set(signed) - set(actual), key=upstream_order)
    extra = sorted(set(actual) - set(signed), key=upstream_order)
    if missing or extra:
        first = ", ".join(([f"not signed: {extra[0]!r}"] if extra else [])
                          + ([f"signed but absent: {missing[0]!r}"] if missing else []))
        raise IntegrityError(f"the signature covers other files than {what} ({len(extra)} unsigned, "
                             f"{len(missing)} signed but absent; {first})",
                             "the signature is for another version or directory")
    for path in sorted(signed, key=upstream_order):
        if signed[path] != actual[path]:
            raise IntegrityError(f"{statement.kind} digest of {path!r} in {what} differs from the signed one",
                                 "the file was changed or the signature is for other content")


def local_digests(directory: str | os.PathLike, algorithm: str, ignore_paths: Iterable[str]) -> dict[str, str]:
    """path -> digest of every regular file under ``directory`` outside the ignore paths, as
    model_signing hashes a model directory (a symlink is refused as its default does)."""
    root = os.fspath(directory)
    ignore = tuple(ignore_paths)
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        # an ignored directory (.git, .github) is not entered: a clone's history can be large
        rel_dir = os.path.relpath(dirpath, root).replace(os.sep, "/")
        dirnames[:] = [d for d in dirnames if not is_ignored(d if rel_dir == "." else f"{rel_dir}/{d}", ignore)]
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            if os.path.islink(full):
                raise IntegrityError(f"{full} is a symbolic link", "signed directories hold regular files only")
        for name in filenames:
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, root).replace(os.sep, "/")
            if is_ignored(rel, ignore):
                continue
            h = _hasher(algorithm)
            with open(full, "rb") as f:
                while block := f.read(1 << 20):
                    h.update(block)
            out[rel] = h.hexdigest()
    return out


# -- versions in a repository ----------------------------------------------------------------------------
@dataclass(frozen=True)
class SignResult:
    model: str
    tag: str
    hint: str  # the stored name (`--signer` of export-signature)
    kind: str
    method: str
    created: bool  # False: this signer's signature of this kind was already there


@dataclass(frozen=True)
class VerifyResult:
    model: str
    tag: str
    hint: str
    kind: str
    method: str
    files: int
    checked: str  # "repository" or the local directory


def sign_version(repository, ref, private_key: ec.EllipticCurvePrivateKey, *, kind: str = BLAKE3,
                 certificates: Sequence[x509.Certificate] = ()) -> SignResult:
    """Sign the version ``ref`` and store the bundle (exclusive create). BLAKE3 reads no blob;
    SHA-256 streams the verified blobs."""
    m = ref.manifest
    digests = stored_digests(repository, m, kind)
    bundle = sign_payload(private_key, payload_bytes(build_statement(m.model, digests, kind)), certificates)
    hint = stored_hint(key_hint(private_key.public_key())[:SIGNER_HEX], kind)
    created = repository.put_signature(m.model, m.tag, hint, bundle)
    if not created:
        _check_already_signed(repository, ref, hint, private_key.public_key(), digests)
    return SignResult(m.model, m.tag, hint, kind, "certificate" if certificates else "key", created)


def _check_already_signed(repository, ref, hint: str, public_key, digests: Mapping[str, str]) -> None:
    """"Already signed" only if the stored bundle under this signer's name is a valid signature
    by this key of these files: a bundle imported under a forged key hint, or a damaged one,
    must not pass for the signer's own."""
    m = ref.manifest
    try:
        statement = verify_with_key(stored_bundle(repository, ref, hint), public_key)
        check_resources(statement, digests, f"{m.model}:{m.tag}")
    except IntegrityError as e:
        key = signature_key(m.model, m.tag, hint)
        raise IntegrityError(f"the signature stored as {hint} does not verify with this key ({e.message})",
                             f"remove {key} from the storage, then sign again") from None


def read_bundle(repository, ref, hint: str) -> bytes:
    """One stored bundle, bounded by what a signature of this version can take."""
    m = ref.manifest
    return repository.get_signature(m.model, m.tag, hint, max_size=max_bundle_bytes(m))


def stored_bundle(repository, ref, hint: str) -> Bundle:
    """One stored bundle, read (``read_bundle``) and parsed."""
    return parse_bundle(read_bundle(repository, ref, hint), max_size=max_bundle_bytes(ref.manifest))


def expected_digests(repository, ref, statement: Statement) -> dict[str, str]:
    """The version's files and digests as the statement's kind and ignore paths see them."""
    return stored_digests(repository, ref.manifest, statement.kind, statement.ignore_paths)


def _by_signer(hints: Iterable[str], signer: str) -> list[str]:
    """This signer's stored signatures, BLAKE3 first (it needs no blob read)."""
    mine = [h for h in hints if h == signer or h.startswith(signer + ".")]
    return sorted(mine, key=lambda h: (h != signer, h))


def verify_version_signature(repository, ref, public_key, *, local: str | os.PathLike | None = None) -> VerifyResult:
    """A signature by ``public_key`` that covers exactly the version's files and digests (or
    those of the directory ``local``); IntegrityError naming the failed check otherwise. Each
    of the signer's signatures is tried, BLAKE3 first; the first failure is reported."""
    m = ref.manifest
    signer = key_hint(public_key)[:SIGNER_HEX]
    hints = _by_signer(repository.list_signatures(m.model, m.tag), signer)
    if not hints:
        raise IntegrityError(f"no signature of {m.model}:{m.tag} by this key (signer {signer})",
                             "sign the version with the matching private key, or pass the signer's public key")
    first_error: IntegrityError | None = None
    for hint in hints:
        try:
            return _verify_one(repository, ref, hint, stored_bundle(repository, ref, hint), public_key, local)
        except IntegrityError as e:
            first_error = first_error or e
    raise first_error


def _verify_one(repository, ref, hint: str, bundle: Bundle, public_key, local) -> VerifyResult:
    m = ref.manifest
    statement = verify_with_key(bundle, public_key)
    if local is None:
        actual, what = expected_digests(repository, ref, statement), f"{m.model}:{m.tag}"
    else:
        actual, what = local_digests(local, statement.kind, statement.ignore_paths), os.fspath(local)
    check_resources(statement, actual, what)
    return VerifyResult(m.model, m.tag, hint, statement.kind, bundle.method, len(actual),
                        "repository" if local is None else os.fspath(local))


def signatures_of(repository, ref) -> list[SignatureInfo]:
    """What each stored signature of the version is (a damaged one: kind and method "damaged")."""
    m = ref.manifest
    out = []
    for hint in repository.list_signatures(m.model, m.tag):
        try:
            info = describe(read_bundle(repository, ref, hint))
            out.append(SignatureInfo(hint, info.kind, info.method, info.signer))
        except IntegrityError:
            out.append(SignatureInfo(hint, "damaged", "damaged", None))
    return out


# -- files the user names (keys, certificates, bundles) and the export ------------------------------------
MAX_KEY_FILE_BYTES = 1024 * 1024


def read_user_file(path: str | os.PathLike, what: str, max_size: int = MAX_KEY_FILE_BYTES) -> bytes:
    """A key, certificate or bundle file named on the command line, read bounded."""
    try:
        with open(path, "rb") as f:
            data = f.read(max_size + 1)
    except OSError as e:
        raise UsageError(f"cannot read {what} {os.fspath(path)!r}: {e.strerror or e}", "check the path") from None
    if len(data) > max_size:
        raise UsageError(f"{what} {os.fspath(path)!r} is larger than {max_size} bytes", f"pass a {what}")
    return data


def is_encrypted(pem: bytes) -> bool:
    """PKCS#8 ("ENCRYPTED PRIVATE KEY") or traditional OpenSSL ("Proc-Type: 4,ENCRYPTED") encryption."""
    return b"ENCRYPTED" in pem


def import_bundle(repository, ref, data: bytes) -> SignResult:
    """Attach a bundle made elsewhere (model_signing on the pushed directory, any method) once
    its resources are exactly the version's files and digests (for another algorithm than
    BLAKE3, hashed from the verified blobs; the bundle's ignore paths are honoured). A
    certificate's signature is checked against the certificate's key; a key bundle cannot be
    checked without the key (`model verify --public-key` does)."""
    m = ref.manifest
    bundle = parse_bundle(data, max_size=max_bundle_bytes(m))
    statement = parse_statement(bundle.payload)
    if bundle.certificates:
        _check_signature(bundle, x509.load_der_x509_certificate(bundle.certificates[0]).public_key())
    check_resources(statement, expected_digests(repository, ref, statement), f"{m.model}:{m.tag}")
    signer = signer_of(bundle) or hashlib.sha256(bundle.signature).hexdigest()[:SIGNER_HEX]
    hint = stored_hint(signer, statement.kind)
    created = repository.put_signature(m.model, m.tag, hint, data)
    if not created and read_bundle(repository, ref, hint) != data:
        from aim_cli.errors import ConflictError

        raise ConflictError(f"another bundle of signer {hint} is stored for {m.model}:{m.tag}",
                            f"compare it (`aim_cli model export-signature --signer {hint}`); remove "
                            f"{signature_key(m.model, m.tag, hint)} from the storage to replace it")
    return SignResult(m.model, m.tag, hint, statement.kind, bundle.method, created)


def choose_signature(hints: Sequence[str], kind: str, signer: str | None, where: str) -> str:
    """The stored name ``export-signature`` writes: the signer's signature of ``kind``, or the
    only one of that kind."""
    if signer is not None:
        wanted = signer if signer in hints and "." in signer else stored_hint(signer, kind)
        if wanted not in hints:
            raise _not_signed(f"no {kind} signature by signer {signer!r} of {where}", where)
        return wanted
    of_kind = [h for h in hints if (h.rpartition(".")[2] if "." in h else BLAKE3) == kind]
    if len(of_kind) == 1:
        return of_kind[0]
    if not of_kind:
        raise _not_signed(f"no {kind} signature of {where}", where)
    raise UsageError(f"{len(of_kind)} signers signed {where} ({', '.join(of_kind)})", "pick one with --signer HINT")


def _not_signed(message: str, where: str):
    from aim_cli.errors import NotFoundError

    return NotFoundError(message, f"sign {where} with `aim_cli model sign` (`model info` lists its signatures)")


def write_new_file(path: str | os.PathLike, data: bytes) -> None:
    """Write ``path`` through a temporary file and a rename: never half-written under its name."""
    path = os.fspath(path)
    tmp = f"{path}.aim-tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


# -- the certificate method ------------------------------------------------------------------------------
def _pem_certificates(path: str | os.PathLike, what: str) -> list[x509.Certificate]:
    try:
        certs = x509.load_pem_x509_certificates(read_user_file(path, what))
    except ValueError:
        raise UsageError(f"cannot read {what} {os.fspath(path)!r} as PEM certificates", f"pass a PEM {what}") from None
    return certs


def load_certificates(private_key, certificate: str | os.PathLike,
                      chain: Sequence[str | os.PathLike]) -> list[x509.Certificate]:
    """The signing certificate (its key must be ``private_key``'s) followed by its chain."""
    leaf = _pem_certificates(certificate, "certificate")
    if len(leaf) != 1:
        raise UsageError(f"{os.fspath(certificate)!r} holds {len(leaf)} certificates", "pass the signing certificate alone")
    if leaf[0].public_key() != private_key.public_key():
        raise UsageError("the certificate is not for the signing key", "pass the certificate issued for --key")
    rest = [c for path in chain for c in _pem_certificates(path, "certificate chain")]
    if len(rest) + 1 > MAX_CERTIFICATES:
        raise UsageError(f"more than {MAX_CERTIFICATES} certificates", "pass the chain up to the root only")
    return [leaf[0], *rest]


def load_trust_roots(paths: Sequence[str | os.PathLike]) -> list[x509.Certificate]:
    return [c for path in paths for c in _pem_certificates(path, "certificate chain")]


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, crypto_exceptions.InvalidSignature):
        return False
    return True


def _can_sign(cert: x509.Certificate) -> bool:
    """model_signing's test: key usage digitalSignature, or extended key usage codeSigning."""
    try:
        if cert.extensions.get_extension_for_class(x509.KeyUsage).value.digital_signature:
            return True
    except x509.ExtensionNotFound:
        pass
    try:
        return x509.oid.ExtendedKeyUsageOID.CODE_SIGNING in cert.extensions.get_extension_for_class(
            x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return False


def check_chain(ders: Sequence[bytes], roots: Sequence[x509.Certificate]):
    """The leaf's public key, if the bundle's chain leads to one of ``roots``: each link's
    signature checked, each certificate valid when the leaf was issued (model_signing checks
    at that time too, as a signature outlives its certificate)."""
    certs = [x509.load_der_x509_certificate(d) for d in ders]
    at = certs[0].not_valid_before_utc
    current, intermediates = certs[0], certs[1:]
    for _ in range(MAX_CERTIFICATES + 1):
        if not current.not_valid_before_utc <= at <= current.not_valid_after_utc:
            break
        if current in roots or any(_issued_by(current, r) for r in roots):
            if not _can_sign(certs[0]):
                raise IntegrityError("the signature's certificate is not for signing (no digitalSignature key "
                                     "usage nor codeSigning extended key usage)", "sign with a signing certificate")
            return certs[0].public_key()
        parent = next((c for c in intermediates if _issued_by(current, c)), None)
        if parent is None:
            break
        intermediates.remove(parent)
        current = parent
    raise IntegrityError("the signature's certificate chain does not lead to the trusted roots",
                         "pass the root certificate of the signer's PKI with --certificate-chain")


def verify_version_certificates(repository, ref, roots: Sequence[x509.Certificate], *,
                                local: str | os.PathLike | None = None) -> VerifyResult:
    """Like ``verify_version_signature``, for certificate signatures trusted through ``roots``."""
    m = ref.manifest
    first_error: IntegrityError | None = None
    for hint in repository.list_signatures(m.model, m.tag):
        try:
            bundle = stored_bundle(repository, ref, hint)
            if bundle.method != "certificate":
                continue
            return _verify_one(repository, ref, hint, bundle, check_chain(bundle.certificates, roots), local)
        except IntegrityError as e:
            first_error = first_error or e
    raise first_error or IntegrityError(f"no certificate signature of {m.model}:{m.tag}",
                                        "sign it with --certificate and --certificate-chain")
