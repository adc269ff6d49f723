"""Method temporal's stages of the loop (temporal self-rewarding, docs/REWARDS.md): the initial model's anchor
samples, the temporary future model and its samples. The pairs themselves are the label stage's, with pools."""

from __future__ import annotations

from cream_data.tables import io
from cream_train.run.manifest import table_problem
from cream_train.run.sections import fingerprinted


class TemporalStages:
    """Mixed into :class:`cream_train.run.loop.Loop` (its ``stage``, ``_sample``, ``_work`` and fingerprints)."""

    def anchor(self, t: int) -> None:
        """Method temporal: M1 (the SFT model) samples iteration t's prompts once: the past that the rejected side
        of the pairs is anchored to (iter-t/anchor/)."""
        self._sample(f"anchor-{t}", t, self.stages.anchor(t, self.model(1)), self.model_fp(1),
                     self.run / f"iter-{t}" / "anchor" / "responses")

    def future_sample(self, t: int) -> None:
        """Method temporal: the temporary future model samples iteration t's prompts (iter-t/future/)."""
        if self._no_future(t):
            return
        it = self.run / f"iter-{t}"
        self._sample(f"future-sample-{t}", t, self.stages.future_sample(t, str(it / "future" / "model")),
                     self.fps[f"future-train-{t}"], it / "future" / "responses")

    def future_train(self, t: int) -> None:
        """Method temporal: the temporary future model F_t, DPO from M_t on the anchored pairs (iter-t/future/model);
        none when there are no anchored pairs (the final pairs then take their chosen from M_t alone)."""
        from cream_train.train import train

        it = self.run / f"iter-{t}"
        out = it / "future" / "model"
        inputs = {"prefs_fp": self.fps[f"anchored-{t}"], "model_fp": self.model_fp(t), "method": self.cfg.train_method,
                  "seed": self.cfg.seed, **fingerprinted(self.cfg.train), "stage": "future"}
        if self._no_future(t):
            def skip(_resume):
                self.log(f"[yellow]warning:[/] iteration {t} has no anchored pairs: no future model; the chosen "
                         f"side comes from M{t}'s samples alone")
                return {"no_pairs": True}

            self.fps[f"future-train-{t}"] = self.stage(f"future-train-{t}", {**inputs, "no_pairs": True}, [], skip)
            return
        tcfg = self.stages.future_train(t, self.model(t))
        self.fps[f"future-train-{t}"] = self.stage(
            f"future-train-{t}", inputs, [out], lambda _r: self._work(f"future-train-{t}", "train", lambda: train(tcfg)))

    def _no_future(self, t: int) -> bool:
        """Whether iteration t's anchored pairs are known to be none (a plan, before they exist or while they are
        damaged, assumes some)."""
        prefs = self.run / f"iter-{t}" / "anchored" / "preferences"
        return table_problem(prefs) is None and io.read_manifest(prefs).get("rows") == 0
