"""ForceForget's reward log: per round the mean reward (all, target prompts, benign prompts) and its parts, kept in
memory, written to `rewards.csv` in the work folder (a resumed run keeps the rows before its checkpoint), and drawn
as a PNG."""
from __future__ import annotations

import csv
from pathlib import Path

from ...utils.plot import line_plot
from ...training import world

FIELDS = ("round", "reward", "reward_target", "reward_benign", "reward_explore", "r_safe", "r_align")


class RewardLog:
    def __init__(self, folder: str = ""):
        self.path = Path(folder) / "rewards.csv" if folder else None
        self.history: list[dict] = []

    def add(self, round_index: int, rollout) -> None:
        row = {"round": round_index, "reward": round(float(rollout.rewards.mean()), 5), **_split(rollout),
               **{k: None if v is None else round(v, 5) for k, v in rollout.parts.items()}}
        self.history = [h for h in self.history if h["round"] < round_index] + [row]
        if self.path is not None and world()[1] == 0:
            self._write(round_index, row)

    def status(self) -> dict:
        """The last round's mean rewards, for the progress bar."""
        if not self.history:
            return {}
        last = self.history[-1]
        return {k: f"{last[k]:.3f}" for k in ("reward", "reward_target") if last.get(k) is not None}

    def _write(self, round_index: int, row: dict) -> None:
        rows = []
        if self.path.exists():
            with self.path.open(newline="") as f:
                rows = [r for r in csv.DictReader(f) if int(r["round"]) < round_index]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("w", newline="") as f:
            writer = csv.DictWriter(f, FIELDS)
            writer.writeheader()
            writer.writerows(rows + [row])


def _split(rollout) -> dict:
    """Mean reward of this process's target samples (from noise), benign samples and exploring samples."""
    exploring = rollout.exploring or [False] * len(rollout.prompts)
    kinds = {"reward_target": [p.harmful and not e for p, e in zip(rollout.prompts, exploring)],
             "reward_benign": [not p.harmful for p in rollout.prompts], "reward_explore": exploring}
    out = {}
    for name, chosen in kinds.items():
        values = [float(r) for r, c in zip(rollout.local_rewards, chosen) if c]
        out[name] = round(sum(values) / len(values), 5) if values else None
    return out


def reward_plot(history: list[dict], title: str = "ForceForget: mean reward per round"):
    names = [n for n in FIELDS[2:] if any(h.get(n) is not None for h in history)]  # exploring only when used
    series = {name: [h.get(name) for h in history] for name in names}
    return line_plot(series, title, y_range=(0.0, 1.0))
