"""A stage command's options, derived from its settings dataclass (:mod:`cream_data.settings`).

    @with_settings(SampleConfig)
    def sample(prompts: Path = typer.Argument(…), out_dir: Path = typer.Option(…, "--out"), …, settings=None):
        cfg = settings.build(SampleConfig)

adds one option per setting the command does not declare itself: the flag from the field name (``max_new_tokens``
→ ``--max-new-tokens``) or the field's own ``flag`` (``--lora/--no-lora``), the field's default, help text and
allowed values (shown as ``[hf|vllm]``); a tuple setting is a comma-separated list. The command receives their values
as ``settings`` (:class:`Options`), whose :meth:`Options.build` makes the stage's config and names any problem by the
flag the user wrote (``--top-p: got 3, …``). With several dataclasses (``cream train``: DPO and SFT) a setting of only
some of them says so in its help, and one whose default differs between them defaults to each one's own.

Every flag of every command also answers to its underscore form (``--max_new_tokens``) and to TRL's name of its
setting (``--learning-rate``, ``--learning_rate`` for ``--lr``: ``settings.ALIASES``), without showing them in
``--help``: :func:`normalize_flag` is the app's ``token_normalize_func``. ``--config FILE.yaml`` (added to every
stage command) reads the command's settings from a YAML mapping, flags overriding it.
"""

from __future__ import annotations

import inspect
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Optional, get_args, get_origin, get_type_hints

import typer
from rich.markup import escape

from cream_data.settings import (ALIASES, SettingsError, canonical_keys, coerce, default_of, flag_decl, flag_of,
                                 joined, type_name, user_fields)

_CTX = "cream_ctx"
CONFIG_PARAM = _CONFIG = "cream_config"  # the `--config` parameter with_settings adds
_FROM_FILE = "cream_from_file"  # ctx.meta: parameter -> how a value read from the --config file is named

# TRL's names as flag names: ``learning-rate`` → ``lr``.
FLAG_ALIASES = {a.replace("_", "-"): c.replace("_", "-") for a, c in ALIASES.items()}


def normalize_flag(name: str) -> str:
    """An option's name (without its dashes) as the parser knows it: ``max_new_tokens`` → ``max-new-tokens``,
    ``learning_rate`` → ``lr``. The Typer app's ``token_normalize_func`` (cli/main.py): the underscore forms and
    TRL's names work on every command without a line in ``--help``."""
    dashed = name.replace("_", "-")
    return FLAG_ALIASES.get(dashed, dashed)


def flag_forms(long_opt: str) -> list[str]:
    """``--lr`` → ``["--lr", "--learning-rate"]``: an option's flag and its aliases' (for suggestions)."""
    name = long_opt[2:]
    return [long_opt] + [f"--{a}" for a, c in FLAG_ALIASES.items() if c == name]


def flag(f) -> str:
    """The long flag of a setting's field (the first of ``--x/--no-x``)."""
    return flag_of(f)


def flag_namer(cls) -> Callable[[str], str]:
    """Field name → its flag, for :meth:`SettingsError.named`."""
    flags = {f.name: flag(f) for f in fields(cls)}
    return lambda name: flags.get(name, name)


@dataclass
class _Spec:
    """One option: the field (of the first class that has it), its type, the option's default, the classes that
    have it and each one's default."""

    field: Any
    hint: Any
    defaults: dict  # class -> its default

    @property
    def listed(self) -> bool:
        return get_origin(_inner(self.hint)) is tuple

    @property
    def default(self):
        values = list(self.defaults.values())
        return values[0] if all(v == values[0] for v in values) else None  # disagreeing: each class's own

    def option(self, classes, which) -> tuple[Any, Any]:
        """(annotation, typer.Option) of this setting."""
        meta, default = self.field.metadata, self.default
        annotation = str if self.listed else _inner(self.hint)
        if default is None or _inner(self.hint) is not self.hint:
            annotation = Optional[annotation]
        if self.listed and default not in (None, MISSING):
            default = ",".join(default)
        text = escape(meta["help"])  # the help is rich markup: a [ ] in it is text
        if len(self.defaults) < len(classes):
            text += f" (only with {', '.join(which(c) for c in self.defaults)})"
        elif default is None and any(v is not None for v in self.defaults.values()):
            text += " (default: " + ", ".join(f"{v} with {which(c)}" for c, v in self.defaults.items()) + ")"
        choices = meta.get("choices")
        metavar = meta.get("metavar") or (f"[{'|'.join(choices)}]" if choices else None)
        return annotation, typer.Option(... if default is MISSING else default, flag_decl(self.field), help=text,
                                        metavar=metavar)

    def value(self, raw):
        """The option's value as the field holds it (a comma-separated list as a tuple)."""
        if self.listed and isinstance(raw, str):
            return tuple(t.strip() for t in raw.split(",") if t.strip())
        return raw


def _inner(hint):
    """``X`` of ``X | None``."""
    args = [a for a in get_args(hint) if a is not type(None)]
    return args[0] if type(None) in get_args(hint) and len(args) == 1 else hint


def _specs(classes, skip) -> dict[str, _Spec]:
    specs: dict[str, _Spec] = {}
    for cls in classes:
        hints = get_type_hints(cls)
        for f in user_fields(cls):
            if f.name in skip:
                continue
            spec = specs.setdefault(f.name, _Spec(f, hints[f.name], {}))
            spec.defaults[cls] = default_of(f)
    return specs


@dataclass
class Options:
    """The settings' values of one invocation, which of them were given, and how to build a stage config."""

    values: dict
    given: set
    specs: dict
    which: Callable
    from_file: dict = field(default_factory=dict)  # setting -> how its key in the --config file is named

    def build(self, cls, *, flags: dict[str, str] | None = None, **owned):
        """``cls`` from the options that are its settings and the command's ``owned`` values; an option of another
        class given on the command line, or a value ``cls`` refuses, is an error naming the flag (``flags``: the
        flag the command took an owned value from, e.g. ``{"tasks": "--harness"}``)."""
        names = {f.name for f in fields(cls)}
        stray = [(n, f"only with {', '.join(self.which(c) for c in self.specs[n].defaults)}")
                 for n in sorted(self.given) if n in self.specs and n not in names]
        values = {n: v for n, v in self.values.items() if n in names and not (v is None and self._own_default(n))}
        try:
            config = cls(**{**values, **owned})
        except SettingsError as e:
            stray += e.keyed
        if stray:
            namer = self._namer(cls)
            raise SettingsError("", stray, names=names | set(self.specs),
                                namer=lambda name: (flags or {}).get(name) or namer(name))
        return config

    def _own_default(self, name: str) -> bool:
        """None stands for each class's own default (they disagree)."""
        spec = self.specs[name]
        return spec.default is None and any(v is not None for v in spec.defaults.values())

    def _namer(self, cls) -> Callable[[str], str]:
        flags = {n: flag(s.field) for n, s in self.specs.items()}
        own = flag_namer(cls)
        return lambda name: self.from_file.get(name) or flags.get(name) or own(name)


def with_settings(*classes, skip=(), which: Callable[[type], str] = lambda c: c.__name__):
    """Decorator of a Typer command function: adds an option for every setting of ``classes`` that the function
    does not declare itself (nor ``skip``), in the place of its ``settings`` parameter, and passes their values as
    ``settings`` (:class:`Options`).
    ``which(cls)`` names a class in help texts and errors (``--stage dpo``). Adds ``--config FILE.yaml`` too."""
    specs = _specs(classes, skip)

    def wrap(fn):
        declared = list(inspect.signature(fn, eval_str=True).parameters.values())
        at = [p.name for p in declared].index("settings")  # the generated options go where `settings` stands
        kw = inspect.Parameter.KEYWORD_ONLY
        names = [n for n in specs if n not in {p.name for p in declared}]
        generated = [inspect.Parameter(n, kw, default=option, annotation=annotation)
                     for n in names for annotation, option in [specs[n].option(classes, which)]]
        after = [p.replace(kind=kw) for p in declared[at + 1:]]
        config = inspect.Parameter(_CONFIG, kw, annotation=Optional[str], default=typer.Option(
            None, "--config", metavar="FILE.yaml", is_eager=True, callback=_config_callback(specs),
            help="Read this command's settings from a YAML mapping (the keys of its section of a `cream run` config, "
                 "TRL's names too, relative paths against the file's folder); flags override it."))
        params = [*declared[:at], *generated, *after, config, inspect.Parameter(_CTX, kw, annotation=typer.Context)]

        def command(**kwargs):
            ctx = kwargs.pop(_CTX)
            kwargs.pop(_CONFIG)
            values = {n: specs[n].value(kwargs.pop(n)) for n in names}
            given = {n for n in specs if _given(ctx, n)}
            from_file = {n: k for n, k in ctx.meta.get(_FROM_FILE, {}).items() if _source(ctx, n) == "DEFAULT_MAP"}
            return fn(**kwargs, settings=Options(values, given, {n: specs[n] for n in specs}, which, from_file))

        command.__signature__ = inspect.Signature(params)
        command.__annotations__ = {p.name: p.annotation for p in params}
        command.__name__, command.__doc__, command.__module__ = fn.__name__, fn.__doc__, fn.__module__
        return command

    return wrap


def _source(ctx, name: str) -> str | None:
    source = ctx.get_parameter_source(name)
    return None if source is None else source.name


def _given(ctx, name: str) -> bool:
    """Whether the option was written on the command line, the environment or the ``--config`` file (the only
    default map), not left at its default."""
    return _source(ctx, name) not in (None, "DEFAULT")


# ---------------------------------------------------------------------------- --config FILE.yaml
# The settings that hold paths, relative to a --config file's folder: always local (an output, a folder of data, a
# template file); data that may be a Hub dataset id (resolved when it looks local, as a run config's sft.data);
# a model that may be a Hub id or the embedded model's alias (resolved when it exists beside the file or starts
# with ./ or ../).
LOCAL_PATHS = {"out", "data_dir", "judge_template", "scores"}
DATA_PATHS = {"data", "prompts", "responses", "source", "chosen_from", "rejected_from"}
MODEL_PATHS = {"model", "ref", "prev_model", "prev_ref", "reward_model"}


def _config_callback(specs: dict[str, _Spec]):
    """The ``--config`` option's callback: the file's settings become the command's default map (so a flag given
    on the command line wins), each key checked (an unknown one, with the closest known name; a value of the wrong
    type; a setting given under two names) and every problem reported at once, naming the file and the key."""

    def load(ctx: typer.Context, value: Optional[str]):
        if value is None or ctx.resilient_parsing:
            return value
        from cream_data.config_yaml import kind_of, read_mapping
        from cream_data.errors import CreamError
        from cream_data.jsonfile import require_file

        path = require_file(value, "a YAML file of settings", where="--config ", missing="no such file")
        problems: list[str] = []
        raw = read_mapping(path, problems, f"--config {path}", f"a mapping of `{ctx.command_path}` settings")
        params = _keys(ctx)
        raw, unknown = canonical_keys(raw, params)
        problems += unknown
        base, default_map, named = path.resolve().parent, {}, {}
        for key, v in raw.items():
            name = params[key]
            if name in specs:
                try:
                    v = coerce(v, specs[name].hint) if not (specs[name].listed and isinstance(v, str)) else v
                except TypeError:
                    problems.append(f"{key}: got {kind_of(v)}, expected {type_name(specs[name].hint)}")
                    continue
            v = _resolve(base, key, v)
            default_map[name] = ",".join(v) if isinstance(v, (list, tuple)) and name in specs and specs[
                name].listed else v
            named[name] = f"{path}: {key}"
        if problems:
            raise CreamError(f"--config {path}: " + joined(problems))
        ctx.default_map = {**(ctx.default_map or {}), **default_map}
        ctx.meta[_FROM_FILE] = named
        return value

    return load


def _keys(ctx) -> dict[str, str]:
    """A command's settings by their key in a --config file (the long flag with ``_`` for ``-``, an argument's own
    name) → its parameter's name."""
    keys = {}
    for p in ctx.command.params:
        if p.name in (_CONFIG, "help"):
            continue
        opts = [o for o in p.opts if o.startswith("--")] if p.param_type_name == "option" else [p.name]
        for o in opts:
            keys[o.lstrip("-").replace("-", "_")] = p.name
    return keys


def _resolve(base: Path, key: str, value):
    """A path-valued setting relative to the --config file's folder ``base``."""
    if isinstance(value, (list, tuple)):
        return [_resolve(base, key, v) for v in value]
    if not isinstance(value, str) or not value or key not in LOCAL_PATHS | DATA_PATHS | MODEL_PATHS:
        return value
    from cream_train.run.config_paths import exists, looks_local

    path = Path(value).expanduser()
    if path.is_absolute():
        return str(path)
    if key in LOCAL_PATHS or (key in DATA_PATHS and looks_local(value)) or value.startswith(("./", "../")) \
            or exists(base / path):
        return str((base / path).resolve())
    return value
