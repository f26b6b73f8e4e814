"""Writes the GUI tests' checkpoints with real PyTorch and, next to each, what the window must show, computed
here independently: the module tree (from the names PyTorch reports), filter match counts (Python's fnmatch
and re), value slices and histograms (NumPy).

    /usr/bin/python3 make_fixtures.py OUTDIR
"""
import collections
import fnmatch
import json
import os
import re
import sys

import numpy as np
import torch

out = os.path.abspath(sys.argv[1])
os.makedirs(out, exist_ok=True)
torch.manual_seed(11)


class Block(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.attn = torch.nn.Linear(8, 8)
        self.norm = torch.nn.LayerNorm(8)


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(20, 8)
        self.layers = torch.nn.ModuleList([Block() for _ in range(12)])
        self.head = torch.nn.Linear(8, 20, bias=False)


model = Net()
opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
model(torch.zeros(1, dtype=torch.long)) if False else None
loss = model.head(model.layers[0].attn(model.embed(torch.tensor([1, 2])))).sum()
loss.backward()
opt.step()
cube = torch.arange(2 * 3 * 4, dtype=torch.float32).reshape(2, 3, 4) * 0.5 - 3
big = torch.randn(4_000_000)
ckpt = {"epoch": 7, "model": model.state_dict(), "optimizer": opt.state_dict(), "cube": cube,
        "cube_row": cube[1], "big": big, "note": "fixture"}
path = os.path.join(out, "gui_fixture.pt")
torch.save(ckpt, path)

# Names as PyTorch reports them: the path of keys from the root.
loaded = torch.load(path)
tensors, values = [], []


def walk(obj, prefix):
    if isinstance(obj, torch.Tensor):
        tensors.append((prefix, obj))
    elif isinstance(obj, dict) and obj:
        for k, v in obj.items():
            walk(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(obj, (list, tuple)) and obj and not all(isinstance(x, (int, float, str, bool, type(None))) for x in obj):
        for i, v in enumerate(obj):
            walk(v, f"{prefix}.{i}")
    else:
        values.append(prefix)


walk(loaded, "")

# The tree: children in first-seen order, tensors and values as leaves, modules summing their tensors.
Node = lambda: {"children": collections.OrderedDict(), "kind": "module", "tensor": None}
root = Node()
for kind, names in (("tensor", [(n, t) for n, t in tensors]), ("value", [(n, None) for n in values])):
    for name, t in names:
        at = root
        parts = name.split(".")
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if part not in at["children"]:
                at["children"][part] = Node()
            at = at["children"][part]
            if last:
                at["kind"] = kind
                at["tensor"] = t


def totals(node):
    if node["kind"] == "tensor":
        return 1, node["tensor"].numel()
    n = p = 0
    for c in node["children"].values():
        a, b = totals(c)
        n, p = n + a, p + b
    return n, p


lines = []


def dump(node, name, depth):
    n, p = totals(node)
    if node["kind"] == "tensor":
        t = node["tensor"]
        lines.append("  " * depth + f"{name} {list(t.shape)} {str(t.dtype).replace('torch.', '')} {t.device}")
    elif node["kind"] == "value":
        lines.append("  " * depth + f"{name} (value)")
    else:
        lines.append("  " * depth + f"{name} ({n} tensors, {p} parameters)")
    for cname, child in node["children"].items():
        dump(child, cname, depth + 1)


for cname, child in root["children"].items():
    dump(child, cname, 0)

all_names = [n for n, _ in tensors] + values
filters = {
    "substring:momentum": sum("momentum" in n.lower() for n in all_names),
    "substring:WEIGHT": sum("weight" in n.lower() for n in all_names),
    "glob:*.weight": sum(fnmatch.fnmatchcase(n, "*.weight") for n in all_names),
    "glob:model.layers.1?.*": sum(fnmatch.fnmatchcase(n, "model.layers.1?.*") for n in all_names),
    r"regex:^model\.layers\.[0-9]+\.attn\.bias$": sum(bool(re.search(r"^model\.layers\.[0-9]+\.attn\.bias$", n)) for n in all_names),
}


def hist(t, bins):
    a = t.detach().double().numpy().ravel()
    a = a[np.isfinite(a)]
    lo, hi = float(a.min()), float(a.max())
    counts, edges = np.histogram(a, bins=bins, range=(lo, hi))
    return {"counts": counts.tolist(), "edges": edges.tolist(), "min": lo, "max": hi, "mean": float(a.mean()),
            "std": float(np.std(a, ddof=1)) if a.size > 1 else None, "count": int(t.numel())}


named = dict(tensors)
module_all = torch.cat([named[n].flatten() for n, _ in tensors if n.startswith("model.layers.3.")])
expected = {
    "file": path,
    "tree": lines,
    "filters": filters,
    "histograms": {
        "model.head.weight@64": hist(named["model.head.weight"], 64),
        "model.embed.weight@7": hist(named["model.embed.weight"], 7),
        "model.layers.3@16": hist(module_all, 16),
        "big@50": hist(named["big"], 50),  # large enough for the LibTorch plugin
    },
    # cube[1, :, :] as rows x columns, and cube[:, 2, :] with dimension 0 as rows
    "slices": {
        "cube:1,2:[1]": cube[1].tolist(),
        "cube:0,2:[0,2]": cube[:, 2, :].tolist(),
    },
    "natural_order": [str(i) for i in range(12)],
}
# A whole pickled module (its classes are findings) and a file of 100,000 tensors (opening stays responsive).
torch.save(Block(), os.path.join(out, "whole_module.pt"))
many = os.path.join(out, "many.pt")
if not os.path.exists(many):
    torch.save({f"layer{i}.weight": torch.zeros(2) for i in range(100_000)}, many)
expected["whole_module"] = {"file": os.path.join(out, "whole_module.pt"),
                            "flagged": ["(root)", "attn", "norm"]}  # Block, Linear, LayerNorm
expected["many"] = {"file": many, "tensors": 100_000}


# ---- a training run: a small model trained for ten epochs with real PyTorch, a checkpoint saved per epoch
# (model and optimizer) under unpadded names, so that natural order matters (epoch_2 before epoch_10).
run_dir = os.path.join(out, "run")
os.makedirs(run_dir, exist_ok=True)
torch.manual_seed(5)
run_model = torch.nn.Sequential(torch.nn.Linear(16, 128), torch.nn.ReLU(), torch.nn.Linear(128, 3))
run_opt = torch.optim.Adam(run_model.parameters(), lr=0.02)
xs, ys = torch.randn(64, 16), torch.randint(0, 3, (64,))
epochs = list(range(1, 11))
saved = {}
for epoch in epochs:
    for _ in range(5):
        run_opt.zero_grad()
        torch.nn.functional.cross_entropy(run_model(xs), ys).backward()
        run_opt.step()
    state = {"epoch": epoch, "model": run_model.state_dict(), "optimizer": run_opt.state_dict()}
    torch.save(state, os.path.join(run_dir, f"ckpt_epoch_{epoch}.pt"))
    saved[epoch] = {k: v.detach().clone() for k, v in run_model.state_dict().items()}
# Files the run must leave out: no step in the name, not a checkpoint.
torch.save({"w": torch.zeros(2)}, os.path.join(run_dir, "best.pt"))
with open(os.path.join(run_dir, "notes.txt"), "w") as f:
    f.write("not a checkpoint\n")

RUN_BINS = 20


def run_figures(select):
    """norm, mean, std (ddof=1) and change of the selected tensors, all elements together, per epoch; and
    histograms over the common range of the run, as numpy.histogram(range=...) bins them."""
    flat = [torch.cat([saved[e][k].double().flatten() for k in select]) for e in epochs]
    lo = min(float(f.min()) for f in flat)
    hi = max(float(f.max()) for f in flat)
    points = []
    for i, f in enumerate(flat):
        p = {"epoch": epochs[i], "norm": float(f.norm()), "mean": float(f.mean()), "std": float(f.std()),
             "count": int(f.numel()),
             "histogram": np.histogram(f.numpy(), bins=RUN_BINS, range=(lo, hi))[0].tolist()}
        p["change"] = None if i == 0 else float((f - flat[i - 1]).norm() / flat[i - 1].norm())
        points.append(p)
    return {"lo": lo, "hi": hi, "points": points}


model_keys = list(saved[1].keys())
expected["run"] = {
    "dir": run_dir,
    "order": [f"ckpt_epoch_{e}.pt" for e in epochs],
    "steps": epochs,
    "bins": RUN_BINS,
    "skipped": ["best.pt"],
    "tensors": {"model.0.weight": run_figures(["0.weight"]),
                "model.2.bias": run_figures(["2.bias"])},
    "modules": {"model": run_figures(model_keys)},
}

# ---- a Keras run: save_weights('keras_model_NN.h5') files written with h5py in Keras 2's layout, a kernel
# drifting from epoch to epoch; figures by NumPy.
import h5py  # noqa: E402

keras_dir = os.path.join(out, "keras_run")
os.makedirs(keras_dir, exist_ok=True)
rng = np.random.default_rng(21)
kernel = rng.standard_normal((24, 8)).astype(np.float32)
keras_epochs = [5, 10, 15]
keras_points = []
prev = None
for epoch in keras_epochs:
    kernel = (kernel + 0.05 * rng.standard_normal(kernel.shape)).astype(np.float32)
    with h5py.File(os.path.join(keras_dir, f"keras_model_{epoch:02d}.h5"), "w") as f:
        f.attrs["layer_names"] = np.array([b"d"], dtype="S")
        f.attrs["backend"] = b"tensorflow"
        f.create_dataset("d/d/bias:0", data=np.zeros(8, dtype=np.float32))
        f.create_dataset("d/d/kernel:0", data=kernel)
        f["d"].attrs["weight_names"] = np.array([b"d/kernel:0", b"d/bias:0"], dtype="S")
    k = kernel.astype(np.float64).ravel()
    keras_points.append({"norm": float(np.linalg.norm(k)), "mean": float(k.mean()), "std": float(k.std(ddof=1)),
                         "change": None if prev is None else float(np.linalg.norm(k - prev) / np.linalg.norm(prev))})
    prev = k
expected["keras_run"] = {"dir": keras_dir, "order": [f"keras_model_{e:02d}.h5" for e in keras_epochs],
                         "tensor": "d.d.kernel", "points": keras_points}

# ---- a Keras 3 file whose kernel is chunked and gzip-compressed (read when its values are first shown);
# the values as h5py reads them back.
keras_chunked = os.path.join(out, "chunked.weights.h5")
with h5py.File(keras_chunked, "w") as f:
    f.create_dataset("layers/dense/vars/0", data=np.random.default_rng(23).standard_normal((40, 6)).astype(np.float32),
                     chunks=(8, 6), compression="gzip")
with h5py.File(keras_chunked, "r") as f:
    expected["keras_chunked"] = {"file": keras_chunked, "tensor": "layers.dense.vars.0",
                                 "values": f["layers/dense/vars/0"][()].astype(np.float64).tolist()}

# ---- two checkpoints to compare: B is A one training step later, with one tensor removed, one added, one
# reshaped and one left untouched.
torch.manual_seed(9)
diff_model = torch.nn.Sequential(torch.nn.Linear(5, 64), torch.nn.Tanh(), torch.nn.Linear(64, 64),
                                 torch.nn.Tanh(), torch.nn.Linear(64, 2))
sd_a = {k: v.detach().clone() for k, v in diff_model.state_dict().items()}
sd_a["frozen.weight"] = torch.randn(4, 4)
sd_a["old.bias"] = torch.randn(7)
sd_a["reshaped.weight"] = torch.randn(6, 2)
diff_opt = torch.optim.SGD(diff_model.parameters(), lr=0.2)
diff_opt.zero_grad()
diff_model(torch.randn(16, 5)).pow(2).sum().backward()
diff_opt.step()
sd_b = {k: v.detach().clone() for k, v in diff_model.state_dict().items()}
sd_b["frozen.weight"] = sd_a["frozen.weight"].clone()
sd_b["new.bias"] = torch.randn(3)
sd_b["reshaped.weight"] = torch.randn(3, 4)
diff_a = os.path.join(out, "diff_a.pt")
diff_b = os.path.join(out, "diff_b.pt")
torch.save({**sd_a, "epoch": 3}, diff_a)
torch.save({**sd_b, "epoch": 4, "note": "fine-tuned"}, diff_b)
# The same weights as B under DataParallel's names.
diff_b_module = os.path.join(out, "diff_b_module.pt")
torch.save({"module." + k: v for k, v in sd_b.items()}, diff_b_module)
DIFF_BINS = 32
statuses, figures = {}, {}
for k in sd_a:
    if k not in sd_b:
        statuses[k] = "removed"
    elif sd_a[k].shape != sd_b[k].shape:
        statuses[k] = "changed"
    elif torch.equal(sd_a[k], sd_b[k]):
        statuses[k] = "same"
    else:
        statuses[k] = "changed"
for k in sd_b:
    if k not in sd_a:
        statuses[k] = "added"
for k, st in statuses.items():
    if st in ("changed", "same") and sd_a[k].shape == sd_b[k].shape:
        a, b = sd_a[k].double().flatten(), sd_b[k].double().flatten()
        d = b - a
        figures[k] = {"rel_l2": float(d.norm() / a.norm()), "max_abs": float(d.abs().max()),
                      "mean_abs": float(d.abs().mean()), "diff_squares": float(d.pow(2).sum()),
                      "a_squares": float(a.pow(2).sum())}
# The module "0" (first Linear) taken together: sqrt(sum ||b - a||^2) / sqrt(sum ||a||^2).
mod = [k for k in figures if k.startswith("0.")]
module_rel = (sum(figures[k]["diff_squares"] for k in mod) / sum(figures[k]["a_squares"] for k in mod)) ** 0.5
a2, b2 = sd_a["2.weight"].double().flatten().numpy(), sd_b["2.weight"].double().flatten().numpy()
lo2, hi2 = min(a2.min(), b2.min()), max(a2.max(), b2.max())
d2 = b2 - a2
expected["diff"] = {
    "a": diff_a, "b": diff_b, "b_module": diff_b_module, "b_tensors": len(sd_b), "statuses": statuses, "figures": figures,
    "modules": {"0": module_rel},
    "values": {"epoch": ["changed", "3 → 4"], "note": ["added", "'fine-tuned'"]},
    "overlay": {"name": "2.weight", "bins": DIFF_BINS, "lo": float(lo2), "hi": float(hi2),
                "a": np.histogram(a2, bins=DIFF_BINS, range=(lo2, hi2))[0].tolist(),
                "b": np.histogram(b2, bins=DIFF_BINS, range=(lo2, hi2))[0].tolist(),
                "diff_lo": float(d2.min()), "diff_hi": float(d2.max()),
                "diff": np.histogram(d2, bins=DIFF_BINS, range=(d2.min(), d2.max()))[0].tolist()},
}
with open(os.path.join(out, "gui_fixture.json"), "w") as f:
    json.dump(expected, f, indent=1)
print("wrote", path)
