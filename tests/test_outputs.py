"""Output paths: no command replaces what is not its own, one writer per output, caches keyed by a model's
content (not its path), nothing half-written on failure, and folders made with the user's umask.

User-facing paths run through the installed `cream` console script (`cream_exe`), as users run them."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from cream_data.tables import io
from cream_data.errors import CreamError
from tests.support import REPO
from tests.support.cli import assert_user_error, snapshot
from tests.support.runs import DEFAULT, write_tiny_run_config
from tests.support.tables import prompts_table, responses_table

GSM = '{"question": "What is 2+2?", "answer": "2+2=4\\n#### 4"}\n{"question": "What is 3+3?", "answer": "#### 6"}\n'


@pytest.fixture
def user_folder(tmp_path) -> Path:
    """A folder of the user's own files (one of them the source) that no command may touch."""
    d = tmp_path / "mine"
    d.mkdir()
    (d / "notes.txt").write_text("precious")
    (d / "data.jsonl").write_text(GSM)
    return d


@pytest.fixture(scope="module")
def prompts_dir(tmp_path_factory) -> Path:
    return io.write_table(prompts_table(3), tmp_path_factory.mktemp("p") / "prompts", "prompts")


@pytest.fixture(scope="module")
def responses_dir(tmp_path_factory) -> Path:
    return io.write_table(responses_table(3, 3), tmp_path_factory.mktemp("r") / "responses", "responses")


def _run_config(tmp_path: Path, model: Path) -> Path:
    """A valid `cream run` config on the tiny model and the demo's own data (no benchmark data needed), without a
    run_dir (its default: beside the config)."""
    return write_tiny_run_config(tmp_path / "cfg", name="run", model=model, run_dir=DEFAULT, eval={"models": "none"})


def copy_model(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def replace_weights(model: Path, other: Path) -> None:
    """'Retrain in place': the checkpoint at the same path now holds other weights."""
    tmp = model / ".w.tmp"
    shutil.copy2(other / "model.safetensors", tmp)
    os.replace(tmp, model / "model.safetensors")


# ---------------------------------------------------------------------------- 1. never replace what is not ours
@pytest.mark.parametrize("command,overwrite", [(c, False) for c in ("prompts", "sample", "label", "train", "eval",
                                                                     "run", "inspect")]
                         + [(c, True) for c in ("prompts", "sample", "train", "eval")])  # those with --overwrite
def test_a_folder_of_user_files_is_never_replaced(cream_exe, tmp_path, user_folder, prompts_dir, responses_dir,
                                                  tiny_model, command, overwrite):
    ow = ["--overwrite"] if overwrite else []
    args = {
        "prompts": ["prompts", user_folder / "data.jsonl", "--out", user_folder],
        "sample": ["sample", prompts_dir, "--model", tiny_model, "--out", user_folder],
        "label": ["label", responses_dir, "--model", tiny_model, "--out", user_folder],
        "train": ["train", responses_dir, "--model", tiny_model, "--out", user_folder],
        "eval": ["eval", "--model", tiny_model, "--tasks", "gsm8k", "--out", user_folder],
        "run": ["run", _run_config(tmp_path, tiny_model), "--out", user_folder],
        "inspect": ["inspect", responses_dir, "--out", user_folder],
    }[command]
    before = snapshot(tmp_path)
    res = cream_exe(*args, *ow)
    assert_user_error(res, str(user_folder), "not a `cream", "never replaces other files")
    assert snapshot(tmp_path) == before
    assert (user_folder / "notes.txt").read_text() == "precious"


def test_prompts_refuses_the_current_folder_holding_its_source(cream_exe, user_folder):
    before = snapshot(user_folder)
    res = cream_exe("prompts", "data.jsonl", "--out", ".", cwd=user_folder)
    assert_user_error(res, "--out .", "current folder")
    res = cream_exe("prompts", "data.jsonl", "--out", str(user_folder), cwd=user_folder)
    assert_user_error(res, "current folder")
    assert snapshot(user_folder) == before


@pytest.mark.parametrize("target", ["notes.txt", "other.parquet"])
def test_an_existing_file_is_not_turned_into_a_table(cream_exe, tmp_path, user_folder, target):
    if target == "other.parquet":  # a Parquet file of another table kind
        io.write_table(pa.table({"model": ["m"], "task": ["gsm8k"], "example_id": ["1"], "response": ["r"],
                                 "prediction": ["4"], "answer": ["4"], "correct": [True]}),
                       user_folder / target, "eval")
    before = snapshot(tmp_path)
    for extra in ([], ["--overwrite"]):
        res = cream_exe("prompts", user_folder / "data.jsonl", "--out", user_folder / target, *extra)
        assert_user_error(res, target, "existing file that is not a `cream prompts` table")
    assert snapshot(tmp_path) == before


def test_prompts_replaces_its_own_table(cli, tmp_path, user_folder):
    out = tmp_path / "p"
    assert cli("prompts", user_folder / "data.jsonl", "--out", out).code == 0
    assert_user_error(cli("prompts", user_folder / "data.jsonl", "--out", out, "--limit", "1"),
                      "earlier `cream prompts` table", "--overwrite")
    assert cli("prompts", user_folder / "data.jsonl", "--out", out, "--limit", "1", "--overwrite").code == 0
    assert io.read_table(out, "prompts").num_rows == 1
    assert cli("prompts", user_folder / "data.jsonl", "--out", out, "--split-into", "2", "--overwrite").code == 0
    assert sorted(p.name for p in out.iterdir()) == ["subset-1", "subset-2"]


def test_train_overwrite_replaces_only_its_own_checkpoint(cream_exe, tmp_path, tiny_model):
    from tests.support.training import make_preferences

    prefs = make_preferences(tmp_path / "prefs", tiny_model)
    ckpt = tmp_path / "ckpt"
    shutil.copytree(tiny_model, ckpt)  # a checkpoint, but not one `cream train` wrote: no lineage
    before = snapshot(tmp_path)
    res = cream_exe("train", prefs, "--model", tiny_model, "--out", ckpt, "--overwrite", "--max-steps", "1")
    assert_user_error(res, str(ckpt), "not a `cream train` checkpoint")
    assert snapshot(tmp_path) == before


def test_an_unwritable_out_is_refused_before_any_model_loads(cream_exe, tmp_path, prompts_dir, tiny_model):
    if os.geteuid() == 0:  # root writes anywhere; an --out under a regular file is unwritable for everyone
        blocked = tmp_path / "a-file"
        blocked.write_text("x")
        out = blocked / "responses"
        needles = [str(blocked), "is a file, not a folder"]
    else:
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o555)
        out = ro / "responses"
        needles = [str(ro), "cannot write"]
    before = snapshot(tmp_path)
    for args in (["sample", prompts_dir, "--model", tiny_model],
                 ["prompts", REPO / "examples" / "data" / "demo_prompts.jsonl"]):
        res = cream_exe(*args, "--out", out)
        assert_user_error(res, *needles)
    assert snapshot(tmp_path) == before


# ---------------------------------------------------------------------------- 3. caches keyed by content, not path
def test_content_id_follows_the_weights_not_the_path(tmp_path, tiny_model, tiny_model_b):
    from cream_data.engines.models import content_id

    a = copy_model(tiny_model, tmp_path / "a")
    linked = tmp_path / "linked"
    linked.mkdir()
    for f in a.iterdir():
        os.link(f, linked / f.name)
    assert content_id(str(a)) == content_id(str(tiny_model)) == content_id(str(linked))
    assert content_id(str(tiny_model_b)) != content_id(str(a))
    replace_weights(a, tiny_model_b)
    assert content_id(str(a)) == content_id(str(tiny_model_b))
    cfg = json.loads((a / "tokenizer_config.json").read_text())
    cfg["chat_template"] = "{{ messages[0]['content'] }}"
    (a / "tokenizer_config.json").write_text(json.dumps(cfg))
    assert content_id(str(a)) != content_id(str(tiny_model_b))  # the tokenizer/template is part of the model


def _rchar() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise AssertionError("no rchar in /proc/self/io")


@pytest.mark.skipif(not Path("/proc/self/io").exists(), reason="needs /proc/self/io to count bytes read")
def test_content_id_of_a_large_checkpoint_reads_about_a_megabyte(tmp_path):
    from cream_data.engines.models import content_id

    big = tmp_path / "big"
    big.mkdir()
    (big / "config.json").write_text("{}")
    header = json.dumps({"w": {"dtype": "F32", "shape": [1 << 29], "data_offsets": [0, 1 << 31]}}).encode()
    with open(big / "model.safetensors", "wb") as f:  # 2 GiB, sparse: costs no disk
        f.write(len(header).to_bytes(8, "little") + header)
        f.truncate(8 + len(header) + (1 << 31))
    before = _rchar()
    content_id(str(big))
    read = _rchar() - before
    assert read < 4 << 20, f"read {read} bytes of a 2 GiB checkpoint"
    # Training moves every weight; the sampled blocks see any changed stretch longer than 1/15 of a file.
    mid = tmp_path / "mid"
    mid.mkdir()
    (mid / "config.json").write_text("{}")
    size = 64 << 20
    with open(mid / "model.safetensors", "wb") as f:
        f.truncate(size)
    ids = {content_id(str(mid))}
    for start in (0.1, 0.37, 0.5, 0.93):  # a stretch of size/15 at several places
        with open(mid / "model.safetensors", "r+b") as f:
            f.seek(int(start * (size - size // 15)))
            f.write(os.urandom(size // 15))
        ids.add(content_id(str(mid)))
    assert len(ids) == 5


def test_label_rescoring_after_the_model_was_retrained_in_place(cli, tmp_path, responses_dir, tiny_model,
                                                                tiny_model_b):
    m1 = copy_model(tiny_model, tmp_path / "M1")
    out = tmp_path / "lab"
    assert cli("label", responses_dir, "--model", m1, "--out", out).code == 0
    first = io.read_table(out / "scores", "scores")["logp"].to_numpy()
    replace_weights(m1, tiny_model_b)  # `cream train … --out M1 --overwrite`
    res = cli("label", responses_dir, "--model", m1, "--out", out)
    assert res.code == 0 and "changed since its log-probs were cached" in res.err
    second = io.read_table(out / "scores", "scores")["logp"].to_numpy()
    assert cli("label", responses_dir, "--model", tiny_model_b, "--out", tmp_path / "fresh").code == 0
    fresh = io.read_table(tmp_path / "fresh" / "scores", "scores")["logp"].to_numpy()
    assert not np.allclose(first, second)
    np.testing.assert_allclose(second, fresh, rtol=1e-6)
    manifest = io.read_manifest(out / "preferences")
    from cream_data.engines.models import content_id

    assert manifest["inputs"]["model_ids"] == {str(m1.resolve()): content_id(str(tiny_model_b))}


def test_sample_does_not_resume_with_a_replaced_checkpoint(cream_exe, tmp_path, prompts_dir, tiny_model,
                                                           tiny_model_b):
    m = copy_model(tiny_model, tmp_path / "M")
    out = tmp_path / "resp"
    args = ("sample", prompts_dir, "--model", m, "--n", "2", "--max-new-tokens", "4", "--out", out)
    assert cream_exe(*args).code == 0
    before = snapshot(out)
    replace_weights(m, tiny_model_b)
    res = cream_exe(*args)
    assert_user_error(res, str(out), f"the model at {m.resolve()} changed since", "--overwrite")
    assert snapshot(out) == before
    assert cream_exe(*args, "--overwrite").code == 0
    assert io.read_table(out, "responses").num_rows == 6


# ---------------------------------------------------------------------------- 4. one writer per output
def _start(cmd: list, **kw) -> subprocess.Popen:
    return subprocess.Popen([str(c) for c in cmd], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True, **kw)


def _wait_held(lock: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    """Until ``proc`` holds ``lock`` and has said so in its ``.holder`` file (written after the flock is taken: the
    lock file alone appears before, so a writer frozen then would not hold it yet, or not name itself)."""
    holder, t0 = lock.with_name(lock.name + ".holder"), time.time()
    while True:
        try:
            if json.loads(holder.read_text()).get("pid") == proc.pid:
                return
        except (FileNotFoundError, ValueError):
            pass
        assert proc.poll() is None, f"first writer ended early: {proc.communicate()}"
        assert time.time() - t0 < timeout, f"{holder} never named pid {proc.pid}"
        time.sleep(0.02)


@contextmanager
def _paused(proc: subprocess.Popen):
    """The writer ``proc`` frozen (SIGSTOP) while the block runs, so it holds its lock however little work it has
    left; resumed (SIGCONT) after."""
    os.killpg(proc.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.killpg(proc.pid, signal.SIGCONT)


def _holder(path: Path) -> subprocess.Popen:
    """A process that holds the output lock of ``path`` until killed."""
    code = ("import sys, time; from cream_data.tables.outputs import locked\n"
            f"with locked({str(path)!r}):\n    print('held', flush=True); time.sleep(600)")
    p = _start([sys.executable, "-c", code], cwd=REPO)
    assert p.stdout.readline().strip() == "held"
    return p


def test_two_samplers_on_one_output_one_is_refused(cream_exe, tmp_path, tiny_model):
    from tests.support.cli import cream_executable

    # little work: the lock is taken before the model loads, and the first writer is frozen while the second runs
    prompts = io.write_table(prompts_table(3), tmp_path / "prompts", "prompts")
    out = tmp_path / "resp"
    args = ["sample", prompts, "--model", tiny_model, "--n", "2", "--max-new-tokens", "8", "--batch-size", "1",
            "--prompts-per-part", "1", "--out", out]
    first = _start([cream_executable(), *args])
    try:
        _wait_held(tmp_path / ".resp.lock", first)
        with _paused(first):
            second = cream_exe(*args)
        assert_user_error(second, str(out), "is being written by pid", str(first.pid), "cream sample")
    finally:
        _, err = first.communicate(timeout=600)
    assert first.returncode == 0, err
    t = io.read_table(out, "responses")
    assert t.num_rows == 6 and len(set(zip(t["prompt_id"].to_pylist(), t["response_idx"].to_pylist()))) == 6
    assert not (tmp_path / ".resp.lock").exists()


def test_two_labelers_on_one_output_one_is_refused(cream_exe, tmp_path, tiny_model, tiny_model_b):
    from tests.support.cli import cream_executable

    responses = io.write_table(responses_table(4, 3), tmp_path / "responses", "responses")
    out = tmp_path / "lab"
    args = ["label", responses, "--model", tiny_model, "--ref", tiny_model_b, "--out", out, "--batch-size", "1"]
    first = _start([cream_executable(), *args])
    try:
        _wait_held(tmp_path / ".lab.lock", first)
        with _paused(first):  # the first labeler holds the lock while the second makes its model checks
            second = cream_exe(*args)
        assert_user_error(second, str(out), "is being written by pid", str(first.pid))
    finally:
        _, err = first.communicate(timeout=600)
    assert first.returncode == 0, err
    assert io.read_table(out / "scores", "scores").num_rows == 12


def test_a_second_run_on_one_run_dir_is_refused(cream_exe, tmp_path, tiny_model, shared_data):
    cfg = write_tiny_run_config(tmp_path, name="run", model=tiny_model, eval={"data_dir": shared_data})
    holder = _holder(tmp_path / "run")  # e.g. a first `cream run` of this config, still going
    try:
        res = cream_exe("run", cfg)
        assert_user_error(res, "run_dir", str(tmp_path / "run"), f"pid {holder.pid}")
    finally:
        holder.kill()
        holder.wait()
    assert not (tmp_path / "run").exists()


def test_shards_of_one_folder_do_not_block_each_other(tmp_path):
    from cream_data.tables.outputs import locked

    with locked(tmp_path / "o", shard=(0, 2)), locked(tmp_path / "o", shard=(1, 2)):
        with pytest.raises(CreamError, match="is being written by pid"):
            with locked(tmp_path / "o", shard=(1, 2)):
                pass
    assert [p.name for p in tmp_path.iterdir()] == []  # lock files are removed


def test_a_stale_lock_of_a_killed_process_is_taken_over(cli, tmp_path, prompts_dir, tiny_model):
    out = tmp_path / "resp"
    holder = _holder(out)
    os.killpg(holder.pid, signal.SIGKILL)
    holder.wait()
    assert (tmp_path / ".resp.lock").exists()  # left behind by kill -9
    res = cli("sample", prompts_dir, "--model", tiny_model, "--n", "2", "--max-new-tokens", "4", "--out", out)
    assert res.code == 0, res
    assert io.read_table(out, "responses").num_rows == 6
    assert not (tmp_path / ".resp.lock").exists()


# ---------------------------------------------------------------------------- 7. nothing half-written
def test_label_checks_response_idx_before_scoring_anything(cream_exe, tmp_path, tiny_model):
    t = responses_table(3, 3)
    keep = [i for i in range(t.num_rows) if not (t["prompt_id"][i].as_py() == "p001" and t["response_idx"][i].as_py() == 1)]
    responses = io.write_table(t.take(pa.array(keep)), tmp_path / "responses", "responses")
    before = snapshot(tmp_path)
    res = cream_exe("label", responses, "--model", tiny_model, "--out", tmp_path / "lab")
    assert_user_error(res, str(responses), "p001", "[0, 2]", "no gaps")
    assert snapshot(tmp_path) == before


def test_label_with_an_unloadable_model_leaves_no_output(cream_exe, tmp_path, responses_dir, tiny_model):
    broken = copy_model(tiny_model, tmp_path / "broken")
    data = (broken / "model.safetensors").read_bytes()
    (broken / "model.safetensors").write_bytes(data[: len(data) // 2])
    before = snapshot(tmp_path)
    res = cream_exe("label", responses_dir, "--model", broken, "--out", tmp_path / "lab")
    assert res.code == 2 and "Traceback" not in res.err, res
    assert snapshot(tmp_path) == before


def test_inspect_of_a_non_run_leaves_no_study_folder(cream_exe, tmp_path, responses_dir):
    run = tmp_path / "run"
    run.mkdir()
    (run / "manifest.json").write_text(json.dumps({"stages": {}}))
    (run / "config.yaml").write_text("method: cream\n")
    before = snapshot(tmp_path)
    res = cream_exe("inspect", run, responses_dir, "--out", tmp_path / "study")
    assert res.code == 2 and "Traceback" not in res.err, res
    assert snapshot(tmp_path) == before


# ---------------------------------------------------------------------------- 10. permissions follow the umask
def test_table_folders_follow_the_umask(tmp_path, cream_exe, responses_dir):
    src = tmp_path / "d.jsonl"
    src.write_text(GSM)
    exe = str(Path(sys.executable).parent / "cream")
    for umask, mode in (("022", 0o755), ("027", 0o750)):
        out = tmp_path / f"p{umask}"
        subprocess.run(["bash", "-c", f'umask {umask} && "{exe}" prompts "{src}" --out "{out}" && '
                                      f'"{exe}" prompts "{src}" --out "{out}-split" --split-into 2'], check=True,
                       capture_output=True)
        assert out.stat().st_mode & 0o777 == mode
        assert (tmp_path / f"p{umask}-split").stat().st_mode & 0o777 == mode
        assert (tmp_path / f"p{umask}-split" / "subset-1").stat().st_mode & 0o777 == mode


def test_train_refuses_stored_log_probs_of_a_model_retrained_in_place(cream_exe, tmp_path, tiny_model, tiny_model_b):
    """The preferences' stored log-probs are M1's reference only while M1 is what computed them."""
    m1 = copy_model(tiny_model, tmp_path / "M1")
    responses = io.write_table(responses_table(4, 3), tmp_path / "responses", "responses")
    assert cream_exe("label", responses, "--model", m1, "--ref", tiny_model_b, "--out", tmp_path / "lab").code == 0
    prefs = tmp_path / "lab" / "preferences"
    assert io.read_table(prefs, "preferences").num_rows > 0
    args = ("train", prefs, "--model", m1, "--reference", "stored", "--max-steps", "1")
    ok = cream_exe(*args, "--out", tmp_path / "M2")
    assert ok.code == 0, ok  # unchanged M1: the stored log-probs apply
    replace_weights(m1, tiny_model_b)
    before = snapshot(tmp_path)
    res = cream_exe(*args, "--out", tmp_path / "M2b")
    assert_user_error(res, "cannot use the stored reference log-probs", f"the model at {m1.resolve()} changed")
    assert snapshot(tmp_path) == before
