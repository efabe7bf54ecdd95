"""Reconstruction: benchmark dataset readers, SfM maps (COLMAP, NVM), geometry helpers, the demo generator."""
import logging

logging.getLogger(__name__).addHandler(logging.NullHandler())
