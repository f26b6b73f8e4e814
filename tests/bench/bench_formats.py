"""Opening cost of the other formats stays proportional to their metadata.

Writes a 2 GiB safetensors file (1,000 float32 tensors; written byte by byte from the format's specification)
and a 2 GiB Keras `.h5` file (h5py, the Keras 2 layout), then times side by side, warm page cache, median of N:
`ckpt info FILE` against what a user would otherwise run: a Python script reading the safetensors header
(`json.loads` of the header), and h5py listing every dataset with its shape and dtype. Peak memory of each
process comes from wait4's ru_maxrss.

    /usr/bin/python3 tests/bench/bench_formats.py --ckpt build/release/app/ckpt [--workdir DIR] [--runs N]
"""
import argparse
import json
import os
import statistics
import struct
import subprocess
import sys
import tempfile
import time

import numpy as np


def write_safetensors(path, n=1000, shape=(512, 1024)):
    if os.path.exists(path):
        return
    nbytes = int(np.prod(shape)) * 4
    header, offset = {}, 0
    for i in range(n):
        header[f"layers.{i}.weight"] = {"dtype": "F32", "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    header["__metadata__"] = {"format": "pt"}
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    rng = np.random.default_rng(0)
    block = rng.standard_normal(shape, dtype=np.float32).tobytes()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for _ in range(n):
            f.write(block)


def write_keras_h5(path, n=1000, shape=(512, 1024)):
    if os.path.exists(path):
        return
    import h5py
    rng = np.random.default_rng(0)
    block = rng.standard_normal(shape, dtype=np.float32)
    with h5py.File(path, "w") as f:
        mw = f.create_group("model_weights")
        names = [f"dense_{i}".encode() for i in range(n)]
        mw.attrs["layer_names"] = names
        for i in range(n):
            g = mw.create_group(f"dense_{i}")
            g.attrs["weight_names"] = [f"dense_{i}/kernel:0".encode()]
            g.create_group(f"dense_{i}").create_dataset("kernel:0", data=block)
        f.attrs["keras_version"] = b"2.11.0"
        f.attrs["backend"] = b"tensorflow"


def run(cmd):
    """(wall ms, peak MB) of one run; the peak from GNU time, which forks the command from its own small
    process (a child spawned from Python would report Python's pages: the kernel carries the parent's
    high-water mark across exec)."""
    t0 = time.perf_counter()
    p = subprocess.run(["/usr/bin/time", "-f", "%M"] + list(cmd), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    dt = time.perf_counter() - t0
    err = p.stderr.decode(errors="replace").strip().splitlines()
    if p.returncode != 0 or not err:
        raise RuntimeError(f"{' '.join(cmd)} failed: {err[-3:]}")
    return dt * 1000, int(err[-1]) / 1024


def measure(cmd, runs):
    run(cmd)
    samples = [run(cmd) for _ in range(runs)]
    return statistics.median(s[0] for s in samples), max(s[1] for s in samples)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "ckpt-bench"))
    ap.add_argument("--runs", type=int, default=5)
    a = ap.parse_args()
    os.makedirs(a.workdir, exist_ok=True)
    st = os.path.join(a.workdir, "bench_2gib.safetensors")
    h5 = os.path.join(a.workdir, "bench_2gib.h5")
    write_safetensors(st)
    rows = []
    for path in (st,):
        subprocess.run(["cat", path], stdout=subprocess.DEVNULL)
    reader = ("import json, struct, sys\n"
              "f = open(sys.argv[1], 'rb'); n = struct.unpack('<Q', f.read(8))[0]\n"
              "h = json.loads(f.read(n)); print(len(h))")
    rows.append(("2 GiB safetensors", "ckpt info", measure([a.ckpt, "info", st], a.runs)))
    rows.append(("", "python: read the JSON header", measure(["/usr/bin/python3", "-c", reader, st], a.runs)))
    keras_ok = subprocess.run([a.ckpt, "info", h5], capture_output=True).returncode == 0 if os.path.exists(h5) else None
    try:
        import h5py  # noqa: F401
        write_keras_h5(h5)
        subprocess.run(["cat", h5], stdout=subprocess.DEVNULL)
        keras_ok = subprocess.run([a.ckpt, "info", h5], capture_output=True).returncode == 0
    except ImportError:
        keras_ok = False
    if keras_ok:
        lister = ("import h5py, sys\n"
                  "out = []\n"
                  "h5py.File(sys.argv[1], 'r').visititems(lambda n, o: out.append((n, o.shape, o.dtype)) "
                  "if isinstance(o, h5py.Dataset) else None)\nprint(len(out))")
        rows.append(("2 GiB Keras .h5", "ckpt info", measure([a.ckpt, "info", h5], a.runs)))
        rows.append(("", "python: h5py lists the datasets", measure(["/usr/bin/python3", "-c", lister, h5], a.runs)))
    print(f"\n{'file':22} {'tool':34} {'wall ms':>9} {'peak MB':>9}")
    for f, tool, (ms, mb) in rows:
        print(f"{f:22} {tool:34} {ms:9.1f} {mb:9.1f}")
    if not keras_ok:
        print("(Keras .h5: not measured: this ckpt does not read it, or h5py is missing)")


if __name__ == "__main__":
    sys.exit(main())
