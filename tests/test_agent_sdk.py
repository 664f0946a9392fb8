"""``hookdb.client.agent_sdk`` with the real Claude Agent SDK types, callbacks called as the SDK calls them.

The SDK sends its matchers to the CLI, which decides which fire, then awaits each chosen callback as
``callback(input, tool_use_id, {"signal": None})`` (``claude_agent_sdk._internal.query``). ``fire``
below does the same, with the CLI's matcher rule.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import re
import subprocess
import sys
import time
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

if os.environ.get("CI"):
    import claude_agent_sdk  # CI installs hookdb[agent-sdk]: a missing SDK must fail, not skip
else:
    claude_agent_sdk = pytest.importorskip(
        "claude_agent_sdk",
        reason="claude-agent-sdk is NOT installed, so the Agent SDK integration is NOT tested: "
        "pip install 'hookdb[agent-sdk]'",
    )

from claude_agent_sdk import (
    ClaudeAgentOptions,
    HookContext,
    HookInput,
    HookJSONOutput,
    HookMatcher,
    PostToolUseHookInput,
    PreToolUseHookInput,
    ResultMessage,
    StopHookInput,
    SystemMessage,
    UserPromptSubmitHookInput,
)
from claude_agent_sdk import types as sdk_types

from hookdb.client import Emitter, agent_sdk
from hookdb.client.agent_sdk import SDK_HOOK_EVENTS, HookRecorder, record_result, wrap_hooks_for_db

from conftest import run_sql, wait_for, wait_for_rows

SESSION = "3f1c9a52-7d7e-4a55-9b0e-1f2a3b4c5d6e"
COMMON: dict[str, Any] = {
    "session_id": SESSION,
    "transcript_path": f"/home/u/.claude/projects/p/{SESSION}.jsonl",
    "cwd": "/home/u/project",
    "permission_mode": "default",
}
DENY: dict[str, Any] = {
    "hookSpecificOutput": {
        "hookEventName": "PreToolUse",
        "permissionDecision": "deny",
        "permissionDecisionReason": "rm -rf is not allowed",
    }
}


def pre_bash(command: str = "rm -rf /tmp/x", tool_use_id: str = "toolu_01") -> PreToolUseHookInput:
    return PreToolUseHookInput(
        **COMMON,
        hook_event_name="PreToolUse",
        tool_name="Bash",
        tool_input={"command": command},
        tool_use_id=tool_use_id,
    )


def cli_matches(pattern: str | None, tool_name: str | None) -> bool:
    """Claude Code's matcher rule (the CLI applies it, not the Python SDK): empty or ``*`` matches all;
    a value of only letters, digits, ``_``, ``-``, spaces, ``,`` and ``|`` is a list of exact names;
    anything else is an unanchored regular expression."""
    if not pattern or pattern == "*":
        return True
    if tool_name is None:
        return False
    if re.fullmatch(r"[\w\-, |]+", pattern):
        return tool_name in {name.strip() for name in re.split(r"[|,]", pattern)}
    return re.search(pattern, tool_name) is not None


async def fire(
    hooks: dict[Any, list[HookMatcher]], input_data: HookInput
) -> list[tuple[HookMatcher, Any, HookJSONOutput]]:
    """Run the callbacks the SDK would run for one hook input; return (matcher, callback, output)."""
    outputs = []
    for matcher in hooks.get(input_data["hook_event_name"], []):
        if cli_matches(matcher.matcher, input_data.get("tool_name")):  # type: ignore[arg-type]
            for callback in matcher.hooks:
                context = HookContext(signal=None)  # what the SDK passes today
                output = await callback(input_data, input_data.get("tool_use_id"), context)  # type: ignore[arg-type]
                outputs.append((matcher, callback, output))
    return outputs


def down_emitter(tmp_path: Path) -> Emitter:
    """An Emitter whose collector is not running: events go to ``tmp_path/outbox``."""
    return Emitter(str(tmp_path / "no-collector.sock"), outbox=str(tmp_path / "outbox"))


async def test_a_bash_pre_tool_use_matcher_keeps_firing_with_its_output_unchanged(tmp_path: Path) -> None:
    calls: list[tuple[Any, ...]] = []

    async def deny_rm(input_data: HookInput, tool_use_id: str | None, context: HookContext) -> HookJSONOutput:
        calls.append(("bash", dict(input_data), tool_use_id, context))
        return DENY  # type: ignore[return-value]

    async def on_write(
        input_data: HookInput, tool_use_id: str | None, context: HookContext
    ) -> HookJSONOutput:
        calls.append(("write",))
        return {}

    bash = HookMatcher(matcher="Bash", hooks=[deny_rm], timeout=5)
    write = HookMatcher(matcher="Write|Edit", hooks=[on_write])
    pre_list = [bash, write]
    caller_hooks: dict[Any, list[HookMatcher]] = {"PreToolUse": pre_list}
    before = {
        e: [(m.matcher, list(m.hooks), m.timeout, m.on_failure) for m in ms] for e, ms in caller_hooks.items()
    }

    expected = copy.deepcopy(DENY)

    emitter = down_emitter(tmp_path)
    wrapped = wrap_hooks_for_db(caller_hooks, emitter=emitter)
    outputs = await fire(wrapped, pre_bash())

    assert outputs[0][:2] == (bash, deny_rm)  # the caller's matcher runs first
    assert outputs[0][2] is DENY
    assert outputs[0][2] == expected  # and not modified by anyone
    assert calls == [("bash", dict(pre_bash()), "toolu_01", {"signal": None})]  # Write|Edit did not fire
    recorded = [out for _, cb, out in outputs if isinstance(cb, HookRecorder)]
    assert recorded == [{}]
    assert len(outputs) == 2
    assert emitter.outboxed == 1  # recorded (to the outbox: no collector)

    # The caller's objects are untouched and not shared with the wrapped mapping.
    assert list(caller_hooks) == ["PreToolUse"]
    assert caller_hooks["PreToolUse"] is pre_list
    assert pre_list == [bash, write]
    assert {
        e: [(m.matcher, list(m.hooks), m.timeout, m.on_failure) for m in ms] for e, ms in caller_hooks.items()
    } == before
    assert wrapped["PreToolUse"] is not pre_list
    assert wrapped["PreToolUse"][:2] == [bash, write]
    assert wrapped["PreToolUse"][0] is bash
    emitter.close()


def test_every_sdk_event_gets_one_recorder_after_the_callers_matchers(tmp_path: Path) -> None:
    documented = {
        "PreToolUse",
        "PostToolUse",
        "PostToolUseFailure",
        "UserPromptSubmit",
        "Stop",
        "SubagentStart",
        "SubagentStop",
        "PreCompact",
        "Notification",
        "PermissionRequest",
    }
    assert documented <= set(SDK_HOOK_EVENTS)

    async def mine(input_data: HookInput, tool_use_id: str | None, context: HookContext) -> HookJSONOutput:
        return {}

    custom = [HookMatcher(hooks=[mine])]
    stop = [HookMatcher(hooks=[mine])]
    emitter = down_emitter(tmp_path)
    wrapped = wrap_hooks_for_db({"Stop": stop, "FutureEvent": custom}, emitter=emitter)

    assert set(wrapped) == set(SDK_HOOK_EVENTS) | {"FutureEvent"}
    assert wrapped["FutureEvent"] == custom  # unknown to hookdb: kept as given, not recorded
    for event in SDK_HOOK_EVENTS:
        last = wrapped[event][-1]
        assert last.matcher is None
        assert last.timeout is None
        assert last.on_failure is None  # a recorder failure could never block the agent
        assert len(last.hooks) == 1
        assert isinstance(last.hooks[0], HookRecorder)
        assert last.hooks[0].event == event
    assert wrapped["Stop"][0] is stop[0]
    assert len(wrapped["Stop"]) == 2

    twice = wrap_hooks_for_db(wrapped, emitter=emitter)
    assert all(len(twice[e]) == len(wrapped[e]) for e in SDK_HOOK_EVENTS)


async def test_the_recorder_with_the_collector_down_returns_empty_quickly(tmp_path: Path) -> None:
    emitter = down_emitter(tmp_path)
    recorder = wrap_hooks_for_db(emitter=emitter)["PreToolUse"][-1].hooks[0]

    started = time.monotonic()
    output = await recorder(pre_bash(), "toolu_01", HookContext(signal=None))
    elapsed = time.monotonic() - started

    assert output == {}
    assert elapsed < 0.5, f"recording took {elapsed:.3f} s"
    assert (emitter.sent, emitter.outboxed, emitter.lost) == (0, 1, 0)
    emitter.close()
    assert list((tmp_path / "outbox").glob("*.out"))


async def test_without_an_emitter_a_shared_default_is_created_on_first_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOOKDB_SOCKET", str(tmp_path / "default.sock"))
    monkeypatch.setenv("HOOKDB_OUTBOX", str(tmp_path / "outbox"))
    monkeypatch.setattr(agent_sdk, "_default", None)
    recorder = wrap_hooks_for_db()["PreToolUse"][-1].hooks[0]
    assert agent_sdk._default is None  # wrapping creates nothing

    assert await recorder(pre_bash(), "toolu_01", HookContext(signal=None)) == {}
    default = agent_sdk._default
    assert default is not None
    assert default.socket_path == str(tmp_path / "default.sock")
    assert record_result(ResultMessage("success", 1, 1, False, 1, SESSION)) is not None
    assert agent_sdk._default is default
    assert default.outboxed == 2
    default.close()


async def test_the_recorder_and_record_result_never_raise() -> None:
    class Broken:
        def emit(self, *args: Any, **kwargs: Any) -> uuid.UUID:
            raise RuntimeError("emitter exploded")

    broken: Any = Broken()
    recorder = HookRecorder("PreToolUse", broken)
    assert await recorder(pre_bash(), "toolu_01", HookContext(signal=None)) == {}
    assert await recorder(None, None, HookContext(signal=None)) == {}  # type: ignore[arg-type]
    result = ResultMessage("success", 1, 1, False, 1, SESSION)
    assert record_result(result, emitter=broken) is None


class Capture:
    """Stands in for an Emitter and keeps what it is given."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any], str | None, str]] = []

    def emit(
        self, event_type: str, payload: Any, *, session_id: str | None = None, source: str = "app"
    ) -> uuid.UUID:
        self.events.append((event_type, payload, session_id, source))
        return uuid.uuid4()


def test_record_result_sends_the_result_fields_and_ignores_other_messages() -> None:
    capture: Any = Capture()
    message = ResultMessage(
        subtype="success",
        duration_ms=4200,
        duration_api_ms=3900,
        is_error=False,
        num_turns=3,
        session_id=SESSION,
        total_cost_usd=0.0123,
        usage={"input_tokens": 1200, "output_tokens": 340},
        result="done",
        structured_output=object(),  # not JSON: left out, the rest is kept
    )
    assert isinstance(record_result(message, emitter=capture), uuid.UUID)
    assert record_result(message, emitter=capture, session_id="other") is not None
    assert record_result(SystemMessage(subtype="init", data={}), emitter=capture) is None

    (event_type, payload, session_id, source), overridden = capture.events
    assert (event_type, session_id, source) == ("Result", SESSION, "agent-sdk")
    assert payload["hook_event_name"] == "Result"
    assert payload["session_id"] == SESSION
    assert "structured_output" not in payload
    for key in (
        "total_cost_usd",
        "usage",
        "num_turns",
        "duration_ms",
        "duration_api_ms",
        "is_error",
        "subtype",
    ):
        assert payload[key] == getattr(message, key)
    json.dumps(payload)
    assert (overridden[2], overridden[1]["session_id"]) == ("other", "other")


def test_claude_agent_options_accepts_the_wrapped_hooks(tmp_path: Path) -> None:
    hooks = wrap_hooks_for_db(
        {"PreToolUse": [HookMatcher(matcher="Bash", hooks=[])]}, emitter=down_emitter(tmp_path)
    )
    options = ClaudeAgentOptions(hooks=hooks)
    assert options.hooks is hooks
    to_internal = getattr(sdk_types, "_hooks_to_internal_format", None)  # what the SDK sends the CLI
    if to_internal is not None:
        internal = to_internal(options.hooks)
        assert internal["PreToolUse"][0]["matcher"] == "Bash"
        assert internal["PreToolUse"][-1]["matcher"] is None
        assert isinstance(internal["PreToolUse"][-1]["hooks"][0], HookRecorder)


def test_hookdb_client_does_not_load_the_sdk_and_a_missing_sdk_says_how_to_install() -> None:
    script = """
import sys
import hookdb.client
from hookdb.client import Emitter
assert "claude_agent_sdk" not in sys.modules, "hookdb.client imported the SDK"
sys.modules["claude_agent_sdk"] = None  # as if not installed
try:
    import hookdb.client.agent_sdk
except ImportError as exc:
    print(exc)
else:
    raise SystemExit("imported without the SDK")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert "pip install 'hookdb[agent-sdk]'" in done.stdout


def test_an_sdk_session_lands_in_the_audit_log_and_its_result_in_sessions(
    start_collector, socket_path: Path, dsn: str
) -> None:
    start_collector()
    emitter = Emitter(str(socket_path), ack=True, timeout=2.0)

    async def allow(input_data: HookInput, tool_use_id: str | None, context: HookContext) -> HookJSONOutput:
        return {}

    hooks = wrap_hooks_for_db({"PreToolUse": [HookMatcher(matcher="Bash", hooks=[allow])]}, emitter=emitter)
    inputs: list[HookInput] = [
        UserPromptSubmitHookInput(**COMMON, hook_event_name="UserPromptSubmit", prompt="List the files"),
        pre_bash("ls -la"),
        PostToolUseHookInput(
            **COMMON,
            hook_event_name="PostToolUse",
            tool_name="Bash",
            tool_input={"command": "ls -la"},
            tool_response={"stdout": "total 0\n", "stderr": "", "interrupted": False},
            tool_use_id="toolu_01",
            duration_ms=12,
        ),
        StopHookInput(
            **COMMON, hook_event_name="Stop", stop_hook_active=False, last_assistant_message="Done."
        ),
    ]

    async def session() -> None:  # on asyncio, the SDK's default event loop; the other tests use trio
        for input_data in inputs:
            assert [out for _, _, out in await fire(hooks, input_data)] in ([{}], [{}, {}])

    asyncio.run(session())
    usage = {"input_tokens": 1200, "output_tokens": 340, "cache_read_input_tokens": 5000}
    result = ResultMessage(
        subtype="success",
        duration_ms=4200,
        duration_api_ms=3900,
        is_error=False,
        num_turns=3,
        session_id=SESSION,
        stop_reason="end_turn",
        total_cost_usd=0.0123,
        usage=usage,
        result="Done.",
    )
    assert record_result(result, emitter=emitter) is not None
    assert (emitter.sent, emitter.outboxed, emitter.lost) == (5, 0, 0)
    emitter.close()

    assert wait_for_rows(dsn, 5) == 5
    rows = run_sql(
        dsn, "SELECT event_type, source, session_id, tool_name FROM hook_audit_log ORDER BY occurred_at"
    )
    assert [tuple(r) for r in rows] == [
        ("UserPromptSubmit", "agent-sdk", SESSION, None),
        ("PreToolUse", "agent-sdk", SESSION, "Bash"),
        ("PostToolUse", "agent-sdk", SESSION, "Bash"),
        ("Stop", "agent-sdk", SESSION, None),
        ("Result", "agent-sdk", SESSION, None),
    ]
    s = wait_for(
        lambda: (r := run_sql(dsn, "SELECT * FROM sessions")) and r[0]["event_count"] == 5 and r[0], 30
    )
    assert s["session_id"] == SESSION
    assert float(s["cost_usd"]) == 0.0123  # numeric keeps the float's exact binary value
    assert s["status"] == "completed"
    assert s["event_count"] == 5
    assert s["cwd"] == COMMON["cwd"]
    meta = json.loads(s["meta"])
    assert meta["usage"] == usage
    assert (meta["num_turns"], meta["duration_ms"], meta["duration_api_ms"]) == (3, 4200, 3900)
    assert (meta["is_error"], meta["subtype"]) == (False, "success")
    # No model_usage: the ledger's one summary row is the result's usage and total, for no named model.
    (row,) = run_sql(dsn, "SELECT * FROM usage_ledger")
    assert (row["request_id"], row["model"], tuple(row["sources"])) == ("sdk:*", None, ("sdk",))
    assert (row["input_tokens"], row["output_tokens"], row["cache_read_tokens"]) == (1200, 340, 5000)
    assert (row["cost_usd"], row["cost_source"]) == (Decimal("0.0123"), "reported")
    assert s["input_tokens"] == 1200


# -- The usage ledger: the SDK's result as a third source ----------------------------------------------------


def sdk_result(model_usage: dict[str, Any], total: float) -> ResultMessage:
    """A ``ResultMessage`` as the SDK builds it from the CLI's result (``modelUsage`` passed through)."""
    usage = {
        "input_tokens": sum(m["inputTokens"] for m in model_usage.values()),
        "output_tokens": sum(m["outputTokens"] for m in model_usage.values()),
        "cache_read_input_tokens": sum(m["cacheReadInputTokens"] for m in model_usage.values()),
        "cache_creation_input_tokens": sum(m["cacheCreationInputTokens"] for m in model_usage.values()),
    }
    return ResultMessage(
        subtype="success",
        duration_ms=4200,
        duration_api_ms=3900,
        is_error=False,
        num_turns=3,
        session_id=SESSION,
        total_cost_usd=total,
        usage=usage,
        model_usage=model_usage,
    )


def model_usage(inputs: int, outputs: int, reads: int, writes: int, cost: float) -> sdk_types.ModelUsage:
    return sdk_types.ModelUsage(
        inputTokens=inputs,
        outputTokens=outputs,
        cacheReadInputTokens=reads,
        cacheCreationInputTokens=writes,
        webSearchRequests=0,
        costUSD=cost,
        contextWindow=200000,
        maxOutputTokens=64000,
    )


def ledger_rows(dsn: str) -> list[Any]:
    return run_sql(dsn, "SELECT * FROM usage_ledger ORDER BY request_id")


def session_of(dsn: str) -> Any:
    found = run_sql(dsn, "SELECT * FROM sessions WHERE session_id = $1", SESSION)
    return found[0] if found else {}


def test_the_sdk_result_gives_one_ledger_row_per_model_with_its_reported_cost(
    start_collector, socket_path: Path, dsn: str
) -> None:
    start_collector()
    emitter = Emitter(str(socket_path), ack=True, timeout=2.0)
    result = sdk_result(
        {
            "claude-sonnet-4-5": model_usage(2450, 251, 23924, 12292, 0.0643872),
            "claude-haiku-4-5": model_usage(300, 20, 0, 0, 0.0004),
        },
        0.0647872,
    )
    assert record_result(result, emitter=emitter) is not None
    emitter.close()

    wait_for(lambda: len(ledger_rows(dsn)) == 2)
    rows = ledger_rows(dsn)
    assert [r["request_id"] for r in rows] == ["sdk:claude-haiku-4-5", "sdk:claude-sonnet-4-5"]
    assert {(tuple(r["sources"]), r["cost_source"], r["agent"]) for r in rows} == {
        (("sdk",), "reported", "main")
    }
    sonnet = rows[1]
    assert (sonnet["input_tokens"], sonnet["output_tokens"], sonnet["cache_read_tokens"]) == (
        2450,
        251,
        23924,
    )
    assert (sonnet["cache_creation_5m_tokens"], sonnet["cost_usd"]) == (12292, Decimal("0.0643872"))
    s = wait_for(lambda: (r := session_of(dsn))["input_tokens"] and r)
    assert (s["cost_usd"], s["cost_source"]) == (Decimal("0.0647872"), "reported")
    assert (s["input_tokens"], s["output_tokens"]) == (2750, 271)
    assert (s["model"], s["models"]) == ("claude-sonnet-4-5", ["claude-haiku-4-5", "claude-sonnet-4-5"])


@pytest.mark.parametrize("result_first", [True, False])
def test_the_sdk_summary_is_never_counted_on_top_of_the_sessions_transcript(
    result_first: bool, start_collector, socket_path: Path, dsn: str, tmp_path: Path
) -> None:
    from test_ledger import DATA, REQUESTS, TOTAL

    transcript = tmp_path / f"{SESSION}.jsonl"
    transcript.write_bytes(DATA)  # what Claude Code, run by the SDK, wrote for the session
    start_collector()
    emitter = Emitter(str(socket_path), ack=True, timeout=2.0)
    result = sdk_result({"claude-sonnet-4-5": model_usage(2450, 251, 23924, 12292, 0.0643872)}, 0.0643872)

    def stop() -> None:
        payload = {**COMMON, "hook_event_name": "Stop", "transcript_path": str(transcript)}
        emitter.emit("Stop", payload, session_id=SESSION, source=agent_sdk.SOURCE)

    if result_first:
        record_result(result, emitter=emitter)
        wait_for(lambda: session_of(dsn).get("cost_usd"))
        stop()
    else:
        stop()
        wait_for(lambda: len(ledger_rows(dsn)) == 3)
        record_result(result, emitter=emitter)
    emitter.close()
    assert wait_for_rows(dsn, 2) == 2
    everything = [*REQUESTS, "sdk:claude-sonnet-4-5"]
    wait_for(lambda: [r["request_id"] for r in ledger_rows(dsn)] == everything)
    wait_for(lambda: session_of(dsn)["cost_source"] == "computed")  # the transcript's requests count
    time.sleep(0.3)  # a total counted twice would have landed by now

    rows = {r["request_id"]: r for r in ledger_rows(dsn)}
    assert tuple(rows["sdk:claude-sonnet-4-5"]["sources"]) == ("sdk",)  # kept: what the SDK said
    s = session_of(dsn)
    assert s["cost_usd"] == sum(rows[r]["cost_usd"] for r in REQUESTS) == TOTAL  # once, not twice
    assert (s["input_tokens"], s["output_tokens"], s["cache_read_tokens"]) == (2450, 251, 23924)
    assert s["models"] == ["claude-sonnet-4-5"]


def test_the_countable_rule_leaves_out_summaries_of_sessions_with_requests() -> None:
    from datetime import UTC, datetime

    from hookdb.collector import prices
    from hookdb.collector.store import usage

    at = datetime(2026, 1, 1, tzinfo=UTC)

    def seen(session: str, request_id: str, source: usage.Source) -> usage.UsageRecord:
        tokens = prices.Tokens(input=100, output=10)
        return usage.observe(
            tenant="t",
            session=session,
            request_id=request_id,
            source=source,
            at=at,
            model="claude-sonnet-4-5",
            tokens=tokens,
            reported_cost_usd=0.01,
        )

    summary = seen("a", usage.sdk_request_id("claude-sonnet-4-5"), "sdk")
    request = seen("a", "req_1", "transcript")
    alone = seen("b", usage.sdk_request_id("claude-sonnet-4-5"), "sdk")
    assert usage.countable([summary, request, alone]) == [request, alone]
    assert usage.totals([summary, request]).cost_usd == Decimal("0.01")
    assert usage.totals([alone]).requests == 1
