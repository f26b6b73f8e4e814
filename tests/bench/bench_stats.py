#!/usr/bin/python3
"""Benchmark: statistics of a 1 GiB float32 tensor, the LibTorch plugin against PyTorch itself.

Usage:
    /usr/bin/python3 tests/bench/bench_stats.py --driver BUILD/tests/bench/stats_driver \
        [--plugin BUILD/lib/libckpt_torchstats.so] [--workdir DIR] [--keep] [--runs N] [--portable]
    /usr/bin/python3 tests/bench/bench_stats.py --ckpt BUILD/app/ckpt ...   (once `ckpt stats` uses the plugin)

Writes with the real PyTorch a checkpoint holding one 1 GiB float32 tensor (reused from the work folder when
present and matching), warms the page cache, then times
  - ours: computeStatsFast through stats_driver (statistics only: the file is opened and the plugin loaded
    before the clock starts; the first run also pays the page faults of a fresh mapping), or the whole
    `ckpt stats FILE NAME --json` process with --ckpt;
  - PyTorch: the same statistics (count, NaN, Inf, zeros, min, max, mean and std over the finite values,
    a histogram with the same bins) on the tensor already in memory after torch.load;
both with two threads, and prints them side by side with the target (>= 4 GB/s). See README.md.
"""

import argparse
import json
import math
import os
import subprocess
import sys
import time

PYTHON = "/usr/bin/python3"        # Debian's python3-torch lives here; the python3 on PATH has no torch
TARGET_GBPS = 4.0
THREADS = 2
SHAPE = (16384, 16384)             # 268,435,456 float32 = 1 GiB
NAME = "weight"

GEN = r'''
import sys, torch
path = sys.argv[1]
g = torch.Generator().manual_seed(2026)
x = torch.randn(%d, %d, generator=g)
flat = x.view(-1)
flat[::1000003] = float("nan")     # a few of each special value, so that masking them costs what it costs
flat[5::999983] = float("inf")
flat[7::999979] = float("-inf")
flat[11::4099] = 0.0
torch.save({"%s": x}, path)
''' % (SHAPE[0], SHAPE[1], NAME)

# PyTorch's way to the same numbers, timed op by op on the tensor in memory. `mean` and `std` are given twice:
# with PyTorch's float32 accumulation, and in float64 as computeStats accumulates.
TORCH_STATS = r'''
import json, sys, time, torch
path, name, bins, threads, runs = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
torch.set_num_threads(threads)
x = torch.load(path)[name]
def once():
    t = {}
    def lap(k, t0):
        t[k] = time.perf_counter() - t0
        return time.perf_counter()
    t0 = time.perf_counter(); start = t0
    fin = torch.isfinite(x); t0 = lap("isfinite", t0)
    nan = int(torch.isnan(x).sum()); t0 = lap("isnan.sum", t0)
    finite = int(fin.sum()); inf = x.numel() - finite - nan; t0 = lap("finite.sum", t0)
    zeros = int((x == 0).sum()); t0 = lap("(x==0).sum", t0)
    v = x if finite == x.numel() else x[fin]; t0 = lap("x[isfinite]", t0)
    mn, mx = torch.aminmax(v); mn, mx = float(mn), float(mx); t0 = lap("aminmax", t0)
    std32, mean32 = torch.std_mean(v); t0 = lap("std_mean (float32)", t0)
    hist = torch.histc(v, bins=bins, min=mn, max=mx) if mn < mx else torch.histc(v, bins=bins, min=mn - 0.5, max=mx + 0.5)
    t0 = lap("histc", t0)
    total = t0 - start
    t1 = time.perf_counter()
    std64, mean64 = torch.std_mean(v.double()); t["std_mean (float64)"] = time.perf_counter() - t1
    lo, hi = (mn, mx) if mn < mx else (mn - 0.5, mx + 0.5)
    hist64 = torch.histc(v.double(), bins=bins, min=lo, max=hi)    # not timed: for checking only
    return {"total_s": total, "total_f64_s": total - t["std_mean (float32)"] + t["std_mean (float64)"], "ops": t,
            "stats": {"count": x.numel(), "nan": nan, "inf": inf, "zeros": zeros, "min": mn, "max": mx,
                      "mean": float(mean64), "std": float(std64), "mean32": float(mean32), "std32": float(std32),
                      "histc": [int(c) for c in hist.tolist()], "histc64": [int(c) for c in hist64.tolist()]}}
res = [once() for _ in range(runs)]
best = min(res, key=lambda r: r["total_s"])
best["all_total_s"] = [r["total_s"] for r in res]
best["threads"] = torch.get_num_threads()
print(json.dumps(best))
'''


def ensure_file(workdir):
    path = os.path.join(workdir, "bench_stats_1gib.pt")
    meta_path = path + ".meta.json"
    spec = {"shape": list(SHAPE), "dtype": "float32", "seed": 2026, "specials": 3, "name": NAME}
    if os.path.exists(path) and os.path.exists(meta_path):
        try:
            with open(meta_path) as f:
                meta = json.load(f)
            if meta.get("spec") == spec and meta.get("size") == os.path.getsize(path):
                print("reusing %s (%.2f GB)" % (path, meta["size"] / 1e9))
                return path
        except (OSError, ValueError):
            pass
    print("writing %s with torch ..." % path, end="", flush=True)
    t0 = time.perf_counter()
    subprocess.run([PYTHON, "-c", GEN, path], check=True)
    size = os.path.getsize(path)
    with open(meta_path, "w") as f:
        json.dump({"spec": spec, "size": size}, f)
    print(" %.1f s, %.2f GB" % (time.perf_counter() - t0, size / 1e9))
    return path


def warm(path):
    """Read the whole file once so that every later read finds it in the page cache."""
    t0 = time.perf_counter()
    with open(path, "rb", buffering=0) as f:
        while f.read(16 << 20):
            pass
    print("page cache warmed: %.2f GB in %.2f s" % (os.path.getsize(path) / 1e9, time.perf_counter() - t0))


def run_json(cmd, env=None):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1]), out.stderr


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    who = ap.add_mutually_exclusive_group(required=True)
    who.add_argument("--driver", help="stats_driver binary (times the statistics alone)")
    who.add_argument("--ckpt", help="ckpt binary: times the whole `ckpt stats FILE NAME --json` process")
    ap.add_argument("--plugin", help="libckpt_torchstats.so to use (sets CKPT_TORCHSTATS)")
    ap.add_argument("--workdir", default="/tmp/ckpt-bench", help="folder for the generated checkpoint")
    ap.add_argument("--keep", action="store_true", help="keep the generated checkpoint afterwards")
    ap.add_argument("--runs", type=int, default=3, help="runs per process (best reported); default 3")
    ap.add_argument("--bins", type=int, default=32)
    ap.add_argument("--portable", action="store_true", help="also time the portable computeStats (slow)")
    args = ap.parse_args()

    os.makedirs(args.workdir, exist_ok=True)
    path = ensure_file(args.workdir)
    nbytes = SHAPE[0] * SHAPE[1] * 4
    warm(path)
    env = dict(os.environ)
    if args.plugin:
        env["CKPT_TORCHSTATS"] = os.path.abspath(args.plugin)
    env["OMP_NUM_THREADS"] = str(THREADS)
    print("CPU cores: %d; threads: %d for both; runs: %d" % (os.cpu_count() or 0, THREADS, args.runs))

    rows = []   # (what, seconds, note)
    ours = None
    if args.driver:
        res, _ = run_json([os.path.abspath(args.driver), path, NAME, "--bins", str(args.bins),
                           "--runs", str(args.runs)], env)
        if "plugin_error" in res:
            print("WARNING: the plugin did not load, the portable path ran:\n  " +
                  res["plugin_error"].replace("\n", "\n  "))
        if "fallback_reason" in res:
            print("WARNING: the tensor went to the portable path: " + res["fallback_reason"])
        print("plugin: %s (dlopen with LibTorch: %.3f s, not in the timings below)"
              % (res.get("plugin") or "-", res.get("plugin_load_s", 0)))
        secs = res["seconds"]
        rows.append(("ours: computeStatsFast, first run (fresh mapping)", secs[0], ""))
        rows.append(("ours: computeStatsFast, best of %d" % len(secs), min(secs), ""))
        ours = res["stats"]
        best = min(secs)
        if args.portable:
            pres, _ = run_json([os.path.abspath(args.driver), path, NAME, "--bins", str(args.bins), "--runs", "1",
                                "--portable"], env)
            rows.append(("ours: portable computeStats (one thread)", pres["seconds"][0], ""))
            if pres["stats"]["counts"] != ours["counts"] or pres["stats"]["min"] != ours["min"] or \
                    pres["stats"]["max"] != ours["max"]:
                print("WARNING: the plugin's counts or extremes differ from the portable path's")
    else:
        samples = []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            out = subprocess.run([os.path.abspath(args.ckpt), "stats", path, NAME, "--bins", str(args.bins),
                                  "--json"], check=True, capture_output=True, text=True, env=env)
            samples.append(time.perf_counter() - t0)
        t = json.loads(out.stdout)["tensors"][0]
        ours = {"count": t["count"], "nan": t["nan"], "inf": t["inf"], "zeros": t["zeros"], "min": t["min"],
                "max": t["max"], "mean": t["mean"], "std": t["std"], "counts": t["histogram"]["counts"]}
        rows.append(("ours: whole `ckpt stats --json` process, best of %d" % len(samples), min(samples),
                     "includes start-up and loading LibTorch"))
        best = min(samples)

    tres, _ = run_json([PYTHON, "-c", TORCH_STATS, path, NAME, str(args.bins), str(THREADS), str(args.runs)], env)
    rows.append(("PyTorch: same statistics, float32 accumulation", tres["total_s"], "tensor already in memory"))
    rows.append(("PyTorch: same, mean/std in float64 (as ours)", tres["total_f64_s"], "tensor already in memory"))
    rows.append(("PyTorch: float32, less the x[isfinite] copy", tres["total_s"] - tres["ops"]["x[isfinite]"],
                 "as if every element were finite"))

    print()
    hdr = "%-58s %10s %10s  %s" % ("what (1 GiB float32, %d bins)" % args.bins, "seconds", "GB/s", "note")
    print(hdr)
    print("-" * len(hdr))
    for what, s, note in rows:
        print("%-58s %10.3f %10.2f  %s" % (what, s, nbytes / s / 1e9, note))
    print()
    print("PyTorch op by op (best run, threads=%d):" % tres["threads"])
    for k, v in tres["ops"].items():
        print("  %-22s %8.3f s  %6.2f GB/s" % (k, v, nbytes / v / 1e9))

    ts = tres["stats"]
    agree = (ours["count"] == ts["count"] and ours["nan"] == ts["nan"] and ours["inf"] == ts["inf"] and
             ours["zeros"] == ts["zeros"] and ours["min"] == ts["min"] and ours["max"] == ts["max"] and
             math.isclose(ours["mean"], ts["mean"], rel_tol=1e-9, abs_tol=1e-12) and
             math.isclose(ours["std"], ts["std"], rel_tol=1e-9) and
             all(abs(a - b) <= 16 for a, b in zip(ours["counts"], ts["histc64"])))
    print()
    print("results agree with PyTorch's (counts, extremes exactly; mean and std (float64) to 1e-9; each bin within "
          "16 of histc in float64, which settles values on an edge differently from NumPy): %s"
          % ("yes" if agree else "NO"))
    if sum(ts["histc"]) != ts["count"] - ts["nan"] - ts["inf"]:
        print("note: torch.histc on the float32 tensor counts %d of %d finite values: it counts in float32, which "
              "stops adding 1 at 2^24 per bin" % (sum(ts["histc"]), ts["count"] - ts["nan"] - ts["inf"]))
    if not agree:
        print("  ours:    %s" % {k: ours[k] for k in ("count", "nan", "inf", "zeros", "min", "max", "mean", "std")})
        print("  PyTorch: %s" % {k: ts[k] for k in ("count", "nan", "inf", "zeros", "min", "max", "mean", "std")})
        print("  histogram, ours:            %s" % ours["counts"])
        print("  histogram, histc (float64): %s" % ts["histc64"])
    gbps = nbytes / best / 1e9
    print("verdict: %.2f GB/s (target >= %.1f GB/s): %s; %.1fx PyTorch (float32 accumulation), %.1fx PyTorch "
          "(float64)" % (gbps, TARGET_GBPS, "PASS" if gbps >= TARGET_GBPS else "FAIL",
                         tres["total_s"] / best, tres["total_f64_s"] / best))

    if not args.keep:
        for q in (path, path + ".meta.json"):
            try:
                os.remove(q)
            except OSError:
                pass
        try:
            os.rmdir(args.workdir)
        except OSError:
            pass


if __name__ == "__main__":
    main()
