"""SAML: scenario-aware mutual learning for multi-scenario CTR, on CEL tables.

Layout (our reconstruction of the ICDM-W 2020 abstract, see docs/saml-dupn.md):
- representation: global user/item tables (CEL) for every sample, rows [embedding, bias]
  (first-order terms as in DeepFM), plus one small cluster table per scenario branch that
  reuses the global assignment (memory K·M·d, not K·N·d); plain embeddings for small
  context fields and for the scenario itself (global fields: without the scenario as a
  field the shared part cannot tell the scenarios' base rates apart and overfits early);
- behaviour attention: target-item attention over the user's recent items, one bilinear
  score on global embeddings and one per branch on that branch's scenario embeddings; the
  values are the global embeddings of the history items in both;
- auxiliary network: an MLP on the global representation with its own log loss on every
  sample; hidden layer l of it is an input of layer l + 1 of every branch;
- interactions: an MLP alone learns a user x item product poorly, so the auxiliary logit
  has an FM term over the global fields and each branch the product of its scenario
  embeddings; a scenario embedding is ``e + P_k e + row_k`` (a per-branch linear map of the
  global embedding, the scenario-specific subspace, plus the scenario cluster row), with
  ``P_k`` and the rows starting at zero;
- branches: one MLP per scenario on [global representation, that scenario's
  representation]. A branch's output is a deviation added to the auxiliary logit (its
  head starts near zero), so a starved scenario starts as the shared model and only
  learns where its own data disagree.
  Every sample runs through every branch, but a branch only learns from its own
  scenario's samples: the others see a detached copy of its states (stop-gradient);
- mutual unit: cosine similarity (plus a learned per-pair bias) between the sample's own
  branch state and each other branch, softmax over the others, a sigmoid gate on
  [own, mix], and ``own + gate * mix`` goes into the own branch's output layer.

A scenario without a branch (beyond ``max_branches``) is scored by the auxiliary network.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from cel.tables import ClusteredEmbedding, entity_table


@dataclass
class SAMLConfig:
    num_users: int
    num_items: int
    dim: int = 16
    user_clusters: int = 64
    item_clusters: int = 64
    table: str = "cel"  # "cel" (clustered, scenario tables share the assignment) or "full"
    num_scenarios: int = 1  # scenarios 0..num_scenarios-1 get a branch at construction
    max_branches: int = 8
    hidden: tuple[int, ...] = (64, 32)
    context_cardinalities: tuple[int, ...] = ()
    use_history: bool = True
    aux_weight: float = 1.0
    init_std: float = 0.1
    scenario_init_std: float = 0.0  # scenario rows start at zero: no deviation yet
    scenario_field: bool = True  # the scenario (branch slot) is also a global field
    # per-branch scenario rows; with full tables they are per entity and memorise a small
    # scenario's samples, so False keeps only the per-branch maps P_k (rows stay zero)
    scenario_rows: bool = True
    rows_in_product: bool = False  # scenario rows also enter the branch's u_k.i_k
    head_init_std: float = 0.01  # branch heads start near zero: a branch starts as aux

    def __post_init__(self) -> None:
        if self.table not in ("cel", "full"):
            raise ValueError(f"table must be 'cel' or 'full', got {self.table!r}")
        if not 0 < self.num_scenarios <= self.max_branches:
            raise ValueError("need 0 < num_scenarios <= max_branches")
        if not self.hidden:
            raise ValueError("hidden needs at least one layer")


class SAMLOutput(NamedTuple):
    logit: torch.Tensor  # (B,) the sample's own-scenario output (aux output without a branch)
    aux_logit: torch.Tensor  # (B,) auxiliary network
    has_branch: torch.Tensor  # (B,) bool


class ScenarioTable(nn.Module):
    """One cluster table per branch over the global table's assignment.

    Separate parameters per branch, so a branch that saw no sample in a step has no gradient
    and an optimiser leaves it untouched. With a full global table the rows are per entity.
    """

    def __init__(self, global_table: nn.Module, branches: int, init_std: float) -> None:
        super().__init__()
        self.global_table = [global_table]  # a list: not registered twice as a submodule
        clustered = isinstance(global_table, ClusteredEmbedding)
        rows = global_table.max_clusters if clustered else global_table.num_entities
        dim, device = global_table.dim, global_table.weight.device
        self.weights = nn.ParameterList(
            nn.Parameter(torch.randn(rows, dim, device=device) * init_std)
            for _ in range(branches))
        if clustered:  # average member gradients per cluster, as the global table does
            for w in self.weights:
                w.register_hook(global_table._average)

    def rows_of(self, ids: torch.Tensor) -> torch.Tensor:
        table = self.global_table[0]
        return table.clusters_of(ids) if isinstance(table, ClusteredEmbedding) else ids

    def lookup(self, branch: int, ids: torch.Tensor) -> torch.Tensor:
        return self.weights[branch][self.rows_of(ids)]

    @torch.no_grad()
    def copy_row(self, parent: int, child: int) -> None:
        for w in self.weights:
            w[child] = w[parent]

    def memory_bytes(self, branches: int) -> int:
        return sum(w.numel() * w.element_size() for w in list(self.weights)[:branches])


def _split_bias(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Table rows are [embedding, bias]."""
    return rows[..., :-1], rows[..., -1]


def _masked_softmax(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Softmax over the last axis where ``mask``; exactly 0 elsewhere (all-0 rows stay 0)."""
    scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1).nan_to_num(0.0)
    return weights * mask


class Branch(nn.Module):
    """A scenario's MLP (layer l > 1 also reads the auxiliary layer l - 1), mutual unit, head."""

    def __init__(self, in_dim: int, hidden: tuple[int, ...], dim: int, max_branches: int
                 ) -> None:
        super().__init__()
        sizes = [in_dim, *hidden]
        self.layers = nn.ModuleList(
            nn.Linear(sizes[k] + (hidden[k - 1] if k else 0), sizes[k + 1])
            for k in range(len(hidden)))
        self.query = nn.Parameter(torch.eye(dim))  # scenario-side attention score
        self.pair_bias = nn.Parameter(torch.zeros(max_branches))
        self.gate = nn.Linear(2 * hidden[-1], hidden[-1])
        self.head = nn.Linear(2 * hidden[-1], 1)  # [mixed own state, aux state]
        # scenario-specific subspace: e_k = e + P_k e (+ the scenario row), P_k starts at 0
        self.user_map = nn.Linear(dim, dim, bias=False)
        self.item_map = nn.Linear(dim, dim, bias=False)
        for m in (self.user_map, self.item_map):
            nn.init.zeros_(m.weight)

    def forward(self, x: torch.Tensor, aux_states: list[torch.Tensor]) -> torch.Tensor:
        h = x
        for k, layer in enumerate(self.layers):
            h = F.relu(layer(h if k == 0 else torch.cat([h, aux_states[k - 1]], dim=1)))
        return h


class SAML(nn.Module):
    """``tables``: the global user and item tables of a trained shared model (its rows
    ``[embedding, bias]``, ``dim + 1`` wide) to build on instead of new ones; the caller
    then passes that model's logit as ``base`` (see ``forward``)."""

    def __init__(self, config: SAMLConfig, device: str | torch.device = "cpu",
                 tables: tuple[nn.Module, nn.Module] | None = None) -> None:
        super().__init__()
        self.config = cfg = config
        if tables is not None:
            self.user_table, self.item_table = tables
        else:
            self.user_table = self._table(cfg.num_users, cfg.user_clusters, device)
            self.item_table = self._table(cfg.num_items, cfg.item_clusters, device)
        self.user_scenario = ScenarioTable(self.user_table, cfg.max_branches,
                                           cfg.scenario_init_std)
        self.item_scenario = ScenarioTable(self.item_table, cfg.max_branches,
                                           cfg.scenario_init_std)
        if not cfg.scenario_rows:
            for w in [*self.user_scenario.weights, *self.item_scenario.weights]:
                w.requires_grad_(False)
        self.context = nn.ModuleList(nn.Embedding(c, cfg.dim) for c in cfg.context_cardinalities)
        for table in self.context:
            nn.init.normal_(table.weight, std=cfg.init_std)
        # slot embedding; row max_branches: scenarios without a branch
        self.scenario_field = (nn.Embedding(cfg.max_branches + 1, cfg.dim)
                               if cfg.scenario_field else None)
        if self.scenario_field is not None:
            nn.init.normal_(self.scenario_field.weight, std=cfg.init_std)
        self.global_query = nn.Parameter(torch.eye(cfg.dim))
        fields = (2 + int(cfg.scenario_field) + len(cfg.context_cardinalities)
                  + int(cfg.use_history))
        rep_dim = fields * cfg.dim  # global and scenario representations are equally wide
        sizes = [rep_dim, *cfg.hidden]
        self.aux_layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:],
                                                                          strict=True))
        self.aux_head = nn.Linear(cfg.hidden[-1], 1)
        # a branch reads [global representation, its scenario representation]
        self.branches = nn.ModuleList(Branch(2 * rep_dim, cfg.hidden, cfg.dim, cfg.max_branches)
                                      for _ in range(cfg.max_branches))
        for branch in self.branches:
            nn.init.normal_(branch.head.weight, std=cfg.head_init_std)
            nn.init.zeros_(branch.head.bias)
        self.num_branches = cfg.num_scenarios
        # external scenario id -> branch slot (-1: none); grows with add_scenario
        self.register_buffer("slot_of", torch.arange(cfg.num_scenarios, device=device))
        self.to(device)

    def _table(self, n: int, clusters: int, device: str | torch.device) -> nn.Module:
        cfg = self.config
        # one extra column: the entity's (cluster's) first-order bias, as in DeepFM
        return entity_table(cfg.table, n, cfg.dim + 1, clusters, cfg.init_std, device)

    # -- scenarios -------------------------------------------------------------------
    def add_scenario(self, scenario: int) -> bool:
        """Give ``scenario`` its own branch; False when it has one or the budget is spent
        (it then keeps sharing the auxiliary network)."""
        if scenario < len(self.slot_of) and int(self.slot_of[scenario]) >= 0:
            return False
        if self.num_branches >= self.config.max_branches:
            return False
        if scenario >= len(self.slot_of):
            grown = torch.full((scenario + 1,), -1, dtype=torch.long, device=self.slot_of.device)
            grown[:len(self.slot_of)] = self.slot_of
            self.slot_of = grown
        self.slot_of[scenario] = self.num_branches
        self.num_branches += 1
        return True

    def slots(self, scenarios: torch.Tensor) -> torch.Tensor:
        inside = (scenarios >= 0) & (scenarios < len(self.slot_of))
        return torch.where(inside, self.slot_of[scenarios.clamp(0, len(self.slot_of) - 1)], -1)

    def on_split(self, side: str, parent: int, child: int) -> None:
        """A global cluster split: scenario tables copy the parent's row (shared assignment)."""
        (self.user_scenario if side == "user" else self.item_scenario).copy_row(parent, child)

    # -- forward ---------------------------------------------------------------------
    def _attend(self, query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
                weight: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Target attention; keys/values/mask with batch 1 are one history shared by every
        query (serving: one user's candidates), looked up once instead of once per query."""
        q = query @ weight
        scale = keys.shape[-1] ** 0.5
        if keys.shape[0] == 1 and len(q) != 1:
            weights = _masked_softmax(q @ keys[0].T / scale, mask.expand(len(q), -1))
            return weights @ values[0]
        scores = torch.einsum("be,ble->bl", q, keys) / scale
        return torch.einsum("bl,bld->bd", _masked_softmax(scores, mask), values)

    def forward(self, users: torch.Tensor, items: torch.Tensor, scenarios: torch.Tensor,
                context: torch.Tensor | None = None, history: torch.Tensor | None = None,
                history_mask: torch.Tensor | None = None, branches: bool = True,
                base: torch.Tensor | None = None) -> SAMLOutput:
        """``history``: (B, L) item ids of the user's recent items, ``history_mask`` (B, L)
        True at real steps (padding ids may be any valid id); (1, L) for both: one history
        shared by the whole batch. ``branches=False``: the
        auxiliary network alone (``logit`` is the auxiliary logit), e.g. to score the global
        assignment cheaply. ``base``: (B,) logits of a trained shared model; the auxiliary
        logit is then that logit plus the auxiliary network's deviation (after
        ``start_from_base`` every deviation starts at exactly zero: SAML starts as the
        shared model)."""
        cfg = self.config
        (u, ub), (i, ib) = _split_bias(self.user_table(users)), _split_bias(self.item_table(items))
        ctx = [table(context[:, k]) for k, table in enumerate(self.context)]
        slot = self.slots(scenarios)
        if self.scenario_field is not None:
            ctx.insert(0, self.scenario_field(slot.masked_fill(slot < 0, cfg.max_branches)))
        use_history = cfg.use_history
        if use_history:
            if history is None:
                history = items.new_zeros(len(items), 1)
                history_mask = torch.zeros_like(history, dtype=torch.bool)
            elif history_mask is None:
                history_mask = torch.ones_like(history, dtype=torch.bool)
            keys = self.item_table(history)[..., :-1]
            pooled = self._attend(i, keys, keys, self.global_query, history_mask)
        global_rep = torch.cat([u, i, *ctx] + ([pooled] if use_history else []), dim=1)
        aux_states, h = [], global_rep
        for layer in self.aux_layers:
            h = F.relu(layer(h))
            aux_states.append(h)
        fields = torch.stack([u, i, *ctx], dim=1)  # FM second order over the global fields
        fm = 0.5 * (fields.sum(dim=1).pow(2) - fields.pow(2).sum(dim=1)).sum(dim=1)
        if base is not None:  # the shared model already has its FM and first-order terms
            aux_logit = base + self.aux_head(h).squeeze(1)
        else:
            aux_logit = self.aux_head(h).squeeze(1) + fm + ub + ib

        states, deltas = [], []
        for k in range(self.num_branches if branches else 0):
            own = slot == k
            # a branch with no sample of its own in the batch runs without a graph, so its
            # parameters get no gradient at all (a zero gradient would still move Adam)
            with torch.set_grad_enabled(torch.is_grad_enabled() and bool(own.any())):
                state, delta = self._branch_state(k, users, items, u, i, ctx, history,
                                                  history_mask, keys if use_history else None,
                                                  global_rep, aux_states)
            if state.requires_grad:
                state = torch.where(own.unsqueeze(1), state, state.detach())  # stop-gradient
            states.append(state)
            deltas.append(delta)  # only ever read at the branch's own samples
        logit = aux_logit
        if not branches:
            return SAMLOutput(logit, aux_logit, torch.zeros_like(slot, dtype=torch.bool))
        if states:
            own_out = self._mutual(states, slot, h, torch.stack(deltas, dim=1))
            logit = torch.where(slot >= 0, aux_logit + own_out, aux_logit)
        return SAMLOutput(logit, aux_logit, slot >= 0)

    def _branch_state(self, k: int, users: torch.Tensor, items: torch.Tensor,
                      u: torch.Tensor, i: torch.Tensor, ctx: list[torch.Tensor],
                      history: torch.Tensor | None, history_mask: torch.Tensor | None,
                      keys: torch.Tensor | None, global_rep: torch.Tensor,
                      aux_states: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Branch k's last hidden state and its interaction deviation u_k.i_k - u.i."""
        branch = self.branches[k]
        si = self.item_scenario.lookup(k, items)
        su, su_b = _split_bias(self.user_scenario.lookup(k, users))
        si, si_b = _split_bias(si)
        uk, ik = u + branch.user_map(u), i + branch.item_map(i)
        if self.config.rows_in_product:
            uk, ik = uk + su, ik + si
        parts = [global_rep, su, si, *ctx]
        if keys is not None:
            skeys = self.item_scenario.lookup(k, history)[..., :-1]
            parts.append(self._attend(si, skeys, keys, branch.query, history_mask))
        delta = (uk * ik).sum(dim=1) - (u * i).sum(dim=1)
        if self.config.rows_in_product:
            delta = delta + su_b + si_b
        return branch(torch.cat(parts, dim=1), aux_states), delta

    def _mutual(self, states: list[torch.Tensor], slot: torch.Tensor, aux_state: torch.Tensor,
                deltas: torch.Tensor) -> torch.Tensor:
        """Own-branch deviation from the auxiliary logit, after mixing in the similar other
        branches (per sample); ``deltas`` (B, K) are the branches' interaction deviations."""
        stacked = torch.stack(states, dim=1)  # (B, K, H)
        k = stacked.shape[1]
        out = stacked.new_zeros(len(slot))
        for j in range(k):  # each branch's own similarity bias, gate and head, own samples
            rows = (slot == j).nonzero().flatten()
            if len(rows) == 0:
                continue
            branch = self.branches[j]
            group = stacked[rows]  # (b, K, H)
            own = group[:, j]
            sim = F.cosine_similarity(own.unsqueeze(1), group, dim=2) + branch.pair_bias[:k]
            others = torch.arange(k, device=slot.device) != j
            alpha = _masked_softmax(sim, others.expand_as(sim))
            mix = torch.einsum("bk,bkh->bh", alpha, group)
            gate = torch.sigmoid(branch.gate(torch.cat([own, mix], dim=1)))
            mixed = own + gate * mix
            out[rows] = (branch.head(torch.cat([mixed, aux_state[rows]], dim=1)).squeeze(1)
                         + deltas[rows, j])
        return out

    @torch.no_grad()
    def start_from_base(self) -> None:
        """Zero the auxiliary and branch heads: with a ``base`` logit the model's output is
        exactly the shared model's until training moves them."""
        for head in [self.aux_head, *(b.head for b in self.branches)]:
            head.weight.zero_()
            head.bias.zero_()

    # -- training helpers --------------------------------------------------------------
    def loss(self, out: SAMLOutput, labels: torch.Tensor) -> torch.Tensor:
        """Own-scenario log loss + aux_weight × auxiliary log loss (means over the batch)."""
        main = F.binary_cross_entropy_with_logits(out.logit, labels)
        aux = F.binary_cross_entropy_with_logits(out.aux_logit, labels)
        return main + self.config.aux_weight * aux

    @torch.no_grad()
    def predict(self, *args: torch.Tensor | None, **kwargs: torch.Tensor | None) -> torch.Tensor:
        return torch.sigmoid(self(*args, **kwargs).logit)

    def clustered_tables(self) -> dict[str, ClusteredEmbedding]:
        return {side: t for side, t in (("user", self.user_table), ("item", self.item_table))
                if isinstance(t, ClusteredEmbedding)}

    def memory_bytes(self) -> int:
        """Embedding memory: global tables + assignments + the active scenario tables."""
        size = self.user_table.memory_bytes() + self.item_table.memory_bytes()
        if not self.config.scenario_rows:
            return int(size)
        return int(size + self.user_scenario.memory_bytes(self.num_branches)
                   + self.item_scenario.memory_bytes(self.num_branches))
