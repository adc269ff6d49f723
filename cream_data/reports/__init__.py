"""Reports: `cream inspect` summaries, the run report, scorer agreement tables, the study."""
