"""Certificate chains, judged by aim_cli through its console script and by model_signing 1.1.1's
certificate verifier on the same bundle: aim_cli never accepts a chain upstream rejects, and
rejects one upstream accepts only in the cases the README names (issuer keys cryptography's
path validator does not take)."""

from __future__ import annotations

import datetime
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from aim_cli.format.layout import signature_key
from aim_cli.signing.bundle import sign_payload
from aim_cli.signing.keys import key_hint, stored_hint
from aim_cli.signing.statement import blake3_digests, build_statement, payload_bytes
from tests.helpers import LOCAL_ONLY, describe, make_signed_tree, ok, one_line_error

pytestmark = pytest.mark.format_neutral

NOW = datetime.datetime.now(datetime.UTC)
DAY = datetime.timedelta(days=1)
CA = x509.BasicConstraints(ca=True, path_length=None)
EE = x509.BasicConstraints(ca=False, path_length=None)
CODE_SIGNING, SERVER_AUTH = ExtendedKeyUsageOID.CODE_SIGNING, ExtendedKeyUsageOID.SERVER_AUTH


def usage(sign: bool = False, cert_sign: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(sign, False, False, False, False, cert_sign, cert_sign, False, False)


CA_USAGE, LEAF_USAGE = usage(cert_sign=True), usage(sign=True)


def p256():
    return ec.generate_private_key(ec.SECP256R1())


def cert(name, key, issuer, issuer_key, *, bc=None, ku=None, eku=None, days=(-1, 30), critical_bc=True, extra=()):
    """A certificate for ``key``'s public key named ``name``, issued by ``issuer`` (a name)."""
    hash_alg = None if isinstance(issuer_key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    b = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW + days[0] * DAY)
        .not_valid_after(NOW + days[1] * DAY)
    )
    if bc is not None:
        b = b.add_extension(bc, critical=critical_bc)
    if ku is not None:
        b = b.add_extension(ku, critical=True)
    if eku is not None:
        b = b.add_extension(x509.ExtendedKeyUsage(eku), critical=False)
    for ext, critical in extra:
        b = b.add_extension(ext, critical=critical)
    return b.sign(issuer_key, hash_alg)


@dataclass
class Chain:
    key: ec.EllipticCurvePrivateKey  # the leaf's
    certificates: list  # the bundle's, leaf first
    roots: list  # what `--certificate-chain` passes


def pki(*, mid_kw=None, leaf_kw=None, root_kw=None, mid_key=None, leaf_issuer_key=None) -> Chain:
    """root -> intermediate -> leaf, each part's keywords overriding a valid default."""
    root_key, mid_key, leaf_key = p256(), mid_key or p256(), p256()
    root = cert("root", root_key, "root", root_key, **({"bc": CA, "ku": CA_USAGE} | (root_kw or {})))
    mid = cert("mid", mid_key, "root", root_key, **({"bc": CA, "ku": CA_USAGE} | (mid_kw or {})))
    leaf = cert("leaf", leaf_key, "mid", leaf_issuer_key or mid_key, **({"bc": EE, "ku": LEAF_USAGE} | (leaf_kw or {})))
    return Chain(leaf_key, [leaf, mid], [root])


def path_length_exceeded() -> Chain:
    root_key, k1, k2, leaf_key = p256(), p256(), p256(), p256()
    root = cert("root", root_key, "root", root_key, bc=CA, ku=CA_USAGE)
    m1 = cert("m1", k1, "root", root_key, bc=x509.BasicConstraints(True, 0), ku=CA_USAGE)
    m2 = cert("m2", k2, "m1", k1, bc=CA, ku=CA_USAGE)
    return Chain(leaf_key, [cert("leaf", leaf_key, "m2", k2, ku=LEAF_USAGE), m2, m1], [root])


def self_signed(trusted: bool) -> Chain:
    key = p256()
    leaf = cert("leaf", key, "leaf", key, ku=LEAF_USAGE)
    other = p256()
    return Chain(key, [leaf], [leaf] if trusted else [cert("root", other, "root", other, bc=CA, ku=CA_USAGE)])


def moved(chain: Chain, *, to_roots: bool) -> Chain:
    """The intermediate taken out of the bundle: passed beside the root, or instead of it."""
    leaf, mid = chain.certificates
    return Chain(chain.key, [leaf], [mid, *chain.roots] if to_roots else [mid])


def long_chain(n: int) -> Chain:
    root_key = p256()
    root = cert("root", root_key, "root", root_key, bc=CA, ku=CA_USAGE)
    issuer, issuer_key, mids = "root", root_key, []
    for i in range(n):
        k = p256()
        mids.insert(0, cert(f"m{i}", k, issuer, issuer_key, bc=CA, ku=CA_USAGE))
        issuer, issuer_key = f"m{i}", k
    leaf_key = p256()
    return Chain(leaf_key, [cert("leaf", leaf_key, issuer, issuer_key, ku=LEAF_USAGE), *mids], [root])


UNKNOWN_CRITICAL = (x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.99999.1"), b"\x05\x00"), True)
CONSTRAINED = (x509.NameConstraints([x509.DNSName("example.com")], None), True)


def san(name: str):
    return (x509.SubjectAlternativeName([x509.DNSName(name)]), False)


#: name -> (chain, upstream accepts, aim_cli accepts)
CORPUS: dict[str, tuple[Callable[[], Chain], bool, bool]] = {
    "valid": (lambda: pki(), True, True),
    "leaf without extensions": (lambda: pki(leaf_kw={"bc": None, "ku": None}), False, False),
    "leaf: codeSigning EKU only": (lambda: pki(leaf_kw={"ku": None, "eku": [CODE_SIGNING]}), True, True),
    "leaf: digitalSignature + serverAuth EKU": (lambda: pki(leaf_kw={"eku": [SERVER_AUTH]}), True, True),
    "leaf: keyCertSign + serverAuth EKU": (
        lambda: pki(leaf_kw={"ku": usage(cert_sign=True), "eku": [SERVER_AUTH]}),
        False,
        False,
    ),
    "leaf: keyCertSign + codeSigning EKU": (
        lambda: pki(leaf_kw={"ku": usage(cert_sign=True), "eku": [CODE_SIGNING]}),
        True,
        True,
    ),
    "leaf is a CA": (lambda: pki(leaf_kw={"bc": CA, "ku": usage(True, True)}), True, True),
    "leaf: unknown critical extension": (lambda: pki(leaf_kw={"extra": [UNKNOWN_CRITICAL]}), False, False),
    "intermediate CA:FALSE (a TLS certificate)": (
        lambda: pki(mid_kw={"bc": EE, "ku": usage(sign=True), "eku": [SERVER_AUTH]}),
        False,
        False,
    ),
    "intermediate without basicConstraints": (lambda: pki(mid_kw={"bc": None}), False, False),
    "intermediate without keyCertSign": (lambda: pki(mid_kw={"ku": usage(sign=True)}), False, False),
    "intermediate without key usage": (lambda: pki(mid_kw={"ku": None}), True, True),
    "intermediate basicConstraints not critical": (lambda: pki(mid_kw={"critical_bc": False}), True, True),
    "intermediate: serverAuth EKU": (lambda: pki(mid_kw={"eku": [SERVER_AUTH]}), True, True),
    "intermediate: unknown critical extension": (lambda: pki(mid_kw={"extra": [UNKNOWN_CRITICAL]}), False, False),
    "intermediate expired before the leaf": (lambda: pki(mid_kw={"days": (-10, -5)}), False, False),
    "intermediate not yet valid at the leaf": (lambda: pki(leaf_kw={"days": (-3, 30)}), False, False),
    "root expired before the leaf": (lambda: pki(root_kw={"days": (-10, -5)}), False, False),
    "root CA:FALSE": (lambda: pki(root_kw={"bc": EE}), False, False),
    "root without keyCertSign": (lambda: pki(root_kw={"ku": usage(sign=True)}), False, False),
    "path length exceeded": (path_length_exceeded, False, False),
    "root path length 0 exceeded": (lambda: pki(root_kw={"bc": x509.BasicConstraints(True, 0)}), False, False),
    "intermediate path length 0": (lambda: pki(mid_kw={"bc": x509.BasicConstraints(True, 0)}), True, True),
    "name constraints violated": (
        lambda: pki(mid_kw={"extra": [CONSTRAINED]}, leaf_kw={"extra": [san("evil.org")]}),
        False,
        False,
    ),
    "name constraints kept": (
        lambda: pki(mid_kw={"extra": [CONSTRAINED]}, leaf_kw={"extra": [san("a.example.com")]}),
        True,
        True,
    ),
    "leaf signed by another key": (lambda: pki(leaf_issuer_key=p256()), False, False),
    "self-signed leaf, untrusted": (lambda: self_signed(False), False, False),
    "self-signed leaf passed as the root": (lambda: self_signed(True), True, True),
    "intermediate beside the root": (lambda: moved(pki(), to_roots=True), True, True),
    "intermediate as the only root": (lambda: moved(pki(), to_roots=False), False, False),
    "nine intermediates": (lambda: long_chain(9), True, True),
    "P-384 intermediate": (lambda: pki(mid_key=ec.generate_private_key(ec.SECP384R1())), True, True),
    "RSA-2048 intermediate": (lambda: pki(mid_key=rsa.generate_private_key(65537, 2048)), True, True),
    # stricter than upstream (README, "Certificates"): issuer keys the path validator refuses
    "Ed25519 intermediate": (lambda: pki(mid_key=ed25519.Ed25519PrivateKey.generate()), True, False),
    "RSA-1024 intermediate": (lambda: pki(mid_key=rsa.generate_private_key(65537, 1024)), True, False),
    "secp256k1 intermediate": (lambda: pki(mid_key=ec.generate_private_key(ec.SECP256K1())), True, False),
}


def upstream_accepts(directory: Path, bundle: Path, roots: Path) -> bool:
    import model_signing

    hashing = model_signing.hashing.Config().use_file_serialization(hashing_algorithm="blake3")
    config = model_signing.verifying.Config().use_certificate_verifier(certificate_chain=[roots])
    try:
        with warnings.catch_warnings():  # its logger.warn() is deprecated: not a "no"
            warnings.simplefilter("ignore", DeprecationWarning)
            config.set_hashing_config(hashing).verify(directory, bundle)
    except Exception:  # upstream raises ValueError, OpenSSL's errors, ...: any is its "no"
        return False
    return True


def pem(certs) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


@LOCAL_ONLY
def test_chain_corpus_against_upstream(repo, tmp_path):
    src = make_signed_tree(tmp_path / "model")
    ok(repo.cli("model", "push", repo.name, "m", str(src), "--tag", "v1", "-q"))
    payload = payload_bytes(build_statement("m", blake3_digests(repo.manifest("m", "v1")), "blake3"))
    verdicts, lines = {}, {}
    for i, (name, (make, _, _)) in enumerate(CORPUS.items()):
        chain = make()
        bundle = sign_payload(chain.key, payload, chain.certificates)
        hint = stored_hint(key_hint(chain.key.public_key())[:16], "blake3")
        assert repo.repository.put_signature("m", "v1", hint, bundle)
        roots, sig = tmp_path / f"roots{i}.pem", tmp_path / f"bundle{i}.sig"
        roots.write_bytes(pem(chain.roots))
        sig.write_bytes(bundle)
        res = repo.cli("model", "verify", repo.name, "m", "--tag", "v1", "--certificate-chain", str(roots))
        repo.repository.backend.delete(signature_key("m", "v1", hint))
        if res.returncode:
            lines[name] = one_line_error(res, 5, "certificate")
        else:
            assert "Traceback" not in res.stderr, describe(res)
        verdicts[name] = (upstream_accepts(src, sig, roots), res.returncode == 0)
    wrong = {n: v for n, v in verdicts.items() if v != CORPUS[n][1:]}
    assert not wrong, f"(upstream, aim_cli) verdicts differ from the expected ones: {wrong}; {lines}"
    # the rule, whatever the table says: never accepted here when upstream refuses
    assert not [n for n, (up, ours) in verdicts.items() if ours and not up]
    assert {v for v in verdicts.values()} >= {(True, True), (False, False), (True, False)}


@LOCAL_ONLY
def test_chain_refusals_name_the_broken_rule(repo, tmp_path):
    """The one line says which X.509 rule the chain breaks, not only that it failed."""
    src = make_signed_tree(tmp_path / "model")
    ok(repo.cli("model", "push", repo.name, "m", str(src), "--tag", "v1", "-q"))
    payload = payload_bytes(build_statement("m", blake3_digests(repo.manifest("m", "v1")), "blake3"))
    cases = {
        "intermediate CA:FALSE (a TLS certificate)": "basicConstraints.cA",
        "intermediate without keyCertSign": "keyCertSign",
        "path length exceeded": "path length",
        "intermediate expired before the leaf": "not valid at validation time",
        "intermediate as the only root": "no self-signed root",
        "leaf without extensions": "not for signing",
    }
    for i, (name, needle) in enumerate(cases.items()):
        chain = CORPUS[name][0]()
        hint = stored_hint(key_hint(chain.key.public_key())[:16], "blake3")
        repo.repository.put_signature("m", "v1", hint, sign_payload(chain.key, payload, chain.certificates))
        roots = tmp_path / f"r{i}.pem"
        roots.write_bytes(pem(chain.roots))
        res = repo.cli("model", "verify", repo.name, "m", "--tag", "v1", "--certificate-chain", str(roots))
        one_line_error(res, 5, needle)
        repo.repository.backend.delete(signature_key("m", "v1", hint))
