"""Interaction models that sit on any embedding table.

Each model takes the user and item embeddings (``(B, dim + 1)``: the last column is the
entity's bias, so with a clustered table the bias is the cluster's) plus optional context
ids, and returns a raw score: a rating, or a logit for binary events (``predict`` in
``cel.offline`` applies the sigmoid). ``embedding_dim`` says how wide the tables must be.
"""

from __future__ import annotations

import torch
from torch import nn


def _mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:], strict=True):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


class InteractionModel(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.embedding_dim = dim + 1
        self.global_bias = nn.Parameter(torch.zeros(()))

    def biases(self, u: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
        return u[:, -1] + i[:, -1] + self.global_bias

    def interact(self, u: torch.Tensor, i: torch.Tensor,
                 context: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, u: torch.Tensor, i: torch.Tensor,
                context: torch.Tensor | None = None) -> torch.Tensor:
        return self.biases(u, i) + self.interact(u[:, :-1], i[:, :-1], context)


class MF(InteractionModel):
    """Biased dot-product matrix factorisation; ``nonnegative`` gives NMF (factors |w|)."""

    def __init__(self, dim: int, nonnegative: bool = False) -> None:
        super().__init__(dim)
        self.nonnegative = nonnegative

    def interact(self, u, i, context):
        if self.nonnegative:
            u, i = u.abs(), i.abs()
        return (u * i).sum(dim=1)


class TwoTowerMLP(InteractionModel):
    """Each side through its own MLP, then a dot product."""

    def __init__(self, dim: int, hidden: int = 64) -> None:
        super().__init__(dim)
        self.user_tower = _mlp([dim, hidden, dim])
        self.item_tower = _mlp([dim, hidden, dim])

    def interact(self, u, i, context):
        return (self.user_tower(u) * self.item_tower(i)).sum(dim=1)


class NeuMF(InteractionModel):
    """GMF (element-wise product) and an MLP over the concatenation, mixed by a linear head."""

    def __init__(self, dim: int, hidden: int = 64) -> None:
        super().__init__(dim)
        self.mlp = nn.Sequential(_mlp([2 * dim, hidden, hidden // 2]), nn.ReLU())
        self.head = nn.Linear(dim + hidden // 2, 1)

    def interact(self, u, i, context):
        mixed = torch.cat([u * i, self.mlp(torch.cat([u, i], dim=1))], dim=1)
        return self.head(mixed).squeeze(1)


class DeepFM(InteractionModel):
    """CTR model over user, item and context fields: FM second order + deep MLP.

    ``context_cardinalities`` lists the size of each categorical context field; the context
    embeddings are small full tables owned by the model.
    """

    def __init__(self, dim: int, context_cardinalities: tuple[int, ...] = (),
                 hidden: int = 64) -> None:
        super().__init__(dim)
        self.context = nn.ModuleList(nn.Embedding(c, dim) for c in context_cardinalities)
        self.context_linear = nn.ModuleList(nn.Embedding(c, 1) for c in context_cardinalities)
        for table in self.context:
            nn.init.normal_(table.weight, std=0.1)
        for table in self.context_linear:
            nn.init.zeros_(table.weight)
        fields = 2 + len(context_cardinalities)
        self.deep = _mlp([fields * dim, hidden, hidden // 2, 1])

    def interact(self, u, i, context):
        fields = [u, i]
        linear = u.new_zeros(u.shape[0])
        for k, (table, lin) in enumerate(zip(self.context, self.context_linear, strict=True)):
            if context is None:
                raise ValueError("DeepFM built with context fields needs context ids")
            fields.append(table(context[:, k]))
            linear = linear + lin(context[:, k]).squeeze(1)
        stacked = torch.stack(fields, dim=1)
        fm = 0.5 * (stacked.sum(dim=1).pow(2) - stacked.pow(2).sum(dim=1)).sum(dim=1)
        deep = self.deep(stacked.flatten(1)).squeeze(1)
        return linear + fm + deep


MODELS = ("mf", "nmf", "mlp", "neumf", "deepfm")


def build_model(name: str, dim: int, context_cardinalities: tuple[int, ...] = ()
                ) -> InteractionModel:
    if name == "mf":
        return MF(dim)
    if name == "nmf":
        return MF(dim, nonnegative=True)
    if name == "mlp":
        return TwoTowerMLP(dim)
    if name == "neumf":
        return NeuMF(dim)
    if name == "deepfm":
        return DeepFM(dim, context_cardinalities)
    raise ValueError(f"unknown model {name!r}; choose from {', '.join(MODELS)}")
