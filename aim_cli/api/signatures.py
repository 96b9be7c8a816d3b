"""Signatures of versions: sign, verify, export, list."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aim_cli.api.common import ConfigArg, PathArg, open_repository, resolve
from aim_cli.errors import UsageError

if TYPE_CHECKING:
    from aim_cli.progress import Progress
    from aim_cli.signing.bundle import SignatureInfo
    from aim_cli.signing.sign import SignResult
    from aim_cli.signing.verify import VerifyResult


# -- signatures (aim_cli/signing/) ---------------------------------------------------------
@dataclass(frozen=True)
class ExportResult:
    model: str
    tag: str
    hint: str
    output: str
    bytes: int


def sign_version(
    repo: str,
    model: str,
    *,
    tag: str,
    key: PathArg | None = None,
    password: str | None = None,
    sha256: bool = False,
    certificate: PathArg | None = None,
    certificate_chain: Sequence[PathArg] = (),
    import_bundle: PathArg | None = None,
    jobs: int | None = None,
    config: ConfigArg = None,
    progress: Progress | None = None,
) -> SignResult:
    """Sign ``model:tag`` with the EC private key ``key`` (PEM; ``password`` if encrypted) and store
    the bundle: an ``aim_cli.signing.sign.SignResult`` (``created`` False: already signed by that key).
    BLAKE3 (default) reads only the manifest; ``sha256`` streams the verified blobs.
    ``certificate`` (+ ``certificate_chain``): model_signing's certificate method.
    ``import_bundle``: attach a bundle made elsewhere instead, after checking its files.
    ``progress`` sees the bytes ``sha256`` hashes."""
    from aim_cli.signing import sign
    from aim_cli.signing.bundle import max_bundle_bytes
    from aim_cli.signing.certificates import load_certificates
    from aim_cli.signing.files import read_user_file
    from aim_cli.signing.keys import load_private_key

    repository = open_repository(repo, config=config, jobs=jobs)
    ref = repository.get_version(model, tag)
    if import_bundle is not None:
        data = read_user_file(import_bundle, "bundle", max_bundle_bytes(ref.manifest))
        return sign.import_bundle(repository, ref, data)
    if key is None:
        raise UsageError("no signing key", "pass --key KEY.pem (or --import BUNDLE)")
    private_key = load_private_key(read_user_file(key, "key"), password, os.fspath(key))
    certificates = load_certificates(private_key, certificate, certificate_chain) if certificate else ()
    kind = "sha256" if sha256 else "blake3"
    return sign.sign_version(repository, ref, private_key, kind=kind, certificates=certificates, progress=progress)


def verify_signature(
    repo: str,
    model: str,
    *,
    tag: str,
    public_key: PathArg | None = None,
    certificate_chain: Sequence[PathArg] = (),
    local: PathArg | None = None,
    jobs: int | None = None,
    config: ConfigArg = None,
) -> VerifyResult:
    """A signature by ``public_key`` (PEM), or by a certificate that ``certificate_chain`` (trust
    roots) vouches for, covering exactly the version's files and digests (or those of the
    directory ``local``): an ``aim_cli.signing.verify.VerifyResult``; IntegrityError otherwise."""
    from aim_cli.signing.certificates import load_trust_roots
    from aim_cli.signing.files import read_user_file
    from aim_cli.signing.keys import load_public_key
    from aim_cli.signing.verify import verify_version_certificates, verify_version_signature

    repository = open_repository(repo, config=config, jobs=jobs)
    ref = resolve(repository, model, tag, None)  # a tag, or an alias
    if public_key is not None:
        key = load_public_key(read_user_file(public_key, "public key"), os.fspath(public_key))
        return verify_version_signature(repository, ref, key, local=local)
    if certificate_chain:
        roots = load_trust_roots(certificate_chain)
        return verify_version_certificates(repository, ref, roots, local=local)
    raise UsageError("no key to verify with", "pass --public-key KEY.pub or --certificate-chain ROOTS.pem")


def export_signature(
    repo: str,
    model: str,
    output: PathArg,
    *,
    tag: str,
    sha256: bool = False,
    signer: str | None = None,
    config: ConfigArg = None,
) -> ExportResult:
    """Write a stored bundle of ``model:tag`` to ``output`` for the upstream tools: the
    ``signer``'s (16 hex; the only one when None) of the BLAKE3 or the ``sha256`` kind."""
    from aim_cli.signing.bundle import max_bundle_bytes, parse_bundle
    from aim_cli.signing.files import write_new_file
    from aim_cli.signing.verify import choose_signature, read_bundle

    repository = open_repository(repo, config=config)
    ref = resolve(repository, model, tag, None)  # a tag, or an alias: then its tag
    tag = ref.manifest.tag
    hint = choose_signature(
        repository.list_signatures(model, tag), "sha256" if sha256 else "blake3", signer, f"{model}:{tag}"
    )
    data = read_bundle(repository, ref, hint)
    parse_bundle(data, max_size=max_bundle_bytes(ref.manifest))
    write_new_file(output, data)
    return ExportResult(model, tag, hint, os.fspath(output), len(data))


def list_signatures(repo: str, model: str, *, tag: str, config: ConfigArg = None) -> list[SignatureInfo]:
    """The version's stored signatures: ``aim_cli.signing.bundle.SignatureInfo`` (hint, kind, method)."""
    from aim_cli.signing.verify import signatures_of

    repository = open_repository(repo, config=config)
    return signatures_of(repository, resolve(repository, model, tag, None))
