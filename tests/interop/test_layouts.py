"""Views, tied weights, non-contiguous strides, 0-d and empty tensors, requires_grad, in zip and legacy files."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from common import CkptTestCase, flatten, storage_id, storage_nbytes, workfile  # noqa: E402

import torch  # noqa: E402
from torch import nn  # noqa: E402


class TiedLM(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(50, 16)
        self.proj = nn.Linear(16, 16)
        self.out = nn.Linear(16, 50, bias=False)
        self.out.weight = self.emb.weight      # tied


def make_fixture():
    torch.manual_seed(7)
    w = torch.randn(6, 8)
    ints = torch.arange(60, dtype=torch.int32).reshape(3, 4, 5)
    base_for_expand = torch.randn(1, 8)
    views = {
        "a": w,
        "b": w[1:, 2:],
        "c": w.t(),
        "d": w[::2, 1::3],
        "row": w[2],
        "col": w[:, 3],
        "elem": w[4, 5],                      # 0-d view with an offset
        "empty_view": w[3:3],
        "ints": ints,
        "ints_perm": ints.permute(2, 0, 1),
        "ints_step": ints[:, ::2, 1:],
        "expanded": base_for_expand.expand(5, 8),   # stride 0
    }
    model = TiedLM()
    ck = {
        "views": views,
        "tied": model.state_dict(),
        "other_storage": w.clone()[1:, 2:],   # same values as b, different storage
        "scalar": torch.tensor(3.5),
        "scalar_int": torch.tensor(-7, dtype=torch.int64),
        "empty": torch.empty(0, 3),
        "empty_int": torch.zeros(2, 0, 4, dtype=torch.int16),
        "channels_last": torch.randn(2, 3, 4, 5).contiguous(memory_format=torch.channels_last),
        "param": nn.Parameter(torch.randn(4, 3)),
        "grad_tensor": torch.randn(5).requires_grad_(),
        "nested": [torch.ones(2), (torch.zeros(3), {"deep": w[5]}), {7: torch.arange(3)}],
    }
    return ck


class LayoutsTest(CkptTestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.obj = make_fixture()
        cls.paths, cls.loaded = common.save_both_formats(cls.obj, "layouts")

    def test_ls(self):
        for fmt, path in self.paths.items():
            with self.subTest(format=fmt):
                ls = self.ckpt_json("ls", path)
                self.compare_ls(ls, flatten(self.loaded[fmt]), path=path)

    def test_expected_sharing(self):
        """The fixture itself: what torch reports, and ckpt agreeing on the obvious cases."""
        for fmt, path in self.paths.items():
            ld = self.loaded[fmt]
            v = ld["views"]
            self.assertEqual(storage_id(v["a"]), storage_id(v["b"]))
            self.assertEqual(storage_id(v["a"]), storage_id(v["c"]))
            self.assertEqual(storage_id(ld["tied"]["emb.weight"]), storage_id(ld["tied"]["out.weight"]))
            self.assertNotEqual(storage_id(v["b"]), storage_id(ld["other_storage"]))
            ls = {e["name"]: e for e in self.ckpt_json("ls", path)["tensors"]}
            with self.subTest(format=fmt):
                g = ls["views.a"]["storage_group"]
                for n in ("views.b", "views.c", "views.d", "views.row", "views.col", "views.elem",
                          "nested.1.1.deep"):
                    self.assertEqual(ls[n]["storage_group"], g, n)
                self.assertNotEqual(ls["other_storage"]["storage_group"], g)
                self.assertEqual(ls["tied.emb.weight"]["storage_group"], ls["tied.out.weight"]["storage_group"])
                self.assertEqual(ls["views.b"]["storage_offset"], 10)
                self.assertEqual(ls["views.b"]["strides"], [8, 1])
                self.assertEqual(ls["views.b"]["shape"], [5, 6])
                self.assertEqual(ls["views.c"]["strides"], [1, 8])
                self.assertEqual(ls["views.d"]["strides"], [16, 3])
                self.assertEqual(ls["views.expanded"]["strides"], [0, 1])
                self.assertEqual(ls["scalar"]["shape"], [])
                self.assertEqual(ls["scalar"]["strides"], [])
                self.assertEqual(ls["empty"]["shape"], [0, 3])
                self.assertEqual(ls["empty"]["nbytes"], 0)
                self.assertIs(ls["param"]["requires_grad"], True)
                self.assertIs(ls["grad_tensor"]["requires_grad"], True)
                self.assertIs(ls["views.a"]["requires_grad"], False)
                self.assertIn("nested.2.7", ls)
                if fmt == "zip" and ls["views.b"]["data_offset"] is not None:
                    self.assertEqual(ls["views.b"]["data_offset"] - ls["views.a"]["data_offset"], 40)

    def test_info_counts_storages_once(self):
        for fmt, path in self.paths.items():
            with self.subTest(format=fmt):
                named = flatten(self.loaded[fmt])
                info = self.ckpt_json("info", path)
                self.assertEqual(info["tensors"], len(named))
                self.assertEqual(info["parameters"], sum(t.numel() for _, t in named))
                storages = {storage_id(t): storage_nbytes(t) for _, t in named}
                self.assertEqual(info["bytes"], sum(storages.values()))

    def test_stats_of_views(self):
        for fmt, path in self.paths.items():
            st = self.ckpt_json("stats", path)
            got = {e["name"]: e for e in st["tensors"]}
            for name, t in flatten(self.loaded[fmt]):
                with self.subTest(format=fmt, tensor=name):
                    self.assertIn(name, got)
                    self.compare_stats(got[name], t, name)

    def test_root_objects(self):
        """A bare tensor (name ''), a bare Parameter, a list root and a tuple root."""
        torch.manual_seed(8)
        roots = {
            "tensor": torch.randn(2, 3),
            "param": nn.Parameter(torch.randn(4)),
            "list": [torch.ones(2), (torch.zeros(1), 5), torch.arange(3)],
            "tuple": (torch.randn(2, 2).t(), {"k": torch.tensor(1.0)}),
        }
        for label, obj in roots.items():
            for fmt in ("zip", "legacy"):
                with self.subTest(root=label, format=fmt):
                    path = workfile("root_%s_%s.pt" % (label, fmt))
                    torch.save(obj, path, _use_new_zipfile_serialization=(fmt == "zip"))
                    named = flatten(torch.load(path))
                    ls = self.ckpt_json("ls", path)
                    self.compare_ls(ls, named, path=path)
                    st = self.ckpt_json("stats", path)
                    for (name, t), e in zip(named, st["tensors"]):
                        self.compare_stats(e, t, name)

    def test_stats_empty_and_scalar(self):
        st = self.ckpt_json("stats", self.paths["zip"], "empty", "scalar", "views.elem", "empty_int")
        got = {e["name"]: e for e in st["tensors"]}
        self.assertEqual(got["empty"]["count"], 0)
        self.assertIsNone(got["empty"]["min"])
        self.assertIsNone(got["empty"]["mean"])
        self.assertEqual(got["scalar"]["count"], 1)
        self.assertEqual(got["scalar"]["min"], 3.5)
        self.assertEqual(got["scalar"]["max"], 3.5)
        self.assertIsNone(got["scalar"]["std"])
        self.assertEqual(got["views.elem"]["min"], float(self.loaded["zip"]["views"]["elem"]))


if __name__ == "__main__":
    common.main()
