"""Capacity: acting on a placement plan through real interfaces (issue 13).

``provider.py`` (the ``Provider`` protocol: GPUs per pool), ``local.py`` (real Triton
processes, one per GPU, in explicit model-control mode), ``kubernetes.py`` (one Deployment
per pool, the scale subresource), ``simulated.py`` (provisioning delay, spot reclaims, the
provisioned bill), ``model_control.py`` (load, drain,
unload through Triton's repository API), ``actor.py`` (one plan target → adds, loads,
drains, unloads, removals, in a safe order).
"""
