"""A ``cream run`` config's section derived from a stage's settings (:class:`cream_data.settings.Settings`): the same
keys, types, defaults, help and checks, minus the fields the run fills itself, plus the run-level keys of that section.
The run config (:mod:`cream_train.run.sections`) is made of these.
"""

from __future__ import annotations

from dataclasses import field, fields, make_dataclass
from typing import Any, ClassVar, get_type_hints

from cream_data.settings import user_fields


class Section:
    """Base of a run config section derived from a stage's settings (:func:`section`)."""

    stage: ClassVar[type]
    owned: ClassVar[tuple[str, ...]] = ()  # the stage's fields the run fills itself
    extras: ClassVar[tuple[str, ...]] = ()  # run-level keys that are not the stage's settings

    def stage_values(self) -> dict[str, Any]:
        """The stage settings this section holds (its extras left out)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in self.extras}

    def build(self, **owned):
        """The stage's settings: this section's values and the run's ``owned`` ones (which win)."""
        return self.stage(**{**self.stage_values(), **owned})


def section(name: str, stage: type, *, owned=(), extras=(), defaults: dict | None = None,
            paths: dict | None = None) -> type:
    """The run config section of ``stage``: a frozen dataclass with every user setting of ``stage`` except the
    ``owned`` ones, with the same types, defaults and help, after the run-level ``extras``
    (``(name, type, setting(…))``). ``defaults`` replaces a default the run decides otherwise (``None``: the run
    decides, e.g. by method); the field then also allows None. ``paths``: the path kind of a setting whose own
    definition does not say it (name -> kind)."""
    hints = get_type_hints(stage)
    if set(paths or ()) - set(hints):
        raise ValueError(f"paths: {stage.__name__} has no setting {', '.join(sorted(set(paths) - set(hints)))}")
    specs = []
    for f in user_fields(stage):
        if f.name in owned:
            continue
        hint, kw = hints[f.name], {"default": f.default, "default_factory": f.default_factory}
        if defaults and f.name in defaults:
            kw = {"default": defaults[f.name]}
            hint = hint | None if defaults[f.name] is None else hint
        meta = {**f.metadata, "path": paths[f.name]} if paths and f.name in paths else f.metadata
        specs.append((f.name, hint, field(**kw, metadata=meta)))
    specs = list(extras) + specs  # the run-level keys first (sft.data, prompts.source)
    cls = make_dataclass(name, specs, bases=(Section,), frozen=True)
    cls.stage, cls.owned, cls.extras = stage, tuple(owned), tuple(e[0] for e in extras)
    cls.__doc__ = f"The run config's settings of {stage.__name__}, but {', '.join(owned) or 'none'} (the run's)."
    return cls
