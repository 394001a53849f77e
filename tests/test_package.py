"""The package's public surface: `twoclocks.__all__`, dir() and completion, a light import."""

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _run(code: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_import_is_light_and_dir_offers_the_public_names():
    out = _run(
        "import sys, rlcompleter, twoclocks\n"
        "heavy = sorted(m for m in ('torch', 'xarray', 'zarr', 'pandas') if m in sys.modules)\n"
        "print(heavy)\n"
        "print(sorted(n for n in dir(twoclocks) if not n.startswith('_')))\n"
        "c = rlcompleter.Completer({'twoclocks': twoclocks})\n"
        "print(c.complete('twoclocks.load_s', 0))\n"
    ).splitlines()
    assert out[0] == "[]"
    assert out[1] == "['Cell', 'ConfigError', 'Study', 'load_config', 'load_study']"
    assert out[2] == "twoclocks.load_study("


def test_every_exported_name_resolves_to_its_definition():
    import twoclocks
    from twoclocks.config import ConfigError, load_config
    from twoclocks.study import load_study

    assert twoclocks.load_study is load_study
    assert twoclocks.load_config is load_config and twoclocks.ConfigError is ConfigError
    for name in twoclocks.__all__:
        assert getattr(twoclocks, name) is not None
    ns: dict = {}
    exec("from twoclocks import *", ns)
    assert {"load_study", "load_config", "ConfigError"} <= set(ns)


def test_unknown_attribute_is_an_attribute_error():
    import pytest

    import twoclocks

    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        twoclocks.nope  # noqa: B018


@pytest.mark.slow  # > 2 s: full suite only (fast tier < 90 s)
def test_cli_help_speaks_to_users_not_to_the_tracker():
    out = subprocess.run(
        [sys.executable, "-m", "twoclocks.bench", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert out.returncode == 0, out.stderr
    assert "how fast the stacked engine is" in out.stdout
    assert "issue" not in out.stdout.lower()
