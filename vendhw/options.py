"""Options that arrive as text (``sim://name?jam=1``, ``-o echo=off``, TOML) read one way.

URL query values and CLI ``KEY=VALUE`` pairs are strings, and a bare ``?silent`` is the empty
string, which means *on*; every driver and simulator reads them through these helpers so
``yes``/``on``/``1`` mean the same thing everywhere.
"""

from __future__ import annotations

from typing import Any

TRUE_WORDS = frozenset({"", "1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"0", "false", "no", "off"})


def option_flag(value: Any) -> bool:
    """An option as a bool: a string must be one of :data:`TRUE_WORDS` or :data:`FALSE_WORDS`.

    :raises ValueError: any other word (``jam=xyz`` is a typo, not "off").
    """
    if isinstance(value, str):
        word = value.strip().lower()
        if word in TRUE_WORDS:
            return True
        if word in FALSE_WORDS:
            return False
        raise ValueError(f"{value!r} is neither on nor off (use 1/0, yes/no, on/off, "
                         "true/false)")
    return bool(value)


def option_ints(value: Any) -> list[int]:
    """A list option such as ``auto_insert="1,5,6"`` (or an actual list)."""
    if isinstance(value, (list, tuple)):
        return [int(v) for v in value]
    return [int(x) for x in str(value).replace(";", ",").split(",") if x.strip()]


_KINDS = {"bool": "true or false (1/0, yes/no, on/off)", "float": "a number",
          "int": "a whole number"}


def check_option_kinds(annotations: dict[str, str], options: dict[str, Any], what: str) -> None:
    """Refuse a text option whose value cannot be its parameter's kind, naming both.

    ``annotations`` maps option names to their annotation text (``"float | str"``); the
    first type of the union decides. Values that are not strings are left alone.

    :raises ~vendhw.errors.ConfigurationError: ``what: -o speed=x: speed takes a number``.
    """
    from vendhw.errors import ConfigurationError

    for key, value in options.items():
        first = annotations.get(key, "").split("|")[0].strip()
        if first not in _KINDS or not isinstance(value, str):
            continue
        try:
            if first == "bool":
                option_flag(value)
            elif first == "float":
                float(value)
            else:
                int(value, 0)
        except ValueError:
            raise ConfigurationError(
                f"{what}: option {key}={value!r}: {key} takes {_KINDS[first]}") from None
