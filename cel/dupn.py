"""DUPN: Deep User Perception Network (KDD 2018) on a CEL item table.

- a user is their last N behaviours: the item part (the item's row of the item table) is the
  input of a property-gated LSTM; the property part (behaviour type, scenario, time-gap
  bucket embeddings) enters only the input, forget and output gates, never the candidate;
- attention pooling over time: an MLP over [hidden state, step properties, request context]
  and a softmax over the real (non-padding) steps only;
- user representation = [pooled, user profile (the user's CEL row, when there is a user
  table)], computed once per request (``user_representation``); the shallow heads run per
  candidate (``score_candidates``): CTR, conversion (purchase after click) and price level.

The candidate item is encoded from the same item table as the sequence, so an item's cluster
row learns from every position it occurs in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from cel.tables import ClusteredEmbedding, entity_table


@dataclass
class DUPNConfig:
    num_items: int
    num_users: int = 0  # 0: no user-id row in the profile (sequence only)
    item_dim: int = 32
    item_clusters: int = 256
    user_clusters: int = 256
    table: str = "cel"  # "cel" or "full"
    behaviour_types: int = 8
    scenarios: int = 1
    time_buckets: int = 16
    property_dim: int = 8  # per property field
    hidden: int = 64  # LSTM units (the paper: 128)
    attention_hidden: tuple[int, ...] = (64, 32)  # the paper: 128 -> 64 -> 1 style
    context_cardinalities: tuple[int, ...] = ()  # request context fields
    item_encoding: int = 32
    head_hidden: tuple[int, ...] = (64, 64)
    price_levels: int = 7
    num_categories: int = 0  # > 0: the item part also has a (plain) category embedding
    category_dim: int = 16
    init_std: float = 0.1
    # shallow terms next to the MLP heads (an MLP learns products and biases slowly):
    # a linear item term (popularity) and a dot product of the projected representation
    # with the item encoding, in the CTR and conversion logits
    wide: bool = True
    # a first-order item term in the CTR logit, as DeepFM's bias column: the item table is
    # one column wider and that column (for a CEL table the cluster's value plus the item's
    # own float, ``ClusteredEmbedding(entity_bias=True)``) is added to the CTR logit of the
    # candidate; it is not part of the item's encoding (sequence steps, heads). Off by default
    item_bias: bool = False

    def __post_init__(self) -> None:
        if self.table not in ("cel", "full"):
            raise ValueError(f"table must be 'cel' or 'full', got {self.table!r}")


class Sequence(NamedTuple):
    """A batch of behaviour sequences, (B, T) each; ``mask`` is True at real steps."""

    items: torch.Tensor
    behaviours: torch.Tensor
    scenarios: torch.Tensor
    gaps: torch.Tensor  # time-gap bucket ids (see ``gap_buckets``)
    mask: torch.Tensor
    categories: torch.Tensor | None = None  # item categories, when the model has them


def gap_buckets(seconds: torch.Tensor, buckets: int) -> torch.Tensor:
    """Log2 buckets of a time gap in seconds: 0 for under 1 s, then one per doubling."""
    b = torch.floor(torch.log2(seconds.clamp(min=0).double() + 1.0)).long()
    return b.clamp(0, buckets - 1)


def masked_softmax(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Softmax over the last axis where ``mask``; exactly 0 elsewhere (all-padding rows: 0)."""
    weights = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1).nan_to_num(0.0)
    return weights * mask


def _mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:], strict=True):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


class PropertyGatedLSTM(nn.Module):
    """LSTM whose gates (not the candidate) also read a per-step property vector.

    With x_t the item part, p_t the properties and gate order [i, f, o, g]:
    ``i, f, o = σ(W_x x_t + W_p p_t + W_h h_{t-1} + b)``, ``g = tanh(W_x x_t + W_h h + b)``,
    ``c_t = f·c_{t-1} + i·g``, ``h_t = o·tanh(c_t)``. A padding step keeps (h, c).
    """

    def __init__(self, input_size: int, property_size: int, hidden: int) -> None:
        super().__init__()
        self.hidden = hidden
        self.input_proj = nn.Linear(input_size, 4 * hidden)
        self.property_proj = nn.Linear(property_size, 3 * hidden, bias=False)
        self.recurrent = nn.Linear(hidden, 4 * hidden, bias=False)

    def forward(self, x: torch.Tensor, props: torch.Tensor, mask: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, I), (B, T, P), (B, T) -> hidden states (B, T, H) (0 at padding), last h."""
        b, t, _ = x.shape
        h3 = 3 * self.hidden
        gates_in = self.property_proj(props)  # all steps at once, outside the loop
        pre = self.input_proj(x) + F.pad(gates_in, (0, self.hidden))
        h = x.new_zeros(b, self.hidden)
        c = x.new_zeros(b, self.hidden)
        outputs = []
        # unbind once: indexing pre[:, step] in the loop makes each step's backward write a
        # full-size gradient of pre, so the backward pass grew with the square of T
        steps, masks = pre.unbind(1), mask.unbind(1)
        for step in range(t):
            z = steps[step] + self.recurrent(h)
            i, f, o = torch.sigmoid(z[:, :h3]).chunk(3, dim=1)
            g = torch.tanh(z[:, h3:])
            c_new = f * c + i * g
            h_new = o * torch.tanh(c_new)
            m = masks[step].unsqueeze(1)
            c = torch.where(m, c_new, c)
            h = torch.where(m, h_new, h)
            outputs.append(h_new * m)
        if not outputs:
            return x.new_zeros(b, 0, self.hidden), h
        return torch.stack(outputs, dim=1), h


class TaskLogits(NamedTuple):
    ctr: torch.Tensor  # (B, C) click logit per candidate
    cvr: torch.Tensor  # (B, C) purchase-after-click logit per candidate


class DUPN(nn.Module):
    def __init__(self, config: DUPNConfig, device: str | torch.device = "cpu") -> None:
        super().__init__()
        self.config = cfg = config
        self.item_table = self._table(cfg.num_items, cfg.item_clusters, device,
                                      cfg.item_bias)
        self.user_table = (self._table(cfg.num_users, cfg.user_clusters, device)
                           if cfg.num_users > 0 else None)
        pd = cfg.property_dim
        self.behaviour = nn.Embedding(cfg.behaviour_types, pd)
        self.scenario = nn.Embedding(cfg.scenarios, pd)
        self.time_gap = nn.Embedding(cfg.time_buckets, pd)
        self.context = nn.ModuleList(nn.Embedding(c, pd) for c in cfg.context_cardinalities)
        self.category = (nn.Embedding(cfg.num_categories, cfg.category_dim)
                         if cfg.num_categories > 0 else None)
        item_part = cfg.item_dim + (cfg.category_dim if self.category is not None else 0)
        self.lstm = PropertyGatedLSTM(item_part, 3 * pd, cfg.hidden)
        context_dim = len(cfg.context_cardinalities) * pd
        self.attention = _mlp([cfg.hidden + 3 * pd + context_dim, *cfg.attention_hidden, 1])
        self.rep_dim = cfg.hidden + (cfg.item_dim if self.user_table is not None else 0)
        self.item_encoder = nn.Linear(item_part, cfg.item_encoding)
        head_in = self.rep_dim + cfg.item_encoding
        self.ctr_head = _mlp([head_in, *cfg.head_hidden, 1])
        self.cvr_head = _mlp([head_in, *cfg.head_hidden, 1])
        self.price_head = nn.Linear(self.rep_dim, cfg.price_levels)
        self.wide = None
        if cfg.wide:  # outputs [ctr, cvr]; start at zero so the MLP heads start as before
            self.wide = nn.ModuleDict({"item": nn.Linear(item_part, 2, bias=False),
                                       "user": nn.Linear(self.rep_dim, 2 * cfg.item_encoding,
                                                         bias=False)})
            for m in self.wide.values():
                nn.init.zeros_(m.weight)
        self.to(device)

    def _table(self, n: int, clusters: int, device: str | torch.device,
               bias: bool = False) -> nn.Module:
        cfg = self.config
        if bias and cfg.table == "cel":
            return ClusteredEmbedding(n, cfg.item_dim + 1, clusters, cfg.init_std,
                                      device=device, entity_bias=True)
        return entity_table(cfg.table, n, cfg.item_dim + int(bias), clusters, cfg.init_std,
                            device)

    def item_rows(self, items: torch.Tensor) -> torch.Tensor:
        """The item table's rows for ids of any shape (looked up flat: a table's own
        per-entity terms expect a 1-d batch of ids)."""
        rows = self.item_table(items.reshape(-1))
        return rows.view(*items.shape, rows.shape[-1])

    def item_part(self, items: torch.Tensor, categories: torch.Tensor | None,
                  rows: torch.Tensor | None = None) -> torch.Tensor:
        """The item's row of the (CEL) item table, with its category embedding if any
        (without the bias column, see ``item_bias``); ``rows``: the looked-up rows."""
        rows = self.item_rows(items) if rows is None else rows
        if self.config.item_bias:
            rows = rows[..., :-1]
        if self.category is None:
            return rows
        if categories is None:
            raise ValueError("this DUPN has item categories: pass them")
        return torch.cat([rows, self.category(categories)], dim=-1)

    def _sequence_part(self, seq: Sequence) -> torch.Tensor:
        """Item parts of the real steps only (zeros at padding): padding ids are not
        lookups, so they add no hits to a CEL table's split statistics."""
        cats = None if seq.categories is None else seq.categories[seq.mask]
        real = self.item_part(seq.items[seq.mask], cats)
        out = real.new_zeros(*seq.items.shape, real.shape[-1])
        out[seq.mask] = real
        return out

    def properties(self, seq: Sequence) -> torch.Tensor:
        return torch.cat([self.behaviour(seq.behaviours), self.scenario(seq.scenarios),
                          self.time_gap(seq.gaps)], dim=-1)

    def user_representation(self, seq: Sequence, users: torch.Tensor | None = None,
                            context: torch.Tensor | None = None,
                            return_attention: bool = False
                            ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """(B, rep_dim); once per request. An empty sequence pools to zeros (still valid)."""
        pooled, weights = self.pool_sequence(seq, context)
        rep = self.with_profile(pooled, users)
        return (rep, weights) if return_attention else rep

    def pool_sequence(self, seq: Sequence, context: torch.Tensor | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        """The sequence part of the representation: attention-pooled LSTM states (B, H)
        and the attention weights (B, T)."""
        props = self.properties(seq)
        states, _ = self.lstm(self._sequence_part(seq), props, seq.mask)
        parts = [states, props]
        if self.context:
            ctx = torch.cat([t(context[:, k]) for k, t in enumerate(self.context)], dim=1)
            parts.append(ctx.unsqueeze(1).expand(-1, states.shape[1], -1))
        scores = self.attention(torch.cat(parts, dim=-1)).squeeze(-1)
        weights = masked_softmax(scores, seq.mask)
        return torch.einsum("bt,bth->bh", weights, states), weights

    def with_profile(self, pooled: torch.Tensor, users: torch.Tensor | None) -> torch.Tensor:
        """[pooled, the user's row] (just ``pooled`` without a user table)."""
        if self.user_table is None:
            return pooled
        if users is None:
            raise ValueError("this DUPN has a user table: pass users")
        return torch.cat([pooled, self.user_table(users)], dim=1)

    def score_candidates(self, rep: torch.Tensor, items: torch.Tensor,
                         categories: torch.Tensor | None = None) -> TaskLogits:
        """``rep`` (B, R), ``items`` (B, C) -> per-candidate logits; the shallow part only."""
        rows = self.item_rows(items)
        part = self.item_part(items, categories, rows)
        enc = self.item_encoder(part)  # (B, C, E)
        joint = torch.cat([rep.unsqueeze(1).expand(-1, items.shape[1], -1), enc], dim=-1)
        ctr, cvr = self.ctr_head(joint).squeeze(-1), self.cvr_head(joint).squeeze(-1)
        if self.wide is not None:
            item_term = self.wide["item"](part)  # (B, C, 2)
            user = self.wide["user"](rep).view(len(rep), 2, -1)  # (B, 2, E)
            dot = torch.einsum("bke,bce->bck", user, enc)
            ctr = ctr + item_term[..., 0] + dot[..., 0]
            cvr = cvr + item_term[..., 1] + dot[..., 1]
        if self.config.item_bias:
            ctr = ctr + rows[..., -1]
        return TaskLogits(ctr, cvr)

    def price_logits(self, rep: torch.Tensor) -> torch.Tensor:
        return self.price_head(rep)

    def forward(self, seq: Sequence, items: torch.Tensor, users: torch.Tensor | None = None,
                context: torch.Tensor | None = None, categories: torch.Tensor | None = None
                ) -> tuple[TaskLogits, torch.Tensor]:
        """One candidate per example: (TaskLogits of shape (B,), price logits (B, P))."""
        return self.forward_pooled(self.pool_sequence(seq, context)[0], items, users,
                                   categories)

    def forward_pooled(self, pooled: torch.Tensor, items: torch.Tensor,
                       users: torch.Tensor | None = None,
                       categories: torch.Tensor | None = None
                       ) -> tuple[TaskLogits, torch.Tensor]:
        """``forward`` from an already pooled sequence part (``pool_sequence``): the
        candidate and the user row are looked up now, the sequence's item rows were then."""
        rep = self.with_profile(pooled, users)
        cats = None if categories is None else categories.unsqueeze(1)
        out = self.score_candidates(rep, items.unsqueeze(1), cats)
        return TaskLogits(out.ctr.squeeze(1), out.cvr.squeeze(1)), self.price_logits(rep)

    @staticmethod
    def loss(out: TaskLogits, price: torch.Tensor, click: torch.Tensor,
             purchase: torch.Tensor | None = None, price_level: torch.Tensor | None = None
             ) -> torch.Tensor:
        """Equal-weight sum of per-task means: CTR on all, conversion on clicked examples,
        price on examples with a price level (>= 0)."""
        loss = F.binary_cross_entropy_with_logits(out.ctr, click)
        clicked = click > 0.5
        if purchase is not None and bool(clicked.any()):
            loss = loss + F.binary_cross_entropy_with_logits(out.cvr[clicked], purchase[clicked])
        if price_level is not None:
            known = price_level >= 0
            if bool(known.any()):
                loss = loss + F.cross_entropy(price[known], price_level[known])
        return loss

    def clustered_tables(self) -> dict[str, ClusteredEmbedding]:
        return {side: t for side, t in (("user", self.user_table), ("item", self.item_table))
                if isinstance(t, ClusteredEmbedding)}

    def memory_bytes(self) -> int:
        size = self.item_table.memory_bytes()
        if self.user_table is not None:
            size += self.user_table.memory_bytes()
        return int(size)


def empty_sequence(batch: int, device: torch.device | str = "cpu") -> Sequence:
    """A batch of users with no behaviour yet (one padding step each)."""
    zeros = torch.zeros(batch, 1, dtype=torch.long, device=device)
    return Sequence(zeros, zeros, zeros, zeros, zeros.bool())

