"""`cream eval --harness` and `eval.harness` in `cream run`: lm-evaluation-harness on cream's models.

The local task copies are checked against the benchmark files read by hand (``tests.test_eval.raw_items``), and
cream's number against lm-eval called directly on the same task and model: real lm-eval, no mocks.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cream_data.tables import io
from cream_data.inputs.harness_tasks import local_task
from cream_data.stages.harness_config import HarnessConfig
from cream_data.vocab import TASKS
from cream_data.errors import CreamError
from tests.support.benchmarks import raw_items
from tests.support.cli import CliResult, assert_user_error, snapshot
from tests.support.runs import write_tiny_run_config

needs_lm_eval = pytest.mark.skipif(
    __import__("importlib").util.find_spec("lm_eval") is None, reason="lm-eval is not installed (pip install -e '.[harness]')")


def load_local(task: str, data_dir: Path, shots: int = 0):
    """cream's local copy of ``task``, loaded by lm-eval's own TaskManager."""
    from lm_eval.tasks import TaskManager

    (name, obj), = TaskManager(include_defaults=False).load([local_task(task, data_dir, shots)])["tasks"].items()
    assert name == f"cream_{task}"
    return obj


# ---------------------------------------------------------------------------- the local task definitions
@needs_lm_eval
@pytest.mark.parametrize("task", TASKS)
def test_local_task_has_every_doc_with_its_gold_answer(task, shared_data):
    obj = load_local(task, shared_data)
    docs = list(obj.eval_docs)
    raw = raw_items(shared_data, task)
    assert len(docs) == len(raw) > 0
    for doc, item in zip(docs, raw):
        target = obj.doc_to_target(doc)
        if task == "gsm8k":
            assert target == item["solution"] and target.split("####")[-1].strip().replace(",", "") == item["gold"]
            continue
        assert obj.doc_to_choice(doc) == item["options"]
        assert target == "ABCDE".index(item["gold"])  # SIQA: from dev-labels.lst; ARC: labels "1".."4" too
    first = obj.doc_to_text(docs[0])
    expected = {"siqa": f"Q: {raw[0]['text']} ", "openbookqa": raw[0]["text"]}.get(task, f"Question: {raw[0]['text']}")
    assert first.startswith(expected)
    assert obj.OUTPUT_TYPE == ("generate_until" if task == "gsm8k" else "multiple_choice")


@needs_lm_eval
def test_few_shot_examples_come_from_the_train_file(shared_data, tmp_path):
    gsm8k = load_local("gsm8k", shared_data, shots=5)
    train = (shared_data / "gsm8k/train.jsonl").read_text().splitlines()
    assert len(gsm8k.fewshot_docs()) == len(train)
    assert HarnessConfig(tasks=("gsm8k", "arc_easy")).shots("gsm8k") == 5  # the harness's defaults
    assert HarnessConfig(tasks=("arc_easy",)).shots("arc_easy") == 0
    assert HarnessConfig(tasks=("gsm8k",), num_fewshot=0).shots("gsm8k") == 0
    # a data folder without SIQA's train split: zero-shot works, few-shot is refused with one line
    (tmp_path / "siqa").mkdir()
    for name in ("dev.jsonl", "dev-labels.lst"):
        (tmp_path / "siqa" / name).symlink_to(shared_data / "siqa" / name)
    assert len(list(load_local("siqa", tmp_path).eval_docs)) == 1954
    with pytest.raises(CreamError, match=r"no siqa/train.jsonl for task siqa \(2-shot examples come from the train"):
        local_task("siqa", tmp_path, shots=2)


def test_config_lists_every_problem():
    with pytest.raises(CreamError) as e:
        HarnessConfig(tasks=("arc_easy", "mmlu", "arc_easy"), limit=0, num_fewshot=-1, batch_size=0, engine="tgi")
    for needle in ("unknown 'mmlu'; known tasks: arc_easy, arc_challenge, openbookqa, siqa, gsm8k",
                   "arc_easy named more than once", "limit: got 0", "num_fewshot: got -1", "batch_size: got 0",
                   "engine: got 'tgi', expected one of hf, vllm"):
        assert needle in str(e.value)
    with pytest.raises(CreamError) as e:
        HarnessConfig.from_mapping({"tasks": ["gsm8k"], "shots": 2})
    assert e.value.problems == ["shots: unknown setting (known: batch_size, device, dtype, engine, limit, num_fewshot, "
                                "tasks, trust_remote_code)"]


# ---------------------------------------------------------------------------- the command
@needs_lm_eval
def test_tiny_model_table_resume_and_sql(cream_exe, cli, tiny_model, shared_data, tmp_path):
    import lm_eval

    out = tmp_path / "harness"
    args = ("eval", "--model", tiny_model, "--harness", "arc_easy,siqa,gsm8k", "--limit", "3", "--data-dir",
            shared_data, "--batch-size", "4", "--label", "M9", "--out", out)
    r = cream_exe(*args, timeout=600)
    assert r.code == 0, r
    assert "harness 1/3: arc_easy as cream_arc_easy (local, 0-shot, first 3)" in r.err
    assert "Running loglikelihood requests" in r.err  # lm-eval's own progress
    assert "lm-evaluation-harness" in r.out and "acc_norm" in r.out
    table = io.read_table(out, "eval_summary")
    assert io.read_manifest(out)["schema"] == "eval_summary"
    rows = {(x["task"], x["metric"], x["filter"]): x for x in table.to_pylist()}
    assert set(rows) == {("arc_easy", "acc", "none"), ("arc_easy", "acc_norm", "none"), ("siqa", "acc", "none"),
                         ("gsm8k", "exact_match", "strict-match"), ("gsm8k", "exact_match", "flexible-extract")}
    for (task, _, _), x in rows.items():
        assert x["n"] == 3 and x["source"] == "local" and x["label"] == "M9" and x["model"] == str(tiny_model)
        assert x["num_fewshot"] == (5 if task == "gsm8k" else 0) and x["harness_version"] == lm_eval.__version__
        assert x["harness_task"] == f"cream_{task}" and 0.0 <= x["value"] <= 1.0
        assert x["stderr"] is None or x["stderr"] >= 0
    # the same call again: nothing is recomputed, no model is loaded
    before = snapshot(out)
    again = cream_exe(*args, timeout=300)
    assert again.code == 0, again
    assert "arc_easy, siqa, gsm8k already done" in again.out and "loading" not in again.err
    assert snapshot(out) == before
    # other settings into the same folder are refused, and SQL sees the table
    other = [("2" if a == "3" else a) for a in args]  # --limit 2
    assert_user_error(cream_exe(*other), "holds a harness evaluation with other settings", "limit 3 -> 2")
    q = cli("sql", out, "SELECT task, count(*) AS k FROM eval_summary GROUP BY task ORDER BY task", "--format", "json")
    assert q.code == 0, q
    assert json.loads(q.out) == [{"task": "arc_easy", "k": 2}, {"task": "gsm8k", "k": 2}, {"task": "siqa", "k": 1}]


def test_unknown_task_is_one_line_error(cream_exe, tmp_path):
    r = cream_exe("eval", "--model", "smollm2-135m-instruct", "--harness", "arc_easy,mmlu", "--out", tmp_path / "o")
    assert_user_error(r, "unknown 'mmlu'", "known tasks: arc_easy, arc_challenge, openbookqa, siqa, gsm8k")
    assert not (tmp_path / "o").exists()


@needs_lm_eval
def test_hub_task_offline_is_one_line_error(cream_exe, tiny_model, tmp_path):
    """Without --data-dir the harness's own task runs; its Hub data cannot be had offline (conftest sets
    HF_HUB_OFFLINE=1): one line that names the way out, before any model is loaded or file written."""
    r = cream_exe("eval", "--model", tiny_model, "--harness", "siqa", "--out", tmp_path / "o")
    assert_user_error(r, "task siqa: the harness's social_iqa reads its data from the Hugging Face Hub",
                      "pass --data-dir DIR")
    assert not (tmp_path / "o").exists()


def test_missing_lm_eval_is_one_line_error(tiny_model, tmp_path):
    """lm_eval hidden from the import system, as on a machine without the harness extra."""
    argv = ["eval", "--model", str(tiny_model), "--harness", "arc_easy", "--out", str(tmp_path / "o")]
    code = f"import sys; sys.modules['lm_eval'] = None; from cli.main import main; main({argv!r})"
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "COLUMNS": "200"})
    assert_user_error(CliResult(p.returncode, p.stdout, p.stderr),
                      "needs the 'lm-eval' package, which is not installed", "pip install -e '.[harness]'")
    assert not (tmp_path / "o").exists()


# ---------------------------------------------------------------------------- the same number as lm-eval itself
@needs_lm_eval
@pytest.mark.slow
def test_cream_matches_lm_eval_called_directly(cream_exe, shared_data, tmp_path):
    """arc_easy, first 20, the embedded SmolLM2: cream's accuracy is lm-eval's, to the last bit."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    from cream_data.engines.models import resolve

    out = tmp_path / "emb"
    r = cream_exe("eval", "--model", "smollm2-135m-instruct", "--harness", "arc_easy", "--limit", "20",
                  "--data-dir", shared_data, "--batch-size", "8", "--device", "cpu", "--out", out, timeout=900)
    assert r.code == 0, r
    ours = {x["metric"]: x for x in io.read_table(out, "eval_summary").to_pylist()}

    direct = lm_eval.simple_evaluate(
        model="hf", model_args={"pretrained": resolve("smollm2-135m-instruct").path, "dtype": "float32"},
        tasks=[local_task("arc_easy", shared_data)], limit=20, device="cpu", batch_size=8,
        task_manager=TaskManager(include_defaults=False), log_samples=False)["results"]["cream_arc_easy"]
    assert ours["acc"]["n"] == 20
    assert ours["acc"]["value"] == direct["acc,none"] and ours["acc_norm"]["value"] == direct["acc_norm,none"]
    assert ours["acc"]["stderr"] == direct["acc_stderr,none"]


# ---------------------------------------------------------------------------- cream run
def harness_config(tmp_path: Path, tiny_model: Path, shared_data: Path, name: str, harness) -> Path:
    """The tiny run config with one iteration and ``eval.harness`` set inside its eval mapping."""
    return write_tiny_run_config(tmp_path, name=name, model=tiny_model, iterations=1,
                                 eval={"data_dir": shared_data, "harness": harness})


def test_run_check_names_harness_problems(cli, tiny_model, shared_data, tmp_path):
    cfg = harness_config(tmp_path, tiny_model, shared_data, "bad", {"tasks": ["mmlu"], "limit": 0, "shots": 2})
    r = cli("run", cfg, "--check")
    assert_user_error(r, "eval.harness.shots: unknown setting", "eval.harness.tasks: unknown 'mmlu'",
                      "eval.harness.limit: got 0")
    cfg = harness_config(tmp_path, tiny_model, shared_data, "bad2", ["arc_easy"])
    assert_user_error(cli("run", cfg, "--check"), "eval.harness: got ['arc_easy'], expected a mapping")


@needs_lm_eval
@pytest.mark.slow
def test_cream_run_reports_harness_numbers(tiny_model, shared_data, tmp_path):
    from cream_train.run.loop import run

    cfg = harness_config(tmp_path, tiny_model, shared_data, "h", {"tasks": ["arc_easy", "siqa"], "limit": 3})
    s = run(cfg, log=lambda m: None)
    manifest = json.loads((s.run_dir / "manifest.json").read_text())
    for k in range(3):
        assert manifest["stages"][f"harness-M{k}"]["status"] == "done"
        table = io.read_table(s.run_dir / "eval-harness" / f"M{k}", "eval_summary")
        assert set(table["label"].to_pylist()) == {f"M{k}"} and set(table["n"].to_pylist()) == {3}
    report = json.loads((s.run_dir / "report" / "report.json").read_text())
    rows = {r["label"]: r for r in report["harness"]}
    assert list(rows) == ["M0", "M1", "M2"]
    stored = io.read_table(s.run_dir / "eval-harness" / "M2", "eval_summary").to_pylist()
    acc = next(x for x in stored if x["task"] == "arc_easy" and x["metric"] == "acc")
    assert rows["M2"]["tasks"]["arc_easy"]["acc"]["value"] == acc["value"]
    md = (s.run_dir / "report" / "report.md").read_text()
    assert "Standard benchmarks (lm-evaluation-harness)" in md and "siqa acc" in md
    # a rerun skips the harness stages; another harness setting redoes them and only them
    again = run(cfg, log=lambda m: None)
    assert {f"harness-M{k}" for k in range(3)} <= set(again.skipped) and not again.ran
    harness_config(tmp_path, tiny_model, shared_data, "h", {"tasks": ["arc_easy", "siqa"], "limit": 2})
    changed = run(cfg, log=lambda m: None)
    assert sorted(changed.ran) == ["harness-M0", "harness-M1", "harness-M2"]


# ---------------------------------------------------------------------------- the run report and the study
def fake_run(root: Path, method: str, harness: dict[int, float], fps: dict[int, str], carried=None) -> Path:
    """A run directory with paper-protocol eval tables and harness tables (arc_easy acc = the given value)."""
    import pyarrow as pa
    import schemas

    root.mkdir(parents=True)
    (root / "config.yaml").write_text(f"method: {method}\n")
    stages = {f"harness-M{k}": {"status": "done", "fingerprint": fp} for k, fp in fps.items()}
    stages.update({f"eval-M{k}": {"status": "done", "fingerprint": f"eval-{k}"} for k in harness})
    (root / "manifest.json").write_text(json.dumps({"method": method, "stages": stages, "carried": carried or {}}))
    for k, acc in harness.items():
        answers = pa.table({"model": ["m"] * 2, "task": ["arc_easy"] * 2, "example_id": ["a", "b"],
                            "response": ["x", "y"], "prediction": ["A", "B"], "answer": ["A", "A"],
                            "correct": [True, False]}, schema=schemas.get("eval").arrow)
        io.write_table(answers, root / "eval" / f"M{k}", "eval", manifest_extra={"label": f"M{k}"})
        rows = [{"model": "m", "label": f"M{k}", "task": "arc_easy", "harness_task": "cream_arc_easy",
                 "metric": metric, "filter": "none", "value": acc, "stderr": 0.05, "n": 20, "num_fewshot": 0,
                 "source": "local", "harness_version": "0.4.13"} for metric in ("acc", "acc_norm")]
        io.write_table(pa.Table.from_pylist(rows, schema=schemas.get("eval_summary").arrow),
                       root / "eval-harness" / f"M{k}", "eval_summary", manifest_extra={"label": f"M{k}"})
    return root


def test_report_and_study_show_harness_numbers(tmp_path):
    from cream_data.reports.run_report import run_report, to_markdown
    from cream_data.reports.study import compare_runs
    from cream_data.reports.study_markdown import to_markdown as study_markdown

    carried = fake_run(tmp_path / "c", "cream", {0: 0.4, 1: 0.55}, {0: "base", 1: "a1"}, carried={"M2": "M1"})
    report = run_report(carried)
    rows = {r["label"]: r for r in report["harness"]}
    assert list(rows) == ["M0", "M1", "M2"] and rows["M2"]["carried_from"] == "M1"
    assert rows["M2"]["tasks"]["arc_easy"]["acc"] == {"value": 0.55, "stderr": 0.05, "n": 20, "num_fewshot": 0,
                                                       "source": "local", "harness_version": "0.4.13"}
    md = to_markdown(report)
    assert "| model | arc_easy acc | arc_easy acc_norm |" in md and "| M1 | 55.0 ± 5.0 | 55.0 ± 5.0 |" in md
    assert "| M2 (= M1, carried) | 55.0 ± 5.0 |" in md and "arc_easy: n=20, 0-shot, local" in md
    a = fake_run(tmp_path / "a", "cream", {0: 0.4, 1: 0.55}, {0: "base", 1: "a1"})
    b = fake_run(tmp_path / "b", "srlm", {0: 0.4, 1: 0.45}, {0: "base", 1: "b1"})
    study = compare_runs([a, b])
    assert study["harness_shared"] == [0]
    md = study_markdown(study)
    assert "### Standard benchmarks (lm-evaluation-harness)" in md
    for line in ("| (shared) | M0 | 40.0 ± 5.0 |", "| srlm | M1 | 45.0 ± 5.0 |", "| cream | M1 | 55.0 ± 5.0 |"):
        assert line in md, md


def test_harness_flags_come_from_its_settings_and_errors_name_the_flag(cream_exe, tmp_path):
    """--num-fewshot and --engine are HarnessConfig's fields: refused without --harness, checked with it, and a bad
    task is named by the flag the user wrote (--harness), through the installed console script."""
    out = str(tmp_path / "ev")
    assert_user_error(cream_exe("eval", "--model", "smollm2-135m-instruct", "--out", out, "--num-fewshot", "2"),
                      "--num-fewshot", "only with --harness")
    assert_user_error(cream_exe("eval", "--model", "smollm2-135m-instruct", "--out", out, "--harness", "mmlu"),
                      "--harness", "unknown 'mmlu'")
    assert_user_error(cream_exe("eval", "--model", "smollm2-135m-instruct", "--out", out, "--harness", "gsm8k",
                                "--num-fewshot", "-1", "--engine", "tgi"),
                      "--num-fewshot: got -1", "--engine: got 'tgi', expected one of hf, vllm")
    assert_user_error(cream_exe("eval", "--model", "smollm2-135m-instruct", "--out", out, "--harness", "gsm8k",
                                "--suffix", "x"),
                      "--suffix", "only with the paper protocol, i.e. without --harness")
    assert not (tmp_path / "ev").exists()
