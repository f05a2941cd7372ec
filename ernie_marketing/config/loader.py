"""Load YAML into the typed config, apply `-o` overrides and save it back."""

import dataclasses
import datetime
import math
import os
import re
import typing

import yaml

from ..errors import ConfigError
from .schema import Config

_MISSING = dataclasses.MISSING


class _YamlLoader(yaml.SafeLoader):
    """A SafeLoader that also reads `5e-5` as a float and keeps dates as text.

    PyYAML follows YAML 1.1, where a float needs a dot, so it reads `5e-5`
    as the string "5e-5"; YAML 1.2 and Python read it as a number. YAML 1.1
    also turns an unquoted 1997-09-30 into a date and fails with a traceback
    on 1997-02-30, so dates stay strings for the schema to check.
    """


_YamlLoader.yaml_implicit_resolvers = {
    first: [(tag, pattern) for tag, pattern in resolvers
            if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}

_YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _construct_unique_mapping(loader, node, deep=False):
    """Build a mapping, rejecting a key given twice.

    PyYAML keeps the last value of a repeated key, so a second `train:`
    section would silently replace the first.
    """
    seen = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            # Keys merged in with `<<: *anchor` may be overridden on purpose.
            continue
        key = loader.construct_object(key_node, deep=deep)
        line = key_node.start_mark.line + 1
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} on line {line} repeats the key on "
                f"line {seen[key]}; keep one of them", key_node.start_mark)
        seen[key] = line
    return loader.construct_mapping(node, deep=deep)


_YamlLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping)


def load_config(path, overrides=()):
    """Read a YAML config file, apply `section.key=value` overrides, validate."""
    config = build_config(read_config_mapping(path, overrides))
    _resolve_paths(config, os.path.dirname(os.path.abspath(path)))
    return config


def build_config(raw):
    """Check a plain mapping against the schema and return a validated Config."""
    config = build_dataclass(Config, raw)
    config.validate()
    return config


def read_config_mapping(path, overrides=()):
    """Read a YAML config file into a mapping and apply `-o` overrides.

    Each override is `a.b.c=value`, with the value parsed as YAML. Raises
    ConfigError for a missing, unreadable or invalid file or override.
    """
    raw = _read_yaml(path)
    for item in overrides:
        _apply_override(raw, item)
    return raw


def build_dataclass(cls, raw, path=""):
    """Create dataclass `cls` from a mapping, rejecting unknown keys and types.

    `path` is the dotted key of `raw` that error messages name, or "" for
    the whole file. The result is not validated; call its `validate`.
    """
    return _build(cls, raw, path)


def resolve_path(value, base_dir):
    """Return `value`, or its path from `base_dir` when only that exists.

    An absolute path, a relative path that exists from the working
    directory, an empty string and None are returned unchanged.
    """
    if value and not os.path.isabs(value) and not os.path.exists(value):
        candidate = os.path.join(base_dir, value)
        if os.path.exists(candidate):
            return os.path.normpath(candidate)
    return value


def config_to_dict(config):
    return dataclasses.asdict(config)


def save_config(config, path):
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump(config_to_dict(config), f, allow_unicode=True,
                       sort_keys=False)


def _read_yaml(path):
    if os.path.isdir(path):
        raise ConfigError(f"config path {path} is a directory; pass the YAML "
                          "file, e.g. -c configs/online_shopping.yaml")
    if not os.path.isfile(path):
        raise ConfigError(f"config file not found: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            raw = yaml.load(f, Loader=_YamlLoader)
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not UTF-8 text; save the config as "
                          "UTF-8") from None
    except yaml.YAMLError as exc:
        line = ""
        mark = getattr(exc, "problem_mark", None)
        if mark is not None:
            line = f" at line {mark.line + 1}, column {mark.column + 1}"
        raise ConfigError(f"{path} is not valid YAML{line}: "
                          f"{getattr(exc, 'problem', exc)}") from None
    if raw is None:
        raise ConfigError(f"config file {path} is empty; it needs at least the "
                          "data and tasks sections")
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must contain a mapping of sections "
                          f"(data, tasks, ...), got {type(raw).__name__}")
    return raw


def _apply_override(raw, item):
    """Set `a.b.c=value` in the raw mapping; the value is parsed as YAML.

    A list item is addressed by index (`tasks.0.weight`) or by its `name`
    (`tasks.sentiment.weight`).
    """
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {item!r} is invalid: expected "
                          "section.key=value, e.g. train.max_steps=60")
    try:
        value = yaml.load(text, Loader=_YamlLoader)
    except yaml.YAMLError:
        raise ConfigError(f"override {item!r}: the value {text!r} is not a "
                          "YAML scalar; quote it") from None
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"override {item!r} is invalid: the key {key!r} has "
                          "an empty part; write section.key=value, e.g. "
                          "train.max_steps=60")
    node = raw
    for depth, part in enumerate(parts[:-1]):
        node = _child(node, part, ".".join(parts[: depth + 1]))
    last = parts[-1]
    if isinstance(node, list):
        node[_list_index(node, last, key)] = value
    elif isinstance(node, dict):
        node[last] = value
    else:
        parent = ".".join(parts[:-1])
        raise ConfigError(f"override path {key} is invalid: {parent} is "
                          f"{node!r} ({type(node).__name__}), which has no keys")


def _child(node, part, dotted):
    if isinstance(node, list):
        return node[_list_index(node, part, dotted)]
    if not isinstance(node, dict):
        raise ConfigError(f"override path {dotted} is invalid: "
                          f"{type(node).__name__} has no keys")
    if node.get(part) is None:
        node[part] = {}
    return node[part]


def _list_index(items, part, dotted):
    if part.isdigit() and int(part) < len(items):
        return int(part)
    for i, item in enumerate(items):
        if isinstance(item, dict) and item.get("name") == part:
            return i
    names = [item.get("name") for item in items if isinstance(item, dict)]
    raise ConfigError(f"override path {dotted} is invalid: no item {part!r}; "
                      f"use an index 0-{len(items) - 1} or a name from {names}")


def _build(cls, raw, path):
    """Create dataclass `cls` from a mapping, checking keys and types."""
    where = path or "config"
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}={raw!r} is invalid: expected a mapping "
                          f"with keys {_field_names(cls)}")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in known:
            raise ConfigError(f"{_join(path, key)} is not a known key; "
                              f"allowed keys in {where}: {_field_names(cls)}")
    values = {}
    for name, fld in known.items():
        dotted = _join(path, name)
        if name not in raw:
            required = (fld.default is _MISSING
                        and fld.default_factory is _MISSING)
            if required:
                raise ConfigError(f"{dotted} is missing: it is required "
                                  f"({_describe(hints[name])})")
            continue
        values[name] = _convert(hints[name], raw[name], dotted)
    return cls(**values)


def _convert(hint, value, path):
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, path)
    if origin is typing.Union:
        if value is None and type(None) in args:
            return None
        for option in args:
            if option is type(None):
                continue
            if dataclasses.is_dataclass(option) and isinstance(value, dict):
                # An optional section given as a mapping: report its own
                # errors, e.g. a missing key, not "wrong type".
                return _build(option, value, path)
            try:
                return _convert(option, value, path)
            except ConfigError:
                pass
        _type_error(hint, value, path)
    if origin is typing.Literal:
        if isinstance(value, bool) and ("on" if value else "off") in args:
            # YAML 1.1 reads an unquoted on or off as a boolean.
            value = "on" if value else "off"
        if value not in args:
            raise ConfigError(f"{path}={value!r} is invalid: allowed values "
                              f"are {', '.join(map(repr, args))}")
        return value
    if origin in (list, typing.List):
        if not isinstance(value, list):
            _type_error(hint, value, path)
        return [_convert(args[0], v, f"{path}[{i}]") for i, v in enumerate(value)]
    return _scalar(hint, value, path)


def _scalar(hint, value, path):
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise ConfigError(f"{path}={value!r} is invalid: expected a "
                                  "finite number")
            return float(value)
    elif hint is str:
        if isinstance(value, str):
            return value
    _type_error(hint, value, path)


def _type_error(hint, value, path):
    raise ConfigError(f"{path}={value!r} has the wrong type "
                      f"({type(value).__name__}): expected {_describe(hint)}"
                      f"{_quote_hint(hint, value)}")


def _quote_hint(hint, value):
    """Explain how YAML turned text meant as a string into another type."""
    if not _accepts_str(hint):
        return ""
    if isinstance(value, bool):
        return ("; YAML reads unquoted yes/no/on/off/true/false as a boolean, "
                "so quote the value, e.g. 'yes'")
    if isinstance(value, (dict, list)):
        return ("; YAML reads {...} as a mapping and [...] as a list, so "
                "quote the value, e.g. \"{title}: {review}\"")
    if isinstance(value, datetime.date):
        return ("; YAML reads an unquoted YYYY-MM-DD as a date, so quote the "
                "value, e.g. '1997-09-30'")
    return ""


def _accepts_str(hint):
    if hint is str:
        return True
    return any(_accepts_str(a) for a in typing.get_args(hint)
               if typing.get_origin(hint) is typing.Union)


def _describe(hint):
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return f"a mapping with keys {_field_names(hint)}"
    if origin is typing.Union:
        parts = [_describe(a) for a in args if a is not type(None)]
        text = " or ".join(parts)
        return text + " or null" if type(None) in args else text
    if origin is typing.Literal:
        return "one of " + ", ".join(map(repr, args))
    if origin in (list, typing.List):
        return f"a list of {_describe(args[0])}"
    names = {bool: "true or false", int: "an integer", float: "a number",
             str: "a string"}
    return names.get(hint, getattr(hint, "__name__", str(hint)))


def _field_names(cls):
    return ", ".join(f.name for f in dataclasses.fields(cls))


def _join(path, key):
    return f"{path}.{key}" if path else str(key)


def _resolve_paths(config, base_dir):
    """Resolve relative data paths that are not found from the working directory.

    A relative path that exists from the working directory is kept; one that
    does not is tried from the config file's folder. So `configs/x.yaml`
    with `../shared/...` paths runs from the repository root, and paths
    written relative to the config file work from anywhere.
    """
    data = config.data
    for name in ("train_path", "valid_path", "test_path"):
        setattr(data, name, resolve_path(getattr(data, name), base_dir))
