"""What a chaos run leaves behind: `report.json`, `summary.txt` and `availability.png`.

The plot is Jepsen's latency chart: every client operation as a point at the time it
was invoked, its latency on a log scale, coloured by outcome (acknowledged, unknown,
failed), with each fault shaded from when it began to when it was healed. One panel
per scenario.
"""

from __future__ import annotations

import json
import os
from typing import Any

COLOURS = {"ok": "#2a9d40", "info": "#e08a00", "fail": "#c62828"}
FAULT_COLOURS = ["#9ecae1", "#fdd0a2", "#c7e9c0", "#dadaeb", "#fcbba1"]


def write(out: str, report: dict[str, Any], histories: dict[str, list[dict[str, Any]]]
          ) -> None:
    """`histories`: per scenario, its samples (History.as_rows())."""
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "report.json"), "w") as f:
        json.dump(report, f, indent=2, sort_keys=False)
        f.write("\n")
    with open(os.path.join(out, "summary.txt"), "w") as f:
        f.write(summary(report))
    plot(os.path.join(out, "availability.png"), report, histories)


def _scenarios(report: dict[str, Any]) -> list[dict[str, Any]]:
    return list(report["scenarios"].values()) if "scenarios" in report else [report]


def summary(report: dict[str, Any]) -> str:
    lines = [f"chaos: {report['scenario']}, seed {report['seed']}, {report['rounds']} "
             f"round(s): {'PASSED' if report['passed'] else 'FAILED'}"]
    for r in _scenarios(report):
        fo = r.get("failover", {})
        lines.append(
            f"  {r['scenario']:<20} {'ok  ' if r['passed'] else 'FAIL'} "
            f"faults {len(r.get('faults', []))}, acked {r['acked_writes']}, "
            f"lost {r['lost_writes']}, linearizable {r['linearizable']}, "
            f"stale-term {r['stale_term_writes_applied']}, "
            f"leaders/term {r['max_leaders_per_term']}, watch gaps {r['watch_gaps']}, "
            f"failover median {fo.get('median')} s max {fo.get('max')} s"
            + (f", app unavailable {r['app_unavailable_seconds']} s"
               if r.get("app_unavailable_seconds") is not None else ""))
        for problem in r.get("problems", []):
            lines.append(f"      - {problem}")
    return "\n".join(lines) + "\n"


def plot(path: str, report: dict[str, Any],
         histories: dict[str, list[dict[str, Any]]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = _scenarios(report)
    fig, axes = plt.subplots(len(results), 1, figsize=(11, 2.6 * len(results) + 0.6),
                             squeeze=False)
    for ax, result in zip(axes[:, 0], results, strict=True):
        rows = histories.get(result["scenario"], [])
        for outcome, colour in COLOURS.items():
            pts = [(r["invoked"], max(1e-4, r["completed"] - r["invoked"]))
                   for r in rows if r["outcome"] == outcome]
            if pts:
                xs, ys = zip(*pts, strict=True)
                ax.scatter(xs, ys, s=3, c=colour, label={"ok": "acknowledged",
                                                          "info": "unknown",
                                                          "fail": "failed"}[outcome],
                           linewidths=0, zorder=2)
        end = max((r["completed"] for r in rows), default=1.0)
        for i, fault in enumerate(result.get("faults", [])):
            healed = fault["healed"] if fault["healed"] is not None else end
            ax.axvspan(fault["began"], healed, color=FAULT_COLOURS[i % len(FAULT_COLOURS)],
                       alpha=0.45, lw=0, zorder=0)
            ax.text(fault["began"], 1.02, f"{fault['kind']} {fault['target']}",
                    transform=ax.get_xaxis_transform(), fontsize=6, rotation=20)
        ax.set_yscale("log")
        ax.set_ylabel("latency (s)")
        ax.set_title(f"{result['scenario']}: "
                     f"{'passed' if result['passed'] else 'FAILED'}", fontsize=9, loc="left")
        ax.legend(loc="upper right", fontsize=6, markerscale=3)
    axes[-1, 0].set_xlabel("seconds since the start of the scenario")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
