"""The CPU study: examples/study/ (study.yaml, run.sh, variant.py, README.md).

What is checked: study.yaml writes every setting of every section (a setting added to cream later fails here until
it is pinned), with the study's design (the paper's dataset-mean C, log-likelihood multiple-choice evaluation of at
least 250 questions a task, GSM8K by generated answer, every model evaluated); every run that run.sh starts is a
config `cream run --check`'s loader accepts and the runs differ in method, seed and run directory only; run.sh
(under a fake `cream` that prints its arguments) runs every method x seed with the --reuse-from chain and ends with
one `cream inspect` over every run; STUDY_QUICK and STUDY_DATA change exactly the settings they name; a missing data
folder is one line; and `run.sh --plan` with the real `cream` prints every run's stages and writes nothing.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import subprocess
from pathlib import Path
from typing import get_type_hints

import pytest

from tests.support import REPO
from tests.support.scripts import bash, cream_calls, load, run_calls, run_script, write_fake_cream

STUDY = REPO / "examples" / "study"
CONFIG = STUDY / "study.yaml"
METHODS = ["cream", "cream-prompt", "cream-no-rc", "srlm"]  # CREAM, with per-prompt C, w/o RC (its ablation), SRLM
SEEDS = [0, 1, 2]
MC_TASKS = ["arc_easy", "arc_challenge", "openbookqa", "siqa"]
# run.sh's reduced variant (STUDY_QUICK=1): key -> value, what its QUICK_SETTINGS say
QUICK = {"sft.limit": 16, "sft.max_length": 256, "prompts.sources.*.limit": 4, "sample.max_new_tokens": 48,
         "label.judge_max_new_tokens": 32, "eval.harness.limit": 50, "eval.limit": 10, "eval.max_new_tokens": 48}


@pytest.fixture(scope="module")
def fake_cream(tmp_path_factory) -> Path:
    """A `cream` that prints its arguments: run.sh's every call, in order, without running anything."""
    return write_fake_cream(tmp_path_factory.mktemp("fake"))


def run_sh(fake: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    import sys

    return run_script(STUDY / "run.sh", fake, {"PYTHON": sys.executable, **env}, *args, cwd=REPO)


def calls(fake: Path, env: dict, *args: str) -> list[list[str]]:
    """The `cream …` calls run.sh makes under the fake cream, each as its argument list (after `cream`)."""
    return cream_calls(run_sh(fake, env, *args))


def get(raw: dict, key: str):
    for part in key.split("."):
        raw = raw[part]
    return raw


# ------------------------------------------------------------------------------------------- study.yaml
def test_study_yaml_writes_every_setting_of_every_section():
    """Every key of RunConfig and of each of its sections (the user settings of each section's class, as
    cream_train/run/config.py builds the config), and every setting of eval.harness but the two the run fills, is
    written; nothing else is. A setting added to cream fails this test until study.yaml pins its value."""
    from cream_data.settings import user_fields
    from cream_data.stages.harness_config import RUN_OWNED, HarnessConfig
    from cream_train.run.config import RunConfig

    raw, hints = load(CONFIG), get_type_hints(RunConfig)
    assert list(raw) == [f.name for f in dataclasses.fields(RunConfig)]  # the order of `cream run --check`'s print
    sections = [f.name for f in dataclasses.fields(RunConfig) if dataclasses.is_dataclass(hints[f.name])]
    assert sections == ["sft", "prompts", "sample", "label", "train", "eval", "nodes", "temporal"]
    for name in sections:
        want = [f.name for f in user_fields(hints[name])]
        assert isinstance(raw[name], dict), name
        missing, unknown = sorted(set(want) - set(raw[name])), sorted(set(raw[name]) - set(want))
        assert not missing and not unknown, f"{name}: not pinned {missing}, not a setting {unknown}"
    harness = [f.name for f in user_fields(HarnessConfig) if f.name not in RUN_OWNED]
    assert sorted(raw["eval"]["harness"]) == sorted(harness)


def test_study_yaml_says_what_the_study_is():
    raw = load(CONFIG)
    assert raw["model"] == "smollm2-135m-instruct" and raw["iterations"] == 2
    # scope null: each method's own (cream the dataset mean, the paper's; cream-prompt each prompt's own C)
    assert (raw["label"]["scope"], raw["label"]["clip_c"], raw["label"]["consistency"]) == (None, False, "kendall")
    assert raw["label"]["judge_mode"] == "expected" and raw["label"]["oracle_scores"] is True
    harness, ev = raw["eval"]["harness"], raw["eval"]
    assert harness["tasks"] == MC_TASKS and harness["limit"] >= 250 and harness["num_fewshot"] == 0
    assert ev["tasks"] == ["gsm8k"] and ev["models"] == "all"  # GSM8K generated; every model M0..M3 evaluated
    # one data folder: the SFT file, the prompts' task files and the evaluation sets
    data = (STUDY / ev["data_dir"]).resolve()
    assert data == (REPO.parent / "shared" / "data").resolve()
    assert (STUDY / raw["prompts"]["data_dir"]).resolve() == data
    assert data in (STUDY / raw["sft"]["data"]).resolve().parents
    assert all(set(e) == {"task", "split", "limit"} for e in raw["prompts"]["sources"])


def test_every_run_validates_and_the_runs_differ_in_method_and_seed_only(fake_cream, tmp_path, shared_data):
    """Each run of run.sh through `cream run --check`'s loader with the run's overrides: what each will run,
    every default filled in, is the same but for method, seed and run_dir, and the label scope the method decides
    (cream: the dataset mean, cream-prompt: each prompt's own); D_U has 2 x 64 prompts."""
    from cream_train.run.config import load_run_config

    runs = run_calls(calls(fake_cream, {"STUDY_RUNS": str(tmp_path)}))
    assert {r["config"] for r in runs} == {"examples/study/study.yaml"}
    settings = []
    for r in runs:
        cfg, _, table = load_run_config(REPO / r["config"], {"method": r["method"], "seed": r["seed"],
                                                             "run_dir": r["out"]}, machine_checks=None)
        assert (cfg.method, cfg.seed, Path(cfg.run_dir)) == (r["method"], r["seed"], Path(r["out"]))
        assert table.num_rows == 4 * 32
        found = {k: v for k, v in cfg.to_dict().items() if k not in ("method", "seed", "run_dir")}
        assert found["label"].pop("scope") == ("prompt" if r["method"] == "cream-prompt" else "dataset"), r
        settings.append(found)
    assert all(s == settings[0] for s in settings[1:])


# ------------------------------------------------------------------------------------------- run.sh
def test_run_sh_runs_every_method_and_seed_then_one_inspect_over_all(fake_cream, tmp_path):
    runs_dir = tmp_path / "runs"
    found = calls(fake_cream, {"STUDY_RUNS": str(runs_dir)})
    runs = run_calls(found)
    assert [(r["method"], r["seed"]) for r in runs] == [(m, s) for s in SEEDS for m in METHODS]
    for r in runs:
        assert r["out"] == str(runs_dir / f"seed-{r['seed']}" / r["method"]) and not r["plan"]
    # within a seed: the seed's earlier runs; a later seed also the first seed's first run (its eval of M0)
    for i, r in enumerate(runs):
        same_seed = [p["out"] for p in runs[:i] if p["seed"] == r["seed"]]
        first = [] if r["seed"] == SEEDS[0] else [str(runs_dir / f"seed-{SEEDS[0]}" / METHODS[0])]
        assert r["reuse"] == first + same_seed, r
    every = [str(runs_dir / f"seed-{s}" / m) for s in SEEDS for m in METHODS]
    assert found[-1] == ["inspect", *every, "--out", "docs/results", "--markdown", "docs/RESULTS.md"]
    assert sum(argv[0] == "inspect" for argv in found) == 1 and len(found) == len(runs) + 1
    assert not runs_dir.exists()  # the fake wrote nothing; run.sh itself writes nothing for the study's own config


def test_run_sh_takes_seeds_and_methods_from_the_environment(fake_cream, tmp_path):
    found = calls(fake_cream, {"SEEDS": "7", "METHODS": "srlm cream", "STUDY_RUNS": str(tmp_path)})
    assert [(r["method"], r["seed"], r["reuse"]) for r in run_calls(found)] == [
        ("srlm", 7, []), ("cream", 7, [str(tmp_path / "seed-7" / "srlm")])]
    assert found[-1][:3] == ["inspect", str(tmp_path / "seed-7" / "srlm"), str(tmp_path / "seed-7" / "cream")]
    one = calls(fake_cream, {"SEEDS": "0", "METHODS": "cream", "STUDY_RUNS": str(tmp_path)})
    assert one[-1] == ["inspect", str(tmp_path / "seed-0" / "cream")]  # one run: its report, no study


def test_run_sh_plan_passes_plan_to_every_run_and_names_the_inspect(fake_cream, tmp_path):
    r = run_sh(fake_cream, {"STUDY_RUNS": str(tmp_path / "runs")}, "--plan")
    assert r.returncode == 0, r.stderr
    runs = run_calls([shlex.split(line)[1:] for line in r.stdout.splitlines()])
    assert len(runs) == len(METHODS) * len(SEEDS) and all(x["plan"] for x in runs)
    assert all(x["reuse"] == [] for x in runs)  # a plan names only the runs that exist
    assert "inspect" not in r.stdout and f"then: {fake_cream} inspect " in r.stderr
    assert not (tmp_path / "runs").exists()


def test_quick_changes_exactly_its_settings(fake_cream, tmp_path, shared_data):
    """STUDY_QUICK=1: every run reads STUDY_RUNS/study.yaml, which loads to study.yaml's settings with exactly the
    quick ones replaced; same methods, seeds and reuse chain; the study goes to STUDY_RUNS/study, not docs/."""
    from cream_train.run.config import load_run_config

    runs_dir = tmp_path / "quick"
    found = calls(fake_cream, {"STUDY_QUICK": "1", "STUDY_RUNS": str(runs_dir)})
    runs = run_calls(found)
    variant = runs_dir / "study.yaml"
    assert {r["config"] for r in runs} == {str(variant)}
    assert [(r["method"], r["seed"]) for r in runs] == [(m, s) for s in SEEDS for m in METHODS]
    assert found[-1] == ["inspect", *[r["out"] for r in runs], "--out", str(runs_dir / "study")]
    study = load_run_config(CONFIG, {"run_dir": str(tmp_path / "x")}, machine_checks=None)[0].to_dict()
    quick = load_run_config(variant, {"run_dir": str(tmp_path / "x")}, machine_checks=None)[0].to_dict()
    for key, value in QUICK.items():
        if ".*." in key:
            holder, name = key.split(".*.")
            assert [e[name] for e in get(quick, holder)] == [value] * len(get(study, holder)), key
            for e in get(quick, holder):
                e[name] = None
            for e in get(study, holder):
                e[name] = None
        else:
            assert get(quick, key) == value != get(study, key), key
            *path, name = key.split(".")
            get(quick, ".".join(path))[name] = get(study, ".".join(path))[name] = None
    assert quick == study  # nothing else differs (paths included: the variant's are study.yaml's, absolute)


def symlinked_data(shared_data: Path, folder: Path, leave_out: str | None = None) -> Path:
    """A data folder of links to the shared data's files (``leave_out`` missing)."""
    for path in shared_data.rglob("*"):
        rel = path.relative_to(shared_data)
        if path.is_file() and str(rel) != leave_out:
            (folder / rel).parent.mkdir(parents=True, exist_ok=True)
            (folder / rel).symlink_to(path)
    return folder


def test_study_data_points_every_data_path_elsewhere(fake_cream, tmp_path, shared_data):
    from cream_train.run.config import load_run_config

    data = symlinked_data(shared_data, tmp_path / "data")
    runs_dir = tmp_path / "runs"
    runs = run_calls(calls(fake_cream, {"STUDY_DATA": str(data), "STUDY_RUNS": str(runs_dir), "SEEDS": "0"}))
    assert {r["config"] for r in runs} == {str(runs_dir / "study.yaml")}
    raw = load(runs_dir / "study.yaml")
    assert raw["sft"]["data"] == str(data / "oasst2_srlm_pairs" / "oasst2_en_first_turn_ranked_pairs.jsonl")
    assert raw["prompts"]["data_dir"] == raw["eval"]["data_dir"] == str(data)
    moved = load_run_config(runs_dir / "study.yaml", {"run_dir": str(tmp_path / "x")}, machine_checks=None)
    study = load_run_config(CONFIG, {"run_dir": str(tmp_path / "x")}, machine_checks=None)
    assert moved[2].equals(study[2])  # the same prompts, read from the other folder
    a, b = moved[0].to_dict(), study[0].to_dict()
    for d in (a, b):
        d["sft"]["data"] = d["prompts"]["data_dir"] = d["eval"]["data_dir"] = None
    assert a == b
    # the default folder named as STUDY_DATA is the study itself: no variant
    same = run_calls(calls(fake_cream, {"STUDY_DATA": str(shared_data), "STUDY_RUNS": str(tmp_path / "r2")}))
    assert {r["config"] for r in same} == {"examples/study/study.yaml"}


def test_run_sh_refuses_what_it_cannot_run_in_one_line(fake_cream, tmp_path, shared_data):
    partial = symlinked_data(shared_data, tmp_path / "partial", leave_out="siqa/dev-labels.lst")
    for env, args, needles in (
            ({"STUDY_DATA": str(tmp_path / "nowhere")}, (), (f"data folder not found: {tmp_path / 'nowhere'}",
                                                              "gsm8k/test.jsonl", "STUDY_DATA=DIR")),
            ({"STUDY_DATA": str(partial)}, (), (f"data folder {partial} lacks siqa/dev-labels.lst (",)),
            ({"STUDY_QUICK": "yes"}, (), ("STUDY_QUICK=yes: expected 1",)),
            ({}, ("--bogus",), ("unknown argument '--bogus'",)),
            ({"SEEDS": " "}, (), ("SEEDS and METHODS must each name at least one",))):
        r = run_sh(fake_cream, {"STUDY_RUNS": str(tmp_path / "runs"), **env}, *args)
        assert r.returncode == 2 and r.stdout == "", (env, args, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1 and all(n in r.stderr for n in needles), r.stderr


def test_run_sh_names_the_files_study_yaml_reads(shared_data):
    """run.sh's list of data files is what the study reads: the SFT file, each prompts task's train file and each
    evaluated task's test file (SIQA: dev and its labels), as cream's loaders name them."""
    from cream_data.inputs.prompts import task_source

    text = (STUDY / "run.sh").read_text(encoding="utf-8")
    listed = set(text.split("NEEDED=(", 1)[1].split(")", 1)[0].split())
    raw, data = load(CONFIG), shared_data.resolve()

    def rel(path) -> str:
        return str(Path(path).resolve().relative_to(data))

    want = {rel(STUDY / raw["sft"]["data"]), "siqa/dev-labels.lst"}  # SIQA's gold labels sit beside dev.jsonl
    want |= {rel(task_source(e["task"], "train", data)[0]) for e in raw["prompts"]["sources"]}
    want |= {rel(task_source(t, "test", data)[0]) for t in raw["eval"]["harness"]["tasks"] + raw["eval"]["tasks"]}
    assert listed == want


# ------------------------------------------------------------------------------------------- variant.py
def test_variant_refuses_a_key_the_config_does_not_write(tmp_path):
    import sys

    for setting, needle in (("eval.limt=3", "eval.limt: not a setting the config writes"),
                            ("eval.harnes.limit=3", "eval.harnes.limit: the config has no eval.harnes"),
                            ("eval.limit", "eval.limit: expected KEY=VALUE")):
        r = subprocess.run([sys.executable, str(STUDY / "variant.py"), str(CONFIG), str(tmp_path / "v.yaml"),
                            setting], capture_output=True, text=True, timeout=60)
        assert r.returncode == 2 and needle in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert not (tmp_path / "v.yaml").exists()


# ------------------------------------------------------------------------------------------- the real plan
def test_run_sh_plan_prints_every_run_and_writes_nothing(tmp_path, shared_data):
    """The real `cream run --plan` for one seed: each run's 17 stages (the harness after each model's GSM8K
    evaluation), the label stages with each method's reward; nothing written."""
    import sys

    from tests.support.cli import cream_executable

    runs_dir = tmp_path / "runs"
    r = subprocess.run([bash(), str(STUDY / "run.sh"), "--plan"], capture_output=True, text=True, cwd=REPO,
                       timeout=300, env={**os.environ, "CREAM": str(cream_executable()), "PYTHON": sys.executable,
                                         "SEEDS": "0", "STUDY_RUNS": str(runs_dir), "HF_HUB_OFFLINE": "1"})
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("17 stages: 0 done or reused, 17 to run") == len(METHODS)
    lines = [line.strip() for line in r.stdout.splitlines()]
    labels = [line for line in lines if line.startswith("cream label ")]
    assert len(labels) == 2 * len(METHODS) and all("--oracle-scores" in line for line in labels)
    assert sum("--reward judge" in line for line in labels) == 2
    harness = [line for line in lines if line.startswith("cream eval ") and "--harness" in line]
    assert len(harness) == 4 * len(METHODS)
    assert all(f"--harness {','.join(MC_TASKS)}" in line and "--limit 250" in line for line in harness)
    assert f"inspect {runs_dir / 'seed-0' / 'cream'} " in r.stderr
    assert not runs_dir.exists()


# ------------------------------------------------------------------------------------------- CPU hours
def table(text: str, header: tuple[str, ...]) -> list[list[str]]:
    """The body rows (cells) of the one Markdown table of ``text`` whose header is ``header``."""
    found, block = [], []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            block.append([c.strip() for c in line.strip().strip("|").split("|")])
        elif block:
            if tuple(block[0]) == header:
                found.append(block[2:])
            block = []
    assert len(found) == 1, header
    return found[0]


def count(cell: str) -> int:
    """A count cell's number (``7 (M1; M2 and M3 of each method)`` → 7)."""
    return int(cell.split()[0])


def test_readme_hours_are_the_arithmetic_of_its_stage_tables():
    """The README's per-seed stage counts follow from the design (3 methods; shared stages once per seed), and its
    totals — one seed, the study, the quick variant — and docs/RESULTS.md's copy are the sums of its tables."""
    text = (STUDY / "README.md").read_text(encoding="utf-8")
    full = table(text, ("stage", "count per seed", "each (min)", "arithmetic"))
    quick = table(text, ("stage", "count per seed", "each (s)", "arithmetic"))
    k = len(METHODS)
    dpo_rewarded = k - 1  # all but srlm; cream-no-rc takes cream's iteration-1 labels (the same scope)
    counts = {"SFT → M1": 1, "evaluation of a model": 1 + 2 * k, "sampling": 1 + k,
              "labeling by DPO reward": (dpo_rewarded - 1) + dpo_rewarded, "labeling by SRLM's judge": 2, "DPO": 2 * k}
    for rows in (full, quick):
        assert {r[0]: count(r[1]) for r in rows} == counts
    seed = sum(count(r[1]) * float(r[2]) for r in full)
    evaluation = next(float(r[2]) for r in full if r[0] == "evaluation of a model")
    study = len(SEEDS) * seed + evaluation  # M0 is evaluated once for the whole study
    assert f"= {seed:.1f} min | {seed / 60:.1f} |" in text
    assert f"{len(SEEDS)} seeds × {seed:.1f} + the evaluation of M0 once, {evaluation} = {study:.1f} min" in text
    assert f"**{study / 60:.1f}**" in text
    q_seed = sum(count(r[1]) * float(r[2]) for r in quick)
    q_eval = next(float(r[2]) for r in quick if r[0] == "evaluation of a model")
    q_study = len(SEEDS) * round(q_seed / 60, 1) + round(q_eval / 60, 1)
    assert f"= {q_seed:.0f} s = {q_seed / 60:.1f} min" in text and f"**{q_study:.0f} min**" in text
    # the evaluation's arithmetic uses study.yaml's sizes
    raw = load(CONFIG)
    mc = len(raw["eval"]["harness"]["tasks"]) * raw["eval"]["harness"]["limit"]
    assert f"harness, {mc:,} multiple-choice questions" in text and f"GSM8K {raw['eval']['limit']} × " in text
    # docs/RESULTS.md's Reproduce table: the same stages, counts and minutes
    results = (REPO / "docs" / "RESULTS.md").read_text(encoding="utf-8")
    rows = table(results, ("per seed", "stages", "min each", "min"))
    body, total = rows[:-1], rows[-1]
    assert [(int(r[1]), float(r[2])) for r in body] == [(count(r[1]), float(r[2])) for r in full]
    assert all(abs(int(r[1]) * float(r[2]) - float(r[3])) < 0.05 for r in body)
    assert total[0] == "one seed" and float(total[3]) == round(seed, 1) and int(total[1]) == sum(counts.values())
    assert f"= {study:.0f} min, about {study / 60:.1f} h" in results
