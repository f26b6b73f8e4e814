"""Storages tagged cuda:0, written from CPU-only torch by overriding torch.serialization.location_tag.
ckpt reports the device as saved; values are compared with torch.load(map_location='cpu')."""

import os
import sys
import zipfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from common import CkptTestCase, flatten, workfile  # noqa: E402

import torch  # noqa: E402
import torch.serialization  # noqa: E402


def make_fixture():
    torch.manual_seed(11)
    w = torch.randn(10, 6)
    gpu = {"weight": w, "weight_t": w.t(), "bias": torch.randn(6), "count": torch.tensor(3),
           "half": torch.randn(4, 4).half()}
    cpu = {"cpu_tensor": torch.arange(5.0)}
    return gpu, cpu


def save_with_tags(obj, path, tag_of, legacy=False):
    original = torch.serialization.location_tag
    try:
        torch.serialization.location_tag = tag_of
        torch.save(obj, path, _use_new_zipfile_serialization=not legacy)
    finally:
        torch.serialization.location_tag = original


class DevicesTest(CkptTestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        gpu, cpu = make_fixture()
        gpu_storages = {t.storage()._storage._cdata for t in gpu.values()}
        original = torch.serialization.location_tag

        def tag_of(storage):
            s = getattr(storage, "_storage", storage)
            if s._cdata in gpu_storages:
                return "cuda:0"
            return original(storage)

        cls.obj = {"gpu": gpu, "cpu": cpu}
        cls.paths = {"zip": workfile("cuda0.pt"), "legacy": workfile("cuda0_legacy.pt")}
        save_with_tags(cls.obj, cls.paths["zip"], tag_of)
        save_with_tags(cls.obj, cls.paths["legacy"], tag_of, legacy=True)
        cls.all_cuda = workfile("cuda1_all.pt")
        save_with_tags({"x": torch.ones(3), "y": torch.zeros(2, 2)}, cls.all_cuda, lambda s: "cuda:1")
        cls.loaded = {k: torch.load(p, map_location="cpu") for k, p in cls.paths.items()}

    def test_fixture_really_says_cuda(self):
        with zipfile.ZipFile(self.paths["zip"]) as z:
            pkl = [n for n in z.namelist() if n.endswith("/data.pkl")][0]
            self.assertIn(b"cuda:0", z.read(pkl))
        with open(self.paths["legacy"], "rb") as f:
            self.assertIn(b"cuda:0", f.read())
        if not torch.cuda.is_available():
            for path in self.paths.values():
                with self.assertRaises(RuntimeError):
                    torch.load(path)

    def expected_devices(self):
        return {n: ("cuda:0" if n.startswith("gpu.") else "cpu") for n, _ in flatten(self.obj)}

    def test_ls_devices(self):
        for fmt, path in self.paths.items():
            with self.subTest(format=fmt):
                ls = self.ckpt_json("ls", path)
                self.compare_ls(ls, flatten(self.loaded[fmt]), path=path, devices=self.expected_devices())
        ls = self.ckpt_json("ls", self.all_cuda)
        self.assertEqual([e["device"] for e in ls["tensors"]], ["cuda:1", "cuda:1"])

    def test_info_devices(self):
        for fmt, path in self.paths.items():
            with self.subTest(format=fmt):
                info = self.ckpt_json("info", path)
                named = flatten(self.loaded[fmt])
                devs = self.expected_devices()
                self.assertEqual(set(info["devices"]), {"cuda:0", "cpu"})
                for dev in ("cuda:0", "cpu"):
                    sub = [t for n, t in named if devs[n] == dev]
                    self.assertEqual(info["devices"][dev]["tensors"], len(sub))
                    self.assertEqual(info["devices"][dev]["parameters"], sum(t.numel() for t in sub))

    def test_stats_equal_cpu_mapped_values(self):
        for fmt, path in self.paths.items():
            st = self.ckpt_json("stats", path)
            got = {e["name"]: e for e in st["tensors"]}
            for name, t in flatten(self.loaded[fmt]):
                with self.subTest(format=fmt, tensor=name):
                    self.compare_stats(got[name], t, name)


if __name__ == "__main__":
    common.main()
