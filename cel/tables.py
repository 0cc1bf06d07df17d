"""Embedding tables: the clustered table of CEL and the full one-row-per-entity table.

Every table is an ``nn.Module`` mapping a LongTensor of dense entity ids to a ``(B, dim)``
tensor and reports ``memory_bytes()`` (tables + assignment arrays), so any interaction model
sits on top and every method is compared at a known memory cost.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` means cuda when available, else cpu."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def assignment_dtype(max_clusters: int) -> torch.dtype:
    """Smallest integer type that holds a cluster id (the serving format)."""
    if max_clusters <= 256:
        return torch.uint8
    if max_clusters <= 32768:
        return torch.int16
    return torch.int32


class FullEmbedding(nn.Module):
    """One row per entity: the standard baseline."""

    def __init__(self, num_entities: int, dim: int, init_std: float = 0.1,
                 device: str | torch.device = "cpu") -> None:
        super().__init__()
        self.num_entities, self.dim = num_entities, dim
        self.weight = nn.Parameter(torch.randn(num_entities, dim, device=device) * init_std)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.weight[ids]

    def memory_bytes(self) -> int:
        return self.weight.numel() * self.weight.element_size()


class ClusteredEmbedding(nn.Module):
    """CEL table: ``M_max`` pre-allocated cluster rows, entity -> cluster assignment.

    The row gradient is divided by the cluster's member count (hook on ``weight``), so a big
    cluster does not take a step proportional to its size. ``num_active`` rows are in use;
    rows past it are the budget still free for splits. With ``enable_personal`` each entity
    also gets an own offset, pulled towards zero (i.e. towards its cluster row) by an L2 term.
    ``entity_bias``: each entity also owns one scalar added to the last column of its row
    (the models' bias column), so the bias is not quantised by the cluster. ``entity_scale``:
    each entity owns one scalar multiplying the other columns (its factor strength along the
    cluster's direction). One float per entity each, counted in ``memory_bytes``. Both off by
    default. ``extra_rows`` (k): each entity also adds ``sum_j scale2[:, j] * row[assignment2[:,
    j]]`` (factor columns only), k more cluster rows with own weights, so the table codes an
    entity as a (k+1)-sparse combination of the shared rows (k more small integers and k
    floats per entity, counted); the weights start at 0 (no effect until rows are chosen).
    """

    def __init__(self, num_entities: int, dim: int, max_clusters: int,
                 init_std: float = 0.1, average_gradients: bool = True,
                 device: str | torch.device = "cpu", entity_bias: bool = False,
                 entity_scale: bool = False, extra_rows: int = 0) -> None:
        super().__init__()
        self.num_entities, self.dim, self.max_clusters = num_entities, dim, max_clusters
        self.weight = nn.Parameter(torch.randn(max_clusters, dim, device=device) * init_std)
        self.register_buffer("assignment", torch.zeros(
            num_entities, dtype=assignment_dtype(max_clusters), device=device))
        self.register_buffer("counts", torch.zeros(max_clusters, dtype=torch.long, device=device))
        self.counts[0] = num_entities
        self.num_active = 1
        self.personal: nn.Parameter | None = None
        self.bias: nn.Parameter | None = None
        self.scale: nn.Parameter | None = None
        if entity_bias:
            self.bias = nn.Parameter(torch.zeros(num_entities, device=device))
        if entity_scale:
            self.scale = nn.Parameter(torch.ones(num_entities, device=device))
        self.scale2: nn.Parameter | None = None
        self.extra_rows = extra_rows
        if extra_rows > 0:
            self.register_buffer("assignment2", torch.zeros(
                num_entities, extra_rows, dtype=self.assignment.dtype, device=device))
            self.scale2 = nn.Parameter(torch.zeros(num_entities, extra_rows, device=device))
        else:
            self.assignment2 = None
        if average_gradients:
            self.weight.register_hook(self._average)

    def _average(self, grad: torch.Tensor) -> torch.Tensor:
        return grad / self.counts.clamp(min=1).to(grad.dtype).unsqueeze(1)

    def clusters_of(self, ids: torch.Tensor) -> torch.Tensor:
        return self.assignment[ids].long()

    def offset(self, ids: torch.Tensor) -> torch.Tensor | None:
        """What the entities ``ids`` add to whichever cluster row they use (None: nothing)."""
        out = self.personal[ids] if self.personal is not None else None
        if self.bias is not None:
            own = F.pad(self.bias[ids].unsqueeze(1), (self.dim - 1, 0))
            out = own if out is None else out + own
        if self.scale2 is not None:
            rows = self.weight[self.assignment2[ids].long(), :-1] * self.scale2[ids].unsqueeze(2)
            second = F.pad(rows.sum(dim=1), (0, 1))
            out = second if out is None else out + second
        return out

    def own_state(self, ids: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """``(factor, offset)`` with which the entities ``ids`` use any cluster row: the row
        is ``row * factor + offset`` (None: identity). ``factor`` is the own scale on every
        column but the last (the bias column)."""
        factor = None
        if self.scale is not None:
            factor = F.pad(self.scale[ids].unsqueeze(1), (0, 1), value=1.0)
            factor = torch.cat([factor[:, :1].expand(-1, self.dim - 1), factor[:, 1:]], dim=1)
        return factor, self.offset(ids)

    def personalise(self, rows: torch.Tensor, ids: torch.Tensor,
                    state: tuple[torch.Tensor | None, torch.Tensor | None] | None = None
                    ) -> torch.Tensor:
        """Cluster rows ``rows`` as the entities ``ids`` use them (own scale, bias, vector);
        ``state``: ``own_state(ids)`` when already computed."""
        factor, extra = self.own_state(ids) if state is None else state
        if factor is not None and extra is not None:
            return torch.addcmul(extra, rows, factor)
        if factor is not None:
            return rows * factor
        return rows if extra is None else rows + extra

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.personalise(self.weight[self.clusters_of(ids)], ids)

    def assign(self, assignment: torch.Tensor) -> None:
        """Replace the whole assignment (dense ids -> cluster ids) and refresh the counts."""
        self.assignment.copy_(assignment.to(self.assignment.dtype))
        self.recount()

    def recount(self) -> None:
        self.counts.copy_(torch.bincount(self.assignment.long(), minlength=self.max_clusters))

    def enable_personal(self) -> None:
        """Start the personalisation phase: own offsets, initialised at the cluster row."""
        self.personal = nn.Parameter(torch.zeros(self.num_entities, self.dim,
                                                 device=self.weight.device))

    def personal_penalty(self, ids: torch.Tensor) -> torch.Tensor:
        if self.personal is None:
            return self.weight.new_zeros(())
        return self.personal[ids].pow(2).sum(dim=1).mean()

    def memory_bytes(self) -> int:
        size = self.weight.numel() * self.weight.element_size()
        size += self.assignment.numel() * self.assignment.element_size()
        if self.assignment2 is not None:
            size += self.assignment2.numel() * self.assignment2.element_size()
        for own in (self.personal, self.bias, self.scale, self.scale2):
            if own is not None:
                size += own.numel() * own.element_size()
        return size

    def table_bytes(self) -> int:
        """The embedding table alone (cluster rows), without per-entity state."""
        return self.weight.numel() * self.weight.element_size()


ModelState = tuple[dict[str, torch.Tensor], dict[str, int]]


def snapshot(module: nn.Module) -> ModelState:
    """A copy of ``module``'s weights and buffers plus each clustered table's live cluster
    count (a plain attribute, not in the state dict), for ``restore``."""
    tables = {n: m.num_active for n, m in module.named_modules()
              if isinstance(m, ClusteredEmbedding)}
    return {k: v.detach().clone() for k, v in module.state_dict().items()}, tables


def restore(module: nn.Module, state: ModelState) -> None:
    params, tables = state
    module.load_state_dict(params)
    for n, m in module.named_modules():
        if n in tables:
            m.num_active = tables[n]


def entity_table(kind: str, num_entities: int, dim: int, max_clusters: int,
                 init_std: float, device: str | torch.device = "auto") -> nn.Module:
    """A ``"cel"`` (clustered) or ``"full"`` table, for models that offer both."""
    if kind == "cel":
        return ClusteredEmbedding(num_entities, dim, max_clusters, init_std, device=device)
    return FullEmbedding(num_entities, dim, init_std, device)
