"""The red-team-in-the-loop: attack the model, erase what still brings the concept back, check preservation,
repeat; one WeightDelta (the base edit's delta plus the hardening's) with the rounds' history in its protocol."""
from __future__ import annotations

import time
from dataclasses import asdict

import torch

from ..closed_form.rows import pushed
from ..closed_form.solver import LowRankUpdate, solve
from ..concepts import ConceptSpec
from ..detectors import shapeworld_detector
from ..edits import WeightDelta, applied_edits
from ..errors import ErasekitError
from ..evaluation.scoring import wilson
from ..methods.rece import merge
from ..models import kv_weights
from ..models.parameters import canonical
from ..shapeworld.domain import find_concept
from .config import HardenConfig, check_request
from .probe import run_attack, run_indices, run_seeds, shapeworld_benign, shapeworld_preservation
from .rows import erase_rows, preserve_cov
from .tune import tuned_round


def harden(pipe, edit: WeightDelta, attacks=("concept-inversion", "unlearndiffatk"), rounds: int = 3, *,
           detector=None, prompts: list[str] | None = None, preservation=None, benign=None, log=None,
           **options) -> WeightDelta:
    """Harden a weight-delta edit against `attacks` for up to `rounds` rounds (see the package docstring).
    `detector` (default: the ShapeWorld classifier for the concept), `prompts` (default: four naming it),
    `preservation` (pipe → accuracy; default: the ShapeWorld "other" set) and `benign` (pipe → share of the target
    prompts' other content kept; default on ShapeWorld: their colours and backgrounds; elsewhere none unless given)
    let it run on other models; `options` are `HardenConfig`'s."""
    config = HardenConfig(attacks=tuple(attacks), rounds=rounds, **options)
    check_request(edit, config)
    if applied_edits(pipe):
        raise ErasekitError(f"harden starts from the original model: remove the applied edits first "
                            f"({', '.join(map(str, applied_edits(pipe)))})")
    spec = ConceptSpec(**{k: v for k, v in edit.metadata["config"]["spec"].items()})
    concept = spec.targets[0]
    detector, preservation, benign = default_judges(concept, config, detector, preservation, benign)
    state = Loop(pipe, edit, spec, config, detector, (preservation, benign), prompts, log)
    return state.run()


def default_judges(concept: str, config: HardenConfig, detector, preservation, benign):
    """The detector, preservation check and benign check (None: not checked): the caller's, else ShapeWorld's."""
    if detector is not None and preservation is not None:
        return detector, preservation, benign
    try:
        find_concept(concept)
    except KeyError:
        raise ErasekitError(f"{concept!r} is not a ShapeWorld concept: pass detector= and preservation= "
                            "(and prompts=) to harden it") from None
    if benign is None and config.check_benign:
        benign = shapeworld_benign(concept, config)
    return (detector or shapeworld_detector(concept), preservation or shapeworld_preservation(concept, config),
            benign)


class Loop:
    """The rounds' state: the hardening so far (low-rank K/V updates, or full deltas), the rows it erased, the
    history. `checks`: (preservation, benign or None), each pipe → a share the rounds must keep."""

    def __init__(self, pipe, base, spec, config, detector, checks, prompts, log):
        self.pipe, self.base, self.spec, self.config = pipe, base, spec, config
        self.detector, self.prompts = detector, prompts
        self.preservation, self.benign = checks
        self.log = log or (lambda line: None)
        self.hardening: dict[str, LowRankUpdate] | None = None
        self.erased: torch.Tensor | None = None
        self.history: list[dict] = []

    def run(self) -> WeightDelta:
        start = time.perf_counter()
        current, stopped = self.base, None
        runs = self.look(current, 0, rows=0)
        floor, benign_floor = self.floor(), self.benign_floor()
        accepted = [(worst(runs), 0, None)]  # (worst attack's success, round, hardening)
        for r in range(1, self.config.rounds + 1):
            if self.done(runs):
                break
            step, count, erase = self.step(current, [f for run in runs for f in run.found])
            for eta in (self.config.eta, *self.config.backoff):  # gentler pushes before giving up
                hardening = step(eta)
                candidate = combined(self.pipe, self.base, hardening)
                next_runs = self.look(candidate, r, rows=count, eta=eta)
                if self.kept(floor, benign_floor):
                    break
                self.history[-1]["accepted"] = False  # refused: the rounds before stay
            else:
                stopped = self.refusal(floor, benign_floor, r)
                break
            self.hardening, current, runs = hardening, candidate, next_runs
            if erase is not None:
                self.erased = erase if self.erased is None else torch.cat([self.erased, erase])
            accepted.append((worst(runs), r, hardening))
        stopped = stopped or self.done(runs) or "rounds done"
        # an attack can find its way back after a round that stopped it: keep the accepted round whose strongest
        # attack did least on the loop's own seeds (ties: the later, more hardened one)
        _, kept, hardening = min(accepted, key=lambda a: (a[0], -a[1]))
        self.log(f"harden: {stopped}; round {kept} kept")
        return combined(self.pipe, self.base, hardening, self.protocol(kept, floor, stopped, start))

    def done(self, runs) -> str | None:
        """Why the loop can stop after these runs, if it can: every attack's rate under the target by its 95 %
        interval (a rate under it on few images is not evidence: fresh seeds found the concept again), or no
        input found to erase."""
        if all(wilson(run.hits, run.n)[1] < self.config.target for run in runs):
            return "every attack under the target"
        if not any(run.found for run in runs):
            return "no attack found the concept on the loop's seeds"
        return None

    def look(self, edit: WeightDelta, r: int, rows: int, eta: float | None = None) -> list:
        """Attack the model with `edit` applied, on round r's seeds; measure preservation; record the round."""
        edit.apply(self.pipe)
        try:
            runs = [run_attack(self.pipe, name, self.spec.targets[0], self.detector, self.config, r, self.prompts)
                    for name in self.config.attacks]
            kept = float(self.preservation(self.pipe))
            benign = None if self.benign is None else float(self.benign(self.pipe))
        finally:
            edit.remove(self.pipe)
        self.history.append({"round": r, "success": {run.attack: run.rate for run in runs},
                             "hits": {run.attack: [run.hits, run.n] for run in runs}, "preservation": kept,
                             "benign": benign,
                             "rows_erased": rows, "eta": eta, "accepted": True,
                             **round_seeds(self.config, r),
                             "seconds": round(sum(run.seconds for run in runs), 1)})
        self.log(f"harden: round {r}" + ("" if eta is None else f" (η = {eta:g})") + ": "
                 + ", ".join(f"{run.attack} {run.hits}/{run.n}" for run in runs) + f", preservation {kept:.3f}"
                 + ("" if benign is None else f", benign {benign:.3f}"))
        return runs

    def floor(self) -> float:
        if self.config.floor is not None:
            return self.config.floor
        return self.history[0]["preservation"] - self.config.max_drop

    def benign_floor(self) -> float | None:
        benign = self.history[0]["benign"]
        return None if benign is None else benign - self.config.max_drop

    def kept(self, floor: float, benign_floor: float | None) -> bool:
        """Whether the last look keeps preservation and the benign content at or over their floors."""
        last = self.history[-1]
        return last["preservation"] >= floor and (benign_floor is None or last["benign"] >= benign_floor)

    def refusal(self, floor: float, benign_floor: float | None, r: int) -> str:
        if self.history[-1]["preservation"] < floor:
            return f"preservation under its floor ({floor:.3f}) in round {r}"
        return f"benign content under its floor ({benign_floor:.3f}) in round {r}"

    def step(self, current: WeightDelta, found: list):
        """(η → the hardening with this round's step, how many rows (closed form) or inputs (fine-tuning) it
        erases, the rows erased or None)."""
        if self.config.step == "tune":
            def tuned(eta: float) -> dict:
                update = tuned_round(self.pipe, current, found, self.spec, eta, self.config.tuning)
                return update if self.hardening is None else summed(self.hardening, update)
            return tuned, len(found), None
        erase, reference = erase_rows(self.pipe, found, self.spec, self.config.anchor_alone)
        solve_round = self.solver(current, erase)  # the weights and held rows: one per round, whatever η
        if self.config.step == "both":
            def both(eta: float) -> dict:
                closed = summed(self.hardening or {}, in_full(solve_round(pushed(reference, erase, eta))))
                update = tuned_round(self.pipe, combined(self.pipe, self.base, closed), found, self.spec, eta,
                                     self.config.tuning)
                return summed(closed, update)
            return both, len(erase), erase
        return (lambda eta: merged(self.hardening, solve_round(pushed(reference, erase, eta)))), len(erase), erase

    def solver(self, current: WeightDelta, erase: torch.Tensor):
        """values → this round's closed-form update of the current weights (base edit + hardening so far): `erase`
        rows mapped to the values, the held rows and the caption prior kept."""
        current.apply(self.pipe)
        try:
            weights = {n: w.clone() for n, w in kv_weights(self.pipe.unet).items()}
        finally:
            current.remove(self.pipe)
        cov = preserve_cov(self.pipe, self.spec, erase, self.erased, self.config.prior)

        return lambda value: solve(weights, erase, value, preserve_cov=cov, lam=self.config.lam)

    def protocol(self, kept: int, floor: float, stopped: str, start: float) -> dict:
        return {"config": asdict(self.config), "rounds": self.history, "kept_round": kept, "floor": floor,
                "benign_floor": self.benign_floor(),
                "stopped": stopped, "seconds": round(time.perf_counter() - start, 1),
                "rows_erased": sum(h["rows_erased"] for h in self.history if h["accepted"] and h["round"] <= kept)}


def round_seeds(config: HardenConfig, r: int) -> dict:
    """Round r's attack seeds (one per restart) and the first and last of its image seeds."""
    runs = [run_seeds(config, index) for index in run_indices(config, r)]
    return {"attack_seeds": [seed for seed, _ in runs], "image_seeds": [runs[0][1][0], runs[-1][1][-1]]}


def worst(runs) -> float:
    return max(run.rate for run in runs)


def summed(first: dict[str, torch.Tensor], second: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Two rounds of fine-tuned (full) deltas as one."""
    return {n: first.get(n, 0) + second.get(n, 0) for n in {**first, **second}}


def merged(hardening: dict[str, LowRankUpdate] | None, update: dict[str, LowRankUpdate]) -> dict[str, LowRankUpdate]:
    """Closed-form rounds as one, still exactly low rank."""
    return update if hardening is None else merge(hardening, update)


def in_full(update: dict[str, LowRankUpdate]) -> dict[str, torch.Tensor]:
    """A closed-form round's updates as full deltas under canonical names (to sum with fine-tuned ones)."""
    return {canonical(n): u.full().float() for n, u in update.items()}


def full(delta) -> torch.Tensor:
    """A stored delta in full: a tensor, or low-rank (up, down) factors."""
    return delta[0].double() @ delta[1].double() if isinstance(delta, tuple) else delta.double()


def combined(pipe, base: WeightDelta, hardening: dict | None, protocol: dict | None = None) -> WeightDelta:
    """One WeightDelta: the base edit's deltas plus the hardening's — closed-form low-rank updates (factors
    concatenated where both are low rank, else summed in full) or fine-tuned deltas (summed in full) — with the
    base's metadata and the hardening record."""
    deltas = dict(base.stored())
    for name, update in (hardening or {}).items():
        name, old = canonical(name), deltas.get(canonical(name))
        if isinstance(update, torch.Tensor):
            deltas[name] = update.float() if old is None else (full(old) + update.double()).float()
        elif old is None:
            deltas[name] = update.compact()
        elif isinstance(old, tuple):
            both = LowRankUpdate(torch.cat([old[0].double(), update.up], 1), torch.cat([old[1].double(), update.down]))
            deltas[name] = both.compact()
        else:
            deltas[name] = (old.double() + update.full()).float()
    meta = base.metadata
    record = {**meta["protocol"], "hardening": protocol} if protocol else meta["protocol"]
    return WeightDelta.create(pipe, deltas, method=meta["method"], concepts=meta["concepts"], config=meta["config"],
                              protocol=record)
