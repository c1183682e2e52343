"""Failover drills: break part of a running mesh under steady load and measure what callers saw.

``run_drill(cfg, config_path, scenario, duration_s, rate)`` → :class:`DrillReport`;
``drill_main(args)`` is the ``switchyard drill`` command; ``python -m services.drills``
runs it standalone. Scenarios: see :data:`SCENARIOS`; ``kill-streams`` (LLM streams killed
mid-generation, ``services.drills.streams``) has its own report.
"""

from services.drills.cli import add_arguments, drill_main
from services.drills.report import DrillReport
from services.drills.runner import run_drill
from services.drills.scenarios import SCENARIOS

__all__ = ["SCENARIOS", "DrillReport", "add_arguments", "drill_main", "run_drill"]
