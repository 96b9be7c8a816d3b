"""The certificate method: the signing certificate and its chain read from PEM files, trust
roots, and the check that a bundle's chain leads to one of them."""

from __future__ import annotations

import datetime
import os
from collections.abc import Sequence

from cryptography import exceptions as crypto_exceptions
from cryptography import x509
from cryptography.x509 import verification as xv

from aim_cli.errors import IntegrityError, UsageError
from aim_cli.signing.bundle import MAX_CERTIFICATES
from aim_cli.signing.files import read_user_file
from aim_cli.util.fs import display_path


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


#: The keys cryptography's path validator checks signatures with (its web PKI list).
_ISSUER_CURVES = frozenset({"secp256r1", "secp384r1", "secp521r1"})
_MIN_RSA_BITS = 2048


def _unusable_key(cert: x509.Certificate) -> str | None:
    """What the certificate's key is, when the path validator cannot check signatures with it
    (so it can never vouch for a chain); None for a key it takes."""
    from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa

    try:
        key = cert.public_key()
    except (crypto_exceptions.UnsupportedAlgorithm, ValueError):
        return f"a key of an unknown algorithm ({cert.public_key_algorithm_oid.dotted_string})"
    if isinstance(key, ec.EllipticCurvePublicKey):
        return None if key.curve.name in _ISSUER_CURVES else f"an EC key on {key.curve.name}"
    if isinstance(key, rsa.RSAPublicKey):
        return None if key.key_size >= _MIN_RSA_BITS else f"an RSA key of {key.key_size} bits"
    for kind, name in ((dsa.DSAPublicKey, "a DSA key"), (ed25519.Ed25519PublicKey, "an Ed25519 key")):
        if isinstance(key, kind):
            return name
    return "an Ed448 key" if isinstance(key, ed448.Ed448PublicKey) else "a key of another kind"


def load_trust_roots(paths: Sequence[str | os.PathLike]) -> list[x509.Certificate]:
    """The certificates of the ``--certificate-chain`` files. The user's own input, so a
    certificate whose key aim_cli cannot check a chain with (DSA, Ed25519, Ed448, curves other
    than P-256/384/521, RSA under 2048 bits, an unknown algorithm) is a usage error naming the
    file, never taken for a damaged signature."""
    roots = []
    for path in paths:
        for cert in _pem_certificates(path, "certificate chain"):
            why = _unusable_key(cert)
            if why is not None:
                raise UsageError(
                    f"--certificate-chain {display_path(path)} holds a certificate aim_cli cannot check chains "
                    f"with: {_one_line(display_path(cert.subject.rfc4514_string()), 80) or 'no subject'} has {why}",
                    "remove it from the file, or pass roots with ECDSA P-256, P-384 or P-521 or RSA (2048 bits "
                    "or more) keys",
                )
            roots.append(cert)
    return roots


def _self_issued(cert: x509.Certificate) -> bool:
    """A trust anchor as OpenSSL (model_signing's verifier) takes one: subject and issuer alike.
    Other certificates passed as roots only serve as intermediates, as in OpenSSL's store."""
    return cert.subject == cert.issuer


def _ca_basic_constraints(policy, cert: x509.Certificate, value: x509.BasicConstraints) -> None:
    if not value.ca:
        raise ValueError("an issuer is not a CA (basicConstraints CA:FALSE)")


def _ca_key_usage(policy, cert: x509.Certificate, value: x509.KeyUsage | None) -> None:
    if value is not None and not value.key_cert_sign:
        raise ValueError("an issuer's key usage lacks keyCertSign")


def _verifier(anchors: list[x509.Certificate], at: datetime.datetime, depth: int):
    """cryptography's path validator with OpenSSL's X.509 rules as model_signing runs them (no
    purpose set): every issuer a CA by basicConstraints, with keyCertSign if it states a key
    usage, path lengths, validity, name constraints and unknown critical extensions checked;
    extended key usages neither required nor refused (the leaf's is checked as upstream does)."""
    ca_policy = (
        xv.ExtensionPolicy.permit_all()
        .require_present(x509.BasicConstraints, xv.Criticality.AGNOSTIC, _ca_basic_constraints)
        .may_be_present(x509.KeyUsage, xv.Criticality.AGNOSTIC, _ca_key_usage)
    )
    return (
        xv.PolicyBuilder()
        .store(xv.Store(anchors))
        .time(at)
        .max_chain_depth(min(255, max(1, depth)))  # each intermediate may be used
        .extension_policies(ca_policy=ca_policy, ee_policy=xv.ExtensionPolicy.permit_all())
        .build_client_verifier()
    )


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


def _one_line(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_chain(ders: Sequence[bytes], roots: Sequence[x509.Certificate]):
    """The leaf's public key, if the bundle's chain leads to one of ``roots`` by the rules of
    X.509 path validation (``_verifier``), at the time the leaf was issued (model_signing checks
    at that time too, as a signature outlives its certificate), and the leaf may sign."""
    certs = [x509.load_der_x509_certificate(d) for d in ders]
    leaf = certs[0]
    anchors = [c for c in roots if _self_issued(c)]
    intermediates = [*certs[1:], *(c for c in roots if not _self_issued(c))]
    why = "no self-signed root among them"
    if anchors:
        try:
            _verifier(anchors, leaf.not_valid_before_utc, len(intermediates)).verify(leaf, intermediates)
            why = ""
        except (xv.VerificationError, ValueError, TypeError, crypto_exceptions.UnsupportedAlgorithm) as e:
            why = _one_line(str(e)) or type(e).__name__
    if why:
        raise IntegrityError(
            f"the signature's certificate chain does not lead to the trusted roots ({why})",
            "pass the root certificate of the signer's PKI with --certificate-chain; every issuer "
            "must be a CA allowed to sign certificates, valid when the leaf was issued",
        )
    if not _can_sign(leaf):
        raise IntegrityError(
            "the signature's certificate is not for signing (no digitalSignature key "
            "usage nor codeSigning extended key usage)",
            "sign with a signing certificate",
        )
    return leaf.public_key()
