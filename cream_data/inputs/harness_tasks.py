"""cream's local copies of the lm-evaluation-harness tasks: the harness's own prompts, choices, targets, metrics and
filters for arc_easy, arc_challenge, openbookqa, siqa and gsm8k, reading a folder laid out like ../shared/data.

A local task is named ``cream_<task>`` (never the harness's own name) and records the Hub task it mirrors in its
metadata. The files are reshaped by ``process_docs`` into the Hub's layout; SIQA's gold labels are joined from the
line-aligned ``dev-labels.lst``. Few-shot examples come from the task's train file, which must then be present.
The definitions are plain dicts: lm-eval is not imported here.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

from cream_data.errors import CreamError

HUB_TASKS = {"arc_easy": "arc_easy", "arc_challenge": "arc_challenge", "openbookqa": "openbookqa",
             "siqa": "social_iqa", "gsm8k": "gsm8k"}
LOCAL_PREFIX = "cream_"  # local copies never share a name with the harness's own tasks
DEFAULT_SHOTS = {"gsm8k": 5}  # the harness's defaults; every other task is zero-shot

# task → (evaluated split, its file, the train file few-shot examples come from); SIQA's labels sit beside each
_FILES = {
    "arc_easy": ("test", "arc/ARC-Easy-Test.jsonl", "arc/ARC-Easy-Train.jsonl"),
    "arc_challenge": ("test", "arc/ARC-Challenge-Test.jsonl", "arc/ARC-Challenge-Train.jsonl"),
    "openbookqa": ("test", "openbookqa/test.jsonl", "openbookqa/train.jsonl"),
    "siqa": ("validation", "siqa/dev.jsonl", "siqa/train.jsonl"),
    "gsm8k": ("test", "gsm8k/test.jsonl", "gsm8k/train.jsonl"),
}


def _mc_docs(ds, stem: str):
    """ARC/OpenBookQA rows ``{id, question: {stem, choices: [{text, label}]}, answerKey}`` in the Hub layout."""

    def reshape(row):
        q = row["question"]
        return {"id": row["id"], stem: q["stem"], "answerKey": row["answerKey"].strip(),
                "choices": {"text": [c["text"] for c in q["choices"]], "label": [c["label"] for c in q["choices"]]}}

    return ds.map(reshape, remove_columns=ds.column_names)


def _siqa_docs(ds, labels: dict[str, str]):
    """SIQA rows with their gold label ("1".."3") from the split's line-aligned labels file."""
    path = labels[str(ds.split)]
    gold = Path(path).read_text().split()
    if len(gold) != ds.num_rows:
        raise CreamError(f"{path}: {len(gold)} labels for {ds.num_rows} questions; expected one per line")
    return ds.add_column("label", gold)


def _mc(task: str, text: str, docs, *, target: str = "{{choices.label.index(answerKey)}}",
        choice: str = "{{choices.text}}", norm: bool = True, version: float = 1.0) -> dict:
    """A multiple-choice task: the log-likelihood of each choice after the prompt and a space."""
    metrics = ["acc", "acc_norm"] if norm else ["acc"]
    return {"output_type": "multiple_choice", "process_docs": docs, "doc_to_text": text, "doc_to_target": target,
            "doc_to_choice": choice,
            "metric_list": [{"metric": m, "aggregation": "mean", "higher_is_better": True} for m in metrics],
            "metadata": {"version": version, "mirrors": HUB_TASKS[task]}}


def _definition(task: str) -> dict:
    """The task's prompt, choices, target, metrics and filters (its files are set by :func:`local_task`)."""
    if task in ("arc_easy", "arc_challenge"):
        return _mc(task, "Question: {{question}}\nAnswer:", partial(_mc_docs, stem="question"))
    if task == "openbookqa":
        return _mc(task, "{{question_stem}}", partial(_mc_docs, stem="question_stem"))
    if task == "siqa":
        return _mc(task, "Q: {{context}} {{question}}\nA:", None, target="{{(label|int) - 1}}",
                   choice="{{[answerA, answerB, answerC]}}", norm=False, version=0.0)
    return {  # gsm8k
        "output_type": "generate_until", "doc_to_text": "Question: {{question}}\nAnswer:",
        "doc_to_target": "{{answer}}", "num_fewshot": DEFAULT_SHOTS["gsm8k"],
        "generation_kwargs": {"until": ["Question:", "</s>", "<|im_end|>"], "do_sample": False, "temperature": 0.0},
        "metric_list": [{"metric": "exact_match", "aggregation": "mean", "higher_is_better": True,
                         "ignore_case": True, "ignore_punctuation": False,
                         "regexes_to_ignore": [",", "\\$", "(?s).*#### ", "\\.$"]}],
        "filter_list": [
            {"name": "strict-match", "filter": [{"function": "regex", "regex_pattern": "#### (\\-?[0-9\\.\\,]+)"},
                                                {"function": "take_first"}]},
            {"name": "flexible-extract", "filter": [{"function": "regex", "group_select": -1,
                                                     "regex_pattern": "(-?[$0-9.,]{2,})|(-?[0-9]+)"},
                                                    {"function": "take_first"}]}],
        "metadata": {"version": 3.0, "mirrors": HUB_TASKS["gsm8k"]},
    }


def data_root(data_dir: str | Path) -> Path:
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        what = "is a file" if root.exists() else "no such folder"
        raise CreamError(f"--data-dir {data_dir}: {what}; expected a folder laid out like ../shared/data")
    return root.resolve()


def local_files(task: str, data_dir: str | Path, shots: int) -> dict[str, Path]:
    """Role → file of the local task: the evaluated split, and the train split when it is there (required when
    few-shot examples are asked for); SIQA's label files beside them."""
    root = data_root(data_dir)
    split, test, train = _FILES[task]
    files = {split: root / test, "train": root / train}
    if task == "siqa":
        files.update(labels=root / "siqa/dev-labels.lst", train_labels=root / "siqa/train-labels.lst")
    if not all(files[k].is_file() for k in files if k.startswith("train")):
        if shots:
            missing = next(p for k, p in files.items() if k.startswith("train") and not p.is_file())
            raise CreamError(f"--data-dir {data_dir}: no {missing.relative_to(root)} for task {task} ({shots}-shot "
                             "examples come from the train split); expected a folder laid out like ../shared/data")
        files = {k: p for k, p in files.items() if not k.startswith("train")}
    for path in files.values():
        if not path.is_file():
            raise CreamError(f"--data-dir {data_dir}: no {path.relative_to(root)} for task {task}; "
                             "expected a folder laid out like ../shared/data")
    return files


def local_task(task: str, data_dir: str | Path, shots: int = 0) -> dict:
    """The lm-eval task config (an inline dict) of cream's local copy of ``task`` over ``data_dir``."""
    files = local_files(task, data_dir, shots)
    split = _FILES[task][0]
    cfg = {"task": LOCAL_PREFIX + task, "dataset_path": "json", **_definition(task),
           "dataset_kwargs": {"data_files": {s: str(files[s]) for s in (split, "train") if s in files}},
           f"{split}_split": split}
    if "train" in files:
        cfg.update(training_split="train", fewshot_split="train")
    if task == "siqa":
        labels = {split: files["labels"], "train": files.get("train_labels")}
        cfg["process_docs"] = partial(_siqa_docs, labels={s: str(p) for s, p in labels.items() if p})
    return cfg
