"""aim_cli.api exports every name its __all__ promises, the lazily imported result types too."""

import aim_cli.api as aim


def test_every_name_in_all_resolves():
    missing = [name for name in aim.__all__ if getattr(aim, name, None) is None]
    assert not missing, f"aim_cli.api.__all__ names what it does not export: {missing}"
    assert aim.SignResult.__module__ == "aim_cli.signing.sign"  # a lazy one, imported on first use
