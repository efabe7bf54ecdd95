"""Benchmark evaluation: ``fgsn-loc evaluate`` (one module for every method; thresholds and groups of Sattler et al., CVPR 2018, and Toft et al., TPAMI 2020).

For every query with known ground truth: position error ||C_est - C_gt|| (metres) and rotation error
arccos((trace(R_gt^T R_est) - 1) / 2) (degrees); recall at (0.25 m, 2°), (0.5 m, 5°), (5 m, 10°) in percent,
per condition, per scene group and over all; median errors (a missing or failed query counts as a failure,
with infinite error). When ``results.jsonl`` lies beside the submission, median match and inlier counts and
inlier ratios are reported too; for a sequential filter (PFSL: every result's ``info`` has an ``event``), whose
frames mostly have no 2D-3D matches, the filter's own statistics instead: the share of frames tracked (predicted
with odometry, not (re)initialised), the frames (re)initialised from a single-image estimate or a prior, those
left uninitialised, and the median label agreement n_agree / n_visible at the estimated pose.

Writes ``OUT/eval.json``::

    {"thresholds": [[0.25, 2], [0.5, 5], [5, 10]],
     "conditions": {name: {"num_queries": n, "recall": [r1, r2, r3], "median_err_t_m": .., "median_err_R_deg": ..,
                           "median_matches": .., "median_inliers": .., "median_inlier_ratio": ..
                           (PFSL: "filter_tracked", "filter_initialised", "filter_uninitialised",
                           "median_agreement" instead)}},
     "groups": {...same...}, "all": {...same...}}

plus ``OUT/eval.md`` (tables) and ``OUT/cumulative_errors.png`` (fraction of queries below a position error and
below a rotation error, thresholds labelled).
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np

from fgsn.utils.io import write_text_atomic
from fgsn.utils.logging import setup_logging
from fgsn.utils.plotting import pyplot, save_figure
from localization.submission import is_failed_pose, read_results, read_submission
from reconstruction.datasets import SeasonsDataset, load_dataset, parse_slices
from reconstruction.geometry import pose_errors

logger = logging.getLogger(__name__)

THRESHOLDS = ((0.25, 2.0), (0.5, 5.0), (5.0, 10.0))


def recall(err_t_m: np.ndarray, err_R_deg: np.ndarray, thresholds=THRESHOLDS) -> list[float]:
    """Percent of queries with both errors within each (metres, degrees) threshold; inf = failure."""
    if len(err_t_m) == 0:
        return [float("nan")] * len(thresholds)
    return [float(100.0 * np.mean((err_t_m <= t) & (err_R_deg <= r))) for t, r in thresholds]


def query_errors(dataset: SeasonsDataset, poses: dict[str, np.ndarray]) -> dict[str, tuple[float, float]]:
    """name -> (err_t_m, err_R_deg) for every query with ground truth; missing or failed queries get inf."""
    out = {}
    for q in dataset.queries:
        if q.cam_from_world is None:
            continue
        T = poses.get(q.name)
        if T is None or is_failed_pose(T):
            out[q.name] = (np.inf, np.inf)
        else:
            et, er = pose_errors(T, q.cam_from_world)
            out[q.name] = (float(et), float(er))
    return out


def _stats(names: list[str], errors: dict, records: dict) -> dict:
    et = np.array([errors[n][0] for n in names])
    er = np.array([errors[n][1] for n in names])
    s = {"num_queries": len(names), "recall": recall(et, er),
         "median_err_t_m": float(np.median(et)) if len(et) else float("nan"),
         "median_err_R_deg": float(np.median(er)) if len(er) else float("nan")}
    recs = [records[n] for n in names if n in records]
    if not recs:
        return s
    s["median_time_s"] = float(np.median([r["time_s"] for r in recs]))
    events = [r.get("info", {}).get("event") for r in recs]
    if all(e is not None for e in events):  # a sequential filter (PFSL): its own statistics
        info = [r["info"] for r in recs]
        agree = [i["n_agree"] / i["n_visible"] for i in info if i.get("n_visible")]
        s.update(filter_tracked=float(np.mean([e == "track" for e in events])),
                 filter_initialised=int(sum(e in ("init", "reinit") for e in events)),
                 filter_uninitialised=int(sum(e == "uninitialised" for e in events)),
                 median_agreement=float(np.median(agree)) if agree else float("nan"))
    else:
        m = np.array([r["num_matches"] for r in recs], float)
        i = np.array([r["num_inliers"] for r in recs], float)
        s.update(median_matches=float(np.median(m)), median_inliers=float(np.median(i)),
                 median_inlier_ratio=float(np.median(np.where(m > 0, i / np.maximum(m, 1), 0))))
    return s


def main(dataset: SeasonsDataset, submission_path: Path, out_dir: Path, results_path: Path | None = None) -> dict:
    """Evaluate a submission against the dataset's ground truth and write eval.json / eval.md / plot.

    Args:
        dataset: gives the ground truth, conditions and groups.
        submission_path: ``name qw qx qy qz tx ty tz`` file.
        out_dir: output folder.
        results_path: optional ``results.jsonl`` (default: beside the submission, if present) for match and
            inlier statistics.
    Returns:
        The eval.json dictionary.
    Raises:
        SubmissionError: malformed submission; ValueError: no query with ground truth.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    poses = read_submission(submission_path)
    results_path = Path(results_path) if results_path else Path(submission_path).with_name("results.jsonl")
    records = read_results(results_path) if results_path.is_file() else {}
    errors = query_errors(dataset, poses)
    if not errors:
        raise ValueError(f"{dataset.root}: no query has ground truth; nothing to evaluate")
    gt_queries = [q for q in dataset.queries if q.name in errors]
    conditions: dict[str, list[str]] = {}
    groups: dict[str, list[str]] = {}
    for q in gt_queries:
        conditions.setdefault(q.condition, []).append(q.name)
        for g in q.groups:
            groups.setdefault(g, []).append(q.name)
    report = {
        "thresholds": [list(t) for t in THRESHOLDS],
        "conditions": {c: _stats(n, errors, records) for c, n in sorted(conditions.items())},
        "groups": {g: _stats(n, errors, records) for g, n in sorted(groups.items())},
        "all": _stats([q.name for q in gt_queries], errors, records),
    }
    write_text_atomic(out_dir / "eval.json", json.dumps(report, indent=2))
    write_text_atomic(out_dir / "eval.md", format_markdown(report, title=f"Evaluation of {submission_path}"))
    plot_cumulative(errors, conditions, out_dir / "cumulative_errors.png", title=f"{submission_path}")
    a = report["all"]
    logger.info("All %d queries: recall %.1f / %.1f / %.1f %%", a["num_queries"], *a["recall"])
    return report


def format_markdown(report: dict, title: str = "Evaluation") -> str:
    """Tables of recall (and medians) per condition, group and overall."""
    th = " / ".join(f"({t:g} m, {r:g}°)" for t, r in report["thresholds"])
    lines = [f"# {title}", "", f"Recall in % at {th}; a failed or missing query counts as a failure.", ""]
    extra = "median_inliers" in report["all"]
    filt = "filter_tracked" in report["all"]
    head = "| {} | queries | recall | median err (m / °) |" + (
        " median matches | median inliers | inlier ratio |" if extra else
        " tracked frames | (re)initialised | uninitialised | median label agreement |" if filt else "")
    for section in ("conditions", "groups"):
        lines += [head.format(section[:-1]), "|---|---|---|---|" + ("---|---|---|" if extra else
                                                                    "---|---|---|---|" if filt else "")]
        items = list(report[section].items()) + ([("**all**", report["all"])] if section == "groups" else [])
        for name, s in items:
            row = (f"| {name} | {s['num_queries']} | {' / '.join(f'{r:.1f}' for r in s['recall'])} | "
                   f"{s['median_err_t_m']:.3g} / {s['median_err_R_deg']:.3g} |")
            if extra and "median_inliers" in s:
                row += f" {s['median_matches']:.0f} | {s['median_inliers']:.0f} | {s['median_inlier_ratio']:.2f} |"
            elif filt and "filter_tracked" in s:
                row += (f" {100 * s['filter_tracked']:.0f} % | {s['filter_initialised']} | "
                        f"{s['filter_uninitialised']} | {s['median_agreement']:.2f} |")
            lines.append(row)
        lines.append("")
    return "\n".join(lines)


def plot_cumulative(errors: dict, conditions: dict[str, list[str]], path: Path, title: str = "") -> Path:
    """Cumulative distributions of the position and the rotation errors per condition (log x axes spanning the
    errors that occur, failed queries counted as never localized), the benchmark thresholds drawn and labelled,
    saved as PNG.

    Args:
        errors: query name -> (position error m, rotation error deg); inf for a failed query.
        conditions: condition -> query names.
        path: the PNG.
        title: the figure's title (e.g. the run evaluated).
    """
    fig, axes = pyplot().subplots(1, 2, figsize=(11, 4))
    for ax, k, unit, what in ((axes[0], 0, "m", "position"), (axes[1], 1, "°", "rotation")):
        e = np.array([errors[n][k] for names in conditions.values() for n in names], np.float64)
        finite = e[np.isfinite(e) & (e > 0)]
        thr = [t[k] for t in THRESHOLDS]
        lo = min(finite.min() if len(finite) else thr[0], thr[0]) / 2
        hi = max(finite.max() if len(finite) else thr[-1], thr[-1]) * 2
        xs = np.logspace(np.log10(lo), np.log10(hi), 300)
        for cond, names in sorted(conditions.items()):
            ec = np.array([errors[n][k] for n in names])
            ax.plot(xs, [100 * np.mean(ec <= x) for x in xs], label=f"{cond} ({len(names)})")
        for t in thr:
            ax.axvline(t, color="grey", lw=0.6, ls="--")
            ax.text(t, 101, f"{t:g} {unit}", ha="center", va="bottom", fontsize=7, color="grey")
        ax.set_xscale("log")
        ax.set_xlim(lo, hi)
        ax.set_xlabel(f"{what} error ({unit})")
        ax.set_ylabel("queries localized (%)")
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    return save_figure(fig, path, dpi=120)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", required=True, choices=["cmu", "robotcar"])
    parser.add_argument("--root", required=True, type=Path, help="dataset root folder")
    parser.add_argument("--slices", help="CMU slices, e.g. 2,3 (default: all present)")
    parser.add_argument("--results", required=True, type=Path, help="submission.txt to evaluate")
    parser.add_argument("--out", required=True, type=Path, help="output folder")


def run(args: argparse.Namespace) -> None:
    setup_logging(args.out / "log.txt")
    dataset = load_dataset(args.dataset, args.root, parse_slices(args.slices))
    main(dataset, args.results, args.out)
    print((args.out / "eval.md").read_text())
