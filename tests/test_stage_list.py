"""The stages of a `cream run` as data (cream_train/run/stage_list.py): the order of the walk, where every stage
writes (the run's layout), method temporal's own stages, each model stage's command line parsed back through the
real `cream` app, the one section map against the launch sections, and a pair-less iteration carrying its model
forward. Walked as a plan walks them: nothing runs, nothing is written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.commands import rebuild
from tests.support.runs import write_tiny_run_config
from tests.support.tables import prefs_table


def walked(path: Path):
    """(the walk, every stage of the run config at ``path``, in order): each stage decided before the next is made,
    as the executors do; a carried evaluation is listed but not decided (it has no inputs of its own)."""
    from cream_train.run.config import load_run_config
    from cream_train.run.manifest import Manifest
    from cream_train.run.stage_list import stage_list
    from cream_train.run.walk import StageWalk

    cfg, _, table = load_run_config(path, machine_checks=None)
    walk = StageWalk(cfg, table, Manifest.open(cfg.run_dir, writable=False), log=lambda *_: None)
    stages = []
    for stage in stage_list(walk):
        if stage.carried is None:
            walk.decide(stage)
        stages.append(stage)
    return walk, stages


def by_name(stages) -> dict:
    return {s.name: s for s in stages}


def test_the_list_of_a_two_iteration_run_follows_the_walk(tmp_path):
    walk, stages = walked(write_tiny_run_config(tmp_path, iterations=2))
    assert [s.name for s in stages] == ["prompts", "eval-M0", "sft-data", "train-M1", "eval-M1",
                                        "sample-1", "label-1", "train-M2", "eval-M2",
                                        "sample-2", "label-2", "train-M3", "eval-M3"]
    assert [(s.kind, s.k, s.section) for s in stages] == [
        ("prompts", None, None), ("eval", 0, None), ("sft-data", None, None), ("sft", 1, "sft"), ("eval", 1, None),
        ("sample", 1, "sample"), ("label", 1, "label"), ("train", 2, "train"), ("eval", 2, None),
        ("sample", 2, "sample"), ("label", 2, "label"), ("train", 3, "train"), ("eval", 3, None)]
    s = by_name(stages)
    # the run's own stages read the configured sources: no command; every other one has its `cream` command
    assert [n for n, st in s.items() if st.program is None] == ["prompts", "sft-data"]
    assert {st.program for st in stages if st.program} == {"train", "sample", "label", "eval"}
    # fingerprints chain: each stage reads the (chained) fingerprints of the stages before it
    assert s["label-2"].inputs["responses_fp"] == walk.fps["sample-2"] == s["sample-2"].fingerprint
    assert s["sample-2"].inputs["model_fp"] == walk.fps["train-M2"] and s["train-M3"].inputs["prefs_fp"] == \
        walk.fps["label-2"]
    assert len({st.fingerprint for st in stages}) == len(stages)
    assert s["train-M2"].extra == {"pairs": 0}  # no pairs yet: a plan assumes some (the record counts them)


def test_every_output_lies_in_the_run_layout(tmp_path):
    from cream_train.run.layout import RunLayout

    walk, stages = walked(write_tiny_run_config(tmp_path, method="temporal", iterations=2))
    run = RunLayout(tmp_path / "run")
    assert walk.layout == run
    for stage in stages:
        assert stage.outputs, stage.name
        for path in (*stage.outputs, *stage.caches):
            assert path.is_relative_to(run.root) and path != run.root, (stage.name, path)
    s = by_name(stages)
    rel = {name: [run.relative(p) for p in s[name].outputs] for name in s}
    assert rel["prompts"] == ["prompts/subset-1", "prompts/subset-2"] and rel["sft-data"] == ["sft"]
    assert rel["train-M1"] == ["models/M1"] and rel["train-M3"] == ["models/M3"]
    assert rel["sample-2"] == ["iter-2/responses"] and rel["anchor-2"] == ["iter-2/anchor/responses"]
    assert rel["anchored-1"] == ["iter-1/anchored/scores", "iter-1/anchored/preferences"]
    assert rel["label-2"] == ["iter-2/scores", "iter-2/preferences"]
    assert rel["future-train-1"] == ["iter-1/future/model"] and rel["future-sample-1"] == ["iter-1/future/responses"]
    assert rel["eval-M2"] == ["eval/M2"]
    assert [run.relative(p) for p in s["anchored-2"].caches] == ["iter-2/anchored/logps", "iter-2/anchored/rm"]
    # the table a sharded stage's processes write together: the responses, or the preferences
    assert s["label-1"].shards_into == run.preferences(1) and s["sample-1"].shards_into == run.responses(1)
    assert s["train-M2"].shards_into is None and s["eval-M1"].shards_into is None


def test_a_temporal_iteration_has_anchor_anchored_and_future_stages(tmp_path):
    walk, stages = walked(write_tiny_run_config(tmp_path, method="temporal", iterations=2, eval={"models": "none"}))
    assert [s.name for s in stages] == [
        "prompts", "sft-data", "train-M1",
        "sample-1", "anchor-1", "anchored-1", "future-train-1", "future-sample-1", "label-1", "train-M2",
        "sample-2", "anchor-2", "anchored-2", "future-train-2", "future-sample-2", "label-2", "train-M3"]
    s = by_name(stages)
    assert [s[f"{k}-1"].section for k in ("anchor", "anchored", "future-train", "future-sample")] == \
        ["sample", "label", "train", "sample"]
    # the anchor is M1's, drawn with its own seed; the future model samples with another
    assert s["anchor-2"].inputs["model_fp"] == walk.fps["train-M1"] and s["anchor-2"].inputs["stage"] == "anchor"
    assert len({s[f"{k}-2"].inputs["seed"] for k in ("sample", "anchor", "future-sample")}) == 3
    assert s["future-sample-1"].inputs["model_fp"] == walk.fps["future-train-1"]
    assert s["future-train-1"].inputs["prefs_fp"] == walk.fps["anchored-1"] and s["future-train-1"].inputs["stage"] \
        == "future"
    # the final pairs read the anchor and the future samples; the anchored ones only the anchor
    assert {"anchor_fp", "future-sample_fp"} <= set(s["label-1"].inputs)
    assert "anchor_fp" in s["anchored-1"].inputs and "future-sample_fp" not in s["anchored-1"].inputs


def test_every_model_stage_command_parses_back_into_the_config_the_loop_builds(tmp_path):
    from cream_train.run.stage_defs import label_config

    walk, stages = walked(write_tiny_run_config(tmp_path, method="temporal", iterations=2))
    st, m = walk.stages, walk.model
    for stage in stages:
        if stage.argv is None:
            assert stage.kind in ("prompts", "sft-data")
            continue
        t = stage.k
        expected = {
            "sft": lambda: st.sft(m(0)), "train": lambda: st.train(t - 1, m(t - 1)),
            "sample": lambda: st.sample(t, m(t)), "anchor": lambda: st.anchor(t, m(1)),
            "future-sample": lambda: st.future_sample(t, str(walk.layout.future_model(t))),
            "future-train": lambda: st.future_train(t, m(t)), "eval": lambda: st.eval(t),
            "label": lambda: label_config(walk, t), "anchored": lambda: label_config(walk, t, "anchored"),
        }[stage.kind]()
        assert rebuild(stage.argv) == expected, stage.name
        argv = stage.argv
        if "--out" in argv:  # where the command writes: the stage's outputs (a label stage: their folder)
            out = Path(argv[argv.index("--out") + 1])
            assert out in (stage.outputs[0], stage.outputs[0].parent), stage.name
        else:
            assert Path(expected.out) == stage.outputs[0], stage.name


def test_the_section_map_agrees_with_the_launch_sections(tmp_path):
    from cream_train.run.launch import Launcher
    from cream_train.run.sections import LAUNCH
    from cream_train.run.stage import SECTIONS

    assert set(SECTIONS.values()) == set(LAUNCH)
    walk, stages = walked(write_tiny_run_config(tmp_path, method="temporal", iterations=1,
                                                sample={"data_parallel": 2, "gpus_per_process": 0},
                                                label={"data_parallel": 3, "gpus_per_process": 0},
                                                train={"launcher": "accelerate", "num_processes": 2}))
    for stage in stages:
        if stage.program in ("sample", "label", "train"):
            assert stage.section in LAUNCH, stage.name
            assert stage.argv[0] == ("train" if stage.section in ("sft", "train") else stage.section), stage.name
        else:
            assert stage.section is None and stage.launcher == Launcher(), stage.name
    s = by_name(stages)
    assert s["sample-1"].launcher.data_parallel == s["anchor-1"].launcher.data_parallel == 2
    assert s["label-1"].launcher.data_parallel == s["anchored-1"].launcher.data_parallel == 3
    assert s["train-M2"].launcher.launcher == s["future-train-1"].launcher.launcher == "accelerate"
    assert s["train-M1"].launcher.launcher == "none"  # the sft section's own launch keys, not train's


def test_a_pairless_iteration_carries_its_model_and_its_evaluation_forward(tmp_path):
    """Iteration 1 formed no pairs (its preferences are an empty table): M2 is M1 carried forward, the stages after it
    read M1 where they read M2, M2's evaluation is M1's, and a read-only manifest records it in memory only."""
    from cream_data.tables import io

    path = write_tiny_run_config(tmp_path, iterations=2)
    run = tmp_path / "run"
    io.write_table(prefs_table(0), run / "iter-1" / "preferences", "preferences")
    manifest = {"stages": {"eval-M1": {"status": "done", "fingerprint": "f", "accuracy": {"arc_easy": 0.5},
                                       "average": 0.5}}, "models": {}}
    (run / "manifest.json").write_text(json.dumps(manifest))
    walk, stages = walked(path)
    s = by_name(stages)
    m1 = str(run / "models" / "M1")
    assert s["train-M2"].inputs["no_pairs"] and s["train-M2"].outputs == () and s["train-M2"].program is None
    assert s["train-M2"].argv[:2] == ["train", str(run / "iter-1" / "preferences")]  # the training it stands in for
    assert walk.model(2) == m1 and walk.parent(2) == 0 and walk.models()["M2"] == m1
    assert s["sample-2"].argv[s["sample-2"].argv.index("--model") + 1] == m1
    assert s["label-2"].inputs["model_fp"] == walk.fps["train-M2"]
    assert s["label-2"].inputs["ref_fp"] == s["train-M1"].inputs["model_fp"]  # M0: M2's parent is M1's
    assert s["eval-M2"].carried == {"status": "done", "fingerprint": walk.fps["train-M2"], "carried_from": "M1",
                                    "accuracy": {"arc_easy": 0.5}, "average": 0.5}
    assert s["eval-M2"].inputs == {} and s["eval-M3"].carried is None  # M3 is trained again from M2 = M1
    assert walk.manifest.data["carried"] == {"M2": "M1"} and walk.manifest.data["models"] == {"M2": m1}
    assert json.loads((run / "manifest.json").read_text()) == manifest  # read-only: nothing written


def test_the_layout_spells_each_path_once(tmp_path):
    from cream_train.run.layout import RunLayout

    run = RunLayout(tmp_path)
    assert run.iteration(3) == tmp_path / "iter-3" and run.labels(3) == run.iteration(3)
    assert run.preferences(3, "anchored") == tmp_path / "iter-3" / "anchored" / "preferences"
    assert run.heartbeat(2) == tmp_path / ".machines" / "2.alive"
    assert (run.manifest, run.config, run.logs) == (tmp_path / "manifest.json", tmp_path / "config.yaml",
                                                   tmp_path / "logs")
    assert run.relative(run.harness(4)) == "eval-harness/M4"
    with pytest.raises(ValueError):
        run.relative(tmp_path.parent / "elsewhere")
