"""bench/generation.py, what bench/sample.py and bench/eval_gen.py print their percentages from: the FLOPs per token
against a hand count for the tiny Llama, the linear layers' pass counting every product once, and the profiler's
shares adding up with the products where they are."""

from __future__ import annotations

import pytest
import torch

from bench.generation import gflop_per_token, linear_rate, op_shares


@pytest.fixture(scope="module")
def model(tiny_model):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).eval()


def test_flops_per_token_by_hand(model):
    c = model.config
    d, f, layers, heads = c.hidden_size, c.intermediate_size, c.num_hidden_layers, c.num_attention_heads
    kv = c.num_key_value_heads * (c.head_dim if getattr(c, "head_dim", None) else d // heads)
    per_layer = d * d + 2 * d * kv + d * d + 3 * d * f + 2 * d  # q, k and v, o, the MLP, two norms' weights
    params = layers * per_layer + d + d * c.vocab_size  # the final norm, the head (tied or not, a product per token)
    context = 100.0
    attention = 4 * layers * heads * (d // heads) * context
    assert gflop_per_token(model, context) == pytest.approx((2 * params + attention) / 1e9, rel=1e-12)


def test_the_linear_pass_counts_each_product_once(model):
    ms, rate = linear_rate(model, rows=4, repeats=3)
    c = model.config
    d, f = c.hidden_size, c.intermediate_size
    kv = c.num_key_value_heads * d // c.num_attention_heads  # the key (and value) projection's width
    per_layer = 2 * d * d + 2 * d * kv + 3 * d * f  # q and o, k and v, gate, up and down: no norms, no embedding
    flops = 2 * 4 * (c.num_hidden_layers * per_layer + d * c.vocab_size)  # the head counted once
    assert ms > 0 and rate * ms / 1e3 * 1e9 == pytest.approx(flops, rel=1e-9)


def test_op_shares_add_up_and_find_the_products():
    a, b = torch.randn(256, 256), torch.randn(256, 256)
    matmuls = op_shares(lambda: [a @ b for _ in range(20)])
    assert sum(matmuls.values()) == pytest.approx(1.0) and matmuls["matrix products"] > 0.8
    x = torch.randn(2_000_000)
    other = op_shares(lambda: [torch.sin(x) for _ in range(5)])
    assert other["everything else"] > 0.9 and other["attention"] == 0.0

