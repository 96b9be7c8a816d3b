"""Signing a version: a bundle made with a private key (and certificate chain) from the version's
digests, or one made elsewhere (model_signing on the pushed directory) imported once it is
checked against the version; either stored by exclusive create under the signer's name. A
signature binds file paths and digests: not the tag, not the manifest digest, not modes."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from aim_cli.errors import ConflictError, IntegrityError
from aim_cli.format.layout import signature_key
from aim_cli.progress import Progress
from aim_cli.signing.bundle import leaf_key, max_bundle_bytes, parse_bundle, sign_payload, signer_of
from aim_cli.signing.keys import SIGNER_HEX, ecdsa_verify, key_hint, stored_hint
from aim_cli.signing.statement import BLAKE3, build_statement, parse_statement, payload_bytes, stored_digests
from aim_cli.signing.verify import check_resources, expected_digests, read_bundle, stored_bundle, verify_with_key


@dataclass(frozen=True)
class SignResult:
    model: str
    tag: str
    hint: str  # the stored name (`--signer` of export-signature)
    kind: str
    method: str
    created: bool  # False: this signer's signature of this kind was already there


def sign_version(
    repository,
    ref,
    private_key: ec.EllipticCurvePrivateKey,
    *,
    kind: str = BLAKE3,
    certificates: Sequence[x509.Certificate] = (),
    progress: Progress | None = None,
) -> SignResult:
    """Sign the version ``ref`` and store the bundle (exclusive create). BLAKE3 reads no blob;
    SHA-256 streams the verified blobs (``progress`` sees their bytes)."""
    m = ref.manifest
    digests = stored_digests(repository, m, kind, progress=progress)
    bundle = sign_payload(private_key, payload_bytes(build_statement(m.model, digests, kind)), certificates)
    hint = stored_hint(key_hint(private_key.public_key())[:SIGNER_HEX], kind)
    created = repository.put_signature(m.model, m.tag, hint, bundle)
    if not created:
        _check_already_signed(repository, ref, hint, private_key.public_key(), digests)
    return SignResult(m.model, m.tag, hint, kind, "certificate" if certificates else "key", created)


def _check_already_signed(repository, ref, hint: str, public_key, digests: Mapping[str, str]) -> None:
    """ "Already signed" only if the stored bundle under this signer's name is a valid signature
    by this key of these files: a bundle imported under a forged key hint, or a damaged one,
    must not pass for the signer's own."""
    m = ref.manifest
    try:
        statement = verify_with_key(stored_bundle(repository, ref, hint), public_key)
        check_resources(statement, digests, f"{m.model}:{m.tag}")
    except IntegrityError as e:
        key = signature_key(m.model, m.tag, hint)
        raise IntegrityError(
            f"the signature stored as {hint} does not verify with this key ({e.message})",
            f"remove {key} from the storage, then sign again",
        ) from None


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
        ecdsa_verify(leaf_key(bundle), bundle.signature, bundle.payload)
    check_resources(statement, expected_digests(repository, ref, statement), f"{m.model}:{m.tag}")
    signer = signer_of(bundle) or hashlib.sha256(bundle.signature).hexdigest()[:SIGNER_HEX]
    hint = stored_hint(signer, statement.kind)
    created = repository.put_signature(m.model, m.tag, hint, data)
    if not created and read_bundle(repository, ref, hint) != data:
        raise ConflictError(
            f"another bundle of signer {hint} is stored for {m.model}:{m.tag}",
            f"compare it (`aim_cli model export-signature --signer {hint}`); remove "
            f"{signature_key(m.model, m.tag, hint)} from the storage to replace it",
        )
    return SignResult(m.model, m.tag, hint, statement.kind, bundle.method, created)
