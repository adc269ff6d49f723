"""A hostile probe of `cream`: commands a careless or hostile user would type, run through the installed console
script against real tiny fixtures, each judged refused-cleanly or right. ``python bench/hostile_probe.py``."""
