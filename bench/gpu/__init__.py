"""The GPU check's parts (bench/gpu_check.py is the command)."""
