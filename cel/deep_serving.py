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

    # -- requests ------------------------------------------------------------------------
    def _point(self, side: str, rows: np.ndarray) -> torch.Tensor:
        """Point ``side``'s table at ``rows``; returns the ids 0..len-1 that look them up."""
        table = self.tables[side]
        table.assignment = torch.from_numpy(np.asarray(rows, dtype=np.int64))
        return torch.arange(len(rows))

    def _sequence(self, seq: SequenceRows, now: float, offset: int) -> Sequence:
        shifted = seq._replace(items=np.arange(offset, offset + len(seq.items)))
        return sequence_tensors([shifted], np.array([now]), self.net.config.time_buckets)

    @torch.no_grad()
    def logits(self, user_row: int, item_rows: np.ndarray, scenario: int,
               seq: SequenceRows, now: float) -> np.ndarray:
        """Raw click logits of the candidate rows for one user (one request)."""
        c = len(item_rows)
        users = self._point("user", np.array([user_row]))
        ids = self._point("item", np.concatenate([item_rows, seq.items]).astype(np.int64))
        if isinstance(self.net, DUPN):
            rep = self._dupn_rep(users, scenario, self._sequence(seq, now, c))
            out = self.net.score_candidates(rep, ids[:c].unsqueeze(0))
            return out.ctr[0].numpy().astype(np.float64)
        hist = torch.arange(c, c + len(seq.items)).unsqueeze(0).expand(c, -1)
        mask = torch.ones_like(hist, dtype=torch.bool) if len(seq.items) else None
        if mask is None:
            hist = None
        out = self.net(users.expand(c), ids[:c], torch.full((c,), scenario), None, hist, mask)
        return out.logit.numpy().astype(np.float64)

    def _dupn_rep(self, users: torch.Tensor, scenario: int, seq: Sequence) -> torch.Tensor:
        return self.net.user_representation(seq, users, torch.tensor([[scenario]]))

    @torch.no_grad()
    def representation(self, user_row: int, scenario: int, seq: SequenceRows, now: float
                       ) -> np.ndarray:
        """DUPN: the user representation; SAML: the user's global embedding row."""
        users = self._point("user", np.array([user_row]))
        if isinstance(self.net, DUPN):
            self._point("item", seq.items if len(seq.items) else np.zeros(1, np.int64))
            rep = self._dupn_rep(users, scenario, self._sequence(seq, now, 0))
            return rep[0].numpy().astype(np.float64)
        return self.tables["user"](users)[0].numpy().astype(np.float64)
