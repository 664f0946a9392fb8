"""Every read path survives the payloads jsonb takes but Python's decoders do not: stored by an older
collector, a backfill or a row written directly, each is shown as faithfully as it can be and costs only
itself.

jsonb takes integers of any length (and writes ``1e400`` as its 401 digits, ``1e5000`` as 5001), nesting
several thousand levels deep and strings of megabytes; msgspec refuses integers of more than
``sys.get_int_max_str_digits()`` digits and nesting deeper than about 990 levels. Each odd event is stored
as its jsonb text, in one session between ordinary events, and read through the real ``hookdb api``:
the timeline, the detail, both exports, the cards and the live feed.
"""

from __future__ import annotations

import json
import queue
import sys
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from typing import Any

import msgspec
import pytest
import seed
import test_payload_edges as edges
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_api import TOKEN_A, Stream, all_pages, client, write_seed

from hookdb.collector.api import payloads
from hookdb.collector.store import blobs

from conftest import migrate, run_sql

SESSION = "odd-1"
AT = seed.BASE + timedelta(days=5)
BIG = "9" * 5000  # more digits than sys.get_int_max_str_digits() (4300)
DEEP_300 = "[" * 300 + '"bottom"' + "]" * 300
DEEP_5000 = "[" * 5000 + '"bottom"' + "]" * 5000
LARGE = "x" * 3_000_000


def _bash(tool_use_id: str, command: str, **more: str) -> str:
    extra = "".join(f', "{k}": {v}' for k, v in more.items())
    return (
        f'{{"tool_name": "Bash", "tool_use_id": "{tool_use_id}", '
        f'"tool_input": {{"command": "{command}"{extra}}}, "tool_response": {{"stdout": "ok"}}}}'
    )


# (name, event type, tool name, the payload's JSON as written to jsonb), in the session's order.
EVENTS: list[tuple[str, str, str | None, str]] = [
    ("start", "SessionStart", None, '{"source": "startup"}'),
    ("prompt", "UserPromptSubmit", None, '{"prompt": "Read the odd payloads"}'),
    ("big_top", "Notification", None, f'{{"message": "big at the top", "n": {BIG}}}'),
    ("big_nested", "PostToolUse", "Bash", _bash("tu-big", "echo big", n=BIG)),
    ("big_with_nul", "Notification", None, f'{{"message": {{"$hookdb.nul": ["big", "nul"]}}, "n": {BIG}}}'),
    ("e400", "Notification", None, '{"message": "e400", "n": 1e400}'),
    ("e5000_with_nul", "Notification", None, '{"message": {"$hookdb.nul": ["e", "5000"]}, "n": 1e5000}'),
    ("tiny", "Notification", None, '{"message": "tiny", "a": -0.0, "b": 1E-400, "c": 1.5e-300}'),
    # A backslash-u spelled out in the text (jsonb refuses U+0000 and lone surrogates themselves).
    ("escapes", "Notification", None, r'{"message": "\\u0000 and \\ud800 as text"}'),
    ("nul", "Notification", None, '{"message": {"$hookdb.nul": ["before", "after"]}}'),
    ("deep_300", "Notification", None, f'{{"message": "deep 300", "x": {DEEP_300}}}'),
    ("deep_5000", "PostToolUse", "Bash", _bash("tu-deep", "echo deep", x=DEEP_5000)),
    ("deep_at_top", "Notification", None, DEEP_5000),
    (
        "deep_with_nul",
        "Notification",
        None,
        f'{{"message": {{"$hookdb.nul": ["d", "n"]}}, "x": {DEEP_5000}}}',
    ),
    ("large", "PostToolUse", "Bash", _bash("tu-large", LARGE)),
    ("stop", "Stop", None, '{"last_assistant_message": "All odd payloads read."}'),
]
# The meta of a card as an older writer may have left it: numbers no column of the card can hold.
ODD_META = '{"qa_score": 1e400, "word_count": 1e30, "end_reason": 5}'


def _loads(text: str | bytes) -> Any:
    """JSON as it was written, every digit kept."""
    return json.loads(text, parse_int=Decimal, parse_float=Decimal)


@pytest.fixture
def deep_stack() -> Iterator[None]:
    """The tests parse and compare payloads nested 5,000 levels deep: Python's default limit is 1,000."""
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 30_000))
    yield
    sys.setrecursionlimit(limit)


def store(
    dsn: str, session_id: str = SESSION, events: list[str] | None = None, meta: str = ODD_META
) -> dict[str, str]:
    """The odd session (or one of some of its ``events``, by name), its events one second apart; the event
    ids by name."""
    run_sql(
        dsn,
        "INSERT INTO sessions (tenant_id, session_id, status, model, cwd, started_at, updated_at, meta) "
        "VALUES ('acme', $1, 'completed', 'claude-opus-4-5', '/work/odd', $2, $2, $3::jsonb)",
        session_id,
        AT,
        meta,
    )
    ids = {}
    chosen = [event for event in EVENTS if events is None or event[0] in events]
    for i, (name, event_type, tool, payload) in enumerate(chosen):
        (row,) = run_sql(
            dsn,
            "INSERT INTO hook_audit_log (tenant_id, event_id, occurred_at, received_at, session_id, "
            "event_type, tool_name, source, payload) VALUES ('acme', gen_random_uuid(), $1, $1, $2, $3, $4, "
            "'claude-code', $5::jsonb) RETURNING event_id",
            AT + timedelta(seconds=i),
            session_id,
            event_type,
            tool,
            payload,
        )
        ids[name] = str(row[0])
    return ids


def expected(dsn: str, event_id: str) -> Any:
    """The payload as the API shows it: jsonb's text of it, U+0000 and marker keys put back."""
    (row,) = run_sql(dsn, "SELECT payload::text FROM hook_audit_log WHERE event_id = $1", event_id)
    return blobs.restore(_loads(row[0]), lambda _digest: None)


@pytest.fixture
def odd(dsn: str, start_api: Any) -> Iterator[tuple[Any, dict[str, str]]]:
    migrate(dsn)
    write_seed(dsn, seed.Seed("acme", 3))
    ids = store(dsn)
    api = start_api(dsn, {"acme": TOKEN_A})
    yield api, ids
    assert "Traceback" not in api.output, api.output[-4000:]


def by_name(events: list[dict[str, Any]], ids: dict[str, str]) -> dict[str, dict[str, Any]]:
    names = {event_id: name for name, event_id in ids.items()}
    return {names[e["event_id"]]: e for e in events}


# -- What jsonb takes -----------------------------------------------------------------------------------


def test_jsonb_refuses_u0000_and_lone_surrogates_and_takes_the_rest(dsn: str) -> None:
    """What an odd stored payload can hold: U+0000 and lone surrogates never (stored U+0000 is always a
    ``$hookdb.nul`` object), every number and thousands of levels of nesting yes."""
    for refused in ('"a\\u0000b"', '"\\ud800"', '"\\udc00x"'):
        with pytest.raises(Exception, match=r"Unicode|cannot be converted"):
            run_sql(dsn, "SELECT $1::jsonb", refused)
    (row,) = run_sql(
        dsn, "SELECT $1::jsonb::text, $2::jsonb::text, $3::jsonb::text", "1e400", "-0.0", DEEP_5000
    )
    assert row[0] == "1" + "0" * 400  # its digits: more than a float holds
    assert row[1] == "0.0"  # numeric has no negative zero
    assert row[2] == DEEP_5000


# -- The helper every read path decodes a stored payload with ----------------------------------------------


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(edges.text, edges.json_values, max_size=6))
def test_a_payload_too_deep_keeps_every_member_that_is_not(value: dict[str, Any]) -> None:
    deep = b'"deep": ' + DEEP_5000.encode() + b"}"
    for encoded in (json.dumps(value).encode(), msgspec.json.encode(value)):  # jsonb's spacing, and none
        stored = encoded[:-1] + (b", " if value else b"") + deep
        decoded = payloads.decode(stored, "event")
        assert decoded.problem == payloads.TOO_DEEP
        assert decoded.value == {**value, "deep": {payloads.UNRENDERED_KEY: payloads.TOO_DEEP}}


def test_a_payload_too_deep_is_decoded_two_levels_down() -> None:
    stored = f'{{"a": {{"b": {{"c": {DEEP_5000}, "d": 1}}, "e": {BIG}}}, "f": [{DEEP_5000}]}}'.encode()
    unrendered = {payloads.UNRENDERED_KEY: payloads.TOO_DEEP}
    decoded = payloads.decode(stored, "event")
    assert decoded.value == {"a": {"b": unrendered, "e": Decimal(BIG)}, "f": unrendered}


# -- The timeline, the detail and the JSON export -------------------------------------------------------


@pytest.mark.usefixtures("deep_stack")
def test_the_timeline_shows_every_odd_payload_as_stored(dsn: str, odd: Any) -> None:
    api, ids = odd
    with client(api) as http:
        answer = http.get(f"/api/sessions/{SESSION}/events", params={"limit": 500})
        assert answer.status_code == 200, answer.text
        events = by_name(_loads(answer.content)["events"], ids)
        detail = http.get(f"/api/sessions/{SESSION}", params={"events_limit": 500})
        assert detail.status_code == 200, detail.text
        assert _loads(detail.content)["events"]["events"] == _loads(answer.content)["events"]
        paged, cursor = [], None
        while cursor is not False:  # three at a time: every page answered, none repeats or skips an event
            params = {"limit": 3, **({"cursor": cursor} if cursor else {})}
            page = http.get(f"/api/sessions/{SESSION}/events", params=params)
            assert page.status_code == 200, page.text
            paged += _loads(page.content)["events"]
            cursor = _loads(page.content)["next_cursor"] or False
    assert [e["event_id"] for e in paged] == [ids[name] for name, *_ in EVENTS]
    assert set(events) == set(ids)
    for name, event_id in ids.items():
        if name == "deep_with_nul":
            continue
        assert events[name]["payload"] == expected(dsn, event_id), name
        assert "payload_unrendered" not in events[name], name
    assert events["big_with_nul"]["payload"]["n"] == Decimal(BIG)  # its digits, U+0000 put back
    assert events["big_with_nul"]["payload"]["message"] == "big\x00nul"
    assert events["e5000_with_nul"]["payload"]["n"] == Decimal("1e5000")
    assert events["nul"]["payload"]["message"] == "before\x00after"
    # Too deep to put U+0000 back: shown as stored, and saying so.
    deep = events["deep_with_nul"]
    (stored,) = run_sql(
        dsn, "SELECT payload::text FROM hook_audit_log WHERE event_id = $1", ids["deep_with_nul"]
    )
    assert deep["payload"] == _loads(stored[0])
    assert "nested deeper" in deep["payload_unrendered"]
    # Logged once per payload decoded so, per request; an ordinary payload never.
    assert logged(api, "api.payload_decoded_exactly") == {ids["big_with_nul"], ids["e5000_with_nul"]}
    assert logged(api, "api.payload_partly_decoded") == {ids["deep_with_nul"]}
    assert len(api.events("api.payload_partly_decoded")) == 3  # the events page, the detail, one of 3


def logged(api: Any, name: str) -> set[str]:
    return {event["event_id"] for event in api.events(name)}


@pytest.mark.usefixtures("deep_stack")
def test_the_json_export_is_complete_and_equals_the_timeline(odd: Any) -> None:
    api, ids = odd
    with client(api) as http:
        answer = http.get(f"/api/sessions/{SESSION}/export", params={"format": "json"})
        assert answer.status_code == 200, answer.text
        exported = _loads(answer.content)  # parses: not cut short
        pages = _loads(http.get(f"/api/sessions/{SESSION}/events", params={"limit": 500}).content)
    assert [e["event_id"] for e in exported["events"]] == [ids[name] for name, *_ in EVENTS]
    assert exported["events"] == pages["events"]


# -- The Markdown export --------------------------------------------------------------------------------


def test_the_markdown_export_has_a_line_for_every_event_and_its_end(odd: Any) -> None:
    api, ids = odd
    with client(api) as http:
        answer = http.get(f"/api/sessions/{SESSION}/export", params={"format": "md"})
    assert answer.status_code == 200, answer.text
    lines = answer.text.splitlines()
    timeline = lines[lines.index("## Timeline") :]
    assert not any("cut short" in line for line in lines)
    assert timeline[-2:] == ["  > All odd payloads read.", ""]  # the last event, then the document's end
    assert sum("**Notification**" in line for line in timeline) == 10
    assert any(line.endswith("**Bash** `echo big`") for line in timeline), timeline  # big integer beside it
    assert any("**Notification** — big\x00nul" in line for line in timeline), timeline
    assert any("**Notification** — e\x005000" in line for line in timeline), timeline
    assert any("**Notification** — deep 300" in line for line in timeline), timeline
    # Too deep to decode whole: what could be decoded is shown, and the line says what was not.
    deep = next(line for line in timeline if "`echo deep`" in line)
    assert "payload partly shown" in deep, deep
    assert "nested deeper" in deep, deep
    at_top = [line for line in timeline if "**Notification**" in line and "payload" in line]
    assert len(at_top) == 2, at_top  # deep_at_top and deep_with_nul
    large = next(line for line in timeline if line.startswith("- `") and "`xxx" in line)
    assert len(large) < 500  # cut, as every long input is
    deep = {ids[name] for name in ("deep_5000", "deep_at_top", "deep_with_nul")}
    assert logged(api, "api.payload_partly_decoded") == deep


# -- Cards, stats and the live feed ---------------------------------------------------------------------


@pytest.mark.usefixtures("deep_stack")
def test_cards_stats_and_search_with_odd_meta_are_answered(dsn: str, odd: Any) -> None:
    api, ids = odd
    body = f"odd payload {BIG} " + "y" * 100_000 + " read"  # a search document of an odd tool input
    run_sql(
        dsn,
        "INSERT INTO search_docs (tenant_id, session_id, doc_key, at, kinds, ends, body) "
        "VALUES ('acme', $1, uuid_send($2::uuid), $3, ARRAY['tool_input'], ARRAY[$4::int], $5)",
        SESSION,
        ids["big_nested"],
        AT,
        len(body),
        body,
    )
    with client(api) as http:
        found = http.get("/api/sessions", params={"q": "odd payload"})
        assert found.status_code == 200, found.text
        cards = all_pages(http)
        card = next(c for c in cards if c["session_id"] == SESSION)
        detail = http.get(f"/api/sessions/{SESSION}")
        assert detail.status_code == 200, detail.text
        stats = http.get(
            "/api/sessions/stats", params={"from": "2026-10-01T00:00:00Z", "to": "2026-12-01T00:00:00Z"}
        )
        assert stats.status_code == 200, stats.text
    assert len(cards) == 4
    assert card["word_count"] is None  # more words than a count holds: unknown
    assert card["end_reason"] == "5"
    assert card["title"] == "Read the odd payloads"
    assert _loads(detail.content)["session"]["qa_score"] == Decimal("1e400")  # every digit
    (hit,) = found.json()["sessions"]
    assert hit["session_id"] == SESSION
    assert [part["text"] for part in hit["snippet"]["parts"] if part["match"]] == ["odd", "payload"]


def test_the_live_feed_sends_a_card_with_odd_meta_and_goes_on(dsn: str, odd: Any) -> None:
    api, _ids = odd
    stream = Stream(api, TOKEN_A)
    try:
        odd_card = changed(dsn, stream, SESSION)
        assert odd_card["word_count"] is None
        assert changed(dsn, stream, "s-000001")["session_id"] == "s-000001"  # the feed goes on
    finally:
        stream.close()
    with client(api) as http:
        assert http.get("/api/sessions").status_code == 200  # the API is still up


def changed(dsn: str, stream: Stream, session_id: str) -> dict[str, Any]:
    """The card the stream sends when ``session_id`` changes (changed again until one comes: the stream
    may not have subscribed yet when it answered)."""
    for attempt in range(10):
        bump = "UPDATE sessions SET subagent_count = subagent_count + 1 WHERE session_id = $1"
        run_sql(dsn, bump, session_id)
        try:
            while True:
                change = stream.next("session", timeout=1 + attempt)
                if change["session"]["session_id"] == session_id:
                    return change["session"]
        except queue.Empty:
            continue
    raise AssertionError(f"no change of {session_id} in the stream")
