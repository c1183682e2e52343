"""Structured logging: JSON lines on stderr via structlog, configured once per process.

Every line is one JSON object with ``event``, ``level``, ``timestamp`` and ``logger`` (the
name the module's ``structlog.get_logger(name)`` gave; the edge's access log writes the same
fields). What libraries log through the standard ``logging`` module (gRPC, asyncio: warnings
and errors, as before) is rendered the same way, so an error path never writes a line that is
not JSON.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

import structlog

_LEVEL = logging.INFO
DEFAULT_LOGGER = "switchyard"  # the ``logger`` of a structlog logger asked for without a name


def enabled(level: str) -> bool:
    """Whether events at ``level`` are written (for writers that bypass structlog)."""
    return logging.getLevelNamesMapping()[level.upper()] >= _LEVEL


class _NamedPrintLogger(structlog.PrintLogger):
    """A ``PrintLogger`` that keeps the name ``structlog.get_logger(name)`` asked for."""

    def __init__(self, file: TextIO, name: str) -> None:
        super().__init__(file)
        self.name = name


def _named(*args: Any) -> _NamedPrintLogger:
    return _NamedPrintLogger(sys.stderr, str(args[0]) if args else DEFAULT_LOGGER)


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at the time (a test may swap it)."""

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        pass


def configure(level: str = "info", json: bool = True) -> None:
    """JSON in production; ``json=False`` renders for a terminal."""
    global _LEVEL  # noqa: PLW0603 - the process-wide level, set once at start
    _LEVEL = logging.getLevelNamesMapping()[level.upper()]
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer())
    stamp = structlog.processors.TimeStamper(fmt="iso", utc=True)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.stdlib.add_logger_name,
            stamp,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=_named,
        cache_logger_on_first_use=True,
    )
    # The standard library's records (libraries' warnings and errors: the root logger's
    # level is left as it is) as the same JSON lines; one such handler per process.
    root = logging.getLogger()
    for h in [h for h in root.handlers if isinstance(h, _StderrHandler)]:
        root.removeHandler(h)
    handler = _StderrHandler()
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.stdlib.add_log_level, structlog.stdlib.add_logger_name,
                           stamp],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.format_exc_info, renderer]))
    root.addHandler(handler)
