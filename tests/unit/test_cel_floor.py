"""The biases-only floor of offline CEL: the biases start, the held-out choice of epochs."""

from __future__ import annotations

import torch

from cel.build import make_recommender
from cel.interactions import Interactions
from cel.offline import OfflineCEL, TrainConfig, baseline_biases


def _biased(n_users: int = 60, n_items: int = 40, n: int = 3000, seed: int = 0
            ) -> tuple[Interactions, torch.Tensor, torch.Tensor]:
    """Ratings = 3 + user bias + item bias + noise: no interaction signal at all."""
    gen = torch.Generator().manual_seed(seed)
    bu, bi = torch.randn(n_users, generator=gen) * 0.5, torch.randn(n_items, generator=gen)
    users = torch.randint(n_users, (n,), generator=gen)
    items = torch.randint(n_items, (n,), generator=gen)
    labels = 3 + bu[users] + bi[items] + 0.5 * torch.randn(n, generator=gen)
    return Interactions(users, items, labels), bu, bi


def test_baseline_biases_recover_planted_biases_and_shrink_rare_entities() -> None:
    data, bu, bi = _biased()
    mu, fit_u, fit_i = baseline_biases(data, 60, 40, prior=0.0)
    # the planted biases up to a shared offset (absorbed by the mean)
    assert torch.corrcoef(torch.stack([fit_i, bi]))[0, 1] > 0.95
    assert torch.corrcoef(torch.stack([fit_u, bu]))[0, 1] > 0.9
    assert abs(mu - float(data.labels.mean())) < 1e-6
    one = Interactions(torch.tensor([0]), torch.tensor([0]), torch.tensor([5.0]))
    _, _, free = baseline_biases(one, 1, 1, prior=0.0, sweeps=1)
    _, _, shrunk = baseline_biases(one, 1, 1, prior=4.0, sweeps=1)
    assert float(free[0]) == 0.0 and float(shrunk[0]) == 0.0  # one rating: its own mean
    two = Interactions(torch.tensor([0, 1]), torch.tensor([0, 1]), torch.tensor([5.0, 1.0]))
    _, _, free = baseline_biases(two, 2, 2, prior=0.0, sweeps=1)
    _, _, shrunk = baseline_biases(two, 2, 2, prior=4.0, sweeps=1)
    assert float(free[0]) == 2.0 and abs(float(shrunk[0]) - 2.0 / 5.0) < 1e-6


def test_every_table_kind_starts_from_the_biases_model() -> None:
    data, _, _ = _biased()
    mu, bu, bi = baseline_biases(data, 60, 40, prior=5.0)
    for method, own in (("full", False), ("cel", True), ("cel", False)):
        rec = make_recommender(method, 60, 40, "mf", 4, "item", clusters=5, device="cpu",
                               entity_bias=own)
        trainer = OfflineCEL(rec, TrainConfig(bias_start_prior=5.0))
        trainer.start_biases(data)
        items = torch.arange(40)
        assert abs(float(rec.model.global_bias.detach()) - mu) < 1e-6
        assert torch.allclose(rec.user_table(torch.arange(60))[:, -1], bu, atol=1e-6)
        if method == "full" or own:  # one bias per item
            assert torch.allclose(rec.item_table(items)[:, -1], bi, atol=1e-6)
        else:  # one per cluster: its members' mean (all in cluster 0 at the start)
            assert torch.allclose(rec.item_table(items)[:, -1], bi.mean().expand(40),
                                  atol=1e-5)


def test_without_interaction_signal_the_holdout_keeps_the_model_at_the_biases_floor() -> None:
    """On pure-bias data a 16-dim factor term can only overfit: the held-out choice stops it
    early, and the model stays within noise of the biases-only model on fresh data."""
    train, bu, bi = _biased(n=1500, seed=1)
    users = torch.randint(60, (3000,), generator=torch.Generator().manual_seed(2))
    items = torch.randint(40, (3000,), generator=torch.Generator().manual_seed(3))
    test = Interactions(users, items, 3 + bu[users] + bi[items])

    def rmse(holdout: float) -> tuple[float, int | None]:
        rec = make_recommender("full", 60, 40, "mf", 16, "item", device="cpu", seed=0)
        config = TrainConfig(epochs=40, batch_size=64, lr=0.02, reg=0.0,
                             bias_start_prior=5.0, holdout=holdout)
        history = OfflineCEL(rec, config).fit(train)
        with torch.no_grad():
            error = rec.score(test) - test.labels
        return float(error.pow(2).mean().sqrt()), history.best_epoch

    mu, fit_u, fit_i = baseline_biases(train, 60, 40, prior=5.0)
    floor = float((mu + fit_u[users] + fit_i[items] - test.labels).pow(2).mean().sqrt())
    free, _ = rmse(0.0)
    held, epochs = rmse(0.2)
    assert epochs is not None and epochs < 40
    assert free > floor + 0.02  # unstopped, the factor term overfits the noise
    assert held < free and held < floor + 0.02


def _low_rank(n: int, seed: int) -> Interactions:
    """Ratings = 3 + a rank-2 user x item term + noise: signal the biases cannot hold."""
    gen = torch.Generator().manual_seed(seed)
    p, q = torch.randn(60, 2, generator=gen), torch.randn(40, 2, generator=gen)
    users = torch.randint(60, (n,), generator=gen)
    items = torch.randint(40, (n,), generator=gen)
    labels = 3 + (p[users] * q[items]).sum(1) + 0.3 * torch.randn(n, generator=gen)
    return Interactions(users, items, labels)


def test_the_paired_check_falls_back_to_the_biases_unless_the_epochs_earn_it() -> None:
    """``holdout_z``: the held-out epochs are kept only when they beat the biases-only model
    on the holdout by that many standard errors. A bar no model clears leaves exactly the
    biases-only model (no factor term); on data with an interaction term, 2 standard errors
    are cleared and the epochs kept."""
    def fit(data: Interactions, z: float) -> tuple[OfflineCEL, object]:
        rec = make_recommender("full", 60, 40, "mf", 8, "item", device="cpu", seed=0)
        config = TrainConfig(epochs=20, batch_size=64, lr=0.02, reg=0.0,
                             bias_start_prior=5.0, holdout=0.2, holdout_z=z)
        trainer = OfflineCEL(rec, config)
        trainer.fit(data)
        return trainer, rec

    biased, _, _ = _biased(n=1500, seed=4)
    trainer, rec = fit(biased, 1e6)
    assert trainer.config.epochs == 0 and trainer.history.best_epoch == 0
    mu, bu, bi = baseline_biases(biased, 60, 40, prior=5.0)
    probe = Interactions(torch.arange(60).repeat(40), torch.arange(40).repeat_interleave(60),
                         torch.zeros(2400))
    with torch.no_grad():
        torch.testing.assert_close(rec.score(probe), mu + bu[probe.users] + bi[probe.items],
                                   atol=1e-4, rtol=0)
    trainer, _ = fit(_low_rank(3000, seed=5), 2.0)
    assert trainer.config.epochs > 0 and trainer.history.best_epoch == trainer.config.epochs
