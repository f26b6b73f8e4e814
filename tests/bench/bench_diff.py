#!/usr/bin/python3
"""Benchmark: comparing two 2 GiB checkpoints with `ckpt diff` versus a PyTorch script computing the same figures.

Usage:
    /usr/bin/python3 tests/bench/bench_diff.py --ckpt build/dev/app/ckpt/ckpt [--workdir DIR] [--keep] [--runs N]

Writes with the real PyTorch two checkpoints of 1,000 float32 tensors each (~2 GiB each): B is A with half of
the tensors moved a little, as a fine-tuning step moves them, and the other half byte for byte the same. Then
times, each in a fresh process with its peak memory from GNU time, the files already in the page cache:
  - reading both files once (`cat A B > /dev/null`), the floor for any tool that looks at every byte;
  - `ckpt diff A B --json`;
  - a PyTorch script that loads both files and computes the same figures per tensor in float64 (max and mean
    absolute difference, relative L2 change, cosine similarity, share of changed elements).
The figures of both are compared once before timing, with each other and, on a few tensors, with exactly
rounded sums (math.fsum). See tests/bench/README.md.
"""

import argparse
import collections
import io
import json
import math
import os
import pickle
import statistics
import subprocess
import sys
import time
import zipfile

import numpy as np

PYTHON = "/usr/bin/python3"        # Debian's python3-torch lives here; the python3 on PATH has no torch

TENSORS = 1000
SHAPE = (512, 1049)                # 537,088 float32 = 2,148,352 bytes each; 2.15 GB (~2.0 GiB) per file

TARGET_PEAK_MB = 64.0
TARGET_READ_RATIO = 1.5

GEN = r'''
import sys, torch
path_a, path_b = sys.argv[1], sys.argv[2]
g = torch.Generator().manual_seed(2026)
a, b = {}, {}
for i in range(%d):
    t = torch.randn(%d, %d, generator=g)
    a["blocks.%%d.weight" %% i] = t
    b["blocks.%%d.weight" %% i] = t + 1e-3 * torch.randn(t.shape, generator=g) if i %% 2 == 0 else t
torch.save({"model": a, "epoch": 10}, path_a)
torch.save({"model": b, "epoch": 11}, path_b)
''' % (TENSORS, SHAPE[0], SHAPE[1])

# The same figures as `ckpt diff`, the way a PyTorch user would write them: load both, float64 per tensor.
TORCH_DIFF = r'''
import json, sys, torch
torch.set_num_threads(%d)
a = torch.load(sys.argv[1])
b = torch.load(sys.argv[2])
out = {}
ma, mb = a["model"], b["model"]
for name, y in mb.items():
    x = ma.get(name)
    if x is None or x.shape != y.shape:
        continue
    x = x.double().reshape(-1)
    y = y.double().reshape(-1)
    d = y - x
    ad = d.abs()
    na, nb = x.norm(), y.norm()
    out["model." + name] = {"max_abs": ad.max().item(), "mean_abs": ad.mean().item(),
                            "rel_l2": (d.norm() / na).item(), "cosine": ((x * y).sum() / (na * nb)).item(),
                            "changed_fraction": (ad > 0).double().mean().item()}
if len(sys.argv) > 3:
    with open(sys.argv[3], "w") as f:
        json.dump(out, f)
'''


def ensure_files(workdir):
    paths = (os.path.join(workdir, "bench_diff_a.pt"), os.path.join(workdir, "bench_diff_b.pt"))
    meta_path = paths[0] + ".meta.json"
    spec = {"tensors": TENSORS, "shape": list(SHAPE), "dtype": "float32", "seed": 2026, "moved": "even"}
    if all(os.path.exists(p) for p in paths) and os.path.exists(meta_path):
        try:
            with open(meta_path) as f:
                meta = json.load(f)
            if meta.get("spec") == spec and meta.get("sizes") == [os.path.getsize(p) for p in paths]:
                print("reusing %s and %s" % paths)
                return paths
        except (OSError, ValueError):
            pass
    print("writing %s and %s with torch ..." % paths, end="", flush=True)
    t0 = time.perf_counter()
    subprocess.run([PYTHON, "-c", GEN, paths[0], paths[1]], check=True)
    with open(meta_path, "w") as f:
        json.dump({"spec": spec, "sizes": [os.path.getsize(p) for p in paths]}, f)
    print(" %.1f s" % (time.perf_counter() - t0))
    return paths


def measure(cmd, ok=(0,)):
    """(wall seconds, peak RSS in MB) of one child process, the peak from GNU time (see bench_open.py)."""
    t0 = time.perf_counter()
    proc = subprocess.run(["/usr/bin/time", "-f", "%M"] + list(cmd), stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE)
    wall = time.perf_counter() - t0
    err = proc.stderr.decode(errors="replace").strip().splitlines()
    if proc.returncode not in ok or not err:
        raise RuntimeError("%s failed (%d): %s" % (" ".join(cmd), proc.returncode, "\n".join(err[-5:])))
    return wall, int(err[-1]) / 1024.0      # %M is in KiB


def bench(cmd, runs, ok=(0,)):
    measure(cmd, ok)                           # warm-up: page cache, dynamic loader
    samples = [measure(cmd, ok) for _ in range(runs)]
    return statistics.median(s[0] for s in samples), max(s[1] for s in samples), [s[0] for s in samples]


def tensor_records(path):
    """{name: zip record of its storage} for the checkpoints written here (contiguous float32 tensors that
    each own a storage from byte 0), from the pickle, without torch: a restricted unpickler that keeps the
    storage key of each tensor."""
    class Unpickler(pickle.Unpickler):
        def find_class(self, module, name):
            if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
                return lambda storage, offset, size, *rest: (storage, offset, tuple(size))
            if (module, name) == ("collections", "OrderedDict"):
                return collections.OrderedDict
            if module == "torch" and name.endswith("Storage"):
                return name
            raise pickle.UnpicklingError("unexpected global %s.%s" % (module, name))

        def persistent_load(self, pid):
            return pid[2]  # ('storage', type, key, location, numel)

    z = zipfile.ZipFile(path)
    pkl = [n for n in z.namelist() if n.endswith("/data.pkl")][0]
    obj = Unpickler(io.BytesIO(z.read(pkl))).load()
    folder = pkl[:-len("data.pkl")]
    out = {}
    for name, (key, offset, shape) in obj["model"].items():
        assert offset == 0
        out["model." + name] = folder + "data/" + key
    return z, out


def exact_figures(a, b):
    """The figures with exactly rounded sums (math.fsum), the truth both tools are measured against."""
    d = b - a
    sd, sa, sb, ab = (math.fsum(v) for v in (d * d, a * a, b * b, a * b))
    return {"max_abs": float(np.abs(d).max()), "mean_abs": math.fsum(np.abs(d)) / d.size,
            "rel_l2": math.sqrt(sd) / math.sqrt(sa), "cosine": ab / math.sqrt(sa * sb),
            "changed_fraction": float(np.count_nonzero(d)) / d.size}


def check_figures(ckpt, a, b, workdir, threads):
    """Both tools' figures on these files, compared: the largest relative disagreement per figure."""
    proc = subprocess.run([ckpt, "diff", a, b, "--json"], stdout=subprocess.PIPE, check=False)
    if proc.returncode != 1:
        raise RuntimeError("ckpt diff exited %d" % proc.returncode)
    got = json.loads(proc.stdout)
    ref_path = os.path.join(workdir, "bench_diff_torch.json")
    subprocess.run([PYTHON, "-c", TORCH_DIFF % threads, a, b, ref_path], check=True)
    with open(ref_path) as f:
        ref = json.load(f)
    os.remove(ref_path)
    changed = {c["name"]: c for c in got["changed"]}
    worst = {}
    for name, r in ref.items():
        moved = r["max_abs"] > 0
        if moved != (name in changed):
            raise RuntimeError("%s: PyTorch says %s, ckpt diff %s" % (name, "changed" if moved else "same",
                                                                       "changed" if name in changed else "same"))
        if not moved:
            continue
        for k, v in r.items():
            err = abs(changed[name][k] - v) / max(abs(v), 1e-300)
            worst[k] = max(worst.get(k, 0.0), err)
    print("figures checked against PyTorch: %d tensors changed, %d identical; largest relative difference: %s"
          % (len(changed), got["identical"], ", ".join("%s %.1e" % kv for kv in sorted(worst.items()))))
    # Against exactly rounded sums, on a few of the changed tensors: which of the two is closer to the truth.
    za, ra = tensor_records(a)
    zb, rb = tensor_records(b)
    err = {"ckpt": {}, "PyTorch": {}}
    for name in sorted(changed)[:8]:
        x = np.frombuffer(za.read(ra[name]), dtype="<f4").astype(np.float64)
        y = np.frombuffer(zb.read(rb[name]), dtype="<f4").astype(np.float64)
        truth = exact_figures(x, y)
        for tool, figures in (("ckpt", changed[name]), ("PyTorch", ref[name])):
            for k, v in truth.items():
                e = abs(figures[k] - v) / max(abs(v), 1e-300)
                err[tool][k] = max(err[tool].get(k, 0.0), e)
    for tool, e in err.items():
        print("  %s against exactly rounded sums (8 tensors), largest relative error: %s"
              % (tool, ", ".join("%s %.1e" % kv for kv in sorted(e.items()))))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", required=True, help="path of the ckpt binary")
    ap.add_argument("--workdir", default="/tmp/ckpt-bench", help="folder for the generated checkpoints")
    ap.add_argument("--keep", action="store_true", help="keep the generated checkpoints afterwards")
    ap.add_argument("--runs", type=int, default=3, help="measured runs per tool (median reported)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="PyTorch intra-op threads")
    ap.add_argument("--no-check", action="store_true", help="skip the comparison of the figures")
    args = ap.parse_args()
    sys.stdout.reconfigure(line_buffering=True)

    ckpt = os.path.abspath(args.ckpt)
    if not os.access(ckpt, os.X_OK):
        sys.exit("ckpt binary not found: %s" % ckpt)
    os.makedirs(args.workdir, exist_ok=True)
    a, b = ensure_files(args.workdir)
    size = os.path.getsize(a) + os.path.getsize(b)

    print("Page cache: nothing is dropped; every tool gets one warm-up run, so all timings are warm-cache.")
    print("Runs per tool: %d (median wall time; peak RSS is the largest of the runs). CPU cores: %d; "
          "PyTorch threads: %d; load average before: %s" % (args.runs, os.cpu_count() or 0, args.threads,
                                                           " ".join("%.1f" % x for x in os.getloadavg())))
    if not args.no_check:
        check_figures(ckpt, a, b, args.workdir, args.threads)

    rows = []
    r_wall, r_rss, r_all = bench(["sh", "-c", 'cat "$0" "$1" > /dev/null', a, b], args.runs)
    rows.append(("read both files once (cat)", r_wall, r_rss, r_all))
    c_wall, c_rss, c_all = bench([ckpt, "diff", a, b, "--json"], args.runs, ok=(1,))
    rows.append(("ckpt diff --json", c_wall, c_rss, c_all))
    t_wall, t_rss, t_all = bench([PYTHON, "-c", TORCH_DIFF % args.threads, a, b], args.runs)
    rows.append(("PyTorch: load both + figures", t_wall, t_rss, t_all))

    print()
    hdr = "%-32s %10s %10s %10s %10s  %s" % ("tool", "wall s", "GB/s", "vs ckpt", "peak MB", "all runs (s)")
    print("files: %s + %s, %.2f GB together, %d tensors each" % (os.path.basename(a), os.path.basename(b),
                                                                 size / 1e9, TENSORS))
    print(hdr)
    print("-" * len(hdr))
    for tool, wall, rss, samples in rows:
        print("%-32s %10.2f %10.2f %9.2fx %10.1f  %s" % (tool, wall, size / 1e9 / wall, wall / c_wall, rss,
                                                        " ".join("%.2f" % s for s in samples)))
    print()
    ratio = c_wall / r_wall
    print("ckpt diff: %.1fx faster than PyTorch (target: faster: %s); peak %.1f MB (target < %.0f MB: %s); "
          "%.2fx the time to read both files once (target <= %.1fx: %s)"
          % (t_wall / c_wall, "PASS" if c_wall < t_wall else "FAIL", c_rss, TARGET_PEAK_MB,
             "PASS" if c_rss < TARGET_PEAK_MB else "FAIL", ratio, TARGET_READ_RATIO,
             "PASS" if ratio <= TARGET_READ_RATIO else "FAIL"))

    if not args.keep:
        for p in (a, b, a + ".meta.json"):
            try:
                os.remove(p)
            except OSError:
                pass
        try:
            os.rmdir(args.workdir)
        except OSError:
            pass


if __name__ == "__main__":
    main()
