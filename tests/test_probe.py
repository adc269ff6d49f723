"""The probe set of a `cream run` (``prompts.probe``): N prompts with a human answer held out of D_U before the split,
sampled by every M_t and scored with its iteration's roles, so the report's probe table compares the same human
answers across iterations. A tiny 2-iteration run on the tiny model; plans (nothing run) for the stage list and the
fingerprints; the config errors through the console script."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from cream_data.tables import io
from tests.support import DEMO_DATA
from tests.support.cli import refused
from tests.support.commands import rebuild
from tests.support.runs import write_tiny_run_config

N_PROBE = 4


def demo_prompts() -> list[dict]:
    return [json.loads(line) for line in (DEMO_DATA / "demo_prompts.jsonl").read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def probe_run(tmp_path_factory, tiny_model):
    """2 iterations with 4 probe prompts; label.human_answers left off (the probe scores its own human answers)."""
    from cream_train.run.loop import run

    tmp = tmp_path_factory.mktemp("probe")
    cfg = write_tiny_run_config(tmp, name="probe", model=tiny_model, prompts={"probe": N_PROBE},
                                eval={"models": "none"})
    return cfg, run(cfg, log=lambda m: None, in_process=True).run_dir


def probe_ids(run: Path) -> list[str]:
    return sorted(io.read_table(run / "prompts" / "probe", "prompts").column("prompt_id").to_pylist())


# ---------------------------------------------------------------------------- the run
def test_every_iteration_scores_the_same_human_answers_with_its_own_model(probe_run, tiny_model):
    """iter-1/probe and iter-2/probe hold the same 4 prompts and human answers; each iteration's roles are label-t's,
    its samples M_t's, and its `current` reward of a human answer log pi_t − log pi_{t-1} by a naive forward pass."""
    from cream_data.engines import models
    from tests.support.models import naive_logps

    _, run = probe_run
    probe = io.read_table(run / "prompts" / "probe", "prompts").to_pylist()
    ids = probe_ids(run)
    assert len(ids) == N_PROBE and all(p["human_answer"].strip() for p in probe)
    answer = {p["prompt_id"]: p["human_answer"] for p in probe}
    human = {t: io.read_table(run / f"iter-{t}" / "probe" / "human", "human_scores").to_pylist() for t in (1, 2)}
    for t in (1, 2):
        assert sorted({r["prompt_id"] for r in human[t]}) == ids
        assert {r["prompt_id"]: r["human_answer"] for r in human[t]} == answer
        roles = set(io.read_table(run / f"iter-{t}" / "scores", "scores").column("scorer").to_pylist())
        assert {r["scorer"] for r in human[t]} == roles == {"current", "previous"}
        responses = io.read_table(run / f"iter-{t}" / "probe" / "responses", "responses")
        assert sorted(set(responses.column("prompt_id").to_pylist())) == ids and responses.num_rows == 3 * N_PROBE
        assert set(responses.column("model").to_pylist()) == {str((run / "models" / f"M{t}").resolve())}
    assert not (run / "iter-1" / "human").exists()  # label.human_answers off: only the probe's
    # the human answers' current rewards against an independent forward pass of M_t and its parent
    path = {0: str(tiny_model), 1: str(run / "models" / "M1"), 2: str(run / "models" / "M2")}
    convs, texts = [p["prompt"] for p in probe], [p["human_answer"] for p in probe]
    logp = {}
    for k, p in path.items():
        model, tok, _ = models.load(p)
        logp[k] = naive_logps(model, tok, convs, texts, batch_size=4)
    current = {}
    for t in (1, 2):
        got = {r["prompt_id"]: r["reward"] for r in human[t] if r["scorer"] == "current"}
        current[t] = np.array([got[p["prompt_id"]] for p in probe])
        np.testing.assert_allclose(current[t], logp[t] - logp[t - 1], atol=1e-4)
    assert not np.allclose(current[1], current[2])  # M1 and M2 differ: the same answers, other rewards


def test_no_probe_prompt_is_in_a_subset_or_a_pair(probe_run):
    """The probe is the first 4 answered prompts of D_U by sha256("probe:<seed>:<id>"), set aside before the split:
    no subset, no sample of an iteration and no pair holds one; `cream sql` and `cream publish` keep them apart."""
    from cream_data.publish.hub import collect
    from cream_data.tables.sql import find_tables, view_name

    from cream_train.run.config import load_run_config

    cfg, run = probe_run
    ids = set(probe_ids(run))
    d_u = load_run_config(cfg, machine_checks=None)[2].to_pylist()  # D_U as the run read it (ids: content hashes)
    assert sum(bool(r["human_answer"]) for r in d_u) == len(demo_prompts()) == 24
    order = sorted((r["prompt_id"] for r in d_u if r["human_answer"]),
                   key=lambda i: hashlib.sha256(f"probe:0:{i}".encode()).digest())
    assert ids == set(order[:N_PROBE])
    for t in (1, 2):
        subset = io.read_table(run / "prompts" / f"subset-{t}", "prompts").column("prompt_id").to_pylist()
        assert len(subset) == 4 and not ids & set(subset)
        for kind in ("responses", "preferences"):
            assert not ids & set(io.read_table(run / f"iter-{t}" / kind, kind).column("prompt_id").to_pylist())
    views = {}
    for src in find_tables(run):
        views.setdefault(view_name(src), []).append(src.rel)
    assert views["probe_responses"] == ["iter-1/probe/responses", "iter-2/probe/responses"]
    assert {"probe_scores", "probe_human_scores", "probe_preferences"} <= set(views)
    assert sorted(views["responses"]) == ["iter-1/responses", "iter-2/responses"]
    splits, _ = collect(run)  # the published pairs are the iterations' own
    assert sum(s.table.num_rows for s in splits["preferences"]) == sum(
        io.read_table(run / f"iter-{t}" / "preferences", "preferences").num_rows for t in (1, 2))


def test_the_report_has_the_probe_table(probe_run):
    """report.json's probe entries are selfpref.human_ranks of the probe tables; report.md shows them per role and
    iteration, per-token rows included, under a title saying the human answers are the same."""
    from cream_data.reports import agreement_report
    from cream_data.rewards import selfpref
    from cream_data.stats import json_safe

    _, run = probe_run
    report = json.loads((run / "report" / "report.json").read_text())
    entries = report["probe"]
    assert [e["iteration"] for e in entries] == [1, 2] and all(e["prompts"] == probe_ids(run) for e in entries)
    for e in entries:
        folder = run / f"iter-{e['iteration']}" / "probe"
        want = selfpref.human_ranks(io.read_table(folder / "scores", "scores"),
                                    io.read_table(folder / "human", "human_scores"))
        assert e["human"] and e["human"] == json.loads(json.dumps(json_safe(want)))  # as report.json stores it
        current = next(h for h in e["human"] if h["scorer"] == "current")
        assert current["n"] == N_PROBE and current["per_token"]["n"] == N_PROBE
    # one measure by hand: the mean normalised rank of the human answer among M_t's samples, role current
    scores = io.read_table(run / "iter-2" / "probe" / "scores", "scores").to_pylist()
    human = {r["prompt_id"]: r["reward"] for r in io.read_table(run / "iter-2" / "probe" / "human",
                                                                  "human_scores").to_pylist()
             if r["scorer"] == "current"}
    norm = []
    for pid, h in human.items():
        s = [r["reward"] for r in scores if r["prompt_id"] == pid and r["scorer"] == "current"]
        norm.append((sum(x > h for x in s) + 0.5 * sum(x == h for x in s)) / len(s))
    current2 = next(h for h in entries[1]["human"] if h["scorer"] == "current")
    assert current2["mean_normalised_rank"] == pytest.approx(np.mean(norm))
    md = (run / "report" / "report.md").read_text()
    assert f"## {agreement_report.PROBE_TITLE}" in md and "the same 4 prompts" in md
    rows = agreement_report.probe_rows(entries)
    # M0, iteration 1's previous scorer, has no reference (a per-token likelihood already): no per-token row
    assert [r[:2] for r in rows] == [["1", "current"], ["2", "current"], ["1", "current per token"],
                                     ["2", "current per token"], ["1", "previous"], ["2", "previous"],
                                     ["2", "previous per token"]]
    for row in rows:
        assert "| " + " | ".join(row) + " |" in md
    assert "Self-preference: the human-written answer" not in md  # no human answers on the iterations' own prompts



def test_a_run_whose_config_turned_the_probe_off_reports_no_stale_probe(probe_run, tmp_path):
    """After `prompts.probe: 0`, the iter-t/probe folders of the earlier config stay on disk, but the report leaves
    them out; a config.yaml without the key (a run from before the setting) still shows them."""
    import shutil

    import yaml

    from cream_data.reports.run_report import run_report

    _, run = probe_run
    assert [r["iteration"] for r in run_report(run)["probe"]] == [1, 2]
    copy = shutil.copytree(run, tmp_path / "copy")
    cfg = yaml.safe_load((copy / "config.yaml").read_text())
    (copy / "config.yaml").write_text(yaml.safe_dump({**cfg, "prompts": {**cfg["prompts"], "probe": 0}}))
    assert (copy / "iter-1" / "probe").is_dir() and "probe" not in run_report(copy)
    del cfg["prompts"]["probe"]
    (copy / "config.yaml").write_text(yaml.safe_dump(cfg))
    assert [r["iteration"] for r in run_report(copy)["probe"]] == [1, 2]

def test_inspect_an_iteration_or_its_probe(probe_run, tmp_path):
    """`cream inspect RUN/iter-1` summarises the iteration's own labeling (its probe/ is another one), and
    `cream inspect RUN/iter-1/probe` the probe's, with its self-preference table."""
    from cream_data.reports.inspect import inspect_folder

    _, run = probe_run
    own = inspect_folder(run / "iter-1", tmp_path / "own").summary
    assert own["scores"]["path"] == str(run / "iter-1" / "scores") and own["agreement"]["human"] is None
    assert own["preferences"]["pairs"] == io.read_table(run / "iter-1" / "preferences", "preferences").num_rows
    probe = inspect_folder(run / "iter-1" / "probe", tmp_path / "probe").summary
    assert probe["agreement"]["human_path"] == str(run / "iter-1" / "probe" / "human")
    assert [h["scorer"] for h in probe["agreement"]["human"]] == ["current", "previous"]


def test_a_finished_probe_run_plans_as_done(probe_run):
    from cream_train.run.config import load_run_config
    from cream_train.run.plan import plan_run

    cfg, _, table = load_run_config(probe_run[0], machine_checks=None)
    stages = plan_run(cfg, table)
    assert {s.name for s in stages} >= {"probe-sample-1", "probe-1", "probe-sample-2", "probe-2"}
    assert {s.status for s in stages} == {"done"}


# ---------------------------------------------------------------------------- the stages (plans: nothing runs)
def walked(path: Path):
    """(the walk, every stage of the run config at ``path``), each decided before the next, as a plan does."""
    from cream_train.run.config import load_run_config
    from cream_train.run.manifest import Manifest
    from cream_train.run.stage_list import stage_list
    from cream_train.run.walk import StageWalk

    cfg, _, table = load_run_config(path, machine_checks=None)
    walk = StageWalk(cfg, table, Manifest.open(cfg.run_dir, writable=False), log=lambda *_: None)
    stages = []
    for stage in stage_list(walk):
        walk.decide(stage)
        stages.append(stage)
    return walk, stages


@pytest.mark.parametrize("method", ["cream", "temporal"])
def test_probe_zero_changes_no_stage_and_no_fingerprint(tmp_path, method):
    """probe: 0 is a config without the key: the same stages, inputs and commands; no input names the probe."""
    plans = {}
    for name, prompts in (("without", {}), ("zero", {"probe": 0})):
        _, stages = walked(write_tiny_run_config(tmp_path, name=name, method=method, prompts=prompts,
                                                 run_dir=tmp_path / "run"))
        plans[name] = [(s.name, s.inputs, s.fingerprint, s.argv, s.outputs) for s in stages]
    assert plans["zero"] == plans["without"]
    assert not any("probe" in json.dumps(inputs) for _, inputs, *_ in plans["zero"])


def test_a_probe_adds_two_stages_per_iteration_with_the_commands_of_the_iteration(tmp_path):
    """probe-sample-t and probe-t after label-t: M_t's sample config (same seed), label-t's scorer roles on the probe
    prompts with --human-answers and no pools (method temporal); their commands parse back into those configs."""
    from cream_train.run.stage_defs import label_config

    walk, stages = walked(write_tiny_run_config(tmp_path, method="temporal", prompts={"probe": 3},
                                                eval={"models": "none"}))
    names = [s.name for s in stages]
    assert names[names.index("label-1"):names.index("train-M2") + 1] == ["label-1", "probe-sample-1", "probe-1",
                                                                        "train-M2"]
    s = {st.name: st for st in stages}
    lay = walk.layout
    assert s["prompts"].inputs["probe"] == 3 and s["prompts"].outputs[-1] == lay.probe_prompts
    for t in (1, 2):
        sample, lab = s[f"probe-sample-{t}"], s[f"probe-{t}"]
        assert (sample.section, lab.section, sample.program, lab.program) == ("sample", "label", "sample", "label")
        assert rebuild(sample.argv) == walk.stages.sample(t, walk.model(t))
        assert sample.argv[1] == str(lay.probe_prompts) and sample.outputs == (lay.probe_responses(t),)
        assert sample.inputs["seed"] == s[f"sample-{t}"].inputs["seed"] and sample.inputs["stage"] == "probe-sample"
        assert sample.inputs["model_fp"] == s[f"sample-{t}"].inputs["model_fp"]
        lcfg = rebuild(lab.argv)
        assert lcfg == label_config(walk, t, "probe")
        assert lcfg.human_answers and lcfg.prompts == str(lay.probe_prompts) and lcfg.chosen_from == () \
            and lcfg.rejected_from == ()
        assert lcfg.scorer_roles() == label_config(walk, t).scorer_roles()
        assert lab.inputs["responses_fp"] == walk.fps[f"probe-sample-{t}"] and lab.inputs["stage"] == "probe"
        assert not {"anchor_fp", "future-sample_fp"} & set(lab.inputs)
        assert [lay.relative(p) for p in lab.outputs] == [f"iter-{t}/probe/{k}" for k in
                                                          ("scores", "human", "preferences")]
    # the iterations' own stages do not read the probe's
    assert s["train-M2"].inputs["prefs_fp"] == walk.fps["label-1"]


def test_label_human_answers_is_no_input_of_the_probe(tmp_path):
    """The probe always scores its human answers: turning label.human_answers on redoes label-t, not probe-t."""
    fps = {}
    for on in (False, True):
        _, stages = walked(write_tiny_run_config(tmp_path, name=f"h{on}", prompts={"probe": 2}, run_dir=tmp_path / "r",
                                                 label={"human_answers": on}, iterations=1, eval={"models": "none"}))
        fps[on] = {s.name: s.fingerprint for s in stages}
        # label.human_answers' scores are an output of label-1 (checked whole, linked by --reuse-from) when it is on
        label = next(s for s in stages if s.name == "label-1")
        assert [p.name for p in label.outputs] == ["scores", *(["human"] if on else []), "preferences"]
    assert fps[True]["label-1"] != fps[False]["label-1"]
    assert all(fps[True][n] == fps[False][n] for n in ("prompts", "train-M1", "probe-sample-1", "probe-1"))



def test_label_human_answers_scores_are_reused_with_the_stage(tmp_path, tiny_model):
    """With label.human_answers on, label-t's human/ is one of its outputs: a run reusing the stage links it too (before,
    the reusing run had the pairs but not the human answers' scores, and its report lost the self-preference table)."""
    from cream_train.run.loop import run

    settings = dict(model=tiny_model, iterations=1, label={"human_answers": True}, eval={"models": "none"})
    donor = run(write_tiny_run_config(tmp_path, name="donor", **settings), log=lambda m: None, in_process=True)
    again = run(write_tiny_run_config(tmp_path, name="again", **settings), log=lambda m: None, in_process=True,
                reuse_from=[donor.run_dir])
    assert not again.ran and "label-1" in again.reused
    parts = sorted((donor.run_dir / "iter-1" / "human").rglob("*.parquet"))
    assert parts and io.read_table(donor.run_dir / "iter-1" / "human", "human_scores").num_rows > 0
    for part in parts:
        linked = again.run_dir / part.relative_to(donor.run_dir)
        assert linked.stat().st_ino == part.stat().st_ino


# ---------------------------------------------------------------------------- user errors
def few_answers(tmp_path: Path) -> Path:
    """8 prompts, 2 of them with a human answer (a `response`)."""
    rows = [{"id": f"q{i}", "prompt": f"What is {i} + {i}?", "answer": str(2 * i),
             **({"response": f"{i} + {i} = {2 * i}."} if i < 2 else {})} for i in range(8)]
    path = tmp_path / "few.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("probe, source, needles", [
    (3, "few", ["prompts.probe: 3 probe prompts need 3 prompts with a human_answer", "has 2 (of 8 prompts)"]),
    (22, None, ["need 8 prompts beside the 22 of prompts.probe", "has 24"]),
    (-1, None, ["prompts.probe: got -1, expected >= 0"]),
    ("four", None, ["prompts.probe: got 'four' (str)"]),
    (True, None, ["prompts.probe: got True (bool)"]),
])
def test_probe_config_errors_are_one_line_and_write_nothing(tmp_path, cream_exe, probe, source, needles):
    prompts = {"probe": probe, **({"source": few_answers(tmp_path), "per_iteration": 2} if source else {})}
    cfg = write_tiny_run_config(tmp_path, prompts=prompts, eval={"models": "none"})
    refused(cream_exe, tmp_path, "run", cfg, needles=needles)
    assert not (tmp_path / "run").exists()


def test_the_probe_setting_is_documented():
    from tests.support import REPO

    for doc in ("docs/CONFIG.md", "docs/REWARDS.md"):
        assert "prompts.probe" in (REPO / doc).read_text() or "probe: N" in (REPO / doc).read_text()
    assert "Compare iterations only on the same" not in (REPO / "docs" / "REWARDS.md").read_text()
