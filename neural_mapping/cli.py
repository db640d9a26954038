"""`neural-mapping` command-line tool.

Each subcommand lives in its own module exposing ``add_arguments(parser)`` and
``run(args) -> int``; modules are imported lazily so ``--help`` stays fast.
Bad input (InputError, ConfigError, FrameError) is one clear line and exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from neural_mapping.errors import InputError

#: name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "synth": ("neural_mapping.io.synth_cmd", "render a synthetic RGB-D sequence with a ground-truth mesh"),
    "convert": ("neural_mapping.io.convert_cmd", "convert a dataset folder to a rosbag2 bag"),
    "info": ("neural_mapping.io.info_cmd", "describe an input (dataset folder or bag)"),
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="neural-mapping", description="Online neural implicit mapping from RGB-D.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (mod, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        if only is None or only == name:
            importlib.import_module(mod).add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    only = argv[0] if argv and argv[0] in COMMANDS else None
    parser = build_parser(only)
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    from neural_mapping.config import ConfigError
    from neural_mapping.frame import FrameError

    try:
        return int(importlib.import_module(COMMANDS[args.command][0]).run(args) or 0)
    except (InputError, ConfigError, FrameError) as e:
        print(f"neural-mapping {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
