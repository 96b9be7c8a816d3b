"""--include/--exclude semantics: huggingface_hub's allow_patterns/ignore_patterns."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aim_cli.errors import UsageError
from aim_cli.util.patterns import PathFilter

PATHS = [
    "config.json",
    "model-00001-of-00002.safetensors",
    "model-00002-of-00002.safetensors",
    "tokenizer/vocab.json",
    "tokenizer/merges.txt",
    "onnx/model.onnx",
    "onnx/sub/weights.bin",
]


def selected(include=(), exclude=()):
    f = PathFilter.of(include, exclude)
    return [p for p in PATHS if f.selects(p)]


def test_star_matches_slashes_and_a_trailing_slash_means_the_directory():
    assert selected(["*.json"]) == ["config.json", "tokenizer/vocab.json"]
    assert selected(["tokenizer/"]) == ["tokenizer/vocab.json", "tokenizer/merges.txt"]
    assert selected(["onnx/*"]) == ["onnx/model.onnx", "onnx/sub/weights.bin"]
    assert selected(["**/*.bin"]) == ["onnx/sub/weights.bin"]
    assert selected(["model-0000[12]-*"]) == PATHS[1:3]
    assert selected(exclude=["onnx/", "*.txt"]) == PATHS[:4]
    assert selected(["*.json", "*.safetensors"], ["tokenizer/"]) == PATHS[:3]
    assert selected(["CONFIG.JSON"]) == []  # case-sensitive, as manifest paths are


def test_unmatched_patterns_are_named():
    f = PathFilter.of(["*.gguf", "*.json"], ["nope/", "*.txt"])
    assert f.unmatched(PATHS) == (["*.gguf"], ["nope/"])
    warnings = []
    with pytest.raises(UsageError, match=r"\*\.gguf"):
        f.check(PATHS, warnings.append)
    PathFilter.of(["*.json"], ["nope/"]).check(PATHS, warnings.append)
    assert warnings == ["warning: --exclude 'nope/' matches no file of the version"]
    with pytest.raises(UsageError):
        PathFilter.of([""])


paths = st.lists(st.from_regex(r"[a-z]{1,3}(/[a-z]{1,3}){0,2}\.(bin|json)", fullmatch=True), max_size=8)


@given(
    paths,
    st.lists(st.sampled_from(["*.bin", "a*", "*/", "b/", "*", "?.json"]), max_size=3),
    st.lists(st.sampled_from(["*.json", "c/", "*a*"]), max_size=2),
)
def test_includes_and_excludes_compose_as_in_huggingface_hub(names, include, exclude):
    from fnmatch import fnmatch

    def reference(path):  # huggingface_hub.utils.filter_repo_objects, restated
        inc = [p + "*" if p.endswith("/") else p for p in include]
        exc = [p + "*" if p.endswith("/") else p for p in exclude]
        return (not inc or any(fnmatch(path, p) for p in inc)) and not any(fnmatch(path, p) for p in exc)

    f = PathFilter.of(include, exclude)
    assert [p for p in names if f.selects(p)] == [p for p in names if reference(p)]
