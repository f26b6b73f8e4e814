#!/usr/bin/python3
"""Benchmark: `ckpt export` of a 2 GiB checkpoint (device remap plus filter) against a PyTorch script doing
the same (torch.load with map_location, filter, torch.save) and against `cp` of the file, with peak memory.

Usage:
    /usr/bin/python3 tests/bench/bench_export.py --ckpt build/dev/app/ckpt [--workdir DIR] [--keep] [--runs N]

The checkpoint is written by the real PyTorch with every storage tagged cuda:0 (as a GPU training run saves
it): 800 model tensors and 200 optimizer tensors of 512 x 1049 float32 (2.15 GB). Each tool runs in a fresh
process under GNU time (`/usr/bin/time`: wall seconds, peak RSS, user + system CPU seconds), in rounds that
run every tool once (so a burst of load on a shared machine slows all tools of a round alike): a warm-up
round, then --runs measured rounds; medians are printed side by side with the targets. The page cache is not dropped, so
every figure is a warm-cache one. See tests/bench/README.md.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

PYTHON = "/usr/bin/python3"
TIME = "/usr/bin/time"
MODEL_TENSORS, OPT_TENSORS, SHAPE = 800, 200, (512, 1049)
TARGETS = {"vs_cp": 1.5, "vs_script": 3.0, "peak_mb": 64.0}

GEN = r'''
import sys, torch, torch.serialization
path = sys.argv[1]
g = torch.Generator().manual_seed(2026)
d = {}
for i in range(%d):
    d["model.blocks.%%d.weight" %% i] = torch.randn(%d, %d, generator=g)
for i in range(%d):
    d["optimizer.state.%%d.exp_avg" %% i] = torch.randn(%d, %d, generator=g)
torch.serialization.location_tag = lambda s: "cuda:0"
torch.save(d, path)
''' % (MODEL_TENSORS, SHAPE[0], SHAPE[1], OPT_TENSORS, SHAPE[0], SHAPE[1])

SCRIPT = r'''
import sys, torch
sd = torch.load(sys.argv[1], map_location={"cuda:0": "cpu"})
sd = {k: v for k, v in sd.items() if not k.startswith("optimizer.")}
torch.save(sd, sys.argv[2])
'''


def ensure_file(workdir):
    path = os.path.join(workdir, "bench_export_2gib.pt")
    meta_path = path + ".meta.json"
    spec = {"model": MODEL_TENSORS, "optimizer": OPT_TENSORS, "shape": list(SHAPE), "seed": 2026, "tag": "cuda:0"}
    if os.path.exists(path) and os.path.exists(meta_path):
        with open(meta_path) as f:
            meta = json.load(f)
        if meta.get("spec") == spec and meta.get("size") == os.path.getsize(path):
            print("reusing %s (%.2f GB)" % (path, meta["size"] / 1e9))
            return path
    print("writing %s with torch ..." % path, end="", flush=True)
    t0 = time.perf_counter()
    subprocess.run([PYTHON, "-c", GEN, path], check=True)
    with open(meta_path, "w") as f:
        json.dump({"spec": spec, "size": os.path.getsize(path)}, f)
    print(" %.1f s, %.2f GB" % (time.perf_counter() - t0, os.path.getsize(path) / 1e9))
    return path


def timed(cmd, out):
    """Runs cmd under GNU time; returns (wall seconds, peak RSS in MB, user + system CPU seconds)."""
    if os.path.exists(out):
        os.unlink(out)
    proc = subprocess.run([TIME, "-f", "%e %M %U %S"] + cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if proc.returncode != 0:
        sys.exit("failed: %s\n%s" % (" ".join(cmd), proc.stderr.decode(errors="replace")))
    wall, kib, user, system = proc.stderr.decode().strip().splitlines()[-1].split()
    return float(wall), int(kib) / 1024.0, float(user) + float(system)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--workdir", default="/tmp/ckpt-bench")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    os.makedirs(args.workdir, exist_ok=True)
    src = ensure_file(args.workdir)
    w = args.workdir
    tools = [
        ("ckpt export (remap + filter)", [args.ckpt, "export", src, "-o", os.path.join(w, "out_ckpt.pt"),
                                          "--map-location", "cuda:0=cpu", "--exclude", "optimizer.*", "--quiet"],
         os.path.join(w, "out_ckpt.pt")),
        ("ckpt export + bfloat16 cast", [args.ckpt, "export", src, "-o", os.path.join(w, "out_bf16.pt"),
                                         "--map-location", "cuda:0=cpu", "--exclude", "optimizer.*",
                                         "--dtype", "bfloat16", "--quiet"], os.path.join(w, "out_bf16.pt")),
        ("torch script (load, filter, save)", [PYTHON, "-c", SCRIPT, src, os.path.join(w, "out_torch.pt")],
         os.path.join(w, "out_torch.pt")),
        ("cp", ["cp", src, os.path.join(w, "out_cp.pt")], os.path.join(w, "out_cp.pt")),
        # the export flushes its file to disk before renaming it; cp does not, `sync FILE` does the same for it
        ("cp + sync FILE", ["sh", "-c", 'cp "$0" "$1" && sync "$1"', src, os.path.join(w, "out_cps.pt")],
         os.path.join(w, "out_cps.pt")),
    ]
    # Round robin: a busy machine slows every tool of a round alike, rather than whichever ran during the burst.
    runs = {name: [] for name, _, _ in tools}
    sizes = {}
    for r in range(args.runs + 1):
        for name, cmd, out in tools:
            t = timed(cmd, out)
            sizes[name] = os.path.getsize(out)
            if r > 0:  # round 0 warms the page cache
                runs[name].append(t)
        print("  round %d done" % r, flush=True)
    results = {}
    for name, _, _ in tools:
        rr = runs[name]
        results[name] = (statistics.median(x[0] for x in rr), max(x[1] for x in rr), sizes[name],
                         statistics.median(x[2] for x in rr))
        print("  %-36s %s" % (name, ", ".join("%.2f s" % x[0] for x in rr)))
    # the export is what the script writes
    check = subprocess.run([PYTHON, "-c", r'''
import sys, torch
a = torch.load(sys.argv[1], weights_only=True); b = torch.load(sys.argv[2])
assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a) and all(v.device.type == "cpu" for v in a.values())
print("same %d tensors" % len(a))''', os.path.join(w, "out_ckpt.pt"), os.path.join(w, "out_torch.pt")],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    print("output check: " + (check.stdout.decode().strip() or check.stderr.decode()[-500:]))
    src_size = os.path.getsize(src)
    print("\nsource: %s, %.2f GB (%d model + %d optimizer tensors, storages on cuda:0)"
          % (src, src_size / 1e9, MODEL_TENSORS, OPT_TENSORS))
    print("%-36s %10s %10s %10s %12s %10s" % ("tool", "wall s", "CPU s", "peak MB", "output GB", "vs export"))
    base = results["ckpt export (remap + filter)"][0]
    for name, (wall, peak, size, cpu) in results.items():
        print("%-36s %10.2f %10.2f %10.1f %12.2f %9.2fx" % (name, wall, cpu, peak, size / 1e9, wall / base))
    exp_wall, exp_peak, _, _ = results["ckpt export (remap + filter)"]
    cp_wall = results["cp"][0]
    cps_wall = results["cp + sync FILE"][0]
    script_wall = results["torch script (load, filter, save)"][0]
    print("\ntargets:")
    print("  export within %.1fx of cp:          %.2fx  %s" % (TARGETS["vs_cp"], exp_wall / cp_wall,
                                                                "met" if exp_wall <= TARGETS["vs_cp"] * cp_wall else "MISSED"))
    print("  export within %.1fx of cp + sync:   %.2fx  %s" % (TARGETS["vs_cp"], exp_wall / cps_wall,
                                                                "met" if exp_wall <= TARGETS["vs_cp"] * cps_wall else "MISSED"))
    print("  export several times faster than the script: %.1fx faster  %s"
          % (script_wall / exp_wall, "met" if script_wall >= TARGETS["vs_script"] * exp_wall else "MISSED"))
    print("  export peak memory under %d MB:     %.1f MB  %s" % (TARGETS["peak_mb"], exp_peak,
                                                                  "met" if exp_peak < TARGETS["peak_mb"] else "MISSED"))
    if not args.keep:
        for name, cmd, out in tools:
            if os.path.exists(out):
                os.unlink(out)
        os.unlink(src)
        os.unlink(src + ".meta.json")


if __name__ == "__main__":
    main()
