"""The bench table, in one place: its columns, how each cell is written, and the file name of a row's grid. The
bench writes bench.md with it and the report renders report.html with it.

A rate cell is written "rate% [low, high] (k/n)": k of n images, with its 95 % Wilson interval, from the counts a
row keeps under "counts" (bench.json). A cell that was not measured is "–"."""
from __future__ import annotations

from ..evaluation.scoring import wilson
from ..utils.files import slug

ATTACK_COLUMNS = {"asr_ringabell_ga": "ring-a-bell-ga", "asr_unlearndiffatk": "unlearndiffatk", "asr_p4d": "p4d",
                  "asr_concept_inversion": "concept-inversion"}  # column → attack (measured by --attacks)
COLUMNS = ("target_explicit", "target_synonym", "target_implicit", "target_heldout", "target_pooled",
           "preserve_acc", "benign_kept", "alt_shown", "fd", "asr_ringabell", *ATTACK_COLUMNS, "i2i_persist",
           "seconds_erase")
PLAIN_NUMBERS = ("fd", "seconds_erase")  # every other column is a rate, written as a percentage


def tally(rate: float, n: int) -> list[int]:
    """[hits, n] of a rate measured as hits / n on n images (or attribute judgements)."""
    return [round(rate * n), n]


def rate_cell(hits: int, n: int) -> str:
    """"rate% [low, high] (hits/n)", the interval the 95 % Wilson score interval."""
    low, high = wilson(hits, n)
    return f"{100 * hits / n:.1f}% [{100 * low:.1f}, {100 * high:.1f}] ({hits}/{n})"


def separating_images(low: float = 0.05, high: float = 0.20) -> int:
    """The fewest images on which rates of `low` and `high` have disjoint 95 % Wilson intervals (75 for 5 % and
    20 %): a cell on fewer cannot tell them apart."""
    return next(n for n in range(2, 100_000) if wilson(low * n, n)[1] < wilson(high * n, n)[0])


def underpowered(rows: list[dict]) -> list[str]:
    """The rate columns with a cell on fewer than `separating_images()` images, in table order."""
    least = separating_images()
    return [c for c in COLUMNS if any(row.get("counts", {}).get(c, [0, least])[1] < least for row in rows)]


def cell(row: dict, column: str) -> str:
    value = row.get(column)
    if value is None:  # not measured, e.g. alt_shown of a row with no alternative, an attack not run
        return "–"
    if column in PLAIN_NUMBERS:
        return f"{value:.2f}"
    counts = row.get("counts", {}).get(column)
    return rate_cell(*counts) if counts else f"{100 * value:.1f}%"  # bench.json from before counts were kept


def markdown(rows: list[dict]) -> str:
    header = "| concept | method | " + " | ".join(COLUMNS) + " |\n|" + "---|" * (len(COLUMNS) + 2) + "\n"
    lines = [f"| {row['concept']} | {row['method']} | " + " | ".join(cell(row, c) for c in COLUMNS) + " |"
             for row in rows]
    note = ("\nRates: rate% [95 % Wilson interval] (images in which it holds / images). target_pooled: the four "
            "target columns' images together.\n")
    few = underpowered(rows)
    if few:
        note += (f"Cells on fewer than {separating_images()} images cannot tell a 5 % rate from a 20 % one (their "
                 f"intervals overlap): here {', '.join(few)} (a larger `--seeds` raises them).\n")
    return header + "\n".join(lines) + "\n" + note


def grid_name(concept: str, method: str) -> str:
    """The image grid of a row: explicit prompts, same seeds in every row."""
    return f"grid_{slug(concept)}_{method}.png"


def attack_grid_name(concept: str, method: str, attack: str) -> str:
    """The adversarial images of an attack against a row."""
    return f"attack_{slug(concept)}_{method}_{attack}.png"
