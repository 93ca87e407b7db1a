"""The chaos suite's table, JSON and verdict."""
from __future__ import annotations

import json
from pathlib import Path

COLUMNS = ("fault", "acked", "lost", "twice", "unacked", "traffic s", "health s", "recover s", "outbox drained",
           "events (expected / in CH)")


def _fmt(v) -> str:
    if v is None:
        return "never"
    if isinstance(v, float):
        return f"{v:.1f}"
    return str(v)


def rows(phases: list[dict]) -> list[tuple]:
    out = []
    for p in phases:
        ev = p.get("events") or {}
        drained = "yes" if p.get("outbox_drained") else "NO"
        if p.get("outbox") and not p["outbox"].get("drained"):
            drained += " (backlog left)"
        out.append((p["fault"], p.get("acked", 0), p.get("lost", 0), p.get("duplicated", 0), p.get("unacked", 0),
                    _fmt(p.get("traffic_s")), _fmt(p.get("health_s")), _fmt(p.get("recover_s")), drained,
                    f"{ev.get('expected', 0)} / {ev.get('in_clickhouse', 0)}"))
    return out


def table(phases: list[dict]) -> str:
    body = [tuple(str(c) for c in r) for r in rows(phases)]
    widths = [max(len(COLUMNS[i]), *(len(r[i]) for r in body)) for i in range(len(COLUMNS))] if body else \
        [len(c) for c in COLUMNS]
    line = lambda cells: "  ".join(str(c).ljust(w) if i in (0, 8, 9) else str(c).rjust(w)  # noqa: E731
                                   for i, (c, w) in enumerate(zip(cells, widths)))
    out = [line(COLUMNS), line(["-" * w for w in widths])]
    out += [line(r) for r in body]
    out.append("")
    for p in phases:
        inj = p.get("injected") or {}
        how = ", ".join(f"{k} {v}" for k, v in inj.items() if k != "error")
        out.append(f"{p['fault']:<8} {p.get('conversations', 0)} conversations, {p.get('sent', 0)} messages sent; "
                   f"killed {p.get('kill_after_s')} s into the surge ({how or 'not injected'}); "
                   f"people reconnected {p.get('people', {}).get('reconnects', 0)}x, "
                   f"gave up {p.get('people', {}).get('gave_up', 0)}x")
    return "\n".join(out)


def problems(report: dict) -> tuple[list[str], list[str]]:
    """(failures, warnings). Failures: a message lost or shown twice, an outbox that did not
    drain into ClickHouse with exactly the run's events, a fault not injected, a stage that
    crashed. Warnings: messages never acknowledged, people who gave up waiting."""
    fail, warn = [], []
    for stage in report.get("stages", []):
        if stage.get("error"):
            fail.append(f"stage {stage.get('kind')}: {stage['error'].strip().splitlines()[-1][:300]}")
    for p in report.get("faults", []):
        f = p["fault"]
        if p.get("lost") or p.get("duplicated"):
            fail.append(f"{f}: {p.get('lost')} lost, {p.get('duplicated')} shown twice")
        if not p.get("outbox_drained"):
            fail.append(f"{f}: the outbox did not drain to exactly the run's events "
                        f"(outbox {p.get('outbox')}, differences {p.get('events', {}).get('differences')}, "
                        f"copies {p.get('events', {}).get('copies')})")
        if not p.get("kill_after_s"):
            fail.append(f"{f}: the fault was not injected: {(p.get('injected') or {}).get('error', '')[-300:]}")
        if p.get("load_error"):
            fail.append(f"{f}: the surge failed: {p['load_error'].strip().splitlines()[-1][:300]}")
        if p.get("recover_s") is None and p.get("kill_after_s"):
            fail.append(f"{f}: /healthz never answered ok again within the phase")
        if p.get("unacked"):
            warn.append(f"{f}: {p['unacked']} message(s) never acknowledged")
        gave_up = (p.get("people") or {}).get("gave_up", 0)
        if gave_up:
            warn.append(f"{f}: {gave_up} person(s) gave up waiting: {p.get('stuck', [])[:3]}")
    return fail, warn


def write_json(path: Path, report: dict) -> None:
    Path(path).write_text(json.dumps(report, indent=1, default=str))
