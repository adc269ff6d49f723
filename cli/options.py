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
"""

from __future__ import annotations

import inspect
from dataclasses import MISSING, dataclass, fields
from typing import Any, Callable, Optional, get_args, get_origin, get_type_hints

import typer
from rich.markup import escape

from cream_data.settings import SettingsError, default_of, flag_decl, flag_of, user_fields

_CTX = "cream_ctx"


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
        return lambda name: flags.get(name) or own(name)


def with_settings(*classes, skip=(), which: Callable[[type], str] = lambda c: c.__name__):
    """Decorator of a Typer command function: adds an option for every setting of ``classes`` that the function
    does not declare itself (nor ``skip``), in the place of its ``settings`` parameter, and passes their values as
    ``settings`` (:class:`Options`).
    ``which(cls)`` names a class in help texts and errors (``--stage dpo``)."""
    specs = _specs(classes, skip)

    def wrap(fn):
        declared = list(inspect.signature(fn, eval_str=True).parameters.values())
        at = [p.name for p in declared].index("settings")  # the generated options go where `settings` stands
        kw = inspect.Parameter.KEYWORD_ONLY
        names = [n for n in specs if n not in {p.name for p in declared}]
        generated = [inspect.Parameter(n, kw, default=option, annotation=annotation)
                     for n in names for annotation, option in [specs[n].option(classes, which)]]
        after = [p.replace(kind=kw) for p in declared[at + 1:]]
        params = [*declared[:at], *generated, *after, inspect.Parameter(_CTX, kw, annotation=typer.Context)]

        def command(**kwargs):
            ctx = kwargs.pop(_CTX)
            values = {n: specs[n].value(kwargs.pop(n)) for n in names}
            given = {n for n in specs if _given(ctx, n)}
            return fn(**kwargs, settings=Options(values, given, {n: specs[n] for n in specs}, which))

        command.__signature__ = inspect.Signature(params)
        command.__annotations__ = {p.name: p.annotation for p in params}
        command.__name__, command.__doc__, command.__module__ = fn.__name__, fn.__doc__, fn.__module__
        return command

    return wrap


def _given(ctx, name: str) -> bool:
    """Whether the option was written on the command line (or the environment), not left at its default."""
    source = ctx.get_parameter_source(name)
    return source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP")
