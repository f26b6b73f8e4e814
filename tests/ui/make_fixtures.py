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
with open(os.path.join(out, "gui_fixture.json"), "w") as f:
    json.dump(expected, f, indent=1)
print("wrote", path)
