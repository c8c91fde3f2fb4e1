"""The numbered menu of the operator tools (demotool.py, gtool.py), as the original's were.

Each entry asks for what it needs (Enter takes the default shown in brackets) and then runs the
same subcommand a non-interactive call would, so the menu and the command line cannot drift apart.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from tools.rest_client import ToolError

# What reading an answer of an unexpected shape raises (a missing key, a list for an object, text
# for a number, 1e999 for an integer): the tools report it as one line like a ToolError instead of
# a traceback.
UNEXPECTED_ANSWER = (AttributeError, IndexError, KeyError, OverflowError, TypeError, ValueError)


@dataclass(frozen=True)
class MenuItem:
    """One numbered entry: its label and what it asks before it gives the subcommand's argv."""

    label: str
    argv: Callable[[], list[str]]


def ask(prompt: str, default: str = "") -> str:
    """A line typed by the operator (the default when it is empty); EOFError at the end of input."""
    shown = f" [{default}]" if default else ""
    return input(f"{prompt}{shown}: ").strip() or default


def unexpected_answer(exc: Exception, node: str) -> str:
    """One line for an answer of `node` ("the peer") that was not of the shape expected."""
    what = f"missing {exc}" if isinstance(exc, KeyError) else str(exc) or type(exc).__name__
    return f"unexpected answer from {node}: {what}"


def run_menu(
    title: str,
    items: Sequence[MenuItem],
    execute: Callable[[list[str]], int],
    node: str,
) -> int:
    """Show the menu until the operator picks 0 (or input ends); each pick runs `execute` on the
    argv its item builds. Errors (a ToolError, an answer of `node` of an unexpected shape) are
    shown on one line and the menu comes back."""
    while True:
        print(f"\n{title}")
        for number, item in enumerate(items, 1):
            print(f"  {number}. {item.label}")
        print("  0. quit")
        try:
            choice = ask("select")
        except EOFError:
            print()
            return 0
        if choice in ("0", "q", "quit"):
            return 0
        if not choice.isdigit() or not 1 <= int(choice) <= len(items):
            print(f"no entry {choice!r}: type a number from 0 to {len(items)}")
            continue
        try:
            code = execute(items[int(choice) - 1].argv())
        except EOFError:
            print()
            return 0
        except KeyboardInterrupt:
            print("\ninterrupted")
            continue
        except ToolError as exc:
            print(f"error: {exc}")
            continue
        except UNEXPECTED_ANSWER as exc:
            print(f"error: {unexpected_answer(exc, node)}")
            continue
        except SystemExit as exc:  # argparse refused what was typed (it printed why)
            code = int(exc.code) if isinstance(exc.code, int) else 2
        if code:
            print(f"(exit status {code})")


def no_subcommand(parser: argparse.ArgumentParser, interactive: bool) -> int | None:
    """Without a subcommand and without a terminal: the usage on stderr and 2; None otherwise
    (the caller shows its menu)."""
    if interactive:
        return None
    parser.print_help(sys.stderr)
    return 2


def run_tool(
    name: str,
    parser: argparse.ArgumentParser,
    argv: Sequence[str] | None,
    execute: Callable[[argparse.Namespace], int],
    menu: Callable[[argparse.ArgumentParser, argparse.Namespace], int],
    node: str,
) -> int:
    """The `main` of an operator tool: its subcommand, or its menu on a terminal (the usage and 2
    without one); a ToolError, or an answer of `node` ("the peer") of an unexpected shape, is one
    line on stderr and 1, Ctrl-C is 130."""
    args = parser.parse_args(argv)
    try:
        if args.command is None:
            refused = no_subcommand(parser, sys.stdin.isatty() and sys.stdout.isatty())
            return refused if refused is not None else menu(parser, args)
        return execute(args)
    except ToolError as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return 1
    except UNEXPECTED_ANSWER as exc:
        print(f"{name}: {unexpected_answer(exc, node)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
