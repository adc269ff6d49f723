"""The evaluation stages of the walk ``w`` (cream_train/run/walk.py): cream's own benchmarks after each model
(``eval-M<k>``) and, with ``eval.harness``, lm-evaluation-harness (``harness-M<k>``). A model carried forward by a
pair-less iteration has its source's weights, so its evaluations are its source's: such a stage carries the record
that stands for it (:attr:`cream_train.run.stage.Stage.carried`) and has no work. Nothing downstream reads an
evaluation: only machine 0 runs them.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Iterator

from cream_train.run.launch import Launcher, stage_argv
from cream_train.run.stage import Stage
from cream_train.run.walk import StageWalk


def evaluations(w: StageWalk, k: int) -> Iterator[Stage]:
    """M_k's evaluations, where ``eval.models`` asks for them (all, or the last model)."""
    m = w.cfg.eval.models
    if not (m == "all" or (m == "last" and k == w.cfg.iterations + 1)):
        return
    yield evaluation(w, k)
    if w.cfg.eval.harness is not None:
        yield harness(w, k)


def evaluation(w: StageWalk, k: int) -> Stage:
    """cream's benchmarks on M_k into RUN/eval/M<k>/."""
    name, out = f"eval-M{k}", w.layout.eval(k)
    carried = _carried(w, k, "eval", lambda src: {key: src[key] for key in ("accuracy", "average") if key in src})
    if carried:  # the same weights as an earlier, evaluated model: its evaluation stands (the report marks the row)
        return Stage(name, "eval", k, {}, (out,), carried=carried)
    ecfg = w.stages.eval(k)
    inputs = {"model_fp": w.model_fp(k), **{key: v for key, v in asdict(w.cfg.eval).items() if key != "harness"}}

    def work(resume):
        from cream_data.stages.evaluate import evaluate

        return evaluate(w.model(k), ecfg, out, overwrite=not resume, progress=w.progress)

    def command():
        return stage_argv("eval", ecfg, extra={"--model": w.model(k), "--out": str(out)}), Launcher()

    def summary(r: dict) -> str:
        return (f"  M{k}: average accuracy {r['average']:.3f} "
                f"({', '.join(f'{t} {a:.3f}' for t, a in r['accuracy'].items())})")

    return Stage(name, "eval", k, inputs, (out,), work, program="eval", command=command, summary=summary)


def harness(w: StageWalk, k: int) -> Stage:
    """``eval.harness``: lm-evaluation-harness on M_k into RUN/eval-harness/M<k>/."""
    from cream_data.stages.harness_config import HarnessConfig

    name, out = f"harness-M{k}", w.layout.harness(k)
    carried = _carried(w, k, "harness", lambda src: {"metrics": src.get("metrics")})
    if carried:
        return Stage(name, "harness", k, {}, (out,), carried=carried)
    hcfg = HarnessConfig.from_mapping(w.cfg.eval.harness, data_dir=w.cfg.eval.data_dir, label=f"M{k}")
    inputs = {"model_fp": w.model_fp(k), "data_dir": hcfg.data_dir, **w.cfg.eval.harness}

    def work(resume):
        from cream_data.stages.harness import evaluate_harness

        return evaluate_harness(w.model(k), hcfg, out, overwrite=not resume, log=w.log)

    def command():
        return stage_argv("eval", hcfg, skip=("tasks",), extra={
            "--model": w.model(k), "--out": str(out), "--harness": ",".join(hcfg.tasks)}), Launcher()

    return Stage(name, "harness", k, inputs, (out,), work, program="harness", command=command)


def _carried(w: StageWalk, k: int, kind: str, results) -> dict | None:
    """When M_k is carried forward from a model whose ``kind`` stage is done: the record that stands for M_k's
    (``results(source record)``: what of it is copied); else None."""
    source = w.manifest.carried_from(f"M{k}")
    src = w.manifest.data["stages"].get(f"{kind}-{source}") or {} if source else {}
    if src.get("status") != "done":
        return None
    return {"status": "done", "fingerprint": w.model_fp(k), "carried_from": source, **results(src)}
