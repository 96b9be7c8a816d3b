"""The lifecycle of signatures (issue 12 item 5), on the local backend and on S3 (the ``repo``
fixture), through the installed console script. A signature is a Sigstore bundle stored at
``models/<model>/signatures/<tag>/<signer>.sig`` (format/layout.py); here bundles are planted as opaque
bytes (``Repository.put_signature``): what is tested is what happens to them around the versions.

What must hold: deletions remove a version's signatures first (an interrupted one leaves no
signature without its version); gc never reads nor deletes them, garbage ones included; `repo
check` reports every one that is malformed, oversized, not a bundle or without its version;
`model copy` carries them (onto a skipped tag too, never onto a conflicting one, a rerun only the
missing ones); listings do not see them.
"""

from __future__ import annotations

import json
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aim_cli.audit import gc
from aim_cli.audit.check import check_repo
from aim_cli.errors import StorageError
from aim_cli.format.layout import MAX_SIGNATURE_BYTES, manifest_key, signature_key, summary_key
from aim_cli.repository import Repository
from aim_cli.signing.bundle import max_bundle_bytes
from tests.fakes import Fault, FaultyBackend, HookedBackend
from tests.helpers import LOCAL_ONLY, make_variant_model, ok, one_line_error, sigstore_bundle_bytes

#: Nothing here depends on the storage format: no format 1 run of the `repo` fixture (conftest.py).
pytestmark = pytest.mark.format_neutral


def _push(repo, tag: str, variant: int, model: str = "m"):
    return repo.push(model, make_variant_model(repo.tmp / f"src-{model}-{tag}", variant=variant), tag)


def _sign(repository: Repository, tag: str, *hints: str, model: str = "m") -> dict[str, bytes]:
    """Plant one bundle per signer hint; returns hint -> bytes."""
    planted = {}
    for hint in hints:
        planted[hint] = sigstore_bundle_bytes(zlib.crc32(f"{model}:{tag}/{hint}".encode()))
        assert repository.put_signature(model, tag, hint, planted[hint])
    return planted


def _keys(repo, part: str = "") -> set[str]:
    return {i.key for i in repo.repository.backend.list("models/") if part in i.key}


def _json(res) -> dict | list:
    return json.loads(res.stdout)


def _broken(repo) -> dict[str, str]:
    """`repo check --json`'s broken entries, key -> why (exit 5 when there are any, else 0)."""
    res = repo.cli("repo", "check", repo.name, "--json")
    assert "Traceback" not in res.stderr, res.stderr
    found = dict(_json(res)["broken"])
    assert res.returncode == (5 if found else 0), res.stderr
    return found


# == deletions ===================================================================================
def test_delete_version_and_model_delete_remove_the_signatures(repo):
    """The outputs are those of unsigned versions: what the deletion made reclaimable is what gc
    then plans to free, signatures counted nowhere."""
    _push(repo, "v1", 1)
    _push(repo, "v2", 2)
    _sign(repo.repository, "v1", "alice", "bob")
    kept = _sign(repo.repository, "v2", "alice")
    res = ok(repo.cli("model", "delete-version", repo.name, "m", "--tag", "v1", "--json"))
    deleted = _json(res)
    assert deleted["tags"] == ["v1"] and res.stderr == ""
    assert _keys(repo, "/signatures/") == {signature_key("m", "v2", "alice")}
    plan = gc.plan_gc(repo.repository)
    assert (deleted["reclaimable_blobs"], deleted["reclaimable_stored_bytes"]) == (len(plan.blobs), plan.bytes)
    assert repo.repository.get_signature("m", "v2", "alice") == kept["alice"]

    text = ok(repo.cli("model", "delete", repo.name, "m", "--yes")).stdout
    assert text.startswith("deleted model m (1 version)\nreclaimable: ")
    assert _keys(repo) == set()
    one_line_error(repo.cli("model", "versions", repo.name, "m"), 3, "'m'")


def test_an_interrupted_delete_leaves_no_signature_without_its_version(repo):
    """Signatures go first: a delete that fails at the manifest leaves a whole, unsigned version
    that `repo check` passes and the next delete removes."""
    _push(repo, "v1", 1)
    _push(repo, "v2", 2)
    _sign(repo.repository, "v1", "alice", "bob")
    _sign(repo.repository, "v2", "carol")
    failing = FaultyBackend(repo.repository.backend, Fault("delete", "storage", "models/*/versions/*"))
    with pytest.raises(StorageError):
        Repository(failing, repo.name).delete_version("m", "v1")
    assert repo.repository.list_signatures("m", "v1") == [] and repo.repository.has_version("m", "v1")
    # model delete: signatures in one batch, then summaries and manifests in the next.
    failing = FaultyBackend(repo.repository.backend, Fault("delete_many", "storage", "models/*/summaries/*"))
    with pytest.raises(StorageError):
        Repository(failing, repo.name).delete_model("m")
    assert _keys(repo, "/signatures/") == set() and repo.repository.list_tags("m") == ["v1", "v2"]
    assert _broken(repo) == {}
    ok(repo.cli("model", "delete", repo.name, "m", "--yes"))
    assert _keys(repo) == set()


def test_a_signature_without_its_version_is_damage_that_delete_version_removes(repo):
    """What a signer racing a delete leaves: `repo check` names it and the command that removes
    it; delete-version takes it by its tag, and `model delete` by its model."""
    _push(repo, "v1", 1)
    repo.repository.put_signature("m", "gone", "alice", sigstore_bundle_bytes(1))
    repo.repository.put_signature("other", "v1", "alice", sigstore_bundle_bytes(2))
    broken = _broken(repo)
    assert set(broken) == {signature_key("m", "gone", "alice"), signature_key("other", "v1", "alice")}
    why = broken[signature_key("m", "gone", "alice")]
    assert "a signature without its version" in why
    assert f"`aim_cli model delete-version {repo.name} m --tag gone` removes it" in why
    res = ok(repo.cli("model", "delete-version", repo.name, "m", "--tag", "gone"))
    assert res.stdout.startswith("deleted m:gone\nreclaimable: 0 blobs")
    ok(repo.cli("model", "delete", repo.name, "other", "--yes"))
    assert _broken(repo) == {} and _keys(repo, "/signatures/") == set()
    one_line_error(repo.cli("model", "delete-version", repo.name, "m", "--tag", "gone"), 3, "'gone'")


# == gc ==========================================================================================
def test_gc_never_reads_nor_deletes_signatures_garbage_ones_included(repo):
    v1 = _push(repo, "v1", 1)
    _push(repo, "v2", 2)
    repo.repository.put_signature("m", "v1", "alice", b"\x00 not a bundle at all \xff")
    repo.repository.put_signature("m", "v2", "bob", b"")
    _sign(repo.repository, "v2", "carol")
    signed = _keys(repo, "/signatures/")
    counted = FaultyBackend(repo.repository.backend)
    result = gc.collect(Repository(counted, repo.name, jobs=4))
    assert result.plan.versions == 2 and result.deleted == 0
    assert [key for op, key, _ in counted.calls if "/signatures/" in key and op != "list"] == []
    ok(repo.cli("model", "delete-version", repo.name, "m", "--tag", "v2"))
    _push(repo, "v2", 2)  # the same files again: garbage bundles stay, gc runs
    res = ok(repo.cli("repo", "gc", repo.name))
    assert res.stderr == "" and "deleted 0 blobs" in res.stdout
    assert _keys(repo, "/signatures/") == signed - {signature_key("m", "v2", h) for h in ("bob", "carol")}
    assert repo.repository.get_version("m", "v1").digest == v1.digest


def test_a_signature_stored_while_gc_holds_its_lease_does_not_stop_it(repo):
    """gc's second listing stops it when a manifest key appears (a writer ignored the lease);
    signing writes no manifest and takes no lease, so a signature stored meanwhile must pass."""
    _push(repo, "v1", 1)

    def sign_once(op: str, key: str) -> None:
        if op == "get" and key == manifest_key("m", "v1") and not repo.repository.list_signatures("m", "v1"):
            _sign(repo.repository, "v1", "alice")

    hooked = HookedBackend(repo.repository.backend, after=sign_once)
    result = gc.collect(Repository(hooked, repo.name, jobs=1))
    assert result.plan.versions == 1 and repo.repository.list_signatures("m", "v1") == ["alice"]


# == repo check ==================================================================================
MALFORMED = (
    "models/m/signatures/v1/alice.txt",  # another suffix
    "models/m/signatures/v1.sig",  # no tag directory
    "models/m/signatures/v1/sub/alice.sig",  # nested
    "models/m/signatures/v 1/alice.sig",  # an invalid tag name
    "models/m/signatures/v1/.sig",  # no signer
)


def test_check_reports_keys_in_signatures_that_are_no_signature(repo):
    _push(repo, "v1", 1)
    _sign(repo.repository, "v1", "alice")
    for key in MALFORMED:
        repo.repository.backend.put(key, sigstore_bundle_bytes(3))
    broken = _broken(repo)
    assert set(broken) == set(MALFORMED)
    for why in broken.values():
        assert why.startswith("not a signature aim_cli wrote (those are models/<model>/signatures/<tag>/<signer>.sig")
        assert why.endswith("remove it from the storage by hand")
    text = repo.cli("repo", "check", repo.name)
    assert text.returncode == 5 and f"broken    {MALFORMED[0]}: not a signature" in text.stdout
    assert text.stderr.startswith(f"error: repository {repo.name!r} has {len(MALFORMED)} problems")


@LOCAL_ONLY  # judging bytes knows no backend; the reads are tested on both (oversized, malformed)
@pytest.mark.parametrize(
    "data, why",
    [
        (b"{not json", "not JSON"),
        (b"[1, 2]", "not an object"),
        (json.dumps({"mediaType": "application/json", "dsseEnvelope": {}}).encode(), "media type"),
        (json.dumps({"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json"}).encode(), "verificationMaterial"),
        (b"\x00" * 10, "not JSON"),
    ],
)
def test_check_reports_a_signature_that_is_not_a_sigstore_bundle(repo, data, why):
    _push(repo, "v1", 1)
    _sign(repo.repository, "v1", "alice")
    repo.repository.put_signature("m", "v1", "mallory", data)
    broken = _broken(repo)
    assert list(broken) == [signature_key("m", "v1", "mallory")]
    assert broken[signature_key("m", "v1", "mallory")].startswith("not a Sigstore bundle of a signature (")
    assert (
        why in broken[signature_key("m", "v1", "mallory")]
        and "sign the version again" in broken[signature_key("m", "v1", "mallory")]
    )


def test_check_reads_signatures_bounded_once_each_and_reports_an_oversized_one(repo):
    _push(repo, "v1", 1)
    _sign(repo.repository, "v1", "alice", "bob")
    # The bound is what a signature of this version can need (its manifest's files), far below
    # MAX_SIGNATURE_BYTES: a bundle over it is damage without being parsed.
    bound = max_bundle_bytes(repo.repository.get_version("m", "v1").manifest)
    assert bound < MAX_SIGNATURE_BYTES
    big = sigstore_bundle_bytes(4)
    repo.repository.put_signature("m", "v1", "huge", big + b" " * (bound + 1 - len(big)))
    counted = FaultyBackend(repo.repository.backend)
    report = check_repo(Repository(counted, repo.name, jobs=4))
    gets = sorted((key, size) for op, key, size in counted.calls if op == "get" and "/signatures/" in key)
    assert gets == [(signature_key("m", "v1", h), bound) for h in ("alice", "bob", "huge")]
    assert [(key, why.split(";")[0]) for key, why in report.broken] == [
        (
            signature_key("m", "v1", "huge"),
            f"signature {signature_key('m', 'v1', 'huge')} is larger than {bound} bytes, so it is not one",
        )
    ]
    assert report.versions == 1


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(
        st.binary(max_size=300),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=40),
            lambda inner: (
                st.lists(inner, max_size=4)
                | st.dictionaries(
                    st.sampled_from(["mediaType", "dsseEnvelope", "verificationMaterial", "x"]), inner, max_size=4
                )
            ),
        ).map(lambda doc: json.dumps(doc).encode()),
    )
)
def test_the_bundle_judge_of_repo_check_returns_a_reason_or_none_for_any_bytes(data):
    from aim_cli.signing.bundle import bundle_problem

    why = bundle_problem(data)
    assert why is None or (isinstance(why, str) and why and "\n" not in why)
    if why is None:
        doc = json.loads(data)
        assert doc["mediaType"].startswith("application/vnd.dev.sigstore.bundle") and isinstance(
            doc["dsseEnvelope"], dict
        )


def test_valid_signatures_are_no_damage_and_check_counts_versions_alone(repo):
    _push(repo, "v1", 1)
    _sign(repo.repository, "v1", "alice", "bob")
    res = ok(repo.cli("repo", "check", repo.name, "--json"))
    assert _json(res)["versions"] == 1 and _json(res)["broken"] == [] and res.stderr == ""


# == model copy ==================================================================================
def _with_local(repo, name: str) -> None:
    """Add a local repository ``name`` beside the fixture's, in its config."""
    path = repo.tmp / name
    repo.config.write_text(repo.config.read_text() + f"  {name}: {{type: local, path: {path}}}\n")


def test_copy_carries_signatures_onto_copied_and_skipped_tags_never_onto_conflicts(repo):
    """The fixture's repository is the destination: signatures are written by exclusive create
    on S3 too."""
    _with_local(repo, "src")
    src = lambda *a: ok(repo.cli(*a))  # noqa: E731
    for tag, variant in (("v1", 1), ("v2", 2), ("v3", 3)):
        src("model", "push", "src", "m", make_variant_model(repo.tmp / f"s-{tag}", variant=variant), "--tag", tag, "-q")
    ok(repo.cli("model", "copy", "src", "m", repo.name, "--tag", "v1", "-q"))  # v1 unsigned, before signing
    _push(repo, "v3", 9)  # another v3 there: a conflict
    from aim_cli import api

    source = api.open_repository("src", config=str(repo.config))
    planted = {
        "v1": _sign(source, "v1", "alice", "bob"),
        "v2": _sign(source, "v2", "alice"),
        "v3": _sign(source, "v3", "alice"),
    }
    before = _keys(repo)

    plan = repo.cli("model", "copy", "src", "m", repo.name, "--dry-run", "--json")
    assert plan.returncode == 4 and _keys(repo) == before  # conflict exits 4; a dry run writes nothing
    shown = {v["tag"]: (v["status"], v["signatures"]) for v in _json(plan)["versions"]}
    assert shown == {"v1": ("skipped", 2), "v2": ("copied", 1), "v3": ("conflict", 0)}
    assert _json(plan)["signatures"] == 3
    text = repo.cli("model", "copy", "src", "m", repo.name, "--dry-run").stdout
    assert "skipped   m:v1" in text and "same digest; would copy 2 signatures" in text
    assert ", 3 signatures\n" in text

    done = repo.cli("model", "copy", "src", "m", repo.name, "--json", "-q")
    assert done.returncode == 4
    assert {v["tag"]: v["signatures"] for v in _json(done)["versions"]} == {"v1": 2, "v2": 1, "v3": 0}
    for tag in ("v1", "v2"):
        assert repo.repository.list_signatures("m", tag) == sorted(planted[tag])
        for hint, data in planted[tag].items():
            assert repo.repository.get_signature("m", tag, hint) == data  # exact bytes
    assert repo.repository.list_signatures("m", "v3") == []
    assert _broken(repo) == {}

    # A new signer on v1: the rerun copies that one only (the others are held already).
    extra = _sign(source, "v1", "carol")
    again = _json(repo.cli("model", "copy", "src", "m", repo.name, "--json", "-q"))
    assert {v["tag"]: v["signatures"] for v in again["versions"]} == {"v1": 1, "v2": 0, "v3": 0}
    assert again["signatures"] == 1 and again["blobs"] == 0
    assert repo.repository.get_signature("m", "v1", "carol") == extra["carol"]


def test_copy_out_of_the_repository_carries_signatures_and_reruns_copy_none(repo):
    """The fixture's repository is the source (signatures listed and read on S3 too)."""
    _with_local(repo, "dst")
    _push(repo, "v1", 1)
    planted = _sign(repo.repository, "v1", "alice", "bob")
    first = _json(ok(repo.cli("model", "copy", repo.name, "m", "dst", "--json", "-q")))
    assert first["copied"] == ["v1"] and first["signatures"] == 2
    from aim_cli import api

    dst = api.open_repository("dst", config=str(repo.config))
    assert {h: dst.get_signature("m", "v1", h) for h in dst.list_signatures("m", "v1")} == planted
    rerun = _json(ok(repo.cli("model", "copy", repo.name, "m", "dst", "--json", "-q")))
    assert rerun["skipped"] == ["v1"] and rerun["signatures"] == 0


# == listings ====================================================================================
def test_listings_do_not_see_signatures_and_never_warn_about_them(repo):
    _push(repo, "v1", 1)
    _push(repo, "v2", 2)
    _push(repo, "v1", 1, model="other")
    commands = (
        ("model", "versions", repo.name, "m", "--json"),
        ("model", "list", repo.name, "--json"),
        ("model", "versions", repo.name, "other"),
    )
    unsigned = [ok(repo.cli(*c)).stdout for c in commands]
    _sign(repo.repository, "v1", "alice", "bob")
    _sign(repo.repository, "v2", "alice")
    _sign(repo.repository, "v1", "alice", model="other")
    for command, before in zip(commands, unsigned, strict=True):
        res = ok(repo.cli(*command))
        assert (res.stdout, res.stderr) == (before, "")
    assert repo.repository.summary_problems() == []
    assert repo.repository.get_summary("m", "v1").tag == "v1" and summary_key("m", "v1") in _keys(repo)
    res = ok(repo.cli("model", "pull", repo.name, "m", str(repo.tmp / "pulled"), "-q"))  # the newest: v2
    assert res.stderr == "" and (repo.tmp / "pulled").is_dir()
