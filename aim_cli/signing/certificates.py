"""The certificate method: the signing certificate and its chain read from PEM files, trust
roots, and the check that a bundle's chain leads to one of them."""

from __future__ import annotations

import os
from collections.abc import Sequence

from cryptography import exceptions as crypto_exceptions
from cryptography import x509

from aim_cli.errors import IntegrityError, UsageError
from aim_cli.signing.bundle import MAX_CERTIFICATES
from aim_cli.signing.files import read_user_file


def _pem_certificates(path: str | os.PathLike, what: str) -> list[x509.Certificate]:
    try:
        certs = x509.load_pem_x509_certificates(read_user_file(path, what))
    except ValueError:
        raise UsageError(f"cannot read {what} {os.fspath(path)!r} as PEM certificates", f"pass a PEM {what}") from None
    return certs


def load_certificates(
    private_key, certificate: str | os.PathLike, chain: Sequence[str | os.PathLike]
) -> list[x509.Certificate]:
    """The signing certificate (its key must be ``private_key``'s) followed by its chain."""
    leaf = _pem_certificates(certificate, "certificate")
    if len(leaf) != 1:
        raise UsageError(
            f"{os.fspath(certificate)!r} holds {len(leaf)} certificates", "pass the signing certificate alone"
        )
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
        return (
            x509.oid.ExtendedKeyUsageOID.CODE_SIGNING
            in cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        )
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
                raise IntegrityError(
                    "the signature's certificate is not for signing (no digitalSignature key "
                    "usage nor codeSigning extended key usage)",
                    "sign with a signing certificate",
                )
            return certs[0].public_key()
        parent = next((c for c in intermediates if _issued_by(current, c)), None)
        if parent is None:
            break
        intermediates.remove(parent)
        current = parent
    raise IntegrityError(
        "the signature's certificate chain does not lead to the trusted roots",
        "pass the root certificate of the signer's PKI with --certificate-chain",
    )
