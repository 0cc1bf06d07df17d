"""The SAML and DUPN streaming learners: how a micro-batch becomes each model's inputs."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from cel.deep_serving import SequenceRows, network_spec, sequence_tensors
from cel.dupn import DUPN, DUPNConfig
from cel.saml import SAMLConfig
from trainer.deep_learner import BEHAVIOURS, DeepLearner
from trainer.sequences import UserSequences

log = logging.getLogger(__name__)

Batch = dict[str, Any]


def _tail(batch: Batch, names: tuple[str, ...], window: int) -> list[Any]:
    return [batch[n][-window:] for n in names]


class SAMLLearner(DeepLearner):
    """SAML: the scenario picks the branch; the user's sequence items are its history."""

    kind = "saml"

    def build_spec(self) -> dict[str, Any]:
        s = self.settings
        config = SAMLConfig(num_users=1, num_items=1, dim=s.embedding_dim,
                            user_clusters=s.user_clusters, item_clusters=s.item_clusters,
                            table="cel", num_scenarios=1, max_branches=s.max_scenarios)
        return network_spec(self.kind, config, s.max_scenarios, BEHAVIOURS)

    def _on_new_scenario(self, index: int, name: str) -> None:
        if index == 0 or self.net.add_scenario(index):  # the first one has branch 0 built in
            log.info("SAML: scenario %r gets branch %d", name, int(self.net.slots(
                torch.tensor([index]))[0]))
        else:
            log.warning("SAML: scenario %r is beyond CELREC_MAX_SCENARIOS=%d branches; it "
                        "shares the auxiliary (global) network", name, self.max_scenarios)

    def _tensors(self, users: np.ndarray, items: np.ndarray, scen: np.ndarray,
                 seqs: list[SequenceRows], now: np.ndarray) -> Batch:
        t = max(1, max(len(s.items) for s in seqs))
        history = np.zeros((len(seqs), t), np.int64)
        mask = np.zeros((len(seqs), t), bool)
        for k, s in enumerate(seqs):
            history[k, : len(s.items)] = s.items
            mask[k, : len(s.items)] = True
        dev = self.device
        return {"user_ids": torch.from_numpy(users).to(dev),
                "item_ids": torch.from_numpy(items).to(dev),
                "scenario_ids": torch.from_numpy(scen).to(dev), "scenario_index": scen,
                "history": torch.from_numpy(history).to(dev),
                "mask": torch.from_numpy(mask).to(dev)}

    _INPUTS = ("user_ids", "item_ids", "scenario_ids")

    def _run(self, users: torch.Tensor, items: torch.Tensor, scenarios: torch.Tensor,
             history: torch.Tensor, mask: torch.Tensor) -> Any:
        return self.net(users, items, scenarios, None, history, mask)

    def _forward(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        out = self._run(*(batch[n] for n in self._INPUTS), batch["history"], batch["mask"])
        return self.net.loss(out, batch["labels"]), out.logit

    def _window_losses(self, batch: Batch, side: str, w: int) -> Callable[[], torch.Tensor]:
        args = _tail(batch, (*self._INPUTS, "history", "mask"), w)
        labels = batch["labels"][-w:]

        def losses() -> torch.Tensor:
            out = self._run(*args)
            return F.binary_cross_entropy_with_logits(out.logit, labels, reduction="none")
        return losses


class DUPNLearner(DeepLearner):
    """DUPN: CTR on every event, conversion (purchase) on positive ones, price preference
    on positive events that carry ``price_level``; the request scenario is the context."""

    kind = "dupn"
    net: DUPN

    def build_spec(self) -> dict[str, Any]:
        s = self.settings
        k = s.max_scenarios + 1  # the last id is shared by scenarios past the budget
        config = DUPNConfig(num_items=1, num_users=1, item_dim=s.embedding_dim,
                            item_clusters=s.item_clusters, user_clusters=s.user_clusters,
                            table="cel", behaviour_types=len(BEHAVIOURS), scenarios=k,
                            context_cardinalities=(k,))
        return network_spec(self.kind, config, s.max_scenarios, BEHAVIOURS)

    def scenario_codes(self) -> np.ndarray:
        return np.minimum(np.arange(len(self.scenarios), dtype=np.int64), self.max_scenarios)

    def _tensors(self, users: np.ndarray, items: np.ndarray, scen: np.ndarray,
                 seqs: list[SequenceRows], now: np.ndarray) -> Batch:
        dev = self.device
        context = np.where((scen < 0) | (scen >= self.max_scenarios), self.max_scenarios, scen)
        return {"user_ids": torch.from_numpy(users).to(dev),
                "item_ids": torch.from_numpy(items).to(dev), "scenario_index": scen,
                "context": torch.from_numpy(context.reshape(-1, 1)).to(dev),
                "seq": sequence_tensors(seqs, now, self.net.config.time_buckets, dev)}

    @torch.no_grad()
    def representation(self, user_id: str, scenario: str | None, now: float) -> np.ndarray:
        """The trainer's own user representation of a known user at time ``now``."""
        self.net.eval()
        user = int(self.ids["user"].lookup([user_id])[0])
        if user < 0:
            raise KeyError(user_id)
        index = self.scenario_of(scenario)
        seq = UserSequences.rows(self.sequences.steps(user), self.scenario_codes())
        batch = self._tensors(np.array([user]), np.array([0]),
                              np.array([-1 if index is None else index]), [seq],
                              np.array([float(now)]))
        rep = self.net.user_representation(batch["seq"], batch["user_ids"], batch["context"])
        return rep[0].cpu().numpy().astype(np.float64)

    def _forward(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        logits, price = self.net(batch["seq"], batch["item_ids"], batch["user_ids"],
                                 batch["context"])
        loss = DUPN.loss(logits, price, batch["labels"], batch["purchase"], batch["price"])
        return loss, logits.ctr

    def _window_losses(self, batch: Batch, side: str, w: int) -> Callable[[], torch.Tensor]:
        users, items, context, labels = _tail(batch, ("user_ids", "item_ids", "context",
                                                      "labels"), w)
        seq = batch["seq"]
        seq = seq._replace(**{f: getattr(seq, f)[-w:] for f in
                              ("items", "behaviours", "scenarios", "gaps", "mask")})
        with torch.no_grad():  # the user part once; only the table being tried varies
            rep = self.net.user_representation(seq, users, context)
        pooled = rep[:, : self.net.config.hidden]

        def losses() -> torch.Tensor:
            r = rep if side == "item" else torch.cat([pooled, self.net.user_table(users)], 1)
            ctr = self.net.score_candidates(r, items.unsqueeze(1)).ctr.squeeze(1)
            return F.binary_cross_entropy_with_logits(ctr, labels, reduction="none")
        return losses
