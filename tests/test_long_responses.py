"""Responses beyond a scoring model's context (issue #26: every input is bounded), through the installed `cream`.

`cream label` used to score a (prompt + response) longer than a model's max_position_embeddings anyway: positions the
model never learned, with only transformers' warning. The rule now, per model that reads a row (M_t, M_{t-1},
M_{t-2}, the judge, the --reward-model): a row that does not fit one of them is scored by none — skipped and counted
(one warning line; its prompt ranked without it, skipped when fewer than 2 remain; `responses_too_long` in the
preferences manifest's summary) or, with --long-responses error, refused in one line naming the row, its length and
the context. A table with no row that fits is refused either way. Errors leave nothing new on disk.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from cream_data.tables import io
from tests.support.cli import assert_user_error, snapshot
from tests.support.models import make_tiny_model
from tests.support.runs import tiny_run_config, write_yaml

CONTEXT = 128  # the short-context copy's max_position_embeddings
LONG = "Let me explain. " + "word " * 200  # ~ 230 tokens with the template: beyond 128, well within 2048
TEXTS = {"p1": ["Answer: 2", "Answer: 3", "It is 2.", LONG],  # ranked over its 3 short responses
         "p2": ["Answer: 4", LONG],                           # 1 left: skipped (nonfinite_reward)
         "p3": ["Answer: 6", "Six."]}


def short_context(model: Path, dst: Path, context: int = CONTEXT) -> Path:
    """A copy of ``model`` whose config.json says ``max_position_embeddings: context``."""
    shutil.copytree(model, dst)
    config = json.loads((dst / "config.json").read_text())
    config["max_position_embeddings"] = context
    (dst / "config.json").write_text(json.dumps(config))
    return dst


@pytest.fixture(scope="module")
def short_model(tmp_path_factory, tiny_model) -> Path:
    return short_context(tiny_model, tmp_path_factory.mktemp("ctx") / "tiny-128")


@pytest.fixture(scope="module")
def short_rm(tmp_path_factory) -> Path:
    """A one-logit reward model (SmolLM2's tokenizer) with a 128-token context."""
    root = tmp_path_factory.mktemp("rm")
    return short_context(make_tiny_model(root / "rm", seed=5, num_labels=1), root / "rm-128")


def responses(tmp_path: Path, texts: dict[str, list[str]] = TEXTS) -> Path:
    rows = [{"prompt_id": pid, "prompt": [{"role": "user", "content": f"What is {pid[-1]} + {pid[-1]}?"}],
             "response_idx": i, "response": text, "model": "m", "iteration": 1, "seed": 0, "temperature": 0.8,
             "top_p": 0.95, "max_new_tokens": 256, "finish_reason": "stop", "n_tokens": 5}
            for pid, answers in texts.items() for i, text in enumerate(answers)]
    return io.write_table(pa.Table.from_pylist(rows), tmp_path / "responses", "responses")


def warnings(err: str) -> list[str]:
    return [ln for ln in err.splitlines() if "warning" in ln.lower()]


def refused(cream_exe, tmp_path: Path, *args, needles) -> None:
    before = snapshot(tmp_path)
    r = cream_exe("label", *args, cwd=tmp_path)
    assert_user_error(r, *needles)
    assert snapshot(tmp_path) == before, "a refused `cream label` changed files"


def test_responses_beyond_the_context_are_skipped_and_counted(tmp_path, cream_exe, short_model):
    resp = responses(tmp_path)
    r = cream_exe("label", resp, "--model", short_model, "--out", tmp_path / "o", cwd=tmp_path)
    assert r.code == 0 and "Traceback" not in r.err, r
    (line,) = warnings(r.err)
    assert "skipped 2 of 8 responses" in line and f"context of {CONTEXT} tokens" in line, line
    assert "response_idx 3" in line or "response_idx 1" in line, line

    scores = io.read_table(tmp_path / "o" / "scores", "scores")
    unscored = {(p, i) for p, i, lp in zip(scores["prompt_id"].to_pylist(), scores["response_idx"].to_pylist(),
                                           scores["logp"].to_pylist()) if lp is None}
    assert unscored == {("p1", 3), ("p2", 1)}  # no log-prob computed past the model's positions
    assert scores.num_rows == 8 and scores["reward"].null_count == 2

    prefs = io.read_table(tmp_path / "o" / "preferences", "preferences").sort_by("prompt_id")
    assert prefs["prompt_id"].to_pylist() == ["p1", "p3"]  # p2 has one response left: no pair
    p1 = prefs.slice(0, 1).to_pylist()[0]
    assert 3 not in (p1["chosen_idx"], p1["rejected_idx"]) and p1["rewards"][3] is None and p1["ranks"][3] == 4
    summary = io.read_manifest(tmp_path / "o" / "preferences")["summary"]
    assert summary["skipped"]["nonfinite_reward"] == 1 and summary["responses_dropped"]["nonfinite_reward"] == 1
    assert summary["responses_too_long"] == 2


def test_long_responses_error_names_the_row_its_length_and_the_context(tmp_path, cream_exe, short_model):
    resp = responses(tmp_path)
    refused(cream_exe, tmp_path, resp, "--model", short_model, "--out", "o", "--long-responses", "error",
            needles=["response_idx", "tokens (templated prompt + response)", f"context of {CONTEXT} tokens",
                     "2 of 8 responses do not fit", "--long-responses skip"])
    r = cream_exe("label", resp, "--model", short_model, "--out", "o", "--long-responses", "error", cwd=tmp_path)
    assert "row (prompt_id 'p1', response_idx 3)" in r.err or "row (prompt_id 'p2', response_idx 1)" in r.err, r


def test_no_response_that_fits_is_an_error_under_either_rule(tmp_path, cream_exe, short_model):
    resp = responses(tmp_path, {"p1": [LONG, LONG + "!"], "p2": [LONG + "?", LONG + "."]})
    for rule in ("skip", "error"):
        refused(cream_exe, tmp_path, resp, "--model", short_model, "--out", "o", "--long-responses", rule,
                needles=["tokens", f"context of {CONTEXT}"])
    r = cream_exe("label", resp, "--model", short_model, "--out", "o", cwd=tmp_path)
    assert "none of the 4 responses fits" in r.err and "nothing left to label" in r.err, r


def test_every_model_that_reads_a_row_is_checked(tmp_path, cream_exe, tiny_model, short_model, short_rm):
    """A short-context M_{t-1} (its reference or previous role), reward model, or judge: each one's context counts,
    and the message names that model."""
    resp = responses(tmp_path)
    refused(cream_exe, tmp_path, resp, "--model", tiny_model, "--ref", short_model, "--out", "o",
            "--long-responses", "error", needles=[f"model {short_model}", f"context of {CONTEXT}"])
    refused(cream_exe, tmp_path, resp, "--model", tiny_model, "--reward-model", short_rm, "--out", "o",
            "--long-responses", "error",
            needles=[f"reward model {short_rm}", "under its chat template", f"context of {CONTEXT}"])
    # the judge reads its own long prompt and may write judge_max_new_tokens: 2048 tokens of M_t's context are not
    # enough for 2000 new ones
    refused(cream_exe, tmp_path, resp, "--model", tiny_model, "--reward", "judge", "--judge-max-new-tokens", 2000,
            "--out", "o", "--long-responses", "error",
            needles=[f"the judge {tiny_model}", "judge_max_new_tokens 2000", "context of 2048"])


def test_fitting_responses_are_labeled_as_before(tmp_path, cream_exe, tiny_model):
    """The 2048-token model reads every row: nothing skipped, no warning, a zero count."""
    r = cream_exe("label", responses(tmp_path), "--model", tiny_model, "--out", tmp_path / "o", cwd=tmp_path)
    assert r.code == 0 and not warnings(r.err), r
    scores = io.read_table(tmp_path / "o" / "scores", "scores")
    assert scores["logp"].null_count == 0 and np.isfinite(scores["reward"].to_numpy()).all()
    assert io.read_manifest(tmp_path / "o" / "preferences")["summary"]["responses_too_long"] == 0


def test_the_run_config_key_label_long_responses(tmp_path, cream_exe, tiny_model):
    """`label.long_responses` is a run config key (checked like the flag) that reaches the label stage's config."""
    from cream_train.run.config import load_run_config
    from cream_train.run.sections import Stages

    cfg = tiny_run_config(model=tiny_model, iterations=1, run_dir=tmp_path / "run", label={"long_responses": "drop"})
    path = write_yaml(tmp_path / "cfg.yaml", cfg)
    r = cream_exe("run", path, "--check", cwd=tmp_path)
    assert_user_error(r, "label.long_responses: got 'drop'", "skip", "error")
    cfg["label"]["long_responses"] = "error"
    write_yaml(path, cfg)
    ok = cream_exe("run", path, "--check", cwd=tmp_path)
    assert ok.code == 0 and "long_responses: error" in ok.out, ok
    run_cfg, run_dir, _ = load_run_config(path, machine_checks=None)
    assert Stages(run_cfg, run_dir).label(1).long_responses == "error"
