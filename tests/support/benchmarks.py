"""The benchmark files of the evaluation tasks read by hand: the independent reading `cream eval` is checked against."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

# each task's test file under the benchmark data folder
FILES = {"arc_easy": "arc/ARC-Easy-Test.jsonl", "arc_challenge": "arc/ARC-Challenge-Test.jsonl",
         "openbookqa": "openbookqa/test.jsonl", "siqa": "siqa/dev.jsonl", "gsm8k": "gsm8k/test.jsonl"}


def raw_items(data: Path, task: str) -> list[dict]:
    """[{id, gold, n_choices, options, text}] straight from the file: gold is a letter, or GSM8K's number."""
    lines = [json.loads(ln) for ln in (data / FILES[task]).read_text().splitlines() if ln.strip()]
    items = []
    if task == "siqa":
        labels = (data / "siqa/dev-labels.lst").read_text().split()
        for i, (r, lab) in enumerate(zip(lines, labels)):
            opts = [r["answerA"], r["answerB"], r["answerC"]]
            items.append({"id": f"dev-{i + 1:05d}", "gold": "ABC"[int(lab) - 1], "n_choices": 3, "options": opts,
                          "text": r["context"]})
    elif task == "gsm8k":
        for r in lines:
            turns = [{"role": "user", "content": r["question"]}]
            canon = json.dumps(turns, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
            items.append({"id": hashlib.sha256(canon.encode()).hexdigest()[:16], "n_choices": 0, "options": [],
                          "gold": r["answer"].split("####")[-1].strip().replace(",", ""), "solution": r["answer"],
                          "text": r["question"]})
    else:
        for r in lines:
            choices = r["question"]["choices"]
            labels = [c["label"] for c in choices]
            items.append({"id": r["id"], "gold": "ABCDE"[labels.index(r["answerKey"])], "n_choices": len(choices),
                          "options": [c["text"] for c in choices], "labels": labels, "text": r["question"]["stem"]})
    return items
