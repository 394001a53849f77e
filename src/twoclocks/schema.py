"""The study config's JSON schema: loading it, reading its defaults, and one-line messages for
its violations (key, bad value, what is allowed). The schema is the one home of every default.
"""

from __future__ import annotations

import copy
import functools
import math
import re
from pathlib import Path
from typing import Any

import jsonschema
import yaml

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"


def load_schema(path: Path | None = None) -> dict:
    """The schema at `path` (default: the shipped one), a fresh copy the caller may change."""
    if path is None or Path(path).resolve() == SCHEMA_PATH:
        return copy.deepcopy(_shipped_schema())
    with open(path) as fh:
        return yaml.safe_load(fh)


@functools.cache
def _shipped_schema() -> dict:
    with open(SCHEMA_PATH) as fh:
        return yaml.safe_load(fh)


def cell_defaults(schema: dict | None = None) -> dict[str, Any]:
    """Every cell key's default, from the schema (`$defs.cell`): the one home of these values.

    Code that meets a cell dict without some key falls back to these, never to its own literal.
    """
    props = (schema or _shipped_schema())["$defs"]["cell"]["properties"]
    return {k: copy.deepcopy(s["default"]) for k, s in props.items() if "default" in s}


def cell_default(key: str) -> Any:
    """The schema's default of one cell key (a KeyError names the keys that have one)."""
    defaults = cell_defaults()
    if key not in defaults:
        raise KeyError(
            f"cell key {key!r} has no default in the schema; keys with one: {sorted(defaults)}"
        )
    return defaults[key]


def section_default(section: str, key: str) -> Any:
    """The schema's default of `section.key` (e.g. `report`, `max_points_per_line`)."""
    props = _shipped_schema()["properties"][section]["properties"]
    if "default" not in props.get(key, {}):
        raise KeyError(f"{section}.{key} has no default in the schema")
    return copy.deepcopy(props[key]["default"])


def _path(parts) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "<top level>"


_SCIENTIFIC = re.compile(r"([-+]?)(\d+\.?\d*|\.\d+)[eE]([-+]?)(\d+)")


def yaml_number_hint(value: Any) -> str:
    """For a string that is a number in scientific notation, the spelling YAML reads as one.

    PyYAML follows YAML 1.1: a float needs a dot and a signed exponent, so `1e-2` and `1.0e2`
    are strings (`1.0e-2`, `1.0e+2` are floats). Empty for anything else.
    """
    m = _SCIENTIFIC.fullmatch(value.strip()) if isinstance(value, str) else None
    if m is None:
        return ""
    mantissa = m[2] if "." in m[2] else m[2] + ".0"
    fixed = f"{m[1]}{mantissa}e{m[3] or '+'}{m[4]}"
    return f" (YAML reads {value} as a string: write {fixed})"


def _describe(err: jsonschema.ValidationError) -> str:
    """One line: key, bad value, what is allowed."""
    key = _path(err.absolute_path)
    v = err.validator
    if v == "additionalProperties":
        extra = sorted(set(err.instance) - set(err.schema.get("properties", {})))
        allowed = ", ".join(sorted(err.schema.get("properties", {})))
        return f"{key}: unknown key(s) {', '.join(map(repr, extra))}; allowed keys: {allowed}"
    if "propertyNames" in err.absolute_schema_path:
        allowed = err.validator_value if v == "enum" else None
        hint = f"allowed: {', '.join(map(str, allowed))}" if allowed else err.message
        return f"{key}: key {err.instance!r} is not allowed; {hint}"
    if v == "enum":
        allowed = ", ".join(map(str, err.validator_value))
        return f"{key} = {err.instance!r} is not allowed; allowed values: {allowed}"
    if v == "required":
        return f"{key}: {err.message}; add it"
    if v == "type":
        hint = yaml_number_hint(err.instance)
        return f"{key} = {err.instance!r} has the wrong type; expected {err.validator_value}{hint}"
    bounds = {
        "minimum": ">=",
        "maximum": "<=",
        "exclusiveMinimum": ">",
        "exclusiveMaximum": "<",
    }
    if v in bounds:
        limit = f"{bounds[v]} {err.validator_value}"
        return f"{key} = {err.instance!r} is out of range; it must be {limit}"
    if v in ("minItems", "minProperties"):
        n = err.validator_value
        return f"{key} is empty; give at least {n} {'entry' if n == 1 else 'entries'}"
    return f"{key} = {err.instance!r}: {err.message}{yaml_number_hint(err.instance)}"


def schema_errors(instance: Any, schema: dict, prefix: tuple = ()) -> list[str]:
    """One line per violation of `schema` by `instance`; `prefix` is the instance's key path."""
    validator = jsonschema.Draft202012Validator(schema)
    errors = []
    for err in sorted(validator.iter_errors(instance), key=lambda e: list(map(str, e.path))):
        err.path.extendleft(reversed(prefix))
        errors.append(_describe(err))
    return errors


def _nonfinite(value: Any, parts: tuple = ()) -> list[tuple[str, float]]:
    """(config key, value) of every NaN or infinite number in a parsed config."""
    if isinstance(value, float) and not math.isfinite(value):
        return [(_path(parts), value)]
    if isinstance(value, dict):
        return [kv for key, v in value.items() for kv in _nonfinite(v, (*parts, key))]
    if isinstance(value, list):
        return [kv for i, v in enumerate(value) for kv in _nonfinite(v, (*parts, i))]
    return []


def schema_and_finite_errors(raw: dict, schema: dict) -> list[str]:
    """Schema errors, plus one error per NaN / infinite number (YAML `.nan`, `.inf`), which
    JSON Schema lets through (NaN fails no comparison) and which no key accepts. A key with a
    non-finite value gets only that message, not range errors on top."""
    bad = _nonfinite(raw)
    errors = [f"{key} = {v!r} is not a finite number; give a finite value" for key, v in bad]
    for err in schema_errors(raw, schema):
        if not any(err.startswith((f"{key} ", f"{key}:")) for key, _ in bad):
            errors.append(err)
    return errors
