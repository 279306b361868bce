#!/usr/bin/env python3
"""Prints compare.sh's Markdown tables from its result files.

    summary.py RUNS_TSV SNAPSHOTS_TSV

RUNS_TSV: kind target round rps p50_us p99_us requests proxy_cpu_us upstream_cpu_us (per request)
SNAPSHOTS_TSV: label fds rss_kb connections_open
"""

import statistics
import sys


def ms(us):
    return f"{us / 1000:.2f}"


def main():
    runs_path, snapshots_path = sys.argv[1:3]
    runs = {}
    with open(runs_path) as f:
        for line in f:
            kind, target, rnd, rps, p50, p99, requests, cpu, up_cpu = line.split()
            runs.setdefault(kind, {}).setdefault(target, []).append(
                dict(
                    round=int(rnd),
                    rps=float(rps),
                    p50=int(p50),
                    p99=int(p99),
                    requests=int(requests),
                    cpu=float(cpu),
                    up_cpu=float(up_cpu),
                )
            )

    for kind in ("unrestricted", "restricted"):
        if kind not in runs:
            continue
        nginx, sidecar = runs[kind]["nginx"], runs[kind]["sidecar"]
        print(f"#### {kind}\n")
        print(
            "| round | nginx req/s | nginx p50 ms | nginx p99 ms | sidecar req/s | sidecar p50 ms "
            "| sidecar p99 ms | nginx CPU µs/req | sidecar CPU µs/req |"
        )
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for n, s in zip(nginx, sidecar):
            print(
                f"| {n['round']} | {n['rps']:.0f} | {ms(n['p50'])} | {ms(n['p99'])} "
                f"| {s['rps']:.0f} | {ms(s['p50'])} | {ms(s['p99'])} "
                f"| {n['cpu']:.1f} | {s['cpu']:.1f} |"
            )
        med = {
            name: {k: statistics.median(r[k] for r in rows) for k in ("rps", "p50", "p99", "cpu", "up_cpu")}
            for name, rows in (("nginx", nginx), ("sidecar", sidecar))
        }
        n, s = med["nginx"], med["sidecar"]
        print(
            f"| **median** | **{n['rps']:.0f}** | **{ms(n['p50'])}** | **{ms(n['p99'])}** "
            f"| **{s['rps']:.0f}** | **{ms(s['p50'])}** | **{ms(s['p99'])}** "
            f"| **{n['cpu']:.1f}** | **{s['cpu']:.1f}** |"
        )
        diff = (s["p99"] - n["p99"]) / 1000
        print()
        print(
            f"sidecar/nginx throughput (medians): **{s['rps'] / n['rps']:.2f}**; "
            f"p99 difference: **{diff:+.2f} ms**; "
            f"proxy CPU per request, sidecar/nginx: **{s['cpu'] / n['cpu']:.2f}** "
            f"(the canned upstream used {n['up_cpu']:.1f} / {s['up_cpu']:.1f} µs a request "
            f"behind nginx / the sidecar)\n"
        )

    print("#### sidecar descriptors and memory\n")
    print("| when | open descriptors | RSS MiB | connections_open gauge |")
    print("| --- | ---: | ---: | ---: |")
    with open(snapshots_path) as f:
        for line in f:
            label, fds, rss_kb, gauge = line.rstrip("\n").split("\t")
            print(f"| {label} | {fds} | {int(rss_kb) / 1024:.1f} | {gauge} |")
    print()


main()
