"""The probe's stages (``prompts.probe: N`` of a run config), as records of the walk ``w`` (cream_train/run/walk.py):
per iteration t, M_t samples the probe prompts (RUN/prompts/probe/, held out of D_U before the split) with the
iteration's sample settings and seed, and the same scorer roles as label-t score those samples and the prompts'
human-written answers (RUN/iter-t/probe/: responses/, scores/, human/, and preferences/ that nothing reads). The run
report's probe table then compares the *same* human answers across iterations (docs/REWARDS.md). A run without a
probe has none of these stages.
"""

from __future__ import annotations

from typing import Iterator

from cream_data.vocab import PROBE_FOLDER
from cream_train.run.stage import Stage
from cream_train.run.stage_defs import label, sample_stage
from cream_train.run.walk import StageWalk


def probe_sample(w: StageWalk, t: int) -> Stage:
    """M_t samples the probe prompts as it samples iteration t's (``probe-sample-<t>``: same settings, same seed)."""
    return sample_stage(w, "probe-sample", t, w.stages.sample(t, w.model(t)), w.model_fp(t),
                        w.layout.probe_responses(t), prompts_in=w.layout.probe_prompts)


def probe(w: StageWalk, t: int) -> Iterator[Stage]:
    """Iteration t's probe stages, ``probe-sample-<t>`` then ``probe-<t>`` (its labeling); none without a probe."""
    if not w.cfg.prompts.probe:
        return
    yield probe_sample(w, t)
    yield label(w, t, PROBE_FOLDER)
