"""The seed's event bus, re-implemented from its text as the baseline.

`emit` copies the dict, adds `_event_type` and an ISO `_emitted_at`, and starts
one `asyncio.create_task` per handler, each wrapped in try/except with logging.
Kept faithful and small: it is the baseline, not a strawman.

Usage: python3 seed_bus.py SCENARIO HANDLERS N [--uvloop] [--yield-every K]
  SCENARIO: steady (yields to the loop every K emits, default 1) | burst | latency | memory
Prints one JSON object: {"events_per_s": ..} or latency percentiles (µs) or
{"bytes_per_event": ..}.
"""
import asyncio
import json
import logging
import sys
import time
from datetime import datetime, timezone
from typing import Any, Dict, List

logger = logging.getLogger("app.core.events")

# Steady runs yield to the loop after this many emits (--yield-every K).
YIELD_EVERY = 1


class BaseEventHandler:
    @property
    def event_type(self) -> str:
        raise NotImplementedError

    async def handle(self, event_data: Dict[str, Any]) -> None:
        raise NotImplementedError


class EventBus:
    def __init__(self) -> None:
        self._handlers: Dict[str, List[BaseEventHandler]] = {}
        self._enabled = True

    def register(self, handler: BaseEventHandler) -> None:
        self._handlers.setdefault(handler.event_type, []).append(handler)
        logger.info("Registered event handler: %s for '%s' events", type(handler).__name__, handler.event_type)

    async def emit(self, event_type: str, data: Dict[str, Any]) -> None:
        if not self._enabled:
            return
        handlers = self._handlers.get(event_type)
        if not handlers:
            return
        event_data = {**data, "_event_type": event_type, "_emitted_at": datetime.now(timezone.utc).isoformat()}
        for handler in handlers:
            # As the seed describes: one background task per handler. (Keeping
            # no reference is the seed's design; it is also the fastest.)
            asyncio.create_task(self._run(handler, event_data))

    async def _run(self, handler: BaseEventHandler, event_data: Dict[str, Any]) -> None:
        try:
            await handler.handle(event_data)
        except Exception as e:  # noqa: BLE001 - the seed's error isolation
            logger.error("Error in %s for '%s' event: %s", type(handler).__name__, handler.event_type, e, exc_info=True)

    def get_handler_count(self, event_type: str = None) -> int:
        if event_type is None:
            return sum(len(h) for h in self._handlers.values())
        return len(self._handlers.get(event_type, []))

    def get_event_types(self) -> List[str]:
        return list(self._handlers.keys())

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True


class Counter(BaseEventHandler):
    """A no-op handler that counts, so the driver knows when all are handled."""

    def __init__(self, done: asyncio.Event, expected: int, gate: asyncio.Event = None) -> None:
        self.n = 0
        self.done = done
        self.expected = expected
        self.gate = gate

    @property
    def event_type(self) -> str:
        return "activity_log"

    async def handle(self, event_data: Dict[str, Any]) -> None:
        if self.gate is not None:
            await self.gate.wait()
        self.n += 1
        if self.n == self.expected:
            self.done.set()


def payload(i: int) -> Dict[str, Any]:
    return {
        "user_id": i,
        "incident_type": "UNAUTHORIZED_ACCESS",
        "severity": "HIGH",
        "description": "User attempted to access restricted resource",
        "ip_address": "192.168.1.1",
    }


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


async def run(scenario: str, handlers: int, n: int) -> Dict[str, Any]:
    bus = EventBus()
    events = [asyncio.Event() for _ in range(handlers)]
    gate = asyncio.Event() if scenario == "memory" else None
    hs = [Counter(events[i], n, gate) for i in range(handlers)]
    for h in hs:
        bus.register(h)

    async def all_done() -> None:
        for e in events:
            await e.wait()

    if scenario in ("steady", "burst"):
        # A burst never yields until every emit is done.
        every = YIELD_EVERY if scenario == "steady" else n + 1
        start = time.perf_counter()
        for i in range(n):
            await bus.emit("activity_log", payload(i))
            if i % every == every - 1:
                await asyncio.sleep(0)
        await all_done()
        return {"events_per_s": n / (time.perf_counter() - start)}
    if scenario == "latency":
        samples = []
        for i in range(n):
            t = time.perf_counter_ns()
            await bus.emit("activity_log", payload(i))
            samples.append(time.perf_counter_ns() - t)
            await asyncio.sleep(0)
        await all_done()
        samples.sort()
        q = lambda p: samples[min(len(samples) - 1, int(p * len(samples)))] / 1000.0
        return {"p50_us": q(0.5), "p99_us": q(0.99), "p999_us": q(0.999), "max_us": samples[-1] / 1000.0}
    if scenario == "memory":
        await asyncio.sleep(0)
        before = rss_bytes()
        for i in range(n):
            await bus.emit("activity_log", payload(i))
        await asyncio.sleep(0)  # let every task start and block
        after = rss_bytes()
        gate.set()
        await all_done()
        return {"bytes_per_event": (after - before) / n}
    raise SystemExit(f"unknown scenario {scenario}")


def main() -> None:
    scenario, handlers, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    global YIELD_EVERY
    if "--yield-every" in sys.argv:
        YIELD_EVERY = max(1, int(sys.argv[sys.argv.index("--yield-every") + 1]))
    loop_name = "asyncio"
    if "--uvloop" in sys.argv:
        import uvloop  # type: ignore

        uvloop.install()
        loop_name = "uvloop"
    result = asyncio.run(run(scenario, handlers, n))
    result["loop"] = loop_name
    print(json.dumps(result))


if __name__ == "__main__":
    main()
