"""``--plot``: learning curves and the cluster-size histogram (needs the ``eval`` extra)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402


def write_plot(report: dict, path: str) -> None:
    fig, (curves, hist) = plt.subplots(1, 2, figsize=(11, 4))
    metric = "RMSE" if report.get("task") == "rating" else "AUC"
    for r in report["results"]:
        if r.get("curve"):
            curves.plot(range(1, len(r["curve"]) + 1), r["curve"], label=r["method"])
    x_label = "progress (checkpoints)" if report["protocol"] == "stream" else "epoch"
    curves.set(xlabel=x_label, ylabel=f"test {metric}", title="learning curves")
    curves.legend()
    for r in report["results"]:
        if r.get("cluster_sizes"):
            hist.hist(r["cluster_sizes"], bins=30, alpha=0.6, label=r["method"])
    hist.set(xlabel="members per cluster", ylabel="clusters", title="cluster sizes")
    if hist.get_legend_handles_labels()[0]:
        hist.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
