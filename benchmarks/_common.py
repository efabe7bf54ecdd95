"""Shared command-line arguments of the seasons-mini benchmarks (run as ``python benchmarks/bench_*.py``)."""
from __future__ import annotations

import argparse
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def seasons_parser(description: str) -> argparse.ArgumentParser:
    """Parser with ``--root`` (seasons-mini CMU layout), ``--slices`` and ``--cache`` (localization cache)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--root", type=Path, default=REPO.parent / "shared" / "data" / "seasons-mini" / "cmu")
    parser.add_argument("--slices", default="1,2")
    parser.add_argument("--cache", type=Path, default=REPO / "outputs" / "bench" / "cache")
    return parser
