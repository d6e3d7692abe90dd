"""An agent's packet rules go with it: removed by the agent on SIGTERM, and by `rk down`
when the agent died by SIGKILL (which leaves them behind)."""

from __future__ import annotations

import signal
import time

import pytest

from raftkube.agent import netrules, network
from tests.cluster.harness import Cluster

pytestmark = pytest.mark.cluster


def wait_until(pred: object, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not pred():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


@pytest.mark.timeout(300)
def test_rules_are_removed_on_sigterm_and_by_rk_down_after_sigkill(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    c = Cluster(str(tmp_path_factory.mktemp("rules")))
    address = network.local_node_address(c.state_dir, 1)
    # The simulated runtime writes no rules by default; these flags make it.
    args = ["--iptables", "--proxy-address", address]
    try:
        c.up(agents=1, agent_args=args)
        wait_until(lambda: netrules.hooked("n1", address), "n1's rules")
        assert set(netrules.present("n1", address)) == set(netrules.chains("n1", address))

        c.kill("n1", sig=signal.SIGTERM)
        assert netrules.present("n1", address) == {}
        assert not netrules.hooked("n1", address)

        c.up(agents=1, agent_args=args)  # n1 again
        wait_until(lambda: netrules.hooked("n1", address), "n1's rules again")
        c.kill("n1", sig=signal.SIGKILL)
        assert netrules.hooked("n1", address)  # left behind
        c.down()
        assert netrules.present("n1", address) == {}
        assert not netrules.hooked("n1", address)
    finally:
        c.down()
        netrules.remove("n1", address)
