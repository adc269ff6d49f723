"""The label stage's scorers: every scorer role's rows of the scores table for a responses table.

    current / previous   log-probs of each distinct model (cached by content, ``label_cache``), turned into the DPO
                         implicit reward (or the length-normalised likelihood without a reference)
    judge                M_t's SRLM 5-point judge score      oracle   correctness against the reference answer
    rm                   a reward model's single logit (cached like log-probs)

Also the human-written answers of ``--human-answers`` (``label_prompts``), scored as pseudo-responses by the same
scorers. A response some model cannot read whole (beyond its max_position_embeddings) is scored by none
(``--long-responses``). The scorers take the stage's context (:class:`Scoring`) and return their rows with a report of
what they did (:class:`ScoringReport`); the stage folds that into its summary.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cream_data.errors import CreamError
from cream_data.progress import Progress, counting
from cream_data.rewards.dpo import dpo_or_likelihood
from cream_data.rewards.judge import JUDGE_PROMPT, load_judge_template
from cream_data.stages.label_cache import LOGPS, RM_REWARDS, cached_scores, slug
from cream_data.stages.label_config import LabelConfig
from cream_data.tables.shard import Shard


def logprob_roles(cfg: LabelConfig) -> list[tuple[str, str, str | None]]:
    """(scorer, model, ref_model) of the roles rewarded from log-probs (current, and previous with M_{t-1}): the DPO
    implicit reward, or the length-normalised likelihood without a reference."""
    out = [("current", cfg.model, cfg.ref)]  # with --reward judge/oracle these are informative scores
    if cfg.prev_model:
        out.append(("previous", cfg.prev_model, cfg.prev_ref))
    return out


@dataclass(frozen=True)
class Scoring:
    """What scoring a responses table needs: the settings, the resolved models (name -> ref) and their tokenizer,
    the shared template hash, the reward model (ref, tokenizer, template hash) or None, where the caches go and this
    process's shard; where to say what happens."""

    cfg: LabelConfig
    refs: dict
    tok: object
    th: str
    rm: tuple | None
    out: Path
    shard: Shard | None
    log: object = None
    progress: Progress | None = None  # cream_data.progress: the command line draws it


@dataclass
class ScoringReport:
    """What scoring did: the models that scored now and those whose cached values were reused (reward model
    first), the judge's outputs without a parseable score (parse mode) and without a cue (expected mode)."""

    models_scored: list[str] = field(default_factory=list)
    models_reused: list[str] = field(default_factory=list)
    judge_unparsed: int = 0
    judge_appended: int = 0

    def model(self, name: str, scored_now: bool) -> None:
        (self.models_scored if scored_now else self.models_reused).append(name)


class Scored(NamedTuple):
    """Every scorer role's rows for a responses table, and the report of how they were made."""

    scores: pa.Table
    report: ScoringReport


def score_roles(ctx: Scoring, responses: pa.Table, answers: dict | None, cache_tag: str = "") -> Scored:
    """The scores rows of every scorer role of this run for ``responses``: log-probs of every distinct model (cached
    in ``OUT/logps/<model><cache_tag>/``), their DPO (or likelihood) rewards per role, and the oracle, judge and
    reward-model rows where those roles are in use. ``cache_tag`` keeps the human answers' caches apart. Rows some
    model cannot read whole (:func:`too_long`, before any model runs) are scored by none: null log-probs and rewards."""
    from cream_data.engines import rm_score
    from cream_data.engines.hf_score import tokenize

    prompts, texts = responses["prompt"].to_pylist(), responses["response"].to_pylist()
    names = [f"prompt_id {p!r} response_idx {i}" for p, i in zip(responses["prompt_id"].to_pylist(),
                                                                   responses["response_idx"].to_pylist())]
    tokenized = tokenize(ctx.tok, prompts, texts, names=names)
    rm_tokenized = rm_score.tokenize(ctx.rm[1], prompts, texts) if ctx.rm is not None else None
    long = too_long(ctx, responses, tokenized, rm_tokenized, human=bool(cache_tag))
    if not long.any():
        parts, report = _scored(ctx, responses, answers, cache_tag, tokenized, rm_tokenized)
        return Scored(pa.concat_tables(parts), report)
    fit = np.flatnonzero(~long)
    parts, report = (_scored(ctx, responses.take(pa.array(fit)), answers, cache_tag, tokenized.take(fit),
                             rm_tokenized.take(fit) if rm_tokenized is not None else None)
                     if len(fit) else ([], ScoringReport()))
    unscored = _unscored(ctx, responses.filter(pa.array(long)), tokenized.n_tokens[tokenized.inverse][long])
    return Scored(pa.concat_tables(parts + unscored), report)


def _scored(ctx: Scoring, responses: pa.Table, answers: dict | None, cache_tag: str, tokenized,
            rm_tokenized) -> tuple[list[pa.Table], ScoringReport]:
    """The rows of every scorer role for ``responses`` (all of which every model can read), scored, and the report
    of what was scored now and what was reused."""
    cfg, say = ctx.cfg, ctx.log or (lambda *_: None)
    report = ScoringReport()
    rm_part = None
    if ctx.rm is not None:  # first: a checkpoint refused only once loaded (no head weights) is refused before scoring
        rm_part, rm_scored = _rm_scores(ctx, responses, rm_tokenized, tokenized, cache_tag)
        report.model(ctx.rm[0].name, rm_scored)
    logp: dict[str, np.ndarray] = {}
    ntok = None
    for name, ref in ctx.refs.items():
        folder = ctx.out / "logps" / (slug(ref.name) + cache_tag)
        tick = counting(ctx.progress, f"scoring with {ref.name}", len(tokenized.ids))
        logp[name], ntok, scored = _score_model(ctx, ref, responses, tokenized, folder, tick)
        report.model(ref.name, scored)
        say(f"{'scored' if scored else 'reused cached log-probs of'} {ref.name}")
    parts = []
    for scorer, m, r in logprob_roles(cfg):
        lp, rlp = logp[m], (logp[r] if r else None)
        reward, kind = dpo_or_likelihood(lp, rlp, ntok)
        parts.append(scores_rows(responses, scorer, ctx.refs[m].name, ctx.refs[r].name if r else None, lp, rlp, ntok,
                                 reward, kind))
    if "oracle" in cfg.scorer_roles():
        parts.append(_oracle_scores(responses, answers, ntok))
    if "judge" in cfg.scorer_roles():
        judge_part, report.judge_unparsed, report.judge_appended = _judge_scores(responses, ctx.refs[cfg.model], cfg,
                                                                                ntok, ctx.log)
        parts.append(judge_part)
    if rm_part is not None:
        parts.append(rm_part)
    return parts, report


def _score_model(ctx: Scoring, ref, responses: pa.Table, tokenized, folder: Path,
                 progress=None) -> tuple[np.ndarray, np.ndarray, bool]:
    """Log-probs of every row under one model: from the cache where present, scoring only the rest.

    Returns (logp per row, n_tokens per row, scored_now)."""
    cfg = ctx.cfg

    def load_scorer():
        if cfg.engine == "vllm":
            from cream_data.engines.vllm_engine import VllmScorer

            return VllmScorer.load(ref, dtype=cfg.dtype)
        from cream_data.engines import models
        from cream_data.engines.hf_score import HFScorer

        # bf16/fp16: a mixed-precision trainer's numerics (fp32 embeddings and norms, autocast matmuls), so the stored
        # log-probs are the reference `cream train` would compute (models.mixed_weights)
        # every scoring model was checked with its own tokenizer (label._models) and they are one tokenizer (the
        # template hash): M_t's is not read again for each
        model, _, _ = models.load(ref, dtype=cfg.dtype, mixed=True, tokenizer=ctx.tok)
        return HFScorer(model, ctx.tok.pad_token_id, batch_size=cfg.batch_size, max_tokens=cfg.max_batch_tokens,
                        compute=label_dtype(cfg))

    return cached_scores(LOGPS, ref, responses, tokenized, folder=folder, shard=ctx.shard, template_hash=ctx.th,
                         load_scorer=load_scorer, flush_rows=cfg.flush_rows, dtype=label_dtype(cfg),
                         progress=progress, log=ctx.log)


def label_dtype(cfg: LabelConfig) -> str:
    """The dtype this label stage's models run in (its ``dtype`` setting on this machine's device)."""
    from cream_data.engines import models

    return models.resolve_dtype(cfg.dtype, models.default_device())


# ---------------------------------------------------------------------------- scores table
def scores_rows(responses: pa.Table, scorer: str, model: str, ref_model: str | None, logp: np.ndarray | None,
                ref_logp: np.ndarray | None, n_tokens: np.ndarray, reward: np.ndarray, kind: str,
                judge_text: list | None = None, confidence: list | None = None) -> pa.Table:
    n = responses.num_rows
    f64 = lambda a: pa.array(a, pa.float64()) if a is not None else pa.nulls(n, pa.float64())  # noqa: E731
    return pa.table({
        "prompt_id": responses["prompt_id"], "response_idx": responses["response_idx"],
        "scorer": pa.array([scorer] * n, pa.string()), "model": pa.array([model] * n, pa.string()),
        "ref_model": pa.array([ref_model] * n, pa.string()), "logp": f64(logp), "ref_logp": f64(ref_logp),
        "n_tokens": pa.array(np.asarray(n_tokens, dtype=np.int32)),
        "reward": pa.array(np.asarray(reward, dtype=np.float64), pa.float64(), from_pandas=True),
        "reward_kind": pa.array([kind] * n, pa.string()),
        "judge_text": pa.array(judge_text if judge_text is not None else [None] * n, pa.string()),
        "confidence": pa.array(confidence if confidence is not None else [None] * n, pa.float64()),
    })


# ---------------------------------------------------------------------------- judge and oracle
def _oracle_scores(responses: pa.Table, ref: dict, ntok: np.ndarray) -> pa.Table:
    from cream_data.rewards.answers import oracle_reward

    rewards = [oracle_reward(r, ref[p]) for p, r in zip(responses["prompt_id"].to_pylist(), responses["response"].to_pylist())]
    reward = np.array([np.nan if v is None else v for v in rewards], dtype=np.float64)
    return scores_rows(responses, "oracle", "oracle:reference_answer", None, None, None, ntok, reward, "oracle")


def judge_template_text(cfg: LabelConfig) -> str:
    """The judge prompt template: ``--judge-template``'s file, or the built-in SRLM prompt."""
    return load_judge_template(cfg.judge_template) if cfg.judge_template else JUDGE_PROMPT


def _judge_scores(responses: pa.Table, ref, cfg: LabelConfig, ntok: np.ndarray, log) -> tuple[pa.Table, int, int]:
    """The judge's scores part, the number of unparsed outputs (parse mode) and of appended cues (expected)."""
    from cream_data.engines.judge_engine import run_judge

    out = run_judge(ref, responses["prompt"].to_pylist(), responses["response"].to_pylist(),
                    batch_size=cfg.batch_size, max_new_tokens=cfg.judge_max_new_tokens, mode=cfg.judge_mode,
                    template=judge_template_text(cfg), log=log, dtype=cfg.dtype)
    reward = np.array([np.nan if s is None else s for s in out.scores], dtype=np.float64)
    unparsed = int(np.isnan(reward).sum())
    part = scores_rows(responses, "judge", ref.name, None, None, None, ntok, reward, "judge", out.texts,
                       out.confidence)
    part = part.set_column(part.column_names.index("reward"), "reward",
                           pa.array([None if s is None else float(s) for s in out.scores], pa.float64()))
    return part, unparsed, out.appended


# ---------------------------------------------------------------------------- reward model
def reward_model(cfg: LabelConfig):
    """(ref, tokenizer, template hash) of ``--reward-model``, checked before any model runs; None without one."""
    if not cfg.reward_model:
        return None
    from cream_data.engines import models, rm_score

    try:
        ref = models.resolve(cfg.reward_model)
    except CreamError as e:
        raise CreamError(f"--reward-model: {e}") from None
    tok = rm_score.check(ref, trust_remote_code=cfg.trust_remote_code)
    return ref, tok, models.chat_template_hash(tok)


def _rm_scores(ctx: Scoring, responses: pa.Table, tokenized, policy_tokenized,
               cache_tag: str) -> tuple[pa.Table, bool]:
    """The reward model's rows (scorer ``rm``), its rewards cached in ``OUT/rm/<model>/`` like log-probs, and
    whether it scored now (not all cached); ``tokenized``: the rows under its own tokenizer. ``n_tokens`` is the
    policy's response length (``policy_tokenized``), as in every other row."""
    from cream_data.engines import rm_score

    cfg, log = ctx.cfg, ctx.log
    ref, tok, th = ctx.rm

    def load_scorer():
        model = rm_score.load(ref, dtype=cfg.dtype, trust_remote_code=cfg.trust_remote_code)
        return rm_score.RMScorer(model, tok.pad_token_id, batch_size=cfg.batch_size, max_tokens=cfg.max_batch_tokens)

    tick = counting(ctx.progress, f"scoring with reward model {ref.name}", len(tokenized.ids))
    reward, _, scored = cached_scores(RM_REWARDS, ref, responses, tokenized,
                                      folder=ctx.out / "rm" / (slug(ref.name) + cache_tag), shard=ctx.shard,
                                      template_hash=th, load_scorer=load_scorer, flush_rows=cfg.flush_rows,
                                      dtype=label_dtype(cfg), progress=tick, log=log)
    if log:
        log(f"{'scored' if scored else 'reused cached rewards of'} reward model {ref.name}")
    ntok = policy_tokenized.n_tokens[policy_tokenized.inverse]
    return scores_rows(responses, "rm", ref.name, None, None, None, ntok, reward, "rm"), scored


# ---------------------------------------------------------------------------- responses beyond a model's context
@dataclass(frozen=True)
class _Reader:
    """A model that reads every row: its name in a message, what it reads, its context and each row's tokens."""

    name: str
    reads: str
    context: int
    tokens: np.ndarray


def _readers(ctx: Scoring, responses: pa.Table, tokenized, rm_tokenized) -> list[_Reader]:
    """Every model of this run that reads the rows and states its context: each distinct policy (the conversation),
    the judge (M_t: its prompt and generation) and the reward model (the conversation under its own template)."""
    from cream_data.engines.judge_engine import judge_lengths
    from cream_data.engines.model_roles import context_length

    cfg = ctx.cfg
    out = [_Reader(f"model {ref.name}", "templated prompt + response", context_length(ref, what=f"model {ref.name}"),
                   tokenized.lengths) for ref in ctx.refs.values()]
    if "judge" in cfg.scorer_roles():
        ref = ctx.refs[cfg.model]
        tokens = judge_lengths(ctx.tok, responses["prompt"].to_pylist(), responses["response"].to_pylist(),
                               max_new_tokens=cfg.judge_max_new_tokens, mode=cfg.judge_mode,
                               template=judge_template_text(cfg))
        reads = f"judge prompt + judge_max_new_tokens {cfg.judge_max_new_tokens}" + \
            (" + score cue" if cfg.judge_mode == "expected" else "")
        out.append(_Reader(f"the judge {ref.name}", reads, context_length(ref, what=f"model {ref.name}"), tokens))
    if ctx.rm is not None:
        ref = ctx.rm[0]
        out.append(_Reader(f"reward model {ref.name}", "prompt + response under its chat template",
                           context_length(ref, trust_remote_code=cfg.trust_remote_code, what="--reward-model"),
                           rm_tokenized.lengths))
    return [r for r in out if r.context]


def too_long(ctx: Scoring, responses: pa.Table, tokenized, rm_tokenized, *, human: bool = False) -> np.ndarray:
    """Which rows some model of this run cannot read whole (:func:`_readers`: more tokens than its
    max_position_embeddings), by the ``long_responses`` rule: ``skip`` leaves them unscored (one warning line; the
    preferences manifest counts them), ``error`` refuses the table in one line naming the row furthest beyond a
    context; a table with no row left is refused either way. ``human``: the ``--human-answers`` pseudo-responses,
    a diagnostic never paired, whose long rows are left unscored under either rule."""
    readers = _readers(ctx, responses, tokenized, rm_tokenized)
    if not readers:
        return np.zeros(responses.num_rows, dtype=bool)
    over = np.stack([r.tokens - r.context for r in readers])  # [readers, rows]: tokens beyond each context
    long = (over > 0).any(axis=0)
    if not long.any():
        return long
    k, row = np.unravel_index(np.argmax(over), over.shape)
    reader, n, total = readers[k], int(long.sum()), len(long)
    pid, idx = responses["prompt_id"][int(row)].as_py(), responses["response_idx"][int(row)].as_py()
    name = f"the human answer of prompt_id {pid!r}" if human else f"row (prompt_id {pid!r}, response_idx {idx})"
    fact = (f"{name} is {reader.tokens[row]} tokens ({reader.reads}) for {reader.name}, beyond its context of "
            f"{reader.context} tokens (max_position_embeddings)")
    if human:
        _warn(ctx, f"--human-answers: left {n} of {total} human answers unscored, too long for a scoring model: {fact}")
        return long
    if ctx.cfg.long_responses == "error":
        raise CreamError(f"{fact}; {n} of {total} responses do not fit: shorten them, score with longer-context "
                         "models, or --long-responses skip")
    if n == total and not (ctx.shard and ctx.shard.is_split):
        raise CreamError(f"none of the {total} responses fits every scoring model's context ({fact}); nothing left "
                         "to label: shorten them or score with longer-context models")
    _warn(ctx, f"skipped {n} of {total} responses too long for a scoring model ({fact}): not scored, each prompt "
          "ranked without them (--long-responses skip)")
    return long


_TAG = re.compile(r"(\\*)(\[[a-z#/@][^[]*?])")  # what a console's markup would read as a style tag


def _warn(ctx: Scoring, note: str) -> None:
    """One warning line: through the stage's log (a console that reads markup: the note's own tags are escaped,
    as rich's ``escape`` does), else Python's logging."""
    if ctx.log is None:
        logging.getLogger("cream.label").warning(note)
        return
    ctx.log("[yellow]warning:[/] " + _TAG.sub(r"\1\1\\\2", note))


def _unscored(ctx: Scoring, long: pa.Table, ntok: np.ndarray) -> list[pa.Table]:
    """Every scorer role's rows for responses no model read (:func:`too_long`): null log-probs and rewards, the
    policy's response length in ``n_tokens``. The same roles, models and reward kinds as :func:`_scored`'s rows."""
    cfg, refs = ctx.cfg, ctx.refs
    specs = [(scorer, refs[m].name, refs[r].name if r else None, "dpo" if r else "likelihood_norm")
             for scorer, m, r in logprob_roles(cfg)]
    if "oracle" in cfg.scorer_roles():
        specs.append(("oracle", "oracle:reference_answer", None, "oracle"))
    if "judge" in cfg.scorer_roles():
        specs.append(("judge", refs[cfg.model].name, None, "judge"))
    if ctx.rm is not None:
        specs.append(("rm", ctx.rm[0].name, None, "rm"))
    nan = np.full(long.num_rows, np.nan)
    return [scores_rows(long, scorer, model, ref, None, None, ntok, nan, kind) for scorer, model, ref, kind in specs]


def unscored_rows(scores: pa.Table) -> int:
    """How many responses of a scores table no model scored (too long, :func:`too_long`): the current scorer's
    rows with a null log-prob. Only those have one: every other current row holds a log-prob, and a table holds
    no NaN (its writer refuses them)."""
    unscored = pc.and_(pc.equal(scores["scorer"], "current"), pc.is_null(scores["logp"]))
    return int(pc.sum(unscored.cast(pa.int64())).as_py() or 0)
