"""A sans-io tail of one Claude Code transcript: what is new since the last read, as usage records.

The I/O layer stats the file, asks :meth:`TranscriptTail.resume` where to read from (0 again when the file
was truncated or replaced), reads from there in chunks of its choosing and hands each to :meth:`feed`,
which returns the requests not seen before and the latest ``cost-state``. Nothing here holds more than one
line: a line torn mid-write waits for its end, a line longer than ``max_line`` is skipped and counted.

Assistant lines carry ``message.usage``; a message split in content blocks is written once per block with
the same usage, so a request counts once per (message id, request id). The last ``cost-state`` line is
Claude Code's own session cost and per-model usage. A subagent's transcript
(``<session>/subagents/agent-<id>.jsonl``) gives that subagent's requests.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import PurePath
from typing import Annotated, NamedTuple

import msgspec

from hookdb.collector import prices
from hookdb.collector.store import usage

DEFAULT_MAX_LINE = 16 * 1024 * 1024
"""A transcript line longer than this is skipped and counted. An assistant line is bounded by the model's
output limit (128K tokens, a few MB at most), so only tool results and attachments, which carry no usage,
come this long."""

_SUBAGENT = re.compile(r"^agent-(?P<id>.+)\.jsonl$")
# Only lines that mention one of these are decoded; every other line is skipped unparsed.
_MARKERS = (b'"assistant"', b'"cost-state"')
_SYNTHETIC = "<synthetic>"
"""The model Claude Code names on the messages it makes up itself (API errors): no request, no usage."""


class TailError(Exception):
    """The I/O layer fed bytes that do not continue what was read: a bug in the caller, not bad input."""


class FileIdentity(NamedTuple):
    """Which file a path names (``st_dev``, ``st_ino``): a replaced transcript is another file."""

    device: int
    inode: int


Count = Annotated[int, msgspec.Meta(ge=0)]


class _CacheCreation(msgspec.Struct):
    ephemeral_5m_input_tokens: Count | None = None
    ephemeral_1h_input_tokens: Count | None = None


class _Usage(msgspec.Struct):
    input_tokens: Count = 0
    output_tokens: Count = 0
    cache_read_input_tokens: Count | None = 0
    cache_creation_input_tokens: Count | None = None
    cache_creation: _CacheCreation | None = None
    speed: str | None = None
    inference_geo: str | None = None


class _Message(msgspec.Struct):
    id: str | None = None
    model: str | None = None
    usage: _Usage | None = None


class _Line(msgspec.Struct):
    type: str | None = None
    requestId: str | None = None
    agentId: str | None = None
    timestamp: datetime | None = None
    message: _Message | None = None


class ModelUsage(msgspec.Struct, frozen=True, rename="camel"):
    """One model's usage in a ``cost-state`` line, in Claude Code's words."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_creation_ephemeral_5m_input_tokens: int = 0
    cache_creation_ephemeral_1h_input_tokens: int = 0
    cost_usd: Decimal | None = msgspec.field(default=None, name="costUSD")


class CostState(msgspec.Struct, frozen=True, rename="camel"):
    """Claude Code's own account of the session so far: the last ``cost-state`` line."""

    total_cost_usd: Decimal | None = msgspec.field(default=None, name="totalCostUSD")
    model_usage: dict[str, ModelUsage] = {}
    has_unknown_model_cost: bool = False


class _CostLine(msgspec.Struct):
    type: str | None = None


class Batch(NamedTuple):
    """What one :meth:`TranscriptTail.feed` found."""

    records: list[usage.UsageRecord]
    """Requests not seen before (or seen with other usage), in file order."""
    cost_state: CostState | None
    """The last ``cost-state`` line in this batch, if any."""
    skipped: int
    """Lines that could not be read (not JSON, wrong shape, longer than ``max_line``)."""


_line = msgspec.json.Decoder(_Line)
_cost_line = msgspec.json.Decoder(_CostLine)
_cost_state = msgspec.json.Decoder(CostState)


def subagent_of(path: str | PurePath) -> str | None:
    """The subagent id a transcript path names (``…/<session>/subagents/agent-<id>.jsonl``), else ``None``."""
    p = PurePath(path)
    match = _SUBAGENT.match(p.name)
    return match["id"] if match and p.parent.name == "subagents" else None


class TailState(msgspec.Struct, kw_only=True):
    """How far one transcript was read: what the collector keeps between reads (and across restarts)."""

    identity: FileIdentity | None = None
    offset: int = 0
    """How far the file has been fed; the next read starts here."""
    partial: bytearray = msgspec.field(default_factory=bytearray)
    """The bytes after the last newline fed: a line still being written."""
    discarding: bool = False
    """Inside a line longer than ``max_line``: drop bytes until its newline."""
    seen: dict[str, tuple[int, ...]] = {}
    """``"<message id> <request id>"`` → the usage returned for it, across truncations and rewrites."""
    cost_state: CostState | None = None
    """The latest ``cost-state`` read."""
    restarts: int = 0
    """How often the file was found truncated or replaced and read again from the start."""


class TranscriptTail:
    """Reads one transcript incrementally: its :class:`TailState`, and whose requests its lines are."""

    def __init__(
        self,
        *,
        tenant: str,
        session: str,
        agent: str = usage.MAIN,
        agent_type: str | None = None,
        price_table: prices.PriceTable = prices.PRICES,
        max_line: int = DEFAULT_MAX_LINE,
        state: TailState | None = None,
    ) -> None:
        self.tenant = tenant
        self.session = session
        self.agent = agent
        self.agent_type = agent_type
        self.price_table = price_table
        self.max_line = max_line
        self.state = state or TailState()

    def resume(self, identity: FileIdentity, size: int) -> int:
        """Where to read from, given what the path is now: the saved offset, or 0 for a new file.

        A file that is another one (replaced) or shorter than what was read (truncated, rewritten) is read
        again from the start; the requests it still holds were seen and are not returned twice.
        """
        state = self.state
        if state.identity is not None and (identity != state.identity or size < state.offset):
            state.offset = 0
            state.partial.clear()
            state.discarding = False
            state.restarts += 1
        state.identity = identity
        return state.offset

    def feed(self, data: bytes, at_offset: int) -> Batch:
        """Take the bytes read at ``at_offset``; return the new requests their complete lines hold."""
        state = self.state
        if at_offset != state.offset:
            raise TailError(f"fed bytes at offset {at_offset}, expected {state.offset}")
        state.offset += len(data)
        records: list[usage.UsageRecord] = []
        cost_state = None
        skipped = 0
        start = 0
        while True:
            end = data.find(b"\n", start)
            if end < 0:
                break
            if state.discarding:
                state.discarding = False
            else:
                if state.partial:
                    state.partial += data[start:end]
                    line = bytes(state.partial)
                    state.partial.clear()
                else:
                    line = data[start:end]
                if len(line) > self.max_line:
                    skipped += 1
                else:
                    found = self._line(line)
                    if found is None:
                        skipped += 1
                    elif isinstance(found, CostState):
                        cost_state = state.cost_state = found
                    elif found is not False:
                        records.append(found)
            start = end + 1
        if not state.discarding:
            state.partial += data[start:]
            if len(state.partial) > self.max_line:
                state.partial.clear()
                state.discarding = True
                skipped += 1
        return Batch(records, cost_state, skipped)

    def _line(self, line: bytes) -> usage.UsageRecord | CostState | bool | None:
        """A line's new request, its ``cost-state``, ``False`` for nothing to take, ``None`` if unreadable."""
        if not line.strip() or not any(marker in line for marker in _MARKERS):
            return False
        try:
            parsed = _line.decode(line)
            if parsed.type == "cost-state":
                return _cost_state.decode(line)
        except msgspec.MsgspecError:
            try:
                kind = _cost_line.decode(line).type
            except msgspec.MsgspecError:
                return None
            return None if kind in ("assistant", "cost-state") else False
        if parsed.type != "assistant":
            return False
        return self._request(parsed)

    def _request(self, line: _Line) -> usage.UsageRecord | bool | None:
        message = line.message
        if message is None or message.usage is None or message.model == _SYNTHETIC:
            return False
        if not line.requestId or not message.id:
            return False
        if line.timestamp is None:
            return None
        u = message.usage
        breakdown = u.cache_creation or _CacheCreation()
        five_m, one_h = prices.split_cache_creation(
            u.cache_creation_input_tokens,
            breakdown.ephemeral_5m_input_tokens,
            breakdown.ephemeral_1h_input_tokens,
        )
        tokens = prices.Tokens(
            input=u.input_tokens,
            output=u.output_tokens,
            cache_read=u.cache_read_input_tokens or 0,
            cache_write_5m=five_m,
            cache_write_1h=one_h,
        )
        # A message's content blocks repeat its usage: the same usage again is the same request, once.
        # Other usage for it (a count that grew while streaming) is returned again; the ledger's merge
        # keeps the fuller one.
        key = f"{message.id} {line.requestId}"
        if self.state.seen.get(key) == tuple(tokens):
            return False
        self.state.seen[key] = tuple(tokens)
        at = line.timestamp
        if at.tzinfo is None:
            at = at.replace(tzinfo=UTC)
        return usage.observe(
            tenant=self.tenant,
            session=self.session,
            request_id=line.requestId,
            source="transcript",
            at=at,
            model=message.model,
            tokens=tokens,
            agent=line.agentId or self.agent,
            agent_type=self.agent_type,
            price_table=self.price_table,
            speed=u.speed,
            geo=u.inference_geo,
        )
