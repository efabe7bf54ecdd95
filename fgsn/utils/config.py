"""Configuration handling in the glue-factory style.

Every configurable step has a ``default_conf`` (a dict or OmegaConf object). A run's configuration is that
default, merged with an optional YAML file, merged with ``key=value`` overrides from the command line, in
struct mode: a misspelt key raises an error instead of being silently accepted.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping

from omegaconf import DictConfig, OmegaConf

from .errors import ConfigError


def merge_config(
    default_conf: Mapping[str, Any] | DictConfig,
    *,
    yaml_path: str | Path | None = None,
    overrides: Iterable[str] = (),
    extra: Mapping[str, Any] | None = None,
) -> DictConfig:
    """Merge a default configuration with a YAML file and dotted ``key=value`` overrides.

    Args:
        default_conf: the step's defaults; defines the allowed keys.
        yaml_path: optional YAML file whose keys must all exist in ``default_conf``.
        overrides: strings ``a.b=value`` (values parsed as YAML scalars, e.g. ``8``, ``true``, ``[1,2]``).
        extra: programmatic overrides applied after the YAML file and before ``overrides``.
    Returns:
        The merged configuration, read-only keys checked (struct mode).
    Raises:
        ConfigError: the YAML file does not exist, a key is unknown (names the key and the source), or an
            override is not ``key=value`` (a ``ValueError``).
    """
    conf = OmegaConf.create(default_conf if not isinstance(default_conf, DictConfig) else OmegaConf.to_container(default_conf))
    OmegaConf.set_struct(conf, True)
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
    return conf


def save_config(conf: DictConfig | Mapping[str, Any], path: str | Path) -> Path:
    """Write a configuration as YAML (creating parent folders) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(conf if isinstance(conf, DictConfig) else OmegaConf.create(dict(conf)), path)
    return path


def add_experiment_arguments(parser, example_config: str, output_root: str, example_override: str) -> None:
    """The command line of a training experiment (``fgsn-loc train-fgsn``, ``pretrain-seg``): a YAML file,
    ``key=value`` overrides, ``--output-root`` and ``--restore``; read back by :func:`run_experiment`."""
    parser.add_argument("config", help=f"YAML configuration, e.g. {example_config}")
    parser.add_argument("overrides", nargs="*", help=f"key=value overrides, e.g. {example_override}")
    parser.add_argument("--output-root", default=output_root, help="experiments are written below it")
    parser.add_argument("--restore", action="store_true", help="resume from checkpoints/last.pt")


def run_experiment(args, default_conf: Mapping[str, Any], main) -> int:
    """Merge ``args`` (from :func:`add_experiment_arguments`) into ``default_conf`` and call
    ``main(conf, output_root / conf.experiment, restore=...)``; prints the path it returns."""
    conf = merge_config(default_conf, yaml_path=args.config, overrides=args.overrides)
    print(main(conf, Path(args.output_root) / conf.experiment, restore=args.restore))
    return 0
