"""Logging set-up for command-line runs: one handler on the console, one log file beside the outputs; the
trainers' metric CSV files (:class:`MetricsCSV`)."""
from __future__ import annotations

import csv
import io
import logging
from pathlib import Path
from typing import Any, Mapping

from .io import write_text_atomic

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


def progress(iterable, total: int | None = None, desc: str = "", unit: str = "it", log: logging.Logger | None = None,
             interval_s: float = 60.0, tty: bool | None = None):
    """Iterate with progress: a tqdm bar on a terminal; otherwise (log files, cluster jobs, pipes) a log line
    ``desc: done / total unit (pct %), rate, ETA ...`` every ``interval_s`` seconds and at the end.

    Args:
        iterable: the items; total: their number (``len(iterable)`` when None and it has one).
        desc: what is done (e.g. ``SIFT``); unit: of one item.
        log: the logger of the non-terminal lines (default: this module's package logger ``fgsn``).
        interval_s: seconds between log lines when not on a terminal.
        tty: force the terminal (True) or the log lines (False); None: ``sys.stderr.isatty()``.
    """
    import sys
    import time

    total = len(iterable) if total is None and hasattr(iterable, "__len__") else total
    if (sys.stderr.isatty() if tty is None else tty):
        from tqdm import tqdm

        yield from tqdm(iterable, total=total, desc=desc, unit=unit)
        return
    log = log or logging.getLogger("fgsn")
    t0 = last = time.perf_counter()
    done = 0

    def line():
        elapsed = time.perf_counter() - t0
        of = f" / {total}" if total else ""
        pct = f" ({100 * done / total:.0f} %)" if total else ""
        rest = f", {eta(elapsed, done, total)}" if total and done < total else f", {format_duration(elapsed)} in all"
        log.info("%s: %d%s %s%s%s", desc, done, of, unit, pct, rest)

    for item in iterable:
        yield item
        done += 1
        now = time.perf_counter()
        if now - last >= interval_s:
            last = now
            line()
    if done:
        line()


class MetricsCSV:
    """A trainer's append-only CSV of metric rows (``metrics.csv``), cut back to a checkpoint on ``--restore``.

    Each row is appended and the file closed, so a killed run loses at most the line being written. A checkpoint
    records :attr:`rows`; a resumed run calls :meth:`truncate` with that count, which drops the rows logged after
    the checkpoint (the resumed run logs them again, so every row appears once) and a line cut by the kill.
    The header is written atomically (:func:`fgsn.utils.io.write_text_atomic`) when the file is created; this
    process must be the file's only writer.

    Args:
        path: the CSV file.
        fields: column names (a row's missing keys are left empty, extra keys dropped); None: the keys of the
            first row written. An existing file keeps its header.
    """

    def __init__(self, path: str | Path, fields: list[str] | None = None):
        self.path = Path(path)
        self.fields = list(fields) if fields is not None else None
        lines = self._lines()
        self._rows = max(len(lines) - 1, 0)
        if lines:
            self.fields = next(csv.reader(lines[:1]))
        elif self.fields is not None:
            self._write_header()
        self._has_header = bool(lines) or self.fields is not None

    def _lines(self) -> list[str]:
        """The file's complete lines, header first (a last line without its newline, cut by a kill, is none)."""
        if not self.path.exists():
            return []
        return [ln for ln in self.path.read_text().splitlines(keepends=True) if ln.endswith("\n")]

    def _write_header(self) -> None:
        buf = io.StringIO()
        csv.writer(buf).writerow(self.fields)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(self.path, buf.getvalue())

    @property
    def rows(self) -> int:
        """The number of complete data rows in the file (what a checkpoint records)."""
        return self._rows

    def write(self, row: Mapping[str, Any]) -> None:
        """Append one row (after the header, when the file has none yet)."""
        if not self._has_header:
            self.fields = list(row)
            self._write_header()
            self._has_header = True
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, self.fields).writerow({k: row.get(k, "") for k in self.fields})
        self._rows += 1

    def truncate(self, rows: int) -> int:
        """Keep the header and the first ``rows`` complete data rows (rewritten atomically when that changes the
        file); returns the number of complete rows dropped."""
        if not self.path.exists():
            return 0
        text = self.path.read_text()
        lines = [ln for ln in text.splitlines(keepends=True) if ln.endswith("\n")]
        keep = lines[:rows + 1]
        if "".join(keep) != text:
            write_text_atomic(self.path, "".join(keep))
        self._rows = max(len(keep) - 1, 0)
        return len(lines) - len(keep)
