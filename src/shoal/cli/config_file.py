"""Flags from a YAML config file and ``SHOAL_*`` environment variables.

Every long flag of ``shoal server`` is also a key of the config file (the flag's name
without its dashes, as k3s does: ``api-port: 6443``) and an environment variable
(``SHOAL_`` and the name in upper case with underscores: ``SHOAL_API_PORT``). A flag
on the command line wins over the variable, which wins over the file, which wins over
the default. Values go through the flag's own parser, so a bad one is refused with the
same message, naming where it came from.
"""

from __future__ import annotations

import argparse
import difflib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

ENV_PREFIX = "SHOAL_"
CONFIG_ENV = "SHOAL_CONFIG"
# Not read from the environment here: SHOAL_TOKEN has its own handling (it is taken out of
# the environment so helpers do not inherit it), and SHOAL_CERT_LIFETIME is read by the PKI.
NOT_FROM_ENV = frozenset({"token", "cert-lifetime", "config"})
NOT_IN_FILE = frozenset({"config", "help", "version", "cert-lifetime"})
# SHOAL_* variables read elsewhere (the PKI, the node agent's pods, the demo, tests' knobs):
# not flags, and not worth a warning.
OTHER_VARIABLES = frozenset({"SHOAL_TOKEN", "SHOAL_CONFIG", "SHOAL_CERT_LIFETIME",
                             "SHOAL_CONTAINER_ID", "SHOAL_NODE_MARKER",
                             "SHOAL_BUS_STATUS_INTERVAL", "SHOAL_FREEZE_READS",
                             "SHOAL_HTTP_SERVER"})
OTHER_PREFIXES = ("SHOAL_DEMO_", "SHOAL_VOLUME_")
TRUE = frozenset({"1", "true", "yes", "on"})
FALSE = frozenset({"0", "false", "no", "off"})


class ConfigError(Exception):
    """A config file or variable that cannot be used; the message names the key or variable."""


def env_name(key: str) -> str:
    return ENV_PREFIX + key.upper().replace("-", "_")


def config_path(argv: list[str], environ: Mapping[str, str]) -> Path | None:
    """--config FILE (or --config=FILE) from the command line, else SHOAL_CONFIG."""
    for i, arg in enumerate(argv):
        if arg == "--config" and i + 1 < len(argv):
            return Path(argv[i + 1])
        if arg.startswith("--config="):
            return Path(arg.split("=", 1)[1])
    value = environ.get(CONFIG_ENV, "")
    return Path(value) if value else None


def read_file(path: Path) -> dict[str, Any]:
    import yaml  # here, not at the top: a running node loads no PyYAML (2.6 MB)

    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"cannot read the config file {path}: {e.strerror or e}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path}: not valid YAML: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: expected a mapping of flag names to values, "
                          f"got {type(data).__name__}")
    return data


def _options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """The parser's long flags by their name without dashes."""
    out: dict[str, argparse.Action] = {}
    for action in parser._actions:
        for flag in action.option_strings:
            negative = isinstance(action, argparse.BooleanOptionalAction) and \
                flag.startswith("--no-")
            if flag.startswith("--") and not negative:
                out[flag[2:]] = action
    return out


def _is_bool(action: argparse.Action) -> bool:
    return isinstance(action, argparse._StoreTrueAction | argparse.BooleanOptionalAction)


def _convert(action: argparse.Action, raw: Any, where: str) -> Any:
    if _is_bool(action):
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.strip().lower() in TRUE | FALSE:
            return raw.strip().lower() in TRUE
        raise ConfigError(f"{where}: expected true or false, got {raw!r}")
    if isinstance(raw, bool) or not isinstance(raw, str | int | float):
        raise ConfigError(f"{where}: expected a single value, got {type(raw).__name__} {raw!r}")
    text = str(raw)
    convert = action.type if callable(action.type) else str
    try:
        value = convert(text)
    except (argparse.ArgumentTypeError, ValueError, TypeError) as e:
        detail = str(e) if isinstance(e, argparse.ArgumentTypeError) else f"invalid value {text!r}"
        raise ConfigError(f"{where}: {detail}") from None
    if action.choices is not None and value not in action.choices:
        choices = ", ".join(map(str, action.choices))
        raise ConfigError(f"{where}: {text!r} is not one of {choices}")
    return value


def apply(parser: argparse.ArgumentParser, argv: list[str],
          environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Make the config file's and the environment's values the parser's defaults.

    Returns where each option that got a value came from (``config file PATH, key K`` or
    ``SHOAL_K``), for messages about it."""
    environ = os.environ if environ is None else environ
    options = _options(parser)
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    path = config_path(argv, environ)
    if path is not None:
        for key, raw in read_file(path).items():
            name = str(key).replace("_", "-")
            action = options.get(name)
            if action is None or name in NOT_IN_FILE:
                known = [k for k in options if k not in NOT_IN_FILE]
                near = difflib.get_close_matches(name, known, n=1)
                hint = f" (did you mean {near[0]!r}?)" if near else ""
                raise ConfigError(f"config file {path}: unknown key {key!r}{hint}")
            if raw is None:
                continue
            where = f"config file {path}, key {key!r}"
            values[action.dest] = _convert(action, raw, where)
            sources[action.dest] = where
    for name, action in options.items():
        if name in NOT_FROM_ENV or name in NOT_IN_FILE:
            continue
        variable = env_name(name)
        if variable in environ:
            values[action.dest] = _convert(action, environ[variable], variable)
            sources[action.dest] = variable
    for dest in values:
        for action in parser._actions:
            if action.dest == dest:
                action.required = False
    parser.set_defaults(**values)
    return sources


def unknown_variables(parser: argparse.ArgumentParser,
                      environ: Mapping[str, str] | None = None) -> list[str]:
    """A warning for each ``SHOAL_*`` variable that names no flag: a typo would otherwise
    be ignored without a word (``SHOAL_API_PROT=7000`` and the node on its default port)."""
    environ = os.environ if environ is None else environ
    known = {env_name(name) for name in _options(parser)
             if name not in NOT_FROM_ENV and name not in NOT_IN_FILE}
    warnings = []
    for variable in sorted(environ):
        if (not variable.startswith(ENV_PREFIX) or variable in known
                or variable in OTHER_VARIABLES or variable.startswith(OTHER_PREFIXES)):
            continue
        near = difflib.get_close_matches(variable, sorted(known), n=1)
        hint = f" (did you mean {near[0]}?)" if near else ""
        warnings.append(f"ignoring the environment variable {variable}: no such flag{hint}")
    return warnings
