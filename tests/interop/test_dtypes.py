"""Every dtype torch 1.13 can save, in the zip and the legacy format: ls metadata and stats against PyTorch."""

import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from common import CkptTestCase, flatten, dtype_name  # noqa: E402

import torch  # noqa: E402

nan, inf = math.nan, math.inf

PER_CHANNEL = ("qc_int8_axis0", "qc_uint8_axis1", "qc_int32_axis0")


def make_fixture():
    g = torch.Generator().manual_seed(1234)

    def randn(*shape, dtype=torch.float32):
        return torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype)

    f32 = randn(200)
    f32[[3, 50, 77]] = torch.tensor([nan, inf, -inf])
    f32[[10, 11, 12, 13]] = 0.0
    f32[14] = -0.0
    f64 = randn(300, dtype=torch.float64)
    f64[[0, 1]] = torch.tensor([nan, nan], dtype=torch.float64)
    f64[[5, 6, 7]] = torch.tensor([inf, 0.0, 1e-310], dtype=torch.float64)   # incl. a subnormal
    f16 = (randn(150) * 1000).to(torch.float16)
    f16[[0, 1, 2, 3, 4, 5]] = torch.tensor([65504.0, -65504.0, 6e-8, inf, nan, 0.0]).to(torch.float16)
    bf16 = (randn(150) * 1e20).to(torch.bfloat16)
    bf16[[0, 1, 2]] = torch.tensor([nan, -inf, 0.0]).to(torch.bfloat16)

    x = randn(6, 8)
    d = {
        "float32": f32.reshape(20, 10),
        "float64": f64,
        "float16": f16.reshape(3, 50),
        "bfloat16": bf16,
        "int8": torch.arange(-128, 128, dtype=torch.int8),
        "uint8": torch.arange(0, 256, dtype=torch.int64).to(torch.uint8).reshape(16, 16),
        "int16": torch.tensor([-32768, 32767, 0, 1, -1, 12345] * 5, dtype=torch.int16),
        "int32": torch.randint(-2**31, 2**31 - 1, (64,), generator=g, dtype=torch.int64).to(torch.int32),
        "int32_ext": torch.tensor([-2**31, 2**31 - 1, 0], dtype=torch.int32),
        "int64": torch.tensor([-2**63, 2**63 - 1, 0, 0, 7, -(2**53) - 1, 2**53 + 1], dtype=torch.int64),
        "int64_small": torch.randint(-1000, 1000, (5, 7), generator=g),
        "bool": torch.rand(100, generator=g) > 0.3,
        "complex64": torch.complex(randn(40), randn(40)),
        "complex128": torch.complex(randn(30, dtype=torch.float64), randn(30, dtype=torch.float64)),
        "q_int8": torch.quantize_per_tensor(randn(50), 0.05, 3, torch.qint8),
        "q_uint8": torch.quantize_per_tensor(randn(5, 10), 0.02, 128, torch.quint8),
        "q_int32": torch.quantize_per_tensor(randn(50) * 100, 0.001, -7, torch.qint32),
        "qc_int8_axis0": torch.quantize_per_channel(
            x, torch.tensor([0.01, 0.02, 0.03, 0.04, 0.05, 0.06], dtype=torch.float64),
            torch.tensor([0, 1, -2, 3, 0, 5]), 0, torch.qint8),
        "qc_uint8_axis1": torch.quantize_per_channel(
            x, torch.linspace(0.01, 0.08, 8, dtype=torch.float64), torch.arange(120, 128), 1, torch.quint8),
        "qc_int32_axis0": torch.quantize_per_channel(
            x, torch.linspace(1e-4, 6e-4, 6, dtype=torch.float64), torch.tensor([0, -1, 2, -3, 4, -5]), 0,
            torch.qint32),
        # edge cases of the statistics
        "const": torch.full((7,), 2.5),
        "all_nan": torch.tensor([nan, nan, nan]),
        "all_inf": torch.tensor([inf, -inf], dtype=torch.float64),
        "single": torch.tensor([4.25], dtype=torch.float64),
        "complex_special": torch.tensor([0j, complex(nan, 1.0), 3 + 4j, -5j], dtype=torch.complex64),
        # numerically hard for a one-pass std: large offset, small spread
        "offset_1e6": 1e6 + randn(2000, dtype=torch.float64),
    }
    d["complex64"][0] = 0
    return d


class DtypesTest(CkptTestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.obj = make_fixture()
        cls.paths, cls.loaded = common.save_both_formats(cls.obj, "dtypes")

    def _allow_extra(self, name):
        # per-channel scales / zero points are tensors in the file; listing them is tolerated
        return any(name.startswith(p + ".") for p in PER_CHANNEL)

    def test_fixture_dtypes_complete(self):
        seen = {dtype_name(t.dtype) for t in self.obj.values()}
        self.assertEqual(seen, {"float32", "float64", "float16", "bfloat16", "int8", "uint8", "int16", "int32",
                                "int64", "bool", "complex64", "complex128", "qint8", "quint8", "qint32"})

    def test_ls(self):
        for fmt, path in self.paths.items():
            with self.subTest(format=fmt):
                ls = self.ckpt_json("ls", path)
                self.assertEqual(ls["format"], {"zip": "pytorch-zip", "legacy": "pytorch-legacy"}[fmt])
                self.assertEqual(ls["file"], path)
                self.compare_ls(ls, flatten(self.loaded[fmt]), path=path, allow_extra=self._allow_extra)

    def test_stats_default_bins(self):
        for fmt, path in self.paths.items():
            st = self.ckpt_json("stats", path)
            got = {e["name"]: e for e in st["tensors"]}
            for name, t in flatten(self.loaded[fmt]):
                with self.subTest(format=fmt, tensor=name):
                    self.assertIn(name, got)
                    self.compare_stats(got[name], t, name)

    def test_stats_named_bins(self):
        names = ["int8", "uint8", "bool", "float16", "const", "int16"]
        for fmt, path in self.paths.items():
            st = self.ckpt_json("stats", path, *names, "--bins", "5")
            got = {e["name"]: e for e in st["tensors"]}
            self.assertEqual(sorted(got), sorted(names))
            for name in names:
                with self.subTest(format=fmt, tensor=name):
                    self.compare_stats(got[name], self.loaded[fmt][name], name, bins=5)

    def test_stats_undefined_are_null(self):
        st = self.ckpt_json("stats", self.paths["zip"], "all_nan", "all_inf", "single")
        got = {e["name"]: e for e in st["tensors"]}
        for name in ("all_nan", "all_inf"):
            for k in ("min", "max", "mean", "std"):
                self.assertIsNone(got[name][k], "%s.%s should be null" % (name, k))
        self.assertEqual(got["all_nan"]["nan"], 3)
        self.assertEqual(got["all_inf"]["inf"], 2)
        self.assertEqual(got["single"]["mean"], 4.25)
        self.assertIsNone(got["single"]["std"])

    def test_info_dtypes(self):
        for fmt, path in self.paths.items():
            with self.subTest(format=fmt):
                info = self.ckpt_json("info", path)
                ls = self.ckpt_json("ls", path)
                exp = {}
                for e in ls["tensors"]:
                    d = exp.setdefault(e["dtype"], [0, 0])
                    d[0] += 1
                    d[1] += math.prod(e["shape"])
                got = {k: [v["tensors"], v["parameters"]] for k, v in info["dtypes"].items()}
                self.assertEqual(got, exp)
                self.assertEqual(info["tensors"], len(ls["tensors"]))
                for name, t in self.obj.items():
                    self.assertIn(dtype_name(t.dtype), info["dtypes"])


if __name__ == "__main__":
    common.main()
