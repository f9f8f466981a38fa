"""Dotted overrides of an mmengine config: ``--set`` / ``--hparam`` text, layering, checked keys.

A key must exist in the config or be an argument of the type built at its place
(trial/settings/config_keys.py); anything else is one line naming the closest valid key. Pure: it
reads the config it is given and mmengine's registries, nothing else.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

from errors import ConfigError

SET_EXAMPLES = {"--set": "optim_wrapper.optimizer.lr=0.01", "--hparam": "global_batch_size=8"}


def apply_overrides(cfg: Any, overrides: Mapping[str, Any]) -> None:
    """Apply dotted mmengine keys. A key must exist in the config or be an argument of the type
    built at its place (trial/settings/config_keys.py); anything else is an error with the closest valid key."""
    root = getattr(cfg, "_cfg_dict", cfg)  # an mmengine Config wraps a ConfigDict (a dict)
    # Parents before children: ``optimizer={type: AdamW, ...}`` then ``optimizer.lr=...``.
    for key, value in sorted(overrides.items(), key=lambda item: item[0].count(".")):
        parent_key, _, leaf = key.rpartition(".")
        node = root
        for part in parent_key.split(".") if parent_key else []:
            node = _child(node, part, key, root)
        if not isinstance(node, (dict, list)) or (
            isinstance(node, dict) and leaf not in node and not _accepts(node, parent_key, leaf)
        ):
            raise ConfigError(_unknown_key_message(root, key))
        _check_component(value, key)
        if isinstance(node, list):
            node[_list_index(node, leaf, key)] = value
        else:
            node[leaf] = value


def _accepts(node: dict, path: str, leaf: str) -> bool:
    from trial.settings.config_keys import accepted_keys

    names = accepted_keys(node, path)
    return names is None or leaf in names


def _check_component(value: Any, key: str) -> None:
    """A whole component given as a value (``{type: SGD, lrr: 0.1}``): its keys are arguments."""
    from trial.settings.config_keys import accepted_keys

    if not isinstance(value, Mapping) or "type" not in value:
        return
    names = accepted_keys(value, key)  # empty: an unregistered type (e.g. nms='soft_nms')
    if not names:
        return
    for name in value:
        if names is not None and name != "type" and name not in names:
            close = difflib.get_close_matches(name, sorted(names), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(
                f"config key {key!r}: {value['type']} takes no argument {name!r}{hint}"
            )


def parse_set_options(items: list[str], *, option: str = "--set") -> dict[str, Any]:
    """Turn repeated ``--set key=value`` (or ``--hparam``) strings into a dict; values are parsed
    as YAML scalars. Errors name ``option``."""
    import yaml

    example = SET_EXAMPLES.get(option, SET_EXAMPLES["--set"])
    parsed = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{option} {item!r} is not key=value; e.g. {option} {example}")
        try:
            parsed[key.strip()] = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as err:
            problem = " ".join(str(getattr(err, "problem", None) or err).split())
            raise ConfigError(
                f"{option} {item!r}: the value is not valid YAML ({problem}); quote it, e.g. "
                f"{option} {key.strip()}='[1, 2]'"
            ) from None
    return parsed


def layer(base: Mapping[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    """Dotted settings of ``top`` over ``base``: a key of ``top`` replaces the same key in ``base``
    and everything below it (``optimizer`` drops ``optimizer.lr``), so the upper layer always wins."""
    merged = {
        key: value
        for key, value in base.items()
        if not any(key == t or key.startswith(t + ".") for t in top)
    }
    merged.update(top)
    return merged


def flatten_hparams(hparams: Mapping[str, Any], *, reserved: frozenset[str]) -> dict[str, Any]:
    """Nested or dotted Determined hyperparameters -> dotted mmengine keys (reserved names skipped).

    A mapping with a ``type`` key is an mmengine component spec (``{type: AdamW, lr: 1e-4}``) and
    replaces the config's value whole instead of being merged key by key.
    """
    flat: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, Mapping) and value and "type" not in value:
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        else:
            flat[prefix] = value

    for key, value in hparams.items():
        if key not in reserved:
            walk(key, value)
    return flat


def _child(node: Any, part: str, key: str, root: dict) -> Any:
    if isinstance(node, dict) and part in node:
        return node[part]
    if isinstance(node, list):
        return node[_list_index(node, part, key)]
    raise ConfigError(_unknown_key_message(root, key))


def _list_index(node: list, part: str, key: str) -> int:
    if not part.lstrip("-").isdigit() or not -len(node) <= int(part) < len(node):
        raise ConfigError(
            f"config key {key!r}: {part!r} is not an index of a {len(node)}-item list"
        )
    return int(part)


def _unknown_key_message(cfg: dict, key: str) -> str:
    candidates = _dotted_keys(cfg) + _schema_keys(cfg, key)
    close = difflib.get_close_matches(key, candidates, n=1)
    hint = (
        f"; did you mean {close[0]!r}?" if close else "; check the key against the model's config"
    )
    return f"unknown config key {key!r}{hint}"


def _schema_keys(cfg: dict, key: str) -> list[str]:
    """``parent.arg`` for every argument the type at the deepest existing parent of ``key`` takes."""
    from trial.settings.config_keys import accepted_keys

    parts = key.split(".")[:-1]
    node, path = cfg, ""
    for part in parts:
        if not isinstance(node, dict) or part not in node:
            break
        node, path = node[part], f"{path}.{part}" if path else part
    names = accepted_keys(node, path) if isinstance(node, dict) else frozenset()
    return [f"{path}.{name}" if path else name for name in sorted(names or ())]


def _dotted_keys(node: Any, prefix: str = "") -> list[str]:
    keys = []
    if isinstance(node, dict):
        for k, v in node.items():
            path = f"{prefix}.{k}" if prefix else str(k)
            keys.append(path)
            keys.extend(_dotted_keys(v, path))
    return keys
