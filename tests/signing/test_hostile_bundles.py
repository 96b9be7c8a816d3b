"""Any bundle, however hostile, gets one line and exit 5 (or is listed as damaged), never the
"bug" exit 1: certificates with an unknown key algorithm, an RSA or secp256k1 leaf, and whatever
hypothesis makes of a bundle, through the commands that read bundles (repo check, model info,
model verify, model sign --import)."""

from __future__ import annotations

import base64
import datetime
import json

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aim_cli import api
from aim_cli.errors import AimError
from aim_cli.format.layout import signature_key
from aim_cli.signing.keys import key_hint
from tests.helpers import LOCAL_ONLY, make_signed_tree, ok, one_line_error, write_keys, write_pki

pytestmark = pytest.mark.format_neutral

NOW = datetime.datetime.now(datetime.UTC)
EC_OID = bytes.fromhex("06072a8648ce3d0201")  # id-ecPublicKey, DER
UNKNOWN_OID = bytes.fromhex("06072a8648ce3d0209")  # same length, no such key algorithm


def leaf_cert(public_key, issuer_key) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "signer")])
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - datetime.timedelta(days=1))
        .not_valid_after(NOW + datetime.timedelta(days=1))
        .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
        .sign(issuer_key, hashes.SHA256())
    )


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def hostile_leaves() -> dict[str, bytes]:
    """DER leaves no signature can be checked with."""
    signer = ec.generate_private_key(ec.SECP256R1())
    ec_leaf = der(leaf_cert(signer.public_key(), signer))
    assert ec_leaf.count(EC_OID) == 1
    return {
        "unknown key algorithm": ec_leaf.replace(EC_OID, UNKNOWN_OID),
        "RSA": der(leaf_cert(rsa.generate_private_key(65537, 2048).public_key(), signer)),
        "secp256k1": der(leaf_cert(ec.generate_private_key(ec.SECP256K1()).public_key(), signer)),
    }


def with_leaf(bundle: bytes, leaf: bytes, at: int = 0) -> bytes:
    """A certificate bundle whose leaf (or certificate ``at`` of its chain) is replaced by
    ``leaf`` (the signature kept)."""
    doc = json.loads(bundle)
    chain = doc["verificationMaterial"]["x509CertificateChain"]["certificates"]
    chain[at]["rawBytes"] = base64.b64encode(leaf).decode()
    return json.dumps(doc).encode()


@pytest.fixture
def signed(repo, tmp_path):
    """m:v1 signed with a certificate (BLAKE3 kind) and a key (SHA-256 kind) by one signer."""
    src = make_signed_tree(tmp_path / "model")
    ok(repo.cli("model", "push", repo.name, "m", str(src), "--tag", "v1", "-q"))
    key, pem, pub = write_keys(tmp_path / "keys")
    leaf, mid, root = write_pki(tmp_path / "pki", key)
    sign = ("model", "sign", repo.name, "m", "--tag", "v1", "--key", str(pem))
    ok(repo.cli(*sign, "--certificate", str(leaf), "--certificate-chain", str(mid), "--certificate-chain", str(root)))
    ok(repo.cli(*sign, "--sha256"))
    return repo, key, pub, root


@LOCAL_ONLY
def test_unusable_leaf_keys_are_one_line_exit_5_everywhere(signed, tmp_path):
    repo, key, pub, root = signed
    signer = key_hint(key.public_key())[:16]
    good = repo.repository.get_signature("m", "v1", signer)
    verify = ("model", "verify", repo.name, "m", "--tag", "v1")
    for what, leaf in hostile_leaves().items():
        bundle = with_leaf(good, leaf)
        path = tmp_path / "hostile.sig"
        path.write_bytes(bundle)
        one_line_error(
            repo.cli("model", "sign", repo.name, "m", "--tag", "v1", "--import", str(path)), 5, "leaf certificate"
        )
        # in the signer's own BLAKE3 slot: checked first, it must not hide the SHA-256 one beside it
        repo.repository.backend.delete(signature_key("m", "v1", signer))
        repo.repository.put_signature("m", "v1", signer, bundle)
        res = repo.cli("repo", "check", repo.name)
        assert res.returncode == 5 and "Traceback" not in res.stderr, (what, res.stderr)
        assert "leaf certificate" in res.stdout + res.stderr, (what, res.stdout)
        info = ok(repo.cli("model", "info", repo.name, "m", "--json"))
        methods = {s["hint"]: s["method"] for s in json.loads(info.stdout)["signatures"]}
        assert methods == {signer: "damaged", f"{signer}.sha256": "key"}, what
        assert json.loads(ok(repo.cli(*verify, "--public-key", str(pub), "--json")).stdout)["kind"] == "sha256"
        one_line_error(repo.cli(*verify, "--certificate-chain", str(root)), 5, "leaf certificate", what.split()[0])
        repo.repository.backend.delete(signature_key("m", "v1", signer))
        repo.repository.put_signature("m", "v1", signer, good)


@LOCAL_ONLY
def test_an_rsa_leaf_does_not_hide_a_valid_certificate_signature(signed, tmp_path):
    """Another signer's bundle with an RSA leaf, listed before the good one, is skipped."""
    repo, _key, _pub, root = signed
    good = repo.repository.get_signature("m", "v1", key_hint(_key.public_key())[:16])
    rsa_leaf = hostile_leaves()["RSA"]
    repo.repository.put_signature("m", "v1", "0" * 16, with_leaf(good, rsa_leaf))
    res = ok(repo.cli("model", "verify", repo.name, "m", "--tag", "v1", "--certificate-chain", str(root), "--json"))
    assert json.loads(res.stdout)["method"] == "certificate"


@LOCAL_ONLY
def test_unusable_intermediate_keys_break_the_chain_in_one_line(signed):
    """An intermediate of unknown key algorithm (or RSA, secp256k1, neither the issuer) in the
    bundle: the chain does not lead to the root, one line, exit 5; the key signature still verifies."""
    repo, key, pub, root = signed
    signer = key_hint(key.public_key())[:16]
    good = repo.repository.get_signature("m", "v1", signer)
    verify = ("model", "verify", repo.name, "m", "--tag", "v1")
    for mid in hostile_leaves().values():
        repo.repository.backend.delete(signature_key("m", "v1", signer))
        repo.repository.put_signature("m", "v1", signer, with_leaf(good, mid, 1))
        one_line_error(repo.cli(*verify, "--certificate-chain", str(root)), 5, "does not lead to the trusted roots")
        ok(repo.cli(*verify, "--public-key", str(pub)))


# -- hypothesis: any bundle, through the API functions the commands call ----------------------------------
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3),
    max_leaves=8,
)
PATHS = [
    ("mediaType",),
    ("verificationMaterial",),
    ("verificationMaterial", "x509CertificateChain"),
    ("verificationMaterial", "x509CertificateChain", "certificates"),
    ("verificationMaterial", "x509CertificateChain", "certificates", 0),
    ("verificationMaterial", "x509CertificateChain", "certificates", 0, "rawBytes"),
    ("dsseEnvelope", "payload"),
    ("dsseEnvelope", "signatures", 0, "sig"),
    ("dsseEnvelope", "signatures"),
]


def _set(doc, path, value):
    node = doc
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = value


@st.composite
def hostile_bundles(draw, good: bytes, leaves: list[bytes]) -> bytes:
    doc = json.loads(good)
    how = draw(st.sampled_from(["leaf", "der bytes", "json", "bytes"]))
    if how == "leaf":  # as the leaf, the intermediate or the root the bundle carries
        return with_leaf(good, draw(st.sampled_from(leaves)), draw(st.integers(0, 2)))
    if how == "der bytes":  # a certificate's DER cut, flipped or extended
        raw = bytearray(draw(st.sampled_from(leaves)))
        cut = draw(st.integers(0, len(raw)))
        raw[cut:] = draw(st.binary(max_size=8))
        return with_leaf(good, bytes(raw))
    if how == "json":
        _set(doc, draw(st.sampled_from(PATHS)), draw(JSON))
        return json.dumps(doc).encode()
    data = bytearray(good)
    at = draw(st.integers(0, len(data) - 1))
    data[at : at + draw(st.integers(0, 8))] = draw(st.binary(max_size=8))
    return bytes(data)


@LOCAL_ONLY
def test_any_bundle_is_damage_never_a_crash(signed, tmp_path):
    repo, key, pub, root = signed
    signer = key_hint(key.public_key())[:16]
    good = repo.repository.get_signature("m", "v1", signer)
    leaves = [*hostile_leaves().values(), der(leaf_cert(key.public_key(), key))]
    cfg, path = str(repo.config), tmp_path / "hostile.sig"
    outcomes: set[str] = set()

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(hostile_bundles(good, leaves))
    def check(bundle: bytes) -> None:
        path.write_bytes(bundle)
        repo.repository.backend.delete(signature_key("m", "v1", signer))
        repo.repository.put_signature("m", "v1", signer, bundle)
        try:
            calls = {
                "import": lambda: api.sign_version(repo.name, "m", tag="v1", import_bundle=path, config=cfg),
                "info": lambda: api.version_details(repo.name, "m", tag="v1", config=cfg),
                "verify key": lambda: api.verify_signature(repo.name, "m", tag="v1", public_key=pub, config=cfg),
                "verify chain": lambda: api.verify_signature(
                    repo.name, "m", tag="v1", certificate_chain=[root], config=cfg
                ),
                "check": lambda: api.check_repo(repo.name, config=cfg),
            }
            for name, call in calls.items():
                try:
                    call()
                    outcomes.add(f"{name} ok")
                except AimError as e:
                    assert e.exit_code != 1 and "\n" not in e.message, (name, e)
                    outcomes.add(f"{name} {type(e).__name__}")
        finally:
            for hint in repo.repository.list_signatures("m", "v1"):
                if hint != f"{signer}.sha256":
                    repo.repository.backend.delete(signature_key("m", "v1", hint))

    check()
    # hostile bundles were refused, and the signer's SHA-256 signature still verified beside them
    assert {"import IntegrityError", "verify chain IntegrityError", "verify key ok"} <= outcomes, outcomes
