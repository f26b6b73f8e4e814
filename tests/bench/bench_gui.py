"""Time from process start until the module tree of a checkpoint is on screen, end to end.

Starts one Xvfb server, then runs `ckpt-browser FILE --report-ready --quit-when-ready` several times and
measures from the spawn until the window reports that the tree was painted. Files: a checkpoint of 1,000
tensors and one of 2 GiB (both written with real PyTorch, reused when present). For comparison it times
`python3 -c "import torch"` on the same machine.

    /usr/bin/python3 tests/bench/bench_gui.py --browser build/release/app/ckpt-browser [--workdir DIR] [--runs N]
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import torch


def write(path, make):
    if not os.path.exists(path):
        t0 = time.time()
        torch.save(make(), path)
        print(f"wrote {path} ({os.path.getsize(path) / 1e6:.1f} MB) in {time.time() - t0:.1f} s", flush=True)


def time_until_ready(cmd, env):
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True)
    line = proc.stdout.readline()
    ready = time.perf_counter() - t0
    proc.wait(timeout=60)
    if not line.startswith("ready ok"):
        raise RuntimeError(f"{' '.join(cmd)} did not report ready: {line!r}")
    return ready * 1000


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--browser", required=True)
    ap.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "ckpt-bench"))
    ap.add_argument("--runs", type=int, default=7)
    a = ap.parse_args()
    os.makedirs(a.workdir, exist_ok=True)
    small = os.path.join(a.workdir, "bench_1000.pt")
    large = os.path.join(a.workdir, "bench_2gib.pt")
    write(small, lambda: {f"layers.{i}.weight": torch.randn(16, 16) for i in range(1000)})
    write(large, lambda: {f"layers.{i}.weight": torch.randn(512, 1024) for i in range(1000)})

    display = ":%d" % (90 + os.getpid() % 9)
    xvfb = subprocess.Popen([shutil.which("Xvfb") or "Xvfb", display, "-screen", "0", "1400x900x24", "-nolisten", "tcp"],
                            stderr=subprocess.DEVNULL)
    time.sleep(1.0)
    env = dict(os.environ, DISPLAY=display, XDG_CONFIG_HOME=os.path.join(a.workdir, "config"))
    try:
        rows = []
        for label, path in (("1,000 tensors", small), ("2 GiB, 1,000 tensors", large)):
            cmd = [a.browser, path, "--report-ready", "--quit-when-ready"]
            time_until_ready(cmd, env)  # warm-up: page cache, fonts
            times = [time_until_ready(cmd, env) for _ in range(a.runs)]
            rows.append((label, os.path.getsize(path), statistics.median(times), min(times), max(times)))
        imports = []
        for _ in range(3):
            t0 = time.perf_counter()
            subprocess.run(["/usr/bin/python3", "-c", "import torch"], check=True)
            imports.append((time.perf_counter() - t0) * 1000)
    finally:
        xvfb.terminate()

    print(f"\nstart-up until the tree is shown (median of {a.runs}, warm page cache, Xvfb, {os.cpu_count()} cores)")
    print(f"{'file':28} {'size':>10} {'median ms':>10} {'min':>8} {'max':>8}")
    for label, size, med, lo, hi in rows:
        print(f"{label:28} {size / 2**20:8.0f} MiB {med:10.0f} {lo:8.0f} {hi:8.0f}")
    label = 'python3 -c "import torch"'
    print(f"{label:28} {'':>10} {statistics.median(imports):10.0f}")
    ok = all(r[2] < 300 for r in rows)
    print(f"\ntarget: under 300 ms for both, independent of file size: {'PASS' if ok else 'FAIL'}")


if __name__ == "__main__":
    sys.exit(main())
