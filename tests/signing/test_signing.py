"""aim_cli.signing: the model_signing v1.0 payload built from a manifest, DSSE/Sigstore bundles,
verification, and the strict bundle parser. model_signing's own Python API is the oracle."""

from __future__ import annotations

import base64
import json
import re

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st

from aim_cli.errors import IntegrityError
from aim_cli.pull import pipeline as pullmod
from aim_cli.repository import Repository
from aim_cli.signing.bundle import (
    BUNDLE_OVERHEAD,
    SignatureInfo,
    bundle_problem,
    describe,
    max_bundle_bytes,
    parse_bundle,
    sign_payload,
)
from aim_cli.signing.keys import key_hint
from aim_cli.signing.sign import sign_version
from aim_cli.signing.statement import (
    ALGORITHMS,
    DEFAULT_IGNORE_PATHS,
    blake3_digests,
    build_statement,
    local_digests,
    parse_statement,
    payload_bytes,
    stored_digests,
)
from aim_cli.signing.verify import (
    check_resources,
    expected_digests,
    read_bundle,
    verify_version_signature,
    verify_with_key,
)
from tests.fakes import CountingBackend
from tests.helpers import LOCAL_ONLY, make_signed_tree, upstream_payload, upstream_verify, write_file, write_keys


@pytest.fixture
def signed(repo, tmp_path):
    src = make_signed_tree(tmp_path / "model")
    repo.push("m", src, "v1")
    key, pem, pub = write_keys(tmp_path / "keys")
    return repo, src, key, pem, pub


# -- the payload against model_signing's ---------------------------------------------------------------
@LOCAL_ONLY
def test_payload_is_what_model_signing_builds(signed, tmp_path):
    env, src, key, pem, _ = signed
    ref = env.repository.get_version("m", "v1")
    for algorithm in ("blake3", "sha256"):
        digests = stored_digests(env.repository, ref.manifest, algorithm)
        ours = json.loads(payload_bytes(build_statement(src.name, digests, algorithm)))
        bundle, theirs = upstream_payload(src, pem, algorithm, tmp_path)
        # upstream's ignore_paths order follows a frozenset's (hash-seeded) order: compare as sets
        for doc in (ours, theirs):
            doc["predicate"]["serialization"]["ignore_paths"].sort()
        assert ours == theirs
        names = [r["name"] for r in ours["predicate"]["resources"]]
        assert names[:5] == [".gitmodules", "B", "a/b", "a.txt", "caf\u00e9.json"]
        assert ".gitattributes" not in names and ".github/ci.yml" not in names and "sub/.gitignore" in names
        # the verification material is upstream's key hint
        ours_bundle = json.loads(sign_payload(key, payload_bytes(ours)))
        assert ours_bundle["verificationMaterial"] == bundle["verificationMaterial"]
        assert list(ours_bundle) == list(bundle) and list(ours_bundle["dsseEnvelope"]) == list(bundle["dsseEnvelope"])


def test_payload_layout_is_protobuf_json():
    statement = build_statement("m", {"x": "0" * 64}, "blake3")
    raw = payload_bytes(statement)
    assert raw.startswith(b'{\n  "_type": "https://in-toto.io/Statement/v1",\n  "subject": [')
    assert list(statement) == ["_type", "subject", "predicateType", "predicate"]
    assert list(statement["predicate"]["serialization"]) == ["method", "hash_type", "allow_symlinks", "ignore_paths"]
    assert list(statement["predicate"]["resources"][0]) == ["name", "algorithm", "digest"]
    assert b"\\u00e9" in payload_bytes(build_statement("m", {"\u00e9": "0" * 64}, "blake3"))


# -- sign, pull, verify with model_signing -------------------------------------------------------------
@pytest.mark.parametrize("curve", [ec.SECP256R1, ec.SECP384R1, ec.SECP521R1])
def test_signed_version_verifies_upstream_on_the_pulled_directory(repo, tmp_path, curve):
    src = make_signed_tree(tmp_path / "model")
    repo.push("m", src, "v1")
    key, _, pub = write_keys(tmp_path / "keys", curve)
    ref = repo.repository.get_version("m", "v1")
    result = sign_version(repo.repository, ref, key)
    assert result.created and result.kind == "blake3" and result.hint == key_hint(key.public_key())[:16]
    assert repo.repository.list_signatures("m", "v1") == [result.hint]
    assert describe(repo.repository.get_signature("m", "v1", result.hint)) == SignatureInfo(
        result.hint, "blake3", "key", result.hint
    )
    # again: already signed, nothing replaced
    assert not sign_version(repo.repository, ref, key).created

    dest = tmp_path / "dest"
    pullmod.pull(repo.repository, "m", dest, tag="v1", jobs=4)
    bundle = repo.repository.get_signature("m", "v1", result.hint)
    upstream_verify(dest, bundle, pub, "blake3", tmp_path)
    assert verify_version_signature(repo.repository, ref, key.public_key()).files == 7
    assert verify_version_signature(repo.repository, ref, key.public_key(), local=dest).kind == "blake3"

    (dest / "a.txt").write_bytes(b"changed\n")
    with pytest.raises(ValueError):
        upstream_verify(dest, bundle, pub, "blake3", tmp_path)
    with pytest.raises(IntegrityError, match=re.escape("digest of 'a.txt'")):
        verify_version_signature(repo.repository, ref, key.public_key(), local=dest)


@LOCAL_ONLY
def test_sha256_signature_streams_verified_blobs_and_verifies_upstream(signed, tmp_path):
    env, src, key, _, pub = signed
    ref = env.repository.get_version("m", "v1")
    result = sign_version(env.repository, ref, key, kind="sha256")
    assert result.hint.endswith(".sha256")
    upstream_verify(src, env.repository.get_signature("m", "v1", result.hint), pub, "sha256", tmp_path)
    assert verify_version_signature(env.repository, ref, key.public_key()).kind == "sha256"


@LOCAL_ONLY
def test_blake3_signing_reads_no_blob(signed):
    env, _, key, _, _ = signed
    counting = CountingBackend(env.repository.backend)
    repository = Repository(counting, env.name)
    ref = repository.get_version("m", "v1")
    sign_version(repository, ref, key)
    verify_version_signature(repository, ref, key.public_key())
    assert counting.gets == 0
    sign_version(repository, ref, key, kind="sha256")
    assert counting.gets > 0


# -- verification failures -----------------------------------------------------------------------------
def resign(key, bundle: bytes, edit) -> bytes:
    """The bundle's statement changed by ``edit`` (statement dict -> None), signed again."""
    b = parse_bundle(bundle)
    statement = json.loads(b.payload)
    edit(statement)
    return sign_payload(key, payload_bytes(statement))


@LOCAL_ONLY
def test_tampering_is_named(signed, tmp_path):
    env, _, key, _, _ = signed
    ref = env.repository.get_version("m", "v1")
    bundle = sign_payload(key, payload_bytes(build_statement("m", blake3_digests(ref.manifest), "blake3")))
    pub = key.public_key()

    def check(data: bytes, match: str):
        with pytest.raises(IntegrityError, match=match):
            statement = verify_with_key(parse_bundle(data), pub)
            check_resources(statement, expected_digests(env.repository, ref, statement), "m:v1")

    intact = verify_with_key(parse_bundle(bundle), pub)
    check_resources(intact, expected_digests(env.repository, ref, intact), "m:v1")
    # a changed digest in the payload, with the subject digest fixed up: the ECDSA signature breaks
    doc = json.loads(bundle)
    statement = json.loads(base64.b64decode(doc["dsseEnvelope"]["payload"]))
    statement["predicate"]["resources"][0]["digest"] = "0" * 64
    statement["subject"][0]["digest"]["sha256"] = build_statement(
        "m", {r["name"]: r["digest"] for r in statement["predicate"]["resources"]}, "blake3"
    )["subject"][0]["digest"]["sha256"]
    doc["dsseEnvelope"]["payload"] = base64.b64encode(payload_bytes(statement)).decode()
    check(json.dumps(doc).encode(), "ECDSA signature does not match")
    # the same change signed by the key itself: the digest check names the file
    first = statement["predicate"]["resources"][0]["name"]
    check(sign_payload(key, payload_bytes(statement)), f"digest of '{first}'")
    # another key
    other = ec.generate_private_key(ec.SECP256R1())
    check(sign_payload(other, payload_bytes(statement)), "another key")
    # a bundle for other files
    check(resign(key, bundle, lambda s: s["predicate"]["resources"].pop()), "subject digest")
    other_files = build_statement("m", {"x.bin": "1" * 64}, "blake3")
    check(sign_payload(key, payload_bytes(other_files)), "covers other files")
    # truncated
    check(bundle[: len(bundle) // 2], "not JSON")


# -- the parser: every input is a bundle or one IntegrityError -------------------------------------------
def _valid_bundle() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    return sign_payload(key, payload_bytes(build_statement("m", {"a": "0" * 64}, "blake3")))


VALID = _valid_bundle()


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_any_bytes_parse_or_raise_integrity_error(data):
    assert bundle_problem(data) is None or isinstance(bundle_problem(data), str)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, len(VALID) - 1), st.integers(0, 255))
def test_a_changed_byte_is_a_problem_or_still_a_bundle(at, value):
    data = bytearray(VALID)
    data[at] = value
    try:
        info = describe(bytes(data))
    except IntegrityError:
        return
    assert info.kind == "blake3"


@settings(max_examples=200, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=8),
        lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=12), c, max_size=4),
        max_leaves=20,
    )
)
def test_any_json_document_is_a_problem(doc):
    assert isinstance(bundle_problem(json.dumps(doc).encode()), str)


@settings(max_examples=100, deadline=None)
@given(st.integers(0, len(VALID)))
def test_every_truncation_is_a_problem(n):
    assert n == len(VALID) or isinstance(bundle_problem(VALID[:n]), str)


def test_describe_and_problems():
    assert bundle_problem(VALID) is None
    info = describe(VALID)
    assert (info.kind, info.method, len(info.hint)) == ("blake3", "key", 16)
    doc = json.loads(VALID)
    doc["dsseEnvelope"]["signatures"].append(doc["dsseEnvelope"]["signatures"][0])
    assert "2 signatures" in bundle_problem(json.dumps(doc).encode())
    assert "larger" not in (bundle_problem(b"[" * 100_000) or "")
    with pytest.raises(IntegrityError, match="more than"):
        parse_bundle(VALID, max_size=10)


# -- size bounds ---------------------------------------------------------------------------------------------
def test_bundle_bound_holds_for_the_worst_paths():
    from aim_cli.format import manifest as mf

    names = ["\u00e9" * 120 + f"/{i}" for i in range(50)] + ["\U0001f600" * 60 + f"{i}" for i in range(50)] + ["a"]
    files = [mf.FileEntry(n, 0, 0o644, "0" * 64, []) for n in names]
    m = mf.Manifest(1, "m", "v1", "2026-01-01T00:00:00Z", "t", "", 0, files)
    key = ec.generate_private_key(ec.SECP521R1())
    for algorithm in ("blake3", "blake2"):
        digests = {f.path: ("0" * ALGORITHMS[algorithm]) for f in files}
        bundle = sign_payload(key, payload_bytes(build_statement("m", digests, algorithm)))
        assert len(bundle) - BUNDLE_OVERHEAD < max_bundle_bytes(m) - BUNDLE_OVERHEAD


@LOCAL_ONLY
def test_a_version_of_8000_files_has_a_bundle_over_1_mib_that_verifies(repo):
    import blake3

    from aim_cli.format import manifest as mf

    data = b"one chunk"
    digest = blake3.blake3(data).hexdigest()
    repo.repository.put_blob(digest, data)
    files = [mf.FileEntry(f"f{i:05d}.bin", len(data), 0o644, digest, [(digest, len(data))]) for i in range(8000)]
    repo.repository.commit(mf.Manifest(mf.FORMAT, "m", "v1", "2026-01-01T00:00:00Z", "t", "", 8000 * len(data), files))
    ref = repo.repository.get_version("m", "v1")
    key = ec.generate_private_key(ec.SECP256R1())
    hint = sign_version(repo.repository, ref, key).hint
    assert len(read_bundle(repo.repository, ref, hint)) > 1024 * 1024
    assert verify_version_signature(repo.repository, ref, key.public_key()).files == 8000


@settings(max_examples=300, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=8),
        lambda c: (
            st.lists(c, max_size=3)
            | st.dictionaries(
                st.sampled_from(
                    [
                        "_type",
                        "subject",
                        "predicateType",
                        "predicate",
                        "serialization",
                        "resources",
                        "name",
                        "digest",
                        "algorithm",
                        "method",
                        "hash_type",
                        "ignore_paths",
                        "sha256",
                    ]
                ),
                c,
                max_size=5,
            )
        ),
        max_leaves=25,
    )
)
def test_any_signed_payload_parses_or_raises_integrity_error(doc):
    """A validly signed envelope around any JSON: the statement parser answers or refuses, never crashes."""
    try:
        statement = parse_statement(json.dumps(doc).encode())
    except IntegrityError:
        return
    assert statement.kind in ALGORITHMS


def test_local_digests_skip_ignored_directories(tmp_path):
    write_file(tmp_path / "d" / ".git" / "objects" / "x", b"history")
    write_file(tmp_path / ".git" / "HEAD", b"ref")
    write_file(tmp_path / "d" / "w.bin", b"w")
    assert set(local_digests(tmp_path, "sha256", DEFAULT_IGNORE_PATHS)) == {"d/.git/objects/x", "d/w.bin"}
