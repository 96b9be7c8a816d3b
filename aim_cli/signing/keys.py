"""Keys: reading PEM keys, the key hint and signer id that name a signature, and the ECDSA
signature over the DSSE envelope. As model_signing's key method: ECDSA (P-256/SHA-256,
P-384/SHA-384, P-521/SHA-512) over the PAE of the payload, ``publicKey.hint`` = SHA-256 hex of
the public key's PEM SubjectPublicKeyInfo.

Stored names (``Repository.put_signature`` hints): ``<signer>`` for a BLAKE3 signature and
``<signer>.<algorithm>`` otherwise, where ``<signer>`` is the first 16 hex digits of
upstream's key hint (SHA-256 of the signing key's PEM SubjectPublicKeyInfo; for a certificate,
of its public key). One signer has at most one signature of each kind per version.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from cryptography import exceptions as crypto_exceptions
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from aim_cli.errors import IntegrityError, UsageError
from aim_cli.signing.statement import BLAKE3, PAYLOAD_TYPE

_CURVE_HASH: dict[str, Callable[[], hashes.HashAlgorithm]] = {
    "secp256r1": hashes.SHA256,
    "secp384r1": hashes.SHA384,
    "secp521r1": hashes.SHA512,
}
SIGNER_HEX = 16


def _check_curve(public_key, where: str) -> None:
    if not is_signing_key(public_key):
        raise UsageError(
            f"{where} is not an ECDSA P-256, P-384 or P-521 key",
            "model_signing's key method signs with those curves only",
        )


def is_signing_key(public_key) -> bool:
    """An ECDSA P-256, P-384 or P-521 public key: the keys model_signing's verifiers can check."""
    return isinstance(public_key, ec.EllipticCurvePublicKey) and public_key.curve.name in _CURVE_HASH


def load_private_key(data: bytes, password: str | None, where: str) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(data, None if password is None else password.encode())
    except TypeError:
        raise UsageError(
            f"{where} is encrypted", "pass --password-env VAR naming a variable that holds its password"
        ) from None
    except ValueError:
        raise UsageError(
            f"cannot read {where} as a PEM private key (or the password is wrong)",
            "pass an unencrypted or correctly unlocked EC PEM key",
        ) from None
    _check_curve(key.public_key(), where)
    assert isinstance(key, ec.EllipticCurvePrivateKey)  # _check_curve refused every other kind
    return key


def load_public_key(data: bytes, where: str) -> ec.EllipticCurvePublicKey:
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError:
        raise UsageError(
            f"cannot read {where} as a PEM public key", "pass the public key (`openssl ec -in key.pem -pubout`)"
        ) from None
    _check_curve(key, where)
    assert isinstance(key, ec.EllipticCurvePublicKey)  # _check_curve refused every other kind
    return key


def is_encrypted(pem: bytes) -> bool:
    """PKCS#8 ("ENCRYPTED PRIVATE KEY") or traditional OpenSSL ("Proc-Type: 4,ENCRYPTED") encryption."""
    return b"ENCRYPTED" in pem


def key_hint(public_key) -> str:
    """upstream's ``publicKey.hint``: SHA-256 hex of the PEM SubjectPublicKeyInfo."""
    pem = public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(pem).hexdigest()


def stored_hint(signer: str, kind: str) -> str:
    """The name a signature is stored under: ``<signer>`` (BLAKE3) or ``<signer>.<kind>``."""
    return signer if kind == BLAKE3 else f"{signer}.{kind}"


# -- ECDSA over the DSSE envelope ---------------------------------------------------------------------
def pae(payload: bytes, payload_type: str = PAYLOAD_TYPE) -> bytes:
    """DSSE v1 pre-authentication encoding of a payload (what is signed): the payload type is
    signed too, so a signature of one type never verifies as another's."""
    return b"DSSEv1 %d %s %d %s" % (len(payload_type), payload_type.encode(), len(payload), payload)


def _ecdsa(public_key) -> ec.ECDSA:
    return ec.ECDSA(_CURVE_HASH[public_key.curve.name]())


def ecdsa_sign(private_key: ec.EllipticCurvePrivateKey, payload: bytes, payload_type: str = PAYLOAD_TYPE) -> bytes:
    """The DSSE signature of ``payload``: ECDSA over its PAE, the hash chosen by the curve."""
    return private_key.sign(pae(payload, payload_type), _ecdsa(private_key.public_key()))


def ecdsa_verify(public_key, signature: bytes, payload: bytes, payload_type: str = PAYLOAD_TYPE) -> None:
    """IntegrityError unless ``signature`` is ``public_key``'s DSSE signature of ``payload``."""
    try:
        public_key.verify(signature, pae(payload, payload_type), _ecdsa(public_key))
    except crypto_exceptions.InvalidSignature:
        raise IntegrityError(
            "the ECDSA signature does not match the payload (the bundle was altered or made by another key)",
            "sign the version again with the right key",
        ) from None
