"""The name grammar: what a repository, model, tag or signer hint may be called.

A name becomes one segment of a storage key and one word of a printed command, so it is kept to
1-128 characters from A-Z a-z 0-9 . _ -, starting with a letter or digit (``NAME_RE``).

A model may also be namespaced as on the Hugging Face hub: ``org/model``, one level, where
``model`` is a name as above and ``org`` follows the hub's rules for a namespace (huggingface_hub's
``validate_repo_id``): 1-96 characters from A-Z a-z 0-9 . _ -, starting and ending with a letter,
digit or ``_``, without ``--`` or ``..`` (``NAMESPACE_RE``). ASCII only: the hub's client regex
says ``\\w``, which Python reads as any Unicode letter, but the hub itself refuses those, and a
lookalike must not name another model. Repositories, tags, aliases and signer hints are never
namespaced. docs/design.md §2.2 says how a namespaced model is stored.
"""

from __future__ import annotations

import re

from aim_cli.errors import UsageError
from aim_cli.util.quoting import quoted

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
NAMESPACE_RE = re.compile(r"(?!.*(?:--|\.\.))[A-Za-z0-9_](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9_])?")
#: What separates a namespace from the model's own name.
NAMESPACE_SEP = "/"

_NAME_HINT = "use 1-128 characters from A-Z a-z 0-9 . _ -, starting with a letter or digit"
_MODEL_HINT = f"{_NAME_HINT} (or ORG/NAME, as on the Hugging Face hub)"
_NAMESPACED_HINT = (
    "use ORG/NAME: ORG as on the Hugging Face hub (1-96 characters from A-Z a-z 0-9 . _ -, no -- or .., "
    "not starting or ending with . or -), NAME 1-128 of them, starting with a letter or digit"
)


def _hint(kind: str, name: object) -> str:
    if kind != "model":
        return _NAME_HINT
    return _NAMESPACED_HINT if isinstance(name, str) and NAMESPACE_SEP in name else _MODEL_HINT


def check_name(kind: str, name: str) -> str:
    """Validate a repository, model or tag name (docs/design.md §2). A model's may be namespaced."""
    valid = valid_model_name(name) if kind == "model" else valid_name(name)
    if not valid:
        raise UsageError(
            f"invalid {kind} name {quoted(name) if isinstance(name, str) else repr(name)}",
            _hint(kind, name),
        )
    return name


def valid_name(name: str) -> bool:
    """Whether ``check_name`` accepts ``name`` as any name but a model's: never namespaced."""
    return isinstance(name, str) and NAME_RE.fullmatch(name) is not None


def valid_namespace(namespace: str) -> bool:
    """Whether ``namespace`` is one the hub allows (``NAMESPACE_RE``)."""
    return isinstance(namespace, str) and NAMESPACE_RE.fullmatch(namespace) is not None


def split_model(model: str) -> tuple[str | None, str]:
    """(namespace or None, the model's own name) of a model name, valid or not."""
    namespace, sep, own = model.partition(NAMESPACE_SEP)
    return (namespace, own) if sep else (None, model)


def valid_model_name(model: str) -> bool:
    """Whether ``check_name("model", ...)`` accepts ``model``: a name, or ``namespace/name``."""
    if not isinstance(model, str):
        return False
    namespace, own = split_model(model)
    return valid_name(own) and (namespace is None or valid_namespace(namespace))
