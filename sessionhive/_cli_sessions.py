"""``sessionhive sessions list|show|export|delete``: look at and manage stored sessions.

These commands open the store directly, without actors. Run ``delete``
while no Hive is serving the same store: a live session would write itself
back on its next change.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

from rich.console import Console
from rich.table import Table

from sessionhive import InvalidConfig, SessionNotFound
from sessionhive.persistence import SessionSnapshot, SessionStore, open_store

__all__ = ["add_sessions_parser"]

DEFAULT_STORE = "sqlite:///sessionhive.db"
_COLUMNS = ("id", "parent", "state", "messages", "tokens", "model", "updated")


def _summary(snapshot: SessionSnapshot) -> dict[str, Any]:
    llm = snapshot.llm_config
    return {
        "id": snapshot.session_id,
        "parent": snapshot.parent_id,
        "state": snapshot.state,
        "messages": len(snapshot.messages),
        "tokens": snapshot.usage.total_tokens,
        "model": f"{llm.provider}/{llm.model}" if llm else None,
        "version": snapshot.version,
        "updated": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(snapshot.updated_at)),
    }


def _load(store: SessionStore, session_id: str) -> SessionSnapshot:
    snapshot = store.load(session_id)
    if snapshot is None:
        raise SessionNotFound(session_id)
    return snapshot


def _count(text: str) -> int:
    """A command-line count: a whole number >= 0 (argparse reports anything else as a usage error)."""
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}")
    return int(text)


def _cell(value: Any) -> str:
    return "-" if value is None else str(value)


def cmd_list(args: argparse.Namespace) -> int:
    store = open_store(args.store)
    try:
        ids = store.list_ids()
        if not args.long and not args.json:
            for session_id in ids:
                print(session_id)
            return 0
        rows = [_summary(_load(store, session_id)) for session_id in ids]
        name = args.store
    finally:
        store.close()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    console = Console(highlight=False)
    if console.is_terminal:
        table = Table(caption=f"{len(rows)} session(s) in {name}", caption_justify="left")
        for column in _COLUMNS:
            table.add_column(column.upper(), justify="right" if column in ("messages", "tokens") else "left")
        for row in rows:
            table.add_row(*(_cell(row[c]) for c in _COLUMNS))
        console.print(table)
        return 0
    # Not a terminal: plain aligned columns that grep, cut and awk read.
    widths = {c: max([len(c)] + [len(_cell(r[c])) for r in rows]) for c in _COLUMNS}
    print("  ".join(c.upper().ljust(widths[c]) for c in _COLUMNS).rstrip())
    for row in rows:
        print("  ".join(_cell(row[c]).ljust(widths[c]) for c in _COLUMNS).rstrip())
    print(f"{len(rows)} session(s) in {name}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    store = open_store(args.store)
    try:
        snapshot = _load(store, args.session_id)
    finally:
        store.close()
    info = _summary(snapshot)
    for key, value in info.items():
        print(f"{key:>9}: {_cell(value)}")
    print(f"   policy: {json.dumps(snapshot.confirmation_policy.to_dict())}")
    print()
    for message in snapshot.messages[-args.last :] if args.last else snapshot.messages:
        calls = "".join(f" -> {c.name}({json.dumps(c.arguments)})" for c in message.tool_calls)
        text = message.text if len(message.text) <= 300 else message.text[:300] + "..."
        print(f"[{message.role}] {text}{calls}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    store = open_store(args.store)
    try:
        ids = args.session_ids or store.list_ids()
        snapshots = [_load(store, session_id).to_dict() for session_id in ids]
    finally:
        store.close()
    # Always a list, for one id as for all: the same jq filter reads every export.
    text = json.dumps(snapshots, indent=2)
    if args.output and args.output != "-":
        with open(args.output, "w", encoding="utf-8") as out:
            out.write(text + "\n")
        print(f"exported {len(snapshots)} session(s) to {args.output}", file=sys.stderr)
    else:
        print(text)
    return 0


def _descendants(roots: Iterable[str], parents: dict[str, str | None]) -> list[str]:
    """Every session below ``roots`` (children, their children...), parents before children."""
    children: dict[str, list[str]] = {}
    for session_id, parent in sorted(parents.items()):
        if parent is not None:
            children.setdefault(parent, []).append(session_id)
    found: list[str] = []
    frontier = list(roots)
    seen = set(frontier)
    while frontier:
        nxt: list[str] = []
        for parent in frontier:
            for child in children.get(parent, ()):
                if child not in seen:
                    seen.add(child)
                    found.append(child)
                    nxt.append(child)
        frontier = nxt
    return found


def cmd_delete(args: argparse.Namespace) -> int:
    store = open_store(args.store)
    try:
        parents: dict[str, str | None] = {}
        for session_id in store.list_ids():
            snapshot = store.load(session_id)
            if snapshot is not None:
                parents[session_id] = snapshot.parent_id
        named = list(dict.fromkeys(args.session_ids))
        # A missing id whose children are still stored (orphans) is a valid target with -r.
        orphaned_parents = {p for p in parents.values() if p is not None and p not in parents}
        for session_id in named:
            if session_id not in parents and not (args.recursive and session_id in orphaned_parents):
                if session_id in orphaned_parents:
                    raise InvalidConfig(
                        f"session {session_id!r} is gone but its child sessions are still stored; "
                        f"add -r to delete them: sessionhive sessions delete -r {session_id}"
                    )
                raise SessionNotFound(session_id)
        below = [s for s in _descendants(named, parents) if s not in named]
        if below and not args.recursive:
            shown = ", ".join(below[:5]) + (f" and {len(below) - 5} more" if len(below) > 5 else "")
            raise InvalidConfig(
                f"{len(below)} child session(s) would be left without their parent: {shown}; "
                "add -r to delete them too"
            )
        doomed = [s for s in named if s in parents] + below
        store.write_batch((), doomed)
    finally:
        store.close()
    print(f"deleted {len(doomed)} session(s): {', '.join(doomed) or '-'}")
    return 0


def add_sessions_parser(
    sub: Any, add_store_option: Callable[[argparse.ArgumentParser, str | None], None]
) -> None:
    sessions = sub.add_parser(
        "sessions",
        help="look at and manage stored sessions",
        description="Look at and manage the sessions of a store. These commands read the store "
        "directly; run delete while no sessionhive process serves the same store.",
    )
    actions = sessions.add_subparsers(dest="action", required=True, metavar="ACTION")

    def action(
        name: str, run: Callable[[argparse.Namespace], int], summary: str, description: str | None = None
    ) -> argparse.ArgumentParser:
        """One ``sessions`` subcommand: every one reads the store that ``--store`` names."""
        parser: argparse.ArgumentParser = actions.add_parser(name, help=summary, description=description)
        add_store_option(parser, DEFAULT_STORE)
        parser.set_defaults(func=run)
        return parser

    listing = action(
        "list",
        cmd_list,
        "list stored session ids",
        "List the stored session ids, or with --long one row per session "
        "(a table on a terminal, plain columns otherwise).",
    )
    listing.add_argument("--long", "-l", action="store_true", help="one row per session with details")
    listing.add_argument("--json", action="store_true", help="the rows of --long as a JSON list")

    show = action("show", cmd_show, "a session's details and history")
    show.add_argument("session_id", metavar="ID", help="the session to show")
    show.add_argument("--last", type=_count, default=0, metavar="N", help="only the last N messages (0: all)")

    export = action(
        "export",
        cmd_export,
        "sessions as a JSON list of snapshots (all when no id is given)",
        "Print the sessions as a JSON list of snapshots: always a list, for one id as for all of them.",
    )
    export.add_argument("session_ids", nargs="*", metavar="ID", help="sessions to export (default: all)")
    export.add_argument("--output", "-o", metavar="FILE", help="file to write (default: stdout)")

    delete = action(
        "delete",
        cmd_delete,
        "delete sessions from the store (-r: with their child sessions)",
        "Delete sessions from the store. A session with child sessions is deleted only "
        "with -r, which deletes its children, their children and so on; -r also removes the "
        "children of a parent that is already gone.",
    )
    delete.add_argument("session_ids", nargs="+", metavar="ID", help="sessions to delete")
    delete.add_argument(
        "--recursive", "-r", action="store_true", help="also delete their child sessions, at every depth"
    )
