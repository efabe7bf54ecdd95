"""The ``fgsn-loc`` command-line entry point.

Each subcommand lives in its own module, which provides ``add_arguments(parser)`` and ``run(args)``; ``run``
only parses arguments into a call of that module's ``main(...)`` Python function. Modules are imported only
when their subcommand is chosen, so ``fgsn-loc --help`` is fast and a broken optional dependency of one
subcommand does not break the others.

To add a subcommand, add one line to ``COMMANDS``.

A mistake in the input (the project's :class:`fgsn.utils.errors.UserError` types: dataset, submission,
configuration, existing output, unreadable image) prints ``error: <message>`` on one line, also to the run's
``log.txt`` when logging has started, and exits with status 2; ``--debug`` (anywhere on the command line) or
``FGSN_LOC_DEBUG=1`` shows the traceback instead. Any other exception is a bug and keeps its traceback.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys

from fgsn.utils.errors import UserError
from fgsn.utils.registry import import_object

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("evaluation.demo", "generate the built-in demo dataset and run localize + evaluate on it"),
    "generate-demo": ("reconstruction.synthetic", "generate the synthetic demo dataset (Extended CMU layout)"),
    "build-map": ("reconstruction.build_map", "triangulate a COLMAP model from database images with known poses"),
    "label-map": ("reconstruction.label_map", "label every 3D point of a map with the majority segmentation label"),
    "localize": ("localization.localize", "batch-localize the queries of a benchmark dataset"),
    "evaluate": ("evaluation.evaluate", "recall at thresholds per condition and scene group"),
    "figures": ("evaluation.figures", "per-query figures of a semantic run: segmentation, projected map labels, inliers"),
    "ablate": ("evaluation.ablate", "segment -> label-map -> localize -> evaluate for several networks and methods"),
    "train-apr": ("localization.apr.train", "train and test an absolute pose regression baseline (PoseNet, AtLoc, VLocNet, ...)"),
    "train-fgsn": ("fgsn.train", "train a fine-grained segmentation network on cross-season correspondences"),
    "pretrain-seg": ("fgsn.pretrain", "semantic-segmentation pre-training of PSPNet (the 'Seg' initialisation)"),
    "segment": ("fgsn.segment", "label images with an FGSN / PSPNet checkpoint (sliding window, HDF5 output)"),
    "analyze-clusters": ("fgsn.analyze", "NMI / contingency of FGSN clusters vs semantic classes, cross-condition agreement"),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fgsn-loc", description="Long-term semantic visual localization toolkit.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, (module, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        if name == command:
            import_object(module).add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("GLOG_minloglevel", "2")  # pycolmap's C++ info logs; set before pycolmap loads
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("FGSN_LOC_DEBUG", "") not in ("", "0")
    argv = [a for a in argv if a != "--debug"]
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(command if command in COMMANDS else None)
    args = parser.parse_args(argv)
    module = import_object(COMMANDS[args.command][0])
    try:
        ret = module.run(args)
    except UserError as e:
        if debug:
            raise
        if logging.getLogger().handlers:  # the run's log.txt, when logging has started
            logging.getLogger("fgsn-loc").error("error: %s", e)
        print(f"error: {e}", file=sys.stderr)
        return 2
    return int(ret or 0)


if __name__ == "__main__":
    sys.exit(main())
