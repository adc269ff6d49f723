"""Preference pairs from stored scores: pivot, rank, measure consistency, pick chosen/rejected (docs/algorithm.md 4).

``build_preferences(responses, scores, spec)`` is a pure function over two Arrow tables and a
:class:`~cream_data.rewards.spec.PairingSpec` (which scorer picks, its consistency partner, the C measure, scope, clip,
pair policy and minimum margin); it never runs a model, so `cream label --scores DIR` can re-pair stored scores with
another spec.

How it works, with no per-prompt Python loop:

1. Sort the responses by ``(prompt_id, response_idx)``; prompt ``p`` owns the contiguous rows
   ``start[p] … start[p] + N_p - 1`` and its ``response_idx`` must be exactly ``0 … N_p - 1``.
2. Join each scorer's rows (the pair-picking one, its partner, log-prob) onto those rows: one flat float array per
   scorer.
3. **N may differ across prompts** (e.g. a sampler that dropped a failed generation): prompts are grouped
   by their N and each group is one ``[P_N, N]`` matrix, processed with the vectorised
   :mod:`cream_data.rewards.ranking` functions (:func:`~cream_data.rewards.ranking.select_pairs`). There are as
   many groups as distinct N values (usually one).
4. **Usable responses**: those with a finite reward under the pair-picking scorer (a NaN/inf/null or missing
   one, e.g. an unparsed judge output, is dropped) and, when a consistency partner is used, a finite partner
   reward too. The partner is the second scorer of the consistency C: ``previous`` (M_{t-1}'s DPO reward,
   CREAM's), or any other scorer role of the scores table (``judge``, ``rm``, ``oracle``, ``current``). A prompt
   ranks and pairs over its usable responses only; the others are counted in the summary's
   ``responses_dropped`` (``nonfinite_reward``: no finite reward; ``missing_prev``: a finite reward but no finite
   partner reward), over the prompts that formed a pair.
5. Skip prompts that cannot give a meaningful pair, by the first reason that applies, in this order
   (:class:`~cream_data.rewards.spec.SkipReason`): ``n_lt_2`` (fewer than 2 responses), ``nonfinite_reward``
   (fewer than 2 finite rewards), ``all_equal`` (all finite rewards equal: no preference), ``missing_prev`` (fewer
   than 2 usable responses), ``all_equal`` again (the usable responses' rewards are all equal), and under the pair
   policies ``agree`` and ``both``: ``disagree`` (the partner does not reward chosen strictly above rejected);
   then ``no_margin``: the picked chosen and rejected are the same text (one answer drawn twice is no preference);
   last, with ``min_margin`` set: ``min_margin`` (chosen's reward minus rejected's is below it).
6. ``chosen`` = the first index among the tied maxima of the usable rewards (``np.argmax``),
   ``rejected`` = the first index among the tied minima (``np.argmin``), exactly as the CREAM reference picks
   them. Without ties they are the responses ranked 1 and k (k usable); with a tie at the top (or bottom) the
   stored ``ranks`` (scipy's tie order, see :mod:`cream_data.rewards.ranking`) may give rank 1 to another of the tied
   responses. The ``ranks`` (and the partner's ``prev_ranks``) lists keep all N entries, each a permutation of 1..N:
   the usable responses are ranked 1..k among themselves, the dropped ones follow as k+1..N in response order
   (they were not ranked; their ``rewards``/``prev_rewards`` entries are null).
7. Consistency C between the pair-picking and the partner's rankings of the usable responses (``consistency``
   method; ``prev_rewards``/``prev_ranks``/``prev_model`` hold the partner's); with no partner (SRLM, oracle,
   CREAM w/o RC) C = 1 and the method is ``none``. ``weight`` (pair policies ``weight`` and ``both``) = the mean
   C over the pairs produced (scope ``dataset``, the paper's; skipped prompts are not part of that mean) or each
   pair's own C (scope ``prompt``), raised to 1/2 where below with ``clip_c``
   (:func:`~cream_data.rewards.dpo.scoped_weights`); under ``agree`` every kept pair weighs 1. The mean is over
   every pair of the call: a sharded labeling pairs once, from all shards' scores (cream_data/stages/label.py).

Prompts are processed in groups of equal (N, k): each group's usable responses are moved to the left of
their row (response order kept), so every group is a dense ``[P, k]`` matrix.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

import schemas

from cream_data.errors import CreamError
from cream_data.rewards.dpo import scoped_weights
from cream_data.rewards.ranking import select_pairs
from cream_data.rewards.rows import Rows, ScorerRows
from cream_data.rewards.spec import PairingSpec, SkipReason
from cream_data.stats import finite_or_none


@dataclass
class PairingSummary:
    """What pairing did: counts by skip reason, consistency and reward-margin statistics over the pairs."""

    prompts: int
    pairs: int
    skipped: dict[str, int]
    responses_dropped: dict[str, int]  # responses left out of the pairs' rankings, by reason (see the module doc)
    ties: int  # prompts with >= 2 finite current rewards where at least two of those are equal
    consistency_method: str
    scope: str
    pair_policy: str = "weight"
    consistency_between: list[str] | None = None  # [the pair-picking scorer, its consistency partner]
    c_mean: float | None = None  # C over the pairs (before the scope and clip are applied)
    c_median: float | None = None
    c_std: float | None = None
    tau_mean: float | None = None
    margin_mean: float | None = None  # reward[chosen] - reward[rejected] over the pairs
    margin_median: float | None = None
    margin_std: float | None = None
    margin_min: float | None = None
    top_agreement: float | None = None  # share of pairs whose chosen is also the partner scorer's best

    def to_dict(self) -> dict:
        return asdict(self)


def build_preferences(responses: pa.Table, scores: pa.Table, spec: PairingSpec = PairingSpec(), *,
                      iteration: int | None = None, template_hash: str | None = None,
                      logp_scorer: str | None = "current",
                      eligible: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[pa.Table, PairingSummary]:
    """Build the ``preferences`` table (schema v2, sorted by prompt_id) and a summary by ``spec``; see the module doc.

    ``spec.reward_scorer`` picks the pair; ``spec.partner`` is the other ranking of the consistency C (any scorer
    role of the scores table: CREAM's is ``previous``, SCIR-style internal consistency uses ``judge`` against
    ``current``), or None for no consistency (C = 1). ``iteration``: recorded in every pair (None: the responses
    table's own); ``logp_scorer``: the scorer whose log-probs and token counts fill ``chosen_logp`` … (the
    reference of the next training; None: none).

    ``eligible``: two boolean arrays over the responses rows (in ``responses``' order): which rows may be chosen
    and which rejected (pools, e.g. temporal self-rewarding's past-anchored rejections). The chosen is then the
    best eligible row (the first on ties) and the rejected the worst eligible one; a prompt whose chosen does not
    score strictly above its rejected is skipped as ``no_margin``. Ranks and C stay over all rows."""
    _require(responses, "responses", ["prompt_id", "prompt", "response_idx", "response"]
             + ([] if iteration is not None else ["iteration"]))
    _require(scores, "scores", ["prompt_id", "response_idx", "scorer", "model", "ref_model", "reward"])
    rows = Rows(responses)
    if eligible is not None:
        order = rows.order.to_numpy()
        eligible = tuple(np.asarray(m, dtype=bool)[order] for m in eligible)
    picker = ScorerRows(scores, spec.reward_scorer, rows, required=True)
    partner = ScorerRows(scores, spec.partner, rows, required=True) if spec.partner is not None else None
    # The log-probs usually come from the reward scorer's own rows: reuse them rather than look them up again.
    known = {spec.reward_scorer: picker, **({spec.partner: partner} if partner is not None else {})}
    lp = (None if logp_scorer is None else known.get(logp_scorer)
          or ScorerRows(scores, logp_scorer, rows, required=False))
    ranked = _rank(rows, picker.floats("reward"), partner.floats("reward") if partner else None, spec.consistency,
                   eligible)
    if spec.pair_policy != "weight":
        ranked.drop_disagreeing(rows)
    ranked.drop_same_text(rows)
    if spec.min_margin is not None:
        ranked.drop_below_margin(rows, spec.min_margin)
    kp = ranked.kept()
    weight = (np.ones(len(kp)) if spec.pair_policy == "agree"
              else scoped_weights(ranked.c[kp], scope=spec.scope, clip_c=spec.clip_c))
    table = _table(rows, ranked, kp, weight, _Sources(picker, partner, lp), spec.consistency, iteration,
                   template_hash)
    return table, _summary(rows, ranked, kp, spec)


@dataclass(frozen=True)
class _Sources:
    """The scorers whose rows fill the table: the pair-picking one, its partner (None: none) and the log-probs'."""

    picker: ScorerRows
    partner: ScorerRows | None
    logp: ScorerRows | None


class _Ranked:
    """Per prompt: why it is skipped (0 = it pairs, else a :attr:`SkipReason.code`), its pair, C and tau, ties, the
    responses left out; per sorted response row: its rank under the reward and under the partner (0 where its prompt
    is skipped)."""

    def __init__(self, rows: Rows, reward: np.ndarray, partner_reward: np.ndarray | None, eligible=None):
        n_prompts = len(rows.starts)
        self.reward, self.partner_reward = reward, partner_reward
        self.eligible = eligible  # (may be chosen, may be rejected) per sorted row, or None: every row both
        self.reason = np.zeros(n_prompts, dtype=np.int8)
        self.chosen = np.zeros(n_prompts, dtype=np.int64)
        self.rejected = np.zeros(n_prompts, dtype=np.int64)
        self.c = np.ones(n_prompts)
        self.tau = np.full(n_prompts, np.nan)
        self.tied = np.zeros(n_prompts, dtype=bool)
        self.rank = np.zeros(rows.n_rows, dtype=np.int16)
        self.partner_rank = np.zeros(rows.n_rows, dtype=np.int16)
        self.drop_nonfinite = np.zeros(n_prompts, dtype=np.int64)  # responses left out of the prompt's ranking
        self.drop_missing = np.zeros(n_prompts, dtype=np.int64)

    def kept(self) -> np.ndarray:
        return np.flatnonzero(self.reason == 0)

    def margins(self, rows: Rows, kept: np.ndarray) -> np.ndarray:
        """reward[chosen] - reward[rejected] of the prompts ``kept``."""
        return self.reward[rows.starts[kept] + self.chosen[kept]] - self.reward[rows.starts[kept] + self.rejected[kept]]

    def drop_disagreeing(self, rows: Rows) -> None:
        """Skip (``disagree``) the pairs whose partner does not put chosen strictly above rejected."""
        kp = self.kept()
        partner = self.partner_reward
        agree = partner[rows.starts[kp] + self.chosen[kp]] > partner[rows.starts[kp] + self.rejected[kp]]
        self.reason[kp[~agree]] = SkipReason.DISAGREE.code

    def drop_same_text(self, rows: Rows) -> None:
        """Skip (``no_margin``) the pairs whose chosen and rejected are the same text: one answer drawn twice (or
        by two pools), rewarded apart by the scorer's noise only, is no preference; DPO learns nothing from it."""
        kp = self.kept()
        texts = [rows.original("response", rows.starts[kp] + side[kp]) for side in (self.chosen, self.rejected)]
        same = pc.fill_null(pc.equal(*texts), False).to_numpy(zero_copy_only=False)
        self.reason[kp[same]] = SkipReason.NO_MARGIN.code

    def drop_below_margin(self, rows: Rows, min_margin: float) -> None:
        """Skip (``min_margin``) the pairs whose reward margin, chosen's minus rejected's, is below ``min_margin``
        (a margin equal to it is kept)."""
        kp = self.kept()
        self.reason[kp[self.margins(rows, kp) < min_margin]] = SkipReason.MIN_MARGIN.code


def _rank(rows: Rows, reward: np.ndarray, partner_reward: np.ndarray | None, consistency: str,
          eligible=None) -> _Ranked:
    """Skip reasons, pairs, ranks and C of every prompt, one group of prompts with equal N at a time."""
    out = _Ranked(rows, reward, partner_reward, eligible)
    for n in np.unique(rows.counts):
        group = np.flatnonzero(rows.counts == n)
        if n < 2:
            out.reason[group] = SkipReason.N_LT_2.code
            continue
        _rank_group(out, rows, group, int(n), consistency)
    return out


def _rank_group(out: _Ranked, rows: Rows, group: np.ndarray, n: int, consistency: str) -> None:
    """The prompts of ``group`` (each with n responses): skip reasons, then the pairs over the usable responses."""
    idx = rows.starts[group, None] + np.arange(n)  # [P_N, N] row numbers
    r = out.reward[idx]
    finite = np.isfinite(r)
    usable = finite & np.isfinite(out.partner_reward[idx]) if out.partner_reward is not None else finite
    n_usable = usable.sum(axis=1)
    equal_finite, out.tied[group] = _equal_among(r, finite)
    equal_usable, _ = _equal_among(r, usable)
    out.reason[group] = np.select([finite.sum(axis=1) < 2, equal_finite, n_usable < 2, equal_usable],
                                  [SkipReason.NONFINITE_REWARD.code, SkipReason.ALL_EQUAL.code,
                                   SkipReason.MISSING_PARTNER.code, SkipReason.ALL_EQUAL.code], default=0)
    keep = out.reason[group] == 0
    out.drop_nonfinite[group] = (~finite).sum(axis=1)
    out.drop_missing[group] = (finite & ~usable).sum(axis=1)
    # usable responses first, in response order: row numbers [P_N, N] whose first k columns are the usable
    compact = np.take_along_axis(idx, np.argsort(~usable, axis=1, kind="stable"), axis=1)
    for k in np.unique(n_usable[keep]):
        sel = keep & (n_usable == k)
        _pair_dense(out, rows, group[sel], compact[sel], int(k), n, consistency)


def _pair_dense(out: _Ranked, rows: Rows, kept: np.ndarray, kidx: np.ndarray, k: int, n: int,
                consistency: str) -> None:
    """Prompts ``kept`` whose first k of n responses (row numbers ``kidx``) are the usable ones: a dense [P, k]."""
    partner = out.partner_reward
    pairs = select_pairs(out.reward[kidx[:, :k]], partner[kidx[:, :k]] if partner is not None else None,
                         consistency)
    at = np.arange(len(kept))
    out.chosen[kept] = kidx[at, pairs.chosen] - rows.starts[kept]
    out.rejected[kept] = kidx[at, pairs.rejected] - rows.starts[kept]
    out.c[kept] = pairs.consistency
    if out.eligible is not None:
        _pick_from_pools(out, rows, kept, kidx[:, :k])
    tail = np.broadcast_to(np.arange(k + 1, n + 1, dtype=np.int16), (len(kept), n - k))  # dropped: ranked last
    out.rank[kidx] = np.concatenate([pairs.ranks, tail], axis=1)
    if partner is not None:
        out.tau[kept] = pairs.kendall_tau
        out.partner_rank[kidx] = np.concatenate([pairs.partner_ranks, tail], axis=1)


def _pick_from_pools(out: _Ranked, rows: Rows, kept: np.ndarray, usable: np.ndarray) -> None:
    """The chosen among the rows that may be chosen, the rejected among those that may be rejected (first on
    ties: the positional responses come first); ``no_margin`` where chosen does not beat rejected."""
    may_choose, may_reject = (m[usable] for m in out.eligible)
    r = out.reward[usable]
    best = np.where(may_choose, r, -np.inf)
    worst = np.where(may_reject, r, np.inf)
    c, j = best.argmax(axis=1), worst.argmin(axis=1)
    at = np.arange(len(kept))
    out.chosen[kept] = usable[at, c] - rows.starts[kept]
    out.rejected[kept] = usable[at, j] - rows.starts[kept]
    out.reason[kept[~(best[at, c] > worst[at, j])]] = SkipReason.NO_MARGIN.code


def _table(rows: Rows, ranked: _Ranked, kp: np.ndarray, weight: np.ndarray, sources: _Sources, consistency: str,
           iteration: int | None, template_hash: str | None) -> pa.Table:
    """The preferences table of the kept prompts, in the schema's exact types. The partner's values go to the
    ``prev_*`` columns (the schema's names, from CREAM's partner M_{t-1}), whichever scorer role it is."""
    picker, partner, lp = sources.picker, sources.partner, sources.logp
    chosen_row, rejected_row = rows.starts[kp] + ranked.chosen[kp], rows.starts[kp] + ranked.rejected[kp]
    row_kept = np.repeat(ranked.reason == 0, rows.counts)
    offsets = np.concatenate([[0], np.cumsum(rows.counts[kp])]).astype(np.int32)

    def lists(values: np.ndarray, typ: pa.DataType) -> pa.Array:
        v = values[row_kept]
        null = ~np.isfinite(v) if pa.types.is_floating(typ) else None  # a dropped response's reward: null
        return pa.ListArray.from_arrays(pa.array(offsets), pa.array(v, type=typ, mask=null))

    def from_partner(make, typ: pa.DataType) -> pa.Array:
        return make() if partner is not None else pa.nulls(len(kp), type=typ)

    def from_lp(column: str, typ: pa.DataType) -> tuple[pa.Array, pa.Array]:
        if lp is None:
            return pa.nulls(len(kp), typ), pa.nulls(len(kp), typ)
        return lp.value(column, chosen_row, typ), lp.value(column, rejected_row, typ)

    ones = np.ones(len(kp))
    (chosen_logp, rejected_logp) = from_lp("logp", pa.float64())
    (chosen_nt, rejected_nt) = from_lp("n_tokens", pa.int32())
    columns = {
        "prompt_id": rows.prompt_id_at(rows.starts[kp]),
        "prompt": rows.original("prompt", rows.starts[kp]),
        "chosen": _assistant_turns(rows.original("response", chosen_row)),
        "rejected": _assistant_turns(rows.original("response", rejected_row)),
        "chosen_idx": pa.array(ranked.chosen[kp], pa.int16()),
        "rejected_idx": pa.array(ranked.rejected[kp], pa.int16()),
        "iteration": (pa.array(np.full(len(kp), iteration), pa.int32()) if iteration is not None
                      else rows.original("iteration", rows.starts[kp]).cast(pa.int32())),
        "n_responses": pa.array(rows.counts[kp], pa.int16()),
        "rewards": lists(ranked.reward, pa.float64()),
        "prev_rewards": from_partner(lambda: lists(ranked.partner_reward, pa.float64()), pa.list_(pa.float64())),
        "ranks": lists(ranked.rank, pa.int16()),
        "prev_ranks": from_partner(lambda: lists(ranked.partner_rank, pa.int16()), pa.list_(pa.int16())),
        "kendall_tau": from_partner(lambda: pa.array(ranked.tau[kp], pa.float64()), pa.float64()),
        "consistency": pa.array(ranked.c[kp] if partner is not None else ones, pa.float64()),
        "consistency_method": pa.array([consistency if partner is not None else "none"] * len(kp), pa.string()),
        "weight": pa.array(weight if partner is not None else ones, pa.float64()),
        "chosen_logp": chosen_logp, "rejected_logp": rejected_logp,
        "chosen_n_tokens": chosen_nt, "rejected_n_tokens": rejected_nt,
        "model": picker.value("model", chosen_row, pa.string()),
        "ref_model": picker.value("ref_model", chosen_row, pa.string()),
        "prev_model": from_partner(lambda: partner.value("model", chosen_row, pa.string()), pa.string()),
        "prev_ref_model": from_partner(lambda: partner.value("ref_model", chosen_row, pa.string()), pa.string()),
        "template_hash": pa.array([template_hash] * len(kp), pa.string()),
        **_sides(rows, chosen_row, rejected_row),
    }
    # the schema's exact types; validated where it is written (io.write_table), as every table is
    target = schemas.get("preferences").arrow
    return pa.Table.from_arrays([columns[f.name].cast(f.type) for f in target], schema=target)


def _sides(rows: Rows, chosen_row: np.ndarray, rejected_row: np.ndarray) -> dict[str, pa.Array]:
    """Where each side came from: the responses rows' generating model and iteration (null where the responses
    table has no such column)."""
    def column(name: str, at: np.ndarray, typ: pa.DataType) -> pa.Array:
        if name not in rows.table.column_names:
            return pa.nulls(len(at), typ)
        return rows.original(name, at).cast(typ)

    return {f"{side}_{name}": column(name, at, typ) for side, at in (("chosen", chosen_row), ("rejected", rejected_row))
            for name, typ in (("model", pa.string()), ("iteration", pa.int32()))}


def _summary(rows: Rows, ranked: _Ranked, kp: np.ndarray, spec: PairingSpec) -> PairingSummary:
    has_partner = ranked.partner_reward is not None
    chosen_row = rows.starts[kp] + ranked.chosen[kp]
    margins = ranked.margins(rows, kp)
    return PairingSummary(
        prompts=len(rows.starts),
        pairs=len(kp),
        skipped={r.value: int(np.count_nonzero(ranked.reason == r.code)) for r in spec.skip_reasons},
        responses_dropped={SkipReason.NONFINITE_REWARD.value: int(ranked.drop_nonfinite[kp].sum()),
                           SkipReason.MISSING_PARTNER.value: int(ranked.drop_missing[kp].sum())},
        ties=int(ranked.tied.sum()),
        consistency_method=spec.consistency if has_partner else "none",
        scope=spec.scope,
        pair_policy=spec.pair_policy,
        consistency_between=list(spec.between) if has_partner else None,
        **_stats("c", ranked.c[kp]),
        tau_mean=finite_or_none(ranked.tau[kp].mean()) if has_partner and len(kp) else None,
        **_stats("margin", margins),
        margin_min=finite_or_none(margins.min()) if len(kp) else None,
        top_agreement=(finite_or_none((ranked.partner_rank[chosen_row] == 1).mean()) if has_partner and len(kp)
                       else None),
    )


def _assistant_turns(texts: pa.Array) -> pa.Array:
    """One-turn conversations ``[{"role": "assistant", "content": text}]`` (TRL's conversational format)."""
    turns = pa.StructArray.from_arrays(
        [pa.array(["assistant"] * len(texts), pa.string()), texts.cast(pa.string())], names=["role", "content"]
    )
    return pa.ListArray.from_arrays(pa.array(np.arange(len(texts) + 1), pa.int32()), turns)


def _require(table: pa.Table, name: str, columns: list[str]) -> None:
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise CreamError(f"{name} table is missing column(s) {', '.join(missing)} "
                         f"(has {', '.join(table.column_names)})")


def _equal_among(r: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row of ``r`` ``[P, N]``, over the entries where ``mask`` holds: (at least 2 and all equal, some two
    equal)."""
    s = np.sort(np.where(mask, r, np.nan), axis=1)  # the masked-out entries (NaN) sort last
    n = mask.sum(axis=1)
    top = s[np.arange(len(s)), np.maximum(n - 1, 0)]
    return (n >= 2) & (s[:, 0] == top), (np.diff(s, axis=1) == 0).any(axis=1)


def _stats(prefix: str, x: np.ndarray) -> dict:
    if not len(x):
        return {f"{prefix}_mean": None, f"{prefix}_median": None, f"{prefix}_std": None}
    return {f"{prefix}_mean": finite_or_none(x.mean()), f"{prefix}_median": finite_or_none(np.median(x)),
            f"{prefix}_std": finite_or_none(x.std())}

