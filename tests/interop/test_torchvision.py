"""A torchvision resnet18 state_dict (weights=None): names, order, metadata, totals and stats."""

import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from common import CkptTestCase, flatten, workfile  # noqa: E402

import torch  # noqa: E402
import torchvision  # noqa: E402


class ResNet18Test(CkptTestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        torch.manual_seed(0)
        model = torchvision.models.resnet18(weights=None)
        cls.sd = model.state_dict()
        cls.path = workfile("resnet18.pt")
        torch.save(cls.sd, cls.path)
        cls.loaded = torch.load(cls.path)
        cls.named = flatten(cls.loaded)

    def test_names_in_state_dict_order(self):
        ls = self.ckpt_json("ls", self.path)
        self.assertEqual([e["name"] for e in ls["tensors"]], list(self.sd.keys()))
        self.compare_ls(ls, self.named, path=self.path)
        conv1 = ls["tensors"][0]
        self.assertEqual(conv1["name"], "conv1.weight")
        self.assertEqual(conv1["shape"], [64, 3, 7, 7])
        self.assertEqual(conv1["strides"], [147, 49, 7, 1])

    def test_info(self):
        info = self.ckpt_json("info", self.path)
        self.assertEqual(info["tensors"], len(self.sd))
        params = sum(t.numel() for t in self.sd.values())
        nbytes = sum(t.numel() * t.element_size() for t in self.sd.values())
        self.assertEqual(info["parameters"], params)
        self.assertEqual(info["bytes"], nbytes)
        self.assertEqual(info["dtypes"]["float32"]["tensors"], 102)
        self.assertEqual(info["dtypes"]["int64"]["tensors"], 20)
        top = {e["key"]: e for e in info["top_level"]}
        self.assertEqual(set(top), {"conv1", "bn1", "layer1", "layer2", "layer3", "layer4", "fc"})
        self.assertTrue(math.isclose(sum(e["share"] for e in top.values()), 1.0, rel_tol=1e-6))
        for key, e in top.items():
            b = sum(t.numel() * t.element_size() for n, t in self.sd.items() if n.split(".")[0] == key)
            self.assertEqual(e["bytes"], b, key)
        self.assertEqual(info["values"], [])

    def test_stats(self):
        st = self.ckpt_json("stats", self.path)
        got = {e["name"]: e for e in st["tensors"]}
        self.assertEqual(len(got), len(self.named))
        for name, t in self.named:
            with self.subTest(tensor=name):
                self.compare_stats(got[name], t, name)


if __name__ == "__main__":
    common.main()
