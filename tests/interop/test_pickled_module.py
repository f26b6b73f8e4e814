"""A whole pickled nn.Module (torch.save(model)) whose class lives in a module file in the work folder: the
tensors are listed under state_dict() names, and the class global is reported as a security finding."""

import importlib
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from common import CkptTestCase, workfile  # noqa: E402

import torch  # noqa: E402

MODULE_SOURCE = '''
import torch
from torch import nn


class Head(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(16, 4)
        self.register_buffer("temperature", torch.tensor(0.7))


class PickledNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(20, 16)
        self.layers = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.BatchNorm1d(16), nn.Linear(16, 16))
        self.head = Head()
        self.alpha = nn.Parameter(torch.tensor([0.25, 0.5]))
        self.register_buffer("steps", torch.tensor(123, dtype=torch.int64))
'''


class PickledModuleTest(CkptTestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        with open(workfile("pm_models.py"), "w") as f:
            f.write(MODULE_SOURCE)
        sys.path.insert(0, common.WORKDIR)
        mod = importlib.import_module("pm_models")
        torch.manual_seed(5)
        cls.paths = {"zip": workfile("pickled_module.pt"), "legacy": workfile("pickled_module_legacy.pt")}
        model = mod.PickledNet()
        torch.save(model, cls.paths["zip"])
        torch.save(model, cls.paths["legacy"], _use_new_zipfile_serialization=False)
        cls.models = {k: torch.load(p) for k, p in cls.paths.items()}

    def test_names_equal_state_dict(self):
        for fmt, path in self.paths.items():
            with self.subTest(format=fmt):
                m = self.models[fmt]
                named = list(m.state_dict(keep_vars=True).items())
                ls = self.ckpt_json("ls", path)
                self.assertEqual([e["name"] for e in ls["tensors"]], [n for n, _ in named])
                self.compare_ls(ls, named, path=path)

    def test_security_finding_for_class(self):
        for fmt, path in self.paths.items():
            for cmd in ("ls", "info"):
                with self.subTest(format=fmt, command=cmd):
                    out = self.ckpt_json(cmd, path)
                    sec = [f for f in out["findings"] if f["severity"] == "security"]
                    globs = {f.get("global") for f in sec}
                    self.assertIn("pm_models.PickledNet", globs, out["findings"])
                    self.assertIn("pm_models.Head", globs, out["findings"])

    def test_stats(self):
        for fmt, path in self.paths.items():
            named = list(self.models[fmt].state_dict(keep_vars=True).items())
            st = self.ckpt_json("stats", path)
            got = {e["name"]: e for e in st["tensors"]}
            for name, t in named:
                with self.subTest(format=fmt, tensor=name):
                    self.compare_stats(got[name], t.detach(), name)

    def test_info_totals(self):
        named = list(self.models["zip"].state_dict().items())
        info = self.ckpt_json("info", self.paths["zip"])
        self.assertEqual(info["tensors"], len(named))
        self.assertEqual(info["parameters"], sum(t.numel() for _, t in named))
        self.assertEqual(info["bytes"], sum(t.numel() * t.element_size() for _, t in named))
        self.assertEqual({e["key"] for e in info["top_level"]}, {"embed", "layers", "head", "alpha", "steps"})


if __name__ == "__main__":
    common.main()
