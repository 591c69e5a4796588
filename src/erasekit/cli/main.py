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
from . import attack, bench, erase, eval as eval_command, generate, gie_adapter

def _version() -> str:
    from .. import __version__
    return __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="erasekit", description="Erase concepts from text-to-image diffusion "
                                     "models, attack the result, and measure erasure, preservation and "
                                     "robustness. With no --model, every command runs on ShapeWorld.")
    parser.add_argument("--version", action="version", version=f"erasekit {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    generate.add_parser(sub)
    erase.add_parser(sub)
    eval_command.add_parser(sub)
    bench.add_parsers(sub)
    attack.add_parser(sub)
    gie_adapter.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
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
