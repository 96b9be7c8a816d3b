"""The aim_cli command line: parse, call one function of aim_cli.api, render. Nothing else.

Results go to stdout (``--json`` where a script may read them); progress and errors to stderr.
Every AimError becomes one line, ``error: <what went wrong>; <what to do>``, and its exit code
(DESIGN.md section 7); ``-v`` adds the traceback. Heavy modules (boto3, pyfastcdc, rich) are
imported inside the commands that need them: ``aim_cli --help`` stays fast.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from dataclasses import asdict

import click

from aim_cli import __version__
from aim_cli.errors import AimError, IntegrityError, UsageError
from aim_cli.util.sizes import parse_size

DEFAULT_JOBS = 8  # mirrors api.DEFAULT_JOBS without importing the api at start-up
_state = {"verbose": False}


def _size(n: int) -> str:
    import humanize

    return humanize.naturalsize(n, binary=True)


def _out(text: str) -> None:
    click.echo(text)


def _json(obj) -> None:
    click.echo(json.dumps(obj, indent=2, default=str))


def _api():
    from aim_cli import api

    return api


def _config():
    return click.get_current_context().find_root().params.get("config_path")


jobs_option = click.option("--jobs", "-j", type=click.IntRange(1, 256), default=DEFAULT_JOBS, show_default=True,
                           help="Parallel transfers.")
quiet_option = click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
json_option = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", type=click.Path(dir_okay=False), metavar="PATH",
              help="model_repos.yaml to use (default: $AIM_CONFIG, else the first one in this directory or its parents).")
@click.option("-v", "--verbose", is_flag=True, help="Show tracebacks on errors.")
@click.version_option(__version__, prog_name="aim_cli")
def cli(config_path, verbose):
    """aim_cli: AI model weights on your own storage (local/NFS directory or S3),
    deduplicated by content-defined chunks and verified by BLAKE3 end to end."""
    _state["verbose"] = verbose


# -- info -------------------------------------------------------------------------------------------
@cli.command()
@json_option
def info(as_json):
    """Show the version, the config file in use and its repositories."""
    r = _api().info(config=_config())
    if as_json:
        _json({"version": r.version, "config": r.config, "repos": [asdict(e) for e in r.repos]})
        return
    _out(f"aim_cli {r.version}")
    _out(f"config: {r.config or 'none found (create one with `aim_cli repo create`)'}")
    _out(f"repositories: {len(r.repos)}")
    for e in r.repos:
        _out(f"  {e.name}  {e.type}  {e.path}")


# -- repo -------------------------------------------------------------------------------------------
@cli.group()
def repo():
    """Create, list and delete repositories in model_repos.yaml."""


def _chunk_size(text: str | None) -> int | None:
    # 0 would read as "not given" in create_repo and silently pick the default: refuse it here.
    return None if text is None else parse_size(text, option="--chunk-size", minimum=1)


@repo.command("create")
@click.argument("name")
@click.option("--type", "repo_type", type=click.Choice(["local", "s3"]), required=True, help="Storage type.")
@click.option("--path", required=True, help="Directory (local/NFS) or s3://bucket/prefix.")
@click.option("--region", help="S3 region.")
@click.option("--endpoint-url", help="S3-compatible endpoint (MinIO, Ceph, R2).")
@click.option("--profile", help="AWS profile for credentials.")
@click.option("--addressing-style", type=click.Choice(["auto", "virtual", "path"]), help="S3 addressing style.")
@click.option("--chunk-size", metavar="SIZE", help="Average chunk size of a new repository (default 1MiB).")
@click.option("--format", "storage_format", type=click.Choice(["1", "2"]),
              help="Storage format of a new repository: 2 (default) cuts safetensors at tensor boundaries and "
                   "compresses; 1 stores raw chunks, readable by older aim_cli.")
@click.option("--no-check", is_flag=True, help="Record the entry without reaching the storage.")
@json_option
def repo_create(name, repo_type, path, region, endpoint_url, profile, addressing_style, chunk_size, storage_format,
                no_check, as_json):
    """Add repository NAME to model_repos.yaml and initialise its storage."""
    r = _api().create_repo(
        name, repo_type, path, region=region, endpoint_url=endpoint_url, profile=profile,
        addressing_style=addressing_style, chunk_size=_chunk_size(chunk_size),
        storage_format=None if storage_format is None else int(storage_format), check=not no_check,
        config=_config(),
    )
    if as_json:
        _json(asdict(r.entry) | {"initialised": r.initialised, "format": r.format})
        return
    state = f"initialised (format {r.format})" if r.initialised else "not checked (--no-check); the first push initialises it"
    _out(f"created repository {name!r} ({r.entry.type}, {r.entry.path}): {state}")


@repo.command("list")
@json_option
def repo_list(as_json):
    """List the repositories of model_repos.yaml."""
    cfg = _api().get_config(_config())
    if as_json:
        _json([asdict(r) for r in cfg.repos.values()])
        return
    if not cfg.repos:
        _out(f"no repositories in {cfg.path}")
        return
    width = max(len(n) for n in cfg.repos)
    for r in cfg.repos.values():
        extra = f"  region={r.region}" if r.region else ""
        extra += f"  endpoint={r.endpoint_url}" if r.endpoint_url else ""
        _out(f"{r.name:<{width}}  {r.type:<5}  {r.path}{extra}")


@repo.command("delete")
@click.argument("name")
@json_option
def repo_delete(name, as_json):
    """Remove repository NAME from model_repos.yaml (the stored data is not touched)."""
    entry = _api().delete_repo(name, config=_config())
    if as_json:
        _json(asdict(entry))
        return
    _out(f"removed repository {name!r} from the config; the data at {entry.path} is untouched")


# -- model ------------------------------------------------------------------------------------------
@cli.group()
def model():
    """Push, pull, list and delete models and their versions."""


@model.command("push")
@click.argument("repo_name", metavar="REPO")
@click.argument("model_name", metavar="MODEL")
@click.argument("directory", metavar="DIR")
@click.option("--tag", "-t", required=True, help="Version tag (immutable).")
@click.option("--message", "-m", default="", help="A note stored with the version.")
@click.option("--follow-symlinks", is_flag=True, help="Store the content of symlinks to files (e.g. a Hugging Face snapshot).")
@jobs_option
@quiet_option
@json_option
def model_push(repo_name, model_name, directory, tag, message, follow_symlinks, jobs, quiet, as_json):
    """Push directory DIR as version --tag of MODEL (creating the model if needed)."""
    from aim_cli.progress import make_progress

    r = _api().push(repo_name, model_name, directory, tag=tag, message=message, jobs=jobs,
                    follow_symlinks=follow_symlinks, config=_config(), progress=make_progress(quiet or as_json))
    if r.skipped:
        from aim_cli.util.fs import display_path

        click.echo(f"warning: skipped {', '.join(map(display_path, r.skipped))}: names starting with .aim at the "
                   f"top of DIR are aim_cli's own (a pull's working files); rename them to push them", err=True)
    if as_json:
        _json(asdict(r) | {"dedup_ratio": r.dedup_ratio})
        return
    if r.already_pushed:
        _out(f"already pushed {r.model}:{r.tag} with identical content, nothing written; digest {r.digest}")
        return
    _out(f"pushed {r.model}:{r.tag}: {r.files} files, {_size(r.total_size)}, {_size(r.new_bytes)} new "
         f"({r.dedup_ratio:.1%} deduplicated), {_size(r.new_stored_bytes)} stored, digest {r.digest}, {r.elapsed:.2f}s")


def patterns_option(f):
    """--include/--exclude PATTERN, repeatable (aim_cli/patterns.py: huggingface_hub's semantics)."""
    f = click.option("--exclude", "exclude", multiple=True, metavar="PATTERN",
                     help="Leave out the files matching PATTERN (repeatable; as --include).")(f)
    return click.option("--include", "include", multiple=True, metavar="PATTERN",
                        help="Only the files matching PATTERN (repeatable): fnmatch on the path, '*' also "
                             "matches '/', 'dir/' is everything under dir.")(f)


@model.command("pull")
@click.argument("repo_name", metavar="REPO")
@click.argument("model_name", metavar="MODEL")
@click.argument("dest", metavar="DEST")
@click.option("--tag", "-t", help="Version to pull (default: the newest).")
@click.option("--digest", help="Refuse unless the version's manifest digest is this (64 hex).")
@click.option("--reference", "references", multiple=True, metavar="DIR",
              help="Local directory to take verified chunks from (repeatable).")
@click.option("--cache-dir", envvar="AIM_CACHE_DIR", metavar="DIR", help="Shared chunk cache (off by default).")
@patterns_option
@click.option("--delete", is_flag=True,
              help="Remove regular files of DEST (within the patterns) that the version does not hold.")
@click.option("--dry-run", is_flag=True, help="Print the plan; create or change nothing in DEST.")
@click.option("--require-signature", metavar="KEY.pub",
              help="Refuse (exit 5, DEST untouched) unless a signature by this EC public key covers the version.")
@jobs_option
@quiet_option
@json_option
def model_pull(repo_name, model_name, dest, tag, digest, references, cache_dir, include, exclude, delete, dry_run,
               require_signature, jobs, quiet, as_json):
    """Pull a version of MODEL into DEST, verified; rerun to resume."""
    from aim_cli.progress import make_progress

    r = _api().pull(repo_name, model_name, dest, tag=tag, digest=digest, jobs=jobs, references=references,
                    cache_dir=cache_dir or None, config=_config(), progress=make_progress(quiet or as_json),
                    include=include, exclude=exclude, delete=delete, dry_run=dry_run,
                    require_signature=require_signature)
    if dry_run:
        _show_pull_plan(r, dest, as_json)
        return
    if as_json:
        _json(asdict(r) | {"dest": os.path.abspath(dest)})
        return
    from aim_cli.util.fs import display_path

    newest = " (newest)" if r.newest else ""
    cached = f", {_size(r.cached_bytes)} from cache" if r.cached_bytes else ""
    deleted = f"; deleted {len(r.deleted)} files the version does not hold" if delete else ""
    _out(f"pulled {r.model}:{r.tag}{newest} into {display_path(dest)}: {r.files} files, {_size(r.total_size)}; "
         f"fetched {_size(r.fetched_bytes)} (stored size; {_size(r.fetched_raw_bytes)} of chunks), "
         f"reused {_size(r.reused_bytes)}{cached}{deleted}; {r.elapsed:.2f}s")


def _show_pull_plan(plan, dest: str, as_json: bool) -> None:
    """`model pull --dry-run`: one line per file (its action), one per file --delete would
    remove, then the totals."""
    doc = plan.to_json()
    if as_json:
        _json(doc)
        return
    from aim_cli.util.fs import display_path

    for f in plan.files:
        _out(f"{f.action:<6}  {_size(f.size):>11}  {display_path(f.path)}")
    for path in plan.delete:
        _out(f"{'delete':<6}  {'':>11}  {display_path(path)}")
    t = doc["totals"]
    newest = " (newest)" if plan.newest else ""
    space = "" if t["space_needed"] <= t["space_available"] else " (NOT ENOUGH: the pull would stop, exit 6)"
    deletes = f"; delete {t['delete_files']} files ({_size(t['delete_bytes'])})" if plan.delete else ""
    _out(f"dry run: {plan.model}:{plan.tag}{newest} into {display_path(dest)}: {t['files']} files, "
         f"{_size(t['size'])}; keep {t['keep_files']}, write {t['local_files']} from local files, "
         f"fetch {t['fetch_files']}; fetch {_size(t['fetch_raw_bytes'])} of chunks (raw size; stored size "
         f"known only after fetching), reuse {_size(t['reuse_bytes'])}; space needed "
         f"{_size(t['space_needed'])} of {_size(t['space_available'])} free{space}{deletes}; nothing changed")


@model.command("list")
@click.argument("repo_name", metavar="REPO")
@json_option
def model_list(repo_name, as_json):
    """List the models of REPO."""
    models = _api().list_models(repo_name, config=_config())
    if as_json:
        _json(models)
    elif not models:
        _out(f"no models in {repo_name!r}")
    else:
        for name in models:
            _out(name)


@model.command("versions")
@click.argument("repo_name", metavar="REPO")
@click.argument("model_name", metavar="MODEL")
@json_option
def model_versions(repo_name, model_name, as_json):
    """List the versions of MODEL, oldest first: tag, created, size, files, digest, message.

    Read from each version's small summary, not from its manifest."""
    from aim_cli.util.quoting import printable

    versions = _api().list_versions(repo_name, model_name, config=_config())
    if as_json:
        _json([asdict(v) for v in versions])
        return
    # The message came from storage: one printable line, whatever it holds.
    rows = [(v.tag, v.created_at[:19].replace("T", " "), _size(v.total_size),
             "-" if v.stored_size is None else _size(v.stored_size), f"{v.files} files", v.digest[:12],
             printable(v.message)) for v in versions]
    header = ("TAG", "CREATED (UTC)", "SIZE", "STORED", "FILES", "DIGEST", "MESSAGE")
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    for row in (header, *rows):
        _out("  ".join(str(x).ljust(w) for x, w in zip(row, widths)).rstrip())


@model.command("delete-version")
@click.argument("repo_name", metavar="REPO")
@click.argument("model_name", metavar="MODEL")
@click.option("--tag", "-t", required=True, help="Version to delete.")
@json_option
def model_delete_version(repo_name, model_name, tag, as_json):
    """Delete one version of MODEL (its manifest; shared blobs stay until `repo gc`).

    --tag may also name a stray file that `repo check` reports, exactly as it shows it."""
    r = _api().delete_versions(repo_name, model_name, [tag], config=_config())
    if as_json:
        _json(asdict(r))
        return
    _out(f"deleted {r.model}:{tag}; {_reclaimable(r, repo_name)}")


@model.command("delete")
@click.argument("repo_name", metavar="REPO")
@click.argument("model_name", metavar="MODEL")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@json_option
def model_delete(repo_name, model_name, yes, as_json):
    """Delete MODEL and all its versions."""
    if not yes:
        if not sys.stdin.isatty():
            raise UsageError(f"refusing to delete model {model_name!r} without confirmation",
                             "pass --yes to delete it from a script")
        click.confirm(f"Delete model {model_name!r} and ALL its versions from {repo_name!r}?", abort=True)
    r = _api().delete_versions(repo_name, model_name, config=_config())
    if as_json:
        _json(asdict(r))
        return
    _out(f"deleted model {model_name} ({len(r.tags)} versions); {_reclaimable(r, repo_name)}")


def _reclaimable(r, repo_name: str) -> str:
    return (f"{r.reclaimable_blobs} blobs ({_size(r.reclaimable_stored_bytes)} stored, {_size(r.reclaimable_bytes)} of "
            f"chunks) that no other version uses became reclaimable: `aim_cli repo gc {repo_name}` frees them")


# -- audits: model info/verify, repo check/gc (aim_cli/audit/) ---------------------
@model.command("info")
@click.argument("repo_name", metavar="REPO")
@click.argument("model_name", metavar="MODEL")
@click.option("--tag", "-t", help="Version to show (default: the newest).")
@json_option
def model_info(repo_name, model_name, tag, as_json):
    """Show a version: manifest digest, author, message, each file's size and BLAKE3."""
    v = _api().version_details(repo_name, model_name, tag=tag, config=_config())
    if as_json:
        _json(asdict(v))
        return
    _out(f"{v.model}:{v.tag}")
    _out(f"digest:   {v.digest}")
    from aim_cli.util.quoting import printable

    # Author and message came from storage: escaped (a newline would forge an output line), never cut.
    _out(f"created:  {v.created_at} by {printable(v.created_by, len(v.created_by))}")
    _out(f"message:  {printable(v.message, len(v.message)) or '-'}")
    _out(f"size:     {_size(v.total_size)} ({v.total_size} bytes) in {len(v.files)} files")
    missing = f"; {v.missing_blobs} blobs missing (run `aim_cli repo check`)" if v.missing_blobs else ""
    _out(f"stored:   {_size(v.stored_size)} for {_size(v.distinct_size)} of distinct chunks "
         f"(format {v.format}){missing}")
    for f in v.files:
        _out(f"{_size(f.size):>11}  {f.blake3}  {f.path}")
    for sig in v.signatures:
        _out(f"signed:   by {sig.hint} ({sig.kind}, {sig.method} method)")


@model.command("verify")
@click.argument("repo_name", metavar="REPO")
@click.argument("model_name", metavar="MODEL")
@click.option("--tag", "-t", help="Version to verify (default: the newest).")
@click.option("--digest", help="Refuse unless the version's manifest digest is this (64 hex).")
@click.option("--local", "local_dir", metavar="DIR",
              help="Compare DIR (e.g. a deployment) with the version by file digests, instead of reading blobs.")
@click.option("--public-key", metavar="KEY.pub",
              help="Check a signature by this EC public key (PEM) instead: it must cover exactly the version's "
                   "files and digests (or those of --local DIR).")
@click.option("--certificate-chain", "trust_roots", multiple=True, metavar="ROOTS.pem",
              help="Check a certificate-method signature whose chain leads to these trusted roots (repeatable).")
@patterns_option
@jobs_option
@quiet_option
@json_option
def model_verify(repo_name, model_name, tag, digest, local_dir, public_key, trust_roots, include, exclude, jobs,
                 quiet, as_json):
    """Re-read every blob of a version and check its hash (exit 5 on any problem).
    --include/--exclude select the files --local compares. With --public-key or
    --certificate-chain: check the version's signature instead."""
    from aim_cli.progress import make_progress

    if public_key or trust_roots:
        _verify_signature(repo_name, model_name, tag, digest, local_dir, public_key, trust_roots, include or exclude,
                          jobs, as_json)
        return

    if (include or exclude) and not local_dir:
        raise UsageError("--include and --exclude select the files of --local DIR",
                         "add --local DIR, or drop the patterns to check every blob")
    if local_dir:
        r = _api().verify_local(repo_name, model_name, local_dir, tag=tag, digest=digest, jobs=jobs, config=_config(),
                                include=include, exclude=exclude)
        if as_json:
            _json(asdict(r) | {"ok": r.ok})
        else:
            for kind, paths in (("modified", r.modified), ("missing", r.missing), ("extra", r.extra)):
                for path in paths:
                    _out(f"{kind:<8}  {path}")
            if r.ok:
                _out(f"{local_dir} matches {r.model}:{r.tag} (digest {r.digest}): {r.files} files")
        if not r.ok:
            raise IntegrityError(
                f"{local_dir} differs from {r.model}:{r.tag}: {len(r.modified)} modified, {len(r.missing)} missing, "
                f"{len(r.extra)} extra files", "pull the version into it again to restore it; remove extra files by hand")
        return
    r = _api().verify_version(repo_name, model_name, tag=tag, digest=digest, jobs=jobs, config=_config(),
                              progress=make_progress(quiet or as_json))
    if as_json:
        _json(asdict(r) | {"ok": r.ok})
    else:
        for p in r.problems:
            _out(f"{p.problem:<8}  blob {p.digest} ({p.detail}); files: {', '.join(p.used_by)}")
        if r.ok:
            _out(f"{r.model}:{r.tag} (digest {r.digest}): all {r.blobs} blobs ({_size(r.bytes)}) intact")
    if not r.ok:
        raise IntegrityError(
            f"{len(r.problems)} of {r.blobs} blobs of {r.model}:{r.tag} are missing or corrupt in {repo_name!r}",
            "push a good copy under a new tag to restore missing blobs (delete corrupt ones from storage first), "
            "or delete this version")


def _verify_signature(repo_name, model_name, tag, digest, local_dir, public_key, trust_roots, patterns, jobs,
                      as_json) -> None:
    if not tag or digest or patterns:
        raise UsageError("a signature check takes --tag and no --digest, --include or --exclude",
                         "name the version with --tag; a signature covers all its files")
    r = _api().verify_signature(repo_name, model_name, tag=tag, public_key=public_key, certificate_chain=trust_roots,
                                local=local_dir, jobs=jobs, config=_config())
    if as_json:
        _json(asdict(r) | {"ok": True})
        return
    what = local_dir if local_dir else f"{r.model}:{r.tag}"
    _out(f"{what}: signature {r.hint} ({r.kind}, {r.method} method) verified; it covers exactly its {r.files} files")


@model.command("sign")
@click.argument("repo_name", metavar="REPO")
@click.argument("model_name", metavar="MODEL")
@click.option("--tag", "-t", required=True, help="Version to sign.")
@click.option("--key", metavar="KEY.pem", help="EC private key (PEM; P-256, P-384 or P-521).")
@click.option("--password-env", metavar="VAR", help="Environment variable holding the key's password (else a prompt).")
@click.option("--sha256", is_flag=True,
              help="Sign SHA-256 file digests (streams the verified blobs), which `model_signing verify` checks as is.")
@click.option("--certificate", metavar="CERT.pem", help="Signing certificate of --key (model_signing's certificate method).")
@click.option("--certificate-chain", multiple=True, metavar="CHAIN.pem", help="Its chain (repeatable).")
@click.option("--import", "import_path", metavar="BUNDLE",
              help="Attach a bundle made elsewhere (e.g. `model_signing sign`) once its files match the version's.")
@jobs_option
@json_option
def model_sign(repo_name, model_name, tag, key, password_env, sha256, certificate, certificate_chain, import_path,
               jobs, as_json):
    """Sign a version (OpenSSF model-signing format) from its manifest: no file is read."""
    if import_path and (key or sha256 or certificate or certificate_chain):
        raise UsageError("--import takes no key options", "the bundle carries its own signature")
    if not import_path and not key:
        raise UsageError("no signing key", "pass --key KEY.pem (or --import BUNDLE)")
    if certificate_chain and not certificate:
        raise UsageError("--certificate-chain needs --certificate", "pass the signing certificate too")
    r = _api().sign_version(repo_name, model_name, tag=tag, key=key, password=_key_password(key, password_env),
                            sha256=sha256, certificate=certificate, certificate_chain=certificate_chain,
                            import_bundle=import_path, jobs=jobs, config=_config())
    if as_json:
        _json(asdict(r))
        return
    verb = ("imported" if import_path else "signed") if r.created else "already signed"
    _out(f"{verb} {r.model}:{r.tag}: signer {r.hint} ({r.kind}, {r.method} method)")


def _key_password(key: str | None, password_env: str | None) -> str | None:
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


@model.command("export-signature")
@click.argument("repo_name", metavar="REPO")
@click.argument("model_name", metavar="MODEL")
@click.option("--tag", "-t", required=True, help="Version whose signature to export.")
@click.option("--sha256", is_flag=True, help="The SHA-256 kind (checked by `model_signing verify`).")
@click.option("--signer", metavar="HINT", help="Signer (16 hex, as `model info` lists); needed when several signed.")
@click.option("--output", "-o", required=True, metavar="FILE", help="Where to write the Sigstore bundle.")
@json_option
def model_export_signature(repo_name, model_name, tag, sha256, signer, output, as_json):
    """Write a stored signature for the upstream tools (`model_signing verify key --signature FILE`)."""
    r = _api().export_signature(repo_name, model_name, output, tag=tag, sha256=sha256, signer=signer, config=_config())
    if as_json:
        _json(asdict(r))
        return
    _out(f"wrote signature {r.hint} of {r.model}:{r.tag} to {r.output} ({r.bytes} bytes)")


@repo.command("check")
@click.argument("repo_name", metavar="REPO")
@click.option("--read-data", is_flag=True, help="Also re-read every blob and check its hash (reads everything).")
@jobs_option
@quiet_option
@json_option
def repo_check(repo_name, read_data, jobs, quiet, as_json):
    """Check that every version is readable and complete (exit 5 if not); count unreferenced blobs."""
    from aim_cli.progress import make_progress

    r = _api().check_repo(repo_name, read_data=read_data, jobs=jobs, config=_config(),
                          progress=make_progress(quiet or as_json))
    if as_json:
        _json(asdict(r) | {"ok": r.ok})
    else:
        read = f", {r.read} read and intact" if read_data else ""
        _out(f"repository {repo_name!r}: {r.versions} versions, {r.referenced} blobs referenced, {r.stored} stored{read}")
        _out(f"referenced: {_size(r.raw_bytes)} of chunks in {_size(r.stored_bytes)} stored")
        _out(f"unreferenced: {r.unreferenced} blobs, {_size(r.unreferenced_bytes)}"
             + (f" (`aim_cli repo gc {repo_name}` frees them)" if r.unreferenced else ""))
        for name, why in r.broken:
            _out(f"broken    {name}: {why}")
        for p in r.problems:
            _out(f"{p.problem:<8}  blob {p.digest} ({p.detail}); used by {', '.join(p.used_by) or 'no version'}")
    if not r.ok:
        first = r.broken[0][0] if r.broken else f"blob {r.problems[0].digest}"
        raise IntegrityError(
            f"repository {repo_name!r} has {len(r.broken) + len(r.problems)} problem(s), listed above (first: {first})",
            "delete the affected versions, or push a good copy under a new tag to restore missing blobs "
            "(delete corrupt ones from storage first); then check again")


@repo.command("gc")
@click.argument("repo_name", metavar="REPO")
@click.option("--dry-run", is_flag=True, help="Print the plan, delete nothing (takes no lease).")
@json_option
def repo_gc(repo_name, dry_run, as_json):
    """Delete the blobs no version references, safely while pushes run (see `repo check`)."""

    def show(plan):
        if not as_json:
            _out(f"plan: delete {len(plan.blobs)} unreferenced blobs ({_size(plan.bytes)}); keep {plan.referenced} "
                 f"blobs referenced by {plan.versions} versions")

    r = _api().collect_garbage(repo_name, dry_run=dry_run, config=_config(), on_plan=show)
    if as_json:
        _json({"dry_run": r.dry_run, "blobs": len(r.plan.blobs), "bytes": r.plan.bytes, "deleted": r.deleted,
               "freed_bytes": r.freed_bytes, "versions": r.plan.versions, "referenced": r.plan.referenced,
               "stored": r.plan.stored, "incomplete_removed": r.incomplete[0],
               "incomplete_bytes": r.incomplete[1]})
    elif dry_run:
        _out("dry run: nothing deleted")
    else:
        extra = (f"; removed {r.incomplete[0]} temp files of interrupted writes ({_size(r.incomplete[1])})"
                 if r.incomplete[0] else "")
        _out(f"deleted {r.deleted} blobs, freed {_size(r.freed_bytes)}{extra}")


# -- comparing and copying versions (aim_cli/diff.py, aim_cli/transfer_copy.py) ----------------------
@model.command("diff")
@click.argument("repo_name", metavar="REPO")
@click.argument("model_name", metavar="MODEL")
@click.argument("tag_a", metavar="TAG_A")
@click.argument("tag_b", metavar="TAG_B")
@patterns_option
@json_option
def model_diff(repo_name, model_name, tag_a, tag_b, include, exclude, as_json):
    """Show the files TAG_B added, removed and changed since TAG_A of MODEL, and what a pull of
    TAG_B into a directory holding TAG_A fetches. Reads the two manifests only; exit 0 whether
    or not they differ."""
    r = _api().diff(repo_name, model_name, tag_a, tag_b, include=include, exclude=exclude, config=_config())
    if as_json:
        _json(asdict(r) | {"identical": r.identical})
        return
    from aim_cli.util.quoting import printable

    _out(f"{r.model}: {r.tag_a} (digest {r.digest_a[:12]}) -> {r.tag_b} (digest {r.digest_b[:12]})")
    for f in r.files:
        _out(f"{f.status:<9}  {_diff_sizes(f):>24}  {printable(f.path, len(f.path))}{_diff_mode(f)}")
    t = r.totals
    _out(f"{t['added'].files} added ({_size(t['added'].bytes_b)}), {t['removed'].files} removed "
         f"({_size(t['removed'].bytes_a)}), {t['changed'].files} changed, {t['unchanged'].files} unchanged; "
         f"{_size(r.changed_bytes)} of {r.tag_b} in added or changed files")
    unstored = (f"; {r.fetch.unstored_chunks} of them not stored (run `aim_cli repo check`)"
                if r.fetch.unstored_chunks else "")
    _out(f"a pull of {r.tag_b} into a directory holding {r.tag_a} fetches {r.fetch.chunks} chunks: "
         f"{_size(r.fetch.stored_bytes)} stored ({_size(r.fetch.raw_bytes)} of chunks){unstored}")


def _diff_sizes(f) -> str:
    """A file's size, or both when it changed: "1.0 MiB", "1.0 MiB -> 1.1 MiB"."""
    if f.size_a is None or f.size_b is None or f.size_a == f.size_b:
        return _size(f.size_b if f.size_a is None else f.size_a)
    return f"{_size(f.size_a)} -> {_size(f.size_b)}"


def _diff_mode(f) -> str:
    if f.mode_a is None or f.mode_b is None or f.mode_a == f.mode_b:
        return ""
    return f" (mode {f.mode_a:o} -> {f.mode_b:o})"


@model.command("copy")
@click.argument("src_repo", metavar="SRC_REPO")
@click.argument("model_name", metavar="MODEL")
@click.argument("dst_repo", metavar="DST_REPO")
@click.option("--tag", "-t", "tags", multiple=True, help="Version to copy (repeatable; default: every version).")
@click.option("--dry-run", is_flag=True, help="Print what would be copied; write nothing.")
@jobs_option
@quiet_option
@json_option
def model_copy(src_repo, model_name, dst_repo, tags, dry_run, jobs, quiet, as_json):
    """Copy versions of MODEL from SRC_REPO into DST_REPO with the same manifest digests,
    transferring only the blobs DST_REPO lacks; rerun to resume. A tag DST_REPO holds with
    another digest is a conflict: the others are copied, then exit 4."""
    from aim_cli.progress import make_progress

    r = _api().copy(src_repo, model_name, dst_repo, tags=tags or None, jobs=jobs, dry_run=dry_run, config=_config(),
                    progress=make_progress(quiet or as_json or dry_run))
    if as_json:
        _json(asdict(r) | {"reencoded": r.reencoded})
    else:
        _show_copy(r)
    if r.conflicts:
        from aim_cli.errors import TagExistsError

        held = {v.tag: v for v in r.versions}
        named = ", ".join(f"{r.model}:{t} (there {held[t].dst_digest[:12]}, in {r.src!r} {held[t].digest[:12]})"
                          for t in r.conflicts)
        raise TagExistsError(f"{len(r.conflicts)} version(s) exist in {r.dst!r} with another digest: {named}",
                             "versions are immutable: the other versions were copied; to replace one, delete it "
                             f"there (`aim_cli model delete-version {r.dst} {r.model} --tag TAG`) and copy again")


def _show_copy(r) -> None:
    would = "would copy" if r.dry_run else "copied"
    for v in r.versions:
        label = f"{r.model}:{v.tag}"
        signed = f"; {would} {v.signatures} signatures" if v.signatures else ""
        if v.status == "skipped":
            _out(f"skipped   {label}  {r.dst!r} holds it with the same digest{signed}")
        elif v.status == "conflict":
            _out(f"conflict  {label}  {r.dst!r} holds digest {v.dst_digest}, {r.src!r} has {v.digest}")
        else:
            stored = "" if v.stored_bytes is None else f" ({_size(v.stored_bytes)} stored)"
            _out(f"{would:<9} {label}  {v.blobs} blobs, {_size(v.raw_bytes)} of chunks{stored}, "
                 f"{v.present_blobs} already there; digest {v.digest}{signed}")
    if r.reencoded:
        note = (" (a format 1 repository records no dtypes: chunks compressed as plain bytes)"
                if r.src_format == 1 else "")
        _out(f"blobs {'would be ' if r.dry_run else ''}re-encoded from format {r.src_format} to format "
             f"{r.dst_format}{note}")
    created = f"; {'would create' if r.dry_run else 'created'} repository {r.dst!r}" if r.dst_created else ""
    stored = "" if r.stored_bytes is None else f", {_size(r.stored_bytes)} stored"
    dry = "; dry run: nothing written" if r.dry_run else ""
    _out(f"{would} {len(r.copied)} of {len(r.versions)} versions of {r.model} from {r.src!r} to {r.dst!r} "
         f"({len(r.skipped)} skipped, {len(r.conflicts)} conflicts): {r.blobs} blobs, {_size(r.raw_bytes)} of "
         f"chunks{stored}, {r.signatures} signatures{created}; {r.elapsed:.2f}s{dry}")


# -- cache ------------------------------------------------------------------------------------------
@cli.group()
def cache():
    """Inspect and prune the shared chunk cache of `model pull --cache-dir`."""


cache_dir_option = click.option("--cache-dir", envvar="AIM_CACHE_DIR", metavar="DIR",
                                help="The chunk cache (default: $AIM_CACHE_DIR).")


def _cache_dir(cache_dir: str | None) -> str:
    if not cache_dir:
        raise UsageError("no chunk cache given", "pass --cache-dir DIR or set AIM_CACHE_DIR")
    return cache_dir


@cache.command("info")
@cache_dir_option
@json_option
def cache_info(cache_dir, as_json):
    """Show how many chunks and bytes the cache holds."""
    path = _cache_dir(cache_dir)
    r = _api().cache_info(path)
    if as_json:
        _json({"cache_dir": os.path.abspath(path), "entries": r.entries, "bytes": r.bytes})
        return
    _out(f"chunk cache {path}: {r.entries} chunks, {_size(r.bytes)}")


@cache.command("prune")
@click.option("--max-size", default="0", show_default=True, metavar="SIZE",
              help="Keep at most this much (like 10GiB, 500MiB); 0 empties the cache.")
@click.option("--dry-run", is_flag=True, help="Only print what would be deleted.")
@cache_dir_option
@json_option
def cache_prune(max_size, dry_run, cache_dir, as_json):
    """Delete the least recently used chunks until the cache fits in --max-size.

    Only a directory that `model pull --cache-dir` made a cache (it holds aim-cache.json) is
    pruned: any other exits 3, a repository exits 2."""
    path = _cache_dir(cache_dir)
    r = _api().cache_prune(path, parse_size(max_size, option="--max-size"), dry_run=dry_run)
    if as_json:
        _json({"cache_dir": os.path.abspath(path), "dry_run": dry_run} | r._asdict())
        return
    verb = "would remove" if dry_run else "removed"
    _out(f"{verb} {r.removed} chunks ({_size(r.freed)}) from {path}; {r.entries} chunks, {_size(r.bytes)} left")


# -- entry point -------------------------------------------------------------------------------------
def _fail(message: str, code: int) -> None:
    if _state["verbose"]:
        traceback.print_exc()
    click.echo(message, err=True)
    sys.exit(code)


def main(argv=None) -> None:
    try:
        cli.main(args=argv, prog_name="aim_cli", standalone_mode=False)
    except click.exceptions.Abort as e:
        # click turns Ctrl-C into Abort; a declined confirmation is an Abort too.
        if isinstance(e.__context__, KeyboardInterrupt):
            _fail("interrupted; rerun the same command to resume: what was already transferred is kept", 130)
        _fail("aborted", 1)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except AimError as e:
        message = f"error: {e.message}"
        if e.hint:
            message += f"; {e.hint}"
        _fail(message, e.exit_code)
    except OSError as e:  # a filesystem refusal no code path above turned into a StorageError
        where = f" ({e.filename})" if e.filename else ""
        _fail(f"error: {e.strerror or e}{where}; check the path, its permissions and the free space", 6)
    except KeyboardInterrupt:
        _fail("interrupted; rerun the same command to resume: what was already transferred is kept", 130)
    except BrokenPipeError:
        sys.stderr.close()
        sys.exit(1)
    except Exception as e:  # a bug: say so, keep it one line unless -v
        _fail(f"error: unexpected {type(e).__name__}: {e}; this is a bug in aim_cli, "
              f"please report it with the output of `aim_cli -v ...`", 1)
    sys.exit(0)
