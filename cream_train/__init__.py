"""cream_train: SFT and consistency-weighted DPO on TRL (pinned trl==1.16.0).

- :mod:`cream_train.loss`: the CREAM loss as a pure tensor function.
- :mod:`cream_train.config`: one frozen, validated config per stage.
- :mod:`cream_train.prefs`: preference tables → training data; when the stored reference log-probs apply.
- :mod:`cream_train.dpo`: the small ``DPOTrainer`` subclass; :mod:`cream_train.sft`: SFT data.
- :mod:`cream_train.train`: run a stage into an atomic checkpoint folder with lineage.
- :mod:`cream_train.api`: `train` and `run` (the whole loop) from Python (docs/API.md).

Importing this package imports neither torch nor TRL; the modules that need them import them.
"""
