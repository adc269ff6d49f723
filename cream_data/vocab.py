"""The names cream's settings and tables use, defined once: tasks, methods, consistency measures, scopes, pair
policies, engines, rewards, scorer roles, judge modes and the other allowed values of a setting.

Pure: nothing but literals, so any layer (the pure ``rewards/`` included) may import it.

>>> REWARD_ROLE["judge"], RUN_METHODS["srlm"]
('judge', ('judge', 'dpo'))
"""

from __future__ import annotations

# Benchmark tasks of both evaluations (cream's own and lm-evaluation-harness); cream_data.inputs.prompts maps each
# to its files and Hub ids.
TASKS: tuple[str, ...] = ("arc_easy", "arc_challenge", "openbookqa", "siqa", "gsm8k")

# `cream run` methods (the paper's rows and a few beyond it, README "Methods"): method -> (pair reward, training loss).
RUN_METHODS: dict[str, tuple[str, str]] = {
    "cream": ("dpo", "cream"),
    "cream-prompt": ("dpo", "cream"),  # cream with each prompt's own C (label scope prompt: the authors' consistency_dyn)
    "cream-avg": ("dpo", "cream-avg"),
    "cream-no-rc": ("dpo", "dpo"),
    "srlm": ("judge", "dpo"),
    "oracle": ("oracle", "dpo"),  # ground-truth correctness (beyond the paper: its "Oracle" row is rm)
    "rm": ("rm", "dpo"),  # the paper's "Oracle" row (an external reward model): pairs by label.reward_model
    "scir": ("dpo", "cream"),  # pairs by the DPO reward, kept where M_t's judge agrees, each weighted by its own C
    "temporal": ("judge", "dpo"),  # temporal self-rewarding: past-anchored rejected, future-guided chosen
}
# The rewards method temporal may score its pools with (`temporal.reward` of a run config; judge by default).
TEMPORAL_REWARDS: tuple[str, ...] = ("judge", "dpo", "rm")
# Method temporal's folders in a run's iter-<t>/: the initial model's samples, the anchored pairs, the future model
# and its samples (their tables get `cream sql` views of their own: anchor_responses, anchored_preferences, …).
TEMPORAL_FOLDERS: tuple[str, ...] = ("anchor", "anchored", "future")
# `cream run`'s probe folder (`prompts.probe`): RUN/prompts/probe/, the held-out prompts, and in iter-<t>/ M_t's samples
# of them and their scores, a diagnostic never trained on (`cream sql` views probe_responses, probe_scores, …).
PROBE_FOLDER = "probe"
# The folders in a run's iter-<t>/ that hold other tables than the iteration's own samples, scores and pairs.
SIDE_FOLDERS: tuple[str, ...] = (*TEMPORAL_FOLDERS, PROBE_FOLDER)
# What a method sets in the label stage unless the run config's label section says otherwise (cream-prompt and scir
# keep each prompt's own C; every other method the label stage's default scope, the paper's dataset mean).
METHOD_LABEL: dict[str, dict[str, str]] = {"cream-prompt": {"scope": "prompt"},
                                           "scir": {"consistency_between": "current,judge", "pair_policy": "both",
                                                    "scope": "prompt"}}
# The training loss of `cream train --method`: cream (each pair's stored weight: the label stage's C after its scope,
# the dataset mean by default), cream-avg (the table's mean weight, taken by the trainer), dpo (C = 1).
TRAIN_METHODS: tuple[str, ...] = ("cream", "cream-avg", "dpo")
C_WEIGHTED: tuple[str, ...] = ("cream", "cream-avg")  # the losses that read each pair's consistency weight C
TRAIN_STAGES: tuple[str, ...] = ("dpo", "sft")

# Ranking consistency C between two scorers' rankings, and how it is applied to the pairs.
CONSISTENCY_MEASURES: tuple[str, ...] = ("kendall", "spearman", "toporder")
# Scope: dataset = every pair of an iteration the mean C over its pairs (the paper's one C, Eq. 3.7; the authors'
# `--method consistency_avg`) | prompt = each prompt's pair its own C (the authors' `consistency_dyn`) | sample =
# prompt, under the name the command contract of `cream label` has always had (kept so it keeps working).
SCOPES: tuple[str, ...] = ("dataset", "prompt", "sample")
PER_PAIR_SCOPES: tuple[str, ...] = ("prompt", "sample")
PAIR_POLICIES: tuple[str, ...] = ("weight", "agree", "both")

# Model engines: transformers (CPU or GPU) or vLLM.
ENGINES: tuple[str, ...] = ("hf", "vllm")

# The reward that picks the pairs (`cream label --reward`), and the scorer role of the scores table that gives it.
REWARDS: tuple[str, ...] = ("dpo", "judge", "oracle", "rm")
SCORER_ROLES: tuple[str, ...] = ("current", "previous", "judge", "rm", "oracle")
REWARD_ROLE: dict[str, str] = {"dpo": "current", "judge": "judge", "oracle": "oracle", "rm": "rm"}
# The scores table's reward_kind (schemas/*/scores.json): what a row's reward is.
REWARD_KINDS: tuple[str, ...] = ("dpo", "likelihood_norm", "judge", "oracle", "rm")
JUDGE_MODES: tuple[str, ...] = ("expected", "parse")

# Evaluation: answer extraction rules (docs/EVALUATION.md), and which models a run evaluates.
EXTRACTORS: tuple[str, ...] = ("cream", "authors")
EVAL_MODELS: tuple[str, ...] = ("all", "last", "none")

# Training: where the DPO reference log-probs come from, pairs over max_length, metric loggers.
REFERENCES: tuple[str, ...] = ("auto", "stored", "computed")
LONG_PAIRS: tuple[str, ...] = ("drop", "truncate")
REPORT_TO: tuple[str, ...] = ("none", "tensorboard", "wandb")
# A model stage's compute dtype (`dtype` of sample, label, eval, sft, train): auto = bf16 on CUDA, fp32 on CPU.
DTYPES: tuple[str, ...] = ("auto", "bf16", "fp16", "fp32")
# Training precision: mixed = fp32 master weights, compute in `dtype` under autocast (fp16 adds loss scaling);
# pure = weights held and updated in `dtype` itself (pure-bf16: small updates round away).
PRECISIONS: tuple[str, ...] = ("mixed", "pure")
# The dtype of a trained checkpoint's saved weights: master (what training held: fp32 under mixed) or a cast.
SAVE_DTYPES: tuple[str, ...] = ("master", "bf16", "fp16", "fp32")
# Sampling: prompts longer than the model's context (with max_new_tokens): skipped and counted, or an error.
LONG_PROMPTS: tuple[str, ...] = ("skip", "error")
# How `cream run` starts a stage's processes (cream_train/run/launch.py).
LAUNCHERS: tuple[str, ...] = ("none", "accelerate", "torchrun")
# How a run reaches the machines of `nodes` (cream_train/run/machines.py): every machine runs its own `cream run` that
# follows machine 0's manifest, or one `cream run` starts each stage that spans machines as a Slurm job step.
NODE_LAUNCHERS: tuple[str, ...] = ("followers", "srun")
