"""Localization: 2D-3D matching, P3P-RANSAC, semantic match filters (SSMC, GSMC), PFSL, APR baselines."""
import logging

logging.getLogger(__name__).addHandler(logging.NullHandler())
