"""The Markdown export of sessions with subagents, through a real ``hookdb api`` on a real PostgreSQL:
each subagent's events under a line that names it, right after the Agent call that started it, nested by
depth, concurrent ones never mixed; a session without subagents exports as it did before, and the JSON
export is the timeline as it is.

Events are stored as Claude Code sends them (as in tests/test_web_timeline.py): what a subagent fires
carries its ``agent_id`` and ``agent_type``, SubagentStart and SubagentStop too, and the result of the
Agent call that started it names it (``tool_response.agentId``).
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import seed
import test_web_timeline as timeline
from test_api import TOKENS, add_event, all_pages, client, insert_ledger, write_seed
from test_web_timeline import DATES, EXPLORE, PLAN, PRICES

from conftest import BIN, migrate, run_sql
from fixtures import corpus

START = seed.BASE + timedelta(days=3)


class Session(timeline.Session):
    """tests/test_web_timeline.py's session builder, each event stored as tests/test_api.py stores one (as
    Claude Code's source), starting at START; its card too, unless it has one (``stored``)."""

    def __init__(self, dsn: str, session_id: str, *, stored: bool = False) -> None:
        super().__init__(dsn, session_id, START)
        if stored:
            return
        run_sql(
            dsn,
            "INSERT INTO sessions (tenant_id, session_id, status, model, started_at, updated_at, "
            "subagent_count) VALUES ('acme', $1, 'completed', 'claude-sonnet-4-5', $2, $2, 4)",
            session_id,
            START,
        )

    def event(
        self, offset: float, event_type: str, agent: tuple[str, str] | None = None, **payload: Any
    ) -> None:
        if agent is not None:
            payload |= {"agent_id": agent[0], "agent_type": agent[1]}
        add_event(
            self.dsn,
            self.session_id,
            event_type,
            self.at(offset),
            payload,
            tool_name=payload.get("tool_name"),
        )


def request(session_id: str, request_id: str, offset: float, tokens: int, cost: str, agent: tuple[str, str]):
    return (
        "acme", session_id, request_id, agent[0], agent[1], "claude-sonnet-4-5", tokens, 0, 0, 0, 0,
        Decimal(cost), "reported", START + timedelta(seconds=offset), ["transcript"],
    )  # fmt: skip


def nested_and_concurrent(dsn: str) -> None:
    """The main agent starts Plan, which starts Explore; then two Explore subagents at once, the second
    call's one started first, their events interleaved (tests/test_web_timeline.py's session)."""
    s = Session(dsn, "s-sub")
    s.event(0, "SessionStart", source="startup")
    s.event(1, "UserPromptSubmit", prompt="Fix the loader and check the Q3 data")
    s.call(2, None, "Agent", "tu-plan", {"subagent_type": "Plan", "description": "Plan the loader fix"})
    s.event(2.1, "SubagentStart", PLAN)
    s.call(3, 4, "Bash", "tu-pytest", {"command": "python -m pytest tests/test_loader.py -q"}, PLAN,
           error="Exit code 1")  # fmt: skip
    readers = {"subagent_type": "Explore", "description": "Find the CSV readers"}
    s.call(5, None, "Agent", "tu-explore", readers, PLAN)
    s.event(5.1, "SubagentStart", EXPLORE)
    s.call(6, 6.2, "Read", "tu-read", {"file_path": "/src/loader.py"}, EXPLORE, tool_response={})
    s.event(7, "SubagentStop", EXPLORE, last_assistant_message="Two readers")
    s.event(7.1, "PostToolUse", PLAN, tool_name="Agent", tool_use_id="tu-explore", tool_input=readers,
            tool_response={"status": "completed", "agentId": EXPLORE[0]})  # fmt: skip
    s.call(8, 8.05, "Edit", "tu-edit", {"file_path": "/src/loader.py"}, PLAN, tool_response={})
    s.event(9, "SubagentStop", PLAN, last_assistant_message="The loader is fixed")
    s.event(9.1, "PostToolUse", tool_name="Agent", tool_use_id="tu-plan",
            tool_input={"subagent_type": "Plan", "description": "Plan the loader fix"},
            tool_response={"agentId": PLAN[0]})  # fmt: skip
    for offset, tool_use_id, what in (
        (10, "tu-prices", "Check the prices"),
        (10.1, "tu-dates", "Check the dates"),
    ):
        s.event(offset, "PreToolUse", tool_name="Agent", tool_use_id=tool_use_id,
                tool_input={"subagent_type": "Explore", "description": what})  # fmt: skip
    s.event(10.2, "SubagentStart", DATES)
    s.event(10.3, "SubagentStart", PRICES)
    s.call(11, 11.5, "Grep", "tu-grep", {"pattern": "price"}, PRICES)
    s.call(11.1, 11.6, "Bash", "tu-date", {"command": "date -I"}, DATES)
    s.event(12, "SubagentStop", PRICES, last_assistant_message="Prices are fine")
    s.event(12.5, "SubagentStop", DATES, last_assistant_message="Dates are fine")
    for offset, tool_use_id, agent, what in (
        (13, "tu-prices", PRICES, "Check the prices"),
        (13.1, "tu-dates", DATES, "Check the dates"),
    ):
        s.event(offset, "PostToolUse", tool_name="Agent", tool_use_id=tool_use_id,
                tool_input={"subagent_type": "Explore", "description": what},
                tool_response={"agentId": agent[0]})  # fmt: skip
    s.event(15, "Stop", last_assistant_message="Done")
    insert_ledger(
        dsn,
        [
            request("s-sub", "req_p1", 2.5, 500, "0.04", PLAN),
            request("s-sub", "req_a1", 10.5, 240, "0.01", PRICES),
            request("s-sub", "req_b1", 10.6, 250, "0.01", DATES),
            request("s-sub", "req_b2", 11.8, 180, "0.02", DATES),
        ],
    )


def untimed(line: str) -> str:
    """A timeline line without its time."""
    return re.sub(r"^( *- )`[\d:. -]+` ", r"\1", line)


def markdown(api: Any, session_id: str) -> list[str]:
    with client(api) as http:
        answer = http.get(f"/api/sessions/{session_id}/export", params={"format": "md"})
    assert answer.status_code == 200, answer.text
    lines = answer.text.splitlines()
    return lines[lines.index("## Timeline") + 2 :]


def test_each_subagents_events_are_under_its_own_line_at_its_depth(dsn: str, start_api: Any) -> None:
    migrate(dsn)
    nested_and_concurrent(dsn)
    timeline = [line for line in markdown(start_api(dsn, TOKENS), "s-sub") if line]
    items = [line for line in timeline if line.lstrip().startswith("- ")]

    def depth(line: str) -> int:
        return (len(line) - len(line.lstrip(" "))) // 2

    def what(line: str) -> str:
        return untimed(line).lstrip(" -")

    assert [(depth(line), what(line)) for line in items] == [
        (0, "**SessionStart** — startup"),
        (0, "**Prompt**"),
        (0, "**Agent** `Plan` `Plan the loader fix` — 7.1 s"),
        (0, f"**Plan subagent** `{PLAN[0]}` — Plan the loader fix — 6.9 s — 1 request, 500 tokens, $0.04"),
        (1, "**SubagentStart** — Plan"),
        (1, "**Bash** `python -m pytest tests/test_loader.py -q` — 1.0 s — **failed**: `Exit code 1`"),
        (1, "**Agent** `Explore` `Find the CSV readers` — 2.1 s"),
        (1, f"**Explore subagent** `{EXPLORE[0]}` — Find the CSV readers — 1.9 s"),
        (2, "**SubagentStart** — Explore"),
        (2, "**Read** `/src/loader.py` — 200 ms"),
        (2, "**SubagentStop** (Explore)"),
        (1, "**Edit** `/src/loader.py` — 50 ms"),
        (1, "**SubagentStop** (Plan)"),
        (0, "**Agent** `Explore` `Check the prices` — 3.0 s"),
        (0, f"**Explore subagent** `{PRICES[0]}` — Check the prices — 1.7 s — 1 request, 240 tokens, $0.01"),
        (1, "**SubagentStart** — Explore"),
        (1, "**Grep** `price` — 500 ms"),
        (1, "**SubagentStop** (Explore)"),
        (0, "**Agent** `Explore` `Check the dates` — 3.0 s"),
        (0, f"**Explore subagent** `{DATES[0]}` — Check the dates — 2.3 s — 2 requests, 430 tokens, $0.03"),
        (1, "**SubagentStart** — Explore"),
        (1, "**Bash** `date -I` — 500 ms"),
        (1, "**SubagentStop** (Explore)"),
        (0, "**Stop**"),
    ]
    # Each reply quoted under its own event, one level deeper than the event's line.
    assert "      > Two readers" in timeline
    assert "    > The loader is fixed" in timeline
    assert "    > Prices are fine" in timeline
    assert "    > Dates are fine" in timeline
    assert "  > Done" in timeline


def test_a_subagent_whose_call_result_names_none_follows_the_open_call_of_its_type(
    dsn: str, start_api: Any
) -> None:
    """Older results name no agentId: each subagent goes after the call of its type open when it started."""
    migrate(dsn)
    s = Session(dsn, "s-old")
    review, scan = ("c0ffee0000000001", "general-purpose"), ("c0ffee0000000002", "Explore")
    s.call(1, 9, "Agent", "tu-scan", {"subagent_type": "Explore", "description": "Scan the data"})
    s.call(1.1, 8, "Agent", "tu-review", {"subagent_type": "general-purpose", "description": "Review"})
    s.event(1.2, "SubagentStart", review)
    s.event(1.3, "SubagentStart", scan)
    s.call(2, 2.5, "Bash", "tu-wc", {"command": "wc -l data.csv"}, scan)
    s.call(2.1, 2.2, "Read", "tu-r", {"file_path": "/README.md"}, review)
    s.event(3, "SubagentStop", scan)
    s.event(4, "SubagentStop", review)
    items = [line for line in markdown(start_api(dsn, TOKENS), "s-old") if line.lstrip().startswith("- ")]
    got = [untimed(line) for line in items]
    assert got == [
        "- **Agent** `general-purpose` `Review` — 6.9 s",
        f"- **general-purpose subagent** `{review[0]}` — Review — 2.8 s",
        "  - **SubagentStart** — general-purpose",
        "  - **Read** `/README.md` — 100 ms",
        "  - **SubagentStop** (general-purpose)",
        "- **Agent** `Explore` `Scan the data` — 8.0 s",
        f"- **Explore subagent** `{scan[0]}` — Scan the data — 1.7 s",
        "  - **SubagentStart** — Explore",
        "  - **Bash** `wc -l data.csv` — 500 ms",
        "  - **SubagentStop** (Explore)",
    ]


# The Markdown export of the session ``flat`` builds, as the export wrote it before subagents were nested
# (captured with the writer of commit 6783af7; the "Exported by hookdb at" line left out): 599 lines.
FLAT_SHA256 = "b0b34c03f63a885b889fbbb4c133aecb3e426f31681be1962a4b3bf8ca97bb44"


def flat(dsn: str) -> None:
    """A session without subagents over three pages of events: seeded tool calls, then every kind of line,
    an Agent call whose subagent fired nothing of its own and a SubagentStop without agent_id (older
    versions) among them."""
    write_seed(dsn, seed.Seed("acme", 1, events=1100, prefix="flat"))
    s = Session(dsn, "flat-000000", stored=True)
    s.event(1200, "UserPromptSubmit", prompt="Count the `orders`\nper region")
    s.call(1201, 1203.5, "Agent", "tu-a", {"subagent_type": "Explore", "description": "Find the orders"},
           tool_response={"status": "completed"})  # fmt: skip
    s.event(1203, "SubagentStop", last_assistant_message="Found them", agent_type="Explore")
    s.call(1204, 1204.2, "Read", "tu-r", {"file_path": "/shop/missing.csv"}, error="File does not exist.")
    s.call(1205, None, "Bash", "tu-b", {"command": "sleep 100"})
    s.event(1206, "Notification", message="Claude needs your permission")
    s.event(1207, "Stop", last_assistant_message="There are 12 orders.")


def test_a_session_without_subagents_exports_as_before(dsn: str, start_api: Any) -> None:
    migrate(dsn)
    flat(dsn)
    with client(start_api(dsn, TOKENS)) as http:
        answer = http.get("/api/sessions/flat-000000/export", params={"format": "md"})
    assert answer.status_code == 200, answer.text
    text = re.sub(r"(?m)^Exported by hookdb at .*\n", "", answer.text)
    assert text.count("\n") == 599
    assert "**Agent** `Explore` `Find the orders` — 2.5 s" in text, text
    assert hashlib.sha256(text.encode()).hexdigest() == FLAT_SHA256, text


def test_the_json_export_is_the_timeline_as_it_is(dsn: str, start_api: Any) -> None:
    migrate(dsn)
    nested_and_concurrent(dsn)
    with client(start_api(dsn, TOKENS)) as http:
        exported = http.get("/api/sessions/s-sub/export", params={"format": "json"}).json()
        detail = http.get("/api/sessions/s-sub").json()
        pages = all_pages(http, "/api/sessions/s-sub/events", limit=500)
    assert exported["events"] == pages  # flat, in time order, as the timeline has them
    assert len(pages) == run_sql(dsn, "SELECT count(*) FROM hook_audit_log WHERE session_id = 's-sub'")[0][0]
    assert {k: v for k, v in exported.items() if k not in ("events", "exported_at")} == {
        k: v for k, v in detail.items() if k != "events"
    }


def test_past_the_bound_held_subagents_go_out_in_parts_never_mixed(dsn: str, start_api: Any) -> None:
    """Two subagents at once whose lines outgrow what the writer holds (export.BUFFER_CHARS): each is
    written in parts, each part under its own line, every event once and in order; what is left goes
    right after its call."""
    migrate(dsn)
    s = Session(dsn, "s-long")
    first, second = ("a0a0a0a0a0a0a0a0", "Explore"), ("b0b0b0b0b0b0b0b0", "Explore")
    for offset, tool_use_id, what in ((0, "tu-a", "A"), (0.1, "tu-b", "B")):
        s.event(offset, "PreToolUse", tool_name="Agent", tool_use_id=tool_use_id,
                tool_input={"subagent_type": "Explore", "description": what})  # fmt: skip
    s.event(0.2, "SubagentStart", first)
    s.event(0.3, "SubagentStart", second)
    calls = 2000  # per subagent, a line of ~350 characters each: 1.4 MB in all
    run_sql(
        dsn,
        """INSERT INTO hook_audit_log (tenant_id, event_id, occurred_at, received_at, session_id, event_type,
                                       tool_name, source, payload)
           SELECT 'acme', gen_random_uuid(), t, t, 's-long', kind, 'Bash', 'hook',
                  jsonb_build_object('hook_event_name', kind, 'session_id', 's-long', 'tool_name', 'Bash',
                                     'tool_use_id', 'tu-' || tag || n, 'agent_id', agent,
                                     'agent_type', 'Explore',
                                     'tool_input', jsonb_build_object(
                                         'command', 'echo ' || tag || '-' || n || ' ' || repeat('x', 400)))
           FROM generate_series(1, $4) n,
                LATERAL (VALUES ('A', $2::text, interval '0'), ('B', $3::text, interval '300 ms'))
                    a(tag, agent, d),
                LATERAL (VALUES ('PreToolUse', interval '0'), ('PostToolUse', interval '200 ms')) e(kind, k),
                LATERAL (SELECT $1::timestamptz + n * interval '1 s' + d + k AS t) at""",
        START,
        first[0],
        second[0],
        calls,
    )
    s.event(calls + 2, "SubagentStop", first)
    s.event(calls + 2.5, "SubagentStop", second)
    for offset, tool_use_id, agent in ((calls + 3, "tu-a", first), (calls + 3.1, "tu-b", second)):
        s.event(offset, "PostToolUse", tool_name="Agent", tool_use_id=tool_use_id,
                tool_input={"subagent_type": "Explore"}, tool_response={"agentId": agent[0]})  # fmt: skip
    timeline = [untimed(line) for line in markdown(start_api(dsn, TOKENS), "s-long") if line]

    owner = None
    heads: dict[str, list[int]] = {first[0]: [], second[0]: []}
    seen: dict[str, list[int]] = {"A": [], "B": []}
    for i, line in enumerate(timeline):
        if line.startswith("- **Explore subagent**"):
            owner = re.findall(r"`(\w+)`", line)[0]
            heads[owner].append(i)
        elif line.startswith("- "):
            owner = None
        elif line.startswith("  - **Bash**"):
            tag, n = re.findall(r"`echo ([AB])-(\d+) ", line)[0]
            assert owner == {"A": first[0], "B": second[0]}[tag], (i, line)
            seen[tag].append(int(n))
    assert seen == {"A": list(range(1, calls + 1)), "B": list(range(1, calls + 1))}
    for agent, what in ((first, "A"), (second, "B")):
        lines = [timeline[i] for i in heads[agent[0]]]
        assert len(lines) >= 2, lines
        assert all(line.endswith("continues below") for line in lines[:-1]), lines
        assert lines[-1].startswith(f"- **Explore subagent** `{agent[0]}` — {what} — "), lines
        assert lines[-1].endswith(" — continued"), lines
        assert timeline[heads[agent[0]][-1] - 1].startswith("- **Agent** `Explore` — "), lines


def test_background_running_and_callless_subagents_each_get_their_own_block(dsn: str, start_api: Any) -> None:
    """A call whose result comes at once (the subagent runs in the background) has its subagent's block
    when that stops; one still running, under a call with no result, at the end; a subagent whose call is
    not on record, in the main list; a denied Agent call starts none."""
    migrate(dsn)
    s = Session(dsn, "s-bg")
    bg, run = ("b9b9b9b9b9b9b9b9", "Explore"), ("c9c9c9c9c9c9c9c9", "Plan")
    lost = ("d9d9d9d9d9d9d9d9", "Plan")
    s.call(1, 1.5, "Agent", "tu-bg", {"subagent_type": "Explore", "description": "Watch the logs"},
           tool_response={"status": "async_launched", "agentId": bg[0]})  # fmt: skip
    s.event(2, "SubagentStart", bg)
    s.call(2.5, 2.6, "Bash", "tu-main", {"command": "make"})
    s.call(3, 3.5, "Bash", "tu-tail", {"command": "tail -f app.log"}, bg)
    s.event(4, "SubagentStop", bg)
    never = {"subagent_type": "Plan", "description": "Never ran"}
    denied = {"tool_name": "Agent", "tool_use_id": "tu-no", "tool_input": never}
    s.event(4.5, "PreToolUse", **denied)
    s.event(4.6, "PermissionDenied", **denied, reason="denied by policy")
    s.event(5, "SubagentStart", lost)
    s.event(5.5, "SubagentStop", lost)
    s.call(6, None, "Agent", "tu-run", {"subagent_type": "Plan", "description": "Plan the rest"})
    s.event(6.1, "SubagentStart", run)
    s.call(7, None, "Read", "tu-read", {"file_path": "/plan.md"}, run)
    s.event(8, "Notification", message="waiting")
    timeline = markdown(start_api(dsn, TOKENS), "s-bg")
    items = [untimed(line) for line in timeline if line.lstrip().startswith("- ")]
    assert items == [
        "- **Agent** `Explore` `Watch the logs` — 500 ms",
        "- **Bash** `make` — 100 ms",
        f"- **Explore subagent** `{bg[0]}` — Watch the logs — 2.0 s",
        "  - **SubagentStart** — Explore",
        "  - **Bash** `tail -f app.log` — 500 ms",
        "  - **SubagentStop** (Explore)",
        "- **Agent** `Plan` `Never ran` — no result recorded",
        "- **PermissionDenied** — denied by policy",
        f"- **Plan subagent** `{lost[0]}` — 500 ms",
        "  - **SubagentStart** — Plan",
        "  - **SubagentStop** (Plan)",
        "- **Agent** `Plan` `Plan the rest` — no result recorded",
        "- **Notification** — waiting",
        f"- **Plan subagent** `{run[0]}` — Plan the rest — no stop recorded",
        "  - **SubagentStart** — Plan",
        "  - **Read** `/plan.md` — no result recorded",
    ]


def test_a_backfilled_claude_code_session_exports_its_subagent_under_its_call(
    dsn: str, start_api: Any, tmp_path: Path
) -> None:
    """Claude Code's own transcripts (a session and its Explore subagent), imported by ``hookdb backfill``
    with the usage ledger built from them: the subagent's block follows its Agent call, with its share."""
    root = tmp_path / "projects" / "-home-dev-proj"
    shutil.copytree(corpus.transcript_path().parent, root)
    migrate(dsn)
    done = subprocess.run(
        [str(BIN / "hookdb"), "backfill", "claude-code", str(tmp_path / "projects"), "--dsn", dsn],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    api = start_api(dsn, {"default": "token-d"})
    with client(api, "token-d") as http:
        agents = http.get(f"/api/sessions/{corpus.SESSION_ID}").json(parse_float=Decimal)["agents"]
    usage = next(a for a in agents if a["agent"] == corpus.AGENT_ID)
    with client(api, "token-d") as http:
        answer = http.get(f"/api/sessions/{corpus.SESSION_ID}/export", params={"format": "md"})
    lines = answer.text.splitlines()
    head = next(i for i, line in enumerate(lines) if f"`{corpus.AGENT_ID}`" in line)
    assert untimed(lines[head - 1]).startswith("- **Agent** `Explore` `Find store reporting gaps` — ")
    assert untimed(lines[head]).startswith(f"- **Explore subagent** `{corpus.AGENT_ID}` — Find store ")
    assert lines[head].endswith(
        f" — {usage['requests']} requests, {usage['tokens']:,} tokens, ${usage['cost_usd']}"
    )
    block = []
    for line in lines[head + 1 :]:
        if line.startswith("- "):
            break
        block.append(line)
    items = [untimed(line) for line in block if line.startswith("  - ")]
    assert items[0] == "  - **SubagentStart** — Explore"
    assert items[-1] == "  - **SubagentStop** (Explore)"
    assert [line.split("**")[1] for line in items[1:-1]] == ["Bash"]
