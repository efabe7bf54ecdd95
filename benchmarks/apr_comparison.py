"""The APR comparison of the README and docs/apr.md, re-run from the documented commands.

For each model (CPU presets, ``configs/apr/<model>_cpu.yaml``):
    * long-sequence demo (``configs/apr/demo_long_sequence.yaml``): ``train-apr`` with each seed, then, for the
      first seed, ``localize --method apr`` and ``evaluate``;
    * seasons-mini CMU (``--seasons``): one network per slice with the presets shortened to 500 iterations
      (``train.iterations=500 train.lr_step=350``), localized per slice, the submissions concatenated and
      evaluated together.
Prints markdown rows (recall at the three thresholds, median errors, per-condition median position error, the
training loop's time) and the seed table (test median position error from ``metrics.json``). Every finished step
is kept under ``--out``; a re-run skips it, so a killed run resumes.

Run: ``python benchmarks/apr_comparison.py --models vlocnet colorization --seeds 0 1 2 --jobs 2``
(``--jobs`` trainings at once, each pinned to one core with one torch thread).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from _common import REPO

MODELS = ["posenet", "posenet_geometric", "atloc", "atloc_plus", "vlocnet", "colorization"]
CONDITIONS = ("dusk", "autumn", "snow", "night")  # the README's column order
SEASONS = REPO.parent / "shared" / "data" / "seasons-mini" / "cmu"


def _run(args: list[str], log: Path, core: int | None) -> None:
    """Run ``fgsn-loc ARGS`` (pinned to ``core`` when given), its output to ``log``; raise on failure."""
    cmd = [str(Path(sys.executable).with_name("fgsn-loc")), *args]
    if core is not None and hasattr(os, "sched_setaffinity"):
        cmd = ["taskset", "-c", str(core), *cmd]
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as f:
        f.write("$ " + " ".join(cmd) + "\n")
        f.flush()
        rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=REPO).returncode
    if rc:
        raise RuntimeError(f"{' '.join(args[:2])} failed (exit {rc}); see {log}")


def _train(model: str, exp: Path, data_root: Path, extra: list[str], core: int | None) -> dict:
    metrics = exp / "metrics.json"
    if not metrics.is_file():
        _run(["train-apr", str(REPO / "configs" / "apr" / f"{model}_cpu.yaml"), f"output_root={exp.parent}",
              f"experiment={exp.name}", f"data.root={data_root}", *extra], exp.parent / f"{exp.name}.log", core)
    return json.loads(metrics.read_text())


def _localize(exp: Path, root: Path, run: Path, slices: str | None, core: int | None) -> Path:
    sub = run / "submission.txt"
    if not sub.is_file():
        args = ["localize", "--dataset", "cmu", "--root", str(root), "--method", "apr",
                "--checkpoint", str(exp / "checkpoints" / "checkpoint_last.pt"), "--out", str(run), "--overwrite"]
        _run(args + (["--slices", slices] if slices else []), run.with_suffix(".log"), core)
    return sub


def _evaluate(root: Path, sub: Path, out: Path, slices: str | None) -> dict:
    if not (out / "eval.json").is_file():
        _run(["evaluate", "--dataset", "cmu", "--root", str(root), "--results", str(sub), "--out", str(out)]
             + (["--slices", slices] if slices else []), out.with_suffix(".log"), None)
    return json.loads((out / "eval.json").read_text())


def _row(name: str, report: dict, train_s: float) -> str:
    a = report["all"]
    order = sorted(report["conditions"], key=lambda c: (CONDITIONS.index(c) if c in CONDITIONS else 99, c))
    conds = " | ".join(f"{c} {report['conditions'][c]['median_err_t_m']:.1f} m" for c in order)
    recall = " / ".join(f"{r:.1f}" for r in a["recall"])
    return (f"| {name} | {recall} | {a['median_err_t_m']:.2f} m / {a['median_err_R_deg']:.2f}° | {conds} "
            f"| {train_s:.0f} s |")


def demo(model: str, seeds: list[int], out: Path, root: Path, core: int | None,
         extra: list[str]) -> tuple[str, list[float]]:
    """Train ``model`` on the demo street with each seed; localize and evaluate the first seed's network."""
    errs, first = [], None
    for s in seeds:
        m = _train(model, out / "demo" / f"{model}-s{s}", root, [f"seed={s}", *extra], core)
        errs.append(m["test"]["median_t_m"])
        first = first or (out / "demo" / f"{model}-s{s}", m)
    exp, m = first
    sub = _localize(exp, root, out / "runs-demo" / f"{model}-s{seeds[0]}", None, core)
    report = _evaluate(root, sub, out / "runs-demo" / f"{model}-s{seeds[0]}" / "eval", None)
    return _row(model, report, m["train_time_s"]), errs


def seasons(model: str, out: Path, root: Path, core: int | None, extra: list[str]) -> str:
    """One network per seasons-mini slice (500 iterations), submissions concatenated, evaluated together."""
    lines, train_s = [], 0.0
    for sl in ("1", "2"):
        exp = out / "seasons" / f"{model}-slice{sl}"
        m = _train(model, exp, root, [f"data.slices=[{sl}]", "train.iterations=500", "train.lr_step=350", *extra],
                   core)
        train_s += m["train_time_s"]
        sub = _localize(exp, root, out / "runs-seasons" / f"{model}-slice{sl}", sl, core)
        lines += [ln for ln in sub.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    joint = out / "runs-seasons" / model / "submission.txt"
    joint.parent.mkdir(parents=True, exist_ok=True)
    joint.write_text("\n".join(lines) + "\n")
    report = _evaluate(root, joint, joint.parent / "eval", "1,2")
    return _row(model, report, train_s)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=MODELS, choices=MODELS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--demo-root", type=Path, default=REPO / "outputs" / "apr" / "demo-data")
    parser.add_argument("--seasons-root", type=Path, default=SEASONS)
    parser.add_argument("--no-seasons", action="store_true", help="skip the seasons-mini runs")
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "apr-comparison")
    parser.add_argument("--jobs", type=int, default=1, help="trainings at once, each pinned to one core")
    parser.add_argument("--extra", nargs="*", default=[], help="key=value overrides for every training (smoke runs)")
    args = parser.parse_args()
    if not (args.demo_root / "slice2").is_dir():
        _run(["generate-demo", "--out", str(args.demo_root), "--config",
              str(REPO / "configs" / "apr" / "demo_long_sequence.yaml")], args.out / "generate-demo.log", None)
    work = [("demo", m) for m in args.models]
    if not args.no_seasons:
        if not args.seasons_root.is_dir():
            sys.exit(f"error: {args.seasons_root}: seasons-mini not found (pass --seasons-root or --no-seasons)")
        work += [("seasons", m) for m in args.models]

    def task(i_item):
        i, (kind, model) = i_item
        core = i % args.jobs if args.jobs > 1 else None
        if kind == "demo":
            return kind, model, demo(model, args.seeds, args.out, args.demo_root, core, args.extra)
        return kind, model, seasons(model, args.out, args.seasons_root, core, args.extra)

    with ThreadPoolExecutor(max(args.jobs, 1)) as pool:
        results = list(pool.map(task, enumerate(work)))
    print(f"\nLong-sequence demo (seed {args.seeds[0]}): method | recall % | median | per condition | training")
    for kind, model, r in results:
        if kind == "demo":
            print(r[0])
    print("\nSeed table: test median position error (metrics.json), seeds " + " / ".join(map(str, args.seeds)))
    for kind, model, r in results:
        if kind == "demo":
            errs = r[1]
            print(f"| {model} | {' / '.join(f'{e:.1f}' for e in errs)} m | {sum(errs) / len(errs):.1f} m |")
    if not args.no_seasons:
        print("\nseasons-mini CMU, slices 1+2: method | recall % | median | per condition | training")
        for kind, model, r in results:
            if kind == "seasons":
                print(r)


if __name__ == "__main__":
    main()
