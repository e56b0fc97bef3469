"""Declaring a setting once: :func:`setting` makes a dataclass field that also carries its
environment variable, its ``serve`` flag, how strings and YAML values convert, and its help
(server/config.py declares them; server/cli.py and the README's table read them)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ENV_PREFIX = "BERTSERVE_"


@dataclass(frozen=True)
class Setting:
    """How a setting is given besides its YAML key: flag and environment names (None: not
    given that way), how a string or YAML value becomes its value, and its help."""

    help: str
    convert: Callable[[Any], Any]
    flag: str | None
    env: str | None
    group: str
    shown: str | None  # the default as the help and the README show it; None: repr(default)
    choices: tuple[str, ...] | None = None
    append: bool = False  # a repeatable flag (its values arrive as a list)


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{value!r} is not a boolean (true/false)")


def optional_port(value: Any) -> int | None:
    """A port, or None for a negative one (-1: off)."""
    if value is None:
        return None
    port = int(value)
    return None if port < 0 else port


def _optional(convert: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def optional(value: Any) -> Any:
        return None if value is None or value == "" else convert(value)

    optional.__name__ = convert.__name__
    return optional


def comma_names(value: Any) -> tuple[str, ...]:
    """``"a, b"`` or ``["a", "b"]`` -> ``("a", "b")``."""
    items = value.split(",") if isinstance(value, str) else list(value)
    return tuple(str(name).strip() for name in items if str(name).strip())


def parse_variants(pairs: Any) -> dict[str, str]:
    """``["minilm=int8", ...]``, ``"minilm=int8,..."`` or a mapping -> ``{"minilm": "int8"}``;
    ValueError naming a bad pair."""
    if isinstance(pairs, Mapping):
        return {str(model): str(variant) for model, variant in pairs.items()}
    if isinstance(pairs, str):
        pairs = [pairs]
    variants = {}
    for pair in ",".join(pairs).split(","):
        model, _, variant = pair.strip().partition("=")
        if not model or not variant:
            raise ValueError(f"--variant {pair!r}: expected MODEL=VARIANT, e.g. minilm=int8")
        variants[model] = variant
    return variants


_CONVERTERS: dict[type, Callable[[Any], Any]] = {
    bool: _bool,
    int: int,
    float: float,
    str: str,
    Path: Path,
}


def _name(given: str | bool | None) -> str | None:
    """True -> "" (derive from the field's name), a string -> itself, False/None -> None."""
    if isinstance(given, str):
        return given
    return "" if given else None


def setting(
    default: Any = dataclasses.MISSING,
    help: str = "",
    *,
    kind: type | None = None,
    convert: Callable[[Any], Any] | None = None,
    flag: str | bool | None = True,
    env: str | bool | None = True,
    group: str = "server",
    shown: str | None = None,
    choices: tuple[str, ...] | None = None,
    append: bool = False,
    factory: Callable[[], Any] | None = None,
) -> Any:
    """A dataclass field that is also a setting.

    ``flag``/``env``: True derives the name from the field's (``grace_period_s`` ->
    ``--grace-period``, ``BERTSERVE_GRACE_PERIOD``: a trailing ``_s`` is dropped), a string
    names it (the flag in full, the variable without its prefix), False: not given that way.
    ``kind`` (else the default's type) picks the converter of strings and YAML values;
    ``convert`` replaces it.
    """
    if convert is None:
        convert = _CONVERTERS[kind or type(default)]
        if default is None:
            convert = _optional(convert)
    meta = Setting(help, convert, _name(flag), _name(env), group, shown, choices, append)
    if factory is not None:
        return field(default_factory=factory, metadata={"setting": meta})
    return field(default=default, metadata={"setting": meta})


def _stem(name: str) -> str:
    return name[:-2] if name.endswith("_s") else name


def flag_name(field_: dataclasses.Field) -> str | None:
    """The ``serve`` flag of a setting (``--max-batch-size``), or None."""
    meta: Setting = field_.metadata["setting"]
    if meta.flag is None:
        return None
    return meta.flag or "--" + _stem(field_.name).replace("_", "-")


def env_name(field_: dataclasses.Field) -> str | None:
    """The environment variable of a setting (``BERTSERVE_MAX_BATCH_SIZE``), or None."""
    meta: Setting = field_.metadata["setting"]
    if meta.env is None:
        return None
    return ENV_PREFIX + (meta.env or _stem(field_.name).upper())


def shown_default(field_: dataclasses.Field) -> str:
    """The default as the help and the README show it."""
    meta: Setting = field_.metadata["setting"]
    if meta.shown is not None:
        return meta.shown
    if field_.default is dataclasses.MISSING:
        return "required"
    if isinstance(field_.default, bool):
        return str(field_.default).lower()
    return "none" if field_.default is None else str(field_.default)


def convert_value(field_: dataclasses.Field, value: Any, where: str) -> Any:
    """``value`` (a string or a YAML value) as the setting's type; ValueError naming ``where``."""
    try:
        return field_.metadata["setting"].convert(value)
    except (ValueError, TypeError) as error:
        raise ValueError(f"{where}={value!r}: not a valid {field_.name} ({error})") from None


def from_mapping(
    data: Mapping[str, Any], allowed: dict[str, dataclasses.Field], where: str
) -> dict[str, Any]:
    """A YAML mapping's settings converted; unknown keys refused, listing the allowed ones."""
    if not isinstance(data, Mapping):
        raise ValueError(f"{where}: expected a mapping of settings, got {data!r}")
    unknown = set(data) - set(allowed)
    if unknown:
        raise ValueError(f"{where}: unknown keys {sorted(unknown)}; allowed {sorted(allowed)}")
    prefix = f"{where}." if where != "top level" else ""
    return {k: convert_value(allowed[k], v, f"{prefix}{k}") for k, v in data.items()}


def at_least(settings: object, minimum: int, names: Iterable[str], where: str = "") -> None:
    """Raise ValueError naming the first of ``names`` set below ``minimum`` (None: not set)."""
    for name in names:
        value = getattr(settings, name)
        if value is not None and value < minimum:
            rule = "must be at least 1" if minimum == 1 else f"must be >= {minimum}"
            raise ValueError(f"{where}{name}={value!r}: {rule}")


def markdown_table(rows: Iterable[tuple[str, dataclasses.Field]], last: str = "") -> str:
    """A table of settings, one (YAML key, field) a row: key, flag, variable, default, help;
    ``last``: a final row as written."""
    lines = [
        "| YAML key | `serve` flag | environment | default | what it sets |",
        "| --- | --- | --- | --- | --- |",
    ]
    for key, field_ in rows:
        flag = flag_name(field_)
        if flag and isinstance(field_.default, bool):
            flag = f"--[no-]{flag[2:]}"
        variable = env_name(field_)
        lines.append(
            f"| `{key}` | {f'`{flag}`' if flag else '—'} | {f'`{variable}`' if variable else '—'} "
            f"| {shown_default(field_)} | {field_.metadata['setting'].help} |"
        )
    return "\n".join([*lines, last] if last else lines) + "\n"
