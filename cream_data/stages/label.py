"""`cream label`: score sampled responses, turn scores into rewards, rankings, consistency and preference pairs.

Roles (CREAM.md steps 2–6):

    scorer     model        ref_model     reward
    current    M_t          M_{t-1}       dpo: log pi_t(y|x) - log pi_{t-1}(y|x)   (likelihood_norm without a ref)
    previous   M_{t-1}      M_{t-2}       dpo, or likelihood_norm = log pi(y|x) / |y| when M_{t-1} = M0 has no ref
    judge      M_t          —             the SRLM 5-point judge score (``--reward judge``)
    oracle     answer check —             1 correct / 0 wrong against the prompt's reference (``--reward oracle``)
    rm         reward model —             its single logit on the conversation (``--reward-model``; picks the pairs
                                          with ``--reward rm``, a diagnostic column otherwise)

Each *distinct* model is loaded once and scores every response once; its log-probs are kept in
``OUT/logps/<model>/`` by model identity, so M_{t-1} in two roles costs one pass and a rerun (after a crash, or to
re-pair) reuses what is stored; a reward model's rewards are kept the same way in ``OUT/rm/<model>/``. The scores
and preferences tables are written last.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cream_data.tables import io
from cream_data.errors import CreamError
from cream_data.tables.fingerprint import responses_fingerprint, shard_mask
from cream_data.rewards.judge import JUDGE_MODES, JUDGE_PROMPT, load_judge_template, template_hash
from cream_data.tables.outputs import guard, locked, only_entries

REWARDS = ("dpo", "judge", "oracle", "rm")
CONSISTENCY = ("kendall", "spearman", "toporder")
SCOPES = ("sample", "dataset")
ENGINES = ("hf", "vllm")
ROLES = ("current", "previous", "judge", "rm", "oracle")  # the scorer roles of the scores table
REWARD_ROLE = {"dpo": "current", "judge": "judge", "oracle": "oracle", "rm": "rm"}  # --reward -> the role picking pairs
PAIR_POLICIES = ("weight", "agree", "both")


@dataclass(frozen=True)
class LabelConfig:
    """Settings of one labeling run (the CLI flags; saved resolved in the output manifests)."""

    model: str                        # M_t: the policy whose responses are labeled and the current reward model
    ref: str | None = None            # M_{t-1}: reference of the current DPO reward
    prev_model: str | None = None     # M_{t-1} as the previous reward model (consistency)
    prev_ref: str | None = None       # M_{t-2}: its reference; None → length-normalised likelihood (M0)
    reward: str = "dpo"
    consistency: str = "kendall"
    scope: str = "sample"
    batch_size: int = 8
    max_batch_tokens: int = 8192
    engine: str = "hf"
    iteration: int | None = None
    prompts: str | None = None        # prompts table with reference answers (oracle reward)
    judge_max_new_tokens: int = 256
    judge_mode: str = "expected"      # expected: E[score] under the judge's own distribution; parse: "Score: k"
    judge_template: str | None = None  # a judge prompt file with {request} and {response}; None: the built-in
    reward_model: str | None = None   # a sequence-classification reward model (its own tokenizer): scorer "rm"
    trust_remote_code: bool = False   # run the reward model's custom code
    consistency_between: str | None = None  # "A,B" scorer roles of C; None: current,previous for dpo, else no C
    pair_policy: str = "weight"       # weight: C weighs each pair | agree: keep where both agree | both
    human_answers: bool = False       # score the prompts table's human_answer alongside (never paired)
    flush_rows: int = int(os.environ.get("CREAM_LABEL_FLUSH_ROWS", "256"))  # persist scored rows this often (resume)

    def __post_init__(self):
        problems = []
        if self.reward not in REWARDS:
            problems.append(f"--reward: got {self.reward!r}, expected one of {', '.join(REWARDS)}")
        if self.consistency not in CONSISTENCY:
            problems.append(f"--consistency: got {self.consistency!r}, expected one of {', '.join(CONSISTENCY)}")
        if self.scope not in SCOPES:
            problems.append(f"--scope: got {self.scope!r}, expected one of {', '.join(SCOPES)}")
        if self.engine not in ENGINES:
            problems.append(f"--engine: got {self.engine!r}, expected one of {', '.join(ENGINES)}")
        if self.batch_size < 1:
            problems.append(f"--batch-size: got {self.batch_size}, expected >= 1")
        if self.max_batch_tokens < 1:
            problems.append(f"--max-batch-tokens: got {self.max_batch_tokens}, expected >= 1")
        if self.judge_max_new_tokens < 1:
            problems.append(f"judge_max_new_tokens: got {self.judge_max_new_tokens}, expected >= 1")
        if self.judge_mode not in JUDGE_MODES:
            problems.append(f"--judge-mode: got {self.judge_mode!r}, expected one of {', '.join(JUDGE_MODES)}")
        if self.judge_template is not None:
            try:
                load_judge_template(self.judge_template)
            except CreamError as e:
                problems.append(f"--judge-template: {e}")
        if self.iteration is not None and self.iteration < 0:
            problems.append(f"--iteration: got {self.iteration}, expected >= 0")
        if self.flush_rows < 1:
            problems.append(f"flush_rows (CREAM_LABEL_FLUSH_ROWS): got {self.flush_rows}, expected >= 1")
        if self.prev_ref and not self.prev_model:
            problems.append("--prev-ref given without --prev-model")
        if self.reward == "oracle" and not self.prompts:
            problems.append("--reward oracle needs --prompts (a prompts table with reference_answer)")
        if self.reward == "rm" and self.model and not self.reward_model:  # re-pairing (no model) reads stored rows
            problems.append("--reward-model: missing; --reward rm needs a sequence-classification reward model "
                            "(Hub id or folder)")
        problems.extend(self._pairing_problems())
        if self.human_answers and not self.prompts:
            problems.append("--human-answers needs --prompts (a prompts table with a human_answer column)")
        if self.reward_model and self.engine == "vllm":
            from cream_data.engines.rm_score import VLLM_UNSUPPORTED

            problems.append(VLLM_UNSUPPORTED)
        if problems:
            err = CreamError("; ".join(problems))
            err.problems = problems  # each "field: got X, expected Y": `cream run --check` names the section
            raise err


    def between(self) -> tuple[str, str] | None:
        """The two scorer roles of the consistency C (the pair-picking role first), or None for no C.

        Default (``consistency_between`` unset): CREAM's ``current,previous`` when the DPO reward picks the pairs
        and M_{t-1} scores (``prev_model``); no C for the judge, oracle and reward-model rewards (the paper's
        SRLM and Oracle rows). ``none`` turns C off."""
        pick = REWARD_ROLE.get(self.reward, "current")
        cb = self.consistency_between
        if cb is None:
            return (pick, "previous") if self.reward == "dpo" and self.prev_model else None
        if cb.strip().lower() == "none":
            return None
        a, b = (x.strip() for x in cb.split(",", 1))
        return (a, b) if a == pick else (b, a)

    def roles(self) -> set[str]:
        """Every scorer role this run produces: the pair-picking one, the consistency partner, and the extras."""
        out = {"current", REWARD_ROLE.get(self.reward, "current")}
        if self.prev_model:
            out.add("previous")
        if self.reward_model:
            out.add("rm")
        if self.between():
            out.update(self.between())
        return out

    def _pairing_problems(self) -> list[str]:
        problems = []
        if self.pair_policy not in PAIR_POLICIES:
            problems.append(f"--pair-policy: got {self.pair_policy!r}, expected one of {', '.join(PAIR_POLICIES)}")
        cb = self.consistency_between
        if cb is not None and cb.strip().lower() != "none":
            parts = [x.strip() for x in cb.split(",")]
            pick = REWARD_ROLE.get(self.reward, "current")
            if len(parts) != 2 or not all(parts) or parts[0] == parts[1]:
                return problems + [f"--consistency-between: got {cb!r}, expected two different scorer roles A,B "
                                   f"from {', '.join(ROLES)} (or none)"]
            unknown = [x for x in parts if x not in ROLES]
            if unknown:
                return problems + [f"--consistency-between: got {unknown[0]!r}, expected a scorer role: "
                                   f"{', '.join(ROLES)}"]
            if pick not in parts:
                return problems + [f"--consistency-between: got {cb!r}, expected one of the two to be {pick!r} "
                                   f"(the scorer that picks the pairs under --reward {self.reward})"]
            other = parts[1] if parts[0] == pick else parts[0]
            if self.model:  # labeling (not re-pairing stored scores): the partner must be produced here
                need = {"previous": (self.prev_model, "--prev-model"), "rm": (self.reward_model, "--reward-model"),
                        "oracle": (self.prompts, "--prompts")}
                if other in need and not need[other][0]:
                    problems.append(f"--consistency-between {cb}: scorer {other!r} needs {need[other][1]}")
        if self.pair_policy != "weight" and self.model and self.between() is None and not problems:
            problems.append(f"--pair-policy {self.pair_policy}: needs two scorers to agree; give "
                            "--consistency-between A,B (or --prev-model for current,previous)")
        return problems


@dataclass
class LabelSummary:
    out: str
    responses: int
    prompts: int
    models_scored: list[str] = field(default_factory=list)
    models_reused: list[str] = field(default_factory=list)
    judge_unparsed: int = 0           # parse mode: outputs with no parseable score (null reward)
    judge_appended: int = 0           # expected mode: distinct outputs without a cue (the cue was appended)
    pairing: dict | None = None
    seconds: float = 0.0


# ---------------------------------------------------------------------------- helpers
def _slug(name: str) -> str:
    tail = re.sub(r"[^A-Za-z0-9._-]+", "_", name.rstrip("/").split("/")[-1])[-40:]
    return f"{tail}-{hashlib.sha1(name.encode()).hexdigest()[:8]}"


def _engine_check(engine: str) -> None:
    if engine == "vllm":
        import importlib.util

        if importlib.util.find_spec("vllm") is None:
            raise CreamError("--engine vllm needs the 'vllm' package, which is not installed: run `pip install 'cream[vllm]'`")


def _roles(cfg: LabelConfig) -> list[tuple[str, str, str | None]]:
    """(scorer, model, ref_model) rows to produce, before judge/oracle."""
    roles = [("current", cfg.model, cfg.ref)]  # with --reward judge/oracle these are informative scores
    if cfg.prev_model:
        roles.append(("previous", cfg.prev_model, cfg.prev_ref))
    return roles


# ---------------------------------------------------------------------------- log-prob and reward caches
@dataclass(frozen=True)
class _Cache:
    """What one model's cache folder holds: its table kind, the value column, what it calls the values."""

    kind: str
    column: str
    what: str


LOGPS = _Cache("logps", "logp", "log-probs")
RM_REWARDS = _Cache("rm_rewards", "reward", "rewards")


def _score_model(ref, responses: pa.Table, tok, tokenized, folder: Path, shard, cfg: LabelConfig, th: str,
                 progress=None, progress_log=None) -> tuple[np.ndarray, np.ndarray, bool]:
    """Log-probs of every row under one model: from the cache where present, scoring only the rest.

    Returns (logp per row, n_tokens per row, scored_now)."""

    def load_scorer():
        if cfg.engine == "vllm":
            from cream_data.engines.vllm_engine import VllmScorer

            return VllmScorer.load(ref)
        from cream_data.engines import models
        from cream_data.engines.hf_score import HFScorer

        model, _, _ = models.load(ref)
        return HFScorer(model, tok.pad_token_id, batch_size=cfg.batch_size, max_tokens=cfg.max_batch_tokens)

    return _cached_scores(LOGPS, ref, responses, tokenized, folder, shard, cfg, th, load_scorer, progress,
                          progress_log)


def _cached_scores(cache: _Cache, ref, responses: pa.Table, tokenized, folder: Path, shard, cfg: LabelConfig,
                   th: str, load_scorer, progress=None, progress_log=None) -> tuple[np.ndarray, np.ndarray, bool]:
    """One value per row under one model, kept in ``folder`` by the model's content identity: read from the
    stored parts where present; the rest scored by ``load_scorer()`` (called only if something is left), written
    part by part every ``cfg.flush_rows`` rows, so a killed run resumes where it stopped.

    Returns (value per row, n_tokens per row, scored_now)."""
    from cream_data.engines import models

    n_items = len(tokenized.ids)
    item_ntok = tokenized.n_tokens
    model_id = models.content_id(ref)
    _forget_if_changed(folder, ref, model_id, cache.what, progress_log)
    row_keys = [f"{p}\x00{i}" for p, i in zip(responses["prompt_id"].to_pylist(), responses["response_idx"].to_pylist())]
    values = np.full(n_items, np.nan)
    done_items = np.zeros(n_items, dtype=bool)
    prev = io.PartWriter(folder, cache.kind, shard=shard).existing() if folder.is_dir() else None
    if prev is not None:
        if set(prev["template_hash"].to_pylist()) - {th}:
            raise CreamError(f"{folder}: cached {cache.what} were computed under another tokenizer/template; remove it")
        pos = {k: j for j, k in enumerate(row_keys)}
        for p, i, v in zip(prev["prompt_id"].to_pylist(), prev["response_idx"].to_pylist(),
                           prev[cache.column].to_pylist()):
            j = pos.get(f"{p}\x00{i}")
            if j is not None:
                it = tokenized.inverse[j]
                values[it] = v
                done_items[it] = True
    rows_of = [[] for _ in range(n_items)]
    for j, it in enumerate(tokenized.inverse):
        rows_of[it].append(j)
    stored_rows = set()
    if prev is not None:
        stored_rows = {f"{p}\x00{i}" for p, i in zip(prev["prompt_id"].to_pylist(), prev["response_idx"].to_pylist())}

    def part(rows):
        return _cache_part(cache, responses, rows, ref.name, th, values[tokenized.inverse[rows]],
                           item_ntok[tokenized.inverse[rows]])

    # rows whose item is done but that were not stored (a duplicate of an already-stored item) are written at the end
    scored_now = not done_items.all()
    scorer = load_scorer() if scored_now else None
    writer = io.PartWriter(folder, cache.kind, shard=shard)  # the folder is made only once the model has loaded
    _mark(folder, ref, model_id)
    if scored_now:
        buffer: list[int] = []

        def flush():
            if not buffer:
                return
            rows = [j for it in buffer for j in rows_of[it]]
            writer.write(part(rows))
            stored_rows.update(row_keys[j] for j in rows)
            buffer.clear()

        def on_batch(items, v):
            values[items] = v
            buffer.extend(int(i) for i in items)
            if progress:
                progress(len(items), int(item_ntok[items].sum()))
            if sum(len(rows_of[i]) for i in buffer) >= cfg.flush_rows:
                flush()

        scorer.score(tokenized, todo=~done_items, on_batch=on_batch)
        flush()
        del scorer
    missing = [j for j, k in enumerate(row_keys) if k not in stored_rows]
    if missing:
        writer.write(part(missing))
    writer.finish({"model": ref.name, "template_hash": th})
    return values[tokenized.inverse], item_ntok[tokenized.inverse].astype(np.int32), scored_now


MODEL_ID_FILE = "_model_id.json"


def _forget_if_changed(folder: Path, ref, model_id: str, what: str, log=None) -> None:
    """The cache belongs to the model's content, not its path: a checkpoint retrained in place at the same path
    invalidates every stored value, so the folder is emptied and the model scored again."""
    marker = folder / MODEL_ID_FILE
    if folder.is_dir() and any(folder.iterdir()):
        stored = None
        if marker.is_file():
            try:
                stored = json.loads(marker.read_text()).get("model_id")
            except (OSError, ValueError, AttributeError):
                stored = None
        if stored == model_id:
            return
        if log:
            log(f"[yellow]{ref.name} changed since its {what} were cached in {folder} "
                f"(content id {stored} -> {model_id}): scoring it again[/]")
        shutil.rmtree(folder)


def _mark(folder: Path, ref, model_id: str) -> None:
    if not (folder / MODEL_ID_FILE).is_file():
        io.atomic_write_json(folder / MODEL_ID_FILE, {"model": ref.name, "model_id": model_id})


def _cache_part(cache: _Cache, responses, rows, model_name, th, value, ntok) -> pa.Table:
    sub = responses.take(pa.array(rows, pa.int64()))
    return pa.table({
        "prompt_id": sub["prompt_id"], "response_idx": sub["response_idx"],
        "model": pa.array([model_name] * len(rows), pa.string()),
        "template_hash": pa.array([th] * len(rows), pa.string()),
        cache.column: pa.array(np.asarray(value, dtype=np.float64)),
        "n_tokens": pa.array(np.asarray(ntok, dtype=np.int32)),
    })


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


def dpo_or_likelihood(logp: np.ndarray, ref_logp: np.ndarray | None, n_tokens: np.ndarray) -> tuple[np.ndarray, str]:
    """DPO implicit reward ``logp - ref_logp``; without a reference the length-normalised log-likelihood."""
    if ref_logp is None:
        return logp / np.maximum(n_tokens, 1), "likelihood_norm"
    return logp - ref_logp, "dpo"


# ---------------------------------------------------------------------------- the stage
def _check_tokenizers(refs: dict, tokenizers: dict) -> str:
    from cream_data.engines.models import template_hash

    hashes = {name: template_hash(tok) for name, tok in tokenizers.items()}
    first = next(iter(hashes))
    for name, h in hashes.items():
        if h != hashes[first]:
            raise CreamError(
                f"model {name} has another tokenizer/chat template than {first}: DPO rewards across tokenizers are "
                "meaningless; label with models that share one tokenizer"
            )
    return hashes[first]


def _read_responses(path) -> pa.Table:
    """The responses, sorted, and checked whole before any model runs (each prompt's response_idx is 0..N-1)."""
    from cream_data.rewards.pairing import _Rows

    responses = io.read_table(path, "responses")
    if responses.num_rows == 0:
        raise CreamError(f"{path}: responses table is empty; nothing to label")
    try:
        _Rows(responses)
    except CreamError as e:
        raise CreamError(f"{path}: {e}") from None
    return responses.sort_by([("prompt_id", "ascending"), ("response_idx", "ascending")])


LABEL_FOLDERS = ("scores", "preferences", "logps", "rm", "inspect", "responses", "human")


def is_label_output(path: Path) -> bool:
    """What `cream label` writes: a folder holding only its scores/, preferences/, logps/, rm/ and human/ (and a report,
    and the responses it labels, as in a run's ``iter-<t>/``)."""
    return only_entries(path, lambda e: e.name in LABEL_FOLDERS and e.is_dir())


def label(responses_path: str | Path, cfg: LabelConfig, out: str | Path, *, shard: tuple[int, int] | None = None,
          log=None) -> LabelSummary:
    """Score, reward, rank, pair: write ``OUT/scores`` and ``OUT/preferences`` (and the ``OUT/logps`` cache).

    Every input is read and checked before the first model runs; a failure leaves nothing new in ``OUT``."""
    t0 = time.time()
    out = Path(out)
    _engine_check(cfg.engine)
    guard(out, "label", is_label_output, what="labeled folder")
    responses = _read_responses(responses_path)
    answers = _reference_answers(cfg.prompts, responses) if "oracle" in cfg.roles() else None
    with locked(out, shard=shard if shard and shard[1] > 1 else None, log=log):
        return _label_locked(responses_path, responses, answers, cfg, out, shard, log, t0)


def _label_locked(responses_path, responses: pa.Table, answers: dict | None, cfg: LabelConfig, out: Path, shard,
                  log, t0: float) -> LabelSummary:
    """The stage body, run while this process holds the output's lock."""
    from cream_data.engines import models

    say = log or (lambda *_: None)
    fp = responses_fingerprint(responses)
    if shard and shard[1] > 1:
        responses = responses.filter(shard_mask(responses["prompt_id"], shard))
    human = _human_responses(cfg, responses) if cfg.human_answers else None
    refs = {}
    for _, m, r in _roles(cfg):
        for name in (m, r):
            if name and name not in refs:
                refs[name] = models.resolve(name)
    tokenizers = {ref.name: models.load(ref, with_model=False)[1] for ref in refs.values()}
    th = _check_tokenizers(refs, tokenizers)
    tok = tokenizers[refs[cfg.model].name]
    rm = _reward_model(cfg)
    _check_inputs_match(out, fp)

    summary = LabelSummary(out=str(out), responses=responses.num_rows,
                           prompts=len(set(responses["prompt_id"].to_pylist())))
    ctx = _Scoring(cfg, refs, tok, th, rm, out, shard, summary, log)
    parts = _score_roles(ctx, responses, answers)
    human_part = None
    if human is not None and human.num_rows:
        say(f"scoring the human-written answers of {human.num_rows} prompts (never paired)")
        human_part = _as_human_scores(pa.concat_tables(_score_roles(ctx, human, answers, cache_tag="--human")),
                                      human)
    scores = pa.concat_tables(parts)
    config = _config_dict(cfg, responses_path, shard)
    inputs = {"responses": fp, "template_hash": th,
              "model_ids": {ref.name: models.content_id(ref) for ref in refs.values()}}
    if rm is not None:
        inputs["model_ids"][rm[0].name] = models.content_id(rm[0])
    if human_part is None and (out / "human").is_dir() and not (shard and shard[1] > 1):
        shutil.rmtree(out / "human")  # an earlier run's diagnostic would describe other scores
    if human_part is not None:
        _write_shard_or_table(human_part, out / "human", "human_scores", shard, {"config": config, "inputs": inputs})
    if shard and shard[1] > 1:
        _write_shard_or_table(scores, out / "scores", "scores", shard, {"config": config, "inputs": inputs})
        try:
            scores = io.read_table(out / "scores", "scores")
        except CreamError:
            say(f"shard {shard[0]}/{shard[1]} done; preferences are built when every shard has finished "
                f"(or run `cream label {responses_path} --scores {out} --out {out}`)")
            summary.seconds = time.time() - t0
            return summary
        responses = _read_responses(responses_path)
    else:
        io.write_table(scores, out / "scores", "scores", manifest_extra={"config": config, "inputs": inputs})
    summary.pairing = write_preferences(responses, scores, cfg, out, th, config, inputs)
    summary.seconds = time.time() - t0
    return summary


def _write_shard_or_table(table: pa.Table, folder: Path, kind: str, shard, manifest: dict) -> None:
    """This shard's part of a table (replacing an earlier one of the same shard), or the whole table."""
    if shard and shard[1] > 1:
        w = io.PartWriter(folder, kind, shard=shard)
        for old in w.parts():
            old.unlink()
        w.write(table)
        w.finish(manifest)
    else:
        io.write_table(table, folder, kind, manifest_extra=manifest)


@dataclass
class _Scoring:
    """What scoring a responses table needs: the settings, the resolved models and their tokenizer, where the
    caches go, and the summary to report into."""

    cfg: LabelConfig
    refs: dict
    tok: object
    th: str
    rm: tuple | None
    out: Path
    shard: tuple | None
    summary: LabelSummary
    log: object = None


def _score_roles(ctx: _Scoring, responses: pa.Table, answers: dict | None, cache_tag: str = "") -> list[pa.Table]:
    """The scores rows of every scorer role of this run for ``responses``: log-probs of every distinct model (cached
    in ``OUT/logps/<model><cache_tag>/``), their DPO (or likelihood) rewards per role, and the oracle, judge and
    reward-model rows where those roles are in use. ``cache_tag`` keeps the human answers' caches apart."""
    from cream_data.engines.hf_score import tokenize

    cfg, out, say = ctx.cfg, ctx.out, ctx.log or (lambda *_: None)
    tokenized = tokenize(ctx.tok, responses["prompt"].to_pylist(), responses["response"].to_pylist())
    # the reward model first: a checkpoint refused only once loaded (no head weights) is refused before any scoring
    rm_part = (_rm_scores(ctx.rm, responses, tokenized, out, ctx.shard, cfg, ctx.summary, ctx.log, cache_tag)
               if ctx.rm is not None else None)
    logp: dict[str, np.ndarray] = {}
    ntok = None
    for name, ref in ctx.refs.items():
        folder = out / "logps" / (_slug(ref.name) + cache_tag)
        with _progress(f"scoring with {ref.name}", len(tokenized.ids), ctx.log) as tick:
            logp[name], ntok, scored = _score_model(ref, responses, ctx.tok, tokenized, folder, ctx.shard, cfg, ctx.th,
                                                    tick, progress_log=ctx.log)
        if not cache_tag:
            (ctx.summary.models_scored if scored else ctx.summary.models_reused).append(ref.name)
        say(f"{'scored' if scored else 'reused cached log-probs of'} {ref.name}")
    parts = []
    for scorer, m, r in _roles(cfg):
        lp, rlp = logp[m], (logp[r] if r else None)
        reward, kind = dpo_or_likelihood(lp, rlp, ntok)
        parts.append(scores_rows(responses, scorer, ctx.refs[m].name, ctx.refs[r].name if r else None, lp, rlp, ntok,
                                 reward, kind))
    if "oracle" in cfg.roles():
        parts.append(_oracle_scores(responses, answers, ntok))
    if "judge" in cfg.roles():
        judge_part, unparsed, appended = _judge_scores(responses, ctx.refs[cfg.model], cfg, ntok, ctx.log)
        parts.append(judge_part)
        if not cache_tag:
            ctx.summary.judge_unparsed, ctx.summary.judge_appended = unparsed, appended
    if rm_part is not None:
        parts.append(rm_part)
    return parts


def _human_responses(cfg: LabelConfig, responses: pa.Table) -> pa.Table:
    """One pseudo-response per labeled prompt that has a human-written answer in the ``--prompts`` table:
    (prompt_id, prompt, response_idx 0, response = the human answer), scored like a sample but never paired."""
    prompts = io.read_table(cfg.prompts, "prompts", columns=["prompt_id", "human_answer"])
    answer = {p: a for p, a in zip(prompts["prompt_id"].to_pylist(), prompts["human_answer"].to_pylist())
              if a is not None and a.strip()}
    if not answer:
        raise CreamError(f"--human-answers: {cfg.prompts} has no human_answer in any row (a prompts table written "
                         "by `cream prompts` from a source with human answers: GSM8K solutions, oasst rank-0 "
                         "replies, a response/completion field)")
    first = pc.index_in(pa.array(sorted(answer)), value_set=responses["prompt_id"].cast(pa.string()))
    rows = [i for i in first.to_pylist() if i is not None]
    sub = responses.take(pa.array(rows, pa.int64())) if rows else responses.slice(0, 0)
    pids = sub["prompt_id"].to_pylist()
    return pa.table({"prompt_id": sub["prompt_id"], "prompt": sub["prompt"],
                     "response_idx": pa.array([0] * len(pids), pa.int16()),
                     "response": pa.array([answer[p] for p in pids], pa.string())})


def _as_human_scores(scores: pa.Table, human: pa.Table) -> pa.Table:
    """Scores rows of the pseudo-responses as a ``human_scores`` table (no response_idx, the answer kept)."""
    text = dict(zip(human["prompt_id"].to_pylist(), human["response"].to_pylist()))
    t = scores.drop_columns(["response_idx"])
    return t.append_column("human_answer", pa.array([text[p] for p in t["prompt_id"].to_pylist()], pa.string()))


def write_preferences(responses: pa.Table, scores: pa.Table, cfg: LabelConfig, out: Path, th: str | None,
                      config: dict, inputs: dict) -> dict:
    from cream_data.rewards.pairing import build_preferences

    reward_scorer = REWARD_ROLE[cfg.reward]
    # By default consistency regularises the DPO reward only (M_t's vs M_{t-1}'s ranking, where the previous
    # scorer's rows exist); a judge, oracle or reward-model pair keeps C = 1 (the paper's SRLM/Oracle rows), while
    # the current/previous DPO scores stay in the scores table for the consistency report.
    # --consistency-between names the two rankings explicitly.
    if cfg.consistency_between is None:
        has_prev = cfg.reward == "dpo" and bool(pc.any(pc.equal(scores["scorer"], "previous")).as_py())
        partner = "previous" if has_prev else None
    else:
        between = cfg.between()
        partner = between[1] if between else None
    prefs, pairing = build_preferences(
        responses, scores, reward_scorer=reward_scorer, prev_scorer=partner,
        consistency=cfg.consistency, scope=cfg.scope, iteration=cfg.iteration, template_hash=th,
        logp_scorer="current", pair_policy=cfg.pair_policy,
    )
    summary = pairing.to_dict()
    io.write_table(prefs, out / "preferences", "preferences",
                   manifest_extra={"config": config, "inputs": inputs, "summary": summary})
    return summary


def repair(responses_path: str | Path, scores_dir: str | Path, cfg: LabelConfig, out: str | Path) -> dict:
    """Rebuild preferences from stored scores (another consistency method or scope) without loading a model."""
    scores_dir = Path(scores_dir)
    folder = scores_dir / "scores" if (scores_dir / "scores").is_dir() else scores_dir
    scores = io.read_table(folder, "scores")
    manifest = io.read_manifest(folder)
    responses = _read_responses(responses_path)
    fp = responses_fingerprint(responses)
    stored = (manifest.get("inputs") or {}).get("responses")
    if stored and stored != fp:
        raise CreamError(
            f"{folder}: these scores were computed from another responses table (fingerprint {stored}, "
            f"{responses_path} has {fp}); label it again instead"
        )
    th = (manifest.get("inputs") or {}).get("template_hash")
    config = {**(manifest.get("config") or {}), "consistency": cfg.consistency, "scope": cfg.scope,
              "consistency_between": cfg.consistency_between, "pair_policy": cfg.pair_policy,
              "rebuilt_from_scores": str(folder)}
    return write_preferences(responses, scores, cfg, Path(out), th, config, {"responses": fp, "template_hash": th})


def _check_inputs_match(out: Path, fp: str) -> None:
    """A folder labeled from other responses must not be mixed with this run's cache."""
    for kind in ("scores", "preferences"):
        folder = out / kind
        if (folder / io.MANIFEST).exists():
            stored = (io.read_manifest(folder).get("inputs") or {}).get("responses")
            if stored and stored != fp:
                raise CreamError(f"{folder}: labeled from another responses table (fingerprint {stored} ≠ {fp}); "
                                 "use another --out")


def _config_dict(cfg: LabelConfig, responses_path, shard) -> dict:
    d = asdict(cfg)
    d["responses"] = str(responses_path)
    d["shard"] = list(shard) if shard else None
    if "judge" in cfg.roles():
        d["judge_template_hash"] = template_hash(judge_template_text(cfg))
    return d


class _progress:
    """A rich progress bar on stderr (responses/s, tokens/s); silent without a log."""

    def __init__(self, what: str, total: int, log):
        self.what, self.total, self.enabled = what, total, log is not None

    def __enter__(self):
        if not self.enabled:
            return lambda n, t: None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.tokens, self.t0 = 0, time.time()
        self.p = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                          TextColumn("{task.fields[rate]}"), TimeRemainingColumn(), transient=False,
                          console=_stderr_console())
        self.p.start()
        self.task = self.p.add_task(self.what, total=self.total, rate="")

        def tick(n, tokens):
            self.tokens += tokens
            dt = max(time.time() - self.t0, 1e-9)
            done = self.p.tasks[0].completed + n
            self.p.update(self.task, advance=n, rate=f"{done / dt:.1f} resp/s {self.tokens / dt:.0f} tok/s")

        return tick

    def __exit__(self, *exc):
        if self.enabled:
            self.p.stop()
        return False


def _stderr_console():
    from rich.console import Console

    return Console(stderr=True)


# ---------------------------------------------------------------------------- judge and oracle
def _reference_answers(prompts_path, responses: pa.Table) -> dict:
    """prompt_id → reference answer from the prompts table; every labeled prompt must have a row."""
    prompts = io.read_table(prompts_path, "prompts", columns=["prompt_id", "reference_answer"])
    ref = dict(zip(prompts["prompt_id"].to_pylist(), prompts["reference_answer"].to_pylist()))
    missing = sorted(set(responses["prompt_id"].to_pylist()) - set(ref))
    if missing:
        raise CreamError(f"{prompts_path}: has no row for prompt_id {missing[0]!r} ({len(missing)} missing); "
                         "pass the prompts table these responses were sampled from")
    return ref


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
                    template=judge_template_text(cfg), log=log)
    reward = np.array([np.nan if s is None else s for s in out.scores], dtype=np.float64)
    unparsed = int(np.isnan(reward).sum())
    part = scores_rows(responses, "judge", ref.name, None, None, None, ntok, reward, "judge", out.texts,
                       out.confidence)
    part = part.set_column(part.column_names.index("reward"), "reward",
                           pa.array([None if s is None else float(s) for s in out.scores], pa.float64()))
    return part, unparsed, out.appended


# ---------------------------------------------------------------------------- reward model
def _reward_model(cfg: LabelConfig):
    """(ref, tokenizer, template hash) of ``--reward-model``, checked before any model runs; None without one."""
    if not cfg.reward_model:
        return None
    from cream_data.engines import models, rm_score

    try:
        ref = models.resolve(cfg.reward_model)
    except CreamError as e:
        raise CreamError(f"--reward-model: {e}") from None
    tok = rm_score.check(ref, trust_remote_code=cfg.trust_remote_code)
    return ref, tok, models.template_hash(tok)


def _rm_scores(rm, responses: pa.Table, policy_tokenized, out: Path, shard, cfg: LabelConfig,
               summary: LabelSummary, log, cache_tag: str = "") -> pa.Table:
    """The reward model's rows (scorer ``rm``), its rewards cached in ``OUT/rm/<model>/`` like log-probs.
    ``n_tokens`` is the policy's response length (``policy_tokenized``), as in every other row."""
    from cream_data.engines import rm_score

    ref, tok, th = rm
    tokenized = rm_score.tokenize(tok, responses["prompt"].to_pylist(), responses["response"].to_pylist())

    def load_scorer():
        model = rm_score.load(ref, trust_remote_code=cfg.trust_remote_code)
        return rm_score.RMScorer(model, tok.pad_token_id, batch_size=cfg.batch_size, max_tokens=cfg.max_batch_tokens)

    with _progress(f"scoring with reward model {ref.name}", len(tokenized.ids), log) as tick:
        reward, _, scored = _cached_scores(RM_REWARDS, ref, responses, tokenized,
                                           out / "rm" / (_slug(ref.name) + cache_tag), shard, cfg, th, load_scorer,
                                           tick, progress_log=log)
    if not cache_tag:
        (summary.models_scored if scored else summary.models_reused).append(ref.name)
    if log:
        log(f"{'scored' if scored else 'reused cached rewards of'} reward model {ref.name}")
    ntok = policy_tokenized.n_tokens[policy_tokenized.inverse]
    return scores_rows(responses, "rm", ref.name, None, None, None, ntok, reward, "rm")
