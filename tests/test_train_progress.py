"""Training that shows itself (cream_train/train.py, TrainingReport): the optimizer steps as a bar of the one progress
display — in `cream train` and, across the process boundary, in `cream run` — one line per logging step instead of
transformers' raw metrics dict, and the trackers' logs beside the model, never inside it.

On the tiny model: 8 preference pairs at batch size 2 are 4 optimizer steps.
"""

from __future__ import annotations

import json

import pytest

from cream_data.processes import PROGRESS_ENV, RUN_NAME_ENV, TRACKER_DIR_ENV, parse_progress
from tests.support.training import PAIRS, make_preferences, make_sft

EVENTS = "events.out.tfevents*"


@pytest.fixture(scope="module")
def prefs(tiny_model, tmp_path_factory):
    return make_preferences(tmp_path_factory.mktemp("prefs") / "preferences", tiny_model)


def _steps(pairs: int, batch: int) -> int:
    from cream_train.train import optimizer_steps

    return optimizer_steps(pairs, batch, 1, 1, 1.0, None)


def _assert_counts_steps(calls: list[tuple], what: str, total: int) -> None:
    """``(what, done, total, tokens)`` calls of one piece of work: from 0, never back, ending at ``total``."""
    mine = [c for c in calls if c[0] == what]
    assert mine, (what, calls)
    done = [c[1] for c in mine]
    assert done[0] == 0 and done[-1] == total and done == sorted(done), done
    assert {c[2] for c in mine} == {total}  # the total is known from the start: the display's ETA needs it
    assert all(c[3] == 0 for c in mine)  # steps, not tokens


# ------------------------------------------------------------------------------------------- pure parts
def test_the_bar_shows_the_rate_and_the_time_left():
    from cli.progress import rates

    assert rates("steps", 2, 2, 10.0, 0) == "0.20 steps/s  eta 0:00:10"
    assert rates("steps", 1, 3599, 1.0, 0) == "1.00 steps/s  eta 0:59:59"
    assert rates("prompts", 4, 0, 2.0, 100) == "2.00 prompts/s  50 tok/s"  # finished: no ETA
    assert rates("steps", 0, 4, 5.0, 0) == "0.00 steps/s"  # no step yet: no ETA


def test_one_line_per_logging_step():
    from cream_train.training_report import log_line

    dpo = {"loss": 0.693147, "grad_norm": 1.2, "learning_rate": 1e-06, "rewards/chosen": 0.01,
           "rewards/margins": 0.0123, "rewards/accuracies": 0.5, "consistency/mean_C": 0.74, "epoch": 0.75}
    assert log_line("DPO", 3, 4, dpo) == ("DPO step 3/4 (epoch 0.75): loss 0.6931, margin 0.0123, accuracy 0.50, "
                                          "mean C 0.740, lr 1e-06")
    sft = {"loss": 2.5, "learning_rate": 5e-3, "mean_token_accuracy": 0.1, "epoch": 1.0}
    assert log_line("SFT", 2, 2, sft) == "SFT step 2/2 (epoch 1): loss 2.5, lr 0.005"
    end = {"train_runtime": 12.34, "train_loss": 0.69, "train_steps_per_second": 0.3, "epoch": 1.0}
    assert log_line("DPO", 4, 4, end) == "DPO training done: 4 step(s) in 12.3 s, mean loss 0.69"


def test_tracker_folder_and_run_name(monkeypatch, tmp_path):
    from cream_train.config import DPOTrainConfig
    from cream_train.training_report import run_name, tracker_dir

    cfg = DPOTrainConfig(data="p", model="m", out=str(tmp_path / "models" / "M2"))
    monkeypatch.delenv(TRACKER_DIR_ENV, raising=False)
    monkeypatch.delenv(RUN_NAME_ENV, raising=False)
    assert tracker_dir(cfg) == tmp_path / "models" / "M2.logs" and run_name(cfg) == "M2"
    monkeypatch.setenv(TRACKER_DIR_ENV, str(tmp_path / "run" / "logs" / "tb" / "train-M2"))
    monkeypatch.setenv(RUN_NAME_ENV, "run/train-M2")
    assert tracker_dir(cfg) == tmp_path / "run" / "logs" / "tb" / "train-M2" and run_name(cfg) == "run/train-M2"


def test_a_missing_tracker_package_is_one_line(monkeypatch, tmp_path, prefs, tiny_model):
    import importlib.util

    from cream_data.errors import CreamError
    from cream_train.config import DPOTrainConfig
    from cream_train.train import train

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    needs = r"--report-to wandb needs the 'wandb' package.*pip install -e '\.\[tracking\]'"
    with pytest.raises(CreamError, match=needs):
        train(DPOTrainConfig(data=str(prefs), model=str(tiny_model), out=str(tmp_path / "m"), report_to="wandb"))
    assert not (tmp_path / "m").exists() and not (tmp_path / "m.logs").exists()


# ------------------------------------------------------------------------------------------- cream train
def test_cream_train_as_a_stage_process(cream_exe, prefs, tiny_model, tmp_path):
    """`cream train` with CREAM_PROGRESS=lines (as `cream run` starts it): progress lines from 0 to the optimizer
    steps, one line per logging step with loss and margin, no raw metrics dict, and the TensorBoard events beside
    the model (``<out>.logs/``), none inside it."""
    out = tmp_path / "M2"
    total = _steps(len(PAIRS), 2)
    r = cream_exe("train", prefs, "--model", tiny_model, "--out", out, "--batch-size", "2", "--logging-steps", "1",
                  "--report-to", "tensorboard", env={PROGRESS_ENV: "lines"}, timeout=600)
    assert r.code == 0, r
    # split on "\n" only: str.splitlines() also breaks at the marker's record separator (\x1e)
    calls = [p for p in map(parse_progress, r.err.split("\n")) if p is not None]
    _assert_counts_steps(calls, "DPO training", total)
    assert "{'loss'" not in r.out + r.err and "'loss':" not in r.out + r.err
    steps = [line for line in r.err.splitlines() if line.startswith("DPO step ")]
    assert [s.split(":")[0].split()[2] for s in steps] == [f"{k}/{total}" for k in range(1, total + 1)], steps
    assert all("loss " in s and "margin " in s and "accuracy " in s and "mean C " in s for s in steps), steps
    assert "DPO training done: 4 step(s)" in r.err
    assert r.out.strip().startswith(str(out))  # stdout: the result line only
    assert len(r.out.strip().splitlines()) == 1, r.out
    assert list((tmp_path / "M2.logs").rglob(EVENTS))
    assert not list(out.rglob(EVENTS)) and not (out / "runs").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["M2", "M2.logs"]  # no staging folder or ./runs left


def test_cream_train_in_process_feeds_the_display(cli, monkeypatch, tiny_model, tmp_path):
    """The one rich display of `cream train` receives the SFT steps 0, 1, … total; a line per logging step (loss,
    lr) on stderr, no dict on stdout; with report_to none no tracker folder is made."""
    from cli.progress import Bars

    calls = []
    update = Bars.update
    monkeypatch.setattr(Bars, "update", lambda self, *a: (calls.append(a), update(self, *a))[1])
    monkeypatch.delenv(PROGRESS_ENV, raising=False)
    data = make_sft(tmp_path / "sft", n=6)
    out = tmp_path / "M1"
    r = cli("train", data, "--stage", "sft", "--model", tiny_model, "--out", out, "--batch-size", "2",
            "--lr", "5e-3", "--warmup-ratio", "0")
    assert r.code == 0, r
    _assert_counts_steps(calls, "SFT training", _steps(6, 2))
    assert "{'loss'" not in r.out + r.err
    steps = [line for line in r.err.splitlines() if line.startswith("SFT step ")]
    assert len(steps) == 3 and all("loss " in s and "lr " in s and "margin" not in s for s in steps), r.err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["M1", "sft"]
    assert json.loads((out / "cream_train_config.json").read_text())["report_to"] == "none"


# ------------------------------------------------------------------------------------------- cream run
def test_cream_run_shows_the_training_bar_and_keeps_its_logs(prefs, tiny_model, tmp_path):
    """StageRunner (`cream run`'s side) on a real `cream train` process: its steps become the run's own bar
    ("DPO training (train-M2)", 0 … total), its step lines are the run's log lines, its TensorBoard events land in
    RUN/logs/tb/train-M2, none in the model."""
    from cream_train.run.launch import Launcher
    from cream_train.run.stage_process import StageRunner

    run = tmp_path / "run"
    model = run / "models" / "M2"
    lines, calls = [], []
    runner = StageRunner(run, log=lines.append, progress=lambda *a: calls.append(a))
    argv = ["train", str(prefs), "--stage", "dpo", "--model", str(tiny_model), "--out", str(model),
            "--batch-size", "4", "--report-to", "tensorboard"]
    (rec,) = runner.run("train-M2", argv, Launcher())
    total = _steps(len(PAIRS), 4)
    assert rec["metrics"]["global_step"] == total
    _assert_counts_steps(calls, "DPO training (train-M2)", total)
    assert sum("train-M2 │" in m and "DPO step " in m and "margin" in m for m in lines) == total, lines
    assert not any("'loss'" in m or "cream-progress" in m for m in lines)
    assert list((run / "logs" / "tb" / "train-M2").rglob(EVENTS))
    assert not list(model.rglob(EVENTS)) and not (model / "runs").exists()
    assert not (run / "models" / "M2.logs").exists()
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "logs" / "tb" / "train-M2"))
    events.Reload()
    assert "train/rewards/margins" in events.Tags()["scalars"]
    args = events.Tensors("args/text_summary")[0].tensor_proto.string_val[0].decode()
    assert f'"run_name": "{run.name}/train-M2"' in args
