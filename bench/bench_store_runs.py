"""What a session's runs cost each step of a turn in the SQL store: only changed runs written vs all.

Every step of a turn writes the session's snapshot, runs included (issue 20:
the per-step write cost). ``--sessions`` sessions each keep ``--kept``
finished runs and one running run; each round writes one step of every
session in one ``write_batch`` (as the group commit does): one message more,
the event id advanced. Four variants on a fresh SQLite file each:

- ``no runs``: the step as it was before runs existed;
- ``runs unchanged``: the kept runs, none changed (a step inside a tool call);
- ``running run changed``: the running run's record changes at every step
  (its ``last_event_id``): the store upserts that one row;
- ``rewrite all``: the same snapshots, with the store made to delete and
  insert every run of the session at each step (what a store without
  change tracking does).

    .venv/bin/python bench/bench_store_runs.py [--sessions 200] [--steps 20] [--kept 100] [--repeat 3]

Reported: steps/s (median of ``--repeat``) and the ratio to ``no runs``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Literal

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import machine_info, median, print_table
from bench.bench_persistence import message, snapshot
from sessionhive.model.runs import Run, make_run_id
from sessionhive.persistence import SessionSnapshot, SqlStore
from sessionhive.persistence.stores import sql as sql_store

Variant = Literal["no runs", "runs unchanged", "running run changed", "rewrite all"]
VARIANTS: tuple[Variant, ...] = ("no runs", "runs unchanged", "running run changed", "rewrite all")


def kept_runs(session_id: str, kept: int) -> tuple[Run, ...]:
    return tuple(
        Run(
            run_id=make_run_id(session_id),
            session_id=session_id,
            prompt=f"turn {n}: please update the parser to accept trailing commas",
            status="completed",
            idempotency_key=f"key-{n}",
            created_at=1.0 + n,
            started_at=1.5 + n,
            ended_at=2.0 + n,
            text="Done: trailing commas are accepted now.",
            stop_reason="end_turn",
            last_event_id=10 * n,
        )
        for n in range(kept)
    )


def rounds(variant: Variant, sessions: int, steps: int, kept: int) -> list[list[SessionSnapshot]]:
    """The snapshots of each round: one step of every session."""
    history = tuple(message(i) for i in range(steps + 1))
    per_session: list[list[SessionSnapshot]] = []
    for s in range(sessions):
        sid = f"s{s}"
        finished = () if variant == "no runs" else kept_runs(sid, kept)
        running = Run(make_run_id(sid), sid, "the running turn", status="running", created_at=1.0 + kept)
        runs = finished if variant == "no runs" else (*finished, running)
        steps_of_session = []
        for step in range(steps + 1):
            if variant in ("running run changed", "rewrite all"):
                runs = (*finished, replace(running, last_event_id=step))
            base = snapshot(sid, step + 1, history[: step + 1])
            steps_of_session.append(replace(base, runs=runs, event_seq=step))
        per_session.append(steps_of_session)
    return [[steps_of_session[step] for steps_of_session in per_session] for step in range(steps + 1)]


def measure(variant: Variant, sessions: int, steps: int, kept: int) -> float:
    """Steps written per second (the first round, which creates the sessions, not counted)."""
    batches = rounds(variant, sessions, steps, kept)
    with tempfile.TemporaryDirectory() as tmp:
        store = SqlStore(f"sqlite:///{Path(tmp) / 'bench.db'}")
        original = sql_store._WritePlan._changed_runs  # noqa: SLF001
        if variant == "rewrite all":

            def rewrite(
                plan: sql_store._WritePlan,
                runs: tuple[Run, ...],
                committed: tuple[Run, ...],  # noqa: ARG001 - every run is rewritten, whatever was committed
            ) -> None:
                plan.clear_runs.append(runs[0].session_id)
                plan.upserted_runs.extend(sql_store._run_row(run) for run in runs)  # noqa: SLF001

            sql_store._WritePlan._changed_runs = rewrite  # type: ignore[method-assign,assignment]  # noqa: SLF001
        try:
            store.write_batch(batches[0], [])
            started = time.perf_counter()
            for batch in batches[1:]:
                store.write_batch(batch, [])
            took = time.perf_counter() - started
        finally:
            sql_store._WritePlan._changed_runs = original  # type: ignore[method-assign]  # noqa: SLF001
            store.close()
    return sessions * steps / took


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sessions", type=int, default=200)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--kept", type=int, default=100, help="finished runs each session keeps")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    results: dict[Variant, list[float]] = {variant: [] for variant in VARIANTS}
    for run in range(args.repeat):
        for variant in VARIANTS:
            results[variant].append(measure(variant, args.sessions, args.steps, args.kept))
        print(f"run {run + 1}: " + ", ".join(f"{v} {results[v][-1]:,.0f}" for v in VARIANTS), flush=True)
    base = median(results["no runs"])
    print(f"\n{args.sessions} sessions x {args.steps} steps, {args.kept} finished runs kept, SQLite; medians")
    print_table(
        ["variant", "steps/s", "x no runs"],
        [
            [variant, f"{median(results[variant]):,.0f}", f"{median(results[variant]) / base:.2f}"]
            for variant in VARIANTS
        ],
    )
    print(machine_info())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
