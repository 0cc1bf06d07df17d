"""GPCA: split a cluster along the first principal component of its members' gradients."""

from __future__ import annotations

import torch


def first_principal_component(gradients: torch.Tensor, iterations: int = 30) -> torch.Tensor:
    """Unit vector of the largest variance direction of the centred rows of ``gradients``.

    Power iteration on the d x d covariance: O(n·d + iterations·d²), no full SVD needed.
    """
    centred = gradients - gradients.mean(dim=0, keepdim=True)
    covariance = centred.T @ centred
    generator = torch.Generator(device="cpu").manual_seed(0)
    vector = torch.randn(gradients.shape[1], generator=generator, dtype=gradients.dtype)
    vector = vector.to(gradients.device)
    for _ in range(iterations):
        nxt = covariance @ vector
        norm = nxt.norm()
        if norm == 0:
            break
        vector = nxt / norm
    return vector


def gpca_split(gradients: torch.Tensor) -> torch.Tensor:
    """Boolean mask of the members that move to the new cluster (negative projection).

    ``gradients``: one row per member, the gradient of that member's data loss with respect
    to the shared cluster row it uses. Returns an all-False mask when the members agree
    (fewer than two members, or zero spread), so a split never creates an empty cluster.
    """
    n = gradients.shape[0]
    if n < 2:
        return torch.zeros(n, dtype=torch.bool, device=gradients.device)
    component = first_principal_component(gradients.float())
    projection = (gradients.float() - gradients.float().mean(dim=0)) @ component
    moved = projection < 0
    if bool(moved.all()) or not bool(moved.any()):
        return torch.zeros(n, dtype=torch.bool, device=gradients.device)
    return moved
