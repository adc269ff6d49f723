"""One definition of each stage's settings: a frozen dataclass whose fields hold the default, the type, the allowed
values, a rule and the help text of every setting.

    @dataclass(frozen=True)
    class SampleConfig(Settings):
        n: int = setting(5, help="Responses per prompt (the paper's N).", check=at_least(1))
        engine: str = setting("hf", help="…", choices=ENGINES)

Everything else is derived from these fields: the stage's command-line options (``cli/options.py``: the flag from the
field name, ``--n``), its section of a ``cream run`` config (:func:`cream_data.config_sections.section`: the same keys
and defaults, minus the fields the run fills itself) and the validation. Construction checks every field at once and
raises one :class:`SettingsError` whose problems each start with the field they are about; the command line renders
that name as its flag (``--lora-r: got 0, …``), a run config as its key (``train.lora_r: got 0, …``).

A value a problem echoes is shown by :func:`shown` (a 600 KB string in a config is named by its first characters and
its length), and every integer setting holds a 64-bit integer at most (what the tables and libraries below store).

Pure: the standard library and :mod:`cream_data.errors` only.
"""

from __future__ import annotations

import difflib
import math
import re
import types
import typing
from dataclasses import MISSING, asdict, field, fields
from typing import Any, Callable, ClassVar, NamedTuple, get_args, get_origin

from cream_data.errors import CreamError


class Check(NamedTuple):
    """A rule for a setting's value: ``ok(value)``, and what was expected (for the message)."""

    ok: Callable[[Any], bool]
    expected: str


def at_least(k, expected: str | None = None) -> Check:
    return Check(lambda v: v >= k, expected or f">= {k}")


def finite_above(k=0) -> Check:
    """Finite and > k (NaN and infinity are refused)."""
    return Check(lambda v: math.isfinite(v) and v > k, f"a finite number > {k}")


def finite_at_least(k=0, expected: str | None = None) -> Check:
    return Check(lambda v: math.isfinite(v) and v >= k, expected or f"a finite number >= {k}")


def within(lo, hi, *, closed: str = "[)", expected: str | None = None) -> Check:
    """``lo <= v < hi`` by default; ``closed`` is the interval's brackets, e.g. ``"(]"``."""
    low = (lambda v: v >= lo) if closed[0] == "[" else (lambda v: v > lo)
    high = (lambda v: v <= hi) if closed[1] == "]" else (lambda v: v < hi)
    return Check(lambda v: low(v) and high(v), expected or f"a value in {closed[0]}{lo}, {hi}{closed[1]}")


# ---------------------------------------------------------------------------- values in messages, integer bounds
SHOWN = 60  # characters of a long value that a message shows
SHOWN_WHOLE = 100  # a value up to this long is shown whole
INT16_MAX, INT32_MAX, INT64_MIN, INT64_MAX = 2**15 - 1, 2**31 - 1, -(2**63), 2**63 - 1


def shown(value, *, quote: bool = True) -> str:
    """A user's value as a one-line message shows it: its repr (its text with ``quote=False``: a path), or, when
    longer than :data:`SHOWN_WHOLE` characters, the first :data:`SHOWN` of them and the length,
    ``'xxxxxxxx…' (600,000 characters)``: a hostile config's 600 KB value must not become a 600 KB error line."""
    text = repr(value) if quote else str(value)
    if len(text) <= SHOWN_WHOLE:
        return text
    return f"{text[:SHOWN]}… ({len(value) if isinstance(value, str) else len(text):,} characters)"


def joined(problems: list[str], most: int = 20) -> str:
    """``problems`` joined by ``; ``, the first ``most`` of them and how many more (a config of 10,000 unknown keys
    is still one line that fits a screen)."""
    more = f"; … and {len(problems) - most:,} more" if len(problems) > most else ""
    return "; ".join(problems[:most]) + more


def _int64_problem(value) -> str | None:
    """Every integer setting fits a 64-bit integer (the widest column of a table, and what numpy, pyarrow and torch
    take): a larger one is refused before it reaches them and fails there with a traceback."""
    if isinstance(value, int) and not isinstance(value, bool) and not INT64_MIN <= value <= INT64_MAX:
        return f"got {shown(value)}, expected a 64-bit integer (at most {INT64_MAX:,} in size)"
    return None


# What a path-valued setting may hold, and so how a run config (or a stage's --config file) resolves it against its
# own folder (cream_train/run/config_paths.py): every setting that holds a path says its kind, `setting(path=…)`; one
# whose metavar is PATH is a "path".
PATH_KINDS = {
    "path": "a local file or folder (always relative to the config's folder)",
    "data": "a local file or folder, or a Hub dataset id (owner/name)",
    "model": "a local checkpoint folder, a Hub model id (owner/name) or the embedded alias",
    "sources": "a list of {source, …} mappings whose source is a data path",
}


def setting(default: Any = MISSING, *, help: str, choices=None, check: Check | None = None, flag: str | None = None,
            metavar: str | None = None, internal: bool = False, default_factory: Any = MISSING,
            path: str | None = None, input_when_set: bool = False):
    """A stage setting: a dataclass field carrying its help text, its allowed values (``choices``) or rule
    (``check``), and its command-line form where that is not ``--name-with-dashes`` (``flag="--lora/--no-lora"``).
    ``internal``: not a user setting (no flag, no run config key). ``path``: the setting holds a path, of this kind
    (:data:`PATH_KINDS`), which a config file resolves against its own folder. ``input_when_set``: a setting added
    after runs existed, an input of its stage's fingerprint only when it is set (not at its default: None, False),
    so the runs made before it keep their fingerprints and are not redone
    (:func:`cream_train.run.sections.fingerprinted`)."""
    if path is not None and path not in PATH_KINDS:
        raise ValueError(f"path={path!r}: expected one of {', '.join(PATH_KINDS)}")
    meta = {"help": help, "choices": None if choices is None else tuple(choices), "check": check, "flag": flag,
            "metavar": metavar, "internal": internal, "path": path, "input_when_set": input_when_set}
    return field(default=default, default_factory=default_factory, metadata=meta)


def path_kind(f) -> str | None:
    """The path kind of a setting (a dataclass field): its own ``path``, else ``"path"`` where its metavar is PATH
    (a file or folder named on the command line as PATH); None for a setting that holds no path."""
    return f.metadata.get("path") or ("path" if f.metadata.get("metavar") == "PATH" else None)


DTYPE_HELP = ("Compute dtype: auto (bf16 on a CUDA GPU, fp32 on CPU), bf16, fp16 or fp32. bf16 runs on a CPU too, "
              "slowly (that is how the GPU numerics are tested).")


def dtype_setting(help: str = DTYPE_HELP):
    """The ``dtype`` every model stage has (sample, label, eval, sft, train): one definition, one vocabulary."""
    from cream_data.vocab import DTYPES

    return setting("auto", choices=DTYPES, help=help)


# ---------------------------------------------------------------------------- validation
_REF = re.compile(r"\{([a-z][a-z0-9_]*)\}")


class SettingsError(CreamError):
    """Every problem of one settings object. ``keyed`` holds them as ``(field, text)``; a text may name another
    field as ``{name}``. :meth:`named` renders them with other names: a flag, a run config key."""

    def __init__(self, what: str, keyed: list[tuple[str, str]], names=frozenset(),
                 namer: Callable[[str], str] | None = None):
        self.what, self.keyed, self.names = what, list(keyed), frozenset(names)
        namer = namer or (lambda k: k)
        self.problems = [self._render(k, t, namer) for k, t in self.keyed]
        super().__init__((f"{what}: " if what else "") + joined(self.problems))

    def _render(self, key: str, text: str, namer: Callable[[str], str]) -> str:
        text = _REF.sub(lambda m: namer(m[1]) if m[1] in self.names else m[0], text)
        return f"{namer(key)}: {text}" if key else text

    def named(self, namer: Callable[[str], str], what: str = "") -> "SettingsError":
        return SettingsError(what, self.keyed, self.names, namer)


def keyed(problem: str) -> tuple[str, str]:
    """``"field: text"`` → ``(field, text)`` (a problem written as one string by a shared rule)."""
    key, _, text = problem.partition(": ")
    return (key, text) if text and key.isidentifier() else ("", problem)


def field_problems(obj) -> list[tuple[str, str]]:
    """What each field's own ``choices`` or ``check`` refuses, and an integer beyond 64 bits (None, where a field
    allows it, is never checked)."""
    out = []
    for f in fields(obj):
        value, choices, check = getattr(obj, f.name), f.metadata.get("choices"), f.metadata.get("check")
        if value is None:
            continue
        if choices is not None and value not in choices:
            out.append((f.name, f"got {shown(value)}, expected one of {', '.join(choices)}"))
        elif check is not None and not _passes(check, value):
            unset = " or unset" if f.default is None else ""
            out.append((f.name, f"got {shown(value)}, expected {check.expected}{unset}"))
        elif (too_big := _int64_problem(value)) is not None:
            out.append((f.name, too_big))
    return out


def _passes(check: Check, value) -> bool:
    try:
        return bool(check.ok(value))
    except TypeError:
        return False


class Settings:
    """Base of a stage's frozen settings dataclass: validated on construction (every problem at once)."""

    what: ClassVar[str] = ""  # the error's prefix, e.g. "sample config"

    def __post_init__(self) -> None:
        self._normalise()
        problems = field_problems(self) + self._problems()
        if problems:
            raise SettingsError(self.what, problems, names=[f.name for f in fields(self)])
        self._resolve()

    def _normalise(self) -> None:
        """Bring a value into its canonical form before the checks (e.g. a list of tasks into a tuple)."""

    def _problems(self) -> list[tuple[str, str]]:
        """Rules across fields, as ``(field, text)``."""
        return []

    def _resolve(self) -> None:
        """Fill a default that depends on other fields, once they are valid (so the saved config says what ran)."""

    def _set(self, name: str, value) -> None:
        object.__setattr__(self, name, value)

    @classmethod
    def help(cls, name: str) -> str:
        return next(f.metadata["help"] for f in fields(cls) if f.name == name)

    def to_dict(self) -> dict[str, Any]:
        return plain(asdict(self))


def user_fields(cls) -> list:
    """The fields a user sets (all but the internal ones)."""
    return [f for f in fields(cls) if not f.metadata.get("internal")]


def flag_decl(f) -> str:
    """A setting's command-line declaration: its own ``flag`` (``--lora/--no-lora``) or ``--name-with-dashes``.
    One rule for the option a command adds (``cli/options.py``) and the command line a launcher writes."""
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def flag_of(f) -> str:
    """A setting's long flag: the first of ``--x/--no-x``, else its declaration (how a problem names it)."""
    return flag_decl(f).split("/")[0]


def default_of(f) -> Any:
    """A field's default (MISSING when it has none)."""
    return f.default_factory() if f.default_factory is not MISSING else f.default


def plain(value):
    """Tuples as lists, recursively: what YAML and JSON write."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


# ---------------------------------------------------------------------------- typed values from a mapping
# A decimal number with an optional exponent, as users write a float: `1e-6`, `5E-7`, `+1e-3`, `.5`, `2.`. YAML 1.1
# (PyYAML) reads the forms without a dot (`1e-6`) as strings; nan and inf are not written this way (they stay refused).
_FLOAT = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")


def coerce(value, hint):
    """``value`` as a field of type ``hint`` holds it (an int for a float becomes a float, so does a string that is
    a decimal number such as ``"1e-6"``; a list for a tuple a tuple); TypeError when it is not of that type (a bool
    is never a number, a string never an int)."""
    origin, args = get_origin(hint), get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:
            return coerce(value, inner[0])
    elif hint is Any:
        return value
    elif hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    elif hint is float and isinstance(value, str) and _FLOAT.fullmatch(value.strip()):
        return float(value)  # `1e-6`, which YAML 1.1 (PyYAML) reads as a string
    elif hint in (int, str, bool) and isinstance(value, hint) and (hint is not int or not isinstance(value, bool)):
        return value
    elif origin is tuple and isinstance(value, (list, tuple)) and all(isinstance(v, args[0]) for v in value):
        return tuple(value)
    elif (origin or hint) in (list, dict) and isinstance(value, origin or hint):
        return value
    raise TypeError(type_name(hint))


def type_name(hint) -> str:
    """How a type reads in a message: ``int``, ``int or null``, ``list of str``."""
    args = [a for a in get_args(hint) if a is not type(None)]
    if get_origin(hint) in (typing.Union, types.UnionType):
        return f"{type_name(args[0])} or null"
    if get_origin(hint) is tuple:
        return f"list of {type_name(args[0])}"
    return getattr(get_origin(hint) or hint, "__name__", str(hint))


# ---------------------------------------------------------------------------- other names of a setting
# TRL's (transformers.TrainingArguments / trl.DPOConfig) names for cream's settings, alias -> cream's name: the one
# table of aliases. Each is accepted wherever its setting is: as a flag (`--learning-rate`, `--learning_rate` for
# `--lr`, hidden from --help), as a key of a run config section and of a stage's `--config` file. docs/CONFIG.md's
# table is derived from it (cream_train/run/config.py, alias_table; tests/test_user_names.py checks it).
ALIASES: dict[str, str] = {
    "learning_rate": "lr",
    "num_train_epochs": "epochs",
    "per_device_train_batch_size": "batch_size",
    "gradient_accumulation_steps": "grad_accum",
    "output_dir": "out",
    "model_name_or_path": "model",
}
# TRL's names that are cream's own names too (listed in the same table of docs/CONFIG.md).
SAME_AS_TRL: tuple[str, ...] = ("max_length", "max_steps", "warmup_ratio", "weight_decay", "max_grad_norm", "seed",
                                "logging_steps", "report_to", "gradient_checkpointing", "beta")


def aliases_of(name: str) -> list[str]:
    """The aliases of setting ``name`` (``lr`` → ``["learning_rate"]``)."""
    return [a for a, c in ALIASES.items() if c == name]


def closest(name: str, known) -> str | None:
    """The known name (or alias of one) closest to a mistyped ``name``, or None (difflib)."""
    known = set(known)
    candidates = sorted(known | {a for a, c in ALIASES.items() if c in known})
    found = difflib.get_close_matches(name, candidates, n=1)
    return found[0] if found else None


def suggestion(name: str, known, render: Callable[[str], str] = lambda k: k) -> str:
    """``"; did you mean learning_rate (lr)?"`` for a mistyped ``name`` (an alias is followed by its setting's
    name), or ``""``. ``render``: how a name is written (a key, ``--a-flag``)."""
    best = closest(name, known)
    if best is None:
        return ""
    if best in ALIASES:
        return f"; did you mean {render(best)} ({render(ALIASES[best])})?"
    return f"; did you mean {render(best)}?"


def canonical_keys(raw: dict, known, where: str = "") -> tuple[dict, list[str]]:
    """``raw`` with each alias key replaced by its setting's name (where ``known`` has that setting), and the
    problems: an unknown key (with the closest known name), a setting given under two names. ``where``: the
    prefix of a key in a message (``"train."``)."""
    known = set(known)
    out, problems, named = {}, [], {}
    for key, value in raw.items():
        name = ALIASES.get(key, key) if isinstance(key, str) and ALIASES.get(key) in known else key
        if name not in known:
            hint = suggestion(str(key), known) if len(str(key)) <= SHOWN_WHOLE else ""
            problems.append(f"{where}{shown(key, quote=False)}: unknown setting"
                            + (hint or f" (known: {', '.join(sorted(known))})"))
            continue
        if name in named:
            problems.append(f"{where}{named[name]} and {where}{key}: the same setting ({alias_note(name)}); give one")
            continue
        named[name] = key
        out[name] = value
    return out, problems


def alias_note(name: str) -> str:
    """``"learning_rate is TRL's name for lr"``."""
    return ", ".join(f"{a} is TRL's name for {name}" for a in aliases_of(name)) or name
