"""Pickers: one per module, each chooses one candidate from scored survivors."""
