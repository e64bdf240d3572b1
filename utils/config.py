"""Command-line overrides for the settings block at the top of each script.

Every script keeps its settings as plain module-level variables that a user edits. ``configure``
lets any of them be given on the command line as ``--name value`` instead; the value is converted
to the type of the default, and an unknown name or an unconvertible value stops the script with
one line that says what is wrong (never silently ignored). ``-h`` / ``--help`` prints the block.

Every problem a user can fix is a ``UserError`` (the project's error types derive from it);
``run_main`` turns it into one ``error:`` line and exit status 2, and Ctrl-C into status 130, so
every script ends the same way. The ``check_*`` helpers validate one setting each and name it.
"""
from __future__ import annotations

import ast
import errno
import math
import os
import sys
import tempfile
from typing import Any, Callable, Iterable, NoReturn, Sequence

SETTING_TYPES = (bool, int, float, str, list, tuple, type(None))
BLOCK_START, BLOCK_END = "#------- settings", "#-----"
EXIT_USER_ERROR, EXIT_INTERRUPTED = 2, 130
# Failures of the machine's state that the user fixes: disk full, quota, permissions, read-only disk.
USER_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS)


class UserError(Exception):
    """A problem the user can fix (a setting, a path, a file); the message is one line naming it."""


def fail(message: object) -> NoReturn:
    """Stop with one line on stderr and exit status 2: a problem the user can fix."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(EXIT_USER_ERROR)


def run_main(main: Callable[[], object], interrupted: str = "") -> None:
    """Run a script's ``main``: a UserError, or a full disk or a refused write, becomes one ``error:``
    line and exit 2, Ctrl-C exit 130 (after printing ``interrupted`` when given), so that no user
    mistake ends in a traceback."""
    try:
        main()
    except UserError as err:
        fail(err)
    except OSError as err:
        if err.errno not in USER_ERRNOS:
            raise
        fail(f"{err.filename or 'writing'}: {err.strerror}; free space or fix the permissions and run again")
    except KeyboardInterrupt:
        print(f"\n{interrupted}" if interrupted else "", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)


def setting_names(namespace: dict) -> list[str]:
    """Names in ``namespace`` that are settings: public variables of a plain value type, not the
    UPPER_CASE constants a script defines below its settings block."""
    return [k for k, v in namespace.items()
            if not k.startswith("_") and not k.isupper() and isinstance(v, SETTING_TYPES)]


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


def settings_block(namespace: dict) -> str:
    """The script's docstring and its settings block (names, defaults, comments) as written in its source."""
    lines = []
    source = namespace.get("__file__")
    if source and os.path.isfile(source):
        with open(source, encoding="utf-8") as handle:
            inside = False
            for line in handle:
                if line.startswith(BLOCK_START):
                    inside = True
                elif inside and line.startswith(BLOCK_END):
                    break
                elif inside:
                    lines.append(line.rstrip("\n"))
    if not lines:
        lines = [f"{k} = {namespace[k]!r}" for k in setting_names(namespace)]
    doc = (namespace.get("__doc__") or "").strip("\n")
    return (doc + "\n\n" if doc else "") + "Settings (give any as --name value):\n" + "\n".join(lines)


def configure(namespace: dict, argv: list[str] | None = None, positional: int = 0) -> list[str]:
    """Apply ``--name value`` (or ``--name=value``) overrides from ``argv`` to ``namespace``.

    ``positional`` is how many plain arguments the script accepts; they are returned in order.
    ``-h`` or ``--help`` prints the settings block and exits 0. On any error the script exits with
    status 2 and one line naming the problem.
    """
    argv = sys.argv[1:] if argv is None else argv
    if "-h" in argv or "--help" in argv:
        print(settings_block(namespace))
        sys.exit(0)
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


def check_int(name: str, value: object, low: int | None = None, high: int | None = None) -> int:
    """``value`` as a whole number in [low, high]; else a UserError naming ``--name``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise UserError(f"--{name} takes a whole number, not {value!r}")
    if (low is not None and value < low) or (high is not None and value > high):
        raise UserError(f"--{name} must be {range_text(low, high)}, not {value}")
    return value


def check_number(name: str, value: object, low: float | None = None, high: float | None = None,
                 low_open: bool = False) -> float:
    """``value`` as a finite number in [low, high] (``low_open``: above low); else a UserError."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise UserError(f"--{name} takes a finite number, not {value!r}")
    if (low is not None and (value <= low if low_open else value < low)) or (high is not None and value > high):
        bound = f"above {low}" + (f" and at most {high}" if high is not None else "") if low_open \
            else range_text(low, high)
        raise UserError(f"--{name} must be {bound}, not {value}")
    return float(value)


def range_text(low: float | None, high: float | None) -> str:
    """'from 1 to 9', 'at least 1' or 'at most 9'."""
    if low is not None and high is not None:
        return f"from {low} to {high}"
    return f"at least {low}" if low is not None else f"at most {high}"


def check_choice(name: str, value: object, choices: Iterable[object]) -> object:
    """``value`` when it is one of ``choices``; else a UserError listing them."""
    choices = list(choices)
    if not any(value == c and type(value) is type(c) for c in choices):  # 1 is not True here
        raise UserError(f"--{name} must be one of {', '.join(map(str, choices))}, not {value!r}")
    return value


def check_bool(name: str, value: object) -> bool:
    """``value`` when it is True or False (a settings block edited by hand may hold anything)."""
    if not isinstance(value, bool):
        raise UserError(f"--{name} takes True or False, not {value!r}")
    return value


def check_input_shape(name: str, value: object) -> list[int]:
    """A network input [height, width, 3] with sides from 16 to 4096 pixels."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != 3 or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise UserError(f"--{name} takes height,width,channels such as 160,160,3, not {value!r}")
    height, width, channels = value
    if channels != 3 or not (16 <= height <= 4096 and 16 <= width <= 4096):
        raise UserError(f"--{name} must be height,width,3 with sides from 16 to 4096 pixels, "
                        f"not {','.join(map(str, value))}")
    return list(value)


def check_output_file(name: str, path: object, extensions: Sequence[str] = ()) -> str:
    """A file path the script can write: not a folder, under a folder that is (or can be made) writable,
    with one of ``extensions`` (lower-case, with the dot) when given."""
    if not isinstance(path, str) or not path.strip():
        raise UserError(f"--{name} takes a file path, not {path!r}")
    if os.path.isdir(path):
        raise UserError(f"--{name} {path}: is a folder; give a file name")
    if extensions and os.path.splitext(path)[1].lower() not in extensions:
        raise UserError(f"--{name} {path}: must end in one of {', '.join(extensions)}")
    check_writable_folder(name, os.path.dirname(os.path.abspath(path)))
    if os.path.exists(path) and not os.access(path, os.W_OK):
        raise UserError(f"--{name} {path}: the file exists and is not writable")
    return path


def check_writable_folder(name: str, folder: str) -> str:
    """A folder the script can write into, or create: its nearest existing ancestor is a writable folder."""
    existing = os.path.abspath(folder)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise UserError(f"--{name} {folder}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"--{name} {folder}: {existing} is not writable")
    try:  # os.access says yes for root under /proc and /sys, which hold no files: try to make one
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as err:
        raise UserError(f"--{name} {folder}: {existing} cannot hold files ({err.strerror}); "
                        "give a folder on a disk") from None
    return folder
