"""A checkpoint over 4 GiB (zip64): two ~2.1 GiB tensors, then small tensors located beyond the 4 GiB mark.
Label "large"; the file is deleted at the end."""

import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from common import CkptTestCase, contiguous_bytes, workfile, zip_data_offsets  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

BIG = 565_000_000          # float32 elements: 2.26e9 bytes (~2.1 GiB) each
FOUR_GIB = 1 << 32
# sparse, known contents of big1 (which straddles the 4 GiB mark): position -> value, the rest is zero
BIG1_VALUES = {0: 1.5, 1: -3.0, BIG // 2: 7.25, BIG - 2: float("nan"), BIG - 1: -0.5}


def big1_position_of_4gib(data_offset):
    return (FOUR_GIB - data_offset) // 4


class LargeFileTest(CkptTestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.path = workfile("large.pt")
        torch.manual_seed(21)
        big0 = torch.zeros(BIG)
        big0[::1_000_000] = 1.0
        big1 = torch.zeros(BIG)
        for i, v in BIG1_VALUES.items():
            big1[i] = v
        cls.tail = {
            "tail_a": torch.randn(1000),
            "tail_b": torch.arange(-50, 50, dtype=torch.int64),
            "tail_c": torch.randn(7, 9).half(),
        }
        obj = {"big0": big0, "big1": big1}
        obj.update(cls.tail)
        obj["tail_view"] = cls.tail["tail_a"][100:300:2]
        torch.save(obj, cls.path)
        del obj, big0, big1
        cls.offsets = zip_data_offsets(cls.path)
        cls.prefix = next(iter(cls.offsets)).split("/")[0]
        # mark positions in big1 just before and after 4 GiB with known values: rewrite them in place
        b1_off = cls.offsets["%s/data/1" % cls.prefix][1]
        k = big1_position_of_4gib(b1_off)
        cls.big1_values = dict(BIG1_VALUES)
        cls.big1_values[k - 1] = 2.0
        cls.big1_values[k] = -4.0    # first element at or after the 4 GiB mark
        with open(cls.path, "r+b") as f:
            for i in (k - 1, k):
                f.seek(b1_off + 4 * i)
                f.write(np.float32(cls.big1_values[i]).tobytes())

    @classmethod
    def tearDownClass(cls):
        try:
            os.remove(cls.path)
        except OSError:
            pass

    def test_file_is_zip64(self):
        self.assertGreater(os.path.getsize(self.path), FOUR_GIB)
        for key in ("2", "3", "4"):
            self.assertGreater(self.offsets["%s/data/%s" % (self.prefix, key)][1], FOUR_GIB)

    def test_ls_and_offsets(self):
        ls = self.ckpt_json("ls", self.path)
        by = {e["name"]: e for e in ls["tensors"]}
        self.assertEqual([e["name"] for e in ls["tensors"]], ["big0", "big1", "tail_a", "tail_b", "tail_c",
                                                             "tail_view"])
        self.assertEqual(by["big0"]["shape"], [BIG])
        self.assertEqual(by["big1"]["nbytes"], BIG * 4)
        self.assertEqual(by["big1"]["data_offset"], self.offsets["%s/data/1" % self.prefix][1])
        self.assertEqual(by["tail_view"]["storage_group"], by["tail_a"]["storage_group"])
        self.assertEqual(by["tail_view"]["storage_offset"], 100)
        self.assertEqual(by["tail_view"]["strides"], [2])
        with open(self.path, "rb") as f:
            for name, t in self.tail.items():
                e = by[name]
                with self.subTest(tensor=name):
                    self.assertEqual(e["dtype"], common.dtype_name(t.dtype))
                    self.assertEqual(e["shape"], list(t.shape))
                    self.assertGreater(e["data_offset"], FOUR_GIB)
                    self.assertEqual(e["data_offset"],
                                     self.offsets["%s/data/%s" % (self.prefix, e["storage_key"])][1])
                    f.seek(e["data_offset"])
                    self.assertEqual(f.read(e["nbytes"]), contiguous_bytes(t))
            f.seek(by["tail_view"]["data_offset"])
            self.assertEqual(f.read(4), contiguous_bytes(self.tail["tail_a"][100]))

    def test_torch_agrees(self):
        loaded = torch.load(self.path)
        self.assertEqual(list(loaded), ["big0", "big1", "tail_a", "tail_b", "tail_c", "tail_view"])
        for name, t in self.tail.items():
            self.assertTrue(torch.equal(loaded[name], t))
        b1 = loaded["big1"]
        for i, v in self.big1_values.items():
            if math.isnan(v):
                self.assertTrue(math.isnan(float(b1[i])))
            else:
                self.assertEqual(float(b1[i]), v)

    def test_stats_beyond_4gib(self):
        names = list(self.tail) + ["tail_view"]
        st = self.ckpt_json("stats", self.path, *names)
        got = {e["name"]: e for e in st["tensors"]}
        for name in self.tail:
            with self.subTest(tensor=name):
                self.compare_stats(got[name], self.tail[name], name)
        self.compare_stats(got["tail_view"], self.tail["tail_a"][100:300:2], "tail_view")

    def test_stats_of_tensor_straddling_4gib(self):
        st = self.ckpt_json("stats", self.path, "big1", "--bins", "16", timeout=600)
        got = st["tensors"][0]
        vals = {i: v for i, v in self.big1_values.items()}
        nz = [v for v in vals.values() if v != 0.0 and not math.isnan(v)]
        nzeros = BIG - len(vals) + sum(1 for v in vals.values() if v == 0.0)
        finite_n = BIG - sum(1 for v in vals.values() if math.isnan(v))
        uniq = np.array(nz + [0.0])
        weights = np.array([1] * len(nz) + [nzeros])
        mn, mx = float(uniq.min()), float(uniq.max())
        counts, edges = np.histogram(uniq, bins=16, range=(mn, mx), weights=weights)
        mean = math.fsum(nz) / finite_n
        var = (math.fsum((v - mean) ** 2 for v in nz) + nzeros * mean * mean) / (finite_n - 1)
        self.assertEqual(got["count"], BIG)
        self.assertEqual(got["nan"], 1)
        self.assertEqual(got["inf"], 0)
        self.assertEqual(got["zeros"], nzeros)
        self.assertEqual(got["min"], mn)
        self.assertEqual(got["max"], mx)
        self.assertTrue(math.isclose(got["mean"], mean, rel_tol=1e-6), (got["mean"], mean))
        self.assertTrue(math.isclose(got["std"], math.sqrt(var), rel_tol=1e-6), (got["std"], math.sqrt(var)))
        self.assertEqual(got["histogram"]["counts"], [int(c) for c in counts])
        for a, b in zip(got["histogram"]["edges"], edges):
            self.assertTrue(math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12))

    def test_info(self):
        info = self.ckpt_json("info", self.path)
        self.assertEqual(info["tensors"], 6)
        self.assertEqual(info["bytes"], 2 * BIG * 4 + sum(t.numel() * t.element_size() for t in self.tail.values()))


if __name__ == "__main__":
    common.main()
