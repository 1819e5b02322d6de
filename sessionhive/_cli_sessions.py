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
from collections.abc import Callable
from typing import Any

from sessionhive.model.errors import SessionNotFound
from sessionhive.persistence import open_store
from sessionhive.persistence.snapshot import SessionSnapshot

__all__ = ["add_sessions_parser"]


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


def _load(store: Any, session_id: str) -> SessionSnapshot:
    snapshot = store.load(session_id)
    if snapshot is None:
        raise SessionNotFound(session_id)
    assert isinstance(snapshot, SessionSnapshot)
    return snapshot


def cmd_list(args: argparse.Namespace) -> int:
    store = open_store(args.store)
    try:
        ids = store.list_ids()
        if not args.long:
            for session_id in ids:
                print(session_id)
            return 0
        rows = [_summary(_load(store, session_id)) for session_id in ids]
    finally:
        store.close()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    columns = ["id", "parent", "state", "messages", "tokens", "model", "updated"]
    widths = {c: max([len(c)] + [len(str(r[c] or "-")) for r in rows]) for c in columns}
    print("  ".join(c.upper().ljust(widths[c]) for c in columns))
    for row in rows:
        print("  ".join(str(row[c] or "-").ljust(widths[c]) for c in columns))
    print(f"{len(rows)} session(s) in {store.name}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    store = open_store(args.store)
    try:
        snapshot = _load(store, args.session_id)
    finally:
        store.close()
    info = _summary(snapshot)
    for key, value in info.items():
        print(f"{key:>9}: {value if value is not None else '-'}")
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
    text = json.dumps(snapshots if len(snapshots) != 1 or not args.session_ids else snapshots[0], indent=2)
    if args.output and args.output != "-":
        with open(args.output, "w", encoding="utf-8") as out:
            out.write(text + "\n")
        print(f"exported {len(snapshots)} session(s) to {args.output}", file=sys.stderr)
    else:
        print(text)
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    store = open_store(args.store)
    try:
        known = set(store.list_ids())
        missing = [s for s in args.session_ids if s not in known]
        if missing:
            raise SessionNotFound(missing[0])
        doomed = list(args.session_ids)
        if args.recursive:
            for session_id in sorted(known - set(doomed)):
                snapshot = store.load(session_id)
                if snapshot is not None and snapshot.parent_id in doomed:
                    doomed.append(session_id)
        store.write_batch((), doomed)
    finally:
        store.close()
    print(f"deleted {len(doomed)} session(s): {', '.join(doomed)}")
    return 0


def add_sessions_parser(
    sub: Any, add_store_option: Callable[[argparse.ArgumentParser, str | None], None]
) -> None:
    sessions = sub.add_parser("sessions", help="look at and manage stored sessions")
    actions = sessions.add_subparsers(dest="action", required=True)

    listing = actions.add_parser("list", help="list stored session ids")
    listing.add_argument("--long", "-l", action="store_true", help="one row per session with details")
    listing.add_argument("--json", action="store_true", help="with --long: JSON instead of a table")
    add_store_option(listing, "sqlite:///sessionhive.db")
    listing.set_defaults(func=cmd_list)

    show = actions.add_parser("show", help="a session's details and history")
    show.add_argument("session_id")
    show.add_argument("--last", type=int, default=0, help="only the last N messages")
    add_store_option(show, "sqlite:///sessionhive.db")
    show.set_defaults(func=cmd_show)

    export = actions.add_parser("export", help="sessions as JSON snapshots (all when no id is given)")
    export.add_argument("session_ids", nargs="*")
    export.add_argument("--output", "-o", help="file to write (default: stdout)")
    add_store_option(export, "sqlite:///sessionhive.db")
    export.set_defaults(func=cmd_export)

    delete = actions.add_parser("delete", help="delete sessions from the store")
    delete.add_argument("session_ids", nargs="+")
    delete.add_argument("--recursive", "-r", action="store_true", help="also delete their child sessions")
    add_store_option(delete, "sqlite:///sessionhive.db")
    delete.set_defaults(func=cmd_delete)
