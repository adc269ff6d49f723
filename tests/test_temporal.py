"""`cream run` with method temporal (temporal self-rewarding) on the tiny model, 2 iterations: the anchor pool
sampled once per iteration from M1, the future model trained and sampled, and pairs whose sides come from the pools
as the rule says — checked against the tables."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cream_data.tables import io
from tests.support.runs import write_tiny_run_config
from tests.support.commands import absolute

N = 3  # sample.n of the tiny run config (tests/support/runs.py)


@pytest.fixture(scope="module")
def temporal(tmp_path_factory, tiny_model, shared_data):
    from cream_train.run.loop import run

    tmp = tmp_path_factory.mktemp("temporal")
    cfg = write_tiny_run_config(tmp, name="temporal", model=tiny_model, method="temporal",
                                eval={"data_dir": shared_data})
    return cfg, run(cfg, log=lambda m: None, in_process=True)


def judge_rewards(folder, pids):
    scores = io.read_table(folder / "scores", "scores").to_pylist()
    out = {}
    for r in scores:
        if r["scorer"] == "judge" and r["prompt_id"] in pids:
            out.setdefault(r["prompt_id"], {})[r["response_idx"]] = r["reward"]
    return {p: np.array([v[i] for i in range(len(v))]) for p, v in out.items()}


@pytest.mark.slow
def test_temporal_pairs_come_from_the_anchor_and_the_future(temporal):
    cfg, summary = temporal
    run = summary.run_dir
    stages = json.loads((run / "manifest.json").read_text())["stages"]
    m1 = str((run / "models" / "M1").resolve())
    for t in (1, 2):
        it = run / f"iter-{t}"
        for name in (f"anchor-{t}", f"anchored-{t}", f"future-train-{t}", f"future-sample-{t}", f"label-{t}"):
            assert stages[name]["status"] == "done", name
        # the anchor: M1's samples of this iteration's prompts, drawn once (one stage, n per prompt)
        anchor = io.read_table(it / "anchor" / "responses", "responses")
        assert set(anchor["model"].to_pylist()) == {m1} and anchor.num_rows == 4 * N
        current = io.read_table(it / "responses", "responses")
        assert set(anchor["prompt_id"].to_pylist()) == set(current["prompt_id"].to_pylist())
        assert anchor["response"].to_pylist() != current["response"].to_pylist() or t > 1  # other draws
        # the future model: DPO from M_t on the anchored pairs, then its own samples
        future_model = str((it / "future" / "model").resolve())
        assert (it / "future" / "model" / "config.json").is_file()
        future = io.read_table(it / "future" / "responses", "responses")
        assert set(future["model"].to_pylist()) == {future_model} and future.num_rows == 4 * N
        assert stages[f"future-train-{t}"]["inputs"]["prefs_fp"] == stages[f"anchored-{t}"]["fingerprint"]

        # anchored pairs: chosen among M_t's samples (idx < N), rejected among M_t's and the anchor's (idx < 2N)
        anchored = io.read_table(it / "anchored" / "preferences", "preferences").to_pylist()
        rewards = judge_rewards(it / "anchored", {p["prompt_id"] for p in anchored})
        for p in anchored:
            r = rewards[p["prompt_id"]]
            assert p["n_responses"] == 2 * N and p["chosen_idx"] == int(np.argmax(r[:N]))
            assert p["rejected_idx"] == int(np.argmin(r[:2 * N]))

        # final pairs: pooled as M_t's samples (0..N-1), the future model's (N..2N-1), the anchor's (2N..3N-1)
        final = io.read_table(it / "preferences", "preferences").to_pylist()
        assert final, f"iteration {t}: no pairs"
        rewards = judge_rewards(it, {p["prompt_id"] for p in final})
        took_future = took_anchor = 0
        for p in final:
            r = rewards[p["prompt_id"]]
            cur, fut, anc = r[:N], r[N:2 * N], r[2 * N:]
            assert p["n_responses"] == 3 * N and p["rewards"] == pytest.approx(r.tolist())
            # chosen: the future model's best where it beats M_t's best (strictly), else M_t's best
            want_chosen = N + int(np.argmax(fut)) if fut.max() > cur.max() else int(np.argmax(cur))
            # rejected: the anchor's worst where it is below M_t's worst (strictly), else M_t's worst
            want_rejected = 2 * N + int(np.argmin(anc)) if anc.min() < cur.min() else int(np.argmin(cur))
            assert (p["chosen_idx"], p["rejected_idx"]) == (want_chosen, want_rejected), p["prompt_id"]
            assert p["chosen_model"] == (future_model if want_chosen >= N else str(summary.models[f"M{t}"]))
            assert p["rejected_model"] == (m1 if want_rejected >= 2 * N else str(summary.models[f"M{t}"]))
            assert p["chosen_iteration"] == t and p["rejected_iteration"] == (1 if want_rejected >= 2 * N else t)
            took_future += want_chosen >= N
            took_anchor += want_rejected >= 2 * N
        assert took_future + took_anchor > 0  # the pools were used, not just M_t's samples
        # M_{t+1} trains on the final pairs
        assert stages[f"train-M{t + 1}"]["inputs"]["prefs_fp"] == stages[f"label-{t}"]["fingerprint"]
    report = (run / "report" / "report.md").read_text()
    assert "reward gap (chosen − rejected)" in report and "chosen from M_t / other" in report


@pytest.mark.slow
def test_a_temporal_rerun_skips_every_stage(temporal):
    from cream_train.run.loop import run

    cfg, first = temporal
    again = run(cfg, log=lambda m: None, in_process=True)
    assert not again.ran and set(again.skipped) >= {"anchor-1", "future-train-2", "future-sample-2", "anchored-2"}


def test_temporal_settings_and_plan(tmp_path, tiny_model, shared_data, cream_exe):
    """The plan names each temporal stage with its command; temporal.reward switches the pools' reward; it is
    refused for another method."""
    cfg = write_tiny_run_config(tmp_path, name="plan", model=tiny_model, method="temporal", temporal={"reward": "dpo"},
                                eval={"data_dir": shared_data})
    r = cream_exe("run", cfg, "--plan")
    assert r.code == 0, r
    # a stage line: its status, its name, and for a training stage the C it trains with ("  C = …")
    order = [line.split("  C = ")[0].split()[-1] for line in r.out.splitlines()
             if line[:1].isalpha() and not line[0].isdigit()]
    i = order.index("sample-1")
    assert order[i:i + 7] == ["sample-1", "anchor-1", "anchored-1", "future-train-1", "future-sample-1", "label-1",
                              "train-M2"]
    text = r.out
    labels = [line for line in text.splitlines() if line.strip().startswith("cream label")]
    assert len(labels) == 4 and all("--rejected-from" in line for line in labels)
    assert sum("--chosen-from" in line for line in labels) == 2  # the final pairs only
    assert not any("--reward" in line for line in labels)  # dpo: the label command's default reward
    judged = cream_exe("run", write_tiny_run_config(tmp_path, name="judged", model=tiny_model, method="temporal",
                                                    eval={"data_dir": shared_data}), "--plan")
    assert sum("--reward judge" in line for line in judged.out.splitlines()) == 4  # the default: the judge
    assert f"--out {tmp_path / 'plan' / 'iter-1' / 'future' / 'model'}" in " ".join(absolute(text.split()))
    bad = write_tiny_run_config(tmp_path, name="bad", model=tiny_model, method="cream", temporal={"reward": "judge"},
                                eval={"data_dir": shared_data})
    r = cream_exe("run", bad, "--check")
    assert r.code == 2 and "temporal.reward: only with method temporal" in r.err
    typo = write_tiny_run_config(tmp_path, name="typo", model=tiny_model, method="temporal",
                                 temporal={"reward": "jugde"}, eval={"data_dir": shared_data})
    r = cream_exe("run", typo, "--check")
    assert r.code == 2 and "temporal.reward: got 'jugde', expected one of judge, dpo, rm" in r.err
