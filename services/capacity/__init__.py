"""Capacity: acting on a placement plan through real interfaces (issue 13).

``provider.py`` (the ``Provider`` protocol: GPUs per pool), ``local.py`` (real Triton
processes, one per GPU, in explicit model-control mode), ``model_control.py`` (load, drain,
unload through Triton's repository API), ``actor.py`` (one plan target → adds, loads,
drains, unloads, removals, in a safe order).
"""
