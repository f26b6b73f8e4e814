"""100,000 tensors in one file: names, order, shapes, dtypes and offsets all match."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from common import CkptTestCase, workfile, zip_data_offsets  # noqa: E402

import torch  # noqa: E402

N = 100_000
DTYPES = [torch.float32, torch.float16, torch.int64, torch.bfloat16, torch.uint8, torch.float64, torch.bool]


def make_fixture():
    g = torch.Generator().manual_seed(100)
    d = {}
    for i in range(N):
        dt = DTYPES[i % len(DTYPES)]
        shape = [(i % 5) + 1] + ([(i // 5) % 3 + 1] if i % 4 == 0 else [])
        if dt.is_floating_point:
            t = torch.randn(*shape, generator=g).to(dt)
        elif dt == torch.bool:
            t = torch.rand(*shape, generator=g) > 0.5
        else:
            t = torch.randint(0, 200, shape, generator=g).to(dt)
        d["block%d.sub%d.param_%d" % (i // 1000, (i // 10) % 100, i)] = t
    return d


class ManyTensorsTest(CkptTestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.path = workfile("many.pt")
        cls.obj = make_fixture()
        torch.save(cls.obj, cls.path)

    def test_ls(self):
        ls = self.ckpt_json("ls", self.path, timeout=120)
        entries = ls["tensors"]
        self.assertEqual(len(entries), N)
        self.assertEqual([e["name"] for e in entries], list(self.obj.keys()))
        offsets = zip_data_offsets(self.path)
        prefix = next(iter(offsets)).split("/")[0]
        groups = set()
        for e, (name, t) in zip(entries, self.obj.items()):
            if e["shape"] != list(t.shape) or e["dtype"] != common.dtype_name(t.dtype) \
                    or e["strides"] != list(t.stride()) or e["storage_offset"] != 0 \
                    or e["nbytes"] != t.numel() * t.element_size() or e["device"] != "cpu" \
                    or e["requires_grad"] is not False or "error" in e:
                self.fail("%s: ckpt says %r, torch says dtype=%s shape=%s" % (name, e, t.dtype, list(t.shape)))
            rec = offsets["%s/data/%s" % (prefix, e["storage_key"])]
            self.assertEqual(e["data_offset"], rec[1], name)
            groups.add(e["storage_group"])
        self.assertEqual(len(groups), N, "every tensor has its own storage")

    def test_info(self):
        info = self.ckpt_json("info", self.path, timeout=120)
        self.assertEqual(info["tensors"], N)
        self.assertEqual(info["parameters"], sum(t.numel() for t in self.obj.values()))
        self.assertEqual(info["bytes"], sum(t.numel() * t.element_size() for t in self.obj.values()))
        self.assertEqual(len(info["top_level"]), 100)

    def test_stats_by_name(self):
        names = ["block0.sub0.param_0", "block57.sub12.param_57123", "block99.sub99.param_99999"]
        st = self.ckpt_json("stats", self.path, *names, timeout=120)
        got = {e["name"]: e for e in st["tensors"]}
        for n in names:
            self.compare_stats(got[n], self.obj[n], n)


if __name__ == "__main__":
    common.main()
