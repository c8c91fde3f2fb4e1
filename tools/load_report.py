"""The load tool's report: report.json, report.md and latency.png of one finished run.

    .venv/bin/python tools/loadtool.py -c 4 -m 30s --report out/

report.json holds the run's summary (loadtool.summarize) and, beside it, what a benchmark report
shows: throughput (acknowledged and committed per second), latency percentiles with the maximum,
the success rate of the requests and their answers by status. report.md is the same as a table;
latency.png plots each transaction's latency against the moment it was sent (matplotlib's Agg
backend, imported only here). matplotlib is not in requirements.txt (the runtime image): without it
the report is report.json and report.md, and one line on stderr says no latency.png was written.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from tools.loadtool import Run, percentile, summarize

MAX_PLOTTED = 20_000  # points on the plot at most (every n-th sample beyond)
PERCENTILES = (50, 90, 99)


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def latency_figures(latencies: list[float]) -> dict[str, float | None]:
    """p50, p90, p99 and max of `latencies` (seconds) in milliseconds; None when there are none."""
    figures = {f"p{p}": _ms(percentile(latencies, p)) for p in PERCENTILES}
    figures["max"] = _ms(max(latencies)) if latencies else None
    return figures


def build_report(run: Run) -> dict[str, Any]:
    """The run's report as one JSON-ready object."""
    stats = run.stats
    summary = summarize(run)
    creating = summary["mode"] != "query"
    requests = sum(stats.answers.values())
    return {
        "summary": summary,
        "requests": requests,
        "acknowledged": stats.submitted,
        "committed": stats.committed if creating else None,
        "success_rate": round(stats.submitted / requests, 4) if requests else None,
        "answers": dict(stats.answers.most_common()),
        "throughput": {
            "acknowledged_per_s": summary["submit_tps"],
            "committed_per_s": summary["commit_tps"],
        },
        "latency_kind": summary["latency_kind"],
        "latency_ms": latency_figures(
            stats.commit_latencies if creating else stats.reply_latencies
        ),
        "reply_latency_ms": latency_figures(stats.reply_latencies),
        "chain_poll_errors": {
            kind: n for kind, n in stats.errors.items() if kind.startswith("chain poll")
        },
    }


def _cell(value: Any) -> str:
    return "–" if value is None else str(value)


def format_markdown(report: dict[str, Any], plotted: bool = True) -> str:
    """The report as Markdown: a table of the figures, a table of the answers by status and, when
    `plotted`, latency.png."""
    summary = report["summary"]
    latency, reply = report["latency_ms"], report["reply_latency_ms"]
    rate = report["success_rate"]
    rows = [
        ("target", f"{summary['target']} ({summary['transport']})"),
        ("mode", summary["mode"]),
        ("channel", summary["channel"] or "(default)"),
        ("clients", summary["clients"]),
        ("sending time (s)", summary["send_seconds"]),
        ("requests answered", report["requests"]),
        ("acknowledged", report["acknowledged"]),
        ("success rate", None if rate is None else f"{rate * 100:.2f} %"),
        ("acknowledged per s", report["throughput"]["acknowledged_per_s"]),
        ("committed", report["committed"]),
        ("committed per s", report["throughput"]["committed_per_s"]),
        ("not committed after the drain", summary["uncommitted"]),
        ("blocks observed", summary["blocks_observed"]),
    ]
    rows += [(f"{report['latency_kind']} latency {k} (ms)", v) for k, v in latency.items()]
    rows += [(f"reply latency {k} (ms)", v) for k, v in reply.items()]
    lines = [
        "# Load report",
        "",
        "| figure | value |",
        "|---|---|",
        *(f"| {name} | {_cell(value)} |" for name, value in rows),
        "",
        "## Answers by status",
        "",
        "| status | count |",
        "|---|---|",
        *(f"| {status} | {count} |" for status, count in report["answers"].items()),
        "",
        *(["![latency over time](latency.png)", ""] if plotted else []),
    ]
    return "\n".join(lines)


def plot_latency(run: Run, path: Path) -> None:
    """latency.png: each sample's latency (ms) against the second it was sent in the run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = run.stats.samples
    step = max(1, len(samples) // MAX_PLOTTED)
    shown = samples[::step]
    kind = "commit" if run.args.type in (0, 2) else "reply"
    figure, axes = plt.subplots(figsize=(9, 4.5), dpi=100)
    try:
        axes.scatter(
            [sent - run.started for sent, _ in shown],
            [latency * 1000 for _, latency in shown],
            s=4,
            alpha=0.5,
            linewidths=0,
        )
        axes.set_xlabel("seconds since the load started (time sent)")
        axes.set_ylabel(f"{kind} latency (ms)")
        axes.set_title(f"{kind} latency over time ({len(samples)} samples)")
        axes.set_xlim(left=0)
        axes.set_ylim(bottom=0)
        axes.grid(True, alpha=0.3)
        figure.tight_layout()
        figure.savefig(path, format="png")
    finally:
        plt.close(figure)


def write_report(run: Run, directory: Path) -> list[Path]:
    """Write report.json, report.md and latency.png into `directory` (made when missing); the
    paths written. Without matplotlib, no latency.png and a line on stderr saying so."""
    directory.mkdir(parents=True, exist_ok=True)
    report = build_report(run)
    paths = [directory / "report.json", directory / "report.md"]
    paths[0].write_text(json.dumps(report, indent=1) + "\n")
    png = directory / "latency.png"
    try:
        plot_latency(run, png)
        paths.append(png)
    except ImportError as exc:
        print(
            f"loadtool: matplotlib is not installed ({exc}), so no latency.png was written",
            file=sys.stderr,
        )
    paths[1].write_text(format_markdown(report, plotted=png in paths))
    return paths
