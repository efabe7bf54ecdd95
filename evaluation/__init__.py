"""Evaluation: recall at thresholds, submissions, plots, and the `fgsn-loc` command line."""
import logging

logging.getLogger(__name__).addHandler(logging.NullHandler())
