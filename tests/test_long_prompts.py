"""Prompts beyond the model's context (issue #26, item 5): a 100,000-character prompt against a 2,048-position model.

`cream sample` used to sample it with no check (minutes of garbage past the positions the model knows). The rule:
a prompt is sampled only when its templated tokens plus max_new_tokens fit the model's max_position_embeddings;
the others are skipped and counted (one warning line, the count in the manifest) or, with --long-prompts error,
refused in one line. Through the installed console script.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cream_data.tables import io

CREAM = Path(sys.executable).with_name("cream")


def cream(*args, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([str(CREAM), *map(str, args)], capture_output=True, text=True, env=env, cwd=cwd,
                          timeout=300)


@pytest.fixture(scope="module")
def prompts(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("long") / "prompts.jsonl"
    rows = [{"prompt_id": "short-1", "prompt": "What is 2 + 2?"},
            {"prompt_id": "huge", "prompt": "Summarise this. " + "lorem ipsum dolor sit amet " * 3700},
            {"prompt_id": "short-2", "prompt": "Name a colour."}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    proc = cream("prompts", path, "--out", path.with_name("prompts"), cwd=path.parent)
    assert proc.returncode == 0, proc.stderr
    return path.with_name("prompts")


def ids(prompts: Path) -> tuple[str, set[str]]:
    """(the long prompt's id, the short ones' ids): `cream prompts` derives ids from the text."""
    table = io.read_table(prompts, "prompts")
    by_len = sorted(zip(table["prompt"].to_pylist(), table["prompt_id"].to_pylist()), key=lambda r: len(str(r[0])))
    return by_len[-1][1], {pid for _, pid in by_len[:-1]}


def test_a_prompt_beyond_the_context_is_skipped_and_counted(tmp_path, prompts, tiny_model):
    proc = cream("sample", prompts, "--model", tiny_model, "--out", tmp_path / "r", "--n", 2, "--max-new-tokens", 4,
                 cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    table = io.read_table(tmp_path / "r", "responses")
    huge, short = ids(prompts)
    assert set(table["prompt_id"].to_pylist()) == short and table.num_rows == 4
    warnings = [ln for ln in proc.stderr.splitlines() if "warning" in ln.lower()]
    assert len(warnings) == 1 and "1 of 3 prompts" in warnings[0] and repr(huge) in warnings[0]
    assert "2048" in warnings[0] and "Traceback" not in proc.stderr
    manifest = io.read_manifest(tmp_path / "r")
    assert manifest["sample"]["prompts_too_long"] == 1


def test_long_prompts_error_refuses_in_one_line_and_writes_nothing(tmp_path, prompts, tiny_model):
    proc = cream("sample", prompts, "--model", tiny_model, "--out", tmp_path / "r", "--n", 2, "--max-new-tokens", 4,
                 "--long-prompts", "error", cwd=tmp_path)
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and str(prompts) in lines[0] and f"prompt_id {ids(prompts)[0]!r}" in lines[0], proc.stderr
    assert not (tmp_path / "r").exists() or not any((tmp_path / "r").glob("part-*"))


def test_max_new_tokens_counts_against_the_context(tmp_path, prompts, tiny_model):
    """Every prompt fits alone, none with 2,048 new tokens: nothing left to sample is an error, not an empty table."""
    proc = cream("sample", prompts, "--model", tiny_model, "--out", tmp_path / "r", "--n", 1, "--max-new-tokens",
                 2048, cwd=tmp_path)
    assert proc.returncode == 2 and "3 of 3 prompts" in proc.stderr and "nothing left to sample" in proc.stderr
    assert "Traceback" not in proc.stderr
