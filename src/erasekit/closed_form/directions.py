"""Directions of the text-embedding space where one set of rows carries much and another little: the top
generalised eigenvectors of (A, B + ε·I), A and B the two sets' second moments (mean e eᵀ over their rows)."""
from __future__ import annotations

import torch

from .rows import covariance


def second_moment(rows: torch.Tensor) -> torch.Tensor:
    """Mean e eᵀ over the rows (n, d), in float64: the closed-form edits' covariance per row."""
    return covariance(rows, 1 / len(rows))


def discriminative_directions(a: torch.Tensor, b: torch.Tensor, dims: int, eps: float = 1e-3) -> torch.Tensor:
    """(d, dims) unit columns, strongest first: the directions u maximising uᵀ a u / uᵀ b u, the mean squared
    projection of one set of rows over the other's (`second_moment` of each). `eps` (relative to b's mean energy
    per dimension) keeps directions the second set never visits from dividing by zero."""
    if not 1 <= dims <= a.shape[-1]:
        raise ValueError(f"dims must be from 1 to {a.shape[-1]}, not {dims}")
    a, b = a.double(), b.double()
    b = b + eps * torch.trace(b) / len(b) * torch.eye(len(b), dtype=b.dtype)
    whiten = torch.linalg.inv(torch.linalg.cholesky(b))  # b = L Lᵀ: the problem becomes L⁻¹ a L⁻ᵀ v = λ v
    _, vectors = torch.linalg.eigh(whiten @ a @ whiten.T)
    directions = whiten.T @ vectors.flip(1)[:, :dims]
    return (directions / directions.norm(dim=0)).float()
