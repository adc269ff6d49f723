"""`cream run CONFIG.yaml`: the whole CREAM loop, resumable."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from cli.common import log, out
from cli.progress import Bars
from cream_data.vocab import RUN_METHODS


def register(app: typer.Typer) -> None:
    app.command(name="run")(run)


def run(
    config: Path = typer.Argument(..., help="Run config (YAML): model, method, iterations, sft, prompts, sample, "
                                  "label, train, eval sections. See examples/demo.yaml."),
    run_dir: Optional[Path] = typer.Option(None, "--out", help="Run directory (default: the config's run_dir, "
                                           "else runs/<config name> beside the config)."),
    method: Optional[str] = typer.Option(None, "--method", help="Override the config's method: "
                                         + " | ".join(RUN_METHODS) + "."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Override the config's seed."),
    reuse_from: Optional[list[Path]] = typer.Option(
        None, "--reuse-from", help="Another run directory whose finished stages with the same fingerprint (same "
        "settings, data, seeds and upstream stages) are taken as hard links instead of recomputed; e.g. the SFT "
        "model and iteration-1 samples shared by runs that differ only in method. Repeatable."),
    resume: bool = typer.Option(True, "--resume/--no-resume",
                                help="Skip stages finished earlier with the same inputs and finish an interrupted "
                                     "one (default); --no-resume recomputes every stage in the run directory."),
    check: bool = typer.Option(False, "--check", help="Validate the config (every problem at once), print every "
                               "setting as it will run (defaults filled in) and stop; nothing is written."),
    plan: bool = typer.Option(False, "--plan", help="Print every stage with its status (done / reuse / resume / "
                              "stale / to run, from the fingerprints) and the exact `cream …` command line that "
                              "does its work, then stop; nothing is run or written."),
    machine_rank: Optional[int] = typer.Option(None, "--machine-rank", min=0, help="This machine's index (overrides "
                                               "nodes.machine_rank) with nodes.launcher followers: every machine runs "
                                               "the same `cream run` on a shared run directory. Not with srun (one "
                                               "`cream run` starts every machine's part)."),
    main_process_ip: Optional[str] = typer.Option(None, "--main-process-ip", help="Address of machine 0 (overrides "
                                                  "nodes.main_process_ip; srun: default the job step's first node)."),
    in_process: bool = typer.Option(False, "--in-process", help="Run every stage inside this process instead of "
                                    "as its own `cream …` process (debugging; the launch keys are not used)."),
) -> None:
    """M0 → SFT → M1 → (sample → label → train) × T → M_{T+1}, evaluating each model; a rerun skips finished
    stages and finishes an interrupted one. Ends with the iteration report (accuracy per model, consistency)."""
    overrides = {k: v for k, v in (("method", method), ("seed", seed),
                                   ("run_dir", str(run_dir.resolve()) if run_dir else None)) if v is not None}
    nodes = {k: v for k, v in (("machine_rank", machine_rank), ("main_process_ip", main_process_ip)) if v is not None}
    if nodes:
        overrides["nodes"] = nodes
    if check or plan:  # nothing is run or written
        return _check(config, overrides, reuse_from) if check else _plan(config, overrides, reuse_from, resume)
    from cream_train.run.config import check_reuse_from

    for r in reuse_from or []:  # before the run directory is made (its own directory is refused by the loop)
        check_reuse_from(r)
    from cream_train.run.loop import run as run_loop

    with Bars() as bars:
        summary = run_loop(config, log=lambda m: log.print(m, highlight=False), overrides=overrides,
                           reuse_from=reuse_from, resume=resume, progress=bars.update, in_process=in_process)
    if summary.report_md:
        out.print(summary.report_md, highlight=False, markup=False)
    log.print(f"run finished in {summary.seconds / 60:.1f} min: {len(summary.ran)} stage(s) ran, "
              f"{len(summary.skipped)} skipped (done earlier)"
              + (f", {len(summary.reused)} reused ({', '.join(summary.reused)})" if summary.reused else ""))
    log.print(f"run dir: {summary.run_dir}  (config.yaml, manifest.json, models/, iter-*/, eval/, report/, logs/)")
    for name, path in summary.models.items():
        log.print(f"  {name}: {path}", highlight=False)
    log.print(f"query it: cream sql {summary.run_dir} \"SELECT iteration, avg(weight) FROM preferences GROUP BY 1\"")


def _check(config: Path, overrides: dict, reuse_from) -> None:
    """`--check`: everything a stage would refuse, listed at once, then every setting as it will run (defaults
    filled in: what the run's config.yaml will hold)."""
    import yaml

    from cream_train.run.config import load_run_config

    cfg, _, table = load_run_config(config, overrides, reuse_from=reuse_from)
    shown = yaml.safe_dump(cfg.to_dict(), sort_keys=False, allow_unicode=True)  # a path as typed, not \xE9
    out.print(shown.rstrip(), highlight=False, markup=False)
    out.print(f"{config}: valid — method {cfg.method}, T = {cfg.iterations}, {table.num_rows} prompts, "
              f"run dir {cfg.run_dir}; {cfg.trained_c()}", highlight=False)


def _plan(config: Path, overrides: dict, reuse_from, resume: bool) -> None:
    """`--plan`: every stage's status and command line (cream_train/run/plan.py)."""
    from cream_train.run.plan import plan_run, to_text
    from cream_train.run.config import check_reuse_from, load_run_config

    for r in reuse_from or []:
        check_reuse_from(r)
    cfg, _, table = load_run_config(config, overrides, reuse_from=reuse_from, machine_checks=None)  # any machine
    out.print(to_text(plan_run(cfg, table, reuse_from=reuse_from, resume=resume)), highlight=False, markup=False)
