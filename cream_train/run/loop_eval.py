"""The loop's evaluation stages: cream's own benchmarks after each model (``eval-M<k>``) and, with
``eval.harness``, lm-evaluation-harness (``harness-M<k>``); a model carried forward takes the evaluation of the
model it copies."""

from __future__ import annotations

import shutil
from dataclasses import asdict


class EvalStages:
    """Mixed into :class:`cream_train.run.loop.Loop` (its ``stage``, ``_work``, models and manifest)."""

    def evaluate(self, k: int) -> None:
        from cream_data.stages.evaluate import evaluate

        e = self.cfg.eval
        out = self.run / "eval" / f"M{k}"
        source = self.manifest.data.get("carried", {}).get(f"M{k}")
        src = self.manifest.data["stages"].get(f"eval-{source}") or {} if source else {}
        if src.get("status") == "done":
            # the same weights as an earlier, evaluated model: its evaluation stands (the report marks the row)
            self.manifest.data["stages"][f"eval-M{k}"] = {
                "status": "done", "fingerprint": self.model_fp(k), "carried_from": source,
                **{key: src[key] for key in ("accuracy", "average") if key in src}}
            self.manifest.save()
            if out.exists():
                shutil.rmtree(out)
            self.log(f"[dim]= eval-M{k}: M{k} is {source} carried forward; its evaluation is reused[/]")
            self.harness(k)
            return
        ecfg = self.stages.eval(k)
        inputs = {"model_fp": self.model_fp(k), **{key: v for key, v in asdict(e).items() if key != "harness"}}

        def go(resume):
            r = self._work(f"eval-M{k}", "eval",
                           lambda: evaluate(self.model(k), ecfg, out, overwrite=not resume, progress=self.progress))
            self.log(f"  M{k}: average accuracy {r['average']:.3f} "
                     f"({', '.join(f'{t} {a:.3f}' for t, a in r['accuracy'].items())})")
            return r

        self.stage(f"eval-M{k}", inputs, [out], go)
        self.harness(k)

    def harness(self, k: int) -> None:
        """``eval.harness``: lm-evaluation-harness on M_k into RUN/eval-harness/M<k>/, a stage of its own; a
        carried model takes the result of the model it copies, as its paper-protocol eval does."""
        if self.cfg.eval.harness is None:
            return
        from cream_data.stages.harness import evaluate_harness
        from cream_data.stages.harness_config import HarnessConfig

        name, out = f"harness-M{k}", self.run / "eval-harness" / f"M{k}"
        source = self.manifest.data.get("carried", {}).get(f"M{k}")
        src = self.manifest.data["stages"].get(f"harness-{source}") or {} if source else {}
        if src.get("status") == "done":
            self.manifest.data["stages"][name] = {"status": "done", "fingerprint": self.model_fp(k),
                                                  "carried_from": source, "metrics": src.get("metrics")}
            self.manifest.save()
            if out.exists():
                shutil.rmtree(out)
            self.log(f"[dim]= {name}: M{k} is {source} carried forward; its harness results are reused[/]")
            return
        hcfg = HarnessConfig.from_mapping(self.cfg.eval.harness, data_dir=self.cfg.eval.data_dir, label=f"M{k}")
        inputs = {"model_fp": self.model_fp(k), "data_dir": hcfg.data_dir, **self.cfg.eval.harness}

        def go(resume):
            return self._work(name, "harness",
                              lambda: evaluate_harness(self.model(k), hcfg, out, overwrite=not resume, log=self.log))

        self.stage(name, inputs, [out], go)

    def should_eval(self, k: int) -> bool:
        m = self.cfg.eval.models
        return m == "all" or (m == "last" and k == self.cfg.iterations + 1)
