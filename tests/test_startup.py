"""What a stage process reads once at start-up: a tokenizer the policy check read already is not read again when
the model loads (label: once per scoring model), and the embedded model's GGUF file is parsed once while its
checkpoint is built (one shared ``gguf.GGUFReader``, restored after)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cream_data.engines import model_refs, model_roles, models
from cream_data.errors import CreamError
from cream_data.stages.label import LabelConfig, label
from cream_data.tables import io
from tests.support.tables import responses_table


@pytest.fixture
def tokenizer_reads(monkeypatch) -> list[str]:
    """The model path of every tokenizer read from its files from now on."""
    reads, real = [], model_roles.read_tokenizer

    def counted(ref, **kwargs):
        reads.append(ref.path)
        return real(ref, **kwargs)

    monkeypatch.setattr(model_roles, "read_tokenizer", counted)  # the policy check's read
    monkeypatch.setattr(models, "read_tokenizer", counted)  # a stage's own (label compares the tokenizers first)
    return reads


def test_load_with_the_checked_tokenizer_reads_no_tokenizer_files(tiny_model, tokenizer_reads):
    ref = models.resolve(str(tiny_model))
    tok = models.load_tokenizer(ref)
    assert tokenizer_reads == [ref.path]
    model, got, _ = models.load(ref, device="cpu", tokenizer=tok)
    assert got is tok and tokenizer_reads == [ref.path]  # handed over, not read again
    again, tok2, _ = models.load(ref, device="cpu")  # without it: read from the files, as before
    assert tokenizer_reads == [ref.path, ref.path]
    assert tok2.get_vocab() == tok.get_vocab() and tok2.chat_template == tok.chat_template
    mine, theirs = model.state_dict(), again.state_dict()
    assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)


def test_a_handed_over_tokenizer_is_still_checked_against_the_model(tiny_model):
    ref = models.resolve(str(tiny_model))
    tok = models.load_tokenizer(ref)
    vocab = model_roles.read_config(ref).vocab_size
    tok.add_tokens([f"<extra_{i}>" for i in range(vocab - len(tok) + 1)])  # one id past the embedding
    assert len(tok) == vocab + 1
    with pytest.raises(CreamError, match=f"its tokenizer has {vocab + 1} tokens but its embedding only {vocab} rows"):
        models.load(ref, device="cpu", tokenizer=tok)


def test_label_reads_each_models_tokenizer_once(tmp_path, tiny_model, tiny_model_b, tokenizer_reads):
    responses = io.write_table(responses_table(n_prompts=2, n=2), tmp_path / "responses", "responses")
    cfg = LabelConfig(model=str(tiny_model), ref=str(tiny_model_b), prev_model=str(tiny_model_b), iteration=1)
    summary = label(responses, cfg, tmp_path / "lab")
    paths = sorted([str(tiny_model.resolve()), str(tiny_model_b.resolve())])
    assert sorted(summary.models_scored) == paths  # both models were loaded and scored
    assert sorted(tokenizer_reads) == paths  # each tokenizer read once (the check), none again to load
    scores = io.read_table(tmp_path / "lab" / "scores", "scores")
    assert scores.num_rows > 0 and np.isfinite(scores.column("logp").to_numpy(zero_copy_only=False)).all()


def _tiny_gguf(path) -> None:
    """A real GGUF file: a few metadata fields and one float32 tensor (gguf's own writer)."""
    import gguf

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny")
    writer.add_uint32("tiny.count", 7)
    writer.add_tensor("w", np.arange(12, dtype=np.float32).reshape(3, 4))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_gguf_file_parsed_once_while_the_embedded_model_is_built(tmp_path, monkeypatch):
    import gguf

    path = tmp_path / "tiny.gguf"
    _tiny_gguf(path)
    original = gguf.GGUFReader
    parses = []

    class Counted(original):
        def __init__(self, *args, **kwargs):
            parses.append(args[0])
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(gguf, "GGUFReader", Counted)
    with model_refs._gguf_parsed_once():
        first = gguf.GGUFReader(path)
        second = gguf.GGUFReader(str(path))  # transformers passes the path as a string
        assert second is first and len(parses) == 1
        assert first.fields["tiny.count"].parts[-1][0] == 7
        np.testing.assert_array_equal(first.tensors[0].data.reshape(3, 4),
                                      np.arange(12, dtype=np.float32).reshape(3, 4))
    assert gguf.GGUFReader is Counted  # restored: outside the build every call parses again
    assert gguf.GGUFReader(path) is not first and len(parses) == 2


def test_gguf_reader_restored_when_the_build_fails(tmp_path):
    import gguf

    original = gguf.GGUFReader
    with pytest.raises(RuntimeError, match="conversion failed"):
        with model_refs._gguf_parsed_once():
            assert gguf.GGUFReader is not original
            raise RuntimeError("conversion failed")
    assert gguf.GGUFReader is original
