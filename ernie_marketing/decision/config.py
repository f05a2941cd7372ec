"""Load the decision settings: a YAML file with one `decision` section."""

import os

from ..config.loader import build_dataclass, read_config_mapping
from ..config.schema import DecisionConfig
from ..errors import ConfigError

SECTION = "decision"


def load_decision_config(path, overrides=()):
    """Read a decision YAML file, apply `decision.key=value` overrides, validate."""
    if os.path.isfile(path):
        with open(path, "rb") as f:
            if not f.read().strip():
                raise ConfigError(f"decision config {path} is empty; it needs "
                                  "a `decision:` section")
    return build_decision_config(read_config_mapping(path, overrides), path)


def build_decision_config(raw, source="decision config"):
    """Check a mapping {"decision": {...}} and return a validated DecisionConfig."""
    unknown = sorted(set(raw) - {SECTION})
    if unknown or SECTION not in raw:
        raise ConfigError(f"{source} must contain only a `{SECTION}:` section; "
                          f"found keys {sorted(raw)}")
    config = build_dataclass(DecisionConfig, raw[SECTION], SECTION)
    config.validate(SECTION)
    return config
