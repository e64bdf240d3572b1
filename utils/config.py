"""The settings schema of every script: command-line overrides, the rules each setting obeys, --help.

Every script keeps its settings as plain module-level variables at its top, which a user edits, and
just below them a ``RULES`` mapping that says, once, what each setting accepts (``Int(1)``,
``Choice("cos", "step")``, ``OutputFile(".json")`` ...). ``configure`` reads ``--name value`` from the
command line with those rules, checks every setting (given or edited into the block) before any work,
and stops at the first bad one with one line naming the setting, the value and what is allowed, exit
status 2. ``-h`` / ``--help`` prints the script's docstring, its settings block and the rules.

Every problem a user can fix is a ``UserError`` (the project's error types derive from it);
``run_main`` turns it into one ``error:`` line and exit status 2, and Ctrl-C into status 130, so
every script ends the same way.
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
# Sides of a network input or an aligned face, in pixels, in every script. MobileNet runs from 16 px;
# Inception-ResNet-v1 needs at least 75.
INPUT_SIDES = (16, 4096)


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


def shown(value: object) -> str:
    """A value as an error message shows it: text quoted, lists comma-separated."""
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    return repr(value) if isinstance(value, str) else str(value)


# --- rules: what one setting accepts ------------------------------------------------------------


class Rule:
    """What one setting accepts. ``parse`` turns command-line text into a value (ValueError with the
    tail of the message when it cannot); ``problem`` says what is wrong with a value, or None.
    ``alias``: another spelling accepted on the command line; ``when``: the rule applies only while that
    setting is true, or (a tuple) has one of the values after its name, so that an output that is not
    written is not checked."""

    def __init__(self, *, alias: str = "", when: str | tuple = "") -> None:
        self.alias, self.when = alias, when

    def applies(self, settings: dict) -> bool:
        if not self.when:
            return True
        if isinstance(self.when, str):
            return bool(settings.get(self.when))
        return settings.get(self.when[0]) in self.when[1:]

    def when_text(self) -> str:
        if isinstance(self.when, str):
            return f"only when {self.when} is true"
        return f"only when {self.when[0]} is {' or '.join(map(str, self.when[1:]))}"

    def describe(self) -> str:
        raise NotImplementedError

    def parse(self, text: str) -> Any:
        return text

    def problem(self, value: Any) -> str | None:
        raise NotImplementedError

    def __or__(self, other: Rule) -> AnyOf:
        return AnyOf(self, other)

    def type_error(self, value: object) -> str:
        return f"takes {self.describe()}, not {shown(value)}"


class Bool(Rule):
    """True or False; on the command line also true/false, yes/no, on/off, 1/0."""

    def describe(self) -> str:
        return "True or False"

    def parse(self, text: str) -> bool:
        lowered = text.strip().lower()
        if lowered in ("true", "1", "yes", "on"):
            return True
        if lowered in ("false", "0", "no", "off"):
            return False
        raise ValueError(self.type_error(text))

    def problem(self, value: Any) -> str | None:
        return None if isinstance(value, bool) else self.type_error(value)


def range_text(low: float | None, high: float | None, above: bool = False, below: bool = False) -> str:
    """'from 1 to 9', 'at least 1', 'above 0 and at most 2', 'at least 0 and below 1' ..."""
    if low is not None and high is not None and not above and not below:
        return f"from {low} to {high}"
    parts = []
    if low is not None:
        parts.append(f"{'above' if above else 'at least'} {low}")
    if high is not None:
        parts.append(f"{'below' if below else 'at most'} {high}")
    return " and ".join(parts)


class Number(Rule):
    """A finite number between low and high; ``above`` / ``below`` leave the bound itself out."""

    kind: type = float  # what command-line text is read as

    def __init__(self, low: float | None = None, high: float | None = None, *, above: bool = False,
                 below: bool = False, **common) -> None:
        super().__init__(**common)
        self.low, self.high, self.above, self.below = low, high, above, below

    def limits(self) -> str:
        return range_text(self.low, self.high, self.above, self.below)

    def describe(self) -> str:
        return f"a number {self.limits()}".strip()

    def parse(self, text: str) -> float:
        try:
            return self.kind(text)
        except ValueError:
            raise ValueError(self.type_error(text)) from None

    def problem(self, value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return f"takes a finite number, not {value!r}"
        low, high = self.low, self.high
        if (low is not None and (value <= low if self.above else value < low)) or \
                (high is not None and (value >= high if self.below else value > high)):
            return f"must be {self.limits()}, not {value}"
        return None


class Int(Number):
    """A whole number in [low, high] (either bound may be None)."""

    kind = int

    def __init__(self, low: int | None = None, high: int | None = None, **common) -> None:
        super().__init__(low, high, **common)

    def describe(self) -> str:
        return f"a whole number {self.limits()}".strip()

    def problem(self, value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, int):
            return self.type_error(value)
        return super().problem(value)


class Text(Rule):
    """Any text: a path, a name, a comma-separated list the script reads itself."""

    def describe(self) -> str:
        return "any text"

    def problem(self, value: Any) -> str | None:
        return None if isinstance(value, str) else self.type_error(value)


class Choice(Rule):
    """One of the given values (1 is not True here); on the command line, text that spells one."""

    def __init__(self, *choices: object, **common) -> None:
        super().__init__(**common)
        self.choices = choices

    def describe(self) -> str:
        return "one of " + ", ".join(map(str, self.choices))

    def parse(self, text: str) -> Any:
        for choice in self.choices:
            if text == str(choice) or (not isinstance(choice, str) and text.strip().lower() == str(choice).lower()):
                return choice
        return text  # problem() names it with the choices

    def problem(self, value: Any) -> str | None:
        if any(value == c and type(value) is type(c) for c in self.choices):
            return None
        return f"must be {self.describe()}, not {value!r}"


class AnyOf(Rule):
    """Either rule, e.g. ``Choice("auto") | Int(0)``; a bad value is told both."""

    def __init__(self, *rules: Rule, **common) -> None:
        super().__init__(**common)
        self.rules = rules

    def describe(self) -> str:
        return " or ".join(r.describe().removeprefix("one of ") for r in self.rules)

    def parse(self, text: str) -> Any:
        values = []
        for rule in self.rules:
            try:
                values.append(rule.parse(text))
            except ValueError:
                continue
            if rule.problem(values[-1]) is None:
                return values[-1]
        return values[-1] if values else text  # the last: a Choice passes text through unparsed

    def problem(self, value: Any) -> str | None:
        if any(rule.problem(value) is None for rule in self.rules):
            return None
        return f"must be {self.describe()}, not {shown(value)}"

    def __or__(self, other: Rule) -> AnyOf:
        return AnyOf(*self.rules, other)


class Opt(Rule):
    """``unset`` (None or "", meaning "work it out", as the comment says) or a value of ``rule``,
    whose own message tells a bad one."""

    def __init__(self, rule: Rule, unset: object = None, **common) -> None:
        super().__init__(**common)
        self.rule, self.unset = rule, unset

    def describe(self) -> str:
        return f"{self.unset!r} or {self.rule.describe()}"

    def parse(self, text: str) -> Any:
        if self.unset is None and text.strip() in ("None", "none", ""):
            return None
        return self.unset if text == self.unset else self.rule.parse(text)

    def problem(self, value: Any) -> str | None:
        return None if value == self.unset and type(value) is type(self.unset) else self.rule.problem(value)


class List(Rule):
    """A list of values of ``item`` (``length`` of them when given); comma-separated on the command line."""

    def __init__(self, item: Rule, length: int | None = None, example: str = "", **common) -> None:
        super().__init__(**common)
        self.item, self.length, self.example = item, length, example

    def describe(self) -> str:
        count = f"{self.length} values" if self.length else "a list"
        return f"{count}, each {self.item.describe()}" + (f", such as {self.example}" if self.example else "")

    def parse(self, text: str) -> list:
        parts = text.strip().strip("[]()").replace(",", " ").split()
        return [self.item.parse(p) for p in parts]

    def problem(self, value: Any) -> str | None:
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)) or \
                (self.length is not None and len(value) != self.length):
            return self.type_error(value)
        return next(filter(None, map(self.item.problem, value)), None)


class Shape(Rule):
    """A network input height,width,3 with sides in INPUT_SIDES."""

    def describe(self) -> str:
        return f"height,width,3 with sides from {INPUT_SIDES[0]} to {INPUT_SIDES[1]} pixels"

    def parse(self, text: str) -> list[int]:
        try:
            return [int(p) for p in text.strip().strip("[]()").replace(",", " ").split()]
        except ValueError:
            raise ValueError(self.type_error(text)) from None

    def type_error(self, value: object) -> str:
        return f"takes height,width,channels such as 160,160,3, not {shown(value)}"

    def problem(self, value: Any) -> str | None:
        if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != 3 or not all(
                isinstance(v, int) and not isinstance(v, bool) for v in value):
            return self.type_error(value)
        low, high = INPUT_SIDES
        if value[2] != 3 or not all(low <= side <= high for side in value[:2]):
            return f"must be {self.describe()}, not {shown(value)}"
        return None


class OutputFile(Rule):
    """A file the script writes: not a folder, in a folder that can hold files (or can be made), ending in
    one of ``extensions`` when given (a function returning them, to import their source only when needed)."""

    def __init__(self, *extensions: str | Callable[[], Sequence[str]], **common) -> None:
        super().__init__(**common)
        self.extensions = extensions

    def suffixes(self) -> tuple[str, ...]:
        if len(self.extensions) == 1 and callable(self.extensions[0]):
            return tuple(self.extensions[0]())
        return tuple(self.extensions)

    def describe(self) -> str:
        ends = self.suffixes()
        return "a file path" + (f" ending in {', '.join(ends)}" if ends else "") + " in a folder that can hold files"

    def problem(self, value: Any) -> str | None:
        return output_file_problem(value, self.suffixes())


class OutputFolder(Rule):
    """A folder the script writes into: an existing one, or one it can make, that can hold files."""

    def describe(self) -> str:
        return "a folder that can hold files (made when missing)"

    def problem(self, value: Any) -> str | None:
        if not isinstance(value, str) or not value.strip():
            return f"takes a folder path, not {value!r}"
        if os.path.exists(value) and not os.path.isdir(value):
            return f"{value}: is a file, not a folder"
        return folder_problem(value)


def folder_problem(folder: str) -> str | None:
    """None when ``folder`` exists or can be made and can hold files: a file is made and removed in its
    nearest existing ancestor (permission bits do not tell for root, nor for /proc, /sys or a read-only disk)."""
    existing = os.path.abspath(folder)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        return f"{folder}: {existing} is a file, not a folder"
    try:
        handle, probe = tempfile.mkstemp(prefix=".write_test_", dir=existing)
        os.close(handle)
        os.remove(probe)
    except OSError as err:
        return f"{folder}: {existing} cannot hold files ({err.strerror}); give a path in a writable folder"
    return None


def output_file_problem(path: object, extensions: Sequence[str] = ()) -> str | None:
    """What makes ``path`` unusable as an output file, or None."""
    if not isinstance(path, str) or not path.strip():
        return f"takes a file path, not {path!r}"
    if os.path.isdir(path):
        return f"{path}: is a folder; give a file name"
    if extensions and os.path.splitext(path)[1].lower() not in extensions:
        return f"{path}: must end in one of {', '.join(extensions)}"
    folder = folder_problem(os.path.dirname(os.path.abspath(path)))
    if folder:
        return f"{path}: " + folder.split(": ", 1)[1]
    if os.path.exists(path) and not os.access(path, os.W_OK):
        return f"{path}: the file exists and is not writable"
    return None


class Literal(Rule):
    """Any Python literal (None, a number, a list ...), else the text itself: a setting whose default is None."""

    def describe(self) -> str:
        return "None or a value"

    def parse(self, text: str) -> Any:
        if text in ("None", "none", ""):
            return None
        try:
            return ast.literal_eval(text)
        except (ValueError, SyntaxError):
            return text

    def problem(self, value: Any) -> str | None:
        return None


def rule_for(default: Any) -> Rule:
    """The rule of a setting that has none written: the type of its default."""
    if isinstance(default, bool):
        return Bool()
    if isinstance(default, int):
        return Int()
    if isinstance(default, float):
        return Number()
    if isinstance(default, (list, tuple)):
        return List(rule_for(default[0]) if default else Text(), len(default) or None,
                    ",".join(map(str, default)))
    if default is None:
        return Literal()
    return Text()


# --- the schema of a script ----------------------------------------------------------------------


def rules_of(namespace: dict) -> dict[str, Rule]:
    """The script's RULES, with a rule from the default's type for a setting that has none; a RULES
    naming a setting the script does not have, or leaving one out, is a bug in the script."""
    names = [k for k, v in namespace.items()
             if not k.startswith("_") and not k.isupper() and isinstance(v, SETTING_TYPES)]
    if "RULES" not in namespace:
        return {k: rule_for(namespace[k]) for k in names}
    rules = namespace["RULES"]
    if set(rules) != set(names):
        raise RuntimeError(f"RULES and the settings disagree: no rule for {sorted(set(names) - set(rules))}, "
                           f"no setting for {sorted(set(rules) - set(names))}")
    return rules


def setting_names(namespace: dict) -> list[str]:
    """Names in ``namespace`` that are settings: those of its RULES, else its public variables of a
    plain value type (not the UPPER_CASE constants a script defines below its settings block)."""
    return list(rules_of(namespace))


def check_values(settings: dict, rules: dict[str, Rule]) -> None:
    """Check every setting against its rule; the first bad one is a UserError naming it, its value and
    what is allowed. A rule with ``when`` applies only while that setting is true."""
    for name, rule in rules.items():
        if not rule.applies(settings):
            continue
        problem = rule.problem(settings[name])
        if problem:
            raise UserError(f"--{name} {problem}")


def settings_block(namespace: dict) -> str:
    """The script's docstring, its settings block (names, defaults, comments) as written in its source,
    and what each setting accepts."""
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
    rules = rules_of(namespace)
    in_block = {line.split("=")[0].strip() for line in lines if "=" in line and not line.startswith((" ", "#"))}
    if not lines:
        lines = [f"{k} = {namespace[k]!r}" for k in rules]
        in_block = set(rules)
    width = max((len(k) for k in rules), default=0) + 2
    allowed = []
    for name, rule in rules.items():
        notes = [f"default {namespace[name]!r}"] if name not in in_block else []
        notes += [rule.when_text()] if rule.when else []
        notes += [f"also --{rule.alias}, an older spelling"] if rule.alias else []
        allowed.append(f"  --{name:<{width}}{rule.describe()}" + (f" ({'; '.join(notes)})" if notes else ""))
    doc = (namespace.get("__doc__") or "").strip("\n")
    return ((doc + "\n\n" if doc else "") + "Settings (give any as --name value):\n" + "\n".join(lines)
            + "\n\nAllowed values (checked before any work):\n" + "\n".join(allowed))


def canonical(rules: dict[str, Rule], name: str) -> str:
    """The setting a command-line name means: itself, or the setting it is an alias of."""
    return next((k for k, r in rules.items() if r.alias and r.alias == name), name)


def given_names(namespace: dict, argv: list[str] | None = None) -> set[str]:
    """The settings given on the command line (aliases as the setting they stand for)."""
    argv = sys.argv[1:] if argv is None else argv
    rules = rules_of(namespace)
    return {canonical(rules, a[2:].partition("=")[0]) for a in argv if a.startswith("--")}


def configure(namespace: dict, argv: list[str] | None = None, positional: int = 0) -> list[str]:
    """Apply ``--name value`` (or ``--name=value``) overrides from ``argv`` to ``namespace`` with the
    namespace's RULES, then check every setting, before any work.

    ``positional`` is how many plain arguments the script accepts; they are returned in order.
    ``-h`` or ``--help`` prints the settings and their rules and exits 0. On any error the script exits
    with status 2 and one line naming the setting, the value and what is allowed.
    """
    argv = sys.argv[1:] if argv is None else argv
    rules = rules_of(namespace)
    if "-h" in argv or "--help" in argv:
        print(settings_block(namespace))
        sys.exit(0)
    plain: list[str] = []
    i = 0
    try:
        while i < len(argv):
            arg = argv[i]
            if not arg.startswith("--"):
                plain.append(arg)
                i += 1
                continue
            written, eq, value = arg[2:].partition("=")
            name = canonical(rules, written)
            if name not in rules:
                raise UserError(f"unknown setting --{written}; known settings: {', '.join(rules)}")
            if not eq:
                if i + 1 >= len(argv):
                    raise UserError(f"--{written} needs a value")
                value = argv[i + 1]
                i += 1
            try:
                namespace[name] = rules[name].parse(value)
            except ValueError as err:
                raise UserError(f"--{name} {err}") from None
            i += 1
        if len(plain) > positional:
            raise UserError(f"unexpected argument {plain[positional]!r}; settings are given as --name value")
        check_values(namespace, rules)
    except UserError as err:
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


# --- one setting at a time, for library code that checks an argument -----------------------------


def _check(name: str, value: Any, rule: Rule) -> Any:
    problem = rule.problem(value)
    if problem:
        raise UserError(f"--{name} {problem}")
    return value


def check_int(name: str, value: object, low: int | None = None, high: int | None = None) -> int:
    """``value`` as a whole number in [low, high]; else a UserError naming ``--name``."""
    return _check(name, value, Int(low, high))


def check_number(name: str, value: object, low: float | None = None, high: float | None = None,
                 low_open: bool = False) -> float:
    """``value`` as a finite number in [low, high] (``low_open``: above low); else a UserError."""
    return float(_check(name, value, Number(low, high, above=low_open)))


def check_choice(name: str, value: object, choices: Iterable[object]) -> object:
    """``value`` when it is one of ``choices``; else a UserError listing them."""
    return _check(name, value, Choice(*choices))


def check_bool(name: str, value: object) -> bool:
    """``value`` when it is True or False (a settings block edited by hand may hold anything)."""
    return _check(name, value, Bool())


def check_input_shape(name: str, value: object) -> list[int]:
    """A network input [height, width, 3] with sides in INPUT_SIDES."""
    return list(_check(name, value, Shape()))


def check_output_file(name: str, path: object, extensions: Sequence[str] = ()) -> str:
    """A file path the script can write (see OutputFile)."""
    problem = output_file_problem(path, tuple(extensions))
    if problem:
        raise UserError(f"--{name} {problem}")
    return path


def check_writable_folder(name: str, folder: str) -> str:
    """A folder the script can write into, or create: its nearest existing ancestor can hold files."""
    problem = folder_problem(folder)
    if problem:
        raise UserError(f"--{name} {problem}")
    return folder
