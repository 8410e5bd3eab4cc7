"""YAML configs -> typed pydantic models, with `key.sub=value` command-line overrides.

Every section forbids unknown keys, so a typo fails loudly. Errors become one line:
    configs/x.yaml: train.optim.lr: expected float > 0, got 'abc'
A YAML file may start from another with `base: other.yaml` (path relative to the file);
its keys are deep-merged over the base.
"""
from __future__ import annotations

import difflib
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from .errors import ConfigError, reading_text

T = TypeVar("T", bound=BaseModel)


class Section(BaseModel):
    """Base of every config section: unknown keys and bad assignments are errors."""
    model_config = ConfigDict(extra="forbid", validate_assignment=True,
                              protected_namespaces=())


def parse_override(text: str) -> tuple[list[str], Any]:
    """`a.b=3` -> (['a', 'b'], 3); the value is read as YAML (numbers, bools, lists, null)."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r}: expected key.sub=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw  # not YAML: keep the literal string, the schema decides
    return key.split("."), value


def deep_merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def read_yaml(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict:
    """Read a YAML mapping, resolving `base:` chains (cycles are an error)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    if path.resolve() in _seen:
        raise ConfigError(f"{path}: 'base' chain loops back to itself")
    try:
        with reading_text(path):
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}:{where} invalid YAML ({getattr(exc, 'problem', exc)})") from None
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys at the top level, "
                          f"got {type(data).__name__}")
    base = data.pop("base", None)
    if base is not None:
        data = deep_merge(read_yaml(path.parent / base, _seen + (path.resolve(),)), data)
    return data


def set_dotted(data: dict, keys: list[str], value: Any) -> None:
    node = data
    for key in keys[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            child = node[key] = {}
        node = child
    node[keys[-1]] = value


def _annotation_at(schema: type[BaseModel], loc: tuple) -> Any:
    """The type annotation of the field at a pydantic error location (best effort)."""
    node: Any = schema
    for part in loc:
        if isinstance(node, type) and issubclass(node, BaseModel) and part in node.model_fields:
            node = node.model_fields[part].annotation
        elif typing.get_origin(node) is dict:
            node = typing.get_args(node)[1]
        elif typing.get_origin(node) in (list, tuple):
            node = typing.get_args(node)[0]
        else:
            return None
    return node


def _type_name(annotation: Any) -> str:
    if annotation is None:
        return "?"
    if isinstance(annotation, type):
        return annotation.__name__
    text = str(annotation).replace("typing.", "")
    return text


def _describe(schema: type[BaseModel], err: dict) -> str:
    loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and "[" in p))
    key = ".".join(str(p) for p in loc) or "<top level>"
    if err["type"] == "extra_forbidden":
        parent = _annotation_at(schema, loc[:-1])
        hint = ""
        if isinstance(parent, type) and issubclass(parent, BaseModel):
            close = difflib.get_close_matches(str(loc[-1]), list(parent.model_fields), n=1)
            hint = f" (did you mean '{'.'.join(map(str, loc[:-1] + (close[0],)))}'?)" if close else \
                f" (known keys: {', '.join(parent.model_fields)})"
        return f"{key}: unknown key{hint}"
    expected = _type_name(_annotation_at(schema, loc))
    got = err.get("input")
    got_text = repr(got) if not isinstance(got, dict) else "a mapping"
    if len(got_text) > 60:
        got_text = got_text[:57] + "..."
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "value_error" and isinstance(got, dict):   # a section's own check
        return f"{key}.{msg}" if loc else msg
    return f"{key}: expected {expected} ({msg}), got {got_text}"


def build_config(schema: type[T], data: dict, source: str = "config") -> T:
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        more = f" (and {len(errors) - 1} more error(s))" if len(errors) > 1 else ""
        raise ConfigError(f"{source}: {_describe(schema, errors[0])}{more}") from None


def load_config(schema: type[T], path: str | Path | None = None,
                overrides: typing.Iterable[str] = ()) -> T:
    """Load `path` (optional) into `schema`, then apply `key.sub=value` overrides."""
    data = read_yaml(path) if path is not None else {}
    overrides = list(overrides)
    for text in overrides:
        keys, value = parse_override(text)
        set_dotted(data, keys, value)
    source = str(path) if path is not None else "config"
    if overrides:
        source += " + overrides"
    return build_config(schema, data, source)


def dump_config(cfg: BaseModel) -> str:
    """The fully resolved config as YAML (written into run folders for provenance)."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
