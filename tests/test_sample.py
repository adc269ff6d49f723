"""`cream sample`: the hf engine on the tiny model, the batch plan, resume after kill -9, shards, bad input."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from cream_data.tables import io
from cream_data.engines import models
from cream_data.engines.hf_sample import HfSampler, batch_seed, split_at_stop
from cream_data.errors import CreamError
from cream_data.engines.base import GenerationParams, plan_batches, prompt_seed
from cream_data.stages.sample import SampleConfig, fingerprint, sample, shard_batches
from tests.support import REPO
from tests.support.cli import assert_user_error
from tests.support.tables import TOPICS, by_key, prompts_table


@pytest.fixture(scope="module")
def engine(tiny_model):
    return HfSampler.load(models.resolve(str(tiny_model)))


@pytest.fixture(scope="module")
def prompts_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("prompts") / "prompts"
    io.write_table(prompts_table(), path, "prompts")
    return path


def cfg_for(model, **kw) -> SampleConfig:
    base = dict(model=str(model), n=3, max_new_tokens=6, batch_size=2, prompts_per_part=2)
    return SampleConfig(**{**base, **kw})


# ---------------------------------------------------------------------------- config and plan (no model)
def test_config_reports_every_problem_at_once():
    with pytest.raises(CreamError) as e:
        SampleConfig(model="m", n=0, temperature=-0.5, top_p=1.5, engine="llamacpp", max_new_tokens=0)
    msg = str(e.value)
    for needle in ("n: got 0, expected at least 1", "temperature: got -0.5", "top_p: got 1.5, expected a value in (0, 1]",
                   "engine: got 'llamacpp', expected one of hf, vllm", "max_new_tokens: got 0"):
        assert needle in msg
    assert "\n" not in msg
    with pytest.raises(CreamError, match=r"top_p: got 0\b"):
        SampleConfig(model="m", top_p=0)
    with pytest.raises(CreamError, match="temperature: got nan"):
        SampleConfig(model="m", temperature=float("nan"))
    assert SampleConfig(model="m").batch_size == 8 and SampleConfig(model="m", engine="vllm").batch_size == 512
    assert SampleConfig(model="m", top_p=1.0, temperature=0).top_p == 1.0


def test_plan_sorts_by_length_then_id_and_shards_partition_it():
    ids = ["c", "a", "b", "d", "e"]
    lengths = [5, 9, 5, 1, 9]
    batches = plan_batches(ids, lengths, 2)
    # longest first: a(9), e(9) | b(5), c(5) | d(1) — ties broken by id
    assert [[ids[r] for r in b] for b in batches] == [["a", "e"], ["b", "c"], ["d"]]
    s0, s1 = shard_batches(batches, (0, 2)), shard_batches(batches, (1, 2))
    assert s0 == [batches[0], batches[2]] and s1 == [batches[1]]
    assert shard_batches(batches, None) == batches and shard_batches(batches, (0, 1)) == batches
    assert shard_batches(batches, (3, 4)) == []  # more shards than batches: an empty slice, not an error


def test_seeds_are_stable_and_per_prompt():
    assert prompt_seed(0, "p1") == prompt_seed(0, "p1")
    assert len({prompt_seed(0, f"p{i}") for i in range(100)}) == 100
    assert prompt_seed(1, "p1") != prompt_seed(0, "p1")
    assert 0 <= prompt_seed(7, "x") < 2**31
    assert batch_seed([1, 2]) != batch_seed([2, 1])  # the batch's row order is part of what is seeded


def test_split_at_stop_counts_the_stop_token():
    assert split_at_stop([5, 6, 2, 2, 2], {2}) == ([5, 6], "stop", 3)
    assert split_at_stop([2, 9], {2, 9}) == ([], "stop", 1)
    assert split_at_stop([5, 6, 7], {2}) == ([5, 6, 7], "length", 3)


def test_fingerprint_tracks_ids_and_content():
    t = prompts_table(3)
    assert fingerprint(t) == fingerprint(prompts_table(3))
    assert fingerprint(t) != fingerprint(prompts_table(4))
    changed = t.set_column(0, "prompt_id", pa.array(["p0", "p1", "q2"]))
    assert fingerprint(changed) != fingerprint(t)


# ---------------------------------------------------------------------------- the hf engine
def test_batched_greedy_equals_each_prompt_alone(engine):
    """Left padding + attention mask: a prompt's greedy continuation does not depend on its batch mates."""
    convs = prompts_table().column("prompt").to_pylist()[:3]
    params = GenerationParams(temperature=0.0, top_p=1.0, max_new_tokens=8)
    together = engine.generate(convs, [0, 1, 2], 2, params)
    for conv, got in zip(convs, together):
        alone = engine.generate([conv], [0], 1, params)[0][0]
        assert got[0] == alone and got[1] == alone  # greedy: both samples identical


def test_greedy_matches_a_hand_written_argmax_loop(engine):
    import torch

    conv = prompts_table().column("prompt").to_pylist()[0]
    ids = engine.encode([conv])[0]
    seq = torch.tensor([ids])
    with torch.no_grad():
        for _ in range(6):
            nxt = engine.model(seq).logits[0, -1].argmax()
            seq = torch.cat([seq, nxt.view(1, 1)], dim=1)
    expected = seq[0, len(ids):].tolist()
    got = engine.generate([conv], [0], 1, GenerationParams(0.0, 1.0, 6))[0][0]
    assert got.text == engine.tokenizer.decode(expected, skip_special_tokens=True)
    assert (got.finish_reason, got.n_tokens) == ("length", 6)


def test_stops_at_the_first_stop_token_and_counts_it(engine):
    """Make a token the model samples mid-way the stop token: the same seeded draw then ends right there."""
    conv = prompts_table().column("prompt").to_pylist()[1]
    params = GenerationParams(1.0, 1.0, 10)
    free = engine.generate([conv], [0], 1, params)[0][0]
    assert (free.finish_reason, free.n_tokens) == ("length", 10)
    tokens, reason, count = engine._decode_rows(engine.encode([conv]), [0], 1, params)[0]  # the same draw, as ids
    assert (reason, count) == ("length", 10)
    assert engine.tokenizer.decode(tokens, skip_special_tokens=True) == free.text
    pos = next(i for i in range(2, len(tokens)) if tokens[i] not in tokens[:i])
    stopper = HfSampler(engine.model, engine.tokenizer, stop_token_ids=[tokens[pos]])
    got = stopper.generate([conv], [0], 1, params)[0][0]
    assert got.finish_reason == "stop" and got.n_tokens == pos + 1
    assert got.text == engine.tokenizer.decode(tokens[:pos], skip_special_tokens=True)


def test_same_seeds_same_samples_other_seeds_differ(engine):
    convs = prompts_table().column("prompt").to_pylist()[:2]
    params = GenerationParams(1.0, 1.0, 6)
    a = engine.generate(convs, [1, 2], 3, params)
    assert a == engine.generate(convs, [1, 2], 3, params)
    assert a != engine.generate(convs, [1, 3], 3, params)
    texts = [g.text for g in a[0]]
    assert len(set(texts)) == 3  # T = 1 over a random model's vocabulary: the N samples differ


# ---------------------------------------------------------------------------- the stage
def test_output_is_a_valid_responses_table_with_n_rows_per_prompt(engine, tiny_model, prompts_dir, tmp_path):
    calls = []
    cfg = cfg_for(tiny_model, iteration=2, seed=5)
    s = sample(prompts_dir, cfg, tmp_path / "r", engine=engine, progress=lambda *a: calls.append(a))
    t = io.read_table(tmp_path / "r", "responses")  # validates schema and (prompt_id, response_idx) uniqueness
    k = len(TOPICS)
    assert t.num_rows == 3 * k and s.rows == 3 * k and s.prompts_sampled == k and s.prompts_skipped == 0
    counts = t.group_by("prompt_id").aggregate([("response_idx", "count_distinct"), ("response_idx", "max")])
    assert counts["response_idx_count_distinct"].to_pylist() == [3] * k
    assert counts["response_idx_max"].to_pylist() == [2] * k
    ref = models.resolve(str(tiny_model))
    assert set(t["model"].to_pylist()) == {ref.name}
    assert set(t["iteration"].to_pylist()) == {2} and set(t["seed"].to_pylist()) == {5}
    assert set(t["max_new_tokens"].to_pylist()) == {6} and t["top_p"].to_pylist() == pytest.approx([0.95] * t.num_rows)
    # Each row carries its own prompt.
    want = dict(zip(prompts_table()["prompt_id"].to_pylist(), prompts_table()["prompt"].to_pylist()))
    assert all(want[p] == c for p, c in zip(t["prompt_id"].to_pylist(), t["prompt"].to_pylist()))
    # The length cap: a row that did not stop ran exactly max_new_tokens.
    length = t.filter(pc.equal(t["finish_reason"], "length"))
    assert length.num_rows > 0 and set(length["n_tokens"].to_pylist()) == {6}
    assert all(n <= 6 for n in t["n_tokens"].to_pylist())
    assert s.tokens == sum(t["n_tokens"].to_pylist())
    # 7 prompts / batch 2 = 4 batches; a part after every 2 prompts → 4 parts; the manifest records the run.
    m = io.read_manifest(tmp_path / "r")
    assert len(m["parts"]) == 4 and m["sample"]["identity"]["n"] == 3
    assert m["sample"]["input_fingerprint"] == fingerprint(prompts_table())
    assert calls[0] == ("sampling", 0, k, 0) and calls[-1][1:3] == (k, k)


def test_same_seed_same_table_other_seed_differs(engine, tiny_model, prompts_dir, tmp_path):
    a = sample(prompts_dir, cfg_for(tiny_model), tmp_path / "a", engine=engine)
    b = sample(prompts_dir, cfg_for(tiny_model), tmp_path / "b", engine=engine)
    c = sample(prompts_dir, cfg_for(tiny_model, seed=1), tmp_path / "c", engine=engine)
    ta, tb, tc = (by_key(io.read_table(s.out, "responses")) for s in (a, b, c))
    assert ta.equals(tb)
    assert ta["response"].to_pylist() != tc["response"].to_pylist()


def test_resume_after_kill_9_gives_the_uninterrupted_rows(engine, tiny_model, prompts_dir, tmp_path):
    cfg = cfg_for(tiny_model)
    # A real SIGKILL in a child process, on its third engine call (after two parts were written).
    script = (
        "import os, signal, sys\n"
        "from cream_data.engines import models\n"
        "from cream_data.engines.hf_sample import HfSampler\n"
        "from cream_data.stages.sample import SampleConfig, sample\n"
        "cfg = SampleConfig(model=sys.argv[3], n=3, max_new_tokens=6, batch_size=2, prompts_per_part=2)\n"
        "real = HfSampler.load(models.resolve(cfg.model))\n"
        "class DiesOnThirdBatch:\n"
        "    name, calls = 'hf', 0\n"
        "    prompt_lengths = staticmethod(real.prompt_lengths)\n"
        "    def generate(self, *args):\n"
        "        self.calls += 1\n"
        "        if self.calls == 3:\n"
        "            os.kill(os.getpid(), signal.SIGKILL)\n"
        "        return real.generate(*args)\n"
        "sample(sys.argv[1], cfg, sys.argv[2], engine=DiesOnThirdBatch())\n"
    )
    crashed = tmp_path / "crashed"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", script, str(prompts_dir), str(crashed), str(tiny_model)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert len(list(crashed.glob("part-*.parquet"))) == 2 and not (crashed / "_manifest.json").exists()
    with pytest.raises(CreamError, match="incomplete"):
        io.read_table(crashed, "responses")

    resumed = sample(prompts_dir, cfg, crashed, engine=engine)
    assert resumed.prompts_skipped == 4 and resumed.prompts_sampled == 3
    whole = sample(prompts_dir, cfg, tmp_path / "whole", engine=engine)
    assert by_key(io.read_table(crashed, "responses")).equals(by_key(io.read_table(whole.out, "responses")))
    again = sample(prompts_dir, cfg, crashed, engine=engine)  # finished: nothing left to do
    assert again.prompts_sampled == 0 and len(list(crashed.glob("part-*.parquet"))) == 4


def test_two_shards_together_equal_one_unsharded_run(engine, tiny_model, prompts_dir, tmp_path):
    cfg = cfg_for(tiny_model)
    s0 = sample(prompts_dir, cfg, tmp_path / "sharded", shard=(0, 2), engine=engine)
    with pytest.raises(CreamError, match=r"incomplete \(shards finished: \[0\] of 2\)"):
        io.read_table(tmp_path / "sharded", "responses")
    s1 = sample(prompts_dir, cfg, tmp_path / "sharded", shard=(1, 2), engine=engine)
    assert s0.prompts + s1.prompts == len(TOPICS) and s0.prompts == 4  # batches 0, 2 (2+2) vs 1, 3 (2+1)
    merged = io.read_table(tmp_path / "sharded", "responses")  # validates: no (prompt_id, response_idx) twice
    whole = sample(prompts_dir, cfg, tmp_path / "whole", engine=engine)
    assert by_key(merged).equals(by_key(io.read_table(whole.out, "responses")))
    with pytest.raises(CreamError, match="shards 2 -> 3"):  # another sharding would duplicate rows
        sample(prompts_dir, cfg, tmp_path / "sharded", shard=(0, 3), engine=engine)


def test_other_settings_in_the_same_folder_are_refused_unless_overwrite(engine, tiny_model, prompts_dir, tmp_path):
    out = tmp_path / "r"
    sample(prompts_dir, cfg_for(tiny_model), out, engine=engine)
    before = sorted(p.name for p in out.iterdir())
    with pytest.raises(CreamError, match=r"other settings \(temperature 0.8 -> 0.5\).*--overwrite"):
        sample(prompts_dir, cfg_for(tiny_model, temperature=0.5), out, engine=engine)
    with pytest.raises(CreamError, match="input_fingerprint"):
        sample(pa.Table.from_batches(prompts_table(5).to_batches()), cfg_for(tiny_model), out, engine=engine)
    assert sorted(p.name for p in out.iterdir()) == before
    s = sample(prompts_dir, cfg_for(tiny_model, temperature=0.5, n=2, limit=3), out, overwrite=True, engine=engine)
    t = io.read_table(out, "responses")
    assert s.rows == 6 and t.num_rows == 6 and set(t["temperature"].to_pylist()) == {0.5}
    assert json.loads((out / "_sample_config.json").read_text())["identity"]["limit"] == 3


def test_a_foreign_table_folder_is_not_resumed(engine, tiny_model, prompts_dir, tmp_path):
    with pytest.raises(CreamError, match="not a `cream sample` responses table"):
        sample(prompts_dir, cfg_for(tiny_model), prompts_dir, engine=engine)


# ---------------------------------------------------------------------------- the command
def test_cli_samples_and_prints_a_closing_line(cli, tiny_model, prompts_dir, tmp_path):
    r = cli("sample", prompts_dir, "--model", tiny_model, "--n", "2", "--out", tmp_path / "r", "--max-new-tokens",
            "4", "--limit", "3", "--iteration", "1", "--batch-size", "2", "--seed", "3")
    assert r.code == 0, r
    assert "sampled 3 prompts x 2" in r.out and "6 responses" in r.out and str(tmp_path / "r") in r.out
    t = io.read_table(tmp_path / "r", "responses")
    assert t.num_rows == 6 and set(t["iteration"].to_pylist()) == {1} and set(t["seed"].to_pylist()) == {3}
    r2 = cli("sample", prompts_dir, "--model", tiny_model, "--n", "2", "--out", tmp_path / "r", "--max-new-tokens",
             "4", "--limit", "3", "--iteration", "1", "--batch-size", "2", "--seed", "3")
    assert r2.code == 0 and "(3 already done)" in r2.out


def test_cli_help_names_every_flag(cli):
    r = cli("sample", "--help")
    assert r.code == 0
    for flag in ("--model", "--n", "--out", "--seed", "--temperature", "--top-p", "--max-new-tokens", "--batch-size",
                 "--engine", "--limit", "--shard", "--iteration", "--overwrite"):
        assert flag in r.out


@pytest.mark.parametrize("args,needles", [
    (["--n", "0"], ["--n: got 0"]),  # the command line names the flag the user wrote
    (["--temperature", "-1"], ["--temperature: got -1"]),
    (["--top-p", "0"], ["--top-p: got 0", "(0, 1]"]),
    (["--top-p", "1.5"], ["--top-p: got 1.5"]),
    (["--engine", "llamacpp"], ["--engine: got 'llamacpp'", "hf, vllm"]),
    (["--shard", "2/2"], ["--shard", "0 <= i < k"]),
])
def test_cli_bad_settings_are_one_line_errors_and_write_nothing(cli, tiny_model, prompts_dir, tmp_path, args, needles):
    r = cli("sample", prompts_dir, "--model", tiny_model, "--out", tmp_path / "r", *args)
    assert_user_error(r, *needles)
    assert not (tmp_path / "r").exists()


def test_cli_bad_inputs_are_one_line_errors_and_write_nothing(cli, tiny_model, prompts_dir, tmp_path):
    empty = tmp_path / "empty.parquet"
    io.write_table(prompts_table(0), empty, "prompts")
    r = cli("sample", empty, "--model", tiny_model, "--out", tmp_path / "r")
    assert_user_error(r, "empty prompts table")
    r = cli("sample", prompts_dir, "--model", tmp_path / "no-such-model", "--out", tmp_path / "r")
    assert_user_error(r, "no-such-model", "does not exist")
    r = cli("sample", tmp_path / "missing.parquet", "--model", tiny_model, "--out", tmp_path / "r")
    assert_user_error(r, "missing.parquet")
    assert not (tmp_path / "r").exists()


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed here")
def test_cli_engine_vllm_without_vllm_names_the_package(cli, tiny_model, prompts_dir, tmp_path):
    r = cli("sample", prompts_dir, "--model", tiny_model, "--out", tmp_path / "r", "--engine", "vllm")
    assert_user_error(r, "'vllm' package", "pip install -e '.[vllm]'")
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
def test_smollm2_answers_and_stops_at_end_of_turn(tmp_path):
    """The real model ends its turns with <|im_end|>: stop rows, no template tokens in the text."""
    table = pa.table({"prompt_id": ["a", "b"], "prompt": [[{"role": "user", "content": "Say hello."}],
                                                          [{"role": "user", "content": "What is 2+2?"}]],
                      "source": ["t", "t"], "reference_answer": pa.array([None, None], pa.string())})
    cfg = SampleConfig(model=models.EMBEDDED_ALIAS, n=2, max_new_tokens=48, temperature=0.8)
    sample(table, cfg, tmp_path / "r")
    t = io.read_table(tmp_path / "r", "responses")
    stops = t.filter(pc.equal(t["finish_reason"], "stop"))
    assert stops.num_rows >= 2
    assert all(0 < n < 48 for n in stops["n_tokens"].to_pylist())
    assert not any("<|im_end|>" in x or "<|im_start|>" in x for x in t["response"].to_pylist())
    assert set(t["model"].to_pylist()) == {models.EMBEDDED_ALIAS}
