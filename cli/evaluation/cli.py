"""``celrec eval``: offline evaluation of several methods side by side on a dataset file."""

from __future__ import annotations

import argparse
import json
import sys
import time

from cel.build import SIDES
from cel.models import MODELS
from celrec.presets import Preset, PresetError, load_preset
from cli.evaluation.datasets import FORMATS, DatasetError
from cli.evaluation.protocols import PROTOCOLS, prepare
from cli.evaluation.runner import ALL_METHODS, MethodUnavailable, RunSpec, evaluate


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="celrec eval", description=__doc__,
        epilog="Training defaults (epochs, learning rate, L2, priors, extra rows, ...) are "
               "fields of one preset: see them with --show-preset, change them with --preset.")
    p.add_argument("--data", help="dataset file (random and stream protocols)")
    p.add_argument("--format", default="movielens", choices=FORMATS + ("sasrec",),
                   help="sasrec: 'user item' lines in per-user order (--model dupn only)")
    p.add_argument("--protocol", default="random", choices=PROTOCOLS)
    p.add_argument("--train", help="predefined training file (e.g. u1.base)")
    p.add_argument("--test", help="predefined test file (e.g. u1.test)")
    p.add_argument("--model", default="mf", choices=MODELS + ("saml", "dupn"),
                   help="saml: multi-scenario (CSV scenario column); dupn: sequences, stream "
                        "protocol; with these --methods picks the tables (full, cel)")
    p.add_argument("--methods", default=None,
                   help=f"comma-separated, from {','.join(ALL_METHODS)}; default: full,hash,cel, "
                        "or with --protocol stream celrec (the trainer's learner as served)")
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--clusters", type=int, default=50, help="cluster budget M_max per side")
    p.add_argument("--side", default="item", choices=SIDES, help="the clustered side(s)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--preset", dest="preset_file", metavar="FILE",
                   help="JSON file of preset fields to change (see --show-preset)")
    p.add_argument("--show-preset", action="store_true",
                   help="print the preset in effect (JSON) and exit")
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


def spec_from_args(args: argparse.Namespace, methods: tuple[str, ...],
                   preset: Preset) -> RunSpec:
    """The run settings that ``args`` (from ``build_parser``) and ``preset`` describe."""
    return RunSpec(methods=methods, model=args.model, dim=args.dim, clusters=args.clusters,
                   side=args.side, protocol=args.protocol, device=args.device, seed=args.seed,
                   preset=preset)


def inapplicable(args: argparse.Namespace, methods: tuple[str, ...]) -> list[str]:
    """What the options ask for that the chosen model, methods or protocol ignore."""
    default = build_parser().parse_args([])
    notes = []

    def changed(name: str) -> bool:
        return getattr(args, name) != getattr(default, name)

    if changed("side") and args.model in ("saml", "dupn"):
        notes.append(f"--side: --model {args.model} clusters both sides")
    if changed("clusters") and not ({"cel", "celrec"} & set(methods)):
        notes.append(f"--clusters: no clustered method among {','.join(methods)}")
    if (args.train or args.test) and args.protocol != "folds":
        notes.append(f"--train/--test: used by --protocol folds, not {args.protocol}")
    if args.preset_file and methods == ("celrec",):
        notes.append("--preset: the celrec method runs the trainer's settings "
                     "(CELREC_* variables, docs/settings.md), not the offline preset")
    return notes


RENAMED_METHOD = "cel-online"


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if args.methods is None:
        args.methods = "celrec" if args.protocol == "stream" and args.model in ("mf", "deepfm") \
            else "full,hash,cel"
    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    if RENAMED_METHOD in methods:  # its old name, as evaluation write-ups still call it
        print(f"celrec eval: method {RENAMED_METHOD!r} is now called 'celrec'", file=sys.stderr)
        methods = tuple(dict.fromkeys("celrec" if m == RENAMED_METHOD else m for m in methods))
    unknown = [m for m in methods if m not in ALL_METHODS]
    if unknown or not methods:
        print(f"celrec eval: unknown method(s) {unknown}; choose from {ALL_METHODS}",
              file=sys.stderr)
        return 2
    try:
        preset = load_preset(args.preset_file)
    except PresetError as exc:
        print(f"celrec eval: {exc}", file=sys.stderr)
        return 2
    if args.show_preset:
        print(preset.model_dump_json(indent=2))
        return 0
    for note in inapplicable(args, methods):
        print(f"celrec eval: warning: ignored {note}", file=sys.stderr)
    if args.model in ("saml", "dupn"):
        return _sequence_or_scenario_model(args, preset)
    spec = spec_from_args(args, methods, preset)
    try:
        prep = prepare(args.data, args.format, args.protocol, args.seed, args.train, args.test,
                       preset.negatives)
        results = evaluate(prep, spec, ProgressBar(not args.quiet))
    except (DatasetError, ValueError, MethodUnavailable) as exc:
        print(f"celrec eval: {exc}", file=sys.stderr)
        return 2
    for r in results:  # the own scalars and extra rows cost floats per entity: at a small
        # --dim they can outweigh the rows they replace
        if r["method"] == "cel" and (r["compression_ratio"] or 1.0) < 1.0:
            print(f"celrec eval: warning: cel keeps more memory than full here "
                  f"({r['memory_bytes']} B; own scalars and {spec.extra_rows} extra rows per "
                  f"entity at --dim {args.dim}); lower the preset's extra_rows",
                  file=sys.stderr)
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


def _sequence_or_scenario_model(args: argparse.Namespace, preset: Preset) -> int:
    """``--model saml`` / ``--model dupn``: their own runners, the same report shape."""
    if args.model == "saml":
        from cli.evaluation.multiscenario import cli_report
    else:
        from cli.evaluation.sequences import cli_report
    try:
        report = cli_report(args, preset)
    except (DatasetError, ValueError) as exc:
        print(f"celrec eval: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report) if args.json else format_table(report))
    return 0
