"""What a signed pull (``pull --require-signature KEY.pub``) resolves to (docs/design.md §12).

A name that is a tag: the version's signature by the key, as before, unless an alias of that
name exists or was accepted signed before (a tag pushed to shadow a signed alias is refused). A
name that is an alias, or a tag-less pull (the alias ``--alias`` names, ``latest`` by default):
the alias's latest entry, its statement by the key stored beside it (alias_statement.py), and
then the version's signature. The statement is refused (exit 5) when it is not the key's, is
for another alias or entry, has expired, or carries a sequence number (the entry's index)
lower than one accepted before for this repository, model, alias and key (alias_state.py).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from aim_cli.errors import IntegrityError, KeyNotFoundError, UsageError, VersionNotFoundError
from aim_cli.format.layout import alias_statement_key
from aim_cli.signing.alias_statement import mismatch, parse_time, read_stored, verify
from aim_cli.signing.keys import SIGNER_HEX, key_hint
from aim_cli.signing.verify import verify_version_signature

if TYPE_CHECKING:
    from aim_cli.format.alias import AliasRecord
    from aim_cli.signing.alias_state import SeenKey, SequenceState

log = logging.getLogger(__name__)
DEFAULT_ALIAS = "latest"


@dataclass(frozen=True)
class AcceptedAlias:
    """A signed alias statement a pull accepted."""

    model: str
    alias: str
    index: int  # the sequence number
    tag: str
    digest: str
    issued_at: str
    expires_at: str | None
    signer: str  # 16 hex of the key hint


@dataclass(frozen=True)
class SignedPin:
    """The version a signed pull takes (its tag and manifest digest, both verified), and the
    statement accepted on the way (None: a tag, signed by the key)."""

    tag: str
    digest: str
    accepted: AcceptedAlias | None = None
    seen_key: SeenKey | None = None


def pin_signed(
    repository,
    repository_id: str,
    model: str,
    public_key,
    *,
    tag: str | None,
    alias: str | None,
    digest: str | None,
    states: list[SequenceState],
    now: datetime,
) -> SignedPin:
    """Resolve and verify a signed pull's version before anything is written (see the module)."""
    if tag is not None and alias is not None:
        raise UsageError("--tag and --alias both name a version", "pass one of them")
    name = tag if tag is not None else alias or DEFAULT_ALIAS
    seen_key: SeenKey = (repository_id, model, name, key_hint(public_key))
    seen = max((state.load().get(seen_key, 0) for state in states), default=0)
    if alias is None and tag is not None and repository.has_version(model, tag):
        return _signed_tag(repository, model, tag, public_key, digest, seen)
    record = repository.current_alias(model, name)
    if record is None:
        raise _no_alias(repository, model, name, seen, tagless=tag is None)
    accepted = _accept(repository, record, public_key, seen, now)
    ref = repository.alias_target(record)  # its tag still holds the digest signed
    if digest is not None and ref.digest != digest.lower():
        raise IntegrityError(
            f"signed alias {name!r} of model {model!r} names digest {ref.digest}, not the pinned {digest.lower()}",
            "the alias is not at the version you pinned; nothing was downloaded",
        )
    verify_version_signature(repository, ref, public_key)
    _log(accepted)
    return SignedPin(ref.manifest.tag, ref.digest, accepted, seen_key)


def _signed_tag(repository, model: str, tag: str, public_key, digest: str | None, seen: int) -> SignedPin:
    if seen or repository.latest_alias_entry(model, tag) is not None:
        raise IntegrityError(
            f"{tag!r} of model {model!r} is a tag, and also an alias"
            + (f" whose signed entry {seen} was accepted before" if seen else ""),
            "a tag of an alias's name shadows it (reads take the tag); `aim_cli repo check` reports it, and "
            "the tag must be removed before a signed pull trusts either",
        )
    ref, _ = repository.resolve_version(model, tag, digest)
    verify_version_signature(repository, ref, public_key)
    return SignedPin(ref.manifest.tag, ref.digest)


def _no_alias(repository, model: str, name: str, seen: int, *, tagless: bool) -> Exception:
    if seen:
        return IntegrityError(
            f"alias {name!r} of model {model!r} is not set in repository {repository.name!r}, but its signed "
            f"entry {seen} was accepted before",
            "the alias was unset or its history removed; ask its signer to set it again",
        )
    if tagless:
        return UsageError(
            f"no alias {name!r} of model {model!r} in repository {repository.name!r}: --require-signature "
            f"without --tag takes the signed alias --alias names ({DEFAULT_ALIAS!r} by default)",
            f"pass --tag TAG or --alias NAME, or sign one: `aim_cli model alias set {repository.name} {model} "
            f"{name} --tag TAG --sign KEY.pem`",
        )
    return VersionNotFoundError(
        f"no tag or alias {name!r} of model {model!r} in repository {repository.name!r}",
        f"run `aim_cli model versions {repository.name} {model}` or `aim_cli model alias list`",
        model=model,
        tag=name,
    )


def _accept(repository, record: AliasRecord, public_key, seen: int, now: datetime) -> AcceptedAlias:
    """The statement stored beside ``record`` by ``public_key``, verified against the entry, the
    sequence number ``seen`` and the time ``now``: IntegrityError (exit 5) naming what fails."""
    signer = key_hint(public_key)[:SIGNER_HEX]
    label = f"alias {record.alias!r} of model {record.model!r}"
    key = alias_statement_key(record.model, record.alias, record.index, signer)
    try:
        statement = verify(read_stored(repository, record, signer), public_key)
    except KeyNotFoundError:
        raise IntegrityError(
            f"entry {record.index} of {label} has no statement signed by this key (signer {signer})",
            f"ask the signer to sign it: `aim_cli model alias set {repository.name} {record.model} {record.alias} "
            f"--tag {record.tag} --sign KEY.pem`",
        ) from None
    except IntegrityError as e:
        raise IntegrityError(f"{key}: {e.message}", e.hint) from None
    if (statement.model, statement.alias) != (record.model, record.alias):
        raise IntegrityError(
            f"{key} is a statement of alias {statement.alias!r} of model {statement.model!r}, not of {label}",
            "it was copied from another alias; ask the signer to sign this one",
        )
    if statement.index < seen:
        raise IntegrityError(
            f"{label} was rolled back: its signed statement has sequence number {statement.index}, "
            f"lower than the {seen} this consumer accepted before",
            "someone who can write the repository served an older alias; nothing was downloaded",
        )
    why = mismatch(statement, record)
    if why:
        raise IntegrityError(
            f"{key} does not sign the entry it is stored beside: {why}",
            "an old statement was replayed as a newer entry; nothing was downloaded",
        )
    if statement.expires_at is not None and now >= parse_time(statement.expires_at):
        raise IntegrityError(
            f"the signed statement of {label} (entry {statement.index}) expired at {statement.expires_at}",
            "the alias may be frozen by someone who can write the repository; ask its signer to sign it again "
            "(`model alias set ... --sign KEY.pem --expires 30d`)",
        )
    return AcceptedAlias(
        statement.model,
        statement.alias,
        statement.index,
        statement.tag,
        statement.digest,
        statement.issued_at,
        statement.expires_at,
        signer,
    )


def _log(a: AcceptedAlias) -> None:
    until = f"expires {a.expires_at}" if a.expires_at else "no expiry"
    log.info(
        "signed alias %s of %s: tag %s, digest %s (entry %d, signer %s, %s)",
        a.alias,
        a.model,
        a.tag,
        a.digest,
        a.index,
        a.signer,
        until,
    )
    if a.expires_at is None:
        log.warning(
            "warning: the signed statement of alias %s of %s has no expiry: whoever can write the repository can "
            "keep serving it after it moved; sign with --expires",
            a.alias,
            a.model,
        )
