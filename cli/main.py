"""The ``celrec`` command: run, serve, train, eval (more subcommands join over time)."""

from __future__ import annotations

import argparse
import sys

from celrec.settings import Settings, SettingsError, load_settings


def _add_http_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", help="bind address (default: CELREC_HOST or 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default: CELREC_PORT or 8000)")


def _overrides(args: argparse.Namespace) -> dict[str, object]:
    keys = ("host", "port", "device")
    return {k: getattr(args, k) for k in keys if getattr(args, k, None) is not None}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="celrec", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="all-in-one: API + trainer in one process, embedded backends")
    _add_http_args(run)
    run.add_argument("--demo", action="store_true",
                     help="stream a synthetic workload with planted clusters into itself")
    run.add_argument("--device", help="torch device (auto, cpu, cuda)")

    serve = sub.add_parser("serve", help="the HTTP service alone (uses the configured backends)")
    _add_http_args(serve)

    train = sub.add_parser("train", help="the streaming trainer alone")
    train.add_argument("--device", help="torch device (auto, cpu, cuda)")
    train.add_argument("--max-seconds", type=float, default=None,
                       help="stop after this long (default: run until interrupted)")

    replay = sub.add_parser("replay", help="learn a fresh model from the events topic "
                            "(from the start or --since) or a file")
    from cli.replay import add_arguments as add_replay_arguments

    add_replay_arguments(replay)

    hash_key = sub.add_parser("hash-key", help="print the CELREC_API_KEYS entry of an API key "
                              "read from stdin (or of a new one with --generate)")
    hash_key.add_argument("--scopes", default="scores:read",
                          help="comma-separated: events:write, scores:read, admin")
    hash_key.add_argument("--generate", action="store_true", help="make a new random key")

    evaluate = sub.add_parser("eval", help="offline evaluation on a dataset file",
                              add_help=False)
    evaluate.add_argument("rest", nargs=argparse.REMAINDER)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["eval"]:
        from cli.evaluation.cli import main as eval_main

        return eval_main(argv[1:])
    args = build_parser().parse_args(argv)
    if args.command == "hash-key":  # needs no settings
        from service.auth import hash_key_main

        return hash_key_main(args.scopes, args.generate, sys.stdin.read)
    try:
        settings = load_settings(**_overrides(args))
    except SettingsError as exc:
        print(f"celrec: {exc}", file=sys.stderr)
        return 2
    try:
        return _run_command(args, settings)
    except SettingsError as exc:  # e.g. a CELREC_MODEL the trainer cannot learn
        print(f"celrec: {exc}", file=sys.stderr)
        return 2


def _run_command(args: argparse.Namespace, settings: Settings) -> int:
    if args.command == "run":
        from cli.allinone import run_all_in_one

        return run_all_in_one(settings, demo=args.demo)
    if args.command == "serve":
        from service.main import serve

        return serve(settings)
    if args.command == "train":
        from trainer.main import train

        return train(settings, max_seconds=args.max_seconds)
    if args.command == "replay":
        from cli.replay import replay

        return replay(settings, args)
    raise AssertionError(args.command)


if __name__ == "__main__":
    raise SystemExit(main())
