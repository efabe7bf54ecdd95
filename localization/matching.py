"""2D-3D matching: query SIFT descriptors against the map's per-point descriptors (faiss) with Lowe's ratio test.

A 3D point is described either by the mean of its observations' descriptors (``point_descriptor: mean``, the
default) or by all of them (``all``). The ratio test compares the nearest descriptor with the nearest descriptor
of a *different* 3D point (a second descriptor of the same point is not evidence of ambiguity; **ours**, the
papers are silent). Threshold 0.9 on distances as in Toft et al. (ECCV 2018). On seasons-mini (night, snow) the mean descriptors
gave the better recall at (0.25 m, 2°) (night 88.9 vs 83.3 %) with 4x fewer descriptors to search.

The matching step (:func:`main`) matches every query of a feature file to the descriptor file of its map and
writes ``matches-<features>-<point_descriptor>-r<ratio>[-<index>].h5`` (:func:`matches_filename`; ``<features>`` is
the feature file's stem without ``feats-``; ``<index>`` names the index and its settings, absent for ``flat``: e.g.
``matches-sift-n8192-pt0.0067-mean-r0.9-auto50000-ivf16384-p8-hnsw32-ef32.h5`` by default), one group per query
key (``/`` creating nested groups), resumable like the features step:

    query_idx   (K,) int32    keypoint index in the query's feature group
    point_idx   (K,) int32    row in the map's ``xyz`` (see :mod:`reconstruction.sfm_map`)
    distance    (K,) float32  L2 descriptor distance of the match
    attrs: map_id

Read one query's matches with :func:`read_matches`.

Search index (``index``): ``flat`` is exact brute force (faiss ``IndexFlatL2``), the reference; its cost grows
linearly with the map (about 0.45 / 4.6 / 15 s per 8,192-feature query at 10^4 / 10^5 / 3x10^5 descriptors on
one idle core). ``ivf`` (faiss ``IndexIVFFlat``: k-means cells, a query scans the ``ivf_nprobe`` nearest cells,
found by an HNSW graph over the cell centroids with ``ivf_quantizer: hnsw`` or exhaustively with ``flat``) and
``hnsw`` (faiss ``IndexHNSWFlat``, a navigable small-world graph over all descriptors; Malkov & Yashunin, TPAMI
2018) are approximate. ``auto``, the default, gives a map of fewer than ``auto_min_descriptors`` (50,000)
descriptors the exact index and a larger one ``ivf``: seasons-mini's maps (8-9 x 10^3 points) are matched
exactly (the same matches as ``flat``, tested), an Extended CMU slice (~10^5) or RobotCar's map (millions)
approximately. ``benchmarks/bench_scale.py`` and ``benchmarks/bench_matching.py`` measure time and retention
(the fraction of the exact matcher's ground-truth inliers kept) on the seasons-mini map grown with distractors;
the README has the table. The hnsw quantizer replaces the flat one because, with 16,384 cells, finding the cells
dominated the query time (8,192 x 16,384 distances per query).

Both approximate indexes keep the ratio test's meaning: they return the nearest descriptors and the second
distance is that of the nearest one of another point (with one descriptor per point, ``mean``, two neighbours
suffice and are the ones searched: the same matches as ``num_neighbors``, fewer heap updates). An approximate
index is built once per map and cached beside the map descriptor file (:func:`index_filename`, rebuilt when
older than that file). IVF is trained with the fixed ``seed``; with the flat quantizer its build repeats exactly
(tested). The hnsw quantizer also assigns the training points to the centroids during k-means (faiss's
default: an exact assignment to 16,384 centroids took over 20 minutes at 10^6 points on the shared 2-core
machine); that graph, like a multi-threaded HNSW index over all descriptors, can differ between builds, so runs
repeat through the cached file, which the parallel matching step builds once in the client before its workers
read it. With faiss-gpu and a CUDA device an IVF index is searched on
GPU 0 (untested: no GPU on the development machines; a quantizer faiss-gpu cannot clone falls back to the CPU
with a warning); HNSW and flat always run on the CPU.
"""
from __future__ import annotations

import functools
import json
import logging
from pathlib import Path
from typing import Iterable, Mapping

import h5py
import numpy as np
from omegaconf import OmegaConf

from fgsn.utils.config import between, one_of
from fgsn.utils.io import H5GroupWriter, atomic_path
from fgsn.utils.logging import progress
from fgsn.utils.parallel import Engine
from reconstruction import features as feature_step
from reconstruction.sfm_map import MapDescriptors

logger = logging.getLogger(__name__)

default_conf = {
    "ratio_threshold": 0.9,  # Lowe ratio on L2 descriptor distances (the paper: 0.9)
    "point_descriptor": "mean",  # mean: one mean descriptor per 3D point; all: every observation's descriptor
    "num_neighbors": 10,  # neighbours searched to find the nearest descriptor of a different point
    "index": "auto",  # search index: auto (flat below auto_min_descriptors, else ivf) | flat (exact) | ivf | hnsw
    "auto_min_descriptors": 50_000,  # auto: maps with at least this many descriptors use ivf
    "ivf_nlist": 16384,  # ivf: number of k-means cells (capped at descriptors / 39)
    "ivf_nprobe": 8,  # ivf: cells scanned per query descriptor
    "ivf_quantizer": "hnsw",  # ivf: how a query finds its nprobe nearest cells: hnsw (graph over the centroids) | flat
    "ivf_quantizer_ef": 32,  # ivf with the hnsw quantizer: its efSearch (at least ivf_nprobe)
    "hnsw_m": 32,  # hnsw: graph links per descriptor (M); also the ivf hnsw quantizer's
    "hnsw_ef_construction": 40,  # hnsw: candidate list length while building the graph
    "hnsw_ef_search": 48,  # hnsw: candidate list length while searching (at least num_neighbors)
    "seed": 0,  # ivf: seed of the k-means training sample and initial centroids
}

INDEX_TYPES = ("auto", "flat", "ivf", "hnsw")
QUANTIZERS = ("flat", "hnsw")
conf_checks = {  # fgsn.utils.config.check_conf
    "ratio_threshold": between(0, 1, lo_open=True),
    "point_descriptor": one_of("mean", "all"),
    "num_neighbors": between(2, integer=True),
    "index": one_of(*INDEX_TYPES),
    "auto_min_descriptors": between(0, integer=True),
    "ivf_nlist": between(1, integer=True),
    "ivf_nprobe": between(1, integer=True),
    "ivf_quantizer": one_of(*QUANTIZERS),
    "ivf_quantizer_ef": between(1, integer=True),
    "hnsw_m": between(2, integer=True),
    "hnsw_ef_construction": between(1, integer=True),
    "hnsw_ef_search": between(1, integer=True),
}


class DescriptorIndex:
    """L2 nearest-neighbour search over a map's descriptors: exact (faiss ``IndexFlatL2``, multi-threaded) or
    approximate (IVF-Flat, HNSW; module docstring), for the ratio test of :meth:`match`.

    Args:
        descriptors: (D, 128) uint8 or float descriptors.
        owner: (D,) int index of the 3D point each descriptor belongs to.
        point_descriptor: ``"all"`` indexes every descriptor; ``"mean"`` one mean descriptor per point.
        conf: the index keys of :data:`default_conf` (``index``, ``ivf_*``, ``hnsw_*``, ``seed``); None: exact.
        cache_path: file of the approximate index (:func:`index_filename`): read if present and not older than
            ``source_path``, else built and written there atomically. None: built in memory. Unused by ``flat``.
        source_path: the map descriptor file the index is built from (for the staleness check).
    Raises:
        ValueError: shapes disagree, or an unknown ``point_descriptor`` / ``index``.
    """

    def __init__(self, descriptors: np.ndarray, owner: np.ndarray, point_descriptor: str = "mean",
                 conf: Mapping | None = None, cache_path: Path | None = None, source_path: Path | None = None):
        import faiss

        if descriptors.ndim != 2 or len(descriptors) != len(owner):
            raise ValueError(f"descriptors (D, C) and owner (D,) disagree: {descriptors.shape}, {owner.shape}")
        owner = np.asarray(owner, dtype=np.int64)
        if point_descriptor == "mean":
            descriptors, owner = mean_point_descriptors(descriptors, owner)
        elif point_descriptor != "all":
            raise ValueError(f"point_descriptor must be 'mean' or 'all', got {point_descriptor!r}")
        conf = {**default_conf, **(conf or {})}
        self.kind = resolve_index(conf, len(descriptors))  # flat, ivf or hnsw
        self.owner = owner
        self.one_per_point = point_descriptor == "mean"  # the 2nd neighbour is then always another point's
        x = np.ascontiguousarray(descriptors, dtype=np.float32)
        self.built = False  # whether this instance built its index (False: read from cache_path)
        if self.kind == "flat":
            self.index = faiss.IndexFlatL2(x.shape[1])
            self.index.add(x)
            self.built = True
            return
        cache_path = None if cache_path is None else Path(cache_path)
        fresh = cache_path is not None and cache_path.exists() and (
            source_path is None or cache_path.stat().st_mtime >= Path(source_path).stat().st_mtime)
        if fresh:
            self.index = faiss.read_index(str(cache_path))
        if not fresh or self.index.ntotal != len(x) or self.index.d != x.shape[1]:
            self.index = _build_index(x, conf)
            self.built = True
            if cache_path is not None:
                with atomic_path(cache_path) as tmp:
                    faiss.write_index(self.index, str(tmp))
        if self.kind == "ivf":
            self.index.nprobe = int(conf["ivf_nprobe"])
            if conf["ivf_quantizer"] == "hnsw":
                faiss.downcast_index(self.index.quantizer).hnsw.efSearch = max(int(conf["ivf_quantizer_ef"]),
                                                                               self.index.nprobe)
            self.index = _to_gpu(self.index, self)
        else:
            self.index.hnsw.efSearch = max(int(conf["hnsw_ef_search"]), int(conf["num_neighbors"]))

    def match(self, query_descriptors: np.ndarray, ratio_threshold: float = 0.9, num_neighbors: int = 10) -> dict[str, np.ndarray]:
        """Match query descriptors to 3D points.

        Args:
            query_descriptors: (N, 128) descriptors (same scaling as the map's).
            ratio_threshold: keep a match if d1 < ratio * d2, d2 the nearest descriptor of another point.
            num_neighbors: neighbours searched; when all belong to the best point the match is kept. With one
                descriptor per point (``mean``) two suffice and are used (the same matches).
        Returns:
            ``query_idx`` (K,), ``point_idx`` (K,), ``distance`` (K,) of the kept matches.
        """
        empty = {"query_idx": np.zeros(0, np.int32), "point_idx": np.zeros(0, np.int32), "distance": np.zeros(0, np.float32)}
        if len(query_descriptors) == 0 or self.index.ntotal == 0:
            return empty
        k = min(2 if self.one_per_point else num_neighbors, self.index.ntotal)
        d2, nn = self.index.search(np.ascontiguousarray(query_descriptors, dtype=np.float32), k)
        d = np.sqrt(np.maximum(d2, 0))
        owners = self.owner[np.maximum(nn, 0)]
        best = owners[:, 0]
        other = (owners != best[:, None]) & (nn >= 0)
        has_other = other.any(1)
        second = np.where(has_other, d[np.arange(len(d)), np.argmax(other, axis=1)], np.inf)
        keep = (nn[:, 0] >= 0) & (d[:, 0] < ratio_threshold * second)
        q = np.nonzero(keep)[0]
        return {"query_idx": q.astype(np.int32), "point_idx": best[q].astype(np.int32), "distance": d[q, 0].astype(np.float32)}


def _build_index(x: np.ndarray, conf: Mapping):
    """Build the approximate faiss index of (D, C) float32 descriptors ``x`` (``conf['index']``: ivf | hnsw)."""
    import faiss

    d = x.shape[1]
    if conf["index"] == "hnsw":
        index = faiss.IndexHNSWFlat(d, int(conf["hnsw_m"]))
        index.hnsw.efConstruction = int(conf["hnsw_ef_construction"])
        index.add(x)
        return index
    nlist = ivf_num_cells(len(x), conf)
    if conf["ivf_quantizer"] == "hnsw":  # also assigns the training points in k-means (faiss's train_q1)
        quantizer = faiss.IndexHNSWFlat(d, int(conf["hnsw_m"]))
        quantizer.hnsw.efConstruction = int(conf["hnsw_ef_construction"])
    else:
        quantizer = faiss.IndexFlatL2(d)
    index = faiss.IndexIVFFlat(quantizer, d, nlist)
    index.cp.seed = int(conf["seed"])
    index.cp.niter = 10  # k-means iterations (faiss: 25); training dominates the build of a large map
    rng = np.random.default_rng(int(conf["seed"]))
    sample = np.sort(rng.choice(len(x), min(len(x), 40 * nlist), replace=False))
    index.cp.max_points_per_centroid = 40  # our sample is the training set: faiss does not subsample again
    index.train(x[sample])
    index.add(x)
    return index


def _to_gpu(index, owner_obj):
    """``index`` on GPU 0 when faiss-gpu and a CUDA device are present (resources kept on ``owner_obj``), else
    ``index`` itself. Untested: no GPU on the development machines."""
    import faiss

    if not hasattr(faiss, "StandardGpuResources") or faiss.get_num_gpus() == 0:
        return index
    owner_obj.gpu_resources = faiss.StandardGpuResources()
    try:
        return faiss.index_cpu_to_gpu(owner_obj.gpu_resources, 0, index)
    except RuntimeError as e:  # e.g. a quantizer this faiss-gpu cannot clone
        logger.warning("IVF index not moved to the GPU (%s); searching on the CPU", e)
        return index


def ivf_num_cells(num_descriptors: int, conf: Mapping) -> int:
    """Number of IVF cells used for a map: ``ivf_nlist`` capped at ``num_descriptors // 39`` (faiss wants at
    least 39 training points per cell), at least 1."""
    return max(1, min(int(conf["ivf_nlist"]), num_descriptors // 39))


def resolve_index(conf: Mapping, num_descriptors: int) -> str:
    """The index a map of ``num_descriptors`` gets: ``conf['index']``, with ``auto`` resolved to ``flat`` below
    ``auto_min_descriptors`` and ``ivf`` from it.

    Raises:
        ValueError: unknown ``index`` or ``ivf_quantizer``.
    """
    kind = conf.get("index", "flat")
    if kind not in INDEX_TYPES:
        raise ValueError(f"index must be one of {INDEX_TYPES}, got {kind!r}")
    if conf.get("ivf_quantizer", "flat") not in QUANTIZERS:
        raise ValueError(f"ivf_quantizer must be one of {QUANTIZERS}, got {conf['ivf_quantizer']!r}")
    if kind == "auto":
        return "flat" if num_descriptors < int(conf["auto_min_descriptors"]) else "ivf"
    return kind


def index_tag(conf: Mapping, num_descriptors: int | None = None) -> str:
    """Settings of the index in artifact names. Without ``num_descriptors`` (the matches file, all maps):
    ``""`` for flat, ``ivf<nlist>-p<nprobe>[-hnsw<M>-ef<ef>]`` (the bracket: hnsw quantizer), ``hnsw<M>-efc<ef
    construction>-ef<ef_search>``, ``auto<auto_min_descriptors>-<the ivf tag>``. With ``num_descriptors`` (one
    map's index file) only the build settings of the index that map gets (:func:`resolve_index`): ``""`` for
    flat, ``ivf<effective nlist>-s<seed>[-hnsw<M>]``, ``hnsw<M>-efc<ef_construction>``.

    Raises:
        ValueError: unknown ``conf['index']``.
    """
    conf = {**default_conf, **conf}
    kind = conf["index"] if num_descriptors is None else resolve_index(conf, num_descriptors)
    if kind not in INDEX_TYPES:
        raise ValueError(f"index must be one of {INDEX_TYPES}, got {kind!r}")
    hnsw_q = conf["ivf_quantizer"] == "hnsw"
    if kind == "flat":
        return ""
    if kind == "auto":
        return f"auto{int(conf['auto_min_descriptors'])}-{index_tag({**conf, 'index': 'ivf'})}"
    if kind == "ivf":
        if num_descriptors is not None:
            return f"ivf{ivf_num_cells(num_descriptors, conf)}-s{int(conf['seed'])}" + (
                f"-hnsw{int(conf['hnsw_m'])}" if hnsw_q else "")
        return f"ivf{int(conf['ivf_nlist'])}-p{int(conf['ivf_nprobe'])}" + (
            f"-hnsw{int(conf['hnsw_m'])}-ef{int(conf['ivf_quantizer_ef'])}" if hnsw_q else "")
    build = f"hnsw{int(conf['hnsw_m'])}-efc{int(conf['hnsw_ef_construction'])}"
    return build if num_descriptors is not None else f"{build}-ef{int(conf['hnsw_ef_search'])}"


def index_filename(map_path: str | Path, conf: Mapping, num_descriptors: int) -> Path:
    """Cache file of a map's approximate index, beside the map descriptor file:
    ``<map stem>-<point_descriptor>-<build settings>.faiss`` (:func:`index_tag`), e.g.
    ``map-slice1-sift-n8192-pt0.0067-mean-ivf2564-s0-hnsw32.faiss``.

    Args:
        map_path: the map descriptor file (:mod:`reconstruction.sfm_map`).
        conf: see :data:`default_conf`.
        num_descriptors: descriptors indexed (points for ``mean``), which caps the IVF cells.
    """
    map_path = Path(map_path)
    return map_path.with_name(f"{map_path.stem}-{conf['point_descriptor']}-{index_tag(conf, num_descriptors)}.faiss")


def mean_point_descriptors(descriptors: np.ndarray, owner: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(D, C) descriptors with (D,) owners -> (P, C) float32 mean descriptor of each owning point, (P,) point index."""
    points, inverse = np.unique(owner, return_inverse=True)
    sums = np.zeros((len(points), descriptors.shape[1]), np.float64)
    np.add.at(sums, inverse, descriptors.astype(np.float64))
    return (sums / np.bincount(inverse)[:, None]).astype(np.float32), points


def matches_filename(feature_file: str | Path, conf) -> str:
    """Name of the matches file: ``matches-<features>-<point_descriptor>-r<ratio>[-<index>].h5`` (module docstring;
    ``<index>`` from :func:`index_tag`, absent for ``flat``).

    Args:
        feature_file: name (or path) of the feature file, ``feats-<features>.h5``.
        conf: see :data:`default_conf` (``point_descriptor``, ``ratio_threshold``, the index keys).
    """
    tag = index_tag({**default_conf, **conf})
    return (f"matches-{Path(feature_file).stem.removeprefix('feats-')}-{conf['point_descriptor']}"
            f"-r{float(conf['ratio_threshold']):g}{'-' + tag if tag else ''}.h5")


def _map_index(map_path: str, conf_json: str) -> DescriptorIndex:
    """The search index of one map descriptor file, built (or read from its cache) once per process and version
    of the file."""
    return _cached_index(map_path, Path(map_path).stat().st_mtime_ns, conf_json)


@functools.lru_cache(maxsize=2)
def _cached_index(map_path: str, mtime_ns: int, conf_json: str) -> DescriptorIndex:
    conf = json.loads(conf_json)
    m = MapDescriptors.load(Path(map_path))
    num = len(np.unique(m.owner)) if conf["point_descriptor"] == "mean" else len(m.owner)
    cache = None if resolve_index(conf, num) == "flat" else index_filename(map_path, conf, num)
    return DescriptorIndex(m.descriptors, m.owner, conf["point_descriptor"], conf, cache, Path(map_path))


def _match_batch(shared, batch: list[tuple[str, str]]) -> list[tuple[str, str, dict]]:
    """(query key, map id, matches) of each query of ``batch`` (worker side of :func:`main`)."""
    conf_json, feature_path, map_paths = shared
    conf = json.loads(conf_json)
    out = []
    for key, map_id in batch:
        index = _map_index(map_paths[map_id], conf_json)
        desc = feature_step.read_features(feature_path, key, ("descriptors",))["descriptors"]
        out.append((key, map_id, index.match(desc, float(conf["ratio_threshold"]), int(conf["num_neighbors"]))))
    return out


def main(conf, queries: Iterable[tuple[str, str]], feature_path: Path, map_paths: Mapping[str, Path],
         output: Path, overwrite: bool = False, engine: Engine | None = None) -> Path:
    """Match every query's descriptors to the per-point descriptors of its map (the matching step).

    Queries already in ``output`` are skipped unless ``overwrite``; each query's group is written (atomically, to
    a part file that the step's end adds to ``output``: :class:`fgsn.utils.io.H5GroupWriter`) before the next
    query starts, so an interrupted or killed run resumes where it stopped. Queries listed as failed in the feature
    file (unreadable images, :func:`reconstruction.features.failed_images`) are skipped.

    Args:
        conf: see :data:`default_conf`.
        queries: (query key, map id) pairs; the key names the query's group in ``feature_path`` and ``output``.
        feature_path: feature file of the queries (:mod:`reconstruction.features`).
        map_paths: map id -> map descriptor file (:mod:`reconstruction.sfm_map`) of every map in ``queries``.
        output: the matches HDF5 file (created or appended; schema in the module docstring).
        overwrite: match queries already in ``output`` again.
        engine: match on its Dask workers in batches of queries (:class:`fgsn.utils.parallel.Engine`; each worker
            builds or reads each map's index once; an approximate index is built here first, so workers only
            read its cache); this process alone writes each query's group as its batch completes. None: here.
    Returns:
        ``output``.
    Raises:
        KeyError: a query has no features (and did not fail) or its map is not in ``map_paths``.
    """
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    queries = list(queries)
    failed = feature_step.failed_images(feature_path, [k for k, _ in queries])
    writer = H5GroupWriter(output)  # kill-safe, as the feature file
    if overwrite:
        writer.discard()
    done = set() if overwrite else feature_step.keys_in(output, [k for k, _ in queries]) | set(writer.pending())
    todo = [(k, m) for k, m in queries if k not in done and k not in failed]
    if not todo:
        return writer.commit()  # the queries of a killed run (or an empty file)
    missing = sorted({m for _, m in todo} - set(map_paths))
    if missing:
        raise KeyError(f"no map descriptor file for map(s) {missing}")
    logger.info("Matching %d queries to their maps (ratio %.2f).", len(todo), conf["ratio_threshold"])
    todo.sort(key=lambda q: q[1])
    conf_json = json.dumps(OmegaConf.to_container(OmegaConf.create(conf)), sort_keys=True)
    engine = engine or Engine()
    if engine.parallel and json.loads(conf_json).get("index", "flat") != "flat":
        for map_id in sorted({m for _, m in todo}):  # build the approximate indexes once, before the workers read them
            _map_index(str(map_paths[map_id]), conf_json)
    shared = (conf_json, str(feature_path), {m: str(p) for m, p in map_paths.items()})
    try:
        for key, map_id, matches in progress(engine.imap(_match_batch, todo, shared, batch_size=16), total=len(todo),
                                             desc="2D-3D matching", unit="query", log=logger):
            feature_step.write_group(writer, key, matches, {"map_id": map_id})
    finally:  # the queries done so far go into the file
        writer.commit()
    _cached_index.cache_clear()  # the indexes are not needed after the step (a large map's is gigabytes)
    return output


def read_matches(match_path: Path, key: str) -> dict[str, np.ndarray | str]:
    """One query's matches from a matches file.

    Args:
        match_path: the matches file of :func:`main`.
        key: the query key.
    Returns:
        ``query_idx`` (K,) int32, ``point_idx`` (K,) int32, ``distance`` (K,) float32 (module docstring) and
        ``map_id`` (str).
    Raises:
        KeyError: the query is not in the file (names both).
    """
    with h5py.File(match_path, "r") as f:
        if key not in f:
            raise KeyError(f"{match_path}: no matches for query {key}")
        g = f[key]
        out = {k: g[k][()] for k in ("query_idx", "point_idx", "distance")}
        out["map_id"] = str(g.attrs["map_id"])
    return out
