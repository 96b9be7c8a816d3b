"""`model sign`, `model verify --public-key`, `model export-signature`, `model info` signatures,
through the installed console script; model_signing's CLI (its own console script in the venv)
is the oracle for the SHA-256 kind and the signer for --import."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from aim_cli.format.layout import signature_key
from aim_cli.signing.bundle import sign_payload
from aim_cli.signing.keys import key_hint
from aim_cli.signing.statement import blake3_digests, build_statement, payload_bytes
from tests.helpers import (
    LOCAL_ONLY,
    describe,
    make_signed_tree,
    ok,
    one_line_error,
    upstream_verify,
    write_file,
    write_keys,
    write_pki,
)

#: Nothing here depends on the storage format: no format 1 run of the `repo` fixture (conftest.py).
pytestmark = pytest.mark.format_neutral

MODEL_SIGNING = Path(sys.executable).parent / "model_signing"


@pytest.fixture
def pushed(repo, tmp_path):
    src = make_signed_tree(tmp_path / "model")
    ok(repo.cli("model", "push", repo.name, "m", str(src), "--tag", "v1", "-q"))
    key, pem, pub = write_keys(tmp_path / "keys")
    return repo, src, key, pem, pub


def upstream_cli(*args) -> subprocess.CompletedProcess:
    """model_signing's CLI; a `verify` of a pulled DEST ignores DEST/.aim (the pull's index), as
    the README tells users to."""
    argv = [str(MODEL_SIGNING), *map(str, args)]
    if args[0] == "verify" and (Path(args[2]) / ".aim").is_dir():
        argv += ["--ignore-paths", str(Path(args[2]) / ".aim")]
    return subprocess.run(argv, capture_output=True, text=True, timeout=300)


def test_sign_verify_export_info(pushed, tmp_path):
    env, _src, key, pem, pub = pushed
    signer = key_hint(key.public_key())[:16]
    out = ok(env.cli("model", "sign", env.name, "m", "--tag", "v1", "--key", str(pem))).stdout
    assert out.startswith("signed m:v1: signer " + signer)
    again = ok(env.cli("model", "sign", env.name, "m", "--tag", "v1", "--key", str(pem), "--json"))
    assert json.loads(again.stdout)["created"] is False
    assert "already signed" in ok(env.cli("model", "sign", env.name, "m", "--tag", "v1", "--key", str(pem))).stdout

    info = json.loads(ok(env.cli("model", "info", env.name, "m", "--tag", "v1", "--json")).stdout)
    assert info["signatures"] == [{"hint": signer, "kind": "blake3", "method": "key", "signer": signer}]
    assert f"signed:   by {signer} (blake3, key method)" in ok(env.cli("model", "info", env.name, "m")).stdout

    res = ok(env.cli("model", "verify", env.name, "m", "--tag", "v1", "--public-key", str(pub), "--json"))
    assert json.loads(res.stdout) | {} == {
        "model": "m",
        "tag": "v1",
        "hint": signer,
        "kind": "blake3",
        "method": "key",
        "files": 7,
        "checked": "repository",
        "ok": True,
    }
    dest = tmp_path / "dest"
    ok(env.cli("model", "pull", env.name, "m", str(dest), "--tag", "v1", "-q"))
    ok(env.cli("model", "verify", env.name, "m", "--tag", "v1", "--public-key", str(pub), "--local", str(dest)))

    bundle = tmp_path / "out" / "m.sig"
    bundle.parent.mkdir()
    ok(env.cli("model", "export-signature", env.name, "m", "--tag", "v1", "-o", str(bundle)))
    assert bundle.read_bytes() == env.repository.get_signature("m", "v1", signer)
    upstream_verify(dest, bundle.read_bytes(), pub, "blake3", tmp_path)
    # the upstream CLI always re-hashes with SHA-256, so it rejects the BLAKE3 kind (issue 12)
    assert upstream_cli("verify", "key", dest, "--signature", bundle, "--public_key", pub).returncode != 0

    one_line_error(
        env.cli("model", "export-signature", env.name, "m", "--tag", "v1", "--sha256", "-o", str(tmp_path / "x.sig")),
        3,
        "no sha256 signature",
    )
    (dest / "B").write_bytes(b"changed")
    one_line_error(
        env.cli("model", "verify", env.name, "m", "--tag", "v1", "--public-key", str(pub), "--local", str(dest)),
        5,
        "digest of 'B'",
    )


def test_sha256_kind_verifies_with_the_upstream_cli(pushed, tmp_path):
    env, _src, key, pem, pub = pushed
    signer = key_hint(key.public_key())[:16]
    r = json.loads(
        ok(env.cli("model", "sign", env.name, "m", "--tag", "v1", "--key", str(pem), "--sha256", "--json")).stdout
    )
    assert (r["hint"], r["kind"], r["created"]) == (signer + ".sha256", "sha256", True)
    dest = tmp_path / "dest"
    ok(env.cli("model", "pull", env.name, "m", str(dest), "--tag", "v1", "-q"))
    bundle = tmp_path / "m.sig"
    ok(
        env.cli(
            "model", "export-signature", env.name, "m", "--tag", "v1", "--sha256", "--signer", signer, "-o", str(bundle)
        )
    )
    res = upstream_cli("verify", "key", dest, "--signature", bundle, "--public_key", pub)
    assert res.returncode == 0, describe(res)
    ok(env.cli("model", "verify", env.name, "m", "--tag", "v1", "--public-key", str(pub)))

    (dest / "a.txt").write_bytes(b"tampered\n")
    assert upstream_cli("verify", "key", dest, "--signature", bundle, "--public_key", pub).returncode != 0


@LOCAL_ONLY
def test_encrypted_key(pushed, tmp_path):
    env, _, _, _, _ = pushed
    _key, pem, pub = write_keys(tmp_path / "enc", ec.SECP384R1, password=b"s3cret")
    one_line_error(
        env.cli("model", "sign", env.name, "m", "--tag", "v1", "--key", str(pem)), 2, "encrypted", "--password-env"
    )
    one_line_error(
        env.cli(
            "model",
            "sign",
            env.name,
            "m",
            "--tag",
            "v1",
            "--key",
            str(pem),
            "--password-env",
            "PW",
            env={"PW": "wrong"},
        ),
        2,
        "password",
    )
    ok(
        env.cli(
            "model",
            "sign",
            env.name,
            "m",
            "--tag",
            "v1",
            "--key",
            str(pem),
            "--password-env",
            "PW",
            env={"PW": "s3cret"},
        )
    )
    ok(env.cli("model", "verify", env.name, "m", "--tag", "v1", "--public-key", str(pub)))


@LOCAL_ONLY
def test_bad_inputs_are_one_line(pushed, tmp_path):
    env, _, _, pem, pub = pushed
    one_line_error(env.cli("model", "sign", env.name, "m", "--tag", "v9", "--key", str(pem)), 3, "v9")
    one_line_error(
        env.cli("model", "sign", env.name, "m", "--tag", "v1", "--key", str(tmp_path / "nope.pem")), 2, "nope.pem"
    )
    one_line_error(env.cli("model", "sign", env.name, "m", "--tag", "v1", "--key", str(pub)), 2, "private key")
    one_line_error(env.cli("model", "sign", env.name, "m", "--tag", "v1"), 2, "--key")
    rsa = tmp_path / "ed.pem"
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    rsa.write_bytes(
        ed25519.Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    one_line_error(env.cli("model", "sign", env.name, "m", "--tag", "v1", "--key", str(rsa)), 2, "P-256")
    one_line_error(
        env.cli("model", "verify", env.name, "m", "--tag", "v1", "--public-key", str(pub)),
        5,
        "no signature of m:v1 by this key",
    )


def plant(env, hint: str, data: bytes) -> None:
    env.repository.backend.put(signature_key("m", "v1", hint), data)


@LOCAL_ONLY
def test_tampered_signatures_fail_with_one_line_naming_the_check(pushed, tmp_path):
    env, _src, key, pem, pub = pushed
    signer = key_hint(key.public_key())[:16]
    ok(env.cli("model", "sign", env.name, "m", "--tag", "v1", "--key", str(pem)))
    good = env.repository.get_signature("m", "v1", signer)
    verify = ("model", "verify", env.name, "m", "--tag", "v1", "--public-key", str(pub))

    def replace(data: bytes) -> None:
        env.repository.backend.delete(signature_key("m", "v1", signer))
        plant(env, signer, data)

    # a changed file digest in the payload (subject digest kept consistent): the ECDSA check fails
    doc = json.loads(good)
    statement = json.loads(base64.b64decode(doc["dsseEnvelope"]["payload"]))
    digests = {r["name"]: r["digest"] for r in statement["predicate"]["resources"]}
    digests["a.txt"] = "0" * 64
    doc["dsseEnvelope"]["payload"] = base64.b64encode(payload_bytes(build_statement("m", digests, "blake3"))).decode()
    replace(json.dumps(doc).encode())
    one_line_error(env.cli(*verify), 5, "ECDSA signature does not match")
    # a signature by another key under this signer's name
    other = ec.generate_private_key(ec.SECP256R1())
    replace(sign_payload(other, base64.b64decode(json.loads(good)["dsseEnvelope"]["payload"])))
    one_line_error(env.cli(*verify), 5, "another key")
    # a bundle for a version with other files, correctly signed
    replace(sign_payload(key, payload_bytes(build_statement("m", {"x.bin": "1" * 64}, "blake3"))))
    one_line_error(env.cli(*verify), 5, "covers other files", "x.bin")
    # truncated
    replace(good[:-40])
    one_line_error(env.cli(*verify), 5, "malformed signature bundle")
    # info still lists it, as damaged
    assert "damaged" in ok(env.cli("model", "info", env.name, "m")).stdout
    replace(good)
    ok(env.cli(*verify))


# -- --import: a bundle made by model_signing on the pushed directory ------------------------------------
def test_import_of_a_model_signing_bundle_verifies(repo, tmp_path):
    src = make_signed_tree(tmp_path / "model")
    key, pem, pub = write_keys(tmp_path / "keys")
    # upstream's default place for the signature is inside the model: it lists it in ignore_paths
    res = upstream_cli("sign", "key", src, "--signature", src / "model.sig", "--private_key", pem)
    assert res.returncode == 0, describe(res)
    ok(repo.cli("model", "push", repo.name, "m", str(src), "--tag", "v1", "-q"))
    bundle = src / "model.sig"
    r = json.loads(
        ok(repo.cli("model", "sign", repo.name, "m", "--tag", "v1", "--import", str(bundle), "--json")).stdout
    )
    signer = key_hint(key.public_key())[:16]
    assert (r["hint"], r["kind"], r["method"], r["created"]) == (signer + ".sha256", "sha256", "key", True)
    assert (
        "already signed" in ok(repo.cli("model", "sign", repo.name, "m", "--tag", "v1", "--import", str(bundle))).stdout
    )
    ok(repo.cli("model", "verify", repo.name, "m", "--tag", "v1", "--public-key", str(pub)))
    dest = tmp_path / "dest"
    ok(repo.cli("model", "pull", repo.name, "m", str(dest), "--tag", "v1", "-q"))
    ok(repo.cli("model", "verify", repo.name, "m", "--tag", "v1", "--public-key", str(pub), "--local", str(dest)))
    other = write_keys(tmp_path / "other")[2]
    one_line_error(
        repo.cli("model", "verify", repo.name, "m", "--tag", "v1", "--public-key", str(other)), 5, "no signature"
    )


@LOCAL_ONLY
def test_import_refuses_bundles_of_other_content(pushed, tmp_path):
    env, _src, _key, pem, _pub = pushed
    other = make_signed_tree(tmp_path / "other")
    write_file(other / "extra.bin", b"more")
    sig = tmp_path / "other.sig"
    assert upstream_cli("sign", "key", other, "--signature", sig, "--private_key", pem).returncode == 0
    one_line_error(
        env.cli("model", "sign", env.name, "m", "--tag", "v1", "--import", str(sig)),
        5,
        "covers other files",
        "extra.bin",
    )
    (other / "extra.bin").unlink()
    (other / "a.txt").write_bytes(b"other text\n")
    assert upstream_cli("sign", "key", other, "--signature", sig, "--private_key", pem).returncode == 0
    one_line_error(
        env.cli("model", "sign", env.name, "m", "--tag", "v1", "--import", str(sig)), 5, "sha256 digest of 'a.txt'"
    )
    truncated = tmp_path / "t.sig"
    truncated.write_bytes(sig.read_bytes()[:100])
    one_line_error(
        env.cli("model", "sign", env.name, "m", "--tag", "v1", "--import", str(truncated)),
        5,
        "malformed signature bundle",
    )
    one_line_error(
        env.cli("model", "sign", env.name, "m", "--tag", "v1", "--import", str(sig), "--key", str(pem)), 2, "--import"
    )
    assert env.repository.list_signatures("m", "v1") == []


# -- pull --require-signature ------------------------------------------------------------------------------
def test_pull_requires_a_signature_before_writing_anything(pushed, tmp_path):
    env, _src, key, pem, pub = pushed
    dest = tmp_path / "dest"
    one_line_error(
        env.cli("model", "pull", env.name, "m", str(dest), "--tag", "v1", "--require-signature", str(pub)),
        5,
        "no signature of m:v1 by this key",
    )
    assert not dest.exists()
    ok(env.cli("model", "sign", env.name, "m", "--tag", "v1", "--key", str(pem), "--sha256"))
    ok(env.cli("model", "pull", env.name, "m", str(dest), "--tag", "v1", "--require-signature", str(pub), "-q"))
    upstream = upstream_cli(
        "verify", "key", dest, "--signature", _export(env, tmp_path, "--sha256"), "--public_key", pub
    )
    assert upstream.returncode == 0, describe(upstream)
    # a signature by another key does not count; a tampered one neither
    other = write_keys(tmp_path / "other")[2]
    dest2 = tmp_path / "dest2"
    one_line_error(
        env.cli("model", "pull", env.name, "m", str(dest2), "--tag", "v1", "--require-signature", str(other)),
        5,
        "no signature",
    )
    signer = key_hint(key.public_key())[:16] + ".sha256"
    env.repository.backend.delete(signature_key("m", "v1", signer))
    plant(env, signer, sign_payload(key, payload_bytes(build_statement("m", {"x.bin": "1" * 64}, "sha256"))))
    one_line_error(
        env.cli("model", "pull", env.name, "m", str(dest2), "--tag", "v1", "--require-signature", str(pub)),
        5,
        "covers other files",
    )
    assert not dest2.exists()


def _export(env, tmp_path: Path, *args: str) -> Path:
    out = tmp_path / "exported.sig"
    ok(env.cli("model", "export-signature", env.name, "m", "--tag", "v1", *args, "-o", str(out)))
    return out


# -- the certificate method ----------------------------------------------------------------------------------
def test_certificate_method_verifies_here_and_upstream(pushed, tmp_path):
    env, _src, key, pem, pub = pushed
    leaf, mid, root = write_pki(tmp_path / "pki", key)
    r = json.loads(
        ok(
            env.cli(
                "model",
                "sign",
                env.name,
                "m",
                "--tag",
                "v1",
                "--key",
                str(pem),
                "--sha256",
                "--certificate",
                str(leaf),
                "--certificate-chain",
                str(mid),
                "--certificate-chain",
                str(root),
                "--json",
            )
        ).stdout
    )
    assert (r["method"], r["kind"]) == ("certificate", "sha256")
    ok(env.cli("model", "verify", env.name, "m", "--tag", "v1", "--certificate-chain", str(root)))
    ok(env.cli("model", "verify", env.name, "m", "--tag", "v1", "--public-key", str(pub)))
    dest = tmp_path / "dest"
    ok(env.cli("model", "pull", env.name, "m", str(dest), "--tag", "v1", "-q"))
    ok(env.cli("model", "verify", env.name, "m", "--tag", "v1", "--certificate-chain", str(root), "--local", str(dest)))
    res = upstream_cli(
        "verify", "certificate", dest, "--signature", _export(env, tmp_path, "--sha256"), "--certificate_chain", root
    )
    assert res.returncode == 0, describe(res)
    # another PKI's root does not vouch for it
    other_root = write_pki(tmp_path / "other", key)[2]
    one_line_error(
        env.cli("model", "verify", env.name, "m", "--tag", "v1", "--certificate-chain", str(other_root)),
        5,
        "does not lead to the trusted roots",
    )


@LOCAL_ONLY
def test_certificate_refusals(pushed, tmp_path):
    env, _src, key, pem, _pub = pushed
    leaf, mid, root = write_pki(tmp_path / "pki", key, leaf_usage=False)
    ok(
        env.cli(
            "model",
            "sign",
            env.name,
            "m",
            "--tag",
            "v1",
            "--key",
            str(pem),
            "--certificate",
            str(leaf),
            "--certificate-chain",
            str(mid),
        )
    )
    one_line_error(
        env.cli("model", "verify", env.name, "m", "--tag", "v1", "--certificate-chain", str(root)), 5, "not for signing"
    )
    other_key = write_keys(tmp_path / "k2", name="other")[1]
    one_line_error(
        env.cli("model", "sign", env.name, "m", "--tag", "v1", "--key", str(other_key), "--certificate", str(leaf)),
        2,
        "not for the signing key",
    )
    one_line_error(
        env.cli("model", "sign", env.name, "m", "--tag", "v1", "--key", str(pem), "--certificate", str(pem)),
        2,
        "PEM certificates",
    )


@LOCAL_ONLY
def test_a_forged_bundle_in_the_signers_slot_is_not_already_signed(pushed, tmp_path):
    """An imported bundle that claims the release key's hint must not make `model sign` with the
    real key report "already signed"; a second, different import for the slot is a conflict."""
    env, _src, key, pem, pub = pushed
    forger = ec.generate_private_key(ec.SECP256R1())
    ref = env.repository.get_version("m", "v1")
    doc = json.loads(sign_payload(forger, payload_bytes(build_statement("m", blake3_digests(ref.manifest), "blake3"))))
    doc["verificationMaterial"]["publicKey"]["hint"] = key_hint(key.public_key())
    forged = tmp_path / "forged.sig"
    forged.write_text(json.dumps(doc))
    ok(env.cli("model", "sign", env.name, "m", "--tag", "v1", "--import", str(forged)))
    one_line_error(
        env.cli("model", "sign", env.name, "m", "--tag", "v1", "--key", str(pem)),
        5,
        "does not verify with this key",
        "remove",
    )
    one_line_error(env.cli("model", "verify", env.name, "m", "--tag", "v1", "--public-key", str(pub)), 5, "ECDSA")
    doc["dsseEnvelope"]["signatures"][0]["sig"] = base64.b64encode(b"0" * 70).decode()
    forged.write_text(json.dumps(doc))
    one_line_error(env.cli("model", "sign", env.name, "m", "--tag", "v1", "--import", str(forged)), 4, "another bundle")
