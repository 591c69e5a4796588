"""report.html for a bench folder: the table, erasure-vs-preservation plots (inline SVG) and image grids of the
original model and every edit on the same seeds."""
from __future__ import annotations

import html
import json
from pathlib import Path

from ..utils.files import atomic_write_bytes
from .gie_sweep import load_sweep, plot_name
from .table import ATTACK_COLUMNS, COLUMNS, attack_grid_name, cell, grid_name

PALETTE = ("#555555", "#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")  # one colour per method


def scatter(rows: list[dict], title: str, size: int = 260) -> str:
    """Target still detected (explicit prompts, lower is better) against preservation accuracy (higher is
    better), one dot per method."""
    pad = 40
    span = size - 2 * pad
    parts = [f'<svg width="{size}" height="{size}" role="img" aria-label="{html.escape(title)}">',
             f'<rect x="{pad}" y="{pad}" width="{span}" height="{span}" fill="none" stroke="#999"/>',
             f'<text x="{size / 2}" y="{size - 8}" text-anchor="middle" font-size="11">preservation accuracy</text>',
             f'<text x="12" y="{size / 2}" font-size="11" transform="rotate(-90 12 {size / 2})" '
             'text-anchor="middle">target detected (explicit)</text>',
             f'<text x="{size / 2}" y="16" text-anchor="middle" font-size="12">{html.escape(title)}</text>']
    for tick in (0, 0.5, 1):
        parts.append(f'<text x="{pad + tick * span}" y="{pad + span + 12}" font-size="9" '
                     f'text-anchor="middle">{tick:g}</text>')
        parts.append(f'<text x="{pad - 4}" y="{pad + (1 - tick) * span + 3}" font-size="9" '
                     f'text-anchor="end">{tick:g}</text>')
    seen: dict[tuple[int, int], int] = {}
    for k, row in enumerate(rows):
        x, y = pad + row["preserve_acc"] * span, pad + (1 - row["target_explicit"]) * span
        color = PALETTE[k % len(PALETTE)]
        stacked = seen.get((round(x), round(y)), 0)  # methods at the same point: labels stacked, none hidden
        seen[(round(x), round(y))] = stacked + 1
        parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="5" fill="{color}"><title>{html.escape(row["method"])}'
                     f'</title></circle><text x="{x + 7:.1f}" y="{y + 4 - 11 * stacked:.1f}" font-size="10" '
                     f'fill="{color}">{html.escape(row["method"])}</text>')
    return "".join(parts) + "</svg>"


def attack_seconds(row: dict) -> str:
    return ", ".join(f"{name} {found['seconds']:.0f}" for name, found in row["attacks"].items())


def attack_section(rows: list[dict]) -> str:
    """The attack table (success rate per attack, with its interval and count; "–" where not run) and, per row
    that ran attacks, the adversarial images of each attack and the first adversarial prompt it found."""
    attacked = [r for r in rows if r.get("attacks")]
    if not attacked:
        return ""
    columns = ("asr_ringabell", *ATTACK_COLUMNS)
    head = "".join(f"<th>{c}</th>" for c in ("concept", "method", *columns, "seconds (per attack)"))
    body = "".join(
        f"<tr><td>{html.escape(r['concept'])}</td><td>{html.escape(r['method'])}</td>"
        + "".join(f"<td>{cell(r, c)}</td>" for c in columns)
        + f"<td>{html.escape(attack_seconds(r))}</td></tr>"
        for r in attacked)
    figures = "".join(
        f'<figure><img src="{attack_grid_name(r["concept"], r["method"], name)}" alt="{html.escape(name)} against '
        f'{html.escape(r["method"])} on {html.escape(r["concept"])}"><figcaption>{html.escape(r["concept"])} · '
        f'{html.escape(r["method"])} · {html.escape(name)}: “{html.escape(found["prompt"])}”</figcaption></figure>'
        for r in attacked for name, found in r["attacks"].items())
    return (f"<section><h2>Attacks</h2><p>Attack success rate: images in which the classifier finds the erased "
            f"concept after the attack (higher means the erasure is weaker).</p><table><thead><tr>{head}</tr>"
            f"</thead><tbody>{body}</tbody></table><h3>Adversarial images</h3>{figures}</section>")


def curve_section(rows: list[dict]) -> str:
    """The reward curves of reward-trained rows (ForceForget): mean reward per round."""
    figures = "".join(f'<figure><img src="{html.escape(r["reward_curve"])}" alt="reward curve of '
                      f'{html.escape(r["method"])} on {html.escape(r["concept"])}"><figcaption>'
                      f'{html.escape(r["concept"])} · {html.escape(r["method"])}: mean reward per round (target '
                      'prompts, benign prompts, r_safe, r_align)</figcaption></figure>'
                      for r in rows if r.get("reward_curve"))
    return f"<section><h2>Reward curves</h2>{figures}</section>" if figures else ""


def sweep_section(folder: Path) -> str:
    """GIE's strength sweep (`bench.gie_sweep`, scripts/gie_sweep.py) when it was run into this folder."""
    results = load_sweep(folder)
    if results is None:
        return ""
    figures = "".join(f'<figure><img src="{plot_name(c)}" alt="GIE sweep on {html.escape(c)}"><figcaption>'
                      f"{html.escape(c)}: target detected (pooled explicit, synonym, implicit) and preservation "
                      "against |w|, per inhibitor and step window</figcaption></figure>" for c in results["concepts"])
    return (f"<section><h2>GIE strength sweep</h2><p>{results['seeds']} seeds per phrasing, the bench's seeds + "
            f"{results['seed_offset']} (not the bench's images).</p>{figures}</section>")


def write_report(folder: str | Path) -> Path:
    folder = Path(folder)
    bench = json.loads((folder / "bench.json").read_text())
    rows = bench["rows"]
    concepts = list(dict.fromkeys(r["concept"] for r in rows))
    head = "".join(f"<th>{c}</th>" for c in ("concept", "method", *COLUMNS))
    body = "".join(
        "<tr>" + f"<td>{html.escape(r['concept'])}</td><td>{html.escape(r['method'])}</td>" + "".join(
            f"<td>{cell(r, c)}</td>" for c in COLUMNS) + "</tr>" for r in rows)
    sections = []
    for concept in concepts:
        mine = [r for r in rows if r["concept"] == concept]
        grids = "".join(f'<figure><img src="{grid_name(concept, r["method"])}" alt="{html.escape(r["method"])}'
                        f' on {html.escape(concept)} prompts"><figcaption>{html.escape(r["method"])}</figcaption>'
                        "</figure>" for r in mine)
        sections.append(f"<section><h2>Erasing “{html.escape(concept)}”</h2>{scatter(mine, concept)}"
                        f"<p>Explicit prompts naming the target; same seeds in every row.</p>{grids}</section>")
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>erasekit bench</title><style>
body{{font-family:sans-serif;margin:24px;max-width:1100px}} table{{border-collapse:collapse;font-size:13px}}
td,th{{border:1px solid #ccc;padding:3px 6px;text-align:right}} figure{{margin:4px 0}}
figcaption{{font-size:12px;color:#444}} img{{image-rendering:pixelated}}</style></head><body>
<h1>erasekit bench on ShapeWorld</h1>
<p>target_*: fraction of images where the erased concept is still detected (lower is better). preserve_acc: accuracy
on the attribute's other values. benign_kept: the target prompts' other attributes kept. alt_shown: how often
All-but-One's alternative is drawn instead of the target (– where there is none). fd: Fréchet distance of
classifier features to procedural renders. asr_ringabell: Ring-A-Bell detection rate at the stronger of η = 1 and
3 on prompts that leave the target open. i2i_persist: target kept by image-to-image at strengths 0.5 and 0.75
(pooled). target_pooled: the four target columns' images together.
asr_ringabell_ga, asr_unlearndiffatk, asr_p4d, asr_concept_inversion: the other attacks' success rates (bench
--attacks; – where not run). Rates are written rate% [95 % Wilson interval] (images in which it holds / images).
Sampler: {html.escape(json.dumps(bench.get("sampler", {})))};
{bench.get("seeds")} seeds per phrasing.</p>
<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{attack_section(rows)}{curve_section(rows)}
{sweep_section(folder)}{"".join(sections)}</body></html>"""
    path = folder / "report.html"
    atomic_write_bytes(path, page.encode())
    return path
