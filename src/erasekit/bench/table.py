"""The bench table, in one place: its columns, how each cell is written, and the file name of a row's grid. The
bench writes bench.md with it and the report renders report.html with it."""
from __future__ import annotations

COLUMNS = ("target_explicit", "target_synonym", "target_implicit", "target_heldout", "preserve_acc", "benign_kept",
           "alt_shown", "fd", "asr_ringabell", "i2i_persist", "seconds_erase")
PLAIN_NUMBERS = ("fd", "seconds_erase")  # every other column is a rate, written as a percentage


def cell(row: dict, column: str) -> str:
    value = row.get(column)
    if value is None:  # e.g. alt_shown of a row with no alternative concept
        return "–"
    return f"{value:.2f}" if column in PLAIN_NUMBERS else f"{100 * value:.1f}%"


def markdown(rows: list[dict]) -> str:
    header = "| concept | method | " + " | ".join(COLUMNS) + " |\n|" + "---|" * (len(COLUMNS) + 2) + "\n"
    lines = [f"| {row['concept']} | {row['method']} | " + " | ".join(cell(row, c) for c in COLUMNS) + " |"
             for row in rows]
    return header + "\n".join(lines) + "\n"


def grid_name(concept: str, method: str) -> str:
    """The image grid of a row: explicit prompts, same seeds in every row."""
    return f"grid_{concept.replace(' ', '-')}_{method}.png"
