#!/usr/bin/env python3
"""Summarizes a kernel timeline written by libloom_trace.so (loom_trace.c): for each CUDA graph
replayed at least --min-replays times, over its last --replays launches, the replay's span (first
kernel's start to last kernel's end), the sum of kernel durations, and per kernel name its launches a
replay, mean duration and mean gap before it (its start less the latest end of the kernels that
started before it: negative where it overlaps them, as programmatic dependent launch allows). With
--timeline, every kernel of the last replay of each graph too. --json writes the same as JSON, with
the last replay's timeline always."""
import argparse, collections, json


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("trace")
    ap.add_argument("--replays", type=int, default=20)
    ap.add_argument("--min-replays", type=int, default=5)
    ap.add_argument("--timeline", action="store_true")
    ap.add_argument("--json")
    a = ap.parse_args()
    launches = collections.defaultdict(list)  # (graph, correlation) -> kernels
    for line in open(a.trace):
        p = line.rstrip("\n").split(" ", 8)
        if len(p) < 9 or p[3] == "0":
            continue
        start, end, graph, corr = int(p[0]), int(p[1]), int(p[3]), int(p[5])
        launches[(graph, corr)].append((start, end, p[8], p[6], int(p[4])))
    graphs = collections.defaultdict(list)
    for (graph, corr), ks in launches.items():
        graphs[graph].append(sorted(ks))
    report = []
    for graph, replays in sorted(graphs.items()):
        if len(replays) < a.min_replays:
            continue
        replays.sort(key=lambda ks: ks[0][0])
        last = replays[-a.replays:]
        spans, busy = [], []
        per = collections.defaultdict(lambda: [0, 0.0, 0.0, 0])
        for ks in last:
            spans.append((max(k[1] for k in ks) - ks[0][0]) / 1000)
            busy.append(sum(k[1] - k[0] for k in ks) / 1000)
            latest = None
            for start, end, name, grid, node in ks:
                e = per[name[:70]]
                e[0] += 1
                e[1] += (end - start) / 1000
                if latest is not None:
                    e[2] += (start - latest) / 1000
                    e[3] += 1
                latest = end if latest is None else max(latest, end)
        n = len(last)
        g = {"graph": graph, "replays": len(replays), "measured": n, "kernels": len(last[-1]),
             "span_us": sum(spans) / n, "kernel_us": sum(busy) / n,
             "kernels_by_name": [{"name": k, "per_replay": v[0] / n, "mean_us": v[1] / v[0], "mean_gap_before_us": v[2] / max(v[3], 1)}
                                 for k, v in sorted(per.items(), key=lambda x: -x[1][1])]}
        t0 = last[-1][0][0]
        g["timeline"] = [{"start_us": (s - t0) / 1000, "us": (e - s) / 1000, "name": nm[:70], "grid": gr} for s, e, nm, gr, _ in last[-1]]
        report.append(g)
        print(f"graph {graph}: {len(replays)} replays, {g['kernels']} kernels; over the last {n}: span {g['span_us']:.1f} us, "
              f"kernels {g['kernel_us']:.1f} us")
        for k in g["kernels_by_name"]:
            print(f"  {k['per_replay']:6.1f} x {k['mean_us']:7.2f} us  gap before {k['mean_gap_before_us']:6.2f}  {k['name']}")
        if a.timeline:
            for k in g["timeline"]:
                print(f"    {k['start_us']:9.2f} {k['us']:7.2f}  {k['grid']:>12s}  {k['name']}")
    if a.json:
        json.dump(report, open(a.json, "w"), indent=1)


main()
