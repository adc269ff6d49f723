"""The loop's stage command lines: each model stage's own `cream …` argv with the settings the run resolves, and the
launcher its section says to start it with (what `cream run` starts, and what `cream run --plan` prints)."""

from __future__ import annotations

import re

from cream_train.run.launch import Launcher, stage_argv


class StageCommands:
    """Mixed into :class:`cream_train.run.loop.Loop`: it needs the run's ``cfg``, ``run``, ``stages``, ``model`` and
    ``parent``."""

    def command(self, name: str) -> list[str] | None:
        """The argv (after ``cream``) that does stage ``name``'s work with the settings this run resolves; None for
        the run's own bookkeeping stages (prompts, sft-data), which read the configured sources."""
        kind, k = re.fullmatch(r"([a-z-]+?)-?M?(\d*)", name).groups()
        k = int(k) if k else None
        run, stages = self.run, self.stages
        it = run / f"iter-{k}"
        if kind in ("sample", "anchor", "future-sample"):
            cfg, out = {"sample": (stages.sample(k, self.model(k)), it / "responses"),
                        "anchor": (stages.anchor(k, self.model(1)), it / "anchor" / "responses"),
                        "future-sample": (stages.future_sample(k, str(it / "future" / "model")),
                                          it / "future" / "responses")}[kind]
            return stage_argv("sample", cfg, positional=[str(run / "prompts" / f"subset-{k}")], extra={"--out": str(out)})
        if kind in ("label", "anchored"):
            return stage_argv("label", self._label_config(k, kind), positional=[str(it / "responses")],
                              extra={"--out": str(it / "anchored" if kind == "anchored" else it)})
        if kind == "future-train":
            cfg = stages.future_train(k, self.model(k))
            return stage_argv("train", cfg, positional=[cfg.data], skip=("data",), extra={"--stage": cfg.stage})
        if kind == "train":
            cfg = stages.sft(self.model(0)) if k == 1 else stages.train(k - 1, self.model(k - 1))
            return stage_argv("train", cfg, positional=[cfg.data], skip=("data",), extra={"--stage": cfg.stage})
        if kind == "eval":
            return stage_argv("eval", stages.eval(k), extra={"--model": self.model(k), "--out": str(run / "eval" / f"M{k}")})
        if kind == "harness":
            from cream_data.stages.harness_config import HarnessConfig

            cfg = HarnessConfig.from_mapping(self.cfg.eval.harness, data_dir=self.cfg.eval.data_dir, label=f"M{k}")
            return stage_argv("eval", cfg, skip=("tasks",), extra={
                "--model": self.model(k), "--out": str(run / "eval-harness" / f"M{k}"), "--harness": ",".join(cfg.tasks)})
        return None

    def launcher(self, name: str) -> Launcher:
        """How stage ``name``'s command starts: its section's launch keys (sample, label, sft, train); evaluation
        runs as one process."""
        kind, k = re.fullmatch(r"([a-z-]+?)-?M?(\d*)", name).groups()
        if kind in ("sample", "anchor", "future-sample"):
            return self.stages.launcher("sample", self.stages.sample(int(k), self.model(int(k))))
        if kind in ("label", "anchored"):
            return self.stages.launcher("label", self._label_config(int(k), kind))
        if kind == "train":
            return self.stages.launcher("sft" if k == "1" else "train")
        if kind == "future-train":
            return self.stages.launcher("train")
        return Launcher()

    def _label_config(self, t: int, kind: str = "label"):
        """M_t labels; its parent is the reference and the previous scorer, the parent's parent their reference
        (after a pair-less iteration, the model M_t was carried from is skipped). Method temporal pools M1's samples
        as rejectable, and for the final pairs (``kind`` label) the future model's as choosable."""
        ref = self.parent(t)
        prev_ref = self.parent(ref)
        pools = {}
        if self.cfg.method == "temporal":
            it = self.run / f"iter-{t}"
            pools["rejected_from"] = (str(it / "anchor" / "responses"),)
            if kind == "label" and not self._no_future(t):
                pools["chosen_from"] = (str(it / "future" / "responses"),)
        return self.stages.label(t, self.model(t), self.model(ref), self.model(prev_ref) if prev_ref is not None else None,
                                 **pools)
