"""Command-line overrides for the settings block at the top of each script.

Every script keeps its settings as plain module-level variables that a user edits. ``configure``
lets any of them be given on the command line as ``--name value`` instead; the value is converted
to the type of the default, and an unknown name or an unconvertible value stops the script with
one line that says what is wrong (never silently ignored).
"""
from __future__ import annotations

import ast
import sys
from typing import Any, NoReturn

SETTING_TYPES = (bool, int, float, str, list, tuple, type(None))


def fail(message: object) -> NoReturn:
    """Stop with one line on stderr and exit status 2: a problem the user can fix."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def setting_names(namespace: dict) -> list[str]:
    """Names in ``namespace`` that are settings: public variables of a plain value type."""
    return [k for k, v in namespace.items()
            if not k.startswith("_") and isinstance(v, SETTING_TYPES)]


def convert(name: str, text: str, default: Any) -> Any:
    """Convert the command-line ``text`` to the type of ``default``; raise ValueError if it does not fit."""
    if isinstance(default, bool):
        lowered = text.strip().lower()
        if lowered in ("true", "1", "yes", "on"):
            return True
        if lowered in ("false", "0", "no", "off"):
            return False
        raise ValueError(f"--{name} takes True or False, not {text!r}")
    if isinstance(default, int):
        try:
            return int(text)
        except ValueError:
            raise ValueError(f"--{name} takes a whole number, not {text!r}") from None
    if isinstance(default, float):
        try:
            return float(text)
        except ValueError:
            raise ValueError(f"--{name} takes a number, not {text!r}") from None
    if isinstance(default, (list, tuple)):
        parts = [p for p in text.strip().strip("[]()").replace(",", " ").split()]
        if default and not parts:
            raise ValueError(f"--{name} takes a list such as {','.join(map(str, default))}")
        item_default = default[0] if default else ""
        items = [convert(name, p, item_default) for p in parts]
        if default and len(items) != len(default):
            raise ValueError(f"--{name} takes {len(default)} values such as "
                             f"{','.join(map(str, default))}, not {text!r}")
        return type(default)(items)
    if default is None:
        if text in ("None", "none", ""):
            return None
        try:
            return ast.literal_eval(text)
        except (ValueError, SyntaxError):
            return text
    return text


def configure(namespace: dict, argv: list[str] | None = None, positional: int = 0) -> list[str]:
    """Apply ``--name value`` (or ``--name=value``) overrides from ``argv`` to ``namespace``.

    ``positional`` is how many plain arguments the script accepts; they are returned in order.
    On any error the script exits with status 2 and one line naming the problem.
    """
    argv = sys.argv[1:] if argv is None else argv
    names = setting_names(namespace)
    plain: list[str] = []
    i = 0
    try:
        while i < len(argv):
            arg = argv[i]
            if not arg.startswith("--"):
                plain.append(arg)
                i += 1
                continue
            name, eq, value = arg[2:].partition("=")
            if name not in names:
                raise ValueError(f"unknown setting --{name}; known settings: {', '.join(names)}")
            if not eq:
                if i + 1 >= len(argv):
                    raise ValueError(f"--{name} needs a value")
                value = argv[i + 1]
                i += 1
            namespace[name] = convert(name, value, namespace[name])
            i += 1
        if len(plain) > positional:
            raise ValueError(f"unexpected argument {plain[positional]!r}; settings are given as --name value")
    except ValueError as err:
        fail(err)
    return plain


def settings_of(namespace: dict) -> dict:
    """The current settings in ``namespace`` as a plain dict, e.g. to print or store with a checkpoint."""
    return {k: namespace[k] for k in setting_names(namespace)}


def print_settings(settings: dict) -> None:
    """Print the effective settings as an aligned two-column table."""
    width = max((len(k) for k in settings), default=0)
    for key, value in settings.items():
        print(f"  {key:<{width}}  {value}")
