"""User mistakes at the command line, run through the installed `cream` script: usage errors, Ctrl-C,
environment errors, model errors and messages that used to mislead. Each is one stderr line, exit 2
(130 for Ctrl-C), no traceback, nothing left behind."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import time

import pyarrow as pa
import pytest

from cream_data.tables import io
from cream_data.engines import models
from cream_data.errors import CreamError
from tests.support.cli import assert_user_error, cream_executable, snapshot

COMMANDS = ["prompts", "sample", "label", "train", "run", "eval", "sql", "inspect", "publish"]
INTERRUPTED = "interrupted: finished parts are kept; rerun the same command to resume"


def prompts_table(k: int) -> pa.Table:
    convs = [[{"role": "user", "content": f"Tell me a story about the number {i}."}] for i in range(k)]
    return pa.table({"prompt_id": [f"p{i}" for i in range(k)], "prompt": convs, "source": ["test"] * k,
                     "reference_answer": pa.array([None] * k, pa.string())})


@pytest.fixture(scope="module")
def prompts_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("prompts") / "prompts"
    io.write_table(prompts_table(3), path, "prompts")
    return path


def _unchanged(cream_exe, tmp_path, *args, **kw):
    """Run `cream ARGS` in ``tmp_path``; check that it left nothing behind there and no blank line on stderr."""
    before = snapshot(tmp_path)
    r = cream_exe(*args, cwd=tmp_path, **kw)
    assert snapshot(tmp_path) == before, "a failing command changed files"
    assert "" not in r.err.splitlines(), r
    return r


# ---------------------------------------------------------------------------- usage errors
USAGE = {
    **{f"{c}: unknown option": ([c, "--no-such-flag"], ["no such option", "--no-such-flag", f"`cream {c} --help`"])
       for c in COMMANDS},
    "mistyped option keeps the suggestion": (["sample", "p.parquet", "--modle", "m", "--out", "o"],
                                             ["--modle", "--model", "cream sample --help"]),
    "sample: missing --model": (["sample", "p.parquet", "--out", "o"], ["missing option", "--model"]),
    "prompts: missing --out": (["prompts", "d.jsonl"], ["missing option", "--out"]),
    "label: missing --out": (["label", "r"], ["missing option", "--out"]),
    "train: missing --out": (["train", "d", "--model", "m"], ["missing option", "--out"]),
    "eval: missing --out": (["eval", "--model", "m"], ["missing option", "--out", "cream eval --help"]),
    "publish: missing --repo-id": (["publish", "src"], ["missing option", "--repo-id"]),
    "sample: missing argument": (["sample"], ["missing argument", "prompts"]),
    "run: missing argument": (["run"], ["missing argument", "config"]),
    "inspect: missing argument": (["inspect"], ["missing argument", "dir"]),
    "publish: missing argument": (["publish", "--repo-id", "a/b"], ["missing argument", "source"]),
    "sql: missing argument": (["sql"], ["missing argument", "cream sql --help"]),
    "sample: --n not an integer": (["sample", "p", "--model", "m", "--out", "o", "--n", "abc"],
                                   ["'--n'", "integer"]),
    "train: --beta not a number": (["train", "d", "--model", "m", "--out", "o", "--beta", "high"],
                                   ["'--beta'", "number"]),
    "label: --batch-size not an integer": (["label", "r", "--out", "o", "--batch-size", "x"], ["'--batch-size'"]),
    "eval: --batch-size a float": (["eval", "--model", "m", "--out", "o", "--batch-size", "1.5"], ["'--batch-size'"]),
    "sql: --limit below its range": (["sql", ".", "--limit", "-1"], ["'--limit'", "greater than or equal to 0"]),
    "sql: bad --format choice": (["sql", ".", "select 1", "--format", "xml"], ["'--format'", "xml", "csv"]),
    "sql: extra argument": (["sql", ".", "select 1", "extra"], ["unexpected extra argument", "extra"]),
    "run: extra argument": (["run", "c.yaml", "more"], ["unexpected extra argument", "more", "cream run --help"]),
    "prompts: extra argument": (["prompts", "d.jsonl", "e.jsonl", "--out", "o"],
                                ["unexpected extra argument", "e.jsonl"]),
    "option without its value": (["sample", "p", "--out", "o", "--model"], ["--model", "requires an argument",
                                                                           "cream sample --help"]),
    "flag given a value": (["train", "d", "--model", "m", "--out", "o", "--lora=yes"], ["--lora",
                                                                                       "does not take a value"]),
    "unknown command": (["no-such-command"], ["no such command", "no-such-command", "`cream --help`"]),
    "mistyped command": (["smaple", "x.parquet"], ["no such command 'smaple'", "did you mean 'sample'"]),
    "mistyped command (eval)": (["evaluate", "--model", "m"], ["'evaluate'", "'eval'"]),
    "unknown root option": (["--verbose", "sample"], ["no such option", "--verbose"]),
}


@pytest.mark.parametrize("name", list(USAGE))
def test_usage_error_is_one_line(cream_exe, tmp_path, name):
    args, needles = USAGE[name]
    r = _unchanged(cream_exe, tmp_path, *args)
    assert_user_error(r, *needles)
    assert r.err.startswith("error: ") and r.out == ""


@pytest.mark.parametrize("args,needle", [
    (["--help"], "Usage: cream"), (["-h"], "Usage: cream"), (["sample", "--help"], "--max-new-tokens"),
    (["sql", "-h"], "--format"), (["--version"], "cream 0."), ([], "Usage: cream"),
])
def test_help_and_version_still_exit_0(cream_exe, tmp_path, args, needle):
    r = _unchanged(cream_exe, tmp_path, *args)
    assert r.code == 0 and needle in r.out and r.err == "", r


def test_usage_errors_work_without_the_standalone_click(tmp_path):
    """typer 0.29 vendors click: the handler must not need the `click` package."""
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "click.py").write_text("raise ImportError('no standalone click here')\n")
    env = {**os.environ, "PYTHONPATH": f"{shim}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.run([str(cream_executable()), "sample", "--no-such-flag"], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=60)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "--no-such-flag" in proc.stderr, proc.stderr


# ---------------------------------------------------------------------------- Ctrl-C
def test_ctrl_c_prints_one_line_and_keeps_finished_parts(tmp_path, tiny_model):
    prompts = io.write_table(prompts_table(60), tmp_path / "prompts", "prompts")
    out = tmp_path / "r"
    proc = subprocess.Popen([str(cream_executable()), "sample", prompts, "--model", tiny_model, "--out", out,
                             "--n", "2", "--max-new-tokens", "16", "--batch-size", "1", "--prompts-per-part", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL,
                            env={**os.environ, "OMP_NUM_THREADS": "1"},
                            # a shell's background job ignores SIGINT and its children inherit that; a terminal's
                            # foreground process does not: restore the default so Python installs its handler
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while not list(out.glob("part-*.parquet")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and stderr.strip().splitlines()[-1] == INTERRUPTED, stderr
    assert list(out.glob("part-*.parquet")) and not (out / io.MANIFEST).exists()


# ---------------------------------------------------------------------------- environment errors
@pytest.mark.skipif(not os.path.isdir("/sys"), reason="needs a /sys that refuses new folders")
def test_unwritable_output_is_one_line(cream_exe, tmp_path):
    (tmp_path / "d.jsonl").write_text(json.dumps({"question": "Q?", "answer": "#### 1"}) + "\n")
    r = _unchanged(cream_exe, tmp_path, "prompts", "d.jsonl", "--out", "/sys/cream-out")
    assert_user_error(r, "/sys/")
    assert not os.path.exists("/sys/cream-out")


@pytest.mark.parametrize("code,needles", [
    (errno.ENOSPC, ["/data/out/part-00000.parquet", "No space left on device", "free space"]),
    (errno.EROFS, ["/data/out/part-00000.parquet", "Read-only file system", "choose another"]),
    (errno.EDQUOT, ["/data/out/part-00000.parquet", "quota"]),
    (errno.EACCES, ["/data/out/part-00000.parquet", "Permission denied", "permissions"]),
])
def test_environment_oserror_is_one_line(cli, monkeypatch, tmp_path, code, needles):
    """The safety net in `main()`: an OSError from the file system that no check caught up front."""
    from cream_data.inputs import prompts as prompts_mod

    def fail(*a, **k):
        raise OSError(code, os.strerror(code), "/data/out/part-00000.parquet")

    monkeypatch.setattr(prompts_mod, "load_prompts", fail)
    assert_user_error(cli("prompts", tmp_path / "d.jsonl", "--out", tmp_path / "o"), *needles)


def test_programming_errors_keep_their_traceback(cli, monkeypatch, tmp_path):
    from cream_data.inputs import prompts as prompts_mod

    def fail(*a, **k):
        raise OSError(errno.EINVAL, "Invalid argument")

    monkeypatch.setattr(prompts_mod, "load_prompts", fail)
    with pytest.raises(OSError):
        cli("prompts", tmp_path / "d.jsonl", "--out", tmp_path / "o")


# ---------------------------------------------------------------------------- devices
def test_unknown_device(cream_exe, tmp_path, prompts_dir, tiny_model):
    r = _unchanged(cream_exe, tmp_path, "sample", prompts_dir, "--model", tiny_model, "--out", "r", "--device", "foo")
    assert_user_error(r, "--device 'foo'", "cpu", "cuda")


def test_cuda_on_a_machine_without_it(cream_exe, tmp_path, prompts_dir, tiny_model):
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    r = _unchanged(cream_exe, tmp_path, "sample", prompts_dir, "--model", tiny_model, "--out", "r", "--device", "cuda")
    assert_user_error(r, "--device cuda", "CUDA is not available", "use --device cpu")


def test_check_device():
    import torch

    models.check_device(None)
    models.check_device("cpu")
    for bad in ("foo", "cuda:x", ""):
        with pytest.raises(CreamError, match="expected cpu, cuda"):
            models.check_device(bad)
    with pytest.raises(CreamError, match="--device cuda:99: "):
        models.check_device("cuda:99")
    if not torch.cuda.is_available():
        with pytest.raises(CreamError, match="CUDA is not available"):
            models.load("unused", device="cuda")  # checked before the model name is even resolved


def test_check_device_counts_gpus(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    models.check_device("cuda")
    models.check_device("cuda:1")
    with pytest.raises(CreamError, match="--device cuda:2: this machine has 2 cuda device.s., cuda:0 to cuda:1"):
        models.check_device("cuda:2")


# ---------------------------------------------------------------------------- model errors
def _copy_model(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_truncated_weights(cream_exe, tmp_path, prompts_dir, tiny_model):
    bad = _copy_model(tiny_model, tmp_path / "m")
    weights = bad / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    r = _unchanged(cream_exe, tmp_path, "sample", prompts_dir, "--model", bad, "--out", "r")
    assert_user_error(r, f"model {bad}", "cannot load its weights", "model.safetensors",
                      "the checkpoint may be incomplete or corrupt")


@pytest.mark.parametrize("size", [0, 4, 100])
def test_corrupt_weights_header(tmp_path, tiny_model, size):
    bad = _copy_model(tiny_model, tmp_path / "m")
    weights = bad / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:size])
    with pytest.raises(CreamError, match="cannot load its weights .*incomplete or corrupt"):
        models.load(str(bad))


def test_custom_code_needs_trust_remote_code(cream_exe, tmp_path, prompts_dir, tiny_model):
    custom = _copy_model(tiny_model, tmp_path / "m")
    cfg = json.loads((custom / "config.json").read_text())
    cfg.update(auto_map={"AutoModelForCausalLM": "modeling_x.XForCausalLM", "AutoConfig": "configuration_x.XConfig"},
               model_type="x-custom")
    (custom / "config.json").write_text(json.dumps(cfg))
    r = _unchanged(cream_exe, tmp_path, "sample", prompts_dir, "--model", custom, "--out", "r")
    assert_user_error(r, f"model {custom}", "custom code", "--trust-remote-code")


def test_local_path_typo_is_not_a_hub_id(cream_exe, tmp_path, prompts_dir):
    for name in ("M2", "M1-sft", "baseline"):
        (tmp_path / "runs" / name).mkdir(parents=True)
    t0 = time.monotonic()
    r = _unchanged(cream_exe, tmp_path, "sample", prompts_dir, "--model", "runs/M1", "--out", "r",
                   env={"HF_HUB_OFFLINE": "0"})
    assert_user_error(r, "model runs/M1: no such local folder", "runs/ exists", "did you mean", "runs/M2")
    assert "baseline" not in r.err and time.monotonic() - t0 < 20


def test_resolve_suggests_close_names(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "iter1").mkdir(parents=True)
    with pytest.raises(CreamError, match=r"runs/ exists; did you mean runs/iter1\?"):
        models.resolve("runs/itr1")
    with pytest.raises(CreamError, match=r"no such local folder, path does not exist \(runs/ exists\)$"):
        models.resolve("runs/zzzzzz")
    assert models.resolve("someorg/somemodel").kind == "hub"  # no local folder 'someorg': a Hub id


def test_offline_hub_id_not_in_cache(cream_exe, tmp_path, prompts_dir):
    r = _unchanged(cream_exe, tmp_path, "sample", prompts_dir, "--model", "nobody/no-such-model", "--out", "r",
                   env={"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")})
    assert_user_error(r, "model nobody/no-such-model", "not in the local Hugging Face cache", "HF_HUB_OFFLINE=1")


# ---------------------------------------------------------------------------- messages that misled
def test_null_field_is_not_reported_missing(cream_exe, tmp_path):
    (tmp_path / "d.jsonl").write_text(json.dumps({"question": "Q?", "answer": "#### 1"}) + "\n"
                                      + json.dumps({"question": None, "answer": "#### 2"}) + "\n")
    r = _unchanged(cream_exe, tmp_path, "prompts", "d.jsonl", "--out", "o")
    assert_user_error(r, "d.jsonl line 2: field 'question' is null; expected a string")
    assert "missing" not in r.err


@pytest.mark.parametrize("name", ["train.jsonl", "train.csv"])
def test_sample_on_a_raw_file_points_to_cream_prompts(cream_exe, tmp_path, name):
    (tmp_path / name).write_text('{"question": "Q?", "answer": "#### 1"}\n')
    r = _unchanged(cream_exe, tmp_path, "sample", name, "--model", "m", "--out", "r")
    assert_user_error(r, name, f"cream prompts {name} --out DIR")
    assert "not a readable Parquet file" not in r.err


@pytest.mark.parametrize("content,why", [("{bad", "not valid JSON"), ("[1, 2]", "expected a JSON object, got [1, 2]")])
@pytest.mark.parametrize("command", [["sample", "--model", "m", "--out", "r"], ["sql"], ["inspect"]])
def test_corrupt_manifest_is_one_line(cream_exe, tmp_path, content, why, command):
    table = io.write_table(prompts_table(2), tmp_path / "t", "prompts")
    (table / io.MANIFEST).write_text(content)
    r = _unchanged(cream_exe, tmp_path, command[0], "t", *command[1:])
    assert_user_error(r, f"t/{io.MANIFEST}: corrupt manifest", why, "remove the folder and rerun the stage")


def test_corrupt_manifest_from_the_io_functions(tmp_path):
    table = io.write_table(prompts_table(2), tmp_path / "t", "prompts")
    (table / io.MANIFEST).write_text('"just a string"')
    for fn in (io.complete_parts, io.table_kind, io.read_manifest):
        with pytest.raises(CreamError, match="corrupt manifest"):
            fn(table)


def test_sample_resume_summary_adds_up(cli, tmp_path, prompts_dir, tiny_model):
    args = ["sample", prompts_dir, "--model", tiny_model, "--out", tmp_path / "r", "--n", "2", "--max-new-tokens", "3",
            "--batch-size", "1", "--prompts-per-part", "1"]
    r = cli(*args)
    assert r.code == 0, r
    assert "sampled 3 prompts x 2 (0 already done): wrote 6 responses" in r.out and "6 responses on disk" in r.out
    (tmp_path / "r" / io.MANIFEST).unlink()
    sorted((tmp_path / "r").glob("part-*.parquet"))[-1].unlink()
    r = cli(*args)
    assert r.code == 0, r
    assert "sampled 1 prompts x 2 (2 already done): wrote 2 responses (2 length)" in r.out, r.out
    assert "6 responses on disk" in r.out
    r = cli(*args)
    assert "sampled 0 prompts x 2 (3 already done): wrote 0 responses; 6 responses on disk" in r.out, r.out
