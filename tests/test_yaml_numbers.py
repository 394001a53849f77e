"""YAML 1.1 (PyYAML) reads `1e-2` as a string; the config error says how to write the number."""

import pytest
from conftest import TEST_CONFIG

from twoclocks.config import ConfigError, load_config, yaml_number_hint


def test_a_number_yaml_reads_as_a_string_gets_the_spelling_that_works(tmp_path):
    text = TEST_CONFIG.read_text()
    assert "lr: 0.01" in text and "eps_star: 0.1" in text
    bad = tmp_path / "bad.yaml"
    bad.write_text(text.replace("lr: 0.01", "lr: 1e-2").replace("eps_star: 0.1", "eps_star: 1E1"))
    with pytest.raises(ConfigError) as err:
        load_config(bad)
    assert "base.lr = '1e-2' has the wrong type" in str(err.value)
    assert "(YAML reads 1e-2 as a string: write 1.0e-2)" in str(err.value)
    assert "(YAML reads 1E1 as a string: write 1.0e+1)" in str(err.value)
    # the suggested spellings load
    good = text.replace("lr: 0.01", "lr: 1.0e-2").replace("eps_star: 0.1", "eps_star: 1.0e-1")
    bad.write_text(good)
    study = load_config(bad)
    assert study.cells[0].params["lr"] == 0.01


@pytest.mark.parametrize(
    ("value", "hint"),
    [("5e3", "5.0e+3"), ("-2e-1", "-2.0e-1"), ("1.0e2", "1.0e+2"), (".5E-3", ".5e-3")],
)
def test_hint_spellings(value, hint):
    assert yaml_number_hint(value).endswith(f"write {hint})")


@pytest.mark.parametrize("value", ["adamw", "1e", "e5", 0.01, None, "1.0e-2x"])
def test_no_hint_for_other_values(value):
    assert yaml_number_hint(value) == ""
