"""SAML and DUPN networks as the streaming trainer publishes them and the service runs them.

Both sides build the network from one JSON-able *spec* (``network_spec``): the model's config
plus the vocabularies the trainer maps events with. The published weights are the network's
``state_dict`` without the entity-sized assignment arrays (those travel as
``{side}.assign`` / deltas). To score, the service gives each request its own tiny
assignment: the CEL tables are pointed at the rows the request needs (candidate item rows,
the sequence's item rows, the user's row) and looked up with ``arange`` ids, so the served
network never holds per-entity state and an unknown id is simply a cold-start row.

DUPN runs the user part (sequence -> gated LSTM -> attention -> representation) once per
request and the CTR head batched over all candidates (network disassembly).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from cel.dupn import DUPN, DUPNConfig, Sequence, gap_buckets
from cel.saml import SAML, SAMLConfig

DEEP_KINDS = ("saml", "dupn")
Layers = list[tuple[np.ndarray, np.ndarray]]  # (weight.T, bias) per Linear of an MLP
_ENTITY_STATE = (".assignment", ".counts")  # per-entity buffers: never in the weights


class SequenceRows(NamedTuple):
    """One user's behaviour sequence in the network's terms, oldest step first."""

    items: np.ndarray  # int64 item rows (serving) or internal item ids (trainer)
    behaviours: np.ndarray  # int64 behaviour-type index
    scenarios: np.ndarray  # int64 scenario index (see ``scenario_code``)
    times: np.ndarray  # float64 unix seconds


def empty_rows() -> SequenceRows:
    z = np.zeros(0, np.int64)
    return SequenceRows(z, z, z, np.zeros(0, np.float64))


def network_spec(kind: str, config: SAMLConfig | DUPNConfig, max_scenarios: int,
                 behaviours: list[str]) -> dict[str, Any]:
    return {"kind": kind, "config": dataclasses.asdict(config),
            "max_scenarios": max_scenarios, "behaviours": list(behaviours)}


def build_network(spec: Mapping[str, Any], device: str | torch.device = "cpu") -> nn.Module:
    kind, raw = spec["kind"], dict(spec["config"])
    for key, value in raw.items():  # JSON turns the config's tuples into lists
        if isinstance(value, list):
            raw[key] = tuple(value)
    if kind == "saml":
        return SAML(SAMLConfig(**raw), device)
    if kind == "dupn":
        return DUPN(DUPNConfig(**raw), device)
    raise ValueError(f"unknown network kind {kind!r} (known: {DEEP_KINDS})")


def scenario_code(kind: str, index: int | None, max_scenarios: int) -> int:
    """The network's scenario id for the index of a scenario in the model's list.

    SAML: the index itself (no branch beyond the budget: the auxiliary network), -1 for an
    unknown scenario. DUPN: indices past the budget, and unknown ones, share one last id."""
    if kind == "saml":
        return -1 if index is None else index
    return max_scenarios if index is None or index >= max_scenarios else index


def published_weights(net: nn.Module) -> dict[str, np.ndarray]:
    """The network's state without per-entity arrays, as f32 (slot_of stays integer)."""
    out = {}
    for name, value in net.state_dict().items():
        if name.endswith(_ENTITY_STATE):
            continue
        array = value.detach().cpu().numpy()
        out[name] = array.astype(np.int64 if array.dtype.kind in "iu" else np.float32)
    return out


def sequence_tensors(seqs: list[SequenceRows], now: np.ndarray, time_buckets: int,
                     device: torch.device | str = "cpu") -> Sequence:
    """Pad a batch of sequences to (B, T >= 1); ``now`` (B,) gives each row's time gaps."""
    t = max(1, max((len(s.items) for s in seqs), default=0))
    b = len(seqs)
    items, beh, scen = (np.zeros((b, t), np.int64) for _ in range(3))
    gaps = np.zeros((b, t), np.float64)
    mask = np.zeros((b, t), bool)
    for k, s in enumerate(seqs):
        n = len(s.items)
        items[k, :n], beh[k, :n], scen[k, :n] = s.items, s.behaviours, s.scenarios
        gaps[k, :n] = now[k] - s.times
        mask[k, :n] = True
    return Sequence(torch.from_numpy(items).to(device), torch.from_numpy(beh).to(device),
                    torch.from_numpy(scen).to(device),
                    gap_buckets(torch.from_numpy(gaps), time_buckets).to(device),
                    torch.from_numpy(mask).to(device))


def _layers(mlp: nn.Sequential) -> Layers:
    return [(m.weight.detach().numpy().T.copy(), m.bias.detach().numpy().copy())
            for m in mlp if isinstance(m, nn.Linear)]


def _run_mlp(x: np.ndarray, layers: Layers) -> np.ndarray:
    """Linear layers with ReLU between them (none after the last), as ``dupn._mlp``."""
    for k, (w, b) in enumerate(layers):
        x = x @ w + b
        if k < len(layers) - 1:
            np.maximum(x, 0.0, out=x)
    return x


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # no overflow for large |x|


class NumpyDUPN:
    """DUPN's user part for one request in numpy (float32): the same maths as
    ``DUPN.user_representation`` without torch's per-op overhead, which dominates at batch
    size one (a 50-step LSTM is ~700 tiny ops). The candidate head stays torch's own
    ``score_candidates`` (a few ops, batched over the candidates)."""

    def __init__(self, net: DUPN):
        cfg = net.config
        if cfg.num_categories or net.user_table is None or cfg.item_bias:
            raise ValueError("the numpy DUPN path needs a user table, no categories and no "
                             "item bias column")
        f32 = np.float32
        self.hidden = cfg.hidden
        self.item_weight = net.item_table.weight.detach().numpy().astype(f32)
        self.user_weight = net.user_table.weight.detach().numpy().astype(f32)
        self.behaviour = net.behaviour.weight.detach().numpy().astype(f32)
        self.scenario = net.scenario.weight.detach().numpy().astype(f32)
        self.time_gap = net.time_gap.weight.detach().numpy().astype(f32)
        self.context = [t.weight.detach().numpy().astype(f32) for t in net.context]
        lstm = net.lstm
        self.w_in = lstm.input_proj.weight.detach().numpy().T.copy()
        self.b_in = lstm.input_proj.bias.detach().numpy().copy()
        self.w_prop = lstm.property_proj.weight.detach().numpy().T.copy()
        self.w_rec = lstm.recurrent.weight.detach().numpy().T.copy()
        self.attention = _layers(net.attention)

    def representation(self, user_row: int, scenario: int, items: np.ndarray,
                       behaviours: np.ndarray, scenarios: np.ndarray, gaps: np.ndarray
                       ) -> np.ndarray:
        h_dim = self.hidden
        user = self.user_weight[user_row]
        if len(items) == 0:  # an empty sequence pools to zeros
            return np.concatenate([np.zeros(h_dim, np.float32), user])
        props = np.concatenate([self.behaviour[behaviours], self.scenario[scenarios],
                                self.time_gap[gaps]], axis=1)
        pre = self.item_weight[items] @ self.w_in + self.b_in
        pre[:, : 3 * h_dim] += props @ self.w_prop
        h = np.zeros(h_dim, np.float32)
        c = np.zeros(h_dim, np.float32)
        states = np.empty((len(items), h_dim), np.float32)
        for t in range(len(items)):
            z = pre[t] + h @ self.w_rec
            gates = _sigmoid(z[: 3 * h_dim])
            c = gates[h_dim: 2 * h_dim] * c + gates[:h_dim] * np.tanh(z[3 * h_dim:])
            h = gates[2 * h_dim:] * np.tanh(c)
            states[t] = h
        parts = [states, props]
        if self.context:
            ctx = np.concatenate([t[scenario] for t in self.context])
            parts.append(np.broadcast_to(ctx, (len(items), len(ctx))))
        scores = _run_mlp(np.concatenate(parts, axis=1), self.attention)[:, 0]
        weights = np.exp(scores - scores.max())
        weights /= weights.sum()
        return np.concatenate([weights @ states, user])



class DeepNet:
    """A published SAML or DUPN network, scored per request (not thread-safe: the caller
    holds a lock, the tables' assignments are per-request scratch)."""

    def __init__(self, spec: Mapping[str, Any], weights: Mapping[str, np.ndarray]):
        self.spec = dict(spec)
        self.kind = spec["kind"]
        self.max_scenarios = int(spec["max_scenarios"])
        self.behaviours = {b: k for k, b in enumerate(spec["behaviours"])}
        self.net = build_network(spec).eval()
        self.tables = self.net.clustered_tables()
        if set(self.tables) != {"user", "item"}:
            raise ValueError("the served network needs clustered user and item tables")
        self.load(weights)

    def check(self, weights: Mapping[str, np.ndarray]) -> None:
        """Raise ValueError unless ``weights`` (model.* names stripped) fit this network."""
        own = self.net.state_dict()
        for name, value in weights.items():
            if name not in own or name.endswith(_ENTITY_STATE):
                raise ValueError(f"unexpected weight {name!r}")
            if name != "slot_of" and tuple(value.shape) != tuple(own[name].shape):
                raise ValueError(f"weight {name}: shape {value.shape}, expected "
                                 f"{tuple(own[name].shape)}")

    def load(self, weights: Mapping[str, np.ndarray]) -> None:
        self.check(weights)
        state = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in weights.items()}
        if "slot_of" in state and isinstance(self.net, SAML):
            slot_of = state["slot_of"].long()
            self.net.slot_of = slot_of.clone()
            self.net.num_branches = int(slot_of.max()) + 1 if len(slot_of) else 0
            del state["slot_of"]
        with torch.no_grad():
            own = self.net.state_dict()
            for name, value in state.items():
                own[name].copy_(value.to(own[name].dtype))
        self.fast = NumpyDUPN(self.net) if isinstance(self.net, DUPN) else None

    # -- requests ------------------------------------------------------------------------
    def _point(self, side: str, rows: np.ndarray) -> torch.Tensor:
        """Point ``side``'s table at ``rows``; returns the ids 0..len-1 that look them up."""
        table = self.tables[side]
        table.assignment = torch.from_numpy(np.asarray(rows, dtype=np.int64))
        return torch.arange(len(rows))

    def _fast_rep(self, user_row: int, scenario: int, seq: SequenceRows, now: float
                  ) -> np.ndarray:
        assert self.fast is not None
        gaps = gap_buckets(torch.from_numpy(now - seq.times), self.net.config.time_buckets)
        return self.fast.representation(user_row, scenario, seq.items, seq.behaviours,
                                        seq.scenarios, gaps.numpy())

    @torch.no_grad()
    def logits(self, user_row: int, item_rows: np.ndarray, scenario: int,
               seq: SequenceRows, now: float) -> np.ndarray:
        """Raw click logits of the candidate rows for one user (one request)."""
        if self.fast is not None:  # dupn: user part once, the head over all candidates
            rep = torch.from_numpy(self._fast_rep(user_row, scenario, seq, now))
            ids = self._point("item", np.asarray(item_rows, np.int64))
            out = self.net.score_candidates(rep.unsqueeze(0), ids.unsqueeze(0))
            return out.ctr[0].numpy().astype(np.float64)
        c = len(item_rows)
        users = self._point("user", np.array([user_row]))
        ids = self._point("item", np.concatenate([item_rows, seq.items]).astype(np.int64))
        hist = torch.arange(c, c + len(seq.items)).unsqueeze(0)  # (1, L): shared by all c
        mask = torch.ones_like(hist, dtype=torch.bool) if len(seq.items) else None
        if mask is None:
            hist = None
        out = self.net(users.expand(c), ids[:c], torch.full((c,), scenario), None, hist, mask)
        return out.logit.numpy().astype(np.float64)

    @torch.no_grad()
    def representation(self, user_row: int, scenario: int, seq: SequenceRows, now: float
                       ) -> np.ndarray:
        """DUPN: the user representation; SAML: the user's global embedding row."""
        if self.fast is not None:
            return self._fast_rep(user_row, scenario, seq, now).astype(np.float64)
        users = self._point("user", np.array([user_row]))
        return self.tables["user"](users)[0].numpy().astype(np.float64)
