"""The harness evaluation's settings (``cream eval --harness`` flags, the ``eval.harness`` mapping of a run config):
one definition. Imported by ``cream --help``: no lm-eval here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, get_type_hints

from cream_data.errors import CreamError
from cream_data.inputs.harness_tasks import DEFAULT_SHOTS
from cream_data.settings import SettingsError, at_least, coerce, setting, shown, type_name, user_fields
from cream_data.stages.eval_config import BenchmarkSettings
from cream_data.vocab import ENGINES

RUN_OWNED = ("data_dir", "label")  # under `cream run` these come from the eval section and the model (M<k>)


@dataclass(frozen=True)
class HarnessConfig(BenchmarkSettings):
    """Settings of one lm-evaluation-harness evaluation; validated on construction (every problem at once). Without
    ``data_dir`` the harness's own tasks run (from the Hub); with it, cream's local copies over that folder."""

    what = "harness config"

    num_fewshot: int | None = setting(None, help="Worked examples before each question (default: each task's own, "
                                      "0; 5 for gsm8k).", check=at_least(0, "an integer >= 0"))
    batch_size: int = setting(8, help="The harness's batch size.", check=at_least(1, "an integer >= 1"))
    engine: str = setting("hf", choices=ENGINES, help="The harness's model backend: hf, or vllm (GPU).")

    @classmethod
    def from_mapping(cls, raw: Any, **run_wide) -> "HarnessConfig":
        """Build from a run config's ``eval.harness`` mapping; ``run_wide`` (data_dir, label) come from the run.
        Every problem at once, each starting with the key it is about."""
        hints = get_type_hints(cls)
        keys = sorted(f.name for f in user_fields(cls) if f.name not in RUN_OWNED)
        problems, values = [], {}
        if not isinstance(raw, dict):
            problems.append(f"got {shown(raw)}, expected a mapping of {', '.join(keys)}")
            raw = {}
        for k, v in raw.items():
            if k not in keys:
                problems.append(f"{shown(k, quote=False)}: unknown setting (known: {', '.join(keys)})")
                continue
            try:
                values[k] = coerce(v, hints[k]) if k != "tasks" or not isinstance(v, str) else v
            except TypeError:
                problems.append(f"{k}: got {shown(v)}, expected {type_name(hints[k])}")
        try:
            cfg = cls(**values, **run_wide)
        except SettingsError as e:
            problems += e.problems
        if problems:
            err = CreamError("harness config: " + "; ".join(problems))
            err.problems = problems  # each "key: got X, expected Y": `cream run --check` names the section
            raise err
        return cfg

    def shots(self, task: str) -> int:
        return self.num_fewshot if self.num_fewshot is not None else DEFAULT_SHOTS.get(task, 0)

    def identity(self, model_name: str, data_fingerprint: str, version: str) -> dict:
        """What decides the numbers: a rerun into the same folder must match it to resume."""
        return {"model": model_name, "tasks": list(self.tasks), "num_fewshot": self.num_fewshot,
                "limit": self.limit, "batch_size": self.batch_size, "engine": self.engine,
                "data": data_fingerprint, "harness_version": version}
