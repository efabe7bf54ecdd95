"""Configuration handling in the glue-factory style.

Every configurable step has a ``default_conf`` (a dict or OmegaConf object). A run's configuration is that
default, merged with an optional YAML file, merged with ``key=value`` overrides from the command line, in
struct mode: a misspelt key raises an error instead of being silently accepted.

**Typed** (:func:`check_conf`): every merged value must have its default's type (an integer where the default is
an integer, a number where it is a float, true / false, a string, a list; a null default takes anything), and a
step may declare value checks beside its ``default_conf`` (``conf_checks``, the same nesting, leaves
:func:`between`, :func:`one_of`, :func:`any_of`, :func:`list_of`); a declared check replaces the type inferred
from the default. A wrong value fails at merge time, before any work, with a :class:`ConfigError` naming the key,
the value and what was expected. :func:`merge_defaults` is the same for Python callers handing a configuration
to a step's ``main``.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from omegaconf import DictConfig, ListConfig, OmegaConf

from .errors import ConfigError


@dataclass(frozen=True)
class Check:
    """A value check: ``test(value) -> bool`` and the phrase ``expected`` of its error message."""

    test: Callable[[Any], bool]
    expected: str

    def __call__(self, value) -> bool:
        try:
            return bool(self.test(value))
        except TypeError:
            return False


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isnan(v)


def between(lo: float | None = None, hi: float | None = None, *, integer: bool = False, lo_open: bool = False,
            hi_open: bool = False, optional: bool = False) -> Check:
    """A number (an integer if ``integer``) in [lo, hi] (bounds open when ``*_open``; None: unbounded); ``optional``
    also accepts null."""
    def test(v):
        if v is None:
            return optional
        if not _number(v) or (integer and not isinstance(v, int)):
            return False
        return ((lo is None or (v > lo if lo_open else v >= lo)) and (hi is None or (v < hi if hi_open else v <= hi)))
    kind = "an integer" if integer else "a number"
    parts = ([f"{'>' if lo_open else '>='} {lo:g}"] if lo is not None else []) + (
        [f"{'<' if hi_open else '<='} {hi:g}"] if hi is not None else [])
    return Check(test, f"{kind}{' ' + ' and '.join(parts) if parts else ''}{' or null' if optional else ''}")


def one_of(*values) -> Check:
    """One of ``values`` (compared with ==)."""
    return Check(lambda v: any(v == x and type(v) is type(x) for x in values),
                 "one of " + ", ".join("null" if x is None else str(x) for x in values))


def list_of(item: Check, length: int | None = None) -> Check:
    """A list whose items all pass ``item`` (of ``length`` items when given)."""
    return Check(lambda v: isinstance(v, (list, tuple)) and (length is None or len(v) == length)
                 and all(item(x) for x in v), f"a list{f' of {length}' if length else ''} of {item.expected}")


def any_of(*checks: Check) -> Check:
    """Passes when one of ``checks`` does."""
    return Check(lambda v: any(c(v) for c in checks), " or ".join(c.expected for c in checks))


DEVICE = Check(lambda v: isinstance(v, str) and re.fullmatch(r"auto|cpu|cuda(:\d+)?", v) is not None,
               "auto, cpu, cuda or cuda:N")  # a torch device key


def _inferred(default) -> Check | None:
    """The check implied by a default value's type (None: anything goes)."""
    if default is None:
        return None
    if isinstance(default, bool):
        return Check(lambda v: isinstance(v, bool), "true or false")
    if isinstance(default, int):
        return Check(lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer")
    if isinstance(default, float):
        return Check(_number, "a number")
    if isinstance(default, str):
        return Check(lambda v: v is None or isinstance(v, str), "a string")
    if isinstance(default, (list, tuple)):
        if default and all(_number(x) for x in default):
            return list_of(Check(_number, "numbers"))
        return Check(lambda v: isinstance(v, (list, tuple)), "a list")
    return None


def check_conf(conf: DictConfig | Mapping, defaults: Mapping, checks: Mapping | None = None,
               source: str = "configuration", prefix: str = "") -> None:
    """Check every value of ``conf`` against its default's type and the declared ``checks`` (module docstring).

    Args:
        conf: the merged configuration (interpolations resolved here).
        defaults: the defaults that define the keys and types (plain nested dict or DictConfig).
        checks: nested like ``defaults``; leaves are :class:`Check` objects (or tuples: :func:`one_of` them).
        source: named in the error (the file or command the values came from).
        prefix: dotted key of ``conf`` inside a larger configuration, for the message.
    Raises:
        ConfigError: ``{source}: {key}={value!r} is invalid: expected {expected}``, for the first wrong value.
    """
    values = OmegaConf.to_container(conf, resolve=True) if isinstance(conf, (DictConfig, ListConfig)) else conf
    if isinstance(defaults, DictConfig):
        defaults = OmegaConf.to_container(defaults)
    _check(values, defaults, checks or {}, source, prefix)


def _check(values: Mapping, defaults: Mapping, checks: Mapping, source: str, prefix: str) -> None:
    for key, default in defaults.items():
        if key not in values:
            continue
        value, name, check = values[key], f"{prefix}{key}", checks.get(key)
        if isinstance(default, Mapping) and (default or isinstance(check, Mapping)):
            if not isinstance(value, Mapping):
                raise ConfigError(f"{source}: {name}={value!r} is invalid: expected a section of keys "
                                  f"({', '.join(map(str, default))})")
            _check(value, default, check or {}, source, f"{name}.")
            continue
        if isinstance(check, tuple):
            check = one_of(*check)
        check = check if check is not None else _inferred(default)
        if check is not None and not check(value):
            raise ConfigError(f"{source}: {name}={value!r} is invalid: expected {check.expected}")


def _struct(default_conf: Mapping[str, Any] | DictConfig) -> DictConfig:
    """A fresh copy of the defaults in struct mode (merging an unknown key into it raises)."""
    conf = OmegaConf.create(default_conf if not isinstance(default_conf, DictConfig)
                            else OmegaConf.to_container(default_conf))
    OmegaConf.set_struct(conf, True)
    return conf


def _open_free_sections(conf: DictConfig, defaults: Mapping) -> None:
    """Sections whose default is None (free-form, e.g. ``ablate``'s ``method_overrides``, checked later by the step
    they are handed to) take new keys from later sources, e.g. a command-line override of a key the YAML file did
    not set."""
    if isinstance(defaults, DictConfig):
        defaults = OmegaConf.to_container(defaults)  # unresolved: mandatory '???' values stay as they are
    for key, default in defaults.items():
        value = conf._get_node(key) if key in conf else None
        if default is None and isinstance(value, DictConfig):
            OmegaConf.set_struct(value, False)
        elif isinstance(default, Mapping) and isinstance(value, DictConfig):
            _open_free_sections(value, default)


def merge_defaults(default_conf: Mapping[str, Any] | DictConfig, conf: Mapping | DictConfig | None = None,
                   checks: Mapping | None = None, source: str = "configuration") -> DictConfig:
    """``default_conf`` merged with ``conf`` in struct mode (unknown keys rejected) and checked (:func:`check_conf`):
    what a step's ``main`` does with the configuration a Python caller hands it.

    Raises:
        ConfigError: an unknown key or a wrong value, naming it.
    """
    try:
        merged = OmegaConf.merge(_struct(default_conf), conf if conf is not None else {})
    except Exception as e:  # omegaconf raises ConfigKeyError / ValidationError subclasses
        raise ConfigError(f"invalid {source}: {e}") from None
    check_conf(merged, default_conf, checks, source)
    return merged


def merge_config(
    default_conf: Mapping[str, Any] | DictConfig,
    *,
    yaml_path: str | Path | None = None,
    overrides: Iterable[str] = (),
    extra: Mapping[str, Any] | None = None,
    checks: Mapping | None = None,
) -> DictConfig:
    """Merge a default configuration with a YAML file and dotted ``key=value`` overrides.

    Args:
        default_conf: the step's defaults; defines the allowed keys.
        yaml_path: optional YAML file whose keys must all exist in ``default_conf``.
        overrides: strings ``a.b=value`` (values parsed as YAML scalars, e.g. ``8``, ``true``, ``[1,2]``).
        extra: programmatic overrides applied after the YAML file and before ``overrides``.
        checks: value checks of the keys (:func:`check_conf`), nested like ``default_conf``.
    Returns:
        The merged configuration, keys (struct mode) and values (:func:`check_conf`) checked.
    Raises:
        ConfigError: the YAML file does not exist, a key is unknown (names the key and the source), a value is
            wrong (names the key, the value and what was expected), or an override is not ``key=value`` (a
            ``ValueError``).
    """
    conf = _struct(default_conf)
    sources: list[tuple[str, Any]] = []
    if yaml_path is not None:
        yaml_path = Path(yaml_path)
        if not yaml_path.is_file():
            raise ConfigError(f"{yaml_path}: configuration file not found")
        sources.append((str(yaml_path), OmegaConf.load(yaml_path)))
    if extra:
        sources.append(("arguments", OmegaConf.create(dict(extra))))
    dotlist = []
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        dotlist.append(item)
    if dotlist:
        sources.append(("command line", OmegaConf.from_dotlist(dotlist)))
    for name, src in sources:
        try:
            conf = OmegaConf.merge(conf, src)
        except Exception as e:  # omegaconf raises ConfigKeyError / ValidationError subclasses
            raise ConfigError(f"invalid configuration from {name}: {e}") from None
        _open_free_sections(conf, default_conf)
    check_conf(conf, default_conf, checks, " + ".join(n for n, _ in sources) or "configuration")
    return conf


def save_config(conf: DictConfig | Mapping[str, Any], path: str | Path) -> Path:
    """Write a configuration as YAML, atomically (a resumed run reads it back), creating parent folders; returns
    the path."""
    from .io import atomic_path

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        OmegaConf.save(conf if isinstance(conf, DictConfig) else OmegaConf.create(dict(conf)), tmp)
    return path


def add_experiment_arguments(parser, example_config: str, output_root: str, example_override: str) -> None:
    """The command line of a training experiment (``fgsn-loc train-fgsn``, ``pretrain-seg``): a YAML file,
    ``key=value`` overrides, ``--output-root`` and ``--restore``; read back by :func:`run_experiment`."""
    parser.add_argument("config", help=f"YAML configuration, e.g. {example_config}")
    parser.add_argument("overrides", nargs="*", help=f"key=value overrides, e.g. {example_override}")
    parser.add_argument("--output-root", default=output_root, help="experiments are written below it")
    parser.add_argument("--restore", action="store_true", help="resume from checkpoints/last.pt")


def run_experiment(args, default_conf: Mapping[str, Any], main, checks: Mapping | None = None) -> int:
    """Merge ``args`` (from :func:`add_experiment_arguments`) into ``default_conf`` (values checked with ``checks``)
    and call ``main(conf, output_root / conf.experiment, restore=...)``; prints the path it returns."""
    conf = merge_config(default_conf, yaml_path=args.config, overrides=args.overrides, checks=checks)
    print(main(conf, Path(args.output_root) / conf.experiment, restore=args.restore))
    return 0
