"""Turns scripts/compare.sh's runs (one JSON object per line) into the results tables
(median of the runs per server and case, with the ratio to ringpush and to the kernel
baseline, `kernel`: raw-echo ws, the same client against ringpush's io_uring driver with
no protocol work) and a plot.

Usage: python3 scripts/compare_report.py RUNS.jsonl OUTDIR
Writes OUTDIR/results.md, OUTDIR/results.json and, if matplotlib is importable,
OUTDIR/compare.png. OUTDIR/builds.txt, if compare.sh wrote one, is copied under "Builds"
(uws-cpp's uWebSockets and uSockets commits).
"""
import json
import os
import statistics
import sys
from collections import defaultdict

runs_path, out = sys.argv[1], sys.argv[2]
runs = [json.loads(line) for line in open(runs_path) if line.strip()]
by = defaultdict(list)
for r in runs:
    by[(r["case"], r["server"])].append(r)


def metric(case, r):
    """(value, unit, higher_is_better) for the headline of a case, plus latency."""
    if r["server"] == "raw-io_uring":
        return r["msg_per_sec"], r.get("p50_us"), r.get("p99_us")
    lat = r.get("latency_us", {})
    if case.startswith("echo") or case == "bcast10k":
        return r["received_per_sec"], lat.get("p50"), lat.get("p99")
    if case == "idle20k":
        return r.get("server_rss_per_conn") or 0.0, None, None
    if case == "connrate":
        return r["connected"] / max(r["connect_secs"], 1e-9), r["handshake_us"]["p50"], r["handshake_us"]["p99"]
    if case.startswith("push-"):
        return r["wire_bytes_per_message"], lat.get("p50"), r.get("server_cpu_us_per_message")
    raise KeyError(case)


CASES = [
    ("echo100", "Echo, 100 connections", "msg/s", True),
    ("echo10k", "Echo, 10,000 connections", "msg/s", True),
    ("bcast10k", "Broadcast to 10,000 subscribers", "deliveries/s", True),
    ("idle20k", "Idle memory at 20,000 connections", "server RSS bytes per connection", False),
    ("connrate", "Connection (handshake) rate, 10,000 connections", "connections/s", True),
]

summary = {}
lines = []
for case, title, unit, higher in CASES:
    servers = sorted({s for (c, s) in by if c == case}, key=lambda s: (s != "ringpush", s != "kernel", s))
    if not servers:
        continue
    rows = {}
    for s in servers:
        vals = [metric(case, r) for r in by[(case, s)]]
        med = statistics.median(v[0] for v in vals)
        # Latencies from the run whose headline is the median (lower middle for even n).
        run = sorted(vals, key=lambda v: v[0])[(len(vals) - 1) // 2]
        # Server CPU (user + system) per message: what the throughput cost the server,
        # from the load generator's reading of /proc/PID/stat (not for raw-echo).
        cpus = [r["server_cpu_us_per_message"] for r in by[(case, s)] if r.get("server_cpu_us_per_message")]
        cpu = statistics.median(cpus) if cpus else None
        rows[s] = (med, run[1], run[2], [v[0] for v in vals], cpu)
    summary[case] = {
        s: {"median": v[0], "p50_us": v[1], "p99_us": v[2], "runs": v[3], "server_cpu_us_per_message": v[4]}
        for s, v in rows.items()
    }
    per_msg = case.startswith("echo") or case == "bcast10k"
    base = rows.get("ringpush", (None,))[0]
    kernel = rows.get("kernel", (None,))[0]
    lines.append(f"### {title}\n")
    cpu_col = " server CPU per message |" if per_msg else ""
    lines.append(f"| server | {unit} (median of {len(rows[servers[0]][3])}) | vs ringpush | vs kernel | p50 | p99 |{cpu_col} runs |")
    lines.append("|---|---:|---:|---:|---:|---:|" + ("---:|" if per_msg else "") + "---|")
    for s in servers:
        med, p50, p99, all_runs, cpu = rows[s]
        ratio = f"{med / base:.2f}x" if base else "-"
        of_kernel = f"{med / kernel:.2f}x" if kernel else "-"
        fmt = (lambda v: f"{v:,.0f}")
        lat = (lambda v: "-" if v is None else (f"{v / 1000:.1f} ms" if v >= 10000 else f"{v} us"))
        cpu_cell = (" - |" if cpu is None else f" {cpu:.2f} us |") if per_msg else ""
        lines.append(
            f"| {s} | {fmt(med)} | {ratio} | {of_kernel} | {lat(p50)} | {lat(p99)} |{cpu_cell} {', '.join(fmt(v) for v in all_runs)} |"
        )
    lines.append(f"\n({'higher' if higher else 'lower'} is better; \"vs kernel\": the server's median over the kernel baseline's, the same client and core)\n")

push_cases = [c for c in ("push-sse-1", "push-longpoll-1", "push-poll-1", "push-sse-10", "push-longpoll-10", "push-poll-10")
              if by.get((c, "ringpush"))]
if push_cases:
    lines.append("### Push against polling (ringpush, 1,000 subscribers)\n")
    lines.append("| events/s | transport | wire bytes per event | server CPU per event | delivery p50 | delivered |")
    lines.append("|---:|---|---:|---:|---:|---:|")
    names = {"sse": "SSE", "longpoll": "long polling (wait=30s)", "poll": "polling every 1 s"}
    for c in push_cases:
        rs = by[(c, "ringpush")]
        _, mode, rate = c.split("-")
        wire = statistics.median(r["wire_bytes_per_message"] for r in rs)
        cpu = statistics.median((r.get("server_cpu_us_per_message") or 0) for r in rs)
        p50 = statistics.median(r["latency_us"]["p50"] for r in rs)
        got = statistics.median(r["received"] / max(r["expected_deliveries"], 1) for r in rs)
        summary[c] = {"wire_bytes_per_event": wire, "server_cpu_us_per_event": cpu, "p50_us": p50}
        lines.append(f"| {rate} | {names[mode]} | {wire:.0f} B | {cpu:.2f} us | {p50 / 1000:.1f} ms | {got:.1%} |")
    lines.append("")

deflate_cases = [c for c in ("bcast10k-json", "bcast10k-deflate") if any(k[0] == c for k in by)]
if deflate_cases:
    lines.append("### Broadcast of a 1 KB JSON message to 10,000 subscribers, without and with permessage-deflate\n")
    lines.append("| server | case | deliveries/s (median) | wire bytes per delivery | server CPU per delivery | delivery p50 | runs |")
    lines.append("|---|---|---:|---:|---:|---:|---|")
    for c in deflate_cases:
        for s in sorted({k[1] for k in by if k[0] == c}, key=lambda s: (s != "ringpush", s)):
            rs = by[(c, s)]
            rate = statistics.median(r["received_per_sec"] for r in rs)
            wire = statistics.median(r["wire_bytes_per_message"] for r in rs)
            cpus = [r["server_cpu_us_per_message"] for r in rs if r.get("server_cpu_us_per_message")]
            cpu = statistics.median(cpus) if cpus else None
            p50 = statistics.median(r["latency_us"]["p50"] for r in rs)
            summary.setdefault(c, {})[s] = {
                "deliveries_per_sec": rate, "wire_bytes_per_delivery": wire, "server_cpu_us_per_delivery": cpu, "p50_us": p50,
            }
            cpu_cell = "-" if cpu is None else f"{cpu:.2f} us"
            runs_cell = ", ".join(f"{r['received_per_sec']:,.0f}" for r in rs)
            lines.append(f"| {s} | {c} | {rate:,.0f} | {wire:.0f} B | {cpu_cell} | {p50 / 1000:.1f} ms | {runs_cell} |")
    lines.append("")

builds_path = f"{out}/builds.txt"
builds = [l.strip() for l in open(builds_path)] if os.path.exists(builds_path) else []
builds = [l for l in builds if l]
if builds:
    lines.append("### Builds\n")
    lines.extend(f"- {b}" for b in builds)
    lines.append("")

open(f"{out}/results.md", "w").write("\n".join(lines) + "\n")
json.dump(summary, open(f"{out}/results.json", "w"), indent=1)
print("\n".join(lines))

try:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
except ImportError:
    print("(matplotlib not installed: no plot)", file=sys.stderr)
    sys.exit(0)

plotted = [(c, t, u, h) for c, t, u, h in CASES if c in summary]
if not plotted:
    sys.exit(0)  # only cases without a plot of their own (bcast10k-json/-deflate, push-*)
fig, axes = plt.subplots(1, len(plotted), figsize=(4 * len(plotted), 4.2))
if len(plotted) == 1:
    axes = [axes]
for ax, (case, title, unit, higher) in zip(axes, plotted):
    servers = list(summary[case])
    vals = [summary[case][s]["median"] for s in servers]
    colors = ["#2f7ed8" if s == "ringpush" else ("#999999" if s in ("raw-io_uring", "kernel") else "#f28f43") for s in servers]
    ax.bar(range(len(servers)), vals, color=colors)
    ax.set_xticks(range(len(servers)))
    ax.set_xticklabels(servers, rotation=35, ha="right", fontsize=8)
    ax.set_title(title, fontsize=9)
    ax.set_ylabel(unit + (" (higher is better)" if higher else " (lower is better)"), fontsize=8)
    # Values two orders of magnitude apart (idle memory) would flatten the small bars.
    if min(vals) > 0 and max(vals) / min(vals) > 30:
        ax.set_yscale("log")
        ax.set_ylabel(ax.get_ylabel() + ", log scale", fontsize=8)
    for i, v in enumerate(vals):
        ax.annotate(f"{v:,.0f}", (i, v), ha="center", va="bottom", fontsize=7)
fig.tight_layout()
fig.savefig(f"{out}/compare.png", dpi=110)
print(f"plot: {out}/compare.png", file=sys.stderr)
