"""``nnsight-compile``: check code for remotability, or print the IR of a script's traces.

Usage::

    nnsight-compile check [--format text|json] [--target-python X.Y] PATH|MODULE...
    nnsight-compile --check PATH|MODULE...          (same as "check")
    nnsight-compile emit [--binary OUT] [--line N] PATH|MODULE...

``check`` exits 1 when it finds errors, 0 otherwise; usage errors exit 2.
``emit`` prints the IR text of each outermost tracing with-block of its inputs
(files, directories and module names, as ``check`` takes them), each preceded
by a ``# FILE:LINE`` comment line (never part of a program, so the output
splits into programs at column-0 ``#`` lines).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import List, Optional, Sequence, Tuple

EXIT_OK, EXIT_ERRORS, EXIT_USAGE = 0, 1, 2

_COMMANDS = ("check", "emit")


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); return the exit code."""
    args = _normalize(list(sys.argv[1:] if argv is None else argv))
    parser = _parser()
    try:
        ns = parser.parse_args(args)
    except SystemExit as e:  # argparse: --help (0) or a usage error (2)
        return e.code if isinstance(e.code, int) else EXIT_USAGE
    if ns.command is None:
        parser.print_usage(sys.stderr)
        print("nnsight-compile: error: a command is required (check or emit)", file=sys.stderr)
        return EXIT_USAGE
    try:
        return ns.run(ns, parser)
    except BrokenPipeError:  # the reader went away (``| head``): stop quietly, like other tools
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return EXIT_ERRORS


def _normalize(args: List[str]) -> List[str]:
    """``--check PATH...`` is the flag spelling of the ``check`` command."""
    if "--check" in args and not any(a in _COMMANDS for a in args):
        args.remove("--check")
        args.insert(0, "check")
    return args


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nnsight-compile",
        description="Check Python code for remotability and print the intervention IR of traces.",
        epilog="'nnsight-compile --check PATH...' is the same as 'nnsight-compile check PATH...'. "
               "See docs/remotable-python.md and docs/ir.md.")
    parser.set_defaults(command=None)
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")

    check = sub.add_parser(
        "check", help="report code that cannot run on the server (static: nothing is imported)",
        description="Report code that cannot run on the server. Inputs are files, directories "
                    "(checked recursively) and installed module names (located, never imported). "
                    "Exit status: 1 if errors were found, 0 otherwise, 2 on usage errors.")
    check.add_argument("paths", nargs="+", metavar="PATH", help="a file, a directory or a module name")
    check.add_argument("--format", choices=("text", "json"), default="text", help="output format (default: text)")
    check.add_argument("--target-python", default=None, metavar="X.Y",
                       help="oldest Python the code must parse on (default: %s)" % _default_target_text())
    check.set_defaults(command="check", run=_run_check)

    emit = sub.add_parser(
        "emit", help="print the IR of each tracing with-block of scripts",
        description="Print the IR text of each tracing with-block (with x.trace(...), .generate(...), "
                    ".session(...), .scan(...), .edit(...)) of scripts. Inputs are files, directories "
                    "(recursively; files without a tracing block are skipped) and module names, as for "
                    "'check'. Free names are shown as bound at run time. Exit status: 1 if a file has "
                    "errors or no input has a tracing block, 0 otherwise, 2 on usage errors.")
    emit.add_argument("paths", nargs="+", metavar="PATH", help="a file, a directory or a module name")
    emit.add_argument("--binary", metavar="OUT",
                      help="also write the binary IR to OUT (OUT-1, OUT-2... before the extension when "
                           "there are several blocks)")
    emit.add_argument("--line", type=int, metavar="N",
                      help="only the block whose with-header covers line N (one file only)")
    emit.set_defaults(command="emit", run=_run_emit)
    return parser


def _default_target() -> Tuple[int, int]:
    from .ir.version import MIN_PYTHON

    return MIN_PYTHON


def _default_target_text() -> str:
    return "%d.%d" % _default_target()


def _parse_version(text: str) -> Tuple[int, int]:
    parts = text.split(".")
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise ValueError("expected X.Y, got %r" % text)
    version = (int(parts[0]), int(parts[1]))
    if version < _default_target() or version[0] != 3:
        raise ValueError("--target-python must be 3.x and at least %s" % _default_target_text())
    return version


def _run_check(ns: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from .analysis import TargetError, check_paths

    try:
        target = _parse_version(ns.target_python) if ns.target_python else _default_target()
    except ValueError as e:
        parser.print_usage(sys.stderr)
        print("nnsight-compile check: error: %s" % e, file=sys.stderr)
        return EXIT_USAGE
    try:
        report = check_paths(ns.paths, target=target)
    except TargetError as e:
        print("nnsight-compile check: error: %s" % e, file=sys.stderr)
        return EXIT_USAGE
    if ns.format == "json":
        print(json.dumps(report.to_json(), indent=2))
    else:
        for d in report.diagnostics:
            print(d.render())
            print()
        print(report.summary())
    return EXIT_ERRORS if report.errors else EXIT_OK


def _run_emit(ns: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from .analysis import TargetError, resolve

    try:
        targets = [resolve(arg) for arg in ns.paths]
    except TargetError as e:
        print("nnsight-compile emit: error: %s" % e, file=sys.stderr)
        return EXIT_USAGE
    files = []
    for target in targets:
        files += [shown for shown, _ in target.files if shown not in files]
    single = len(ns.paths) == 1 and os.path.isfile(ns.paths[0])
    if ns.line is not None and not single:
        parser.print_usage(sys.stderr)
        print("nnsight-compile emit: error: --line needs exactly one file", file=sys.stderr)
        return EXIT_USAGE
    programs, failed = [], False
    for path in files:
        found, ok = _emit_file(path, ns.line, report_empty=single)
        programs += found
        failed = failed or not ok
    if not programs and not single:
        print("nnsight-compile emit: error: no tracing with-block found in %s (looked for with x.%s(...))" % (
            ", ".join(ns.paths), "/.".join(_TRACING)), file=sys.stderr)
        return EXIT_ERRORS
    for i, (path, program) in enumerate(programs):
        if i:
            print()
        print("# %s:%d" % (path, program.units[0].header[0]))
        sys.stdout.write(_print_program(program))
    if ns.binary:
        from .ir import encode

        for out, (_, program) in zip(_binary_paths(ns.binary, len(programs)), programs):
            payload = encode(program)
            with open(out, "wb") as f:
                f.write(payload)
            print("wrote %s (%d bytes)" % (out, len(payload)), file=sys.stderr)
    return EXIT_ERRORS if failed else EXIT_OK


_TRACING = ("trace", "generate", "session", "scan", "edit")


def _print_program(program) -> str:
    from .ir import print_program

    return print_program(program)


def _emit_file(path: str, line: Optional[int], report_empty: bool) -> Tuple[list, bool]:
    """``([(path, program)...], ok)`` for one file; errors go to stderr."""
    from .analysis.blocks import tracing_blocks
    from .analysis.syntax import syntax_error
    from .frontend import FrontendError, lower
    from .ir import verify
    from .ir.errors import IRError

    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        print("nnsight-compile emit: error: %s" % e, file=sys.stderr)
        return [], False
    text = _decode(data)
    try:
        lines = tracing_blocks(text)
    except Exception as e:  # libcst.ParserSyntaxError, or the native parser's own errors
        print(syntax_error(text, e, path).render(), file=sys.stderr)
        return [], False
    if line is not None:
        lines = [n for n in lines if n <= line][-1:]
    if not lines:
        if not report_empty:
            return [], True
        where = " at line %d" % line if line is not None else ""
        print("nnsight-compile emit: error: no tracing with-block found%s in %s (looked for with x.%s(...))"
              % (where, path, "/.".join(_TRACING)), file=sys.stderr)
        return [], False
    programs = []
    try:
        for n in lines:
            program = lower(text, path, n if line is None else line)
            verify(program)
            programs.append((path, program))
    except (FrontendError, IRError) as e:
        print("nnsight-compile emit: error: %s: %s" % (path, e), file=sys.stderr)
        return [], False
    return programs, True


def _decode(data: bytes) -> str:
    import io
    import tokenize

    try:
        encoding, _ = tokenize.detect_encoding(io.BytesIO(data).readline)
        text = data.decode(encoding)
    except (SyntaxError, UnicodeDecodeError, LookupError):
        text = data.decode("utf-8", "replace")
    return text[1:] if text.startswith("\ufeff") else text


def _binary_paths(out: str, n: int) -> List[str]:
    if n == 1:
        return [out]
    stem, ext = os.path.splitext(out)
    return ["%s-%d%s" % (stem, i + 1, ext) for i in range(n)]


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
