"""The one registry helper: names -> ``"module:Attribute"`` strings, imported only when chosen.

Used by the ``fgsn-loc`` subcommands (:mod:`evaluation.cli`), the localization methods
(:data:`localization.localize.METHODS`) and the APR models (:data:`localization.apr.models.MODELS`), so a broken
optional dependency of one entry never breaks the others and ``--help`` stays fast.
"""
from __future__ import annotations

import importlib
from typing import Any, Mapping


def import_object(spec: str, package: str | None = None) -> Any:
    """``"pkg.module:Name"`` -> that attribute of the module; ``"pkg.module"`` -> the module itself.

    Args:
        spec: dotted module path, optionally ``:`` and an attribute name; a module path starting with ``.`` is
            relative to ``package``.
        package: anchor of relative module paths.
    Raises:
        ImportError: the module cannot be imported, or has no such attribute (the message names ``spec``).
    """
    module_name, _, attr = spec.partition(":")
    module = importlib.import_module(module_name, package)
    if not attr:
        return module
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ImportError(f"{spec!r}: module {module.__name__} has no attribute {attr!r}") from None


def lookup(registry: Mapping[str, str], name: str, kind: str = "entry", package: str | None = None) -> Any:
    """The object registered under ``name`` (:func:`import_object` of ``registry[name]``).

    Args:
        registry: name -> ``"module:Attribute"``.
        name: the key to look up.
        kind: what the entries are, for the error message (``"method"``, ``"APR model"``).
        package: anchor of relative module paths.
    Raises:
        ValueError: ``name`` is not registered (the message lists the known names).
    """
    if name not in registry:
        raise ValueError(f"unknown {kind} {name!r}; choose one of {', '.join(sorted(registry))}")
    return import_object(registry[name], package)
