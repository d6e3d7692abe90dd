"""The leader's loops follow this master's role: started for a term it leads, stopped at
once on a definite "not leader" or a new term, and kept through unanswered polls for
`patience` seconds only (a busy master's slow answer is no news)."""

from __future__ import annotations

import asyncio

import pytest

from raftkube.client.etcd import EtcdClient
from raftkube.controllers import manager

pytestmark = pytest.mark.unit


class Scripted(manager.LeaderLoops):
    """Roles from a script, one per poll (the last one repeats)."""

    def __init__(self, script: list[manager.Role | None], patience: float) -> None:
        super().__init__(api_url="http://127.0.0.1:9", token="t" * 20, member_id="1",
                         make_loops=lambda _ctx: [], poll=0.01, patience=patience)
        self.script = list(script)
        self.seen: list[int] = []  # the term the loops ran for, after each poll

    async def role(self, store: EtcdClient) -> manager.Role | None:
        self.seen.append(self.term)
        return self.script.pop(0) if len(self.script) > 1 else self.script[0]


async def run_for(loops: Scripted, seconds: float) -> None:
    task = asyncio.ensure_future(loops.run())
    await asyncio.sleep(seconds)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_unanswered_polls_within_patience_keep_the_loops() -> None:
    leads = manager.Role(leader=True, term=3)
    loops = Scripted([leads, *[None] * 20, leads], patience=60.0)
    await run_for(loops, 0.6)
    assert loops.started == 1, "no restart in the same term for a slow answer"


async def test_silence_past_patience_stops_them_and_a_definite_answer_acts_at_once() -> None:
    leads = manager.Role(leader=True, term=3)
    silent = Scripted([leads, None], patience=0.1)
    await run_for(silent, 0.6)
    assert silent.started == 1 and silent.seen[-1] == 0, "stopped after the patience"
    deposed = Scripted([leads, leads, manager.Role(leader=False, term=4)], patience=60.0)
    await run_for(deposed, 0.3)
    assert deposed.started == 1 and deposed.seen[-1] == 0
    new_term = Scripted([leads, leads, manager.Role(leader=True, term=5)], patience=60.0)
    await run_for(new_term, 0.3)
    assert new_term.started == 2 and new_term.seen[-1] == 5
