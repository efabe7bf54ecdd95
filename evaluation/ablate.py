"""Cluster-count / label-source ablation: ``fgsn-loc ablate CONFIG [key=value ...]``.

For every network (an FGSN checkpoint of some cluster count, with or without L_corr, Seg or Class init, a coarse
semantic network, or a precomputed label file) and every semantic method, run segment -> label-map -> localize ->
evaluate, plus one baseline run (P3P-RANSAC) without labels. All runs share one cache folder, so SIFT features,
map descriptors and 2D-3D matches are computed once; each network's segmentation and labelled maps are cached
by name (:mod:`reconstruction.semantics`); every run is resumable (``localize --resume``). With ``workers`` > 1
or a ``scheduler`` (``--workers N`` / ``--scheduler ADDRESS``), one Dask engine (:class:`fgsn.utils.parallel.Engine`)
serves every run's steps: segmentation, labelled maps, SIFT, map descriptors, matching and localization.

Outputs in ``OUT``::

    config.yaml                      the merged configuration
    cache/                           features, maps, matches, label files, labelled maps
    <network>/<method>/              results.jsonl, submission.txt, eval.json, eval.md, ... of one run
    p3p/                             the baseline run
    table.md                         recall tables in the layout of Larsson et al. ICCV 2019 Table 2 (rows =
                                     networks, columns = groups / conditions at the three thresholds), one per
                                     method, with the P3P-RANSAC row; then inlier statistics per method
    ablation.json                    every number in the tables
    recall_vs_clusters.png           recall at (0.5 m, 5°) against the cluster count, per method and column
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from fgsn.utils.config import merge_config, save_config
from fgsn.utils.io import write_text_atomic
from fgsn.utils.logging import setup_logging
from fgsn.utils.parallel import Engine, add_engine_arguments, engine_options
from fgsn.utils.plotting import pyplot, save_figure
from localization import localize
from localization.submission import read_results
from reconstruction.datasets import load_dataset

from . import evaluate

logger = logging.getLogger(__name__)

default_conf = {
    "dataset": "cmu",  # cmu | robotcar
    "root": "???",  # dataset root folder
    "slices": None,  # CMU slices, e.g. [1, 2]; null = all present
    "baseline": "p3p",  # the method without labels (one row of every table); null = none
    "methods": ["ssmc", "gsmc"],  # semantic methods run with every network
    "networks": [],  # list of {name, checkpoint | labels, num_clusters, segment: {...}} (see docs/semantic.md)
    "columns": "groups+conditions",  # table columns: groups | conditions | groups+conditions
    "workers": 1,  # processes of every parallel step (a local Dask cluster when > 1, shared by all runs)
    "scheduler": None,  # address of a running Dask scheduler (e.g. tcp://10.0.0.5:8786); overrides workers
    "cache_dir": None,  # features / matches / labels cache shared by the runs; null = OUT/cache
    "seed": 0,  # base seed of the runs (each query's generator is seeded from (seed, query))
    "localizer": None,  # overrides for every method's localizer section, e.g. {ransac: {num_iterations: 2000}}
    "method_overrides": None,  # method -> overrides of its localizer section only, e.g. {gsmc: {gsmc: {...}}}
}

NETWORK_KEYS = {"name", "checkpoint", "labels", "num_clusters", "segment"}


def _network_semantics(net) -> dict:
    """The ``semantics`` section of a localizer for one network entry (checks its keys)."""
    unknown = set(net) - NETWORK_KEYS
    if unknown or "name" not in net:
        raise ValueError(f"network entry {dict(net)}: needs 'name', allowed keys {sorted(NETWORK_KEYS)}, "
                         f"unknown {sorted(unknown)}")
    if bool(net.get("checkpoint")) == bool(net.get("labels")):
        raise ValueError(f"network {net['name']!r}: give exactly one of 'checkpoint' and 'labels'")
    sem = {"name": str(net["name"]), "segment": dict(net.get("segment") or {})}
    if net.get("checkpoint"):
        sem.update(source="checkpoint", checkpoint=str(net["checkpoint"]))
    else:
        sem.update(source="labels", labels=str(net["labels"]))
    return sem


def run_method(conf, dataset, method: str, out_dir: Path, cache_dir: Path, semantics: dict | None,
               engine: Engine | None = None) -> dict:
    """Localize (resuming) and evaluate one method; ``semantics`` is its label source (None for P3P / APR).

    Uses ``conf.workers``, ``conf.scheduler``, ``conf.seed``, ``conf.localizer`` and ``conf.method_overrides``;
    runs on ``engine`` when given (:func:`localization.localize.main`); returns ``eval.json``.
    """
    extra = {"workers": conf.workers, "scheduler": conf.scheduler, "seed": conf.seed, "cache_dir": str(cache_dir)}
    loc = OmegaConf.merge(OmegaConf.create(conf.localizer or {}),
                          OmegaConf.create((conf.method_overrides or {}).get(method) or {}))
    if semantics is not None:
        loc = OmegaConf.merge(loc, {"semantics": semantics})
    run_conf = localize.build_conf(method, extra={**extra, "localizer": OmegaConf.to_container(loc)})
    sub = localize.main(run_conf, dataset, out_dir, resume=True, engine=engine)
    return evaluate.main(dataset, sub, out_dir)


def inlier_statistics(results: dict[str, dict], raw_matches: dict[str, int], names: list[str]) -> dict:
    """Median matches / inliers / inlier ratios of one run over ``names``.

    Args:
        results: name -> record of ``results.jsonl``.
        raw_matches: name -> number of 2D-3D matches before any semantic filtering (the baseline's matches).
        names: the queries to summarise.
    Returns:
        ``median_matches`` (given to RANSAC), ``median_inliers``, ``median_inlier_ratio`` (inliers / matches
        given to RANSAC), ``median_inlier_ratio_raw`` (inliers / raw matches), ``few_matches`` (queries left
        with fewer than 4 matches); for weighted sampling (GSMC) also ``median_weight_on_inliers``, the share of
        the sampling weight on the final pose's inliers (what a uniform draw gives is the inlier ratio); empty when
        fewer than half of the queries report matches (PFSL matches only to (re)initialise, APRs never).
    """
    recs = [results[n] for n in names if n in results]
    if not recs or 2 * sum(r["num_matches"] > 0 for r in recs) < len(recs):  # no per-query matching: PFSL tracks, APRs regress
        return {}
    m = np.array([r["num_matches"] for r in recs], float)
    i = np.array([r["num_inliers"] for r in recs], float)
    raw = np.array([raw_matches.get(r["name"], r["num_matches"]) for r in recs], float)
    stats = {"median_matches": float(np.median(m)), "median_inliers": float(np.median(i)),
             "median_inlier_ratio": float(np.median(i / np.maximum(m, 1))),
             "median_inlier_ratio_raw": float(np.median(i / np.maximum(raw, 1))),
             "few_matches": int(np.sum(m < 4))}
    w = [r["info"]["weight_on_inliers"] for r in recs if "weight_on_inliers" in r.get("info", {})]
    if w:
        stats["median_weight_on_inliers"] = float(np.median(w))
    return stats


def _columns(report: dict, mode: str) -> list[tuple[str, dict]]:
    cols = []
    if "groups" in mode:
        cols += list(report["groups"].items())
    if "conditions" in mode:
        cols += list(report["conditions"].items())
    return cols + [("all", report["all"])]


def format_tables(ablation: dict, columns: str) -> str:
    """Markdown: one recall table per method (rows = baseline + networks), then the inlier statistics."""
    lines = ["# Ablation: recall in % at (0.25 m, 2°) / (0.5 m, 5°) / (5 m, 10°)", ""]
    base = ablation.get("baseline")
    for method, rows in ablation["methods"].items():
        first = base["eval"] if base else next(iter(rows.values()))["eval"]
        names = [c for c, _ in _columns(first, columns)]
        lines += [f"## {method}", "", "| network | K | " + " | ".join(names) + " |",
                  "|---|---|" + "---|" * len(names)]
        entries = ([(f"{base['method']} (no labels)", "-", base["eval"])] if base else [])
        entries += [(n, str(r["num_clusters"] or "-"), r["eval"]) for n, r in rows.items()]
        for label, k, ev in entries:
            cells = dict(_columns(ev, columns))
            lines.append(f"| {label} | {k} | " + " | ".join(
                " / ".join(f"{x:.1f}" for x in cells[c]["recall"]) if c in cells else "-" for c in names) + " |")
        lines.append("")
    lines += ["## Inlier statistics (medians per condition: matches given to RANSAC, inliers, inliers / matches, "
              "inliers / raw matches; queries left with < 4 matches; for weighted sampling, w = the share of the "
              "sampling weight on the inliers, against inliers / matches for a uniform draw)", ""]
    conds = list((base["eval"] if base else {"conditions": {}})["conditions"]) or sorted(
        {c for rows in ablation["methods"].values() for r in rows.values() for c in r["inliers"]})
    lines += ["| method | network | " + " | ".join(conds) + " |", "|---|---|" + "---|" * len(conds)]
    entries = ([(base["method"], "-", base["inliers"])] if base else [])
    entries += [(m, n, r["inliers"]) for m, rows in ablation["methods"].items() for n, r in rows.items()]
    for method, net, stats in entries:
        cells = []
        for c in conds:
            s = stats.get(c)
            cells.append("-" if not s else f"{s['median_matches']:.0f} / {s['median_inliers']:.0f} / "
                                           f"{s['median_inlier_ratio']:.2f} / {s['median_inlier_ratio_raw']:.2f}"
                                           + (f" / w {s['median_weight_on_inliers']:.2f}"
                                              if "median_weight_on_inliers" in s else "")
                                           + (f" ({s['few_matches']} < 4)" if s["few_matches"] else ""))
        lines.append(f"| {method} | {net} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_recall_vs_clusters(ablation: dict, columns: str, path: Path) -> Path | None:
    """Recall at (0.5 m, 5°) against the cluster count (log axis, ticks at the K values), one panel per method, one
    line per column, the columns' markers dodged sideways so that they stay apart (also with a single K); the
    baseline as dashed horizontal lines. Per K the first network listed is plotted (list the variants of a K, e.g.
    without L_corr, after it); networks without ``num_clusters`` are left out."""
    plt = pyplot()
    base = ablation.get("baseline")
    methods = list(ablation["methods"])
    if not methods:
        return None
    fig, axes = plt.subplots(1, len(methods), figsize=(6 * len(methods), 4.5), squeeze=False)
    for ax, method in zip(axes[0], methods):
        first_of_k: dict[int, dict] = {}  # the first network listed for each K (variants such as no-L_corr follow)
        for r in ablation["methods"][method].values():
            if r["num_clusters"]:
                first_of_k.setdefault(int(r["num_clusters"]), r["eval"])
        rows = sorted(first_of_k.items())
        if not rows:
            continue
        cells = [(k, dict(_columns(ev, columns))) for k, ev in rows]
        base_cells = dict(_columns(base["eval"], columns)) if base else {}
        cols = list(cells[0][1])
        for i, col in enumerate(cols):
            dodge = 10 ** (0.06 * (i - (len(cols) - 1) / 2) / max(len(cols), 1))  # at most +-0.03 decades
            ks, rs = zip(*[(k * dodge, c[col]["recall"][1]) for k, c in cells if col in c])
            line, = ax.plot(ks, rs, "o-", label=col)
            if col in base_cells:
                ax.axhline(base_cells[col]["recall"][1], ls="--", color=line.get_color(), lw=0.8)
        ax.set_xscale("log")
        k_all = [k for k, _ in rows]
        ax.set_xlim(min(k_all) / 1.6, max(k_all) * 1.6)
        ax.set_xticks(k_all, [str(k) for k in k_all])
        ax.minorticks_off()
        ax.set_xlabel("number of clusters K")
        ax.set_ylabel("recall at (0.5 m, 5°), %")
        ax.set_title(f"{method} (dashed: {base['method'] if base else 'no baseline'})")
        ax.set_ylim(-2, 102)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return save_figure(fig, path)


def main(conf, out_dir: Path, engine: Engine | None = None) -> dict:
    """Run the ablation (see module docstring) and write its tables and plot.

    Args:
        conf: see :data:`default_conf`.
        out_dir: output folder; rerunning resumes every run.
        engine: where every run's parallel steps go (:class:`fgsn.utils.parallel.Engine`, left open); None: one
            engine of ``conf.workers`` / ``conf.scheduler`` shared by all runs and closed at the end.
    Returns:
        The ``ablation.json`` dictionary: ``baseline`` {method, eval, inliers} and ``methods`` {method:
        {network: {num_clusters, eval, inliers}}}, ``inliers`` per condition from :func:`inlier_statistics`.
    Raises:
        ValueError: a malformed network entry or an unknown method.
    """
    out_dir = Path(out_dir)
    nets = [(str(n["name"]), _network_semantics(n), n.get("num_clusters")) for n in conf.networks]
    if len({n for n, _, _ in nets}) != len(nets):
        raise ValueError("network names must be unique")
    for m in list(conf.methods) + ([conf.baseline] if conf.baseline else []):
        localize.get_localizer_class(m)  # unknown methods fail before any work
    save_config(conf, out_dir / "config.yaml")
    setup_logging(out_dir / "log.txt")
    dataset = load_dataset(conf.dataset, conf.root, list(conf.slices) if conf.slices else None)
    cache = Path(conf.cache_dir) if conf.cache_dir else out_dir / "cache"
    by_condition: dict[str, list[str]] = {}
    for q in dataset.queries:
        by_condition.setdefault(q.condition, []).append(q.name)

    def inliers_per_condition(res: dict[str, dict], raw: dict[str, int]) -> dict:
        return {c: inlier_statistics(res, raw, names) for c, names in sorted(by_condition.items())}

    ablation: dict = {"baseline": None, "methods": {}}
    raw: dict[str, int] = {}
    # one engine for every run: a local cluster starts once, and the runs' steps share it
    with Engine(int(conf.workers), conf.scheduler) if engine is None else contextlib.nullcontext(engine) as engine:
        if conf.baseline:
            run_dir = out_dir / conf.baseline
            ev = run_method(conf, dataset, conf.baseline, run_dir, cache, None, engine)
            res = read_results(run_dir / "results.jsonl")
            raw = {n: r["num_matches"] for n, r in res.items()}
            ablation["baseline"] = {"method": conf.baseline, "eval": ev, "inliers": inliers_per_condition(res, raw)}
        for method in conf.methods:
            ablation["methods"][method] = {}
            for name, sem, k in nets:
                run_dir = out_dir / name / method
                logger.info("Ablation: %s with %s", method, name)
                ev = run_method(conf, dataset, method, run_dir, cache, sem, engine)
                ablation["methods"][method][name] = {"num_clusters": k, "eval": ev,
                                                     "inliers": inliers_per_condition(
                                                         read_results(run_dir / "results.jsonl"), raw)}
    write_text_atomic(out_dir / "ablation.json", json.dumps(ablation, indent=2))
    write_text_atomic(out_dir / "table.md", format_tables(ablation, conf.columns))
    plot_recall_vs_clusters(ablation, conf.columns, out_dir / "recall_vs_clusters.png")
    logger.info("Ablation tables:\n%s", (out_dir / "table.md").read_text())
    return ablation


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", type=Path, help="YAML configuration (see configs/ablate/)")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. workers=2 methods=[ssmc]")
    parser.add_argument("--out", type=Path, help="output folder (default outputs/ablate/<config name>); give it "
                        "before CONFIG or after the overrides")
    add_engine_arguments(parser)  # like --out: before CONFIG or after the overrides


def run(args: argparse.Namespace) -> None:
    conf = merge_config(default_conf, yaml_path=args.config, overrides=args.overrides, extra=engine_options(args))
    out = args.out or Path("outputs") / "ablate" / args.config.stem
    main(conf, out)
    print(f"Ablation finished: {out / 'table.md'}")
