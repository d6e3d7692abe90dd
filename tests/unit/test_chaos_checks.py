"""The chaos runner's checks and reports, fed known-good and known-bad observations."""

from __future__ import annotations

import json
import os

import pytest

from chaos import checks, linearizability, report, runner
from chaos.__main__ import main
from chaos.history import Fault, Sample
from chaos.linearizability import Op

pytestmark = pytest.mark.unit


def test_lost_writes_names_the_member_and_the_key() -> None:
    acked = {"w/0/1": ("v1", 5), "w/0/2": ("v2", 7)}
    stored = {"m1": {"w/0/1": ("v1", 5), "w/0/2": ("v2", 7)},
              "m2": {"w/0/1": ("v1", 5)},  # lost w/0/2
              "m3": {"w/0/1": ("v1", 5), "w/0/2": ("v2", 9)}}  # another write's revision
    lost = checks.lost_writes(acked, stored)
    assert [(x["member"], x["key"]) for x in lost] == [("m2", "w/0/2"), ("m3", "w/0/2")]
    assert lost[0]["stored"] is None and lost[1]["stored"] == ["v2", 9]
    assert checks.lost_writes(acked, {"m1": stored["m1"]}) == []


def test_leaders_per_term() -> None:
    assert checks.max_leaders_per_term({1: {"a"}, 2: {"b"}}) == (1, {})
    assert checks.max_leaders_per_term({1: {"a"}, 2: {"a", "b"}}) == (2, {"2": ["a", "b"]})
    assert checks.max_leaders_per_term({}) == (0, {})


def test_stale_term_writes_are_stamps_that_go_down_in_revision_order() -> None:
    # Stamps never decrease along the log: fine.
    assert checks.stale_term_writes([(2, 10), (2, 11), (3, 12), (5, 20)]) == []
    # Term 2's write applied at revision 13, after term 3 had written at 12.
    stale = checks.stale_term_writes([(3, 12), (2, 10), (2, 13)])
    assert stale == [{"revision": 13, "term": 2, "after_term": 3}]


def test_watch_gaps_count_missing_duplicate_and_disordered_events() -> None:
    acked = {"w/a": ("v", 3), "w/b": ("v", 4), "w/c": ("v", 5)}
    assert checks.watch_gaps(acked, [(3, "w/a"), (4, "w/b"), (5, "w/c")])["total"] == 0
    # An unacknowledged write that the watch saw is no gap.
    assert checks.watch_gaps(acked, [(3, "w/a"), (4, "w/b"), (5, "w/c"), (6, "w/x")]
                             )["total"] == 0
    gaps = checks.watch_gaps(acked, [(3, "w/a"), (5, "w/c"), (3, "w/a")])
    assert gaps["missing"] == 1 and gaps["missing_examples"] == [("w/b", 4)]
    assert gaps["duplicates"] == 1 and gaps["out_of_order"] == 1 and gaps["total"] == 3


def test_failover_is_the_first_ack_of_a_write_invoked_after_the_fault() -> None:
    samples = [Sample("put", "m1", 0.0, 0.01, "ok"),
               Sample("put", "m1", 1.0, 3.0, "info"),  # stuck on the dead leader
               Sample("put", "m2", 1.1, 1.2, "fail"),
               Sample("get", "m2", 1.2, 1.25, "ok"),  # a read is not a write
               Sample("cas", "m3", 1.3, 1.6, "ok"),
               Sample("put", "m3", 1.4, 1.5, "ok")]
    faults = [Fault("kill", "m1", 1.0), Fault("kill", "m2", 9.0)]
    assert checks.failover_seconds(faults, samples) == [0.5, None]


def test_summary_of_seconds() -> None:
    assert checks.summary([]) == {"median": None, "p99": None, "max": None}
    figures = checks.summary([0.3, 0.1, 0.2])
    assert figures == {"median": 0.2, "p99": 0.3, "max": 0.3}


def test_unknown_scenarios_and_rounds_are_refused_by_name(
        capsys: pytest.CaptureFixture[str], tmp_path: str) -> None:
    with pytest.raises(ValueError, match="--scenario: unknown nope"):
        runner.names("kill-leader,nope")
    for argv, words in ((["--scenario", "nope"], "--scenario: unknown nope"),
                        (["--scenario", "kill-leader", "--rounds", "0"], "--rounds: must be"),
                        (["--scenario", "kill-leader", "--masters", "4"], "--masters"),
                        (["--scenario", "kill-leader"], "--out")):
        with pytest.raises(SystemExit) as exit_info:
            main([*argv, "--out", str(tmp_path)] if "--out" not in words else argv)
        assert exit_info.value.code == 2
        assert words in capsys.readouterr().err
    assert os.listdir(tmp_path) == []  # nothing was started or written


def test_report_files_for_several_scenarios(tmp_path: str) -> None:
    def result(name: str, passed: bool) -> dict[str, object]:
        return {"scenario": name, "seed": 1, "rounds": 1, "passed": passed,
                "acked_writes": 3, "lost_writes": 0, "linearizable": True,
                "stale_term_writes_applied": 0, "max_leaders_per_term": 1,
                "watch_gaps": 0, "failover": {"median": 0.3, "max": 0.3},
                "failover_seconds": [0.3], "app_unavailable_seconds": None,
                "faults": [{"kind": "kill", "target": "m1", "began": 1.0, "healed": 2.0}],
                "problems": [] if passed else ["1 acknowledged writes missing"]}
    results = {"kill-leader": result("kill-leader", True),
               "kill-all": result("kill-all", False)}
    top = runner.totals("all", runner.Options(rounds=1, seed=1, topology="loopback",
                                              masters=3, out=str(tmp_path)), results)
    assert top["passed"] is False and top["acked_writes"] == 6
    rows = [{"kind": "put", "server": "m1", "invoked": 0.5, "completed": 0.51,
             "outcome": o, "error": ""} for o in ("ok", "info", "fail")]
    report.write(str(tmp_path), top, {"kill-leader": rows, "kill-all": rows})
    with open(os.path.join(tmp_path, "report.json")) as f:
        assert json.load(f)["scenarios"]["kill-all"]["passed"] is False
    with open(os.path.join(tmp_path, "summary.txt")) as f:
        text = f.read()
    assert "FAILED" in text and "1 acknowledged writes missing" in text
    with open(os.path.join(tmp_path, "availability.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_all_names_the_offending_sub_history_at_the_top() -> None:
    """`linearizable: false` comes with the sub-history that is not, for `all` too."""
    def result(name: str, linearizable: bool) -> dict[str, object]:
        lin: dict[str, object] = {"keys": 2, "ops": 9, "explanation": "fine"}
        if not linearizable:
            lin.update(key="r/1", history=[{"client": 3, "kind": "get"}],
                       explanation="key 'r/1' is not linearizable")
        return {"scenario": name, "passed": linearizable, "acked_writes": 3,
                "lost_writes": 0, "linearizable": linearizable, "linearizability": lin,
                "stale_term_writes_applied": 0, "max_leaders_per_term": 1,
                "watch_gaps": 0, "failover_seconds": [0.3],
                "app_unavailable_seconds": None}
    results = {"kill-leader": result("kill-leader", True),
               "partition-minority": result("partition-minority", False)}
    top = runner.totals("all", runner.Options(rounds=1, seed=1, topology="loopback",
                                              masters=3, out="/tmp"), results)
    assert top["linearizable"] is False
    assert top["linearizability"] == {"scenario": "partition-minority", "key": "r/1",
                                      "history": [{"client": 3, "kind": "get"}],
                                      "explanation": "key 'r/1' is not linearizable"}


def test_final_reads_catch_a_write_wrongly_classified_as_failed() -> None:
    """A unique write answered with a refusal (left out of the history as certainly
    failed) that the member holds all the same: the final reads show it, and the history
    is then not linearizable."""
    acked = Op(client=1, key="w/0/000001", kind="put", value="v1", invoked=0.0,
               completed=0.1)
    held = {"w/0/000001": ("v1", 5), "w/0/000002": ("v2", 6)}  # 000002: "failed"
    reads = runner.final_reads([acked], held, invoked=1.0, completed=1.1, first_client=-1)
    assert [(r.key, r.result, r.client) for r in reads] == [
        ("w/0/000001", "v1", -1), ("w/0/000002", "v2", -2)]
    verdict = linearizability.check([acked, *reads])
    assert verdict.linearizable is False and verdict.key == "w/0/000002"
    # Nothing held beyond the history: linearizable.
    assert linearizability.check(
        [acked, *runner.final_reads([acked], {"w/0/000001": ("v1", 5)}, invoked=1.0,
                                    completed=1.1, first_client=-1)]).linearizable


def test_an_out_that_is_a_file_is_refused_by_name(
        capsys: pytest.CaptureFixture[str], tmp_path: str) -> None:
    path = os.path.join(tmp_path, "a-file")
    with open(path, "w") as f:
        f.write("x")
    with pytest.raises(SystemExit) as exit_info:
        main(["--scenario", "kill-leader", "--out", path])
    assert exit_info.value.code == 2
    assert "--out: " in capsys.readouterr().err
