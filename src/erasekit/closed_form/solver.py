"""The closed-form cross-attention edit shared by UCE, RECE and TRCE stage 1.

For every K/V matrix W (d_out x d) minimise
    Σ_i w_i ‖W c_i − v_i‖² + ‖(W − W_ref) P^½‖² + λ‖W − W_ref‖²,   v_i = W_ref a_i (a value embedding per row)
whose solution is W = W_ref + ΔW with
    ΔW · M = Σ_i w_i (v_i − W_ref c_i) c_iᵀ,    M = Σ_i w_i c_i c_iᵀ + P + λI.
M is the same d x d matrix for every K/V matrix (the rows are text embeddings), so one float64 solve
B = M⁻¹ Eᵀ serves them all, and ΔW = W_ref (A − E)ᵀ diag(w) Bᵀ is exactly low rank (≤ number of erase rows).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import ErasekitError

MAX_CONDITION = 1e12


class SolverError(ErasekitError):
    """The linear system is singular, ill-conditioned or not finite: the edit would silently break the model."""


@dataclass
class LowRankUpdate:
    up: torch.Tensor    # (d_out, m)
    down: torch.Tensor  # (m, d)

    def full(self) -> torch.Tensor:
        return self.up @ self.down

    def compact(self) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """The cheaper of the two exact forms to store: factors when the rank is below both sides, else ΔW."""
        m = self.up.shape[1]
        if m * (self.up.shape[0] + self.down.shape[1]) < self.up.shape[0] * self.down.shape[1]:
            return self.up.float(), self.down.float()
        return self.full().float()


def system_matrix(erase_rows: torch.Tensor, erase_weights: torch.Tensor, preserve_cov: torch.Tensor | None,
                  lam: float) -> torch.Tensor:
    e = erase_rows.double()
    m = e.T @ (erase_weights.double()[:, None] * e)
    if preserve_cov is not None:
        m = m + preserve_cov.double()
    return m + lam * torch.eye(m.shape[0], dtype=torch.float64, device=m.device)


def check_conditioning(m: torch.Tensor) -> None:
    if not torch.isfinite(m).all():
        raise SolverError("the closed-form system contains NaN or Inf (check the embeddings and weights)")
    eig = torch.linalg.eigvalsh(m)
    if eig[0] <= 0 or eig[-1] / eig[0] > MAX_CONDITION:
        raise SolverError(f"the closed-form system is singular or ill-conditioned (eigenvalues {eig[0].item():.3g} "
                          f"… {eig[-1].item():.3g}); add regularisation (lambda > 0) or preservation rows")


def factors(erase_rows: torch.Tensor, value_rows: torch.Tensor, *, erase_weights: torch.Tensor | None = None,
            preserve_cov: torch.Tensor | None = None, lam: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """The parts every matrix shares: (shift, down) with ΔW = (W_ref @ shiftᵀ) @ down.
    shift = diag(w)(A − E) (m x d), down = E M⁻¹ (m x d). Raises SolverError on a singular or non-finite system."""
    if erase_rows.shape != value_rows.shape:
        raise ValueError(f"erase rows {tuple(erase_rows.shape)} and value rows {tuple(value_rows.shape)} differ")
    w = torch.ones(len(erase_rows), dtype=torch.float64) if erase_weights is None else erase_weights.double()
    m = system_matrix(erase_rows, w, preserve_cov, lam)
    check_conditioning(m)
    e = erase_rows.double()
    down = torch.linalg.solve(m, e.T).T                        # (m, d) = E M⁻¹ (M symmetric)
    if not torch.isfinite(down).all():
        raise SolverError("the closed-form solution is not finite")
    return (value_rows.double() - e) * w[:, None], down


def solve(weights: dict[str, torch.Tensor], erase_rows: torch.Tensor, value_rows: torch.Tensor, *,
          erase_weights: torch.Tensor | None = None, preserve_cov: torch.Tensor | None = None,
          lam: float = 0.5) -> dict[str, LowRankUpdate]:
    """weights: name → W_ref (d_out x d); erase_rows E and value_rows A: (m, d), row-aligned.

    Returns name → ΔW as exact low-rank factors. Raises SolverError on a singular or non-finite system."""
    shift, down = factors(erase_rows, value_rows, erase_weights=erase_weights, preserve_cov=preserve_cov, lam=lam)
    updates = {}
    for name, w_ref in weights.items():
        up = w_ref.double() @ shift.T                          # (d_out, m)
        if not torch.isfinite(up).all():
            raise SolverError(f"the update of {name} is not finite")
        updates[name] = LowRankUpdate(up, down)
    return updates


def solve_reference(weights: dict[str, torch.Tensor], erase_rows: torch.Tensor, value_rows: torch.Tensor, *,
                    erase_weights: torch.Tensor | None = None, preserve_cov: torch.Tensor | None = None,
                    lam: float = 0.5) -> dict[str, torch.Tensor]:
    """The textbook form, one matrix at a time with an explicit inverse: the benchmark's and tests' reference."""
    w = torch.ones(len(erase_rows)) if erase_weights is None else erase_weights
    new = {}
    for name, w_ref in weights.items():
        w_ref = w_ref.double()
        values = value_rows.double() @ w_ref.T
        c = erase_rows.double()
        p = torch.zeros(c.shape[1], c.shape[1], dtype=torch.float64) if preserve_cov is None else preserve_cov.double()
        numerator = (values.T * w.double()) @ c + w_ref @ p + lam * w_ref
        denominator = (c.T * w.double()) @ c + p + lam * torch.eye(c.shape[1], dtype=torch.float64)
        new[name] = numerator @ torch.linalg.inv(denominator) - w_ref
    return new
