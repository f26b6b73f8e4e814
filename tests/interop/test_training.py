"""A full training checkpoint: model + Adam state + epoch + loss. Names, values, info totals, --filter, stats."""

import fnmatch
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from common import CkptTestCase, flatten, flatten_values, storage_id, storage_nbytes, workfile  # noqa: E402

import torch  # noqa: E402
from torch import nn  # noqa: E402


class SmallNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.bn = nn.BatchNorm2d(8)
        self.fc1 = nn.Linear(8 * 6 * 6, 32)
        self.fc2 = nn.Linear(32, 10)

    def forward(self, x):
        x = torch.relu(self.bn(self.conv(x)))
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))


def make_checkpoint():
    torch.manual_seed(42)
    model = SmallNet()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss = None
    for _ in range(3):
        x = torch.randn(4, 3, 8, 8)
        y = torch.randint(0, 10, (4,))
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
    return {
        "epoch": 5,
        "model_state_dict": model.state_dict(),
        "optimizer_state_dict": opt.state_dict(),
        "loss": float(loss.item()),
    }


class TrainingCheckpointTest(CkptTestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.path = workfile("training.pt")
        ck = make_checkpoint()
        torch.save(ck, cls.path)
        cls.ck = torch.load(cls.path)
        cls.named = flatten(cls.ck)

    def test_ls_matches_torch(self):
        ls = self.ckpt_json("ls", self.path)
        self.assertEqual(ls["format"], "pytorch-zip")
        self.compare_ls(ls, self.named, path=self.path)
        names = [e["name"] for e in ls["tensors"]]
        for n in ("model_state_dict.conv.weight", "model_state_dict.bn.num_batches_tracked",
                  "optimizer_state_dict.state.0.exp_avg", "optimizer_state_dict.state.0.exp_avg_sq",
                  "optimizer_state_dict.state.7.exp_avg"):
            self.assertIn(n, names)
        for e in ls["tensors"]:
            self.assertIsNotNone(e["data_offset"], e["name"])

    def test_info_values(self):
        info = self.ckpt_json("info", self.path)
        vals = {v["name"]: v for v in info["values"]}
        self.assertEqual(vals["epoch"]["type"], "int")
        self.assertEqual(vals["epoch"]["value"], 5)
        self.assertEqual(vals["loss"]["type"], "float")
        self.assertEqual(vals["loss"]["value"], self.ck["loss"])
        self.assertEqual(vals["optimizer_state_dict.param_groups.0.lr"]["type"], "float")
        self.assertEqual(vals["optimizer_state_dict.param_groups.0.lr"]["value"], 1e-3)
        # every non-tensor leaf PyTorch sees
        for name, typ, value in flatten_values(self.ck):
            with self.subTest(value=name):
                self.assertIn(name, vals)
                self.assertEqual(vals[name]["type"], typ)
                if typ == "float":
                    self.assertEqual(vals[name]["value"], value)
                elif typ == "list":
                    self.assertEqual(vals[name]["value"], list(value))
                elif typ != "object":
                    self.assertEqual(vals[name]["value"], value)

    def test_info_totals(self):
        info = self.ckpt_json("info", self.path)
        self.assertEqual(info["format"], "pytorch-zip")
        self.assertEqual(info["tensors"], len(self.named))
        self.assertEqual(info["parameters"], sum(t.numel() for _, t in self.named))
        storages = {}
        for _, t in self.named:
            storages[storage_id(t)] = storage_nbytes(t)
        total_bytes = sum(storages.values())
        self.assertEqual(info["bytes"], total_bytes)
        self.assertEqual(set(info["devices"]), {"cpu"})
        self.assertEqual(info["devices"]["cpu"]["tensors"], len(self.named))
        self.assertEqual(info["devices"]["cpu"]["bytes"], total_bytes)
        by_dtype = {}
        for _, t in self.named:
            d = by_dtype.setdefault(common.dtype_name(t.dtype), [0, 0, 0])
            d[0] += 1
            d[1] += t.numel()
            d[2] += t.numel() * t.element_size()
        self.assertEqual({k: [v["tensors"], v["parameters"], v["bytes"]] for k, v in info["dtypes"].items()},
                         by_dtype)
        top = {e["key"]: e for e in info["top_level"]}
        self.assertEqual(set(top), {"model_state_dict", "optimizer_state_dict"})
        for key in top:
            sub = [t for n, t in self.named if n.split(".")[0] == key]
            with self.subTest(top_level=key):
                self.assertEqual(top[key]["tensors"], len(sub))
                self.assertEqual(top[key]["parameters"], sum(t.numel() for t in sub))
                b = sum(t.numel() * t.element_size() for t in sub)
                self.assertEqual(top[key]["bytes"], b)
                self.assertTrue(math.isclose(top[key]["share"], b / total_bytes, rel_tol=1e-6),
                                (top[key]["share"], b / total_bytes))

    def test_filter(self):
        names = [n for n, _ in self.named]
        for pattern in ("optimizer_state_dict.state.*.exp_avg", "*.weight", "model_state_dict.fc?.bias",
                        "model_state_dict.fc[12].weight", "model_state_dict.fc[!1].weight", "*state.[0-3].step", "nomatch*"):
            with self.subTest(pattern=pattern):
                ls = self.ckpt_json("ls", self.path, "--filter", pattern)
                exp = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
                self.assertEqual([e["name"] for e in ls["tensors"]], exp)

    def test_stats_all(self):
        st = self.ckpt_json("stats", self.path)
        got = {e["name"]: e for e in st["tensors"]}
        self.assertEqual(sorted(got), sorted(n for n, _ in self.named))
        for name, t in self.named:
            with self.subTest(tensor=name):
                self.compare_stats(got[name], t, name)

    def test_stats_named_and_bins(self):
        names = ["optimizer_state_dict.state.0.exp_avg", "model_state_dict.fc1.weight", "loss_not_a_tensor"]
        proc = self.run_ckpt("stats", self.path, "no.such.tensor", "--json")
        self.assert_error_output(proc, self.path, "stats of an unknown name")
        st = self.ckpt_json("stats", self.path, *names[:2], "--bins", "10")
        got = {e["name"]: e for e in st["tensors"]}
        self.assertEqual(sorted(got), sorted(names[:2]))
        d = dict(self.named)
        for name in names[:2]:
            self.assertEqual(len(got[name]["histogram"]["counts"]), 10)
            self.compare_stats(got[name], d[name], name, bins=10)

    def test_plain_text_commands(self):
        for cmd in ("info", "ls", "stats"):
            with self.subTest(command=cmd):
                proc = self.run_ckpt(cmd, self.path)
                self.assertEqual(proc.returncode, 0, proc.stderr)
                self.assertTrue(proc.stdout.strip())
                self.assertEqual(proc.stderr, b"")

    def test_bad_arguments(self):
        for args in (["frobnicate", self.path], ["stats", self.path, "--bins", "zero"], ["ls"], []):
            with self.subTest(args=args):
                proc = self.run_ckpt(*args)
                self.assertEqual(proc.returncode, 2)
                # the first line is the error; a usage text may follow
                first = proc.stderr.decode(errors="replace").split("\n")[0]
                self.assertTrue(first.startswith("ckpt: "), first)
        proc = self.run_ckpt("--version")
        self.assertEqual(proc.returncode, 0)
        proc = self.run_ckpt("--help")
        self.assertEqual(proc.returncode, 0)


if __name__ == "__main__":
    common.main()
