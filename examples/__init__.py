"""Runnable examples from the docs (each one driven by a test)."""
