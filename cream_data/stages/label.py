"""`cream label`: score sampled responses, turn scores into rewards, rankings, consistency and preference pairs.

Roles (docs/algorithm.md, section 2):

    scorer     model        ref_model     reward
    current    M_t          M_{t-1}       dpo: log pi_t(y|x) - log pi_{t-1}(y|x)   (likelihood_norm without a ref)
    previous   M_{t-1}      M_{t-2}       dpo, or likelihood_norm = log pi(y|x) / |y| when M_{t-1} = M0 has no ref
    judge      M_t          —             the SRLM 5-point judge score (``--reward judge``)
    oracle     answer check —             1 correct / 0 wrong against the prompt's reference (``--reward oracle``;
                                          a diagnostic column with ``--oracle-scores``, null without a reference)
    rm         reward model —             its single logit on the conversation (``--reward-model``; picks the pairs
                                          with ``--reward rm``, a diagnostic column otherwise)

Each *distinct* model is loaded once and scores every response once; its log-probs are kept in
``OUT/logps/<model>/`` by model identity, so M_{t-1} in two roles costs one pass and a rerun (after a crash, or to
re-pair) reuses what is stored; a reward model's rewards are kept the same way in ``OUT/rm/<model>/``. The scores
and preferences tables are written last.

The parts: ``label_config`` (the settings), ``label_cache`` (the per-model score cache), ``label_scorers`` (every
scorer role's rows), ``label_prompts`` (reference and human answers), ``label_pools`` (response pools) and this module
(the stage: read, check, score, write the tables, pair by the settings' :class:`~cream_data.rewards.spec.PairingSpec`).
"""

from __future__ import annotations

import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

import schemas
from cream_data.errors import CreamError
from cream_data.rewards.judge import judge_template_hash
from cream_data.progress import Progress
from cream_data.rewards.pairing import PairingSummary, build_preferences
from cream_data.rewards.spec import setting_names
from cream_data.stages.label_config import LabelConfig
from cream_data.stages.label_prompts import as_human_scores, human_responses, reference_answers
from cream_data.stages.label_scorers import (Scoring, judge_template_text, label_dtype, reward_model, score_roles,
                                             unscored_rows)
from cream_data.tables import io
from cream_data.tables.fingerprint import responses_fingerprint, shard_mask
from cream_data.tables.outputs import guard, locked, only_entries
from cream_data.tables.shard import Shard, split_shard
from cream_data.vocab import REWARD_ROLE, SIDE_FOLDERS

__all__ = ["LabelSummary", "label", "pair_from_scores", "pair_again", "check_model_or_scores", "write_preferences",
           "is_label_output", "LABEL_FOLDERS", "check_labeled"]


@dataclass
class LabelSummary:
    """What a labeling did (``cream label`` prints it; ``cream run`` records it): the scorers' report
    (label_scorers.ScoringReport) and the pairing's summary (None while other shards are missing)."""

    out: str
    responses: int
    prompts: int
    models_scored: list[str] = field(default_factory=list)
    models_reused: list[str] = field(default_factory=list)
    judge_unparsed: int = 0           # parse mode: outputs with no parseable score (null reward)
    judge_appended: int = 0           # expected mode: distinct outputs without a cue (the cue was appended)
    pairing: PairingSummary | None = None
    seconds: float = 0.0
    dtype: str = ""                   # the dtype the models ran in (bf16, fp32, …)


def _engine_check(engine: str) -> None:
    if engine == "vllm":
        import importlib.util

        if importlib.util.find_spec("vllm") is None:
            from cream_data.engines.vllm_engine import VLLM_INSTALL
            from cream_data.errors import missing_package

            raise missing_package("vllm", "--engine vllm", VLLM_INSTALL)


def _check_tokenizers(refs: dict, tokenizers: dict) -> str:
    from cream_data.engines.models import chat_template_hash

    hashes = {name: chat_template_hash(tok) for name, tok in tokenizers.items()}
    first = next(iter(hashes))
    for name, h in hashes.items():
        if h != hashes[first]:
            raise CreamError(
                f"model {name} has another tokenizer/chat template than {first}: DPO rewards across tokenizers are "
                "meaningless; label with models that share one tokenizer"
            )
    return hashes[first]


def _read_responses(path) -> pa.Table:
    """The responses, sorted, and checked whole before any model runs: each prompt's response_idx is 0..N-1, and a
    prompt_id names one prompt."""
    from cream_data.rewards.rows import Rows
    from cream_data.stages.label_pools import prompt_per_id

    responses = io.read_table(path, "responses")
    if responses.num_rows == 0:
        raise CreamError(f"{path}: responses table is empty; nothing to label")
    try:
        Rows(responses)
    except CreamError as e:
        raise CreamError(f"{path}: {e}") from None
    prompt_per_id(responses, str(path))
    return responses.sort_by([("prompt_id", "ascending"), ("response_idx", "ascending")])


LABEL_FOLDERS = ("scores", "preferences", "logps", "rm", "inspect", "responses", "human")


def is_label_output(path: Path) -> bool:
    """What `cream label` writes: a folder holding only its scores/, preferences/, logps/, rm/ and human/ (and a report,
    and the responses it labels, as in a run's ``iter-<t>/``, with method temporal's anchor/, anchored/, future/ and
    the probe's probe/)."""
    return only_entries(path, lambda e: e.name in LABEL_FOLDERS + SIDE_FOLDERS and e.is_dir())


def label(responses_path: str | Path, cfg: LabelConfig, out: str | Path, *, shard: tuple[int, int] | None = None,
          log=None, progress: Progress | None = None) -> LabelSummary:
    """Score, reward, rank, pair: write ``OUT/scores`` and ``OUT/preferences`` (and the ``OUT/logps`` cache).
    ``shard``: ``(i, k)``, this process's part of the prompts (:class:`~cream_data.tables.shard.Shard`).

    Every input is read and checked before the first model runs — the tables, the reference answers, and each
    model against its role (config and tokenizer files only, :mod:`cream_data.engines.model_roles`); a failure
    leaves nothing new in ``OUT``."""
    t0 = time.time()
    out, shard = Path(out), Shard.of(shard)
    _engine_check(cfg.engine)
    guard(out, "label", is_label_output, what="labeled folder")
    responses, eligible = _inputs(responses_path, cfg)
    answers = None
    if "oracle" in cfg.scorer_roles():  # strict where the oracle pairs; a diagnostic (--oracle-scores) takes nulls
        answers = reference_answers(cfg.prompts, responses, every_prompt="oracle" in cfg.pairing_roles(), log=log)
    checked = _Checked(responses, eligible, answers, *_models(cfg), reward_model(cfg))
    with locked(out, shard=split_shard(shard), log=log):
        return _label_locked(responses_path, checked, cfg, out, shard=shard, log=log, t0=t0, progress=progress)


@dataclass(frozen=True)
class _Checked:
    """What :func:`label` read and checked before taking the output's lock: every response to label (pools included)
    and which may be chosen or rejected (:func:`_inputs`), the reference answers (oracle), the scoring models
    (name -> ref), M_t's tokenizer, the shared template hash and the reward model (:func:`reward_model`)."""

    responses: pa.Table
    eligible: tuple | None
    answers: dict | None
    refs: dict
    tok: object
    th: str
    rm: tuple | None


def _inputs(responses_path, cfg: LabelConfig):
    """The responses to label: the input's, with the ``--chosen-from``/``--rejected-from`` pools' rows added
    (label_pools.py), and which rows may be chosen or rejected (None: every row both)."""
    from cream_data.stages.label_pools import pooled

    return pooled(_read_responses(responses_path), cfg.chosen_from, cfg.rejected_from, source=responses_path)


def _label_locked(responses_path, checked: _Checked, cfg: LabelConfig, out: Path, *, shard: Shard | None, log,
                  t0: float, progress: Progress | None = None) -> LabelSummary:
    """The stage body, run while this process holds the output's lock. A shard scores its part, pairing reads all."""
    from cream_data.engines import models

    responses, refs, th, rm = checked.responses, checked.refs, checked.th, checked.rm
    say = log or (lambda *_: None)
    fp = responses_fingerprint(responses)
    if shard is not None and shard.is_split:
        responses = responses.filter(shard_mask(responses["prompt_id"], shard))
    human = human_responses(cfg.prompts, responses) if cfg.human_answers else None
    _check_inputs_match(out, fp)

    dtype = label_dtype(cfg)
    ctx = Scoring(cfg=cfg, refs=refs, tok=checked.tok, th=th, rm=rm, out=out, shard=shard, log=log, progress=progress)
    scores, report = score_roles(ctx, responses, checked.answers)
    human_part = None
    if human is not None and human.num_rows:
        say(f"scoring the human-written answers of {human.num_rows} prompts (never paired)")
        human_part = as_human_scores(score_roles(ctx, human, checked.answers, cache_tag="--human").scores, human)
    manifest = {"config": _config_dict(cfg, responses_path, shard),
                "inputs": {"responses": fp, "template_hash": th, "dtype": dtype,  # the stored log-probs' numerics
                           "model_ids": {ref.name: models.content_id(ref) for ref in refs.values()}}}
    if rm is not None:
        manifest["inputs"]["model_ids"][rm[0].name] = models.content_id(rm[0])
    if human is not None and human_part is None:  # every process writes its part, even an empty one: with
        human_part = schemas.get("human_scores").arrow.empty_table()  # human_answers on, the table is always whole
    scores = _write_scores(scores, human_part, out, shard, manifest)
    pairing = None
    if scores is None:
        say(f"shard {shard} done; preferences are built when every shard has finished "
            f"(or run `cream label {responses_path} --scores {out} --out {out}`)")
    else:
        pairing = write_preferences(checked.responses, scores, cfg, out, template_hash=th, config=manifest["config"],
                                    inputs=manifest["inputs"], eligible=checked.eligible)
    return LabelSummary(out=str(out), responses=responses.num_rows,
                        prompts=len(set(responses["prompt_id"].to_pylist())),
                        models_scored=report.models_scored, models_reused=report.models_reused,
                        judge_unparsed=report.judge_unparsed, judge_appended=report.judge_appended, pairing=pairing,
                        seconds=time.time() - t0, dtype=dtype)


# the label settings naming a policy, as their flags: each is checked as a policy (model_roles.check_policy)
_POLICY_FLAGS = {"model": "--model", "ref": "--ref", "prev_model": "--prev-model", "prev_ref": "--prev-ref"}


def _models(cfg: LabelConfig) -> tuple[dict, object, str]:
    """The scoring models resolved (name -> ref), M_t's tokenizer and the shared template hash; the tokenizers are
    compared first (one tokenizer for every DPO reward), then each model is checked as a policy."""
    from cream_data.engines import models

    refs, tokenizers, flags = {}, {}, {}
    for key, flag in _POLICY_FLAGS.items():
        name = getattr(cfg, key)
        if name and name not in refs:
            refs[name], flags[name] = models.resolve(name), flag
            tokenizers[refs[name].name] = models.read_tokenizer(refs[name], what=flag)
    th = _check_tokenizers(refs, tokenizers)
    for name, ref in refs.items():
        models.check_policy(ref, what=flags[name], tokenizer=tokenizers[ref.name])
    return refs, tokenizers[refs[cfg.model].name], th


def _write_scores(scores: pa.Table, human_part: pa.Table | None, out: Path, shard: Shard | None,
                  manifest: dict) -> pa.Table | None:
    """Write the scores (and human_scores) of this process; the whole scores table to pair, or None while other
    shards are still missing."""
    split = split_shard(shard)
    if human_part is None and (out / "human").is_dir() and split is None:
        shutil.rmtree(out / "human")  # an earlier run's diagnostic would describe other scores
    if human_part is not None:
        _write_shard_or_table(human_part, out / "human", "human_scores", split, manifest)
    if split is None:
        io.write_table(scores, out / "scores", "scores", manifest_extra=manifest)
        return scores
    _write_shard_or_table(scores, out / "scores", "scores", split, manifest)
    try:
        return io.read_table(out / "scores", "scores")
    except CreamError:
        return None


def _write_shard_or_table(table: pa.Table, folder: Path, kind: str, split: Shard | None, manifest: dict) -> None:
    """This shard's part of a table (``split``: a shard that splits the work; replacing an earlier part of the same
    shard), or the whole table (None)."""
    if split is not None:
        w = io.PartWriter(folder, kind, shard=split)
        for old in w.parts():
            old.unlink()
        w.write(table)
        w.finish(manifest)
    else:
        io.write_table(table, folder, kind, manifest_extra=manifest)


def write_preferences(responses: pa.Table, scores: pa.Table, cfg: LabelConfig, out: Path, *, template_hash: str | None,
                      config: dict, inputs: dict, eligible=None) -> PairingSummary:
    """Pair ``scores`` by the settings' pairing spec and write ``OUT/preferences`` (its manifest: ``config``,
    ``inputs`` and the pairing summary). The spec is built here, once: CREAM's default partner, M_{t-1}'s
    ``previous`` rows, is used where the scores hold them (:func:`~cream_data.rewards.spec.partner_role`)."""
    previous_scored = bool(pc.any(pc.equal(scores["scorer"], "previous")).as_py())
    prefs, pairing = build_preferences(responses, scores, cfg.pairing(previous_scored), iteration=cfg.iteration,
                                       template_hash=template_hash, logp_scorer="current", eligible=eligible)
    io.write_table(prefs, out / "preferences", "preferences",
                   manifest_extra={"config": config, "inputs": inputs,
                                   "summary": {**pairing.to_dict(), "responses_too_long": unscored_rows(scores)}})
    return pairing


def pair_from_scores(responses_path: str | Path, scores_dir: str | Path, cfg: LabelConfig,
                     out: str | Path) -> PairingSummary:
    """Rebuild preferences from stored scores (``cream label RESPONSES --scores DIR``) by ``cfg``'s pairing spec,
    without loading a model. The preferences manifest records the labeling's config with the pairing settings
    replaced by this one's (every setting the spec is built from: :func:`~cream_data.rewards.spec.setting_names`)."""
    scores_dir = Path(scores_dir)
    folder = scores_dir / "scores" if (scores_dir / "scores").is_dir() else scores_dir
    scores = io.read_table(folder, "scores")
    manifest = io.read_manifest(folder)
    responses, eligible = _inputs(responses_path, cfg)
    fp = responses_fingerprint(responses)
    stored = (manifest.get("inputs") or {}).get("responses")
    if stored and stored != fp:
        raise CreamError(
            f"{folder}: these scores were computed from another responses table (fingerprint {stored}, "
            f"{responses_path} has {fp}); label it again instead"
        )
    th = (manifest.get("inputs") or {}).get("template_hash")
    config = {**(manifest.get("config") or {}), **{name: getattr(cfg, name) for name in setting_names()},
              "rebuilt_from_scores": str(folder)}
    return write_preferences(responses, scores, cfg, Path(out), template_hash=th, config=config,
                             inputs={"responses": fp, "template_hash": th}, eligible=eligible)


def check_model_or_scores(model: str | None, scores) -> None:
    """A labeling needs M_t, unless it pairs stored scores again."""
    if model is None and scores is None:
        raise CreamError("--model is required (or --scores DIR to re-pair stored scores)")


def pair_again(responses_path: str | Path, scores_dir: str | Path, cfg: LabelConfig,
               out: str | Path) -> PairingSummary:
    """`cream label RESPONSES --scores DIR --out OUT`: :func:`pair_from_scores` into ``out``, a folder that holds
    nothing but a labeling's folders (refused otherwise), while holding its lock."""
    out = Path(out)
    guard(out, "label", is_label_output, what="labeled folder")
    with locked(out):
        return pair_from_scores(responses_path, scores_dir, cfg, out)


def check_labeled(preferences=None, scores=None, responses=None, human=None) -> None:
    """Refuse tables found together (:class:`cream_data.tables.keys.Found`; any may be None) that are not of one
    labeling (:func:`cream_data.tables.keys.check_labeling`): the responses count with the pools the labeling
    recorded (label_pools.as_labeled), and the pairs' rewards are those of the scorer of the reward it recorded."""
    from cream_data.stages.label_pools import as_labeled
    from cream_data.tables.keys import Found, check_labeling

    config = next((t.manifest["config"] for t in (preferences, scores)
                   if t is not None and isinstance((t.manifest or {}).get("config"), dict)), {})
    whole = True
    if responses is not None:
        table, whole = as_labeled(responses.table, config, responses.where)
        if table is not responses.table:
            responses = Found(table, f"{responses.where} (with the pools it was labeled with)", responses.manifest)
    check_labeling(preferences, scores, responses, human, reward_scorer=REWARD_ROLE.get(config.get("reward")),
                   whole=whole)


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
    if "judge" in cfg.scorer_roles():
        d["judge_template_hash"] = judge_template_hash(judge_template_text(cfg))
    return d
