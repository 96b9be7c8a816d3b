"""The commands on the config's repositories: ``info`` (version, config, repositories) and the
``repo`` group: create, list, delete; its audits (check, gc) are in audit.py."""

from __future__ import annotations

from dataclasses import asdict

import click

from aim_cli.cli import audit, completion
from aim_cli.cli.options import api, config, json_option
from aim_cli.cli.render import out, out_json
from aim_cli.util.sizes import parse_size


@click.command()
@json_option
def info(as_json):
    """Show the version, the config file in use and its repositories."""
    r = api().info(config=config())
    if as_json:
        out_json({"version": r.version, "config": r.config, "repos": [asdict(e) for e in r.repos]})
        return
    out(f"aim_cli {r.version}")
    out(f"config: {r.config or 'none found (create one with `aim_cli repo create`)'}")
    out(f"repositories: {len(r.repos)}")
    for e in r.repos:
        out(f"  {e.name}  {e.type}  {e.path}")


@click.group()
def repo():
    """Create, list and delete repositories in model_repos.yaml."""


def _chunk_size(text: str | None) -> int | None:
    # 0 would read as "not given" in create_repo and silently pick the default: refuse it here.
    return None if text is None else parse_size(text, option="--chunk-size", minimum=1)


@repo.command("create")
@click.argument("name")
@click.option("--type", "repo_type", type=click.Choice(["local", "s3"]), required=True, help="Storage type.")
@click.option(
    "--path", required=True, shell_complete=completion.dirs, help="Directory (local/NFS) or s3://bucket/prefix."
)
@click.option("--region", help="S3 region.")
@click.option("--endpoint-url", help="S3-compatible endpoint (MinIO, Ceph, R2).")
@click.option("--profile", help="AWS profile for credentials.")
@click.option("--addressing-style", type=click.Choice(["auto", "virtual", "path"]), help="S3 addressing style.")
@click.option("--chunk-size", metavar="SIZE", help="Average chunk size of a new repository (default 1MiB).")
@click.option(
    "--format",
    "storage_format",
    type=click.Choice(["1", "2", "3"]),
    help="Storage format of a new repository: 3 (default) cuts safetensors at tensor boundaries, large "
    "tensors at fixed offsets, and compresses (older versions can become deltas: repo optimize); 2 the "
    "same without deltas, content-defined inside large tensors; 1 stores raw chunks. Older aim_cli read 1 and 2.",
)
@click.option("--no-check", is_flag=True, help="Record the entry without reaching the storage.")
@click.option(
    "--parents", is_flag=True, help="Local: create the directory's missing parents (refused without: a mistyped mount)."
)
@json_option
def repo_create(
    name,
    repo_type,
    path,
    region,
    endpoint_url,
    profile,
    addressing_style,
    chunk_size,
    storage_format,
    no_check,
    parents,
    as_json,
):
    """Add repository NAME to model_repos.yaml and initialise its storage."""
    r = api().create_repo(
        name,
        repo_type,
        path,
        region=region,
        endpoint_url=endpoint_url,
        profile=profile,
        addressing_style=addressing_style,
        chunk_size=_chunk_size(chunk_size),
        storage_format=None if storage_format is None else int(storage_format),
        check=not no_check,
        parents=parents,
        config=config(),
    )
    if as_json:
        out_json(asdict(r.entry) | {"initialised": r.initialised, "format": r.format, "existing": r.existing})
        return
    if r.existing:
        state = f"already initialised (format {r.format})"
    elif r.initialised:
        state = f"initialised (format {r.format})"
    else:
        state = "not checked (--no-check); the first push initialises it"
    out(f"created repository {name!r} ({r.entry.type}, {r.entry.path}): {state}")


@repo.command("list")
@json_option
def repo_list(as_json):
    """List the repositories of model_repos.yaml."""
    cfg = api().get_config(config())
    if as_json:
        out_json([asdict(r) for r in cfg.repos.values()])
        return
    if not cfg.repos:
        out(f"no repositories in {cfg.path}")
        return
    width = max(len(n) for n in cfg.repos)
    for r in cfg.repos.values():
        extra = f"  region={r.region}" if r.region else ""
        extra += f"  endpoint={r.endpoint_url}" if r.endpoint_url else ""
        out(f"{r.name:<{width}}  {r.type:<5}  {r.path}{extra}")


@repo.command("delete")
@click.argument("name", shell_complete=completion.repos)
@json_option
def repo_delete(name, as_json):
    """Remove repository NAME from model_repos.yaml (the stored data is not touched)."""
    entry = api().delete_repo(name, config=config())
    if as_json:
        out_json(asdict(entry))
        return
    out(f"removed repository {name!r} from the config; the data at {entry.path} is untouched")


repo.add_command(audit.repo_check)
repo.add_command(audit.repo_gc)
repo.add_command(audit.repo_optimize)
