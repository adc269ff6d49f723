"""`cream label`: self-rewards, rankings, consistency and preference pairs for a responses table."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from cli.common import log, out, parse_shard
from cli.options import Options, with_settings
from cli.progress import Bars
from cream_data.stages.label_config import LabelConfig


def register(app: typer.Typer) -> None:
    app.command(name="label")(label)


@with_settings(LabelConfig)
def label(
    responses: Path = typer.Argument(..., help="Responses table (file or folder) from `cream sample`."),
    out_dir: Path = typer.Option(..., "--out", help="Folder for the scores and preferences tables."),
    model: Optional[str] = typer.Option(None, "--model", help=LabelConfig.help("model")),
    settings: Options = None,
    scores: Optional[Path] = typer.Option(None, "--scores", help="Rebuild preferences from this folder's stored "
                                          "scores (another --consistency/--scope) without loading a model."),
    shard: Optional[str] = typer.Option(None, "--shard", help="i/k: label a disjoint 1/k of the prompts (one "
                                        "process each); under `accelerate launch` taken from the process rank."),
) -> None:
    """Score responses with M_t (and M_{t-1}, M_{t-2}), rank them, measure the consistency of the two rankings,
    and write a scores table and a preferences table (chosen = best, rejected = worst) into OUT."""
    from cream_data.stages.label import check_model_or_scores, label as run_label, pair_again

    check_model_or_scores(model, scores)
    cfg = settings.build(LabelConfig, model=model or "")
    if scores is not None:
        summary = pair_again(responses, scores, cfg, out_dir)
        _print_pairing(summary)
        log.print(f"preferences rebuilt from {scores} → {out_dir / 'preferences'}")
        return
    with Bars("responses") as bars:
        result = run_label(responses, cfg, out_dir, shard=parse_shard(shard), log=log.print,
                           progress=bars.update)
    from cream_data.processes import write_result

    write_result("label", result)
    if result.pairing:
        _print_pairing(result.pairing)
    if result.judge_unparsed:
        log.print(f"[yellow]judge:[/] {result.judge_unparsed} output(s) had no parseable 'Score: k' (reward null)")
    if result.judge_appended:
        log.print(f"judge: {result.judge_appended} output(s) wrote no 'Score:' cue; it was appended and read there")
    log.print(f"labeled {result.responses} responses of {result.prompts} prompts in {result.seconds:.1f}s → "
              f"{out_dir}/scores, {out_dir}/preferences")


def _print_pairing(s) -> None:
    """One line from a PairingSummary: pairs, skips and drops by reason, the consistency C."""
    skipped = ", ".join(f"{k} {v}" for k, v in s.skipped.items() if v) or "none"
    c_txt = f"C mean {s.c_mean:.3f} (median {s.c_median:.3f}, std {s.c_std:.3f})" if s.c_mean is not None else "C n/a"
    dropped = ", ".join(f"{k} {v}" for k, v in s.responses_dropped.items() if v)
    dropped = f"; responses dropped from pairs: {dropped}" if dropped else ""
    out.print(f"pairs {s.pairs} of {s.prompts} prompts; skipped: {skipped}{dropped}; {c_txt}", highlight=False)
