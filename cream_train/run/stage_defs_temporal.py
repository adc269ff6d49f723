"""Method temporal's own stages (temporal self-rewarding, docs/REWARDS.md), as records of the walk ``w``
(cream_train/run/walk.py): the initial model's anchor samples, the temporary future model and its samples. The
pairs themselves are label stages (stage_defs.label: ``anchored-<t>`` for the future model, then ``label-<t>`` with
the pools).
"""

from __future__ import annotations

from typing import Iterator

from cream_train.run.sections import fingerprinted
from cream_train.run.stage import Stage
from cream_train.run.walk import StageWalk
from cream_train.run.stage_defs import _train, no_future, sample_stage, train_command


def anchor(w: StageWalk, t: int) -> Stage:
    """M1 (the SFT model) samples iteration t's prompts once: the past that the rejected side of the pairs is
    anchored to (iter-t/anchor/)."""
    return sample_stage(w, "anchor", t, w.stages.anchor(t, w.model(1)), w.model_fp(1), w.layout.anchor(t))


def future_train(w: StageWalk, t: int) -> Stage:
    """The temporary future model F_t, DPO from M_t on the anchored pairs (iter-t/future/model); none when there are
    no anchored pairs (the final pairs then take their chosen from M_t alone)."""
    name = f"future-train-{t}"
    inputs = {"prefs_fp": w.fps[f"anchored-{t}"], "model_fp": w.model_fp(t), "method": w.cfg.train_method,
              "seed": w.cfg.seed, **fingerprinted(w.cfg.train), "stage": "future"}
    def config():
        return w.stages.future_train(t, w.model(t))

    command = train_command(w, "train", config)
    if no_future(w, t):
        def skip(_resume):
            w.log(f"[yellow]warning:[/] iteration {t} has no anchored pairs: no future model; the chosen "
                  f"side comes from M{t}'s samples alone")
            return {"no_pairs": True}

        return Stage(name, "future-train", t, {**inputs, "no_pairs": True}, (), skip, command=command)
    return Stage(name, "future-train", t, inputs, (w.layout.future_model(t),), lambda _r: _train(config()),
                 program="train", command=command)


def future_sample(w: StageWalk, t: int) -> Iterator[Stage]:
    """The future model samples iteration t's prompts (iter-t/future/); no stage without a future model."""
    if no_future(w, t):
        return
    model = w.layout.future_model(t)
    yield sample_stage(w, "future-sample", t, w.stages.future_sample(t, str(model)), w.fps[f"future-train-{t}"],
                       w.layout.future_responses(t))
