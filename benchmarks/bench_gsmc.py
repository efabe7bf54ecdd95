"""GSMC's cost on CPU (full and reduced modes, and the full mode's brute-force reference) against SSMC's, and
the reduced mode's accuracy cost.

    python benchmarks/bench_gsmc.py [--root ../shared/data/seasons-mini/cmu] [--slices 1,2] [--cache DIR]
        [--queries 12] [--full-queries 4] [--brute-queries 1] [--torch-queries 1] [key=value ...]

The ``key=value`` arguments go to every semantic localizer's configuration (the label source), e.g.
``localizer.semantics.checkpoint=outputs/train-fgsn/fgsn-cpu-k20/checkpoints/best.pt
localizer.semantics.segment.resize_short=160 localizer.semantics.segment.patch=128
localizer.semantics.segment.step=86`` or ``localizer.semantics.source=labels localizer.semantics.labels=FILE``.

On an evenly spaced subset of the queries (``--queries``; the full mode on the first ``--full-queries`` of them,
it is slow on CPU) every method localizes the same cached matches in one process, one torch thread:

- time per query (matching excluded: filter / scoring + P3P-RANSAC) of P3P, SSMC and GSMC and the ratios to SSMC;
- on the first ``--brute-queries``, the full mode with ``gsmc.algorithm=brute`` (every (hypothesis, point) pair
  tested), and on the first ``--torch-queries`` the arcs algorithm with its torch pair loop
  (``gsmc.kernel=torch``, the default on a GPU) instead of the compiled one: their time against the default's,
  and whether the sampling weights are identical;
- recall at the three thresholds and the inlier ratios (inliers / matches given to RANSAC, inliers / all raw
  matches);
- for GSMC, the sampling-weight mass on the ground-truth inliers (matches within 8 px of the true pose): the
  probability that one drawn match is correct, against the uniform draw's (the true inlier ratio).
"""
from __future__ import annotations

import os
import time

import numpy as np

os.environ.setdefault("GLOG_minloglevel", "2")

import torch  # noqa: E402

from _common import seasons_parser  # noqa: E402
from evaluation.evaluate import recall  # noqa: E402
from localization.gsmc import GSMCLocalizer  # noqa: E402
from fgsn.utils.seeding import keyed_rng  # noqa: E402
from localization.localize import build_conf  # noqa: E402
from localization.ransac import count_inliers  # noqa: E402
from localization.ssmc import SSMCLocalizer  # noqa: E402
from localization.structure import StructureLocalizer  # noqa: E402
from reconstruction.datasets import load_dataset, parse_slices  # noqa: E402
from reconstruction.geometry import pose_errors  # noqa: E402


class _Recording(GSMCLocalizer):
    """GSMC that keeps the last query's matches and sampling weights."""

    def select_matches(self, query, matches):
        out = super().select_matches(query, matches)
        self.last = (matches, out[1])
        return out


def _true_inliers(q, m, threshold_px: float) -> np.ndarray:
    _, (mask,) = count_inliers(q.cam_from_world[None], m["bearings"], m["points3D"], threshold_px / q.camera.focal)
    return mask


def main() -> None:
    parser = seasons_parser(__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=12, help="queries timed (evenly spaced over the dataset)")
    parser.add_argument("--full-queries", type=int, default=4, help="of those, how many also run the full mode")
    parser.add_argument("--brute-queries", type=int, default=1, help="of those, how many also run the brute force")
    parser.add_argument("--torch-queries", type=int, default=1, help="of those, how many also run kernel=torch")
    parser.add_argument("overrides", nargs="*", help="label source for every semantic method (key=value)")
    args = parser.parse_args()
    torch.set_num_threads(1)

    ds = load_dataset("cmu", args.root, parse_slices(args.slices))
    common = [f"cache_dir={args.cache}", *args.overrides]
    locs = {"p3p": StructureLocalizer(build_conf("p3p", overrides=[f"cache_dir={args.cache}"]).localizer, ds,
                                      args.cache),
            "ssmc": SSMCLocalizer(build_conf("ssmc", overrides=common).localizer, ds, args.cache),
            "gsmc-reduced": _Recording(build_conf("gsmc", overrides=[*common, "localizer.gsmc.mode=reduced"]).localizer,
                                       ds, args.cache),
            "gsmc-full": _Recording(build_conf("gsmc", overrides=[*common, "localizer.gsmc.mode=full"]).localizer,
                                    ds, args.cache),
            "gsmc-brute": _Recording(build_conf("gsmc", overrides=[*common, "localizer.gsmc.algorithm=brute"]).localizer,
                                     ds, args.cache),
            "gsmc-torch": _Recording(build_conf("gsmc", overrides=[*common, "localizer.gsmc.kernel=torch"]).localizer,
                                     ds, args.cache)}
    subsets = {"gsmc-full": args.full_queries, "gsmc-brute": args.brute_queries, "gsmc-torch": args.torch_queries}
    locs["ssmc"].prepare()  # features, maps, matches, labels, labelled maps: shared by all three
    idx = np.linspace(0, len(ds.queries) - 1, min(args.queries, len(ds.queries))).round().astype(int)
    queries = [ds.queries[i] for i in idx]
    rows: dict[str, dict] = {k: {} for k in locs}
    for i, q in enumerate(queries):
        m = locs["ssmc"].load_matches(q)
        true = _true_inliers(q, m, float(locs["ssmc"].conf.ransac.inlier_threshold_px))
        for name, loc in locs.items():
            if i >= subsets.get(name, len(queries)):
                continue
            t0 = time.perf_counter()
            res = loc.localize(q, keyed_rng(0, q.key))
            dt = time.perf_counter() - t0
            err = pose_errors(res.cam_from_world, q.cam_from_world) if res.success else (np.inf, np.inf)
            mass = float(loc.last[1][true].sum()) if name.startswith("gsmc") else float("nan")
            if name in ("gsmc-brute", "gsmc-torch"):
                same = np.array_equal(loc.last[1], locs["gsmc-full"].last[1])
                print(f"  {name} / gsmc-full on {q.name}: {dt / rows['gsmc-full'][q.name]['time']:.1f}x time, "
                      f"sampling weights {'identical' if same else 'DIFFERENT'}", flush=True)
            rows[name][q.name] = dict(err=err, time=dt, inl=res.num_inliers, given=res.num_matches, raw=len(true),
                                      mass=mass, true_ratio=float(true.mean()) if len(true) else 0.0)
        print(f"{i + 1}/{len(queries)} {q.name} ({q.condition}): " + ", ".join(
            f"{n} {r[q.name]['time']:.2f} s" for n, r in rows.items() if q.name in r), flush=True)

    def summary(name: str, names: list[str]) -> dict:
        r = [rows[name][n] for n in names]
        e = np.array([x["err"] for x in r])
        return {"recall": recall(e[:, 0], e[:, 1]), "time": float(np.median([x["time"] for x in r])),
                "ratio_given": float(np.median([x["inl"] / max(x["given"], 1) for x in r])),
                "ratio_raw": float(np.median([x["inl"] / max(x["raw"], 1) for x in r])),
                "mass": float(np.median([x["mass"] for x in r])),
                "true_ratio": float(np.median([x["true_ratio"] for x in r]))}

    full_names = list(rows["gsmc-full"])
    print(f"\n{len(queries)} queries of {args.root} slices {args.slices} (full mode on {len(full_names)}), "
          "one torch thread, time = filter / scoring + P3P-RANSAC per query (median)\n")
    print("| method | queries | recall (0.25 m, 2°) / (0.5 m, 5°) / (5 m, 10°) | time / query | "
          "inliers / given | inliers / raw | weight on true inliers (uniform) |")
    print("|---|---|---|---|---|---|---|")
    for subset, names in (("all", [q.name for q in queries]), ("full-mode subset", full_names)):
        for name in locs:
            if not set(names) <= set(rows[name]) or not names:
                continue
            s = summary(name, names)
            mass = f"{s['mass']:.3f} ({s['true_ratio']:.3f})" if name.startswith("gsmc") else "-"
            print(f"| {name} | {subset} ({len(names)}) | {' / '.join(f'{x:.1f}' for x in s['recall'])} | "
                  f"{s['time']:.2f} s | {s['ratio_given']:.3f} | {s['ratio_raw']:.3f} | {mass} |")
    t = {n: summary(n, full_names)["time"] for n in locs if full_names and set(full_names) <= set(rows[n])}
    if "gsmc-full" in t:
        print(f"\ntime ratios on the full-mode subset: gsmc-full / ssmc {t['gsmc-full'] / t['ssmc']:.1f}, "
              f"gsmc-reduced / ssmc {t['gsmc-reduced'] / t['ssmc']:.1f}, gsmc-full / gsmc-reduced "
              f"{t['gsmc-full'] / t['gsmc-reduced']:.2f}, ssmc / p3p {t['ssmc'] / t['p3p']:.2f}")


if __name__ == "__main__":
    main()
