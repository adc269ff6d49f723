"""Reliability, third round (issue #26): what a config means does not depend on the folder `cream run` starts in,
hostile configs are refused in bounded time, messages name what the user wrote, a failed write names its target,
an unfinished run is not published by accident, and a redone stage keeps its old outputs until the new ones are whole.

Each user-facing case runs the installed console script in a subprocess: one line on stderr, exit 2, nothing new on
disk — or the right result.
"""

from __future__ import annotations

import json
import os
import subprocess
from contextlib import contextmanager
from dataclasses import fields
from pathlib import Path
from typing import get_type_hints

import pyarrow as pa
import pytest
import yaml

from tests.support.cli import CPU_ONLY, refused, snapshot
from tests.support.models import make_tiny_model
from tests.support.runs import write_tiny_run_config


def checked(cream_exe, config: Path, cwd: Path, *extra) -> dict:
    """`cream run CONFIG --check` from ``cwd``: the settings as they will run (nothing written)."""
    before = snapshot(cwd)
    r = cream_exe("run", config, "--check", *extra, cwd=cwd, env=CPU_ONLY)
    assert r.code == 0, r
    assert snapshot(cwd) == before
    return yaml.safe_load(r.out.rsplit("\n", 2)[0])


# ---------------------------------------------------------------------------- item 1: paths against the config
@pytest.fixture(scope="module")
def reward_model(tmp_path_factory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("rm") / "rm", seed=3, num_labels=1)


def test_a_config_means_the_same_models_from_any_folder(cream_exe, tmp_path, tiny_model, tiny_model_b, reward_model):
    """`model: tiny` and `label.reward_model: rm` beside the config: the same M0 and reward model whether `cream run`
    starts in another folder holding a different `tiny` or in one above both."""
    configs, other = tmp_path / "configs", tmp_path / "other"
    configs.mkdir()
    other.mkdir()
    (configs / "tiny").symlink_to(tiny_model)
    (other / "tiny").symlink_to(tiny_model_b)  # what `tiny` meant when run from here
    (configs / "rm").symlink_to(reward_model)
    (configs / "judge.txt").write_text("Rate: {request} {response}")
    cfg = write_tiny_run_config(configs, name="c", model="tiny", method="rm", train={"lr": "1e-6"},
                                label={"reward_model": "rm", "judge_template": "judge.txt"})
    seen = [checked(cream_exe, cfg, cwd) for cwd in (other, tmp_path)]
    assert all(s == seen[0] for s in seen)
    assert seen[0]["model"] == str((configs / "tiny").resolve())
    assert seen[0]["label"]["reward_model"] == str((configs / "rm").resolve())
    assert seen[0]["label"]["judge_template"] == str((configs / "judge.txt").resolve())
    assert seen[0]["train"]["lr"] == 1e-6  # `lr: 1e-6` in YAML (a string to YAML 1.1) is the float


def test_a_model_given_from_the_config_folder_with_dotdot(cream_exe, tmp_path, tiny_model):
    """`model: ../tiny` beside the config works from a folder where `../tiny` is nothing."""
    (tmp_path / "tiny").symlink_to(tiny_model)
    cfg = write_tiny_run_config(tmp_path / "configs", name="c", model="../tiny")
    assert checked(cream_exe, cfg, tmp_path)["model"] == str((tmp_path / "tiny").resolve())


def test_a_model_only_in_the_current_folder_is_refused(cream_exe, tmp_path, tiny_model):
    """`model: tiny` that names nothing beside the config but a folder where `cream run` starts: refused, since the
    same config would train another model from another folder."""
    (tmp_path / "tiny").symlink_to(tiny_model)
    cfg = write_tiny_run_config(tmp_path / "configs", name="c", model="tiny")
    refused(cream_exe, tmp_path, "run", cfg, "--check",
            needles=["model: 'tiny' is not beside the config", f"but names {tmp_path / 'tiny'} in the current folder",
                     "relative to the config's folder"])


def test_every_path_valued_key_is_marked_in_the_settings():
    """Which keys hold paths is read from the settings' definitions; every str-valued key without a fixed
    vocabulary is either a path (resolved against the config's folder) or listed here as not one, so a new path key
    cannot be left unresolved by mistake."""
    from cream_train.run.config_paths import path_keys
    from cream_train.run.config import RunConfig

    paths = path_keys(RunConfig)
    assert paths == {
        "model": "model", "run_dir": "path", "sft.data": "data", "sft.accelerate_config": "path",
        "prompts.source": "data", "prompts.sources": "sources", "prompts.data_dir": "path",
        "label.judge_template": "path", "label.reward_model": "model", "train.accelerate_config": "path",
        "eval.data_dir": "path"}
    not_paths = {"method", "sft.layout", "sft.lora_target", "train.lora_target", "prompts.layout", "prompts.split",
                 "prompts.suffix", "prompts.prompt_field", "prompts.answer_field", "prompts.id_field",
                 "prompts.system_field", "sample.device", "label.consistency_between", "eval.harness", "eval.tasks",
                 "eval.device", "eval.suffix", "nodes.main_process_ip", "temporal.reward"}
    free_text = set()
    hints = get_type_hints(RunConfig)
    for f in fields(RunConfig):
        sub = hints[f.name]
        for g, hint in ([(f, sub)] if not hasattr(sub, "__dataclass_fields__") else
                        [(g, get_type_hints(sub)[g.name]) for g in fields(sub)]):
            key = f.name if g is f else f"{f.name}.{g.name}"
            if any(t in str(hint) for t in ("str", "list", "Any")) and not g.metadata.get("choices"):
                free_text.add(key)
    assert free_text == set(paths) | not_paths


# ---------------------------------------------------------------------------- item 12: the words the user wrote
@pytest.fixture
def base(tmp_path) -> Path:
    return write_tiny_run_config(tmp_path, name="c")


def test_a_section_given_as_a_list_is_named(cream_exe, tmp_path):
    cfg = write_tiny_run_config(tmp_path, name="c", sample=[1, 2])
    refused(cream_exe, tmp_path, "run", cfg, "--check", needles=["sample: got a list, expected a mapping of settings"],
            absent=["sample.:"])


def test_the_reward_of_method_temporal_is_named_by_its_key(cream_exe, tmp_path):
    cfg = write_tiny_run_config(tmp_path, name="c", method="temporal", temporal={"reward": "rm"})
    refused(cream_exe, tmp_path, "run", cfg, "--check",
            needles=["label.reward_model: missing; temporal.reward rm needs"], absent=["method rm"])


def test_a_flag_value_is_named_by_the_flag(cream_exe, tmp_path, base):
    refused(cream_exe, tmp_path, "run", base, "--check", "--machine-rank", "2",
            needles=["--machine-rank: got 2, expected < nodes.num_machines (1)"], absent=["nodes.machine_rank:"])
    refused(cream_exe, tmp_path, "run", base, "--check", "--main-process-ip", "bad host!",
            needles=["--main-process-ip: got 'bad host!', expected a host name or an IP address"])


def test_the_flags_that_override_a_config_key_exist(cream_exe):
    from cream_train.run.config import OVERRIDE_FLAGS

    help_text = cream_exe("run", "--help", env={"COLUMNS": "200"}).out
    assert all(flag in help_text for flag in OVERRIDE_FLAGS.values())


@pytest.fixture(scope="module")
def table_dir(tmp_path_factory) -> Path:
    from cream_data.tables.io import write_table

    root = tmp_path_factory.mktemp("sql")
    rows = [{"prompt_id": "p1", "prompt": [{"role": "user", "content": "2+2?"}], "source": "x.jsonl",
             "reference_answer": "4"}]
    write_table(pa.Table.from_pylist(rows), root / "prompts", "prompts")
    return root


@pytest.mark.parametrize("statement, keyword", [("INSTALL httpfs", "INSTALL"), ("use memory", "USE"),
                                                ("/* a comment */ FORCE INSTALL httpfs", "FORCE INSTALL"),
                                                ("RESET threads", "RESET")])
def test_sql_names_the_statement_written(cream_exe, table_dir, statement, keyword):
    refused(cream_exe, table_dir, "sql", table_dir, statement,
            needles=[f"cream sql is read-only: {keyword} statements are refused"])


# ---------------------------------------------------------------------------- nodes and GPUs
def test_main_process_ip_must_be_a_host(cream_exe, tmp_path):
    cfg = write_tiny_run_config(tmp_path, name="c", nodes={"num_machines": 2, "main_process_ip": "node 0;rm"})
    needle = "nodes.main_process_ip: got 'node 0;rm', expected a host name or an IP address"
    refused(cream_exe, tmp_path, "run", cfg, "--check", needles=[needle])
    ok = write_tiny_run_config(tmp_path, name="ok", nodes={"num_machines": 2, "main_process_ip": "10.0.0.1"})
    assert checked(cream_exe, ok, tmp_path)["nodes"]["main_process_ip"] == "10.0.0.1"


def test_shard_processes_need_the_gpus_they_are_pinned_to(cream_exe, tmp_path):
    """data_parallel × gpus_per_process GPUs: refused by --check and by a start on a machine with fewer GPUs; on a
    machine with none, a start that asks for GPUs (gpus_per_process set) is refused, --check passes (a login node) and
    the default asks for none (the shards run on the CPU, as the CPU tests of sharded runs do); --plan never asks."""
    two_gpus = {"CUDA_VISIBLE_DEVICES": "0,1"}
    cfg = write_tiny_run_config(tmp_path, name="c", sample={"data_parallel": 40, "gpus_per_process": 1})
    needle = "sample.data_parallel: 40 shard processes x sample.gpus_per_process 1 need 40 GPUs, but this machine has"
    refused(cream_exe, tmp_path, "run", cfg, needles=[f"{needle} 0 (CUDA_VISIBLE_DEVICES='')"])  # a start
    refused(cream_exe, tmp_path, "run", cfg, "--check", env=two_gpus, needles=[f"{needle} 2"])
    assert cream_exe("run", cfg, "--check", cwd=tmp_path, env=CPU_ONLY).code == 0  # a login node
    r = cream_exe("run", cfg, "--plan", cwd=tmp_path, env=two_gpus)
    assert r.code == 0 and "--shard 39/40" in r.out, r
    default = write_tiny_run_config(tmp_path, name="default", sample={"data_parallel": 4},
                                    label={"data_parallel": 4, "gpus_per_process": 0})
    needle = ("sample.data_parallel: 4 shard processes x 1 GPU(s) per process (sample.gpus_per_process's default) "
              "need 4 GPUs, but this machine has 2 (CUDA_VISIBLE_DEVICES='0,1')")
    refused(cream_exe, tmp_path, "run", default, "--check", env=two_gpus, needles=[needle])
    assert cream_exe("run", default, "--check", cwd=tmp_path, env={"CUDA_VISIBLE_DEVICES": "0,1,2,3"}).code == 0


# ---------------------------------------------------------------------------- every input is bounded
def billion_laughs(levels: int = 9) -> str:
    lines = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, levels):
        lines.append(f"{chr(97 + i)}: &{chr(97 + i)} [" + ", ".join([f"*{chr(96 + i)}"] * 9) + "]")
    return "\n".join(lines) + f"\neval: {{harness: *{chr(96 + levels)}}}\n"


HOSTILE = {
    "billion-laughs": (billion_laughs(), "expands to more than 100,000 values"),
    "recursive-alias": ("eval: {harness: &x [1, *x]}\n", "nests deeper than 32 levels through its aliases"),
    "deep-flow": ("eval: {harness: " + "[" * 50_000 + "]" * 50_000 + "}\n", "nested deeper than 32 levels"),
    "deep-mapping": ("eval:\n  harness: " + "{a: " * 2_000 + "1" + "}" * 2_000 + "\n", "nested deeper than 32 levels"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
@pytest.mark.parametrize("command", ["run", "train"])
def test_hostile_yaml_is_refused_in_bounded_time(cream_exe, tmp_path, name, command):
    text, needle = HOSTILE[name]
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    args = ("run", path, "--check") if command == "run" else ("train", "data.parquet", "--config", path)
    refused(cream_exe, tmp_path, *args, needles=[needle])


@pytest.mark.parametrize("command", ["run", "train"])
def test_a_100_mb_config_file_is_refused_unread(cream_exe, tmp_path, command):
    path = tmp_path / "huge.yaml"
    with open(path, "wb") as f:
        f.write(b"model: m\n# ")
        f.truncate(100 * 2**20)  # sparse: 100 MiB on paper, nothing on the disk
    args = ("run", path, "--check") if command == "run" else ("train", "data.parquet", "--config", path)
    refused(cream_exe, tmp_path, *args, needles=["config file is 100.0 MiB, expected at most 1 MiB"])


# ---------------------------------------------------------------------------- item 11: publishing an unfinished run
def fake_run(root: Path, stages: dict, finished: bool) -> Path:
    """A run directory with one iteration's responses table and the manifest `cream run` writes."""
    from cream_data.tables.io import write_table

    rows = [{"prompt_id": f"p{i}", "prompt": [{"role": "user", "content": f"q{i}"}], "response_idx": 0,
             "response": "a", "model": "m1", "iteration": 1, "seed": 1, "temperature": 0.8, "top_p": 0.95,
             "max_new_tokens": 8, "finish_reason": "stop", "n_tokens": 1} for i in range(3)]
    write_table(pa.Table.from_pylist(rows), root / "iter-1" / "responses", "responses")
    manifest = {"stages": stages, "method": "cream", "iterations": 2}
    if finished:
        manifest["finished"] = "2030-01-01T00:00:00"
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


DONE = {"status": "done", "started": "2029-12-31T00:00:00"}


def test_an_unfinished_run_is_refused_unless_allowed(cream_exe, tmp_path):
    run = fake_run(tmp_path / "run", {"prompts": DONE, "sample-1": DONE, "label-1": {"status": "running"}}, False)
    out = tmp_path / "repo"
    refused(cream_exe, tmp_path, "publish", run, "--repo-id", "me/x", "--dry-run", "--out", out,
            needles=["the run is not finished (label-1 (running) not done)", "--allow-unfinished"])
    r = cream_exe("publish", run, "--repo-id", "me/x", "--dry-run", "--out", out, "--allow-unfinished")
    assert r.code == 0 and (out / "README.md").is_file(), r
    warnings = [ln for ln in r.err.splitlines() if ln.strip()]
    assert len(warnings) == 1 and "warning:" in warnings[0] and "label-1 (running)" in warnings[0], r


def test_a_finished_run_publishes_without_a_word(cream_exe, tmp_path):
    run = fake_run(tmp_path / "run", {"prompts": DONE, "sample-1": DONE}, True)
    r = cream_exe("publish", run, "--repo-id", "me/x", "--dry-run", "--out", tmp_path / "repo")
    assert r.code == 0 and not r.err.strip(), r
    # started again since it finished, and stopped between stages: not finished
    again = {"prompts": DONE, "sample-1": {**DONE, "started": "2030-02-01T00:00:00"}}
    (run / "manifest.json").write_text(json.dumps({"stages": again, "finished": "2030-01-01T00:00:00"}))
    refused(cream_exe, tmp_path, "publish", run, "--repo-id", "me/x", "--dry-run", "--out", tmp_path / "repo2",
            needles=["the stages after sample-1 not started"])


# ---------------------------------------------------------------------------- item 10: a write names its target
@contextmanager
def unwritable(folder: Path):
    """``folder`` made unwritable even for root (the immutable attribute), or skip where that cannot be done."""
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        folder.chmod(0o555)
    elif subprocess.run(["chattr", "+i", str(folder)], capture_output=True, check=False).returncode != 0:
        pytest.skip("cannot make a folder unwritable here (root without chattr)")
    try:
        yield folder
    finally:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", str(folder)], capture_output=True, check=False)
        folder.chmod(0o755)


def write_preferences(folder: Path) -> Path:
    """A labeled folder: a preferences table of three pairs."""
    import schemas
    from cream_data.tables.io import write_table

    rows = [{"prompt_id": f"p{i}", "prompt": [{"role": "user", "content": "q"}],
             "chosen": [{"role": "assistant", "content": "a"}], "rejected": [{"role": "assistant", "content": "b"}],
             "chosen_idx": 0, "rejected_idx": 1, "iteration": 1, "n_responses": 2, "rewards": [1.0, 0.0],
             "prev_rewards": [0.5, 0.2], "ranks": [1, 2], "prev_ranks": [1, 2], "kendall_tau": 1.0,
             "consistency": 1.0, "consistency_method": "kendall", "weight": 1.0, "chosen_logp": -1.0,
             "rejected_logp": -2.0, "chosen_n_tokens": 1, "rejected_n_tokens": 1, "model": "m1", "ref_model": "m0",
             "prev_model": "m0", "prev_ref_model": None, "template_hash": "th"} for i in range(3)]
    write_table(pa.Table.from_pylist(rows, schema=schemas.get("preferences").arrow), folder / "preferences",
                "preferences")
    return folder


@pytest.fixture(scope="module")
def labeled(tmp_path_factory) -> Path:
    return write_preferences(tmp_path_factory.mktemp("labeled") / "lab")


def test_inspect_of_a_read_only_folder_prints_the_summary_and_names_what_it_could_not_write(cream_exe, labeled):
    with unwritable(labeled / "inspect"):
        r = cream_exe("inspect", labeled)
    assert r.code == 0, r
    assert "C mean / median / std" in r.out  # the summary
    lines = [ln for ln in r.err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("warning: could not write"), r
    assert "summary.md" in lines[0] and str(labeled / "inspect") in lines[0] and "pass --out" in lines[0]
    assert ".tmp-" not in r.err and "choose another path" not in r.err
    assert not any((labeled / "inspect").iterdir())


def test_inspect_of_a_read_only_run_prints_its_report_and_names_what_it_could_not_write(cream_exe, tmp_path):
    run = write_preferences(tmp_path / "run" / "iter-1").parent
    with unwritable(run / "report"):
        r = cream_exe("inspect", run)
    assert r.code == 0, r
    assert "consistency" in r.out.lower()  # the report's tables
    lines = [ln for ln in r.err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"warning: could not write {run / 'report'}"), r
    assert ".tmp-" not in r.err


def test_every_atomic_write_names_its_target(tmp_path):
    """The class behind it: bytes, JSON, a Parquet file and a table folder written into an unwritable folder each
    fail with one CreamError (still an OSError) naming the target, never its temporary name."""
    from cream_data.errors import CreamError
    from cream_data.tables import io

    table = pa.table({"x": [1]})
    writes = {"a.png": lambda p: io.atomic_write_bytes(p, b"x"), "b.json": lambda p: io.atomic_write_json(p, {}),
              "c.parquet": lambda p: io._write_parquet_file(table, p),
              "prompts": lambda p: io.write_table(pa.Table.from_pylist(
                  [{"prompt_id": "p", "prompt": [{"role": "user", "content": "q"}], "source": "s",
                    "reference_answer": None}]), p, "prompts")}
    with unwritable(tmp_path / "ro") as ro:
        for name, write in writes.items():
            with pytest.raises(CreamError) as err:
                write(ro / name)
            assert isinstance(err.value, OSError)
            assert str(err.value).startswith(f"{ro / name}: cannot write it (") and ".tmp-" not in str(err.value)


# ---------------------------------------------------------------------------- replace, then remove
@pytest.fixture
def loop_of(tmp_path):
    """``loop_of(**changes)``: a Loop over a small run (in this process), its config changed by ``changes``."""
    import dataclasses

    from cream_train.run.loop import Loop
    from cream_train.run.config import load_run_config

    cfg, _, table = load_run_config(write_tiny_run_config(tmp_path, name="c", run_dir=tmp_path / "run"))

    def make(**changes):
        return Loop(dataclasses.replace(cfg, **changes), table, log=lambda _m: None)

    return make


def run_prompts(loop):
    """The prompt split, decided and run by ``loop`` as a run does it."""
    from cream_train.run.stage_defs import prompts

    loop.do(prompts(loop.walk))


def test_a_stale_stage_whose_redo_is_interrupted_keeps_its_old_outputs(loop_of, monkeypatch):
    from cream_data.tables import io

    run_prompts(loop_of(seed=0))
    run = loop_of().run
    old = io.read_table(run / "prompts" / "subset-1", "prompts")
    record = json.loads((run / "manifest.json").read_text())["stages"]["prompts"]

    real = io.write_table

    def interrupted(table, path, *a, **kw):  # Ctrl-C while the new split is half written
        real(table, path, *a, **kw)
        raise KeyboardInterrupt

    monkeypatch.setattr(io, "write_table", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_prompts(loop_of(seed=1))  # another seed: the stage is stale and redone
    assert io.read_table(run / "prompts" / "subset-1", "prompts").equals(old)
    assert json.loads((run / "manifest.json").read_text())["stages"]["prompts"] == record
    assert not [p for p in (run / "prompts").iterdir() if p.name.startswith(".")] and \
        not (run / ".prompts.replaced").exists()
    monkeypatch.setattr(io, "write_table", real)
    again = loop_of(seed=0)
    run_prompts(again)
    assert again.skipped == ["prompts"]  # the old config finds its stage done
    redo = loop_of(seed=1)
    run_prompts(redo)  # a redo that completes replaces them, and nothing is left aside
    assert redo.ran == ["prompts"] and not (run / ".prompts.replaced").exists()


def test_a_failed_redo_restores_the_caches_too(loop_of):
    """The label stage's log-prob cache is set aside with its outputs (its ``caches``) and comes back on failure."""
    from cream_train.run.stage import Stage

    loop = loop_of()
    out, cache = loop.run / "iter-1" / "scores", loop.run / "iter-1" / "logps"

    def first(_resume):
        out.mkdir(parents=True)
        (out / "old").write_text("old")
        cache.mkdir()
        (cache / "m").write_text("cached")

    loop.do(Stage("label-1", "label", 1, {"a": 1}, (out,), first, caches=(cache,)))

    def failing(_resume):
        assert not out.exists() and not cache.exists()  # a fresh start finds neither
        out.mkdir()
        (out / "new").write_text("half")
        raise RuntimeError("bad input")

    with pytest.raises(RuntimeError):
        loop_of().do(Stage("label-1", "label", 1, {"a": 2}, (out,), failing, caches=(cache,)))
    assert sorted(p.name for p in out.iterdir()) == ["old"] and (cache / "m").read_text() == "cached"
    assert not list(out.parent.glob(".*.replaced"))
