"""Callbacks that work with any unlearning method (one per file)."""

__all__: list[str] = []
