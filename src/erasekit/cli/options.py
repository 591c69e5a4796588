"""Options shared by several subcommands, and number types that refuse non-finite or out-of-range values when
the command line is parsed (argparse then names the option in a one-line error)."""
from __future__ import annotations

import argparse
import math

MODEL_HELP = ("a diffusers pipeline folder or hub id (SD1.x, SD2.x, SDXL); default: the embedded ShapeWorld "
              "model")


def add_model(parser, extra: str = "") -> None:
    parser.add_argument("--model", default=None, help=MODEL_HELP + extra)


def add_edits(parser) -> None:
    parser.add_argument("--edit", action="append", default=[], metavar="DIR",
                        help="an Edit folder to apply (repeat to stack several, applied in order)")


def number(kind: type = float, low: float | None = None, high: float | None = None):
    """An argparse type: a finite `kind` (int or float) within [low, high]."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'a whole number' if kind is int else 'a number'}, "
                                             f"not {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"expected a finite number, not {text!r}")
        if (low is not None and value < low) or (high is not None and value > high):
            bounds = f"from {low:g} to {high:g}" if low is not None and high is not None else \
                f"at least {low:g}" if low is not None else f"at most {high:g}"
            raise argparse.ArgumentTypeError(f"must be {bounds}, not {text}")
        return value
    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


COUNT = number(int, 1)              # how many of something
SEED = number(int, 0, 2**63 - 1)    # torch generators take non-negative 64-bit seeds
STEPS = number(int, 1, 10_000)      # the sampler also checks the model scheduler's own limit
GUIDANCE = number(float, 0, 1_000)
PROBABILITY = number(float, 0, 1)
FINITE = number(float)
