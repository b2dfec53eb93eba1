"""The ``labkit`` command: parse, call, print. The work lives in the other modules."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from labkit import grade
from labkit.manifest import ManifestError, load_course


def _status(args: argparse.Namespace) -> int:
    from labkit.status import status

    print(status(load_course()))
    return 0


def _stubs(args: argparse.Namespace) -> int:
    from labkit import stubs

    course = load_course()
    if args.check:
        stale = stubs.stale(course)
        for name in stale:
            print(f"stale stub: src/minituner/{name} differs from what solutions/ generates; run `make stubs`")
        return 1 if stale else 0
    written, refused = stubs.write_stubs(course, force=args.force)
    for name in written:
        print(f"wrote src/minituner/{name}")
    for name in refused:
        print(
            f"kept src/minituner/{name}: it holds your edits. Move them aside, or run "
            "`make stubs FORCE=1` to overwrite them (your work in it is lost)."
        )
    if not written and not refused:
        print("stubs are up to date")
    return 1 if refused else 0


def _check(args: argparse.Namespace) -> int:
    from labkit.check import run_checks

    return run_checks(load_course(), only=args.only)


def _readme(args: argparse.Namespace) -> int:
    from labkit.docs import readme_with_table

    course = load_course()
    path = course.root / "README.md"
    text = path.read_text(encoding="utf-8")
    new = readme_with_table(course, text)
    if args.check:
        if new != text:
            print("README.md's lab table differs from course.toml: run `labkit readme`")
            return 1
        return 0
    path.write_text(new, encoding="utf-8")
    print("README.md's lab table now matches course.toml")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="labkit", description="minituner's course machinery")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("status", help="your progress, lab by lab, and the next step")
    p.set_defaults(func=_status)

    p = sub.add_parser("stubs", help="generate src/minituner stubs from solutions/")
    p.add_argument("--force", action="store_true", help="overwrite stubs that hold edits")
    p.add_argument("--check", action="store_true", help="only report stale stubs (exit 1 if any)")
    p.set_defaults(func=_stubs)

    p = sub.add_parser("check", help="every self-check of the course (make check)")
    p.add_argument("--only", action="append", default=None, metavar="NAME", help="run one check")
    p.set_defaults(func=_check)

    p = sub.add_parser("readme", help="rewrite README.md's lab table from course.toml")
    p.add_argument("--check", action="store_true", help="only say whether it is current")
    p.set_defaults(func=_readme)

    grade.add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except ManifestError as err:
        print(f"labkit: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
