"""Checking signatures: a bundle against a key, its resources against a version's files (or a
local directory's), and a version's stored signatures read, listed, chosen and verified by a
public key or through trusted certificate roots."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from cryptography import x509

from aim_cli.errors import IntegrityError, NotFoundError, UsageError
from aim_cli.signing.bundle import Bundle, SignatureInfo, describe, leaf_key, max_bundle_bytes, parse_bundle
from aim_cli.signing.certificates import check_chain
from aim_cli.signing.keys import SIGNER_HEX, ecdsa_verify, key_hint, stored_hint
from aim_cli.signing.statement import BLAKE3, Statement, local_digests, parse_statement, stored_digests, upstream_order


@dataclass(frozen=True)
class VerifyResult:
    model: str
    tag: str
    hint: str
    kind: str
    method: str
    files: int
    checked: str  # "repository" or the local directory


def verify_with_key(bundle: Bundle, public_key) -> Statement:
    """The statement, if ``public_key`` made the bundle's signature: else IntegrityError
    naming the check (key hint, then the ECDSA signature over the payload)."""
    if bundle.method == "key" and bundle.key_hint is not None and bundle.key_hint != key_hint(public_key):
        raise IntegrityError(
            "the signature was made by another key (its key hint differs)",
            "verify with the public key of the signer (`model info` lists signer hints)",
        )
    if bundle.method != "key" and leaf_key(bundle) != public_key:
        raise IntegrityError("the signature's certificate is for another key", "verify with the signer's key")
    ecdsa_verify(public_key, bundle.signature, bundle.payload)
    return parse_statement(bundle.payload)


def check_resources(statement: Statement, actual: Mapping[str, str], what: str) -> None:
    """``actual`` (path -> digest of the statement's kind, ignore paths already left out) must
    be exactly the signed resources: IntegrityError naming the first difference."""
    signed = {p: d for p, (_, d) in statement.resources.items()}
    missing = sorted(set(signed) - set(actual), key=upstream_order)
    extra = sorted(set(actual) - set(signed), key=upstream_order)
    if missing or extra:
        first = ", ".join(
            ([f"not signed: {extra[0]!r}"] if extra else [])
            + ([f"signed but absent: {missing[0]!r}"] if missing else [])
        )
        raise IntegrityError(
            f"the signature covers other files than {what} ({len(extra)} unsigned, "
            f"{len(missing)} signed but absent; {first})",
            "the signature is for another version or directory",
        )
    for path in sorted(signed, key=upstream_order):
        if signed[path] != actual[path]:
            raise IntegrityError(
                f"{statement.kind} digest of {path!r} in {what} differs from the signed one",
                "the file was changed or the signature is for other content",
            )


# -- a version's stored signatures ----------------------------------------------------------------------
def read_bundle(repository, ref, hint: str) -> bytes:
    """One stored bundle, bounded by what a signature of this version can take."""
    m = ref.manifest
    return repository.get_signature(m.model, m.tag, hint, max_size=max_bundle_bytes(m))


def stored_bundle(repository, ref, hint: str) -> Bundle:
    """One stored bundle, read (``read_bundle``) and parsed."""
    return parse_bundle(read_bundle(repository, ref, hint), max_size=max_bundle_bytes(ref.manifest))


def expected_digests(repository, ref, statement: Statement) -> dict[str, str]:
    """The version's files and digests as the statement's kind and ignore paths see them."""
    return stored_digests(repository, ref.manifest, statement.kind, statement.ignore_paths)


def signatures_of(repository, ref) -> list[SignatureInfo]:
    """What each stored signature of the version is (a damaged one: kind and method "damaged")."""
    m = ref.manifest
    out = []
    for hint in repository.list_signatures(m.model, m.tag):
        try:
            info = describe(read_bundle(repository, ref, hint))
            out.append(SignatureInfo(hint, info.kind, info.method, info.signer))
        except IntegrityError:
            out.append(SignatureInfo(hint, "damaged", "damaged", None))
    return out


def choose_signature(hints: Sequence[str], kind: str, signer: str | None, where: str) -> str:
    """The stored name ``export-signature`` writes: the signer's signature of ``kind``, or the
    only one of that kind."""
    if signer is not None:
        wanted = signer if signer in hints and "." in signer else stored_hint(signer, kind)
        if wanted not in hints:
            raise _not_signed(f"no {kind} signature by signer {signer!r} of {where}", where)
        return wanted
    of_kind = [h for h in hints if (h.rpartition(".")[2] if "." in h else BLAKE3) == kind]
    if len(of_kind) == 1:
        return of_kind[0]
    if not of_kind:
        raise _not_signed(f"no {kind} signature of {where}", where)
    raise UsageError(f"{len(of_kind)} signers signed {where} ({', '.join(of_kind)})", "pick one with --signer HINT")


def _not_signed(message: str, where: str):
    return NotFoundError(message, f"sign {where} with `aim_cli model sign` (`model info` lists its signatures)")


# -- verifying a version ----------------------------------------------------------------------------------
def _by_signer(hints: Iterable[str], signer: str) -> list[str]:
    """This signer's stored signatures, BLAKE3 first (it needs no blob read)."""
    mine = [h for h in hints if h == signer or h.startswith(signer + ".")]
    return sorted(mine, key=lambda h: (h != signer, h))


def verify_version_signature(repository, ref, public_key, *, local: str | os.PathLike | None = None) -> VerifyResult:
    """A signature by ``public_key`` that covers exactly the version's files and digests (or
    those of the directory ``local``); IntegrityError naming the failed check otherwise. Each
    of the signer's signatures is tried, BLAKE3 first; the first failure is reported."""
    m = ref.manifest
    signer = key_hint(public_key)[:SIGNER_HEX]
    hints = _by_signer(repository.list_signatures(m.model, m.tag), signer)
    if not hints:
        raise IntegrityError(
            f"no signature of {m.model}:{m.tag} by this key (signer {signer})",
            "sign the version with the matching private key, or pass the signer's public key",
        )
    first_error: IntegrityError | None = None
    for hint in hints:
        try:
            return _verify_one(repository, ref, hint, stored_bundle(repository, ref, hint), public_key, local)
        except IntegrityError as e:
            first_error = first_error or e
    assert first_error is not None  # hints is not empty: its absence was refused above
    raise first_error


def _verify_one(repository, ref, hint: str, bundle: Bundle, public_key, local) -> VerifyResult:
    m = ref.manifest
    statement = verify_with_key(bundle, public_key)
    if local is None:
        actual, what = expected_digests(repository, ref, statement), f"{m.model}:{m.tag}"
    else:
        actual, what = local_digests(local, statement.kind, statement.ignore_paths), os.fspath(local)
    check_resources(statement, actual, what)
    return VerifyResult(
        m.model,
        m.tag,
        hint,
        statement.kind,
        bundle.method,
        len(actual),
        "repository" if local is None else os.fspath(local),
    )


def verify_version_certificates(
    repository, ref, roots: Sequence[x509.Certificate], *, local: str | os.PathLike | None = None
) -> VerifyResult:
    """Like ``verify_version_signature``, for certificate signatures trusted through ``roots``."""
    m = ref.manifest
    first_error: IntegrityError | None = None
    for hint in repository.list_signatures(m.model, m.tag):
        try:
            bundle = stored_bundle(repository, ref, hint)
            if bundle.method != "certificate":
                continue
            return _verify_one(repository, ref, hint, bundle, check_chain(bundle.certificates, roots), local)
        except IntegrityError as e:
            first_error = first_error or e
    raise first_error or IntegrityError(
        f"no certificate signature of {m.model}:{m.tag}", "sign it with --certificate and --certificate-chain"
    )
