"""Record the hook events of a Claude Agent SDK (Python) session into hookdb.

``wrap_hooks_for_db`` adds a recording matcher for every event the SDK supports to the caller's own
hooks; ``record_result`` stores the final ``ResultMessage`` (cost, usage per model, turns, duration),
which the collector turns into session metrics and usage-ledger rows. Recording never changes what the
agent does: the recording callback returns ``{}``, never raises and awaits nothing, and the caller's
matchers run as before.

Needs the optional extra: ``pip install 'hookdb[agent-sdk]'``. ``hookdb.client`` does not import this
module, so hook commands and plain ``Emitter`` users never load the SDK.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import typing
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, TypeAlias

try:
    from claude_agent_sdk import HookContext, HookInput, HookJSONOutput, HookMatcher, ResultMessage
    from claude_agent_sdk.types import HookEvent
except ImportError as exc:  # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError(
        "hookdb.client.agent_sdk needs the Claude Agent SDK: pip install 'hookdb[agent-sdk]'"
    ) from exc

import msgspec

from hookdb.client.emitter import Emitter

__all__ = ["SDK_HOOK_EVENTS", "SOURCE", "HookRecorder", "record_result", "wrap_hooks_for_db"]

log = logging.getLogger("hookdb.client")

SOURCE = "agent-sdk"
# Must equal hookdb.collector.classification.RESULT_EVENT (the client does not import the collector).
RESULT_EVENT = "Result"

Hooks: TypeAlias = Mapping[HookEvent, Sequence[HookMatcher]] | Mapping[str, Sequence[HookMatcher]]


def _literal_values(tp: Any) -> tuple[str, ...]:
    """The strings of a ``Literal`` or a union of ``Literal``s, in declaration order."""
    if typing.get_origin(tp) is typing.Literal:
        return tuple(str(v) for v in typing.get_args(tp))
    return tuple(v for arg in typing.get_args(tp) for v in _literal_values(arg))


# Read from the installed SDK, so events a newer SDK adds are recorded without a hookdb release.
SDK_HOOK_EVENTS: tuple[str, ...] = _literal_values(HookEvent)

_default: Emitter | None = None
_default_lock = threading.Lock()


def _default_emitter() -> Emitter:
    """The module's shared ``Emitter`` on the default socket, created on first use."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Emitter()
        return _default


class HookRecorder:
    """The recording hook callback for one event: sends the hook input to hookdb, returns ``{}``.

    ``Emitter.emit`` is synchronous and bounded by its timeout (the event goes to the outbox when the
    collector is unreachable), so the callback awaits nothing and holds the agent's event loop for
    at most about that timeout (default 0.1 s) when the collector is stuck. A class rather than a
    closure so that wrapping twice is detected.
    """

    def __init__(self, event: str, emitter: Emitter | None = None) -> None:
        self.event = event
        self.emitter = emitter

    async def __call__(
        self, input_data: HookInput, tool_use_id: str | None, context: HookContext
    ) -> HookJSONOutput:
        try:
            payload: dict[str, Any] = dict(input_data)
            event = payload.get("hook_event_name") or self.event
            if tool_use_id is not None:
                payload.setdefault("tool_use_id", tool_use_id)
            session_id = payload.get("session_id")
            (self.emitter or _default_emitter()).emit(
                str(event),
                payload,
                session_id=session_id if isinstance(session_id, str) else None,
                source=SOURCE,
            )
        except Exception as exc:  # the agent must never see hookdb fail
            log.warning("hookdb: recording %s failed: %s", self.event, exc)
        return {}

    def __repr__(self) -> str:
        return f"HookRecorder({self.event!r})"


def _records(matchers: Sequence[HookMatcher]) -> bool:
    return any(isinstance(hook, HookRecorder) for m in matchers for hook in getattr(m, "hooks", ()))


def wrap_hooks_for_db(
    hooks: Hooks | None = None, *, emitter: Emitter | None = None
) -> dict[HookEvent, list[HookMatcher]]:
    """A hooks mapping for ``ClaudeAgentOptions(hooks=...)`` that also records every SDK hook event.

    Each event in the SDK's ``HookEvent`` literal gets one ``HookMatcher(matcher=None)`` (all tools)
    with a :class:`HookRecorder`, after the caller's matchers for that event. The caller's mapping,
    lists and matchers are not modified (new lists hold the same matcher objects); events hookdb
    does not know are kept as given. An event already recorded (wrapped twice) gets no second
    recorder. ``emitter=None`` uses a shared ``Emitter`` on the default socket, created lazily.
    """
    wrapped: dict[str, list[HookMatcher]] = {
        event: list(matchers) for event, matchers in (hooks or {}).items()
    }
    for event in SDK_HOOK_EVENTS:
        matchers = wrapped.setdefault(event, [])
        if not _records(matchers):
            matchers.append(HookMatcher(matcher=None, hooks=[HookRecorder(event, emitter)]))
    return wrapped  # type: ignore[return-value]  # keys are HookEvent names plus the caller's own


def _result_payload(message: ResultMessage) -> dict[str, Any]:
    """The JSON-encodable fields of a ``ResultMessage``; a field that cannot be encoded is left out."""
    try:
        fields = dataclasses.asdict(message)
    except Exception:  # asdict deep-copies: an uncopyable value must not lose the whole result
        fields = {f.name: getattr(message, f.name, None) for f in dataclasses.fields(message)}
    payload: dict[str, Any] = {}
    for name, value in fields.items():
        try:
            msgspec.json.encode(value)
        except Exception:
            log.debug("hookdb: ResultMessage.%s is not JSON-encodable; left out", name)
            continue
        payload[name] = value
    return payload


def record_result(
    message: object, *, emitter: Emitter | None = None, session_id: str | None = None
) -> uuid.UUID | None:
    """Store the SDK's final ``ResultMessage`` as a ``Result`` event of its session; return the event id.

    The collector projects ``total_cost_usd`` into ``sessions.cost_usd`` and ``usage``,
    ``num_turns``, ``duration_ms``, ``duration_api_ms``, ``is_error`` and ``subtype`` into
    ``sessions.meta``; ``model_usage`` feeds the usage ledger as its ``sdk`` source, one row per model
    (request id ``sdk:<model>``, the model's ``costUSD`` as reported), counted in the session's totals only
    while no transcript or OTLP row tells the session's requests one by one (the rule is in
    ``hookdb.collector.store.usage``). Any other message is ignored (returns ``None``), so it is safe to
    call on every message of the stream. ``session_id`` overrides the message's own. Never raises.
    """
    if not isinstance(message, ResultMessage):
        return None
    try:
        payload = _result_payload(message)
        sid = session_id or payload.get("session_id")
        sid = sid if isinstance(sid, str) else None
        payload["hook_event_name"] = RESULT_EVENT
        payload["session_id"] = sid
        return (emitter or _default_emitter()).emit(RESULT_EVENT, payload, session_id=sid, source=SOURCE)
    except Exception as exc:
        log.warning("hookdb: recording the result failed: %s", exc)
        return None
