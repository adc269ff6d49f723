"""The stages every method has, as :class:`cream_train.run.stage.Stage` records made by small functions of the walk
``w`` (cream_train/run/walk.py): the prompt split, the SFT data and M1, then per iteration t M_t's samples, their
labels and M_{t+1}. Each one's ``inputs`` are its fingerprint's: its settings, data, seeds and the chained
fingerprints of what it reads (``w.fps``), so a change anywhere upstream redoes it. The sampling and labeling stages
here also make the other draws of an iteration: method temporal's (stage_defs_temporal.py) and the probe's
(stage_defs_probe.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from cream_data.tables import io
from cream_data.vocab import PROBE_FOLDER
from cream_train.run.launch import stage_argv
from cream_train.run.manifest import table_problem
from cream_train.run.sections import fingerprinted
from cream_train.run.stage import Stage
from cream_train.run.walk import StageWalk


def prompts(w: StageWalk) -> Stage:
    """D_U split into T disjoint subsets, one per iteration (the run's own stage: it reads the configured source);
    with ``prompts.probe`` N > 0, N prompts with a human answer set aside first, as their own table
    (cream_data/inputs/probe.py)."""
    from cream_data.tables.fingerprint import table_fingerprint

    cfg, probe = w.cfg, w.cfg.prompts.probe
    outs = tuple(w.layout.prompts_subset(t) for t in range(1, cfg.iterations + 1))
    inputs = {"table_fp": table_fingerprint(w.table), "T": cfg.iterations, "seed": cfg.seed,
              "per_iteration": cfg.prompts.per_iteration, **({"probe": probe} if probe else {})}

    def work(_resume):
        from cream_data.inputs.probe import set_aside_probe
        from cream_data.inputs.prompts import split_prompts

        held, rest = set_aside_probe(w.table, probe, seed=cfg.seed)  # no probe: rest is D_U
        subsets = split_prompts(rest, cfg.iterations, seed=cfg.seed)
        for out, sub in zip(outs, subsets):
            if cfg.prompts.per_iteration:
                sub = sub.slice(0, cfg.prompts.per_iteration)
            io.write_table(sub, out, "prompts")
        if probe:
            io.write_table(held, w.layout.probe_prompts, "prompts")
        return {"rows": [s.num_rows if not cfg.prompts.per_iteration else min(s.num_rows, cfg.prompts.per_iteration)
                         for s in subsets], **({"probe": held.num_rows} if probe else {})}

    return Stage("prompts", "prompts", None, inputs, outs + ((w.layout.probe_prompts,) if probe else ()), work)


def sft(w: StageWalk) -> Iterator[Stage]:
    """The SFT conversations (the run's own stage), then M1 = SFT(M0) on them."""
    from cream_data.inputs.prompts import load_sft
    from cream_data.tables.fingerprint import table_fingerprint

    s = w.cfg.sft
    table = load_sft(s.data, layout=s.layout, limit=s.limit)
    tcfg = w.stages.sft(w.model(0))
    data_out = w.layout.sft_data
    yield Stage("sft-data", "sft-data", None, {"table_fp": table_fingerprint(table)}, (data_out,),
                lambda _r: (io.write_table(table, data_out, "sft"), {"rows": table.num_rows})[1])
    inputs = {"data_fp": w.fps["sft-data"], "model_fp": w.model_fp(0), "seed": w.cfg.seed, **fingerprinted(s)}
    yield Stage("train-M1", "sft", 1, inputs, (w.layout.model(1),), lambda _r: _train(tcfg, w.progress),
                program="train", command=train_command(w, "sft", lambda: tcfg))


def sample(w: StageWalk, t: int) -> Stage:
    """M_t samples iteration t's prompts."""
    return sample_stage(w, "sample", t, w.stages.sample(t, w.model(t)), w.model_fp(t), w.layout.responses(t))


def sample_stage(w: StageWalk, kind: str, t: int, scfg, model_fp: str, out: Path,
                 prompts_in: Path | None = None) -> Stage:
    """A sampling stage of iteration t (``kind`` sample, or method temporal's anchor and future-sample: other draws
    than M_t's; probe-sample: M_t's draws of the probe prompts) with the sample config ``scfg`` of the model whose
    fingerprint is ``model_fp``, of ``prompts_in`` (default: iteration t's prompts) into ``out``."""
    prompts_in = prompts_in or w.layout.prompts_subset(t)
    inputs = {"prompts_fp": w.fps["prompts"], "model_fp": model_fp, **fingerprinted(w.cfg.sample), "seed": scfg.seed}
    if kind != "sample":
        inputs["stage"] = kind

    def work(resume):
        from cream_data.stages.sample import sample as run_sample

        return run_sample(prompts_in, scfg, out, overwrite=not resume, progress=w.progress)

    def command():
        return (stage_argv("sample", scfg, positional=[str(prompts_in)], extra={"--out": str(out)}),
                w.stages.launcher("sample", scfg))

    return Stage(f"{kind}-{t}", kind, t, inputs, (out,), work, program="sample", command=command)


def label(w: StageWalk, t: int, kind: str = "label") -> Stage:
    """Score iteration t's responses and pair them (``kind`` anchored: method temporal's pairs for the future
    model, in iter-t/anchored/; ``kind`` probe: M_t's samples of the probe prompts and their human answers, in
    iter-t/probe/, by the same scorer roles, a diagnostic whose pairs nothing reads)."""
    from cream_data.rewards.judge import judge_template_hash
    from cream_data.stages.label_scorers import judge_template_text

    lab = w.cfg.label
    out = w.layout.labels(t, kind)
    # every method also scores with M_{t-1} (and M_{t-2}) so consistency is reported for all of them;
    # M_{t-1} is M_t's parent: after a pair-less iteration, the model M_t was carried from is skipped
    ref = w.parent(t)
    prev_ref = w.parent(ref)
    lcfg = label_config(w, t, kind)
    probe = kind == PROBE_FOLDER
    # the probe scores its human answers whatever label.human_answers says: that setting is none of its inputs
    label_settings = {k: v for k, v in fingerprinted(lab).items() if not (probe and k == "human_answers")}
    inputs = {"responses_fp": w.fps[f"probe-sample-{t}" if probe else f"sample-{t}"], "model_fp": w.model_fp(t),
              **{f"{p}_fp": w.fps[f"{p}-{t}"] for p in ("anchor", "future-sample") if f"{p}-{t}" in w.fps
                 and (p == "anchor" or lcfg.chosen_from) and not probe},
              "ref_fp": w.model_fp(ref), "prev_ref_fp": w.model_fp(prev_ref) if prev_ref is not None else None,
              "reward": w.cfg.reward, **label_settings, **w.cfg.label_pairing(),
              "judge_template_fp": judge_template_hash(judge_template_text(lcfg)) if lab.judge_template else None}
    if lab.reward_model:  # its content is an input too: a reward model retrained in place redoes the stage
        from cream_data.engines.models import content_id

        inputs["reward_model_id"] = content_id(lab.reward_model)
    if probe:
        inputs["stage"] = kind
    responses = w.layout.probe_responses(t) if probe else w.layout.responses(t)
    # the human answers' scores (the probe's, or label.human_answers'): an output, checked whole and linked by
    # --reuse-from like the scores and pairs
    outputs = (w.layout.scores(t, kind), *((w.layout.human(t, kind),) if lcfg.human_answers else ()),
               w.layout.preferences(t, kind))

    def work(_resume):
        from cream_data.stages.label import label as run_label

        return run_label(responses, lcfg, out, log=w.log, progress=w.progress)

    def command():
        return (stage_argv("label", lcfg, positional=[str(responses)], extra={"--out": str(out)}),
                w.stages.launcher("label", lcfg))

    return Stage(f"{kind}-{t}", kind, t, inputs, outputs, work, program="label", command=command,
                 caches=w.layout.label_caches(t, kind))


def label_config(w: StageWalk, t: int, kind: str = "label"):
    """M_t labels; its parent is the reference and the previous scorer, the parent's parent their reference
    (after a pair-less iteration, the model M_t was carried from is skipped). Method temporal pools M1's samples
    as rejectable, and for the final pairs (``kind`` label) the future model's as choosable; the probe (``kind``
    probe) labels its own samples, with the probe prompts' human answers."""
    ref = w.parent(t)
    prev_ref = w.parent(ref)
    which = {}  # the responses it labels beside M_t's samples of iteration t's prompts
    if kind == PROBE_FOLDER:
        which["probe"] = True
    elif w.cfg.method == "temporal":
        which["rejected_from"] = (str(w.layout.anchor(t)),)
        if kind == "label" and not no_future(w, t):
            which["chosen_from"] = (str(w.layout.future_responses(t)),)
    return w.stages.label(t, w.model(t), w.model(ref), w.model(prev_ref) if prev_ref is not None else None, **which)


def no_future(w: StageWalk, t: int) -> bool:
    """Method temporal: whether iteration t's anchored pairs are known to be none, so there is no future model (a
    plan, before they exist or while they are damaged, assumes some)."""
    prefs = w.layout.preferences(t, "anchored")
    return table_problem(prefs) is None and io.read_manifest(prefs).get("rows") == 0


def train(w: StageWalk, t: int) -> Iterator[Stage]:
    """M_{t+1} trained from M_t on iteration t's pairs; an iteration without pairs carries M_t forward instead (and
    the manifest says so once the stage is decided: the stages after it read M_t where they read M_{t+1})."""
    name, model, source = f"train-M{t + 1}", f"M{t + 1}", f"M{t}"
    prefs = w.layout.preferences(t)
    inputs = {"prefs_fp": w.fps[f"label-{t}"], "model_fp": w.model_fp(t), "method": w.cfg.train_method,
              "seed": w.cfg.seed, **fingerprinted(w.cfg.train)}
    manifest = io.read_manifest(prefs) if not table_problem(prefs) else {}  # none (yet, or damaged): `--plan`
    command = train_command(w, "train", lambda: w.stages.train(t, w.model(t)))
    if manifest.get("rows") == 0:
        # Nothing to learn from (e.g. a judge whose scores never parse): M_{t+1} = M_t, said loudly.
        skipped = {k: v for k, v in (manifest.get("summary", {}).get("skipped") or {}).items() if v}

        def carry(_resume):
            w.log(f"[yellow]warning:[/] iteration {t} produced no preference pairs (skipped: {skipped}); "
                  f"{model} = {source} (carried: same weights, same reference M{w.parent(t)}). More prompts, "
                  "a larger sample.n or longer judge outputs may help")
            return {"no_pairs": True, "skipped": skipped, "carried_from": source}

        yield Stage(name, "train", t + 1, {**inputs, "no_pairs": True}, (), carry, command=command)
        w.manifest.carry(model, source, w.model(t))
        return
    w.manifest.uncarry(model)
    yield Stage(name, "train", t + 1, inputs, (w.layout.model(t + 1),),
                lambda _r: _train(w.stages.train(t, w.model(t)), w.progress), program="train", command=command,
                extra={"pairs": manifest.get("rows", 0)})


def train_command(w: StageWalk, section: str, make_config):
    """A training stage's command line maker: `cream train DATA --stage …` with the config ``make_config()`` (made
    when the line is asked for), started as the ``section``'s launch keys say."""
    def command():
        tcfg = make_config()
        return (stage_argv("train", tcfg, positional=[tcfg.data], skip=("data",), extra={"--stage": tcfg.stage}),
                w.stages.launcher(section))

    return command


def _train(tcfg, progress=None):
    from cream_train.train import train as run_train

    return run_train(tcfg, progress=progress)
