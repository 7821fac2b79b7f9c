"""The run configuration: validated against workflow/schemas/config.schema.yaml, defaults filled in.

Validation happens once, when Snakemake parses the workflow, so a typo fails before any job
(let alone any GPU hour) runs. Errors name the offending key and, for typos, the nearest
allowed key.
"""

from __future__ import annotations

import copy
import difflib
import os
from pathlib import Path

import jsonschema
import yaml

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "workflow" / "schemas" / "config.schema.yaml"


class ConfigError(ValueError):
    """The configuration is invalid; the message names the key and what to do."""


def load_schema() -> dict:
    with open(SCHEMA_PATH) as f:
        return yaml.safe_load(f)


def _with_defaults(validator_class):
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for prop, sub in properties.items():
                if "default" in sub and prop not in instance:
                    instance[prop] = copy.deepcopy(sub["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


_Validator = _with_defaults(jsonschema.Draft202012Validator)


def _key_path(path) -> str:
    return ".".join(str(p) for p in path) or "<top level>"


def _schema_at(schema: dict, path) -> dict:
    node = schema
    for part in path:
        if isinstance(part, int):
            node = node.get("items", {})
        elif part in node.get("properties", {}):
            node = node["properties"][part]
        elif isinstance(node.get("additionalProperties"), dict):
            node = node["additionalProperties"]
        else:
            return {}
    return node


def _describe(error: jsonschema.ValidationError, schema: dict, source: str) -> str:
    where = _key_path(error.absolute_path)
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        allowed = sorted(_schema_at(schema, error.absolute_path).get("properties", {}))
        unknown = sorted(set(error.instance) - set(allowed))
        parts = []
        for key in unknown:
            full = f"{where}.{key}" if error.absolute_path else key
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            parts.append(f"unknown config key '{full}'{hint}")
        return f"{source}: " + "; ".join(parts) + f" (allowed here: {', '.join(allowed)})"
    if error.validator == "required":
        return f"{source}: {where}: {error.message}"
    if error.validator == "propertyNames":
        return f"{source}: {where}: name {error.instance!r} must be lower-case letters, digits and '-'"
    if error.validator == "anyOf" and error.context:  # one value or a list: say what each form wants
        reasons = "; ".join(dict.fromkeys(e.message for e in error.context))
        return f"{source}: config key '{where}': {error.instance!r} is neither of the allowed forms ({reasons})"
    return f"{source}: config key '{where}': {error.message}"


def _coerce(value, schema: dict):
    """Turn strings into the numbers/booleans the schema asks for: ``snakemake --config`` passes
    nested values (``--config "sweeps={paper: {l1_coeff: 5}}"``) as strings."""
    if "anyOf" in schema:  # one value or a list of them (sweep grid keys): the first that takes it
        for alternative in schema["anyOf"]:
            coerced = _coerce(value, alternative)
            if coerced is not value:
                return coerced
        return value
    types = schema.get("type", [])
    types = [types] if isinstance(types, str) else types
    if isinstance(value, str) and "array" in types and value.strip().startswith("["):
        parsed = yaml.safe_load(value)
        if isinstance(parsed, list):
            return _coerce(parsed, schema)
    if isinstance(value, str) and set(types) & {"number", "integer", "boolean"}:
        parsed = yaml.safe_load(value)
        ok = {"number": (int, float), "integer": (int,), "boolean": (bool,)}
        if any(isinstance(parsed, ok[t]) for t in types if t in ok):
            return parsed
        return value
    if isinstance(value, dict):
        props, extra = schema.get("properties", {}), schema.get("additionalProperties")
        return {k: _coerce(v, props.get(k, extra if isinstance(extra, dict) else {})) for k, v in value.items()}
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [_coerce(v, schema["items"]) for v in value]
    return value


def validate(config: dict, source: str = "config") -> dict:
    """Return a validated copy of ``config`` with every default filled in; raise ConfigError."""
    schema = load_schema()
    config = _coerce(copy.deepcopy(dict(config)), schema)
    errors = sorted(_Validator(schema).iter_errors(config), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        raise ConfigError("\n".join(_describe(e, schema, source) for e in errors))
    _check_consistency(config, source)
    return config


def _check_consistency(config: dict, source: str) -> None:
    for name, ds in config["datasets"].items():
        if "generate" in ds:
            expected = f"results/datasets/{name}"
            if os.path.normpath(ds["root"]) != expected:
                raise ConfigError(
                    f"{source}: datasets.{name}.root is {ds['root']!r}, but a generated demo dataset lives at "
                    f"{expected!r}; set datasets.{name}.root: {expected}"
                )
    for split in config["extraction"]["splits"]:
        for name, ds in config["datasets"].items():
            if split not in ds["splits"]:
                raise ConfigError(
                    f"{source}: extraction.splits asks for split {split!r}, but datasets.{name}.splits has only "
                    f"{sorted(ds['splits'])}"
                )
    unknown = sorted(set(config["extraction"]["parts_by_dataset"]) - set(config["datasets"]))
    if unknown:
        raise ConfigError(f"{source}: extraction.parts_by_dataset names {unknown}, which are not datasets; "
                          f"the datasets are {sorted(config['datasets'])}")
    needed = {config["evaluation"]["split"]} | {s["train_split"] for s in config["sweeps"].values()}
    missing = needed - set(config["extraction"]["splits"])
    if missing:
        raise ConfigError(f"{source}: splits {sorted(missing)} are used for training or evaluation but are not in "
                          f"extraction.splits {config['extraction']['splits']}")


def check_dataset_roots(config: dict) -> None:
    """Every dataset that is not generated must exist on disk, with its split directories."""
    for name, ds in config["datasets"].items():
        if "generate" in ds:
            continue
        root = Path(ds["root"])
        if not root.is_dir():
            raise ConfigError(
                f"dataset '{name}': root {root.resolve()} does not exist; set datasets.{name}.root in the config"
            )
        for split, sub in ds["splits"].items():
            if not (root / sub).is_dir():
                raise ConfigError(
                    f"dataset '{name}': {root.resolve() / sub} (split '{split}') does not exist; "
                    f"fix datasets.{name}.splits.{split} or datasets.{name}.root"
                )
