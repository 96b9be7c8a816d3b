"""`model verify --certificate-chain ROOTS.pem` with a certificate aim_cli cannot check chains with
(a DSA, Ed448, P-192 or unknown-algorithm key): the file is the user's own input, so exit 2 with
one line naming it and what to do, never exit 5 (a damaged signature) or 1, through the console
script."""

from __future__ import annotations

import datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448
from cryptography.x509.oid import NameOID

from tests.helpers import LOCAL_ONLY, make_signed_tree, ok, one_line_error, write_keys

pytestmark = pytest.mark.format_neutral

NOW = datetime.datetime.now(datetime.UTC)
DAY = datetime.timedelta(days=1)
EC_OID = bytes.fromhex("06072a8648ce3d0201")  # id-ecPublicKey, DER
UNKNOWN_OID = bytes.fromhex("06072a8648ce3d0209")  # same length, no such key algorithm


def cert(name: str, public_key, issuer: str, issuer_key, *, ca: bool) -> x509.Certificate:
    usage = x509.KeyUsage(not ca, False, False, False, False, ca, ca, False, False)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - DAY)
        .not_valid_after(NOW + 30 * DAY)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(usage, critical=True)
        .sign(issuer_key, None if isinstance(issuer_key, ed448.Ed448PrivateKey) else hashes.SHA256())
    )


def pem(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def unknown_algorithm_root() -> bytes:
    """A self-signed EC root whose key algorithm OID no library knows (PEM)."""
    key = ec.generate_private_key(ec.SECP256R1())
    der = cert("odd root", key.public_key(), "odd root", key, ca=True).public_bytes(serialization.Encoding.DER)
    assert der.count(EC_OID) == 1
    body = der.replace(EC_OID, UNKNOWN_OID)
    return pem(x509.load_der_x509_certificate(body))


ROOT_KEYS = {
    "Ed448": (ed448.Ed448PrivateKey.generate, "an Ed448 key"),
    "DSA": (lambda: dsa.generate_private_key(2048), "a DSA key"),
    "P-192": (lambda: ec.generate_private_key(ec.SECP192R1()), "an EC key on secp192r1"),
}


@LOCAL_ONLY  # the roots are read before the storage is: one backend suffices
@pytest.mark.parametrize("kind", sorted(ROOT_KEYS))
def test_a_root_with_a_key_aim_cli_cannot_use_is_a_usage_error(repo, tmp_path, kind):
    src = make_signed_tree(tmp_path / "model")
    ok(repo.cli("model", "push", repo.name, "m", str(src), "--tag", "v1", "-q"))
    signer, signer_pem, _pub = write_keys(tmp_path / "keys")
    make_key, words = ROOT_KEYS[kind]
    root_key = make_key()
    root = cert("odd root", root_key.public_key(), "odd root", root_key, ca=True)
    leaf = cert("signer", signer.public_key(), "odd root", root_key, ca=False)
    (tmp_path / "leaf.pem").write_bytes(pem(leaf))
    roots = tmp_path / "odd-roots.pem"
    roots.write_bytes(pem(root))
    sign = ("model", "sign", repo.name, "m", "--tag", "v1", "--key", str(signer_pem))
    ok(repo.cli(*sign, "--certificate", str(tmp_path / "leaf.pem"), "--certificate-chain", str(roots)))

    verify = ("model", "verify", repo.name, "m", "--tag", "v1", "--certificate-chain")
    one_line_error(repo.cli(*verify, str(roots)), 2, "odd-roots.pem", words, "CN=odd root", "remove it")
    # Beside a root that does vouch for the signer, the file is refused all the same: what the
    # user passed cannot be used as they meant it.
    good_key = ec.generate_private_key(ec.SECP256R1())
    good = tmp_path / "good-root.pem"
    good.write_bytes(pem(cert("good root", good_key.public_key(), "good root", good_key, ca=True)))
    mixed = tmp_path / "mixed.pem"
    mixed.write_bytes(good.read_bytes() + roots.read_bytes())
    one_line_error(repo.cli(*verify, str(good), "--certificate-chain", str(mixed)), 2, "mixed.pem", words)
    # A usable root that did not issue the signer: exit 5 as ever (the signature does not lead there).
    one_line_error(repo.cli(*verify, str(good)), 5, "does not lead to the trusted roots")


@LOCAL_ONLY
def test_a_root_with_an_unknown_key_algorithm_is_a_usage_error(repo, tmp_path):
    src = make_signed_tree(tmp_path / "model")
    ok(repo.cli("model", "push", repo.name, "m", str(src), "--tag", "v1", "-q"))
    roots = tmp_path / "unknown.pem"
    roots.write_bytes(unknown_algorithm_root())
    verify = ("model", "verify", repo.name, "m", "--tag", "v1", "--certificate-chain", str(roots))
    one_line_error(repo.cli(*verify), 2, "unknown.pem", "unknown algorithm", "1.2.840.10045.2.9")
