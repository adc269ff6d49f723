"""Model-running engines (sampling, scoring, judging). Everything here imports torch lazily."""
