"""Stages: sample, label, evaluate and the lm-evaluation-harness bridge; each reads tables, runs engines and writes tables."""
