"""`repo check`'s part on aliases (docs/design.md §2.1): every alias's history read and judged
(entries 1..n all there, each valid, each one's "from" what the one before left), and each set
alias judged against the version it names: gone, holding another manifest digest (deleted and
pushed again), or shadowed by a tag of the alias's own name (a race of `alias set` with a push:
reads take the tag)."""

from __future__ import annotations

from collections.abc import Mapping

from aim_cli.errors import AimError
from aim_cli.format import summary as sm
from aim_cli.format.layout import manifest_key
from aim_cli.repository import Repository
from aim_cli.repository.aliases import History


def alias_problems(repo: Repository, known: Mapping[str, sm.Summary]) -> list[tuple[str, str]]:
    """(key or model:alias, why) of every damaged alias. ``known`` maps a manifest key to the
    summary of the manifest the check read (its digest), sparing a second read of it."""
    names = sorted({(k.model, k.alias) for k in repo.iter_alias_keys()})
    found = repo.map_parallel(lambda name: _problems_of(repo, *name, known), names)
    return [problem for problems in found for problem in problems]


def _problems_of(repo: Repository, model: str, alias: str, known: Mapping[str, sm.Summary]) -> list[tuple[str, str]]:
    label = f"{model}:{alias}"
    try:
        history: History = repo.alias_history(model, alias)
    except AimError as e:  # gone since the listing (a model delete), or a listing past the bound
        return [] if e.exit_code == 3 else [(label, e.message)]
    problems = [(key, f"alias history: {why}") for key, why in history.problems]
    last = history.records[-1] if history.records else None
    if last is None or last.target is None or last.index != history.highest:
        return problems
    tag, digest = last.target
    if repo.has_version(model, alias):
        problems.append(
            (
                label,
                f"alias shadowed by the tag {alias!r}: reads take the tag; `aim_cli model alias delete "
                f"{repo.name} {model} {alias}` removes the alias",
            )
        )
    stored = known.get(manifest_key(model, tag))
    if stored is not None and stored.digest == digest:
        return problems
    try:
        repo.alias_target(last)  # pushed since the scan, or not stored, or another digest
    except AimError as e:
        problems.append((label, f"alias dangles: {e.message}"))
    return problems
