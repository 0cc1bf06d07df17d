"""Build a recommender for a method name, with the compressed methods at equal memory."""

from __future__ import annotations

import torch
from torch import nn

from cel.baselines import DoubleHashEmbedding, HashEmbedding, rows_for_budget
from cel.models import build_model
from cel.recommender import Recommender
from cel.tables import ClusteredEmbedding, FullEmbedding, assignment_dtype, resolve_device

METHODS = ("full", "hash", "dhash", "cel")
SIDES = ("item", "user", "both")


def cel_bytes(num_entities: int, width: int, clusters: int, entity_bias: bool = False,
              entity_scale: bool = False, extra_rows: int = 0) -> int:
    """Memory of a clustered table: M rows + one small integer (+ own scalars) per entity;
    ``extra_rows`` (k): k more small integers and k more floats per entity."""
    size = torch.empty((), dtype=assignment_dtype(clusters)).element_size()
    size *= 1 + extra_rows
    size += 4 * (int(entity_bias) + int(entity_scale) + extra_rows)
    return clusters * width * 4 + num_entities * size


def make_table(method: str, num_entities: int, width: int, clusters: int,
               device: torch.device, init_std: float = 0.1, entity_bias: bool = False,
               entity_scale: bool = False, extra_rows: int = 0) -> nn.Module:
    """One side's table; ``hash``/``dhash`` get the memory CEL would use with ``clusters``.

    ``entity_bias``/``entity_scale``: cel tables get an own (unclustered) bias / scale per
    entity, and ``hash``/``dhash`` the memory that costs as extra rows (equal memory); the
    same for ``extra_rows`` (more weighted cluster rows per entity)."""
    if method == "full":
        return FullEmbedding(num_entities, width, init_std, device)
    if method == "cel":
        return ClusteredEmbedding(num_entities, width, clusters, init_std, device=device,
                                  entity_bias=entity_bias, entity_scale=entity_scale,
                                  extra_rows=extra_rows)
    budget = cel_bytes(num_entities, width, clusters, entity_bias, entity_scale, extra_rows)
    rows = rows_for_budget(budget, width)
    if method == "hash":
        return HashEmbedding(num_entities, width, rows, init_std, device)
    if method == "dhash":
        return DoubleHashEmbedding(num_entities, width, rows, init_std, device)
    raise ValueError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")


def make_recommender(method: str, num_users: int, num_items: int, model: str = "mf",
                     dim: int = 64, side: str = "item", clusters: int = 50,
                     task: str = "rating", device: str | torch.device = "auto",
                     context_cardinalities: tuple[int, ...] = (), init_std: float = 0.1,
                     seed: int = 0, entity_bias: bool = False, entity_scale: bool = False,
                     extra_rows: int = 0) -> Recommender:
    """``method`` applies to ``side`` ("item", "user" or "both"); the other side is full.

    ``entity_bias``/``entity_scale``: clustered tables keep an own bias / scale per entity
    (see ``ClusteredEmbedding``); ``extra_rows``: more weighted cluster rows per entity.
    """
    if side not in SIDES:
        raise ValueError(f"unknown side {side!r}")
    dev = resolve_device(device)
    torch.manual_seed(seed)
    interaction = build_model(model, dim, context_cardinalities).to(dev)
    width = interaction.embedding_dim
    user_kind = method if side in ("user", "both") else "full"
    item_kind = method if side in ("item", "both") else "full"
    own = {"entity_bias": entity_bias, "entity_scale": entity_scale, "extra_rows": extra_rows}
    users = make_table(user_kind, num_users, width, clusters, dev, init_std, **own)
    items = make_table(item_kind, num_items, width, clusters, dev, init_std, **own)
    return Recommender(users, items, interaction, task)


def full_bytes(num_users: int, num_items: int, width: int, side: str) -> int:
    """Memory of full tables for the compressed side(s): the compression-ratio reference."""
    n = {"item": num_items, "user": num_users, "both": num_users + num_items}[side]
    return n * width * 4
