"""Options shared by several subcommands."""

MODEL_HELP = ("a diffusers pipeline folder or hub id (SD1.x, SD2.x, SDXL); default: the embedded ShapeWorld "
              "model")


def add_model(parser, extra: str = "") -> None:
    parser.add_argument("--model", default=None, help=MODEL_HELP + extra)


def add_edits(parser) -> None:
    parser.add_argument("--edit", action="append", default=[], metavar="DIR",
                        help="an Edit folder to apply (repeat to stack several, applied in order)")
