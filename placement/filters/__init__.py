"""Filters: one policy per module. Each removes candidates a call may not use and says why."""
