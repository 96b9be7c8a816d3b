"""aim_cli.api exports every name its __all__ promises, the lazily imported result types too."""

import ast
import subprocess
import sys

import aim_cli.api as aim


def test_every_name_in_all_resolves():
    missing = [name for name in aim.__all__ if getattr(aim, name, None) is None]
    assert not missing, f"aim_cli.api.__all__ names what it does not export: {missing}"
    assert aim.SignResult.__module__ == "aim_cli.signing.sign"  # a lazy one, imported on first use


def _loaded_after(code: str) -> list[str]:
    """The aim_cli modules a fresh interpreter holds after running ``code``."""
    probe = f"import sys\n{code}\nprint(sorted(m for m in sys.modules if m.startswith('aim_cli')))"
    res = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return ast.literal_eval(res.stdout.strip().splitlines()[-1])


def test_importing_the_api_loads_nothing_else():
    """`import aim_cli.api` costs nothing: each name loads its module on first use (docs/design.md §13)."""
    assert _loaded_after("import aim_cli.api") == ["aim_cli", "aim_cli.api"]


def test_one_function_loads_only_its_own_modules():
    """`from aim_cli.api import list_models` works as an eager import did, and loads no transfer
    pipeline, signing or S3 code; `pull` loads its module, not push's."""
    listing = _loaded_after("from aim_cli.api import list_models\nassert callable(list_models)")
    assert "aim_cli.api.versions" in listing
    assert not [
        m for m in listing if m.startswith(("aim_cli.pull", "aim_cli.push", "aim_cli.signing", "aim_cli.backends.s3"))
    ]
    pull = _loaded_after("from aim_cli.api import pull\nassert callable(pull)")
    assert "aim_cli.api.transfers" in pull and "aim_cli.push" not in pull and "aim_cli.copy" not in pull


def test_dir_lists_every_export():
    assert set(aim.__all__) <= set(dir(aim))
