"""FGSN: fine-grained segmentation networks (Larsson et al., ICCV 2019).

This is the project's base package: ``fgsn.utils`` holds the configuration and logging helpers that the other
packages (``reconstruction``, ``localization``, ``evaluation``) share, since dependencies only flow towards it.
"""
import logging

logging.getLogger(__name__).addHandler(logging.NullHandler())
