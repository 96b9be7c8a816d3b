"""Properties of the name grammar (aim_cli/names.py) and of the keys below ``models/``
(format/layout.py, docs/design.md §2) with namespaced models: every name valid before stays
valid; the namespace follows the Hugging Face hub's rules; every key a valid name makes parses
back to that name, lies in that model's own folder, and no two names make the same key."""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aim_cli.errors import UsageError
from aim_cli.format import layout
from aim_cli.format.layout import AliasKey, SignatureKey, SummaryKey, VersionKey
from aim_cli.names import NAME_RE, check_name, split_model, valid_model_name, valid_name, valid_namespace

FAST = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

#: huggingface_hub's validate_repo_id, restated for a namespace (the part before the slash):
#: ``\b[\w\-.]+\b`` with ``\w`` as the hub means it (ASCII letters, digits, ``_``), no ``--`` or
#: ``..``; its 96-character bound on a repository name, applied to the namespace too.
_HUB_NAMESPACE = re.compile(r"\b[A-Za-z0-9_.-]+\b", re.ASCII)


def hub_namespace(text: str) -> bool:
    # \b at either end of a full match: the first and the last character are word characters.
    return _HUB_NAMESPACE.fullmatch(text) is not None and "--" not in text and ".." not in text and len(text) <= 96


#: Characters that matter to the grammar: the allowed ones, separators, the mark, lookalikes.
ALPHABET = "aZ09._-/@ \n\x00\\:\uff4f\u2215\u0338é"
texts = st.text(alphabet=ALPHABET, max_size=12)
plain_names = st.from_regex(NAME_RE, fullmatch=True)
namespaces = st.from_regex(r"[A-Za-z0-9_](?:[A-Za-z0-9._-]{0,20}[A-Za-z0-9_])?", fullmatch=True).filter(
    lambda n: "--" not in n and ".." not in n
)
models = plain_names | st.builds(lambda ns, own: f"{ns}/{own}", namespaces, plain_names)
tags = plain_names


@FAST
@given(plain_names)
def test_every_name_valid_before_is_a_valid_model_name(name):
    assert valid_model_name(name) and valid_name(name) and check_name("model", name) == name


@FAST
@given(texts | st.text(max_size=10) | namespaces)
def test_the_namespace_follows_the_hubs_rules(text):
    assert valid_namespace(text) == hub_namespace(text)


@pytest.mark.parametrize(
    ("model", "valid"),
    [
        ("org/model", True),
        ("_org/m", True),
        ("o.r_g-1/m", True),
        ("o" * 96 + "/m", True),
        ("o" * 97 + "/m", False),
        ("org/" + "m" * 128, True),
        ("org/" + "m" * 129, False),
        ("org/_m", False),  # the model's own name keeps the plain rules
        ("org./m", False),
        ("-org/m", False),
        ("o--rg/m", False),
        ("o..rg/m", False),
        ("org//m", False),
        ("org/m/x", False),
        ("\uff4frg/m", False),
        ("@org/m", False),
    ],
)
def test_model_names(model, valid):
    assert valid_model_name(model) is valid
    if not valid:
        with pytest.raises(UsageError, match="invalid model name"):
            check_name("model", model)


@FAST
@given(texts)
def test_a_model_name_is_a_plain_name_or_a_namespace_and_one(text):
    namespace, own = split_model(text)
    expected = valid_name(text) if namespace is None else valid_namespace(namespace) and valid_name(own)
    assert valid_model_name(text) == expected
    if "/" in text:
        for kind in ("tag", "alias", "repository", "signer hint"):  # never namespaced
            with pytest.raises(UsageError):
                check_name(kind, text)


def _keys(model: str, tag: str) -> dict[str, type]:
    return {
        layout.manifest_key(model, tag): VersionKey,
        layout.summary_key(model, tag): SummaryKey,
        layout.signature_key(model, tag, "abc123"): SignatureKey,
        layout.alias_entry_key(model, tag, 7): AliasKey,
    }


@FAST
@given(models, tags)
def test_every_key_parses_back_to_its_model_and_stays_in_its_folder(model, tag):
    prefix = layout.model_prefix(model)
    assert prefix.startswith(layout.MODELS) and prefix.endswith("/")
    for key, kind in _keys(model, tag).items():
        parts = key.split("/")
        assert all(p not in ("", ".", "..") for p in parts)
        assert key.startswith(prefix) and len(parts) == prefix.count("/") + (
            2 if kind in (VersionKey, SummaryKey) else 3
        )
        parsed = layout.parse_model_key(key)
        assert type(parsed) is kind and parsed.model == model
        assert (parsed.alias if isinstance(parsed, AliasKey) else parsed.tag) == tag
        assert not layout.in_aliases(key) or kind is AliasKey
        assert not layout.in_signatures(key) or kind is SignatureKey
    assert layout.parse_version_key(layout.manifest_key(model, tag)).label == f"{model}:{tag}"


@FAST
@given(models, tags, models, tags)
def test_no_two_versions_share_a_key_or_a_folder(model_a, tag_a, model_b, tag_b):
    keys_a, keys_b = _keys(model_a, tag_a), _keys(model_b, tag_b)
    if (model_a, tag_a) != (model_b, tag_b):
        assert not set(keys_a) & set(keys_b)
    if model_a != model_b:
        # Neither model's folder holds the other's keys: deleting or listing one never meets the other.
        assert not any(k.startswith(layout.model_prefix(model_a)) for k in keys_b)
        assert not any(k.startswith(layout.model_prefix(model_b)) for k in keys_a)


@pytest.mark.parametrize(
    ("plain", "namespaced"),
    [("org", f"org/{folder}") for folder in ("versions", "summaries", "signatures", "aliases")],
)
def test_a_model_beside_the_namespace_named_like_its_folders(plain, namespaced):
    """The cases a bare ``models/<org>/<model>/`` could not tell apart: each key parses as its own."""
    for model in (plain, namespaced):
        for key in _keys(model, "versions"):
            assert layout.parse_model_key(key).model == model
    assert layout.manifest_key("org", "v1") == "models/org/versions/v1.json"
    assert layout.manifest_key("org/versions", "v1") == "models/@org/versions/versions/v1.json"


@FAST
@given(
    st.lists(
        st.sampled_from(
            ["@org", "@", "@-x", "org", "m", "versions", "summaries", "signatures", "aliases", "v1.json", "1.json"]
            + ["01.json", "x.sig", "..", "", "@org/m"]
        ),
        min_size=1,
        max_size=5,
    )
)
def test_any_key_below_models_parses_as_one_model_or_as_a_stray(segments):
    """Whatever a listing meets: a key of the store's own kinds names a valid model whose keys it
    is one of; anything else is a stray (no tag)."""
    key = layout.MODELS + "/".join(segments)
    parsed = layout.parse_model_key(key)
    if isinstance(parsed, VersionKey) and parsed.tag is None:
        return
    assert parsed.model is not None and valid_model_name(parsed.model)
    if isinstance(parsed, AliasKey):
        rebuilt = layout.alias_entry_key(parsed.model, parsed.alias, parsed.index)
    elif isinstance(parsed, SignatureKey):
        rebuilt = layout.signature_key(parsed.model, parsed.tag, parsed.hint)
    elif isinstance(parsed, SummaryKey):
        rebuilt = layout.summary_key(parsed.model, parsed.tag)
    else:
        assert parsed.tag is not None
        rebuilt = layout.manifest_key(parsed.model, parsed.tag)
    assert rebuilt == key


@FAST
@given(texts)
def test_a_key_is_made_only_from_a_valid_name_or_one_plain_segment(text):
    """model_prefix refuses a slash or the mark unless the name is valid, so no key leaves its folder."""
    try:
        layout.model_prefix(text)
    except UsageError:
        assert "/" in text or text.startswith("@")
        assert not valid_model_name(text)
        return
    assert valid_model_name(text) or ("/" not in text and not text.startswith("@"))
