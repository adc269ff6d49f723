"""The label stage's settings (``cream label`` flags, the ``label:`` section of a run config): one definition."""

from __future__ import annotations

import os
from dataclasses import dataclass

from cream_data.errors import CreamError
from cream_data.rewards.judge import load_judge_template
from cream_data.settings import INT32_MAX, Settings, at_least, dtype_setting, setting, within
from cream_data.vocab import (CONSISTENCY_MEASURES, ENGINES, JUDGE_MODES, LONG_PROMPTS, PAIR_POLICIES, REWARD_ROLE,
                              REWARDS, SCOPES, SCORER_ROLES)


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
    scope: str = setting("sample", choices=SCOPES, help="sample: each pair weighted by its own C; dataset: every "
                         "pair gets the mean C.")
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
    prompts: str | None = setting(None, help="Prompts table with reference answers (needed by --reward oracle) and "
                                  "human answers (--human-answers).")
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
    long_responses: str = setting("skip", choices=LONG_PROMPTS, help=(
        "Responses that some scoring model cannot read whole: templated prompt + response longer than the "
        "max_position_embeddings of M_t, M_{t-1}, M_{t-2} or the --reward-model (the judge: its prompt + "
        "--judge-max-new-tokens). skip: not scored, each prompt ranked without them (counted, one warning line) | "
        "error: refuse the table, naming the row."))
    flush_rows: int = setting(int(os.environ.get("CREAM_LABEL_FLUSH_ROWS", "256")), internal=True,
                              help="Persist scored rows this often, for resume (CREAM_LABEL_FLUSH_ROWS).",
                              check=at_least(1))

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
        if self.human_answers and not self.prompts:
            problems.append(("human_answers", "needs {prompts} (a prompts table with a human_answer column)"))
        if self.reward_model and self.engine == "vllm":
            problems.append(("engine", "vllm does not score reward models in this version; use {engine} hf"))
        return problems

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

    def _pairing_problems(self) -> list[tuple[str, str]]:
        cb = self.consistency_between
        if cb is not None and cb.strip().lower() != "none":
            parts = [x.strip() for x in cb.split(",")]
            pick = REWARD_ROLE.get(self.reward, "current")
            if len(parts) != 2 or not all(parts) or parts[0] == parts[1]:
                return [("consistency_between", f"got {cb!r}, expected two different scorer roles A,B from "
                         f"{', '.join(SCORER_ROLES)} (or none)")]
            unknown = [x for x in parts if x not in SCORER_ROLES]
            if unknown:
                return [("consistency_between", f"got {unknown[0]!r}, expected a scorer role: "
                         f"{', '.join(SCORER_ROLES)}")]
            if pick not in parts:
                return [("consistency_between", f"got {cb!r}, expected one of the two to be {pick!r} (the scorer "
                         f"that picks the pairs under {{reward}} {self.reward})")]
            other = parts[1] if parts[0] == pick else parts[0]
            need = {"previous": (self.prev_model, "prev_model"), "rm": (self.reward_model, "reward_model"),
                    "oracle": (self.prompts, "prompts")}
            if self.model and other in need and not need[other][0]:  # labeling, not re-pairing: made here
                return [("consistency_between", f"got {cb!r}: scorer {other!r} needs {{{need[other][1]}}}")]
        if self.pair_policy in PAIR_POLICIES and self.pair_policy != "weight" and self.model and self.between() is None:
            return [("pair_policy", f"got {self.pair_policy!r}, which needs two scorers to agree; give "
                     "{consistency_between} A,B (or {prev_model} for current,previous)")]
        return []
