"""Command line: ``python -m ddpm_tutor {check,train,sample}``."""

from __future__ import annotations

import argparse
import sys

from . import __version__


def _cmd_check(args: argparse.Namespace) -> int:
    """Prove every identity of the book with SymPy and print what was proved."""
    from .derivations import all_proofs

    proofs = all_proofs()
    for proof in proofs:
        print(proof.as_text())
        print()
    print(f"{len(proofs)} identities proved.")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ddpm_tutor",
        description="ddpm-tutor: denoising diffusion probabilistic models, proved and tested.",
    )
    parser.add_argument("--version", action="version", version=f"ddpm-tutor {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    check = sub.add_parser("check", help="prove the book's identities with SymPy and print them")
    check.set_defaults(func=_cmd_check)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
