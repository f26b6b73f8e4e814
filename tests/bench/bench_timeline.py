"""Run timeline: the window computing norm, mean, std, change and histograms of one tensor across a run of
checkpoints, against a PyTorch script computing the same figures (load each checkpoint, the figures, the change
from the previous one, then histograms over the common range). Wall time and peak memory (GNU time) side by
side; the files are read from the page cache.

    /usr/bin/python3 tests/bench/bench_timeline.py --browser build/dev/app/ckpt-browser [--epochs 8]
        [--numel 16000000] [--workdir /tmp/ckpt-bench-timeline]
"""
import argparse
import os
import subprocess
import sys
import tempfile

REFERENCE = r'''
import glob, re, sys
import torch
files = sorted(glob.glob(sys.argv[1] + "/ckpt_epoch_*.pt"), key=lambda f: int(re.findall(r"\d+", f)[-1]))
prev, lo, hi = None, float("inf"), float("-inf")
for f in files:
    w = torch.load(f)["model"]["big.weight"].double()
    figures = (w.norm().item(), w.mean().item(), w.std().item())
    if prev is not None:
        change = ((w - prev).norm() / prev.norm()).item()
    lo, hi = min(lo, w.min().item()), max(hi, w.max().item())
    prev = w
for f in files:
    torch.histc(torch.load(f)["model"]["big.weight"].double(), bins=40, min=lo, max=hi)
'''


def timed(cmd, env=None):
    out = subprocess.run(["/usr/bin/time", "-f", "%e %M", *cmd], capture_output=True, text=True, env=env)
    if out.returncode != 0:
        sys.exit(f"{cmd[0]} failed: {out.stderr}")
    seconds, kb = out.stderr.strip().splitlines()[-1].split()
    return float(seconds), int(kb) / 1024


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--browser", required=True)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--numel", type=int, default=16_000_000)
    ap.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "ckpt-bench-timeline"))
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    os.makedirs(args.workdir, exist_ok=True)
    last = os.path.join(args.workdir, f"ckpt_epoch_{args.epochs}.pt")
    if not os.path.exists(last):
        import torch
        torch.manual_seed(0)
        w = torch.randn(args.numel)
        for e in range(1, args.epochs + 1):
            w = w + 0.01 * torch.randn(args.numel)
            torch.save({"epoch": e, "model": {"big.weight": w, "small.bias": torch.randn(10)}},
                       os.path.join(args.workdir, f"ckpt_epoch_{e}.pt"))
    for name in os.listdir(args.workdir):  # into the page cache
        with open(os.path.join(args.workdir, name), "rb") as f:
            while f.read(1 << 24):
                pass
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    ours = min(timed([args.browser, "--run", args.workdir, "--select", "model.big.weight", "--quit-when-ready"],
                     env) for _ in range(args.repeat))
    ref = min(timed([sys.executable, "-c", REFERENCE, args.workdir]) for _ in range(args.repeat))
    size = os.path.getsize(last) * args.epochs / 2**20
    print(f"run of {args.epochs} checkpoints, {size:.0f} MiB, one tensor of {args.numel:,} float32 elements each")
    print(f"{'':28}{'time':>10}{'peak memory':>14}")
    print(f"{'ckpt-browser --run':28}{ours[0]:>9.2f}s{ours[1]:>11.0f} MB")
    print(f"{'PyTorch script':28}{ref[0]:>9.2f}s{ref[1]:>11.0f} MB")


if __name__ == "__main__":
    main()
