"""Simple semantic match consistency (SSMC, ``--method ssmc``; Toft et al., "Semantic Match Consistency for
Long-Term Visual Localization", ECCV 2018, Sec. 3.1).

A 2D-3D match is kept only if the query's label at the keypoint (the query segmentation at the rounded pixel)
equals the label of the matched 3D point (majority vote of the database segmentations,
:mod:`reconstruction.label_map`); the kept matches go to the same P3P-RANSAC as ``--method p3p``. Matches to
points without a labelled observation are dropped by default (``ssmc.keep_unlabelled``), and matches whose query
or point label is in ``ssmc.ignore_labels`` (e.g. dynamic classes) are always dropped. A query left with fewer
than 4 matches fails **(ours)**; its result carries ``info["few_matches"] = true`` so that such queries can be
counted from ``results.jsonl``.
"""
from __future__ import annotations

import numpy as np

from fgsn.utils.config import between, list_of
from reconstruction.records import ImageRecord

from .semantic import SemanticLocalizer

MIN_MATCHES = 4  # fewer kept matches than this: the query cannot be localized (P3P needs 3 + 1 to verify)


def consistent_matches(query_labels: np.ndarray, point_labels: np.ndarray, keep_unlabelled: bool = False,
                       ignore_labels=()) -> np.ndarray:
    """The SSMC test on label arrays.

    Args:
        query_labels: (K,) label of the query segmentation at each match's keypoint.
        point_labels: (K,) label of each match's 3D point; -1 = no labelled observation.
        keep_unlabelled: keep matches to unlabelled points (-1) instead of dropping them.
        ignore_labels: labels whose matches are always dropped (query or point label in it).
    Returns:
        (K,) bool keep mask.
    Raises:
        ValueError: the two arrays differ in shape or are not 1-D.
    """
    query_labels = np.asarray(query_labels)
    point_labels = np.asarray(point_labels)
    if query_labels.ndim != 1 or query_labels.shape != point_labels.shape:
        raise ValueError(f"query_labels and point_labels must both be (K,), got {query_labels.shape} and "
                         f"{point_labels.shape}")
    keep = query_labels == point_labels
    if keep_unlabelled:
        keep |= point_labels < 0
    if len(ignore_labels):
        ignore = np.asarray(list(ignore_labels), dtype=np.int64)
        keep &= ~np.isin(query_labels, ignore) & ~np.isin(point_labels, ignore)
    return keep


class SSMCLocalizer(SemanticLocalizer):
    """P3P-RANSAC on the label-consistent 2D-3D matches only."""

    default_conf = {
        **SemanticLocalizer.default_conf,
        "ssmc": {
            "keep_unlabelled": False,  # keep matches to 3D points without a labelled observation (label -1)
            "ignore_labels": [],  # labels (e.g. dynamic classes) whose matches are dropped, query or point side
        },
    }
    conf_checks = {**SemanticLocalizer.conf_checks,
                   "ssmc": {"ignore_labels": list_of(between(0, integer=True))}}

    def select_matches(self, query: ImageRecord, matches: dict[str, np.ndarray]) -> tuple[np.ndarray, None, dict]:
        """Keep the label-consistent matches; ``info`` reports the counts and ``few_matches`` (< 4 kept)."""
        q_lab = self.label_reader().at(query.key, matches["keypoints"])
        p_lab = self.labelled_map(query.map_id).label[matches["point_idx"]]
        keep = consistent_matches(q_lab, p_lab, bool(self.conf.ssmc.keep_unlabelled), list(self.conf.ssmc.ignore_labels))
        n = int(keep.sum())
        info = {"num_raw_matches": len(keep), "num_kept_matches": n, "few_matches": n < MIN_MATCHES}
        return keep, None, info
