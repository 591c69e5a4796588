"""The `erasekit` command line. User errors print one line and exit with status 2, never a traceback."""
from __future__ import annotations

import argparse
import os
import sys
import warnings

# Library chatter (transformers' note that torchvision is absent, diffusers' loading bars) is not for CLI users.
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")

from ..errors import ErasekitError
from . import bench, erase, eval as eval_command, generate

MODEL_HELP = ("a diffusers pipeline folder or hub id (SD1.x, SD2.x, SDXL); default: the embedded ShapeWorld "
              "model")
# Subcommands whose implementation lands in later releases: (name, help, what is missing).
PLANNED = {
    "attack": "red-team an edited model (Ring-A-Bell, UnlearnDiffAtk, P4D, concept inversion)",
}


def _planned(name: str):
    def run(args) -> int:
        raise ErasekitError(f"'erasekit {name}' is not available yet in this version ({_version()}): "
                            f"{PLANNED[name]} is planned")
    return run


def _version() -> str:
    from .. import __version__
    return __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="erasekit", description="Erase concepts from text-to-image diffusion "
                                     "models, attack the result, and measure erasure, preservation and "
                                     "robustness. With no --model, every command runs on ShapeWorld.")
    parser.add_argument("--version", action="version", version=f"erasekit {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    generate.add_parser(sub, MODEL_HELP)
    erase.add_parser(sub, MODEL_HELP)
    eval_command.add_parser(sub, MODEL_HELP)
    bench.add_parsers(sub, MODEL_HELP)
    for name, help_text in PLANNED.items():
        p = sub.add_parser(name, help=f"{help_text} (not available yet)", description=f"{help_text}. Not "
                           "available yet in this version.")
        p.add_argument("--model", default=None, help=MODEL_HELP)
        p.set_defaults(run=_planned(name))
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if rest and args.command not in PLANNED:  # a planned command says it is planned, whatever its options
        parser.parse_args(argv)  # argparse reports the unknown options and exits
    warnings.simplefilter("default")
    from diffusers.utils import logging as diffusers_logging
    diffusers_logging.disable_progress_bar()
    try:
        return args.run(args) or 0
    except ErasekitError as e:
        print(f"erasekit {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
