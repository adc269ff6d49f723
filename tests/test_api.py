"""The Python API (cream_data/api.py, cream_train/api.py, docs/API.md): the documented example runs and its numbers
check out against independent computations; an API call writes the very tables its command writes; a bad argument
is the command's one-line error with the keyword for the flag; a whole run from a mapping; importing is light."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from scipy.stats import kendalltau, spearmanr

from cream_data import api
from cream_data.errors import CreamError
from cream_train import api as train_api
from tests.support import DEMO_DATA, REPO
from tests.support.cli import CPU_ONLY, assert_user_error, snapshot
from tests.support.runs import tiny_run_config

DOC = REPO / "docs" / "API.md"
MODEL_LINE = 'MODEL = "smollm2-135m-instruct"'
WORK_LINE = 'WORK = Path("api-demo")'


def _example(model: Path, work: Path) -> str:
    """docs/API.md's python code, its two marked variables set to ``model`` and ``work`` (each must be there once)."""
    blocks = re.findall(r"^```python\n(.*?)^```", DOC.read_text(encoding="utf-8"), re.S | re.M)
    code = "\n".join(blocks)
    assert code.count(MODEL_LINE) == 1 and code.count(WORK_LINE) == 1, "docs/API.md: MODEL and WORK lines changed"
    return code.replace(MODEL_LINE, f"MODEL = {str(model)!r}").replace(WORK_LINE, f"WORK = Path({str(work)!r})")


@pytest.fixture(scope="module")
def example(tiny_model, tmp_path_factory):
    """The namespace docs/API.md's example leaves, run from the checkout's root (it reads examples/data)."""
    work = tmp_path_factory.mktemp("api") / "api-demo"
    namespace: dict = {}
    mp = pytest.MonkeyPatch()
    mp.chdir(REPO)
    try:
        exec(compile(_example(tiny_model, work), str(DOC), "exec"), namespace)
    finally:
        mp.undo()
    return namespace


def test_example_tables_hold_what_the_inputs_imply(example):
    p, s, lab = example["p"], example["s"], example["lab"]
    demo_lines = [ln for ln in (DEMO_DATA / "demo_prompts.jsonl").read_text().splitlines() if ln.strip()]
    assert p.table.num_rows == min(4, len(demo_lines)) == 4 and p.kind == "prompts"
    assert api.read(p.out, "prompts").equals(p.table)
    responses = s.responses
    assert responses.num_rows == 4 * 4
    counts = {pid: responses.column("prompt_id").to_pylist().count(pid) for pid in p.table.column("prompt_id").to_pylist()}
    assert set(counts.values()) == {4}, counts
    prefs = lab.preferences
    assert prefs.num_rows == lab.pairing.pairs == 4 - sum(lab.pairing.skipped.values())
    for row in prefs.to_pylist():  # chosen = the best reward, rejected = the worst (first of ties)
        assert row["chosen_idx"] == int(np.argmax(row["rewards"])) and row["rejected_idx"] == int(np.argmin(row["rewards"]))
    assert lab.scores.num_rows == 4 * 4  # one scorer (current), every response


def test_example_consistency_weights_are_recomputed_from_the_ranks(example):
    lab2, spearman = example["lab2"], example["spearman"]
    prefs = lab2.preferences
    assert prefs.num_rows > 0
    # each pair's C = (tau + 1) / 2; its weight, under the default scope (dataset), the mean C over the pairs
    c = [(kendalltau(row["rewards"], row["prev_rewards"]).statistic + 1) / 2 for row in prefs.to_pylist()]
    for row, c_row in zip(prefs.to_pylist(), c):
        assert row["consistency"] == pytest.approx(c_row) and row["weight"] == pytest.approx(np.mean(c))
    by_prompt = {r["prompt_id"]: r for r in prefs.to_pylist()}
    rhos = []
    for row in spearman.preferences.to_pylist():
        old = by_prompt[row["prompt_id"]]
        rhos.append(spearmanr(old["rewards"], old["prev_rewards"]).statistic)
        assert row["consistency"] == pytest.approx((rhos[-1] + 1) / 2) and 0.0 <= row["weight"] <= 1.0
        assert (row["chosen_idx"], row["rejected_idx"]) == (old["chosen_idx"], old["rejected_idx"])
    assert spearman.preferences.column("weight").to_pylist() == pytest.approx([(np.mean(rhos) + 1) / 2] * len(rhos))
    assert spearman.summary is None and spearman.scores is None  # re-paired: no model ran, no scores written


def test_example_checkpoint_and_queries(example):
    m1, lab2 = example["m1"], example["lab2"]
    assert (m1.out / "config.json").is_file() and any(m1.out.glob("*.safetensors")) and m1.stage == "dpo"
    assert np.isfinite(m1.metrics["train_loss"]) and m1.metrics["global_step"] == 2
    assert m1.reference == "stored"  # labeled by M0, trained from M0: the stored log-probs are the reference
    # SQL equals the Parquet files read directly (pyarrow, not through cream)
    files = sorted((lab2.out / "preferences").glob("*.parquet"))
    direct = pq.ParquetDataset(files).read().sort_by("prompt_id")
    pairs = example["pairs"]
    assert pairs.column_names == ["prompt_id", "chosen_idx", "rejected_idx", "weight"]
    for name in pairs.column_names:
        assert pairs.column(name).to_pylist() == direct.column(name).to_pylist(), name
    summary = example["summary"]
    assert summary["pairs"] == direct.num_rows
    assert summary["weight_mean"] == pytest.approx(float(np.mean(direct.column("weight").to_numpy())))
    assert (lab2.out / "inspect" / "summary.json").is_file()
    page = example["page"]  # the pair browser: one self-contained file
    html = page.out.read_text()
    assert page.pairs == direct.num_rows and page.bytes == page.out.stat().st_size
    assert html.lower().startswith("<!doctype html>") and 'src="http' not in html
    assert all(f'"{pid}"' in html for pid in direct.column("prompt_id").to_pylist())  # every pair's data embedded


def test_label_by_api_and_by_command_write_identical_tables(tmp_path, cli, example, tiny_model):
    responses = example["s"].out
    by_api = api.label(responses, out=tmp_path / "api", model=tiny_model, consistency="spearman", batch_size=4)
    r = cli("label", responses, "--out", tmp_path / "cli", "--model", tiny_model, "--consistency", "spearman",
            "--batch-size", "4")
    assert r.code == 0, r
    for kind in ("scores", "preferences"):
        a, c = api.read(by_api.out / kind, kind), api.read(tmp_path / "cli" / kind, kind)
        assert a.num_rows > 0 and a.schema == c.schema
        assert a.to_pylist() == c.to_pylist(), kind  # value for value, in order


def test_prompts_by_api_and_by_command_are_identical(tmp_path, cli):
    src = DEMO_DATA / "demo_prompts.jsonl"
    got = api.prompts(src, out=tmp_path / "api", split_into=2, limit=6, seed=3)
    assert cli("prompts", src, "--out", tmp_path / "cli", "--split-into", "2", "--limit", "6", "--seed", "3").code == 0
    assert [t.num_rows for t in map(api.read, got.subsets)] == [3, 3]
    for k in (1, 2):
        assert api.read(got.out / f"subset-{k}").to_pylist() == api.read(tmp_path / "cli" / f"subset-{k}").to_pylist()


def _refused_alike(call, cream_exe, cwd: Path, args: list, flags: dict[str, str]) -> str:
    """``call()`` raises the CreamError that `cream ARGS` prints (one line, exit 2), with each keyword of ``flags``
    where the command names its flag; neither writes anything under ``cwd``."""
    before = snapshot(cwd)
    with pytest.raises(CreamError) as e:
        call()
    message = str(e.value)
    assert "\n" not in message
    r = cream_exe(*args, cwd=cwd, env=CPU_ONLY, timeout=120)
    assert_user_error(r)
    expected = message
    for keyword, flag in flags.items():
        expected = re.sub(rf"\b{keyword}\b", flag, expected)
    assert r.err.strip() == f"error: {expected}"
    assert snapshot(cwd) == before
    return message


def test_bad_arguments_are_the_commands_errors(tmp_path, cream_exe, tiny_model):
    prompts = api.prompts(DEMO_DATA / "demo_prompts.jsonl", out=tmp_path / "prompts", limit=2).out
    out = tmp_path / "responses"
    msg = _refused_alike(lambda: api.sample(prompts, out=out, model=tiny_model, top_p=3, n=0), cream_exe, tmp_path,
                         ["sample", prompts, "--out", out, "--model", tiny_model, "--top-p", "3", "--n", "0"],
                         {"top_p": "--top-p", "n": "--n"})
    assert msg.startswith("n: got 0") and "top_p: got 3.0, expected a value in (0, 1]" in msg
    msg = _refused_alike(lambda: train_api.train(prompts, model=tiny_model, out=tmp_path / "m", lr=-1.0, limit=3),
                         cream_exe, tmp_path, ["train", prompts, "--model", tiny_model, "--out", tmp_path / "m",
                                               "--lr", "-1", "--limit", "3"],
                         {"lr": "--lr", "limit": "--limit", "stage": "--stage"})
    assert "lr: got -1.0, expected a finite number > 0" in msg and msg.startswith("limit: only with stage sft; ")
    _refused_alike(lambda: train_api.train(prompts, model=tiny_model, out=tmp_path / "m", stage="ppo"), cream_exe,
                   tmp_path, ["train", prompts, "--model", tiny_model, "--out", tmp_path / "m", "--stage", "ppo"],
                   {"stage": "--stage"})
    _refused_alike(lambda: api.label(prompts, out=tmp_path / "lab"), cream_exe, tmp_path,
                   ["label", prompts, "--out", tmp_path / "lab"], {})
    with pytest.raises(CreamError, match=r"^max_new_token: unknown setting; did you mean max_new_tokens\?$"):
        api.sample(prompts, out=out, model=tiny_model, max_new_token=8)
    with pytest.raises(CreamError, match=r"^n: got '3' \(str\), expected int$"):
        api.sample(prompts, out=out, model=tiny_model, n="3")
    assert not out.exists()


def test_run_from_a_mapping(tmp_path, tiny_model):
    config = tiny_run_config(model=tiny_model, iterations=1, eval={"models": "none"},
                             sft={"data": "examples/data/demo_sft.jsonl"})  # relative: against base
    with pytest.raises(CreamError, match=r"run_dir: a run config given as a mapping needs run_dir"):
        train_api.run(config, base=REPO)
    bad = tiny_run_config(config, train={"lr": -1})
    with pytest.raises(CreamError, match=r"^.*<mapping>: 1 problem\(s\): train\.lr: got -1\.0, expected"):
        train_api.run(bad, out=tmp_path / "bad", base=REPO, in_process=True)
    assert not (tmp_path / "bad").exists()
    logs: list[str] = []
    r = train_api.run(config, out=tmp_path / "run", base=REPO, in_process=True, log=logs.append)
    assert r.run_dir == tmp_path / "run" and (r.run_dir / "config.yaml").is_file() and logs
    assert set(r.models) == {"M0", "M1", "M2"} and all(Path(m).is_dir() for m in r.models.values())
    assert r.report == api.report(r.run_dir)
    pairs = api.sql(r.run_dir, "SELECT iteration, count(*) AS n, min(weight) AS lo, max(weight) AS hi "
                               "FROM preferences GROUP BY iteration")
    assert pairs.to_pylist()[0]["n"] == r.report["pairs"][0]["pairs"] > 0
    assert 0.0 <= pairs.to_pylist()[0]["lo"] <= pairs.to_pylist()[0]["hi"] <= 1.0
    again = train_api.run(config, out=tmp_path / "run", base=REPO, in_process=True, log=lambda m: None)
    assert again.ran == [] and len(again.skipped) == len(r.ran)  # resumable: everything was done


def test_importing_the_api_imports_no_torch():
    code = ("import sys, cream_data, cream_train, cream_data.api, cream_train.api; "
            "print(sorted(m for m in ('torch', 'transformers', 'trl') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stdout + r.stderr
