"""Structured logging: JSON lines on stderr via structlog, configured once per process."""

from __future__ import annotations

import logging
import sys

import structlog

_LEVEL = logging.INFO


def enabled(level: str) -> bool:
    """Whether events at ``level`` are written (for writers that bypass structlog)."""
    return logging.getLevelNamesMapping()[level.upper()] >= _LEVEL


def configure(level: str = "info", json: bool = True) -> None:
    """JSON in production; ``json=False`` renders for a terminal."""
    global _LEVEL  # noqa: PLW0603 - the process-wide level, set once at start
    _LEVEL = logging.getLevelNamesMapping()[level.upper()]
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer())
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
