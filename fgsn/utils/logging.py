"""Logging set-up for command-line runs: one handler on the console, one log file beside the outputs."""
from __future__ import annotations

import logging
from pathlib import Path

PACKAGES = ("fgsn", "localization", "reconstruction", "evaluation")
_FORMAT = "[%(asctime)s %(name)s %(levelname)s] %(message)s"


def setup_logging(log_file: str | Path | None = None, level: int = logging.INFO) -> None:
    """Attach console and (optionally) file handlers to the project's package loggers.

    Calling it again with another file adds that file; handlers are never duplicated for the same file.
    """
    fmt = logging.Formatter(_FORMAT, datefmt="%Y/%m/%d %H:%M:%S")
    for name in PACKAGES:
        logger = logging.getLogger(name)
        logger.setLevel(level)
        logger.propagate = False
        if not any(type(h) is logging.StreamHandler for h in logger.handlers):
            h = logging.StreamHandler()
            h.setFormatter(fmt)
            logger.addHandler(h)
        if log_file is not None:
            log_file = Path(log_file)
            log_file.parent.mkdir(parents=True, exist_ok=True)
            target = str(log_file.resolve())
            if not any(isinstance(h, logging.FileHandler) and h.baseFilename == target for h in logger.handlers):
                fh = logging.FileHandler(target)
                fh.setFormatter(fmt)
                logger.addHandler(fh)


def format_duration(seconds: float) -> str:
    """``1 h 02 m``, ``3 m 05 s`` or ``42 s`` (for ETAs in training logs)."""
    s = int(round(max(seconds, 0.0)))
    if s >= 3600:
        return f"{s // 3600} h {s % 3600 // 60:02d} m"
    return f"{s // 60} m {s % 60:02d} s" if s >= 60 else f"{s} s"


def eta(elapsed_s: float, done: int, total: int) -> str:
    """``0.52 s/it, ETA 4 m 10 s`` from the time spent on ``done`` of ``total`` steps (this process's)."""
    per = elapsed_s / max(done, 1)
    return f"{per:.2f} s/it, ETA {format_duration(per * (total - done))}"
