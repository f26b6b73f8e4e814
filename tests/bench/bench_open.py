#!/usr/bin/python3
"""Benchmark: opening a checkpoint with `ckpt info` versus `torch.load(weights_only=True)`.

Usage:
    /usr/bin/python3 tests/bench/bench_open.py --ckpt build/dev/app/ckpt/ckpt [--workdir DIR] [--keep] [--runs N]

Writes with the real PyTorch (a) a ~2 GiB checkpoint of 1,000 float32 tensors and (b) a checkpoint of 100,000
small tensors (both reused from the work folder when present and matching), then times each tool in a fresh
process, several runs each, and prints the medians side by side with the targets. See tests/bench/README.md.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

PYTHON = "/usr/bin/python3"        # Debian's python3-torch lives here; the python3 on PATH has no torch

BIG_TENSORS = 1000
BIG_SHAPE = (512, 1049)            # 537,088 float32 = 2,148,352 bytes each; 2.15 GB (~2.0 GiB) in all
MANY_TENSORS = 100_000

TARGETS = {
    "2gib": {"speedup": 100.0, "peak_mb": 64.0},
    "100k": {"speedup": 10.0, "peak_mb": None},
}

GEN_BIG = r'''
import sys, torch
path = sys.argv[1]
g = torch.Generator().manual_seed(2024)
d = {}
for i in range(%d):
    d["blocks.%%d.weight" %% i] = torch.randn(%d, %d, generator=g)
torch.save(d, path)
''' % (BIG_TENSORS, BIG_SHAPE[0], BIG_SHAPE[1])

GEN_MANY = r'''
import sys, torch
path = sys.argv[1]
g = torch.Generator().manual_seed(2025)
d = {}
for i in range(%d):
    d["layer%%d.sub%%d.param%%d" %% (i // 1000, (i // 10) %% 100, i)] = torch.randn(i %% 7 + 1, generator=g)
torch.save(d, path)
''' % MANY_TENSORS


def spec_of(kind):
    if kind == "2gib":
        return {"kind": kind, "tensors": BIG_TENSORS, "shape": list(BIG_SHAPE), "dtype": "float32", "seed": 2024}
    return {"kind": kind, "tensors": MANY_TENSORS, "shape": "i % 7 + 1", "dtype": "float32", "seed": 2025}


def ensure_file(workdir, kind):
    """Generate the checkpoint unless a file with the same spec and the recorded size is already there."""
    path = os.path.join(workdir, {"2gib": "bench_2gib.pt", "100k": "bench_100k.pt"}[kind])
    meta_path = path + ".meta.json"
    spec = spec_of(kind)
    if os.path.exists(path) and os.path.exists(meta_path):
        try:
            with open(meta_path) as f:
                meta = json.load(f)
            if meta.get("spec") == spec and meta.get("size") == os.path.getsize(path):
                print("reusing %s (%.1f MB)" % (path, meta["size"] / 1e6))
                return path
        except (OSError, ValueError):
            pass
    print("writing %s with torch ..." % path, end="", flush=True)
    t0 = time.perf_counter()
    subprocess.run([PYTHON, "-c", GEN_BIG if kind == "2gib" else GEN_MANY, path], check=True)
    size = os.path.getsize(path)
    with open(meta_path, "w") as f:
        json.dump({"spec": spec, "size": size}, f)
    print(" %.1f s, %.1f MB" % (time.perf_counter() - t0, size / 1e6))
    return path


def measure(cmd):
    """(wall seconds, peak RSS in MB) of one child process.

    The peak comes from GNU time (Debian package `time`), which forks the command from its own small process:
    a child spawned straight from this Python process would report Python's pages as its own, because the
    kernel carries the parent's high-water mark across exec (with fork and vfork alike)."""
    t0 = time.perf_counter()
    proc = subprocess.run(["/usr/bin/time", "-f", "%M"] + list(cmd), stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE)
    wall = time.perf_counter() - t0
    err = proc.stderr.decode(errors="replace").strip().splitlines()
    if proc.returncode != 0 or not err:
        raise RuntimeError("%s failed (%d): %s" % (" ".join(cmd), proc.returncode, "\n".join(err[-5:])))
    return wall, int(err[-1]) / 1024.0      # %M is in KiB


def bench(cmd, runs):
    measure(cmd)                               # warm-up: page cache, dynamic loader
    samples = [measure(cmd) for _ in range(runs)]
    return statistics.median(s[0] for s in samples), max(s[1] for s in samples), samples


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", required=True, help="path of the ckpt binary")
    ap.add_argument("--workdir", default="/tmp/ckpt-bench", help="folder for the generated checkpoints")
    ap.add_argument("--keep", action="store_true", help="keep the generated checkpoints afterwards")
    ap.add_argument("--runs", type=int, default=5, help="measured runs per tool (median reported)")
    ap.add_argument("--only", choices=["2gib", "100k"], help="run one file only")
    args = ap.parse_args()

    ckpt = os.path.abspath(args.ckpt)
    if not os.access(ckpt, os.X_OK):
        sys.exit("ckpt binary not found: %s" % ckpt)
    os.makedirs(args.workdir, exist_ok=True)
    kinds = [args.only] if args.only else ["2gib", "100k"]

    print("Page cache: nothing is dropped; every tool gets one warm-up run, so all timings are warm-cache.")
    print("Runs per tool: %d (median wall time; peak RSS is the largest ru_maxrss of the runs)." % args.runs)
    print("CPU cores: %d" % (os.cpu_count() or 0))

    paths = {k: ensure_file(args.workdir, k) for k in kinds}

    imp_wall, imp_rss, _ = bench([PYTHON, "-c", "import torch"], args.runs)

    rows = []
    verdicts = []
    for kind in kinds:
        path = paths[kind]
        label = "%s (%.2f GB, %s tensors)" % (os.path.basename(path), os.path.getsize(path) / 1e9,
                                             "{:,}".format(spec_of(kind)["tensors"]))
        c_wall, c_rss, _ = bench([ckpt, "info", path], args.runs)
        l_wall, l_rss, _ = bench([ckpt, "ls", path, "--json"], args.runs)
        t_wall, t_rss, _ = bench([PYTHON, "-c", "import sys, torch; torch.load(sys.argv[1], weights_only=True)",
                                  path], args.runs)
        load_only = max(t_wall - imp_wall, 1e-9)
        rows.append((label, "ckpt info", c_wall, None, c_rss))
        rows.append(("", "ckpt ls --json", l_wall, None, l_rss))
        rows.append(("", "python: import torch", imp_wall, None, imp_rss))
        rows.append(("", "python: import + torch.load", t_wall, t_wall / c_wall, t_rss))
        rows.append(("", "torch.load minus import", load_only, load_only / c_wall, None))
        tgt = TARGETS[kind]
        ok_speed = t_wall / c_wall >= tgt["speedup"]
        ok_speed_excl = load_only / c_wall >= tgt["speedup"]
        line = "%s: ckpt info is %.0fx faster than import+torch.load (target >= %.0fx: %s), %.0fx faster than " \
               "torch.load alone (%s)" % (kind, t_wall / c_wall, tgt["speedup"], "PASS" if ok_speed else "FAIL",
                                          load_only / c_wall, "PASS" if ok_speed_excl else "FAIL")
        if tgt["peak_mb"] is not None:
            line += "; ckpt peak %.1f MB (target < %.0f MB: %s)" % (c_rss, tgt["peak_mb"],
                                                                  "PASS" if c_rss < tgt["peak_mb"] else "FAIL")
        verdicts.append(line)

    print()
    hdr = "%-42s %-30s %12s %10s %10s" % ("file", "tool", "wall ms", "ratio", "peak MB")
    print(hdr)
    print("-" * len(hdr))
    for label, tool, wall, ratio, rss in rows:
        print("%-42s %-30s %12.1f %10s %10s" % (label, tool, wall * 1000,
                                               "%.1fx" % ratio if ratio is not None else "",
                                               "%.1f" % rss if rss is not None else ""))
    print()
    print("ratio = that row's wall time / ckpt info's wall time on the same file.")
    print("Targets: 2 GiB file: ckpt >= 100x faster than torch.load, ckpt peak < 64 MB; "
          "100k tensors: ckpt >= 10x faster.")
    for v in verdicts:
        print(v)

    if not args.keep:
        for p in paths.values():
            for q in (p, p + ".meta.json"):
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
