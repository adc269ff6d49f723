"""Rewards, pure: ranking and consistency, pairing, judge prompts and parsing, answer extraction, scorer agreement. No model runs and no file is read or written here."""
