"""The chaos tier: a short round of every scenario, through `python -m chaos` as users run it.

The runner is started as its own process from a directory outside the repository, so
this also shows that it needs neither `rk` on PATH nor the test suite: only a Python
with raftkube installed. Every check is the runner's (report.json); a failure prints the
summary and the problems it found. CHAOS_SEED reproduces a run.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys

import pytest

pytestmark = pytest.mark.chaos

KEYS = ("scenario", "seed", "rounds", "acked_writes", "lost_writes", "linearizable",
        "failover_seconds", "stale_term_writes_applied", "max_leaders_per_term",
        "watch_gaps", "app_unavailable_seconds")


def stop(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()


def run_chaos(tmp: str, *argv: str, timeout: float, passes: bool = True
              ) -> dict[str, object]:
    out = os.path.join(tmp, "out")
    seed = os.environ.get("CHAOS_SEED", str(random.randrange(1 << 30)))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PATH"] = "/usr/sbin:/usr/bin:/sbin:/bin"  # no rk here
    proc = subprocess.Popen([sys.executable, "-m", "chaos", *argv, "--rounds", "1",
                             "--seed", seed, "--out", out], cwd=tmp, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except BaseException:
        # A timeout (ours or pytest's): SIGTERM, on which the runner stops the cluster
        # of its scenario (SIGKILL, as subprocess.run sends, would leave it running).
        stop(proc)
        raise
    done = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    summary = ""
    if os.path.exists(os.path.join(out, "summary.txt")):
        with open(os.path.join(out, "summary.txt")) as f:
            summary = f.read()
    assert done.returncode == (0 if passes else 1), (
        f"chaos run failed (exit {done.returncode}, seed {seed}):\n{summary}\n"
        f"{done.stdout[-4000:]}\n{done.stderr[-4000:]}")
    with open(os.path.join(out, "report.json")) as f:
        report: dict[str, object] = json.load(f)
    assert os.path.getsize(os.path.join(out, "availability.png")) > 10_000
    print(summary)
    return report


@pytest.mark.timeout(1500)
def test_every_scenario_one_round(tmp_path: str) -> None:
    from chaos.scenarios import SCENARIOS

    report = run_chaos(str(tmp_path), "--scenario", "all", timeout=1400)
    for key in KEYS:
        assert key in report, key
    scenarios = report["scenarios"]
    assert isinstance(scenarios, dict) and set(scenarios) == set(SCENARIOS)
    assert report["passed"] is True and report["linearizable"] is True
    assert report["lost_writes"] == 0 and report["stale_term_writes_applied"] == 0
    assert report["max_leaders_per_term"] == 1 and report["watch_gaps"] == 0
    for name, result in scenarios.items():
        for key in KEYS:
            assert key in result, (name, key)
        assert result["faults"], f"{name} injected no fault"
        assert all(f["healed"] is not None for f in result["faults"]), name


@pytest.mark.timeout(600)
def test_five_masters(tmp_path: str) -> None:
    report = run_chaos(str(tmp_path), "--scenario", "kill-leader,quorum-loss",
                       "--masters", "5", timeout=500)
    assert report["passed"] is True and report["lost_writes"] == 0
    assert report["scenarios"]["kill-leader"]["masters"] == 5  # type: ignore[index]


@pytest.mark.timeout(300)
def test_the_checks_can_fail_stale_reads_are_caught(tmp_path: str) -> None:
    """Reads served from each master's own copy: the member cut off from the others
    answers with old values while the majority moves on. The runner must say so."""
    report = run_chaos(str(tmp_path), "--scenario", "partition-minority",
                       "--serializable-reads", timeout=240, passes=False)
    assert report["passed"] is False and report["linearizable"] is False
    lin = report["linearizability"]
    assert isinstance(lin, dict) and lin["key"].startswith("r/") and lin["history"]
    assert report["lost_writes"] == 0  # what failed is the reads, nothing else
