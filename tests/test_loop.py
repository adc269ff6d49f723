"""`cream run` end to end on the tiny model: cream and srlm for 2 iterations, kill -9 and resume, bad configs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import yaml

from cream_data.tables import io
from tests.support import DEMO_DATA, REPO
from tests.support.cli import assert_user_error
from tests.support.runs import finished_up_to, write_tiny_run_config, write_yaml


def model_weights(path: Path) -> np.ndarray:
    from safetensors.numpy import load_file

    w = load_file(str(path / "model.safetensors"))
    return np.concatenate([w[k].ravel()[:2000] for k in sorted(w)])


def check_run_tables(run: Path) -> None:
    kinds = {}
    for kind, path in io.iter_table_paths(run):
        io.read_table(path, kind)  # schema-valid
        kinds.setdefault(kind, []).append(path)
    assert {"prompts", "sft", "responses", "scores", "preferences", "eval"} <= set(kinds)
    carried = json.loads((run / "manifest.json").read_text()).get("carried", {})
    assert len(kinds["preferences"]) == 2 and len(kinds["eval"]) == 4 - len(carried)  # a carried model: eval reused


@pytest.fixture(scope="module")
def cream_run(tmp_path_factory, tiny_model, shared_data):
    from cream_train.run.loop import run

    tmp = tmp_path_factory.mktemp("loop")
    cfg = write_tiny_run_config(tmp, name="cream", model=tiny_model, eval={"data_dir": shared_data})
    return tmp, cfg, run(cfg, log=lambda m: None, in_process=True)


def test_cream_two_iterations(cream_run, tiny_model):
    tmp, _, summary = cream_run
    run = summary.run_dir
    check_run_tables(run)
    manifest = json.loads((run / "manifest.json").read_text())
    assert all(s["status"] == "done" for s in manifest["stages"].values())
    assert set(manifest["stages"]) >= {"prompts", "sft-data", "train-M1", "sample-1", "label-1", "train-M2",
                                      "sample-2", "label-2", "train-M3", "eval-M0", "eval-M3"}
    # the model changes at every step of the loop
    ws = [model_weights(tiny_model)] + [model_weights(run / "models" / f"M{k}") for k in (1, 2, 3)]
    for a, b in zip(ws, ws[1:]):
        assert not np.allclose(a, b)
    # iteration 2 labels M2 against M1 (reference and previous) and M0 (previous reference)
    prefs = io.read_table(run / "iter-2" / "preferences", "preferences").to_pylist()
    assert {p["model"] for p in prefs} == {str((run / "models" / "M2").resolve())}
    assert {p["prev_ref_model"] for p in prefs} == {str(tiny_model.resolve())}
    # method cream's C: the mean of the pairs' (tau + 1) / 2 (scope dataset, the paper's), every pair the same
    mean_c = np.mean([p["consistency"] for p in prefs])
    assert all(p["consistency_method"] == "kendall" and p["weight"] == pytest.approx(mean_c) for p in prefs)
    report = (run / "report" / "report.md").read_text()
    assert "Table 1" in report and "Table 2" in report and "M2 vs M1" in report
    assert (run / "report" / "accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the previous model's rankings: Table 2 equals Kendall between current and previous DPO rankings
    rep = json.loads((run / "report" / "report.json").read_text())
    assert len(rep["consistency"]) == 2


def test_browse_a_finished_run_in_chromium(cream_run, cream_exe, chromium, tmp_path):
    """`cream browse` on a run `cream run` made (as on the demo run): every pair of both iterations is on the page,
    a chosen answer's text is shown, and an iteration filter shows that iteration's pairs."""
    import html

    from tests.support.browser import dump_dom, shown_count

    run = cream_run[2].run_dir
    prefs = {t: io.read_table(run / f"iter-{t}" / "preferences", "preferences") for t in (1, 2)}
    total = sum(p.num_rows for p in prefs.values())
    page = tmp_path / "pairs.html"
    r = cream_exe("browse", run, "--out", page)
    assert r.code == 0, r.err
    dom = dump_dom(chromium, page)
    assert shown_count(dom)[:2] == (total, total) and total > 0
    chosen = prefs[2].column("chosen").to_pylist()[0][-1]["content"]
    assert chosen.strip() and " ".join(chosen.split()) in " ".join(html.unescape(dom).split())
    assert shown_count(dump_dom(chromium, page, "t=2"))[0] == prefs[2].num_rows


def test_kill_and_resume_skips_finished_stages_and_matches(cream_run, tiny_model, shared_data):
    """kill -9 of `cream run` while it samples iteration 2, then the same run again: the stages finished before the
    kill are skipped, and the pairs and M3 equal the uninterrupted run's. The killed run starts at sample-2: its
    iteration 1 linked (--reuse-from) from the full run as it stood then; no evaluation (nothing compared reads it)."""
    tmp, _, full = cream_run
    upstream = ("prompts", "sft-data", "train-M1", "sample-1", "label-1", "train-M2")
    donor = finished_up_to(full.run_dir, upstream, tmp / "killed-donor")
    cfg = write_tiny_run_config(tmp, name="killed", model=tiny_model, eval={"data_dir": shared_data, "models": "none"})
    run_dir = tmp / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "cli.main", "run", str(cfg), "--reuse-from", str(donor)], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while time.time() < deadline:
        m = run_dir / "manifest.json"
        if m.exists():
            stages = json.loads(m.read_text())["stages"]
            if stages.get("sample-2", {}).get("status") == "running":
                break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    from tests.support.processes import children_of, wait_for

    wait_for(lambda: not children_of(run_dir), timeout=30, what="the stage processes to end with their parent")
    before = json.loads((run_dir / "manifest.json").read_text())["stages"]
    done_before = {k for k, v in before.items() if v["status"] == "done"}
    assert done_before == set(upstream) and before["sample-2"]["status"] == "running"
    assert all(before[k]["reused_from"] == str(donor.resolve()) for k in upstream)

    from cream_train.run.loop import run

    resumed = run(cfg, log=lambda m: None, in_process=True)
    assert set(resumed.skipped) == done_before and not (set(resumed.ran) & done_before)
    after = json.loads((run_dir / "manifest.json").read_text())["stages"]
    for k in done_before:  # finished stages were not redone
        assert after[k]["finished"] == before[k]["finished"]
    for t in (1, 2):
        a = io.read_table(full.run_dir / f"iter-{t}" / "preferences", "preferences")
        b = io.read_table(run_dir / f"iter-{t}" / "preferences", "preferences")
        for col in ("prompt_id", "chosen_idx", "rejected_idx", "ranks", "prev_ranks", "chosen", "rejected"):
            assert a[col].equals(b[col]), col
        np.testing.assert_allclose(np.array(a["rewards"].to_pylist()), np.array(b["rewards"].to_pylist()), atol=1e-6)
        np.testing.assert_allclose(a["weight"].to_numpy(), b["weight"].to_numpy(), atol=1e-9)
    np.testing.assert_allclose(model_weights(full.run_dir / "models" / "M3"), model_weights(run_dir / "models" / "M3"),
                               atol=1e-6)


def test_srlm_two_iterations(tmp_path, tiny_model, shared_data):
    """srlm pairs by the judge's expected score (the default judge_mode): a random tiny model never writes
    'Score: k', yet every response gets a finite reward and iteration 1 pairs (a pair-less iteration would be
    carried forward); the tables and the report are complete."""
    from cream_train.run.loop import run

    cfg = write_tiny_run_config(tmp_path, name="srlm", model=tiny_model, method="srlm",
                                eval={"data_dir": shared_data})
    logs = []
    s = run(cfg, log=logs.append, in_process=True)
    check_run_tables(s.run_dir)
    manifest = json.loads((s.run_dir / "manifest.json").read_text())
    for t in (1, 2):
        scores = io.read_table(s.run_dir / f"iter-{t}" / "scores", "scores").to_pylist()
        judge = [r for r in scores if r["scorer"] == "judge"]
        assert judge and all(0 <= r["reward"] <= 5 and 0 <= r["confidence"] <= 1 for r in judge)
        assert {r["scorer"] for r in scores} == {"current", "previous", "judge"}
        prefs = io.read_table(s.run_dir / f"iter-{t}" / "preferences", "preferences").to_pylist()
        assert all(p["weight"] == 1.0 and p["consistency_method"] == "none" for p in prefs)
        stage = manifest["stages"][f"train-M{t + 1}"]
        assert prefs or t == 2
        if not prefs:
            assert stage.get("no_pairs") and any("no preference pairs" in m for m in logs)
            assert manifest["models"][f"M{t + 1}"] == s.models[f"M{t}"]
    assert not np.allclose(model_weights(tiny_model), model_weights(s.run_dir / "models" / "M1"))
    report = json.loads((s.run_dir / "report" / "report.json").read_text())
    assert len(report["accuracy"]) == 4 and len(report["consistency"]) == 2
    assert all(row["n"] > 0 for row in report["consistency"])  # Table 2 from the DPO scores, judge or not


def test_a_pairless_iteration_does_not_stall_the_loop(tmp_path, tiny_model, shared_data, cream_run):
    """srlm whose parse-mode judge can never answer (one new token: no 'Score: k') forms no pair in iteration 1,
    so M2 is M1 carried forward. M2 keeps M1's reference M0: iteration 2's DPO rewards are M1 against M0, not M1 against
    itself (all zero, nothing ever learned again); M2's evaluation is M1's, reused, and the report says so."""
    from cream_train.run.loop import run

    cfg = write_tiny_run_config(tmp_path, name="pairless", model=tiny_model, method="srlm",
                                label={"judge_max_new_tokens": 1, "judge_mode": "parse"},
                                eval={"data_dir": shared_data})
    s = run(cfg, log=lambda m: None, in_process=True)
    run_dir = s.run_dir
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["carried"] == {"M2": "M1", "M3": "M2"}
    m0, m1 = str(tiny_model), str(run_dir / "models" / "M1")
    assert s.models["M2"] == s.models["M3"] == m1
    for t in (1, 2):
        scores = io.read_table(run_dir / f"iter-{t}" / "scores", "scores")
        cur = scores.filter(pa.compute.equal(scores["scorer"], "current"))
        assert set(cur["model"].to_pylist()) == {m1} and set(cur["ref_model"].to_pylist()) == {m0}
        rewards = np.array(cur["reward"].to_pylist())
        assert np.abs(rewards).max() > 1e-4, f"iteration {t}: every DPO reward is zero"
        assert io.read_table(run_dir / f"iter-{t}" / "preferences", "preferences").num_rows == 0
    for k, source in ((2, "M1"), (3, "M2")):
        stage = manifest["stages"][f"eval-M{k}"]
        assert stage["carried_from"] == source and stage["accuracy"] == manifest["stages"]["eval-M1"]["accuracy"]
        assert not (run_dir / "eval" / f"M{k}").exists()  # not evaluated again
    report = json.loads((run_dir / "report" / "report.json").read_text())
    rows = {r["label"]: r for r in report["accuracy"]}
    assert rows["M2"]["carried_from"] == "M1" and rows["M2"]["average"] == rows["M1"]["average"]
    assert "carried" in (run_dir / "report" / "report.md").read_text()
    # a study over it: the carried model's outcomes are its source's, so it differs from M1 by exactly 0
    from cream_data.reports.study import compare_runs

    study = compare_runs([cream_run[2].run_dir, run_dir])
    d = next(x for x in study["deltas"] if x["a"] == "srlm M2" and x["b"] == "M1")
    assert d["delta"] == 0.0 and d["ci_low"] == d["ci_high"] == 0.0


def test_bad_config_lists_every_problem_before_any_work(tmp_path, cli, shared_data):
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"""
method: creme
iterations: 40
run_dir: {tmp_path / 'run'}
sft: {{data: {tmp_path / 'missing.jsonl'}}}
prompts: {{source: {DEMO_DATA / 'demo_prompts.jsonl'}}}
sample: {{n: four}}
train: {{lr: 1.0e-6, bogus: 1}}
""")
    r = cli("run", bad)
    assert_user_error(r, "problem(s)", "method: got 'creme'", "missing.jsonl does not exist",
                      "sample.n: got 'four'", "train.bogus: unknown setting", "iterations: 40")
    assert not (tmp_path / "run").exists()


@pytest.fixture(scope="module")
def norc_run(cream_run, tiny_model, shared_data):
    from cream_train.run.loop import run

    tmp, _, full = cream_run
    cfg = write_tiny_run_config(tmp, name="norc", model=tiny_model, method="cream-no-rc",
                                eval={"data_dir": shared_data})
    return run(cfg, log=lambda m: None, reuse_from=[full.run_dir], in_process=True)


def test_reuse_from_takes_method_independent_stages_as_links(cream_run, norc_run, tiny_model, shared_data):
    """cream-no-rc differs from cream only in the trainer's loss: every stage up to label-1 has the same
    fingerprint and is taken from the cream run (hard links, nothing recomputed); training onwards runs."""
    from cream_train.run.loop import run

    tmp, _, full = cream_run
    s = norc_run
    shared = {"prompts", "sft-data", "train-M1", "eval-M0", "eval-M1", "sample-1", "label-1"}
    assert set(s.reused) == shared
    assert not (shared & set(s.ran)) and {"train-M2", "sample-2", "label-2", "train-M3", "eval-M3"} <= set(s.ran)
    man = json.loads((s.run_dir / "manifest.json").read_text())
    src = json.loads((full.run_dir / "manifest.json").read_text())
    for name in shared:
        assert man["stages"][name]["reused_from"] == str(full.run_dir.resolve())
        assert man["stages"][name]["fingerprint"] == src["stages"][name]["fingerprint"]
    a, b = full.run_dir / "models" / "M1" / "model.safetensors", s.run_dir / "models" / "M1" / "model.safetensors"
    assert os.stat(a).st_ino == os.stat(b).st_ino  # a link, not a copy
    check_run_tables(s.run_dir)
    p1 = io.read_table(s.run_dir / "iter-1" / "preferences", "preferences")
    assert p1.equals(io.read_table(full.run_dir / "iter-1" / "preferences", "preferences"))
    p2 = io.read_table(s.run_dir / "iter-2" / "preferences", "preferences").to_pylist()
    assert all(p["model"] == str((s.run_dir / "models" / "M2").resolve()) for p in p2)
    # the loss differs (C-weighted vs plain DPO): so does M2
    assert not np.allclose(model_weights(full.run_dir / "models" / "M2"), model_weights(s.run_dir / "models" / "M2"))

    # a changed setting upstream is not reused: another SFT learning rate retrains M1 and everything after it
    cfg2 = write_tiny_run_config(tmp, name="other-sft", model=tiny_model, method="cream-no-rc", sft={"lr": 2.0e-3},
                                 eval={"data_dir": shared_data})
    s2 = run(cfg2, log=lambda m: None, reuse_from=[full.run_dir, s.run_dir], in_process=True)
    assert set(s2.reused) == {"prompts", "sft-data", "eval-M0"} and "train-M1" in s2.ran


def test_prompt_sources_mix_and_errors(tmp_path, cli, shared_data):
    from cream_train.run.config import load_run_config

    gsm, arc = shared_data / "gsm8k" / "train.jsonl", shared_data / "arc" / "ARC-Easy-Train.jsonl"
    base = f"""
run_dir: {tmp_path / 'run'}
sft: {{data: {DEMO_DATA / 'demo_sft.jsonl'}}}
"""
    ok = tmp_path / "ok.yaml"
    ok.write_text(base + f"""prompts:
  sources: [{{source: {gsm}, limit: 5}}, {{source: {arc}, layout: arc, limit: 3}}]
  suffix: "Answer:"
""")
    cfg, _, table = load_run_config(ok)
    assert table.num_rows == 8
    assert table["source"].to_pylist() == ["gsm8k:train.jsonl"] * 5 + ["arc:ARC-Easy-Train.jsonl"] * 3
    assert all(p[-1]["content"].endswith("\nAnswer:") for p in table["prompt"].to_pylist())
    assert table["reference_answer"].null_count == 0
    assert cfg.prompts.sources[0]["source"] == str(gsm.resolve())

    bad = tmp_path / "bad.yaml"
    bad.write_text(base + f"""prompts:
  source: {gsm}
  sources: [{{source: {gsm}, limt: 5}}, 7, {{layout: arc}}]
""")
    assert_user_error(cli("run", bad, "--check"), "either source or sources", "prompts.sources[0]: unknown setting(s) limt",
                      "prompts.sources[1]: got 7", "prompts.sources[2].source: missing")

    twice = tmp_path / "twice.yaml"
    twice.write_text(base + f"""prompts:
  sources: [{{source: {gsm}, limit: 4}}, {{source: {gsm}, limit: 2}}]
""")
    assert_user_error(cli("run", twice, "--check"), "prompts.sources:", "also comes from")


def test_study_compares_runs(cream_run, norc_run, tmp_path, cli):
    """`cream inspect RUN_A RUN_B`: tables per method with shared models once, paired differences recomputed by
    hand, and the oracle's verdict on pairs whose texts we set to known right/wrong answers."""
    import shutil

    import pyarrow.parquet as pq

    from cream_data.reports.study import compare_runs
    from cream_data.reports.study_bootstrap import paired_difference

    full, norc = cream_run[2].run_dir, norc_run.run_dir
    doc = tmp_path / "RESULTS.md"
    doc.write_text("# Results\n\nhand-written intro\n\n<!-- study:begin -->old<!-- study:end -->\n\nhand-written end\n")
    r = cli("inspect", full, norc, "--out", tmp_path / "study", "--markdown", doc)
    assert r.code == 0, r
    text = doc.read_text()
    assert text.startswith("# Results\n\nhand-written intro") and text.rstrip().endswith("hand-written end")
    assert "old" not in text and "Table 1" in text and "Table 2" in text and "Reward quality" in text
    assert "Pairs per iteration" in text
    for png in ("study_accuracy", "study_tasks", "study_consistency", "study_reward_quality"):
        assert (tmp_path / "study" / f"{png}.png").read_bytes()[:4] == b"\x89PNG"
        assert f"study/{png}.png" in text  # linked relative to the document
    study = json.loads((tmp_path / "study" / "study.json").read_text())
    assert study["methods"] == ["cream-no-rc", "cream"] and study["shared_models"] == [0, 1]

    # paired difference by hand: mean over tasks of (acc_a − acc_b) on the same questions
    def outcomes(run, k):
        t = io.read_table(run / "eval" / f"M{k}", "eval").to_pylist()
        return {task: {x["example_id"]: int(x["correct"]) for x in t if x["task"] == task} for task in {x["task"] for x in t}}
    a, b = outcomes(full, 3), outcomes(norc, 3)
    by_hand = np.mean([np.mean([a[t][q] for q in a[t]]) - np.mean([b[t][q] for q in a[t]]) for t in a])
    d = next(x for x in study["deltas"] if x["a"] == "cream M3" and x["b"] == "cream-no-rc M3")
    assert d["delta"] == pytest.approx(by_hand) and d["ci_low"] <= d["delta"] <= d["ci_high"]
    same = {t: (["q1", "q2"], np.array([1.0, 0.0])) for t in ("gsm8k", "arc_easy")}
    assert paired_difference(same, same) == {"delta": 0.0, "ci_low": 0.0, "ci_high": 0.0, "tasks": 2, "n": 4}
    up = {t: (["q1", "q2", "q3", "q4"], np.array([1.0, 1.0, 1.0, 1.0])) for t in ("gsm8k",)}
    down = {t: (["q1", "q2", "q3", "q4"], np.array([0.0, 1.0, 0.0, 0.0])) for t in ("gsm8k",)}
    pd = paired_difference(up, down)
    assert pd["delta"] == pytest.approx(0.75) and 0 < pd["ci_low"] <= 0.75 <= pd["ci_high"] <= 1.0

    # reward quality: a copy of the run whose iteration-1 texts are set to known right / wrong answers
    fake = tmp_path / "fake"
    shutil.copytree(norc, fake)
    prefs = io.read_table(fake / "iter-1" / "preferences", "preferences").to_pylist()
    refs = {p["prompt_id"]: p["reference_answer"] for p in io.read_table(fake / "prompts" / "subset-1", "prompts").to_pylist()}
    assert len(prefs) >= 3 and all(refs[p["prompt_id"]] for p in prefs)
    plan = {}  # (prompt, idx) → text; pair 0: win, pair 1: loss, pair 2: both right, others: both wrong
    for i, p in enumerate(prefs):
        ref = refs[p["prompt_id"]]
        right, wrong = f"so Answer: {ref}", "Answer: 123456789"
        c, rj = {0: (right, wrong), 1: (wrong, right), 2: (right, right)}.get(i, (wrong, wrong))
        plan[(p["prompt_id"], p["chosen_idx"])], plan[(p["prompt_id"], p["rejected_idx"])] = c, rj
    resp_dir = fake / "iter-1" / "responses"
    for part in sorted(resp_dir.glob("*.parquet")):
        t = pq.read_table(part)
        rows = t.to_pylist()
        for row in rows:
            row["response"] = plan.get((row["prompt_id"], row["response_idx"]), "Answer: 123456789")
        pq.write_table(pa.Table.from_pylist(rows, schema=t.schema), part)
    shutil.rmtree(fake / "iter-2")
    q = next(x for x in compare_runs([full, fake])["reward_quality"]["cream-no-rc"] if x["iteration"] == 1)
    assert (q["wins"], q["losses"], q["both_right"], q["both_wrong"]) == (1, 1, 1, len(prefs) - 3)
    assert q["win_rate"] == 0.5 and q["pairs"] == q["with_reference"] == len(prefs)
    n_resp = io.read_table(resp_dir, "responses").num_rows
    assert q["sample_accuracy"] == pytest.approx(4 / n_resp)  # right texts: pair 0 chosen, pair 1 rejected, pair 2 both

    assert_user_error(cli("inspect", full, full), "already given")
    assert_user_error(cli("inspect", full, "--markdown", doc), "--markdown")


def test_no_resume_recomputes_every_stage_identically(cream_run, tiny_model, shared_data, cli):
    """A run built from links (--reuse-from, same method: every stage reused), then `--no-resume`: every stage
    runs again, and the recomputed tables equal the original run's (the loop is deterministic). No evaluation: what is
    compared is the pairs and the last model."""
    from cream_train.run.loop import run

    tmp, _, full = cream_run
    cfg = write_tiny_run_config(tmp, name="again", model=tiny_model, eval={"data_dir": shared_data, "models": "none"})
    linked = run(cfg, log=lambda m: None, reuse_from=[full.run_dir], in_process=True)
    stages = json.loads((full.run_dir / "manifest.json").read_text())["stages"]
    assert not linked.ran and set(linked.reused) == {s for s in stages if not s.startswith("eval-")}
    r = cli("run", cfg, "--no-resume")
    assert r.code == 0, r
    man = json.loads((tmp / "again" / "manifest.json").read_text())
    assert not any(s.get("reused_from") for s in man["stages"].values())
    assert "stage(s) ran, 0 skipped" in r.err
    a = io.read_table(full.run_dir / "iter-2" / "preferences", "preferences")
    b = io.read_table(tmp / "again" / "iter-2" / "preferences", "preferences")
    for col in ("prompt_id", "chosen_idx", "rejected_idx", "ranks", "prev_ranks", "chosen", "rejected"):
        assert a[col].equals(b[col]), col
    np.testing.assert_allclose(model_weights(full.run_dir / "models" / "M3"), model_weights(tmp / "again" / "models" / "M3"),
                               atol=1e-6)
    assert os.stat(tmp / "again" / "models" / "M1" / "model.safetensors").st_ino != \
        os.stat(full.run_dir / "models" / "M1" / "model.safetensors").st_ino  # recomputed, not the link


def test_plan_after_a_run_says_done_and_what_a_change_makes_stale(cream_run, cream_exe):
    """After the run every stage is done; a changed training lr makes train-M2 and everything downstream stale (their
    fingerprints chain) and leaves the rest done; the plan writes nothing."""
    from tests.support.commands import parse_plan

    tmp, cfg, summary = cream_run
    manifest = (summary.run_dir / "manifest.json").read_bytes()
    r = cream_exe("run", cfg, "--plan")
    assert r.code == 0, r
    plan = parse_plan(r.out)
    assert set(plan) == set(json.loads(manifest)["stages"]) and {s for s, _ in plan.values()} == {"done"}
    config = yaml.safe_load(Path(cfg).read_text())
    changed = write_yaml(tmp / "changed-lr.yaml", {**config, "train": {**config["train"], "lr": 2.0e-3}})
    plan = parse_plan(cream_exe("run", changed, "--plan").out)
    stale = {n for n, (s, _) in plan.items() if s == "stale"}
    assert stale == {"train-M2", "eval-M2", "sample-2", "label-2", "train-M3", "eval-M3"}, plan
    assert {s for n, (s, _) in plan.items() if n not in stale} == {"done"}
    assert "--lr 0.002" in " ".join(plan["train-M2"][1][0])
    assert (summary.run_dir / "manifest.json").read_bytes() == manifest
    # another run dir with --reuse-from this run: the stages would be linked from it ("reuse"), nothing is made
    other = write_yaml(tmp / "reuser.yaml", {**config, "run_dir": str(tmp / "reuser")})
    r = cream_exe("run", other, "--plan", "--reuse-from", str(summary.run_dir))
    plan = parse_plan(r.out)
    assert all(plan[n][0] == "reuse" for n in ("prompts", "eval-M0", "train-M1", "sample-1", "label-1")), r.out
    assert f"from {summary.run_dir}" in r.out and not (tmp / "reuser").exists()
