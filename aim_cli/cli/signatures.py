"""The signature commands (aim_cli/signing/): ``model sign``, ``model export-signature``, and the
signature check of ``model verify --public-key/--certificate-chain`` (audit.py calls it)."""

from __future__ import annotations

import os
import sys
from dataclasses import asdict

import click

from aim_cli.cli import completion
from aim_cli.cli.options import api, config, jobs_option, json_option, quiet_option
from aim_cli.cli.render import out, out_json
from aim_cli.errors import UsageError


def verify_signature(
    repo_name, model_name, tag, digest, local_dir, public_key, trust_roots, patterns, jobs, as_json
) -> None:
    """`model verify` with --public-key or --certificate-chain: check the signature of one version
    (named by --tag), against its manifest or the files of --local DIR."""
    if not tag or digest or patterns:
        raise UsageError(
            "a signature check takes --tag and no --digest, --include or --exclude",
            "name the version with --tag; a signature covers all its files",
        )
    r = api().verify_signature(
        repo_name,
        model_name,
        tag=tag,
        public_key=public_key,
        certificate_chain=trust_roots,
        local=local_dir,
        jobs=jobs,
        config=config(),
    )
    if as_json:
        out_json(asdict(r) | {"ok": True})
        return
    what = local_dir if local_dir else f"{r.model}:{r.tag}"
    out(f"{what}: signature {r.hint} ({r.kind}, {r.method} method) verified; it covers exactly its {r.files} files")


@click.command("sign")
@click.argument("repo_name", metavar="REPO", shell_complete=completion.repos)
@click.argument("model_name", metavar="MODEL", shell_complete=completion.models)
@click.option("--tag", "-t", required=True, help="Version to sign.", shell_complete=completion.tags)
@click.option(
    "--key", metavar="KEY.pem", shell_complete=completion.files, help="EC private key (PEM; P-256, P-384 or P-521)."
)
@click.option("--password-env", metavar="VAR", help="Environment variable holding the key's password (else a prompt).")
@click.option(
    "--sha256",
    is_flag=True,
    help="Sign SHA-256 file digests (streams the verified blobs), which `model_signing verify` checks as is.",
)
@click.option(
    "--certificate",
    metavar="CERT.pem",
    shell_complete=completion.files,
    help="Signing certificate of --key (model_signing's certificate method).",
)
@click.option(
    "--certificate-chain",
    multiple=True,
    metavar="CHAIN.pem",
    shell_complete=completion.files,
    help="Its chain (repeatable).",
)
@click.option(
    "--import",
    "import_path",
    metavar="BUNDLE",
    help="Attach a bundle made elsewhere (e.g. `model_signing sign`) once its files match the version's.",
)
@jobs_option
@quiet_option
@json_option
def model_sign(
    repo_name,
    model_name,
    tag,
    key,
    password_env,
    sha256,
    certificate,
    certificate_chain,
    import_path,
    jobs,
    quiet,
    as_json,
):
    """Sign a version (OpenSSF model-signing format) from its manifest: no file is read (--sha256
    reads every blob)."""
    from aim_cli.progress import make_progress

    if import_path and (key or sha256 or certificate or certificate_chain):
        raise UsageError("--import takes no key options", "the bundle carries its own signature")
    if not import_path and not key:
        raise UsageError("no signing key", "pass --key KEY.pem (or --import BUNDLE)")
    if certificate_chain and not certificate:
        raise UsageError("--certificate-chain needs --certificate", "pass the signing certificate too")
    r = api().sign_version(
        repo_name,
        model_name,
        tag=tag,
        key=key,
        password=key_password(key, password_env),
        sha256=sha256,
        certificate=certificate,
        certificate_chain=certificate_chain,
        import_bundle=import_path,
        jobs=jobs,
        config=config(),
        progress=make_progress(quiet or as_json),
    )
    if as_json:
        out_json(asdict(r))
        return
    verb = ("imported" if import_path else "signed") if r.created else "already signed"
    out(f"{verb} {r.model}:{r.tag}: signer {r.hint} ({r.kind}, {r.method} method)")


def key_password(key: str | None, password_env: str | None) -> str | None:
    """--password-env's variable, else a prompt for an encrypted key (a script gets an error)."""
    if password_env:
        if password_env not in os.environ:
            raise UsageError(f"environment variable {password_env} is not set", "export it with the key's password")
        return os.environ[password_env]
    if not key:
        return None
    from aim_cli.signing.files import read_user_file
    from aim_cli.signing.keys import is_encrypted

    if not is_encrypted(read_user_file(key, "key")):
        return None
    if not sys.stdin.isatty():
        raise UsageError(f"{key} is encrypted", "pass --password-env VAR naming a variable that holds its password")
    return click.prompt(f"password for {key}", hide_input=True)


@click.command("export-signature")
@click.argument("repo_name", metavar="REPO", shell_complete=completion.repos)
@click.argument("model_name", metavar="MODEL", shell_complete=completion.models)
@click.option("--tag", "-t", required=True, help="Version whose signature to export.", shell_complete=completion.tags)
@click.option("--sha256", is_flag=True, help="The SHA-256 kind (checked by `model_signing verify`).")
@click.option("--signer", metavar="HINT", help="Signer (16 hex, as `model info` lists); needed when several signed.")
@click.option(
    "--output",
    "-o",
    required=True,
    metavar="FILE",
    shell_complete=completion.files,
    help="Where to write the Sigstore bundle.",
)
@json_option
def model_export_signature(repo_name, model_name, tag, sha256, signer, output, as_json):
    """Write a stored signature for the upstream tools (`model_signing verify key --signature FILE`)."""
    r = api().export_signature(repo_name, model_name, output, tag=tag, sha256=sha256, signer=signer, config=config())
    if as_json:
        out_json(asdict(r))
        return
    out(f"wrote signature {r.hint} of {r.model}:{r.tag} to {r.output} ({r.bytes} bytes)")
