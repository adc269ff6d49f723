"""The order of a `cream run`'s stages: :func:`stage_list`, the one place that says which stages a run has and in
which order.

    prompts, [eval-M0], sft-data, train-M1, [eval-M1],
    per iteration t:  sample-t, [anchor-t, anchored-t, future-train-t, future-sample-t], label-t,
                      [probe-sample-t, probe-t], train-M<t+1>, [eval-M<t+1>, harness-M<t+1>]

(the bracketed ones by method temporal, by ``prompts.probe`` and by ``eval.models``/``eval.harness``). Each stage is
made by a small function of cream_train/run/stage_defs.py (the ones every method has), stage_defs_temporal.py,
stage_defs_probe.py and stage_defs_eval.py, from the :class:`cream_train.run.walk.StageWalk` it is given.
"""

from __future__ import annotations

from typing import Iterator

from cream_train.run.stage import Stage
from cream_train.run.stage_defs import label, prompts, sample, sft, train
from cream_train.run.stage_defs_eval import evaluations
from cream_train.run.stage_defs_probe import probe
from cream_train.run.stage_defs_temporal import anchor, future_sample, future_train
from cream_train.run.walk import StageWalk


def stage_list(w: StageWalk) -> Iterator[Stage]:
    """Every stage of the walk ``w``'s run, in order. A generator: each stage is made once the executor has decided
    the ones before it (:meth:`StageWalk.decide`), since it reads their chained fingerprints and what they left
    (a pair-less iteration's carried model, a temporal iteration without a future model)."""
    yield prompts(w)
    yield from evaluations(w, 0)
    yield from sft(w)
    yield from evaluations(w, 1)
    for t in range(1, w.cfg.iterations + 1):
        yield sample(w, t)
        if w.cfg.method == "temporal":  # past-anchored pairs, a future model, its samples (docs/REWARDS.md)
            yield anchor(w, t)
            yield label(w, t, "anchored")
            yield future_train(w, t)
            yield from future_sample(w, t)
        yield label(w, t)
        yield from probe(w, t)  # M_t on the held-out probe prompts (a diagnostic: nothing downstream reads it)
        yield from train(w, t)
        yield from evaluations(w, t + 1)
