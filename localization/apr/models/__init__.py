"""APR models, one class per file, all subclasses of :class:`~localization.apr.models.base.BaseAPR`.

:func:`get_model` is the one registry: ``name`` -> class, imported on demand.
"""
from __future__ import annotations

from fgsn.utils.registry import lookup

# name -> "module:Class" (module relative to this package)
MODELS = {
    "posenet": ".posenet:PoseNet",
    "atloc": ".atloc:AtLoc",
    "atloc_plus": ".atloc_plus:AtLocPlus",
    "vlocnet": ".vlocnet:VLocNet",
    "colorization": ".colorization:ColorizationAPR",
}


def get_model(name: str):
    """Return the model class registered under ``name`` (raises ValueError naming the known models)."""
    return lookup(MODELS, name, "APR model", package=__name__)
