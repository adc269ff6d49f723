"""Issue #26, "'done' is verified, never assumed": every resume, skip and "already done" checks what is on disk — the
parts a manifest lists are there and read, the counts add up, a model has config, weights and tokenizer — and redoes
what is missing or refuses with one line; a run manifest that cannot be trusted is refused; a new part never takes
the name of one on disk; hidden staging folders are not tables; a stopped follower leaves no heartbeat behind.

Stage-level tests work on small outputs; the loop's tests share ONE finished run, restored before each test."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pyarrow as pa
import pytest

from cream_data.errors import CreamError
from cream_data.tables import io
from tests.support import REPO
from tests.support.answers import ANSWERS, responses_table
from tests.support.cli import assert_user_error, cream_executable, snapshot
from tests.support.runs import write_tiny_run_config

BY_ROW = [("prompt_id", "ascending"), ("response_idx", "ascending")]


def prompts_table(k: int = 3, start: int = 0) -> pa.Table:
    ids = [f"p{i}" for i in range(start, start + k)]
    return pa.table({"prompt_id": ids, "prompt": [[{"role": "user", "content": f"Tell me about {i}"}] for i in ids],
                     "source": ["t"] * k, "reference_answer": pa.array([None] * k, pa.string())})


def truncate(path: Path) -> None:
    """Half of the file is left: its Parquet footer is gone (a copy cut short, a full disk)."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def edit_json(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


# ---------------------------------------------------------------------------- tables (io.py)
def three_parts(folder: Path) -> io.PartWriter:
    w = io.PartWriter(folder, "prompts")
    for i in range(3):
        w.write(prompts_table(1, start=i))
    w.finish()
    return w


def test_a_new_part_never_takes_the_name_of_one_on_disk(tmp_path):
    """Item 3: parts are numbered past the highest on disk, not by their count (which, once a part is gone, names one
    that is still there and would overwrite it)."""
    w = three_parts(tmp_path / "t")
    (tmp_path / "t" / "part-00001.parquet").unlink()
    kept = (tmp_path / "t" / "part-00002.parquet").read_bytes()
    assert w.write(prompts_table(1, start=7)).name == "part-00003.parquet"
    assert (tmp_path / "t" / "part-00002.parquet").read_bytes() == kept


DAMAGE = {
    "part deleted": (lambda t: (t / "part-00001.parquet").unlink(),
                     "manifest lists part-00001.parquet, which is missing"),
    "part truncated": (lambda t: truncate(t / "part-00001.parquet"),
                       "part-00001.parquet: not a readable Parquet file"),
    "rows edited": (lambda t: edit_json(t / io.MANIFEST, lambda m: m.update(rows=7)),
                    "says 7 rows, its 3 part(s) hold 3"),
    "part unlisted": (lambda t: edit_json(t / io.MANIFEST, lambda m: m.update(parts=m["parts"][:2], rows=2)),
                      "does not list part-00002.parquet"),
    "parts not a list": (lambda t: edit_json(t / io.MANIFEST, lambda m: m.update(parts="part-00000.parquet")),
                         "corrupt manifest (expected 'parts' a list of file names"),
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_manifest_its_parts_do_not_bear_out_is_not_done(tmp_path, damage):
    """A finished folder damaged afterwards: the writer no longer calls it done, and readers refuse it naming the
    file, instead of reading fewer rows than the manifest says."""
    w = three_parts(tmp_path / "t")
    assert w.done() and io.read_table(tmp_path / "t", "prompts").num_rows == 3
    spoil, needle = DAMAGE[damage]
    spoil(tmp_path / "t")
    assert not w.done() and needle in w.problem()
    with pytest.raises(CreamError, match=re.escape(needle)):
        io.read_table(tmp_path / "t", "prompts")


def test_one_shard_part_gone_makes_the_sharded_table_incomplete(tmp_path):
    for i in range(2):
        w = io.PartWriter(tmp_path / "s", "prompts", shard=(i, 2))
        w.write(prompts_table(2, start=2 * i))
        w.finish()
    assert io.read_table(tmp_path / "s", "prompts").num_rows == 4
    (tmp_path / "s" / "part-00000.shard-00001-of-00002.parquet").unlink()
    assert not io.PartWriter(tmp_path / "s", "prompts", shard=(1, 2)).done()
    with pytest.raises(CreamError, match="part-00000.shard-00001-of-00002.parquet, which is missing"):
        io.read_manifest(tmp_path / "s")


def test_tables_inside_hidden_folders_are_not_listed(tmp_path, cream_exe):
    """Item 4: the old copy a replace keeps aside (``.NAME.replaced``) and a staging folder (``.NAME.tmp-…``) hold
    tables that are not the run's: `cream sql` and every other lister skip them."""
    run = tmp_path / "run"
    io.write_table(prompts_table(2), run / "prompts" / "subset-1", "prompts")
    io.write_table(prompts_table(5), run / ".prompts.replaced" / "subset-1", "prompts")
    io.write_table(prompts_table(7), run / "iter-1" / ".logps.tmp-1a2b" / "m", "prompts")
    assert [p.relative_to(run).as_posix() for _, p in io.iter_table_paths(run)] == ["prompts/subset-1"]
    r = cream_exe("sql", run, "SELECT count(*) AS n FROM prompts", "--format", "json", cwd=tmp_path)
    assert r.code == 0 and json.loads(r.out) == [{"n": 2}], r


# ---------------------------------------------------------------------------- cream sample
@pytest.fixture(scope="module")
def sampled(tmp_path_factory, tiny_model):
    """A finished responses folder of 3 prompts x 2, one part per prompt, and the engine that wrote it."""
    from cream_data.engines import models
    from cream_data.engines.hf_sample import HfSampler
    from cream_data.stages.sample import SampleConfig, sample

    root = tmp_path_factory.mktemp("sampled")
    prompts = io.write_table(prompts_table(3), root / "prompts", "prompts")
    cfg = SampleConfig(model=str(tiny_model), n=2, max_new_tokens=4, batch_size=1, prompts_per_part=1)
    engine = HfSampler.load(models.resolve(str(tiny_model)))
    sample(prompts, cfg, root / "responses", engine=engine)
    return prompts, cfg, root / "responses", engine, io.read_table(root / "responses", "responses").sort_by(BY_ROW)


SAMPLE_DAMAGE = {"part deleted": (DAMAGE["part deleted"][0], 1), "part truncated": (DAMAGE["part truncated"][0], 1),
                 "rows edited": (DAMAGE["rows edited"][0], 0), "manifest lists one part less": (
                     lambda t: edit_json(t / io.MANIFEST, lambda m: m.update(parts=m["parts"][1:], rows=4)), 0)}


@pytest.mark.parametrize("damage", SAMPLE_DAMAGE)
def test_sample_resumes_a_damaged_finished_folder(sampled, tmp_path, damage):
    """Item 1: the rerun samples what is missing (the same rows) and writes a manifest that adds up, instead of
    saying "already done" over missing rows."""
    from cream_data.stages.sample import sample

    prompts, cfg, done, engine, whole = sampled
    out = shutil.copytree(done, tmp_path / "responses")
    spoil, resampled = SAMPLE_DAMAGE[damage]
    spoil(out)
    s = sample(prompts, cfg, out, engine=engine)
    assert (s.prompts_sampled, s.prompts_skipped, s.rows) == (resampled, 3 - resampled, 6), s
    assert any("not done; resuming" in n for n in s.notes), s.notes
    assert io.read_table(out, "responses").sort_by(BY_ROW).equals(whole)
    assert io.read_manifest(out)["rows"] == 6 and io.PartWriter(out, "responses").done()


def test_sample_cli_says_what_it_redid(sampled, tmp_path, cream_exe, tiny_model):
    prompts, _, done, _, whole = sampled
    out = shutil.copytree(done, tmp_path / "responses")
    (out / "part-00001.parquet").unlink()
    r = cream_exe("sample", prompts, "--model", tiny_model, "--n", "2", "--max-new-tokens", "4", "--batch-size", "1",
                  "--prompts-per-part", "1", "--out", out, cwd=tmp_path)
    assert r.code == 0, r
    assert "sampled 1 prompts x 2 (2 already done)" in r.out and "6 responses on disk" in r.out, r.out
    assert "manifest lists part-00001.parquet, which is missing: not done; resuming" in r.err, r.err
    assert sorted(p.name for p in out.glob("part-*")) == ["part-00000.parquet", "part-00002.parquet",
                                                          "part-00003.parquet"]
    assert io.read_table(out, "responses").sort_by(BY_ROW).equals(whole)


def test_sample_refuses_parts_that_do_not_add_up(sampled, tmp_path, cream_exe, tiny_model):
    """A part that is not this run's (a copy of another) makes more responses than prompts x n: one line, and no
    manifest claims the folder done."""
    prompts, _, done, _, _ = sampled
    out = shutil.copytree(done, tmp_path / "responses")
    shutil.copy(out / "part-00001.parquet", out / "part-00007.parquet")
    before = snapshot(tmp_path)
    r = cream_exe("sample", prompts, "--model", tiny_model, "--n", "2", "--max-new-tokens", "4", "--batch-size", "1",
                  "--prompts-per-part", "1", "--out", out, cwd=tmp_path)
    assert_user_error(r, f"--out {out}: its parts hold 8 responses, expected 3 prompts x 2", "--overwrite")
    assert snapshot(tmp_path) == before  # refused before anything changed (its manifest is no claim: reads refuse it)


# ---------------------------------------------------------------------------- cream eval
def test_eval_redoes_the_task_of_a_part_gone_or_unreadable(tiny_model, shared_data, tmp_path):
    """Item 1 and 3: the task whose part was deleted is evaluated again into a new part (before, it took the name of
    the other task's part and overwrote it); an unreadable part is removed and its task redone, not a crash."""
    from cream_data.stages.eval_config import EvalConfig
    from cream_data.stages.evaluate import evaluate

    cfg = EvalConfig(tasks=("arc_easy", "gsm8k"), limit=2, data_dir=str(shared_data), max_new_tokens=4, batch_size=2)
    out = tmp_path / "ev"
    evaluate(str(tiny_model), cfg, out)
    key = [("task", "ascending"), ("example_id", "ascending")]
    whole = io.read_table(out, "eval").sort_by(key)
    first = io.read_table(out / "part-00000.parquet", "eval")["task"][0].as_py()
    (out / "part-00000.parquet").unlink()
    s = evaluate(str(tiny_model), cfg, out)
    assert s.tasks_run == (first,) and s.n == {"arc_easy": 2, "gsm8k": 2}, s
    assert sorted(p.name for p in out.glob("part-*")) == ["part-00001.parquet", "part-00002.parquet"]
    assert io.read_table(out, "eval").sort_by(key).equals(whole)
    truncate(out / "part-00001.parquet")
    s = evaluate(str(tiny_model), cfg, out)
    assert len(s.tasks_run) == 1 and s.n == {"arc_easy": 2, "gsm8k": 2}, s
    assert io.read_table(out, "eval").sort_by(key).equals(whole)


# ---------------------------------------------------------------------------- the label stage's cache
SCORES_KEY = [("prompt_id", "ascending"), ("response_idx", "ascending"), ("scorer", "ascending")]


def labeled(tiny_model, folder: Path, answers: dict, out: Path) -> pa.Table:
    """``answers`` labeled by the tiny model into ``out``; its scores, sorted."""
    from cream_data.stages.label import LabelConfig, label

    resp = io.write_table(responses_table(answers), folder, "responses")
    label(resp, LabelConfig(model=str(tiny_model)), out)
    return io.read_table(out / "scores", "scores").sort_by(SCORES_KEY)



def test_an_unreadable_cache_part_is_scored_again(tiny_model, tmp_path):
    """Before: the label stage stopped on the cache part it could not read; now it is removed and its rows scored."""
    scores = labeled(tiny_model, tmp_path / "responses", ANSWERS, tmp_path / "out")
    [cache] = (tmp_path / "out" / "logps").iterdir()
    truncate(cache / "part-00000.parquet")
    assert labeled(tiny_model, tmp_path / "responses", ANSWERS, tmp_path / "out").equals(scores)


def test_a_cached_value_of_another_response_is_not_taken(tiny_model, tmp_path):
    """The cache keys on (prompt_id, response_idx); a value stored for another response there (its token count
    differs) is scored again instead of taken (before: the stale log-prob was)."""
    labeled(tiny_model, tmp_path / "responses", ANSWERS, tmp_path / "out")
    for folder in ("scores", "preferences"):  # the cache alone is left of the earlier labeling
        shutil.rmtree(tmp_path / "out" / folder)
    other = {**ANSWERS, "p2": ["Answer: 4", "It is five, because two and two make four and one more makes five."]}
    assert labeled(tiny_model, tmp_path / "other", other, tmp_path / "out").equals(
        labeled(tiny_model, tmp_path / "other", other, tmp_path / "fresh"))


# ---------------------------------------------------------------------------- cream run
# 1 iteration of the tiny run, 2 responses a prompt, the last model evaluated
ONE_ITERATION = {"iterations": 1, "sft": {"limit": 8}, "sample": {"n": 2, "max_new_tokens": 6},
                 "eval": {"models": "last", "max_new_tokens": 4}}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, tiny_model, shared_data):
    """ONE finished 1-iteration run (prompts, sft-data, train-M1, sample-1, label-1, train-M2, eval-M2) and a copy of
    it; each test gets the run back as it was (at the same path: the stages' outputs record absolute paths)."""
    from cream_train.run.loop import run

    tmp = tmp_path_factory.mktemp("done")
    cfg = write_tiny_run_config(tmp, ONE_ITERATION, name="run", model=tiny_model, eval={"data_dir": shared_data})
    run(cfg, log=lambda _m: None, in_process=True)
    shutil.copytree(tmp / "run", tmp / "pristine", symlinks=True)
    return tmp, cfg


@pytest.fixture
def run_dir(finished_run):
    tmp, cfg = finished_run
    if (tmp / "run").exists():
        shutil.rmtree(tmp / "run")
    shutil.copytree(tmp / "pristine", tmp / "run", symlinks=True)
    return tmp / "run", cfg


def plan(cream_exe, cfg: Path) -> dict[str, tuple[str, str]]:
    """stage -> (status, note) of `cream run CONFIG --plan`."""
    r = cream_exe("run", cfg, "--plan", cwd=cfg.parent)
    assert r.code == 0, r
    lines = [line for line in r.out.splitlines() if line and not line.startswith(" ") and not line[0].isdigit()]
    return {line[8:].split()[0]: (line[:7].strip(), " ".join(line[8:].split()[1:])) for line in lines}


DOWNSTREAM_OF_M2 = {"eval-M2"}
DOWNSTREAM_OF_SAMPLE_1 = {"label-1", "train-M2", "eval-M2"}


def test_run_retrains_a_model_whose_weights_are_gone(run_dir, cream_exe):
    """Item 2: M2 without its model.safetensors is not done: the plan says so, the run retrains it (and redoes what
    read it), and then every stage is done and whole."""
    run, cfg = run_dir
    (run / "models" / "M2" / "model.safetensors").unlink()
    planned = plan(cream_exe, cfg)
    assert planned["train-M2"][0] == "resume" and "M2/model.safetensors: missing" in planned["train-M2"][1]
    assert {n for n, (s, _) in planned.items() if s == "stale"} == DOWNSTREAM_OF_M2, planned
    r = cream_exe("run", cfg, "--in-process", cwd=cfg.parent, timeout=600)
    assert r.code == 0, r
    assert "train-M2: recorded as done, but" in r.err and "2 stage(s) ran, 5 skipped" in r.err, r.err
    from cream_train.lineage import checkpoint_problem

    assert checkpoint_problem(run / "models" / "M2") is None
    assert {s for s, _ in plan(cream_exe, cfg).values()} == {"done"}


def test_run_redoes_the_eval_task_whose_part_is_gone(run_dir, cream_exe):
    run, cfg = run_dir
    (run / "eval" / "M2" / "part-00000.parquet").unlink()
    assert plan(cream_exe, cfg)["eval-M2"] == ("resume", f"{run / 'eval' / 'M2'}: manifest lists part-00000.parquet, "
                                                         "which is missing")
    r = cream_exe("run", cfg, "--in-process", cwd=cfg.parent, timeout=600)
    assert r.code == 0, r
    assert "1 stage(s) ran, 6 skipped" in r.err, r.err
    tasks = io.read_table(run / "eval" / "M2", "eval")["task"].to_pylist()
    assert sorted(tasks) == ["arc_easy", "arc_easy", "gsm8k", "gsm8k"]


PLAN_DAMAGE = {
    "recorded output path changed": (
        lambda run: edit_json(run / "manifest.json", lambda m: m["stages"]["sample-1"].update(outputs=["iter-1/x"])),
        "sample-1", "sample-1 records its outputs as ['iter-1/x'], expected ['iter-1/responses']",
        DOWNSTREAM_OF_SAMPLE_1),
    "table rows edited": (
        lambda run: edit_json(run / "iter-1" / "responses" / io.MANIFEST, lambda m: m.update(rows=99)),
        "sample-1", "responses/_manifest.json: says 99 rows, its 1 part(s) hold 8", DOWNSTREAM_OF_SAMPLE_1),
    "marked done, never finished": (
        lambda run: (run / "iter-1" / "preferences" / io.MANIFEST).unlink(),
        "label-1", "preferences: table is incomplete: no manifest", {"train-M2", "eval-M2"}),
    "config unreadable": (
        lambda run: (run / "models" / "M2" / "config.json").write_text("{not json"),
        "train-M2", "M2/config.json: corrupt config.json (not valid JSON", DOWNSTREAM_OF_M2),
    "tokenizer gone": (
        lambda run: [f.unlink() for f in (run / "models" / "M1").glob("tokenizer*")],
        "train-M1", "M1: no tokenizer files", {"sample-1", "label-1", "train-M2", "eval-M2"}),
}


@pytest.mark.parametrize("damage", PLAN_DAMAGE)
def test_plan_checks_what_the_manifest_says_is_done(run_dir, cream_exe, damage):
    """The manifest says done; what is on disk (or the record itself) says otherwise: the stage resumes, and what
    reads it is stale (its outputs need not be the same once redone)."""
    run, cfg = run_dir
    spoil, stage, note, stale = PLAN_DAMAGE[damage]
    spoil(run)
    manifest = (run / "manifest.json").read_bytes()
    planned = plan(cream_exe, cfg)
    assert planned[stage][0] == "resume" and note in planned[stage][1], planned[stage]
    assert {n for n, (s, _) in planned.items() if s == "stale"} == stale, planned
    assert {s for n, (s, _) in planned.items() if n != stage and n not in stale} == {"done"}
    assert (run / "manifest.json").read_bytes() == manifest


CORRUPT = {
    "not JSON": (lambda p: p.write_text("{bad"), "not valid JSON"),
    "stages a list": (lambda p: edit_json(p, lambda m: m.update(stages=[])), "'stages' is [], expected an object"),
    "status a number": (lambda p: edit_json(p, lambda m: m["stages"]["sample-1"].update(status=5)),
                        "stage sample-1: 'status' is 5, expected a string"),
    "a made-up carried model": (lambda p: edit_json(p, lambda m: m.update(carried={"M1": "/elsewhere"})),
                                "'carried' says M1 is /elsewhere"),
}


@pytest.mark.parametrize("corrupt", CORRUPT)
def test_a_run_manifest_that_cannot_be_trusted_is_refused(run_dir, cream_exe, corrupt):
    run, cfg = run_dir
    spoil, needle = CORRUPT[corrupt]
    spoil(run / "manifest.json")
    before = snapshot(cfg.parent)
    for args in ([], ["--plan"]):
        r = cream_exe("run", cfg, *args, cwd=cfg.parent)
        assert_user_error(r, f"{run / 'manifest.json'}: corrupt run manifest", needle, "restore it")
    assert snapshot(cfg.parent) == before


# ---------------------------------------------------------------------------- followers' heartbeats
FOLLOWER = {"num_machines": 2, "main_process_ip": "127.0.0.1", "start_timeout": 2, "alive_timeout": 2}


def test_a_heartbeat_is_removed_however_its_block_ends(tmp_path):
    from cream_train.run.heartbeat import Heartbeat, heartbeat_file

    with pytest.raises(RuntimeError), Heartbeat(tmp_path, 1, timeout=1.0):
        assert heartbeat_file(tmp_path, 1).is_file()
        raise RuntimeError("a stage failed")
    assert not (tmp_path / ".machines").exists()
    heartbeat_file(tmp_path, 0).parent.mkdir()
    heartbeat_file(tmp_path, 0).write_text("machine 0 beats")
    with Heartbeat(tmp_path, 1, timeout=1.0):
        pass
    assert sorted(p.name for p in (tmp_path / ".machines").iterdir()) == ["0.alive"]  # another machine's stays


def test_a_follower_that_times_out_or_is_terminated_leaves_no_heartbeat(tmp_path, tiny_model):
    """Item 5: `cream run --machine-rank 1` whose machine 0 never shows up stops with one line, and its
    .machines/1.alive is gone; so it is after a SIGTERM (a scheduler ending the job)."""
    from tests.support.processes import ENV

    cfg = write_tiny_run_config(tmp_path, name="alone", model=tiny_model, iterations=1, eval={"models": "none"},
                                nodes=FOLLOWER)
    alive = tmp_path / "alone" / ".machines" / "1.alive"
    exe = str(cream_executable())
    r = subprocess.run([exe, "run", str(cfg), "--machine-rank", "1"], cwd=REPO, env={**os.environ, **ENV},
                       capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert r.returncode == 2 and "no heartbeat from machine 0" in r.stderr, r.stderr
    assert not alive.exists() and not alive.parent.exists()

    write_tiny_run_config(tmp_path, name="alone", model=tiny_model, iterations=1, eval={"models": "none"},
                          nodes={**FOLLOWER, "start_timeout": 120})
    proc = subprocess.Popen([exe, "run", str(cfg), "--machine-rank", "1"], cwd=REPO,
                            env={**os.environ, **ENV}, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not alive.is_file():
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.poll() else "timeout"
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    assert not alive.exists()
