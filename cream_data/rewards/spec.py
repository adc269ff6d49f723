"""The pairing specification: every rule that decides which pair a prompt gives and what C weighs it by, in one value.

A :class:`PairingSpec` is built once per pairing from the label settings (:func:`pairing_spec`), checked once (every
problem at once, :meth:`PairingSpec.problems`) and passed whole to pair building
(:func:`cream_data.rewards.pairing.build_preferences`). Its fields:

    reward_scorer  the scorer role whose reward picks chosen and rejected (``--reward``: dpo → current, judge, …)
    partner        the scorer role whose ranking gives the consistency C, or None (C = 1)
    consistency    how C is measured: kendall | spearman | toporder          (docs/algorithm.md 3.2)
    scope          dataset: every pair the mean C over the pairs formed (the paper's one C; default) |
                   prompt: each prompt's pair its own C                        (docs/algorithm.md 4.4)
    clip_c         raise a weight below 1/2 to 1/2 (off by default, as the paper and the authors' code)
    pair_policy    weight: keep every pair | agree: keep where the partner agrees, weight 1 | both: agree, weight C
    min_margin     skip a pair whose reward margin (chosen − rejected) is below this; None: off

Each field other than ``reward_scorer`` and ``partner`` is the label setting of the same name; those two are
resolved from the settings ``reward`` and ``consistency_between`` (:data:`RESOLVED_FROM`). So the label settings a
pairing depends on are :func:`setting_names`: re-pairing from stored scores records exactly those.

Problems are ``(setting, text)`` pairs; a text names another setting as ``{name}``. The label settings render them
with their flags (``--pair-policy: …``) or run-config keys (``label.pair_policy: …``); a spec built directly raises
them with the flags.

The skip reasons (:class:`SkipReason`) are the names the pairing summary counts, in the order they apply: a prompt is
skipped for the first that holds (docs/algorithm.md 4.2).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, fields
from enum import StrEnum

from cream_data.errors import CreamError
from cream_data.vocab import CONSISTENCY_MEASURES, PAIR_POLICIES, REWARD_ROLE, SCOPES, SCORER_ROLES


class SkipReason(StrEnum):
    """Why a prompt forms no pair; the value is the key the pairing summary (``skipped``) counts it under."""

    N_LT_2 = "n_lt_2"                      # fewer than 2 responses
    NONFINITE_REWARD = "nonfinite_reward"  # fewer than 2 finite pair-picking rewards
    ALL_EQUAL = "all_equal"                # the finite (or usable) pair-picking rewards are all equal
    MISSING_PARTNER = "missing_prev"       # fewer than 2 responses with a finite reward under both scorers
    DISAGREE = "disagree"                  # agree/both: the partner does not put chosen strictly above rejected
    NO_MARGIN = "no_margin"                # chosen and rejected are one text, or (pools) chosen does not beat rejected
    MIN_MARGIN = "min_margin"              # the reward margin chosen − rejected is below ``min_margin``

    @property
    def code(self) -> int:
        """Its number in a per-prompt reason array (0 = the prompt pairs)."""
        return list(SkipReason).index(self) + 1


# The reasons every pairing summary counts; ``min_margin`` is counted only where the option is set, so the summary of
# a pairing without it is what it was before the option existed.
ALWAYS_COUNTED: tuple[SkipReason, ...] = tuple(r for r in SkipReason if r is not SkipReason.MIN_MARGIN)

# The spec's fields that are resolved from a label setting of another name (the others are settings themselves).
RESOLVED_FROM = {"reward_scorer": "reward", "partner": "consistency_between"}


@dataclass(frozen=True)
class PairingSpec:
    """How the prompts of a scores table become pairs (see the module doc); checked on construction."""

    reward_scorer: str = "current"
    partner: str | None = "previous"
    consistency: str = "kendall"
    scope: str = "dataset"
    clip_c: bool = False
    pair_policy: str = "weight"
    min_margin: float | None = None

    def __post_init__(self) -> None:
        problems = self.problems()
        if problems:
            raise CreamError(rendered(problems))

    def problems(self) -> list[tuple[str, str]]:
        """Every problem of this spec: a value outside its choices, then the rules across fields (:func:`rules`)."""
        out = [(name, f"got {getattr(self, name)!r}, expected one of {', '.join(allowed)}")
               for name, allowed in (("consistency", CONSISTENCY_MEASURES), ("scope", SCOPES),
                                     ("pair_policy", PAIR_POLICIES))
               if getattr(self, name) not in allowed]
        if not isinstance(self.clip_c, bool):
            out.append(("clip_c", f"got {self.clip_c!r}, expected true or false"))
        if self.partner is not None and self.partner == self.reward_scorer:
            out.append(("consistency_between", f"the two scorers must differ (got {self.reward_scorer!r} twice)"))
        return out + rules(self.pair_policy, self.min_margin, partner=self.partner, partner_known=True)

    @property
    def between(self) -> tuple[str, str] | None:
        """(pair-picking role, partner) of the consistency C, or None without a partner."""
        return (self.reward_scorer, self.partner) if self.partner is not None else None

    @property
    def skip_reasons(self) -> tuple[SkipReason, ...]:
        """The reasons this pairing's summary counts (``min_margin`` only where it is set)."""
        return ALWAYS_COUNTED + ((SkipReason.MIN_MARGIN,) if self.min_margin is not None else ())


def rules(pair_policy, min_margin, *, partner: str | None, partner_known: bool) -> list[tuple[str, str]]:
    """The rules across pairing fields: a pair policy other than ``weight`` needs a partner (checked only where the
    partner is known: when re-pairing stored scores, CREAM's default partner depends on the rows they hold), and
    ``min_margin`` is a finite number >= 0 (a margin is chosen's reward minus rejected's, never negative)."""
    out = []
    if partner_known and pair_policy in PAIR_POLICIES and pair_policy != "weight" and partner is None:
        out.append(("pair_policy", f"got {pair_policy!r}, which needs two scorers to agree; give "
                    "{consistency_between} A,B (or {prev_model} for current,previous)"))
    if min_margin is not None and not _non_negative(min_margin):
        out.append(("min_margin", f"got {min_margin!r}, expected a finite number >= 0 or unset"))
    return out


def _non_negative(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0


def setting_names() -> tuple[str, ...]:
    """The label settings a pairing is built from (the spec's fields, under their settings' names)."""
    return tuple(RESOLVED_FROM.get(f.name, f.name) for f in fields(PairingSpec))


def partner_role(reward: str, consistency_between: str | None, *, previous_scored: bool) -> str | None:
    """The consistency partner of the label settings: the scorer role whose ranking is compared with the
    pair-picking one's, or None (C = 1).

    ``consistency_between`` unset: CREAM's ``previous`` when the DPO reward picks the pairs and M_{t-1} scores
    (``previous_scored``: ``prev_model`` is set when labeling; the stored scores hold ``previous`` rows when
    re-pairing); no partner for the judge, reward-model and oracle rewards (``judge`` is the paper's SRLM row,
    ``rm``, an external reward model, its Oracle row; ``oracle``, ground-truth correctness, is beyond the paper).
    ``none`` turns C off; ``A,B`` names the two roles, one of which picks the pairs (the other is the partner).
    ``consistency_between`` must be well-formed (:func:`between_problems`)."""
    if consistency_between is None:
        return "previous" if reward == "dpo" and previous_scored else None
    if consistency_between.strip().lower() == "none":
        return None
    a, b = (x.strip() for x in consistency_between.split(",", 1))
    return b if a == REWARD_ROLE.get(reward, "current") else a


def between_problems(reward: str, consistency_between: str | None) -> list[tuple[str, str]]:
    """What is wrong with ``consistency_between`` (``A,B``, ``none`` or unset) for the pair-picking ``reward``."""
    cb = consistency_between
    if cb is None or cb.strip().lower() == "none":
        return []
    parts = [x.strip() for x in cb.split(",")]
    if len(parts) != 2 or not all(parts) or parts[0] == parts[1]:
        return [("consistency_between", f"got {cb!r}, expected two different scorer roles A,B from "
                 f"{', '.join(SCORER_ROLES)} (or none)")]
    unknown = [x for x in parts if x not in SCORER_ROLES]
    if unknown:
        return [("consistency_between", f"got {unknown[0]!r}, expected a scorer role: {', '.join(SCORER_ROLES)}")]
    pick = REWARD_ROLE.get(reward, "current")
    if pick not in parts:
        return [("consistency_between", f"got {cb!r}, expected one of the two to be {pick!r} (the scorer that picks "
                 f"the pairs under {{reward}} {reward})")]
    return []


def settings_problems(settings, *, previous_scored: bool | None) -> list[tuple[str, str]]:
    """The pairing problems of label ``settings`` (an object with the attributes :func:`setting_names`), whose own
    declared choices (consistency, scope, pair_policy) and types (clip_c) are checked where they are declared.
    ``previous_scored``: whether M_{t-1} scores (None: not known yet, when re-pairing; the partner-dependent rule
    waits for the scores)."""
    problems = between_problems(settings.reward, settings.consistency_between)
    partner = None if problems else partner_role(settings.reward, settings.consistency_between,
                                                 previous_scored=bool(previous_scored))
    return problems + rules(settings.pair_policy, settings.min_margin, partner=partner,
                            partner_known=previous_scored is not None and not problems)


def pairing_spec(settings, *, previous_scored: bool) -> PairingSpec:
    """The spec of label ``settings`` (an object with the attributes :func:`setting_names`: a LabelConfig), with
    M_{t-1}'s scores present or not (:func:`partner_role`). Raises every problem at once."""
    problems = between_problems(settings.reward, settings.consistency_between)
    if problems:
        raise CreamError(rendered(problems))
    own = {f.name: getattr(settings, f.name) for f in fields(PairingSpec) if f.name not in RESOLVED_FROM}
    return PairingSpec(reward_scorer=REWARD_ROLE.get(settings.reward, "current"),
                       partner=partner_role(settings.reward, settings.consistency_between,
                                            previous_scored=previous_scored), **own)


_REF = re.compile(r"\{([a-z][a-z0-9_]*)\}")


def rendered(problems: list[tuple[str, str]]) -> str:
    """Problems as one line, each setting named by its flag (``pair_policy`` → ``--pair-policy``)."""
    def flag(name: str) -> str:
        return "--" + name.replace("_", "-")

    return "; ".join(f"{flag(key)}: {_REF.sub(lambda m: flag(m[1]), text)}" for key, text in problems)
