"""Scorers: one per module, each returns values in [0, 1], higher is better; no weights here."""
