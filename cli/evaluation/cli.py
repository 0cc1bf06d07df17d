"""``celrec eval``: offline evaluation of several methods side by side on a dataset file."""

from __future__ import annotations

import argparse
import json
import sys
import time

from cel.build import SIDES
from cel.models import MODELS
from cel.offline import TrainConfig
from cli.evaluation.datasets import FORMATS, DatasetError
from cli.evaluation.protocols import PROTOCOLS, prepare
from cli.evaluation.runner import ALL_METHODS, MethodUnavailable, RunSpec, evaluate


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="celrec eval", description=__doc__)
    p.add_argument("--data", help="dataset file (random and stream protocols)")
    p.add_argument("--format", default="movielens", choices=FORMATS + ("sasrec",),
                   help="sasrec: 'user item' lines in per-user order (--model dupn only)")
    p.add_argument("--protocol", default="random", choices=PROTOCOLS)
    p.add_argument("--train", help="predefined training file (e.g. u1.base)")
    p.add_argument("--test", help="predefined test file (e.g. u1.test)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--model", default="mf", choices=MODELS + ("saml", "dupn"),
                   help="saml: multi-scenario (CSV scenario column); dupn: sequences, stream "
                        "protocol; with these --methods picks the tables (full, cel)")
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--methods", default=None,
                   help=f"comma-separated, from {','.join(ALL_METHODS)}; default: full,hash,cel, "
                        "or with --protocol stream celrec (the trainer's learner as served)")
    p.add_argument("--clusters", type=int, default=50, help="cluster budget M_max per side")
    p.add_argument("--side", default="item", choices=SIDES)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda")
    d = TrainConfig()
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr)
    # defaults chosen on validation splits carved from u1.base and u3.base (ML-100K, MF)
    p.add_argument("--reg", type=float, default=0.12)
    p.add_argument("--cel-reg", type=float, default=0.1,
                   help="L2 for cel (all its tables); other methods use --reg")
    p.add_argument("--cluster-reg", type=float, default=None,
                   help="L2 of the cluster rows only (default: --cel-reg)")
    p.add_argument("--cluster-optimizer", default=d.cluster_optimizer, choices=("adam", "sgd"))
    p.add_argument("--cluster-lr", type=float, default=None, help="default: --lr")
    p.add_argument("--prior-max-count", type=int, default=10,
                   help="entities with at most this many training interactions share a "
                        "dedicated prior row (-1: off)")
    p.add_argument("--reassign-min-count", type=int, default=5,
                   help="entities with fewer interactions are never reassigned")
    p.add_argument("--prior-open", dest="prior_exclusive", action="store_false",
                   help="let entities with more than --prior-max-count interactions move "
                        "into the prior row (default: only rare entities may join it)")
    p.add_argument("--reassign-margin", type=float, default=d.reassign_margin,
                   help="a move must lower an entity's summed loss by margin*sqrt(n)")
    p.add_argument("--no-entity-bias", dest="entity_bias", action="store_false",
                   help="cel: no own bias per entity (default: each entity of a clustered "
                        "side keeps an own, unclustered bias, counted in its memory)")
    p.add_argument("--entity-bias-prior", type=float, default=10.0,
                   help="cel: shrinkage of the own biases towards the cluster's, as a count")
    p.add_argument("--no-entity-scale", dest="entity_scale", action="store_false",
                   help="cel: no own scale per entity (default: each entity of a clustered "
                        "side scales its cluster's vector by an own factor, counted in memory)")
    p.add_argument("--entity-scale-prior", type=float, default=10.0,
                   help="cel: shrinkage of the own scales towards 1, as a count")
    # offline: 5, chosen on validation cuts of training data (u.data seed-0 training 80% cut
    # 80/20 and 90/10, u1/u3.base cut 80/20), mean RMSE of training seeds 0 and 1: 0 rows
    # 0.9216, 1 row 0.9202, 3 rows 0.9198, 4 rows 0.9192, 5 rows 0.9189, 8 rows 0.9193.
    # stream: 0 (on the u.data stream 5 rows give 1.0519 vs 1.0520 at 2.5x the memory)
    p.add_argument("--extra-rows", type=int, default=None,
                   help="cel: each entity adds this many more cluster rows with own weights "
                        "(a sparse code; a small integer and a float per entity each, "
                        "counted in its memory; 0: off; default: 5, or 0 with --protocol "
                        "stream)")
    p.add_argument("--extra-rows-prior", type=float, default=d.extra_rows_prior,
                   help="cel --extra-rows: shrinkage of the extra weights towards 0, as a count")
    p.add_argument("--extra-rows-min-count", type=int, default=d.extra_rows_min_count,
                   help="cel --extra-rows: entities with fewer interactions get none")
    p.add_argument("--ridge-sweeps", type=int, default=d.ridge_sweeps,
                   help="after training, sweeps of exact ridge solves of the user rows "
                        "(then item rows) under the training L2, for every method (0: off)")
    p.add_argument("--ridge-sides", default=d.ridge_sides, choices=("user", "both"))
    p.add_argument("--reassign-epochs", type=int, default=15)
    p.add_argument("--split-choice", default=d.split_choice,
                   choices=("interactions", "members", "loss", "random"))
    p.add_argument("--personal-epochs", type=int, default=0,
                   help="personalisation phase length for cel (0: off)")
    p.add_argument("--personal-l2", type=float, default=0.1)
    p.add_argument("--table-lr", type=float, default=None,
                   help="--model dupn: Adam lr of the user/item tables (default: --lr)")
    p.add_argument("--negatives", type=int, default=1,
                   help="sampled negatives per positive for implicit data")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--plot", help="write learning curves and cluster sizes to this PNG")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


class ProgressBar:
    """One line on stderr per method, redrawn in place."""

    def __init__(self, enabled: bool) -> None:
        self.enabled, self.last = enabled, 0.0

    def __call__(self, label: str, done: int, total: int) -> None:
        now = time.monotonic()
        if not self.enabled or (done < total and now - self.last < 0.2):
            return
        self.last = now
        filled = int(30 * done / max(total, 1))
        end = "\n" if done >= total else ""
        sys.stderr.write(f"\r{label:>10} [{'#' * filled}{'.' * (30 - filled)}] "
                         f"{done}/{total}{end}")
        sys.stderr.flush()


def _fmt(value: float | int | None, digits: int = 4) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def format_table(report: dict) -> str:
    rows = ["method      rmse    mse     auc     logloss  memory_B  ratio   events/s  "
            "rmse|auc item0  item1-5  item6-20  item>20"]
    key = "rmse" if any(r["rmse"] is not None for r in report["results"]) else "auc"
    for r in report["results"]:
        buckets = [_fmt(r["buckets"]["item"][b][key]) for b in ("0", "1-5", "6-20", ">20")]
        rows.append(
            f"{r['method']:<11} {_fmt(r['rmse']):<7} {_fmt(r['mse']):<7} {_fmt(r['auc']):<7} "
            f"{_fmt(r['logloss']):<8} {r['memory_bytes']:<9} "
            f"{_fmt(r['compression_ratio'], 1):<7} {_fmt(r['events_per_s'], 0):<9} "
            + "  ".join(f"{b:<7}" for b in buckets))
    return "\n".join(rows)


def default_extra_rows(args: argparse.Namespace) -> int:
    """``--extra-rows``, or its default for the protocol (offline 5, stream 0)."""
    if args.extra_rows is not None:
        return args.extra_rows
    return 0 if args.protocol == "stream" else 5


def spec_from_args(args: argparse.Namespace, methods: tuple[str, ...]) -> RunSpec:
    """The run settings that ``args`` (from ``build_parser``) describe."""
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                         reg=args.reg, reassign_epochs=args.reassign_epochs,
                         split_choice=args.split_choice, personal_epochs=args.personal_epochs,
                         personal_l2=args.personal_l2, seed=args.seed, cel_reg=args.cel_reg,
                         cluster_reg=args.cluster_reg, cluster_optimizer=args.cluster_optimizer,
                         cluster_lr=args.cluster_lr, prior_max_count=args.prior_max_count,
                         reassign_min_count=args.reassign_min_count,
                         reassign_margin=args.reassign_margin,
                         prior_exclusive=args.prior_exclusive,
                         entity_bias_prior=args.entity_bias_prior,
                         entity_scale_prior=args.entity_scale_prior,
                         extra_rows_prior=args.extra_rows_prior,
                         extra_rows_min_count=args.extra_rows_min_count,
                         ridge_sweeps=args.ridge_sweeps, ridge_sides=args.ridge_sides)
    return RunSpec(methods=methods, model=args.model, dim=args.dim, clusters=args.clusters,
                   side=args.side, protocol=args.protocol, device=args.device, seed=args.seed,
                   train=config, entity_bias=args.entity_bias, entity_scale=args.entity_scale,
                   extra_rows=default_extra_rows(args))


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if args.methods is None:
        args.methods = "celrec" if args.protocol == "stream" and args.model in ("mf", "deepfm") \
            else "full,hash,cel"
    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    unknown = [m for m in methods if m not in ALL_METHODS]
    if unknown or not methods:
        print(f"celrec eval: unknown method(s) {unknown}; choose from {ALL_METHODS}",
              file=sys.stderr)
        return 2
    if args.model in ("saml", "dupn"):
        return _sequence_or_scenario_model(args)
    spec = spec_from_args(args, methods)
    try:
        prep = prepare(args.data, args.format, args.protocol, args.seed, args.train, args.test,
                       args.negatives)
        results = evaluate(prep, spec, ProgressBar(not args.quiet))
    except (DatasetError, ValueError, MethodUnavailable) as exc:
        print(f"celrec eval: {exc}", file=sys.stderr)
        return 2
    for r in results:  # the own scalars and extra rows cost floats per entity: at a small
        # --dim they can outweigh the rows they replace
        if r["method"] == "cel" and (r["compression_ratio"] or 1.0) < 1.0:
            print(f"celrec eval: warning: cel keeps more memory than full here "
                  f"({r['memory_bytes']} B; own scalars and {spec.extra_rows} extra rows per "
                  f"entity at --dim {args.dim}); lower --extra-rows", file=sys.stderr)
    report = {"dataset": args.data or f"{args.train} | {args.test}", "protocol": args.protocol,
              "task": prep.task, "model": args.model, "side": args.side,
              "clusters": args.clusters, "dim": args.dim, "results": results}
    if args.plot:
        try:
            from cli.evaluation.plot import write_plot

            write_plot(report, args.plot)
        except ImportError:
            print("celrec eval: --plot needs matplotlib (pip install 'celrec[eval]')",
                  file=sys.stderr)
            return 2
    if args.json:
        for r in report["results"]:  # curves stay out of the machine-readable summary
            r.pop("curve", None)
            r.pop("cluster_sizes", None)
        print(json.dumps(report))
    else:
        print(format_table(report))
    return 0


def _sequence_or_scenario_model(args: argparse.Namespace) -> int:
    """``--model saml`` / ``--model dupn``: their own runners, the same report shape."""
    if args.model == "saml":
        from cli.evaluation.multiscenario import cli_report
    else:
        from cli.evaluation.sequences import cli_report
    try:
        report = cli_report(args)
    except (DatasetError, ValueError) as exc:
        print(f"celrec eval: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report) if args.json else format_table(report))
    return 0
