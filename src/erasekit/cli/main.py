"""The `erasekit` command line. User errors print one line and exit with status 2, never a traceback; warnings
print one line each."""
from __future__ import annotations

import argparse
import os
import sys
import warnings

# Library chatter (diffusers' notes and loading bars) is not for CLI users; transformers' warnings stay, except
# its torchvision notice, which erasekit.models drops.
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")

from ..errors import ErasekitError
from ..version import __version__
from . import attack, bench, erase, eval as eval_command, generate, gie_adapter, harden, purify



def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="erasekit", description="Erase concepts from text-to-image diffusion "
                                     "models, attack the result, and measure erasure, preservation and "
                                     "robustness. With no --model, every command runs on ShapeWorld.")
    parser.add_argument("--version", action="version", version=f"erasekit {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    generate.add_parser(sub)
    erase.add_parser(sub)
    eval_command.add_parser(sub)
    bench.add_parsers(sub)
    attack.add_parser(sub)
    harden.add_parser(sub)
    gie_adapter.add_parser(sub)
    purify.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run a command; returns its exit status (argparse's 2 for a bad option, 0 after --help)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version, or a bad option that argparse has already reported
        return int(e.code or 0)
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging
    if os.environ.get("DIFFUSERS_VERBOSITY") == "error":
        diffusers_logging.set_verbosity_error()  # diffusers may have been imported before the default was set
    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()
    with warnings.catch_warnings():  # restored on return (main is also called in-process, by tests)
        warnings.simplefilter("default")
        warnings.showwarning = _one_line_warning(args.command)
        try:
            return args.run(args) or 0
        except ErasekitError as e:
            print(f"erasekit {args.command}: error: {e}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130


def _one_line_warning(command: str):
    def show(message, category, filename, lineno, file=None, line=None):
        print(f"erasekit {command}: warning: {message}", file=file or sys.stderr)
    return show


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
