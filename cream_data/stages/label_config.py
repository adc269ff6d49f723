"""The label stage's settings (``cream label`` flags, the ``label:`` section of a run config): one definition.

The settings that decide pairing (``reward``, ``consistency_between``, ``consistency``, ``scope``, ``clip_c``,
``pair_policy``, ``min_margin``) become a :class:`~cream_data.rewards.spec.PairingSpec` (:meth:`LabelConfig.pairing`);
their rules are the spec's (:mod:`cream_data.rewards.spec`), checked here through it.
"""

from __future__ import annotations

from dataclasses import dataclass

from cream_data.errors import CreamError
from cream_data.rewards.judge import load_judge_template
from cream_data.rewards.spec import PairingSpec, pairing_spec, partner_role, settings_problems
from cream_data.settings import INT32_MAX, Settings, at_least, dtype_setting, setting, within
from cream_data.vocab import (CONSISTENCY_MEASURES, ENGINES, JUDGE_MODES, LONG_PROMPTS, PAIR_POLICIES, REWARD_ROLE,
                              REWARDS, SCOPES)


@dataclass(frozen=True)
class LabelConfig(Settings):
    """Settings of one labeling run (saved resolved in the output manifests)."""

    model: str = setting("", help="M_t: the current model (policy and reward model).")
    ref: str | None = setting(None, help="M_{t-1}: reference of the current DPO reward. Without it the reward is the "
                              "length-normalised log-likelihood.")
    prev_model: str | None = setting(None, help="M_{t-1} as the previous reward model; enables the consistency C "
                                     "between the two rankings.")
    prev_ref: str | None = setting(None, help="M_{t-2}: reference of the previous reward (omit when M_{t-1} is M0: "
                                   "length-normalised likelihood is used).")
    reward: str = setting("dpo", choices=REWARDS, help="dpo (DPO implicit reward) | judge (SRLM 5-point "
                          "LLM-as-a-judge by M_t) | oracle (correctness vs the prompt's reference answer) | rm (the "
                          "--reward-model's score).")
    consistency: str = setting("kendall", choices=CONSISTENCY_MEASURES, help="The consistency measure C between "
                               "two rankings: kendall | spearman | toporder.")
    scope: str = setting("dataset", choices=SCOPES, help="dataset: every pair of the labeling trains with the mean C "
                         "over its pairs, the one C of the paper's loss (Eq. 3.7; the authors' README trains with "
                         "--method consistency_avg) | prompt: each prompt's pair with its own C (the authors' "
                         "consistency_dyn; sample is the same, its older name).")
    clip_c: bool = setting(False, help="Raise a pair's weight C below 1/2 to 1/2 (after --scope: a dataset mean is "
                           "raised once). With C < 1/2 the loss C*DPO + (1-C)*reversed DPO leans toward the "
                           "rejected answer; the paper's derivation covers C in [1/2, 1]. Off by default: the paper "
                           "and the authors' code train with C as measured.")
    batch_size: int = setting(8, help="Sequences per scoring batch.", check=at_least(1))
    max_batch_tokens: int = setting(8192, help="Padded tokens per scoring batch.", check=at_least(1))
    engine: str = setting("hf", choices=ENGINES, help="Scoring engine: hf | vllm.")
    dtype: str = dtype_setting("Compute dtype of every model this stage runs (M_t, M_{t-1}, the judge, the reward "
                               "model): auto (bf16 on a CUDA GPU, fp32 on CPU), bf16, fp16 or fp32. The stored "
                               "log-probs are the next training's reference: see docs/CONFIG.md (precision).")
    iteration: int | None = setting(None, help="Iteration t recorded in the preferences (default: the responses "
                                    "table's).", check=within(
                                        0, INT32_MAX, closed="[]",
                                        expected=f">= 0 and <= {INT32_MAX:,} (iteration is stored as an int32)"))
    prompts: str | None = setting(None, help="Prompts table with reference answers (needed by --reward oracle and "
                                  "--oracle-scores) and human answers (--human-answers).")
    judge_max_new_tokens: int = setting(256, help="The judge's generation budget.", check=at_least(1))
    judge_mode: str = setting("expected", choices=JUDGE_MODES, help="expected: the judge's expected score 0-5 under "
                              "its own next-token probabilities after 'Score: ' (never null) | parse: the 'Score: k' "
                              "it writes (null when it writes none). See docs/REWARDS.md.")
    judge_template: str | None = setting(None, metavar="PATH", help="Judge prompt file (UTF-8) with the "
                                         "placeholders {request} and {response} once each; default: the built-in "
                                         "SRLM-style prompt.")
    reward_model: str | None = setting(None, help="A sequence-classification reward model with one logit (Hub id or "
                                       "folder; e.g. Skywork-Reward). It reads the conversation with its OWN tokenizer "
                                       "and chat template, so another tokenizer family than the policy is fine. Picks "
                                       "the pairs with --reward rm; with another --reward its scores are added to the "
                                       "scores table (scorer rm) as a diagnostic.")
    trust_remote_code: bool = setting(False, help="Run the --reward-model's custom code (only for checkpoints you "
                                      "trust).")
    consistency_between: str | None = setting(None, help="A,B: the two scorer roles whose rankings give C, from "
                                              "current, previous, judge, rm, oracle; one of them must be the role "
                                              "picking the pairs (--reward). Default: current,previous for --reward "
                                              "dpo with --prev-model (CREAM), else none (C = 1). current,judge: how "
                                              "far the model's judge and its DPO reward agree (SCIR-style).")
    pair_policy: str = setting("weight", choices=PAIR_POLICIES, help="weight: C weighs each pair (CREAM) | agree: "
                               "keep a pair only where the other scorer also puts chosen strictly above rejected "
                               "(weight 1; the rest skipped as 'disagree') | both: kept where they agree, weighted "
                               "by C.")
    chosen_from: tuple[str, ...] = setting((), metavar="TABLES", help="Responses tables (comma-separated) whose "
                                           "rows may be chosen but never rejected, added to the input's for the same "
                                           "prompts (temporal self-rewarding: the future model's samples).")
    rejected_from: tuple[str, ...] = setting((), metavar="TABLES", help="Responses tables (comma-separated) whose "
                                             "rows may be rejected but never chosen (temporal self-rewarding: the "
                                             "initial model's samples, the past anchor).")
    human_answers: bool = setting(False, help="Also score each prompt's human-written answer (the --prompts table's "
                                  "human_answer) with every scorer, never as part of a pair: the self-preference "
                                  "diagnostic in OUT/human (see docs/REWARDS.md).")
    oracle_scores: bool = setting(False, help="Also score every response with the oracle (1 correct / 0 wrong "
                                  "against the --prompts table's reference answer; null where a prompt has none the "
                                  "oracle can check), added to the scores table as a diagnostic only: the pairs, C "
                                  "and weights are unchanged. The premise table of `cream inspect` and the run "
                                  "report reads it (docs/REWARDS.md).", input_when_set=True)
    long_responses: str = setting("skip", choices=LONG_PROMPTS, help=(
        "Responses that some scoring model cannot read whole: templated prompt + response longer than the "
        "max_position_embeddings of M_t, M_{t-1}, M_{t-2} or the --reward-model (the judge: its prompt + "
        "--judge-max-new-tokens). skip: not scored, each prompt ranked without them (counted, one warning line) | "
        "error: refuse the table, naming the row."))
    min_margin: float | None = setting(None, help="Skip a pair whose reward margin (chosen's reward minus "
                                       "rejected's, under the reward that picks the pairs) is below this number >= 0; "
                                       "counted as 'min_margin'. Default: off. See docs/REWARDS.md.",
                                       input_when_set=True)
    flush_rows: int = setting(256, internal=True, help="Persist scored rows this often, for resume (a test sets a "
                              "small value to kill a run mid-scoring).", check=at_least(1))

    def _problems(self) -> list[tuple[str, str]]:
        problems = []
        if self.judge_template is not None:
            try:
                load_judge_template(self.judge_template)
            except CreamError as e:
                problems.append(("judge_template", str(e)))
        if self.prev_ref and not self.prev_model:
            problems.append(("prev_ref", "given without {prev_model}"))
        if self.reward == "oracle" and not self.prompts:
            problems.append(("reward", "oracle needs {prompts} (a prompts table with reference_answer)"))
        if self.reward == "rm" and self.model and not self.reward_model:  # re-pairing (no model) reads stored rows
            problems.append(("reward_model", "missing; {reward} rm needs a sequence-classification reward model "
                             "(Hub id or folder)"))
        problems.extend(self._pairing_problems())
        if self.oracle_scores and not self.prompts:
            problems.append(("oracle_scores", "needs {prompts} (a prompts table with reference_answer)"))
        if self.human_answers and not self.prompts:
            problems.append(("human_answers", "needs {prompts} (a prompts table with a human_answer column)"))
        if self.reward_model and self.engine == "vllm":
            problems.append(("engine", "vllm does not score reward models in this version; use {engine} hf"))
        return problems

    def pairing(self, previous_scored: bool | None = None) -> PairingSpec:
        """How these settings pair (:func:`~cream_data.rewards.spec.pairing_spec`). ``previous_scored``: whether
        M_{t-1}'s scores are there (the stored scores hold ``previous`` rows, when re-pairing); by default, whether
        this labeling scores with M_{t-1} (``prev_model``)."""
        return pairing_spec(self, previous_scored=bool(self.prev_model) if previous_scored is None else previous_scored)

    def scorer_roles(self) -> set[str]:
        """Every scorer role this labeling produces: the pair-picking one, its consistency partner, and the extras
        (``previous`` with M_{t-1}, ``rm`` with a reward model, ``oracle`` with ``oracle_scores``)."""
        out = {"current", *self.pairing_roles()}
        if self.prev_model:
            out.add("previous")
        if self.reward_model:
            out.add("rm")
        if self.oracle_scores:
            out.add("oracle")
        return out

    def pairing_roles(self) -> set[str]:
        """The scorer roles the pairing reads: the one picking the pairs and its consistency partner (if any)."""
        partner = partner_role(self.reward, self.consistency_between, previous_scored=bool(self.prev_model))
        return {REWARD_ROLE.get(self.reward, "current")} | ({partner} if partner is not None else set())

    def _pairing_problems(self) -> list[tuple[str, str]]:
        """The pairing rules (:func:`~cream_data.rewards.spec.settings_problems`; when re-pairing stored scores,
        ``model`` unset, the partner is known only from them), and, when labeling, that the partner is scored."""
        labeling = bool(self.model)
        problems = settings_problems(self, previous_scored=bool(self.prev_model) if labeling else None)
        if any(key == "consistency_between" for key, _ in problems) or self.consistency_between is None:
            return problems
        other = partner_role(self.reward, self.consistency_between, previous_scored=bool(self.prev_model))
        need = {"previous": (self.prev_model, "prev_model"), "rm": (self.reward_model, "reward_model"),
                "oracle": (self.prompts, "prompts")}
        if labeling and other in need and not need[other][0]:  # labeling, not re-pairing: made here
            problems.insert(0, ("consistency_between", f"got {self.consistency_between!r}: scorer {other!r} needs "
                                f"{{{need[other][1]}}}"))
        return problems
