"""The eval stage's settings (``cream eval`` flags, the ``eval:`` section of a run config): one definition."""

from __future__ import annotations

from dataclasses import dataclass

from cream_data.inputs.tasks import task_problems
from cream_data.settings import Settings, at_least, dtype_setting, keyed, setting, shown
from cream_data.vocab import EXTRACTORS, TASKS

SUFFIX = ("Answer the question by thinking step by step. At the end, output the final answer, "
          "starting with 'Answer:'.")


@dataclass(frozen=True)
class BenchmarkSettings(Settings):
    """What both evaluations (the paper protocol and lm-evaluation-harness) are set by: which tasks and examples, where
    the files are, which device, and the model's display name."""

    tasks: tuple[str, ...] = setting(TASKS, help=f"The benchmark tasks (comma-separated): {', '.join(TASKS)}.")
    limit: int | None = setting(None, help="Evaluate the first K examples of each task, in file order (the same K "
                                "for every model).", check=at_least(1, "an integer >= 1"))
    data_dir: str | None = setting(None, metavar="PATH", help="Read the benchmarks from a local folder laid out like "
                                   "../shared/data instead of the Hugging Face Hub.")
    label: str | None = setting(None, help="Display name in reports, e.g. M1.")
    device: str | None = setting(None, help="Torch device (default cuda if available).")
    dtype: str = dtype_setting()
    trust_remote_code: bool = setting(False, help="Allow custom model code.")

    def _normalise(self) -> None:
        if isinstance(self.tasks, (str, list)):
            self._set("tasks", (self.tasks,) if isinstance(self.tasks, str) else tuple(self.tasks))

    def _problems(self) -> list[tuple[str, str]]:
        if not isinstance(self.tasks, tuple):
            return [("tasks", f"got {shown(self.tasks)}, expected a list of task names")]
        return [keyed(p) for p in task_problems(self.tasks)]


@dataclass(frozen=True)
class EvalConfig(BenchmarkSettings):
    """Settings of one evaluation; validated on construction (every problem reported at once)."""

    what = "eval config"

    max_new_tokens: int = setting(512, help="Cap on generated tokens per answer (512 leaves room for step-by-step "
                                  "reasoning; lower it for a quick CPU look, at the cost of answers cut before "
                                  "'Answer:').", check=at_least(1, "at least 1"))
    batch_size: int = setting(16, help="Prompts per generate call (length-sorted).", check=at_least(1, "at least 1"))
    suffix: str = setting(SUFFIX, help="Appended to each question after a newline (\"\" for none).")
    extract: str = setting("cream", choices=EXTRACTORS, help="Answer extraction: cream (robust: last 'Answer:' "
                           "marker, the item's own option letters, numbers compared as numbers) or authors (the CREAM "
                           "authors' rules, flaws included, to set numbers beside the paper's; see "
                           "docs/EVALUATION.md).")

    def identity(self, model_name: str, data_fingerprint: str) -> dict:
        """What decides the rows: a rerun into the same folder must match it to resume."""
        return {"model": model_name, "tasks": list(self.tasks), "limit": self.limit, "suffix": self.suffix,
                "max_new_tokens": self.max_new_tokens, "batch_size": self.batch_size, "data": data_fingerprint,
                "extract": self.extract, "dtype": self.dtype}
