"""`cream label`: self-rewards, rankings, consistency and preference pairs for a responses table."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from cli.common import log, out, parse_shard


def register(app: typer.Typer) -> None:
    app.command(name="label")(label)


def label(
    responses: Path = typer.Argument(..., help="Responses table (file or folder) from `cream sample`."),
    out_dir: Path = typer.Option(..., "--out", help="Folder for the scores and preferences tables."),
    model: Optional[str] = typer.Option(None, "--model", help="M_t: the current model (policy and reward model)."),
    ref: Optional[str] = typer.Option(None, "--ref", help="M_{t-1}: reference of the current DPO reward. "
                                      "Without it the reward is the length-normalised log-likelihood."),
    prev_model: Optional[str] = typer.Option(None, "--prev-model", help="M_{t-1} as the previous reward model; "
                                             "enables the consistency C between the two rankings."),
    prev_ref: Optional[str] = typer.Option(None, "--prev-ref", help="M_{t-2}: reference of the previous reward "
                                           "(omit when M_{t-1} is M0: length-normalised likelihood is used)."),
    reward: str = typer.Option("dpo", "--reward", help="dpo (DPO implicit reward) | judge (SRLM 5-point "
                               "LLM-as-a-judge by M_t) | oracle (correctness vs the prompt's reference answer) | "
                               "rm (the --reward-model's score)."),
    reward_model: Optional[str] = typer.Option(None, "--reward-model", help="A sequence-classification reward "
                                               "model with one logit (Hub id or folder; e.g. Skywork-Reward). It "
                                               "reads the conversation with its OWN tokenizer and chat template, "
                                               "so another tokenizer family than the policy is fine. Picks the "
                                               "pairs with --reward rm; with another --reward its scores are added "
                                               "to the scores table (scorer rm) as a diagnostic."),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help="Run the --reward-model's custom "
                                           "code (only for checkpoints you trust)."),
    judge_mode: str = typer.Option("expected", "--judge-mode", help="expected: the judge's expected score 0-5 "
                                   "under its own next-token probabilities after 'Score: ' (never null) | parse: "
                                   "the 'Score: k' it writes (null when it writes none). See docs/REWARDS.md."),
    judge_template: Optional[Path] = typer.Option(None, "--judge-template", help="Judge prompt file (UTF-8) with "
                                                  "the placeholders {request} and {response} once each; default: "
                                                  "the built-in SRLM-style prompt."),
    judge_max_new_tokens: int = typer.Option(256, "--judge-max-new-tokens", help="The judge's generation budget."),
    consistency: str = typer.Option("kendall", "--consistency", help="kendall | spearman | toporder."),
    consistency_between: Optional[str] = typer.Option(None, "--consistency-between", help="A,B: the two scorer "
                                                      "roles whose rankings give C, from current, previous, judge, "
                                                      "rm, oracle; one of them must be the role picking the pairs "
                                                      "(--reward). Default: current,previous for --reward dpo with "
                                                      "--prev-model (CREAM), else none (C = 1). current,judge: how "
                                                      "far the model's judge and its DPO reward agree (SCIR-style)."),
    pair_policy: str = typer.Option("weight", "--pair-policy", help="weight: C weighs each pair (CREAM) | agree: "
                                    "keep a pair only where the other scorer also puts chosen strictly above "
                                    "rejected (weight 1; the rest skipped as 'disagree') | both: kept where they "
                                    "agree, weighted by C."),
    human_answers: bool = typer.Option(False, "--human-answers", help="Also score each prompt's human-written "
                                       "answer (the --prompts table's human_answer) with every scorer, never as "
                                       "part of a pair: the self-preference diagnostic in OUT/human "
                                       "(see docs/REWARDS.md)."),
    scope: str = typer.Option("sample", "--scope", help="sample: each pair weighted by its own C; dataset: every "
                              "pair gets the mean C."),
    scores: Optional[Path] = typer.Option(None, "--scores", help="Rebuild preferences from this folder's stored "
                                          "scores (another --consistency/--scope) without loading a model."),
    prompts: Optional[Path] = typer.Option(None, "--prompts", help="Prompts table with reference answers "
                                           "(needed by --reward oracle)."),
    batch_size: int = typer.Option(8, "--batch-size", help="Sequences per scoring batch."),
    max_batch_tokens: int = typer.Option(8192, "--max-batch-tokens", help="Padded tokens per scoring batch."),
    engine: str = typer.Option("hf", "--engine", help="hf | vllm."),
    iteration: Optional[int] = typer.Option(None, "--iteration", help="Iteration t recorded in the preferences "
                                            "(default: the responses table's)."),
    shard: Optional[str] = typer.Option(None, "--shard", help="i/k: label a disjoint 1/k of the prompts (one "
                                        "process each); under `accelerate launch` taken from the process rank."),
) -> None:
    """Score responses with M_t (and M_{t-1}, M_{t-2}), rank them, measure the consistency of the two rankings,
    and write a scores table and a preferences table (chosen = best, rejected = worst) into OUT."""
    from cream_data.errors import CreamError
    from cream_data.stages.label import LabelConfig, label as run_label, repair

    if model is None and scores is None:
        raise CreamError("--model is required (or --scores DIR to re-pair stored scores)")
    cfg = LabelConfig(model=model or "", ref=ref, prev_model=prev_model, prev_ref=prev_ref, reward=reward,
                      consistency=consistency, scope=scope, batch_size=batch_size, max_batch_tokens=max_batch_tokens,
                      engine=engine, iteration=iteration, prompts=str(prompts) if prompts else None,
                      reward_model=reward_model, trust_remote_code=trust_remote_code, judge_mode=judge_mode,
                      judge_template=str(judge_template) if judge_template else None,
                      judge_max_new_tokens=judge_max_new_tokens, consistency_between=consistency_between,
                      pair_policy=pair_policy, human_answers=human_answers)
    if scores is not None:
        from cream_data.stages.label import is_label_output
        from cream_data.tables.outputs import guard, locked

        guard(out_dir, "label", is_label_output, what="labeled folder")
        with locked(out_dir):
            summary = repair(responses, scores, cfg, out_dir)
        _print_pairing(summary)
        log.print(f"preferences rebuilt from {scores} → {out_dir / 'preferences'}")
        return
    result = run_label(responses, cfg, out_dir, shard=parse_shard(shard), log=log.print)
    if result.pairing:
        _print_pairing(result.pairing)
    if result.judge_unparsed:
        log.print(f"[yellow]judge:[/] {result.judge_unparsed} output(s) had no parseable 'Score: k' (reward null)")
    if result.judge_appended:
        log.print(f"judge: {result.judge_appended} output(s) wrote no 'Score:' cue; it was appended and read there")
    log.print(f"labeled {result.responses} responses of {result.prompts} prompts in {result.seconds:.1f}s → "
              f"{out_dir}/scores, {out_dir}/preferences")


def _print_pairing(s: dict) -> None:
    skipped = ", ".join(f"{k} {v}" for k, v in (s.get("skipped") or {}).items() if v) or "none"
    c = s.get("c_mean")
    c_txt = f"C mean {c:.3f} (median {s.get('c_median', float('nan')):.3f}, std {s.get('c_std', float('nan')):.3f})" \
        if c is not None else "C n/a"
    dropped = ", ".join(f"{k} {v}" for k, v in (s.get("responses_dropped") or {}).items() if v)
    dropped = f"; responses dropped from pairs: {dropped}" if dropped else ""
    out.print(f"pairs {s.get('pairs')} of {s.get('prompts')} prompts; skipped: {skipped}{dropped}; {c_txt}",
              highlight=False)
