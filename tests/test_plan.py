"""`cream run CONFIG --plan`: every stage with its status and the exact command line that does its work; nothing run,
nothing written. The command lines are parsed back through the real `cream` app into configs equal to the ones the
loop builds (``rebuild``, in tests/support/commands.py); the statuses after a real run are checked in
tests/test_loop.py."""

from __future__ import annotations

import sys

from tests.support.commands import absolute, parse_plan, rebuild
from tests.support.runs import write_tiny_run_config


def test_plan_before_a_run_writes_nothing_and_its_commands_build_the_loops_configs(tmp_path, tiny_model, shared_data,
                                                                                   cream_exe):
    from cream_train.run.config import load_run_config
    from cream_train.run.manifest import Manifest
    from cream_train.run.walk import StageWalk

    cfg_path = write_tiny_run_config(tmp_path, name="planned", model=tiny_model, eval={"data_dir": shared_data})
    r = cream_exe("run", cfg_path, "--plan")
    assert r.code == 0, r
    assert not (tmp_path / "planned").exists(), "a plan wrote the run directory"
    plan = parse_plan(r.out)
    want = ["prompts", "eval-M0", "sft-data", "train-M1", "eval-M1", "sample-1", "label-1", "train-M2", "eval-M2",
            "sample-2", "label-2", "train-M3", "eval-M3"]
    assert list(plan) == want and {s for s, _ in plan.values()} == {"to run"}
    assert plan["prompts"][1] == [] and plan["sft-data"][1] == []  # the run's own reading of its sources
    assert all(len(cmds) == 1 for name, (_, cmds) in plan.items() if name not in ("prompts", "sft-data"))

    cfg, _, table = load_run_config(cfg_path)
    loop = StageWalk(cfg, table, Manifest.open(cfg.run_dir, writable=False))  # a fresh run: no model carried
    m = loop.model
    expected = {
        "train-M1": loop.stages.sft(m(0)), "train-M2": loop.stages.train(1, m(1)), "train-M3": loop.stages.train(2, m(2)),
        "sample-1": loop.stages.sample(1, m(1)), "sample-2": loop.stages.sample(2, m(2)),
        "label-1": loop.stages.label(1, m(1), m(0)), "label-2": loop.stages.label(2, m(2), m(1), m(0)),
        "eval-M0": loop.stages.eval(0), "eval-M3": loop.stages.eval(3),
    }
    for name, config in expected.items():
        # the plan writes paths beside the current folder relative to it (../shared/data): as a shell there reads them
        assert rebuild(absolute(plan[name][1][0])) == config, name
    # where each command reads and writes: the run's own folders
    assert absolute(plan["sample-2"][1][0][:4]) == ["sample", str(tmp_path / "planned" / "prompts" / "subset-2"),
                                                    "--out", str(tmp_path / "planned" / "iter-2" / "responses")]
    eval_m2 = absolute(plan["eval-M2"][1][0])
    assert eval_m2[eval_m2.index("--model") + 1] == str(tmp_path / "planned" / "models" / "M2")


def test_plan_imports_no_torch(tmp_path, tiny_model, shared_data):
    """The parent of the stage processes never imports torch: planning (the parent's whole job) included."""
    import subprocess

    cfg_path = write_tiny_run_config(tmp_path, name="planned", model=tiny_model, eval={"data_dir": shared_data})
    code = ("import sys\nfrom cream_train.run.config import load_run_config\nfrom cream_train.run.plan import plan_run\n"
            f"cfg, _, t = load_run_config({str(cfg_path)!r})\nplan_run(cfg, t)\n"
            "heavy = [m for m in ('torch', 'transformers', 'trl') if m in sys.modules]\nassert not heavy, heavy\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]


def test_the_readme_shows_the_demos_plan(monkeypatch):
    """README's Scale section holds `cream run examples/demo.yaml --plan` as a fresh clone prints it."""
    import dataclasses

    from cream_train.run.plan import plan_run, to_text
    from cream_train.run.config import load_run_config
    from tests.support import REPO

    monkeypatch.chdir(REPO)
    cfg, _, table = load_run_config(REPO / "examples" / "demo.yaml")
    fresh = REPO / "runs" / "demo-never-run"  # a run directory that does not exist: every stage "to run"
    text = to_text(plan_run(dataclasses.replace(cfg, run_dir=str(fresh)), table)).replace("runs/demo-never-run",
                                                                                          "runs/demo")
    assert not fresh.exists()
    readme = (REPO / "README.md").read_text()
    block = readme.split("The demo's (`cream run examples/demo.yaml --plan`", 1)[1].split("```\n", 2)[1]
    assert block.rstrip("\n") == text
