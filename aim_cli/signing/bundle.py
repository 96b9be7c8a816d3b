"""Sigstore bundles (media type v0.3) holding a DSSE envelope around the statement: writing
one exactly as model_signing does, parsing one strictly (every byte may be hostile), what a
bundle says about itself without any key, and how large a version's bundle may be. The key
method records ``publicKey.hint`` and an empty ``keyid``, the certificate method the DER
chain, leaf first; a Sigstore keyless bundle holds the Fulcio leaf alone."""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from aim_cli.errors import IntegrityError
from aim_cli.format import manifest as mf
from aim_cli.signing.keys import SIGNER_HEX, ecdsa_sign, is_signing_key, key_hint, stored_hint
from aim_cli.signing.statement import PAYLOAD_TYPE, parse_statement
from aim_cli.signing.strict import field, load_json, malformed

BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
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


# -- making a bundle ----------------------------------------------------------------------------------
def sign_payload(
    private_key: ec.EllipticCurvePrivateKey,
    payload: bytes,
    certificates: Sequence[x509.Certificate] = (),
    payload_type: str = PAYLOAD_TYPE,
) -> bytes:
    """The bundle JSON exactly as model_signing writes it (compact, its key order): key method
    without ``certificates``, certificate method (leaf first, then the chain) with them.
    ``payload_type``: an alias statement's own type (signing/alias_statement.py)."""
    sig = ecdsa_sign(private_key, payload, payload_type)
    if certificates:
        chain = [{"rawBytes": _b64(c.public_bytes(serialization.Encoding.DER))} for c in certificates]
        material = {"x509CertificateChain": {"certificates": chain}, "tlogEntries": []}
    else:
        material = {"publicKey": {"hint": key_hint(private_key.public_key())}, "tlogEntries": []}
    bundle = {
        "mediaType": BUNDLE_MEDIA_TYPE,
        "verificationMaterial": material,
        "dsseEnvelope": {
            "payload": _b64(payload),
            "payloadType": payload_type,
            "signatures": [{"sig": _b64(sig), "keyid": ""}],
        },
    }
    return json.dumps(bundle, separators=(",", ":")).encode("ascii")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# -- reading a bundle (strict: every byte may be hostile) --------------------------------------------
def _unb64(text: str, where: str) -> bytes:
    if not _B64.fullmatch(text) or len(text) % 4:
        raise malformed(f"{where} is not base64")
    try:
        return base64.b64decode(text, validate=True)
    except binascii.Error:
        raise malformed(f"{where} is not base64") from None


def parse_bundle(data: bytes, *, max_size: int = MAX_BUNDLE_BYTES, payload_type: str = PAYLOAD_TYPE) -> Bundle:
    """The bundle's parts, with its structure checked; IntegrityError for anything else. Its
    envelope must carry ``payload_type``: a version's signature and an alias statement are
    never taken for each other."""
    if len(data) > max_size:
        raise malformed(f"{len(data)} bytes, more than the {max_size} a signature of this version can take")
    doc = load_json(data, "the bundle")
    if field(doc, "mediaType", str, "bundle") != BUNDLE_MEDIA_TYPE:
        raise malformed(f"media type is not {BUNDLE_MEDIA_TYPE}")
    material = field(doc, "verificationMaterial", dict, "bundle")
    envelope = field(doc, "dsseEnvelope", dict, "bundle")
    if field(envelope, "payloadType", str, "dsseEnvelope") != payload_type:
        raise malformed(f"payload type is not {payload_type}")
    payload = _unb64(field(envelope, "payload", str, "dsseEnvelope"), "dsseEnvelope.payload")
    signatures = field(envelope, "signatures", list, "dsseEnvelope")
    if len(signatures) != 1:
        raise malformed(f"{len(signatures)} signatures in the envelope, expected 1")
    signature = _unb64(field(signatures[0], "sig", str, "signature"), "signature.sig")
    if not signature:
        raise malformed("empty signature")
    key_hint_value, certificates, method = _material(material)
    return Bundle(payload, signature, key_hint_value, certificates, method)


def _material(material: dict) -> tuple[str | None, tuple[bytes, ...], str]:
    if "publicKey" in material:
        hint = material["publicKey"].get("hint") if isinstance(material["publicKey"], dict) else 0
        if hint is not None and (not isinstance(hint, str) or not re.fullmatch(r"[0-9a-f]{64}", hint)):
            raise malformed("publicKey.hint is not 64 hex digits")
        return hint, (), "key"
    if "x509CertificateChain" in material:
        chain = field(
            field(material, "x509CertificateChain", dict, "verificationMaterial"),
            "certificates",
            list,
            "x509CertificateChain",
        )
        return None, _certificates(chain), "certificate"
    if "certificate" in material:  # Sigstore keyless: the Fulcio leaf alone
        return None, _certificates([material["certificate"]]), "sigstore"
    raise malformed("verificationMaterial names no key and no certificate")


def _certificates(chain: list) -> tuple[bytes, ...]:
    if not 1 <= len(chain) <= MAX_CERTIFICATES:
        raise malformed(f"{len(chain)} certificates, expected 1 to {MAX_CERTIFICATES}")
    ders = tuple(_unb64(field(c, "rawBytes", str, "certificate"), "certificate.rawBytes") for c in chain)
    certs = []
    for der in ders:
        try:
            certs.append(x509.load_der_x509_certificate(der))
        except ValueError:
            raise malformed("a certificate is not DER X.509") from None
    _check_leaf_key(certs[0])
    return ders


def _check_leaf_key(leaf: x509.Certificate) -> None:
    """The leaf's key must be one a signature can be checked with (model_signing's verifiers
    take ECDSA P-256, P-384 and P-521 only): any other is damage, not a crash later."""
    try:
        public_key = leaf.public_key()
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise malformed("the leaf certificate's key algorithm is unknown") from None
    if not is_signing_key(public_key):
        what = f"ECDSA {public_key.curve.name}" if isinstance(public_key, ec.EllipticCurvePublicKey) else None
        what = what or type(public_key).__name__.removeprefix("_").replace("PublicKey", "")
        raise malformed(f"the leaf certificate's key is {what}, not ECDSA P-256, P-384 or P-521 (model_signing's)")


# -- what a bundle says about itself ------------------------------------------------------------------
def describe(data: bytes) -> SignatureInfo:
    """The stored name, kind and method of a bundle, checking its structure but no key."""
    bundle = parse_bundle(data)
    statement = parse_statement(bundle.payload)
    signer = signer_of(bundle)
    return SignatureInfo(
        None if signer is None else stored_hint(signer, statement.kind), statement.kind, bundle.method, signer
    )


def bundle_problem(data: bytes) -> str | None:
    """Why ``data`` is not a well-formed signature bundle, or None (no key needed: repo check)."""
    try:
        describe(data)
    except IntegrityError as e:
        return e.message
    return None


def leaf_key(bundle: Bundle):
    """The public key of the bundle's leaf certificate (a certificate or Sigstore bundle)."""
    return x509.load_der_x509_certificate(bundle.certificates[0]).public_key()


def signer_of(bundle: Bundle) -> str | None:
    """The 16-hex signer id: from the key hint, or from the leaf certificate's public key."""
    if bundle.key_hint:
        return bundle.key_hint[:SIGNER_HEX]
    if bundle.certificates:
        return key_hint(leaf_key(bundle))[:SIGNER_HEX]
    return None


def max_bundle_bytes(manifest: mf.Manifest) -> int:
    """The largest bundle a version's signature can be: a resource per file takes at most
    ~200 bytes of JSON besides its path, whose UTF-8 bytes escape to at most 3 ASCII each
    (``\\uXXXX`` per 2-byte char); base64 adds a third."""
    payload = sum(3 * len(f.path.encode()) + 400 for f in manifest.files) + 4096
    return BUNDLE_OVERHEAD + payload * 4 // 3 + 4
