"""Every interaction model runs on clustered and full tables and passes gradients to both."""

from __future__ import annotations

import pytest
import torch

from cel.build import make_recommender
from cel.interactions import Interactions
from cel.models import MODELS, DeepFM


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("side", ["item", "user", "both"])
def test_models_train_on_clustered_tables(name: str, side: str) -> None:
    rec = make_recommender("cel", 7, 9, name, 4, side, clusters=3, task="binary",
                           device="cpu", context_cardinalities=(3,) if name == "deepfm" else ())
    data = Interactions(torch.tensor([0, 1, 6]), torch.tensor([2, 8, 0]),
                        torch.tensor([1.0, 0.0, 1.0]),
                        torch.tensor([[0], [2], [1]]) if name == "deepfm" else None)
    score = rec.score(data)
    assert score.shape == (3,)
    rec.loss(score, data.labels).mean().backward()
    assert rec.user_table.weight.grad.abs().sum() > 0
    assert rec.item_table.weight.grad.abs().sum() > 0
    prob = rec.predict(data)
    assert torch.all((prob > 0) & (prob < 1))


def test_nmf_uses_non_negative_factors() -> None:
    rec = make_recommender("full", 3, 3, "nmf", 4, device="cpu")
    u = torch.tensor([[-1.0, 2.0, 0.0, 0.0, 0.0]])
    i = torch.tensor([[-3.0, 1.0, 0.0, 0.0, 0.0]])
    assert float(rec.model(u, i).detach()) == pytest.approx(5.0)


def test_deepfm_needs_context_when_built_with_fields() -> None:
    model = DeepFM(4, (2,))
    with pytest.raises(ValueError):
        model(torch.zeros(1, 5), torch.zeros(1, 5))
