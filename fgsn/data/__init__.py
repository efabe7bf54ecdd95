"""Datasets of the FGSN package: cross-season correspondences and CamVid-layout semantic labels."""
