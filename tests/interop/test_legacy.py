"""The legacy (pre-1.6) pickle-sequence format: torch.save(..., _use_new_zipfile_serialization=False)."""

import os
import pickle
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from common import CkptTestCase, flatten, flatten_values, storage_id, storage_nbytes, workfile  # noqa: E402
from test_training import make_checkpoint  # noqa: E402

import torch  # noqa: E402
import torchvision  # noqa: E402


def walk_legacy(path):
    """{storage key: (data offset, numel, element size)} by walking the file as torch's _legacy_load does."""
    import pickletools

    elsize = {}

    class Reader(pickle.Unpickler):
        def find_class(self, module, name):
            if module == "torch._utils" and name.startswith("_rebuild"):
                return lambda *args: None
            return super().find_class(module, name)

        def persistent_load(self, pid):
            if pid[0] == "storage":
                elsize[pid[2]] = torch.tensor([], dtype=pid[1].dtype).element_size()
            return None

    out = {}
    with open(path, "rb") as f:
        for _ in range(3):
            for _ in pickletools.genops(f):
                pass
        Reader(f).load()
        keys = pickle.load(f)
        for k in keys:
            (n,) = struct.unpack("<q", f.read(8))
            out[k] = (f.tell(), n, elsize[k])
            f.seek(n * elsize[k], 1)
        assert f.read(1) == b""
    return out


class LegacyTest(CkptTestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.path = workfile("training_legacy.pt")
        torch.save(make_checkpoint(), cls.path, _use_new_zipfile_serialization=False)
        cls.ck = torch.load(cls.path)
        cls.named = flatten(cls.ck)
        cls.rn_path = workfile("resnet18_legacy.pt")
        torch.manual_seed(0)
        torch.save(torchvision.models.resnet18(weights=None).state_dict(), cls.rn_path,
                   _use_new_zipfile_serialization=False)
        cls.rn = torch.load(cls.rn_path)

    def test_fixture_is_legacy(self):
        with open(self.path, "rb") as f:
            self.assertEqual(f.read(2), b"\x80\x02")
        with open(self.path, "rb") as f:
            self.assertEqual(pickle.load(f), common.LEGACY_MAGIC)

    def test_ls(self):
        ls = self.ckpt_json("ls", self.path)
        self.assertEqual(ls["format"], "pytorch-legacy")
        self.compare_ls(ls, self.named, path=self.path)
        ls = self.ckpt_json("ls", self.rn_path)
        self.assertEqual([e["name"] for e in ls["tensors"]], list(self.rn.keys()))
        self.compare_ls(ls, flatten(self.rn), path=self.rn_path)

    def test_data_offsets_follow_storage_headers(self):
        ls = self.ckpt_json("ls", self.path)
        walked = walk_legacy(self.path)
        for e in ls["tensors"]:
            with self.subTest(tensor=e["name"]):
                self.assertTrue(e["storage_key"] in walked, "storage key %r is not a key of the file" % e["storage_key"])
                off, _n, es = walked[e["storage_key"]]
                if e["data_offset"] is not None:
                    self.assertEqual(e["data_offset"], off + e["storage_offset"] * es)

    def test_info(self):
        info = self.ckpt_json("info", self.path)
        self.assertEqual(info["format"], "pytorch-legacy")
        self.assertEqual(info["tensors"], len(self.named))
        self.assertEqual(info["parameters"], sum(t.numel() for _, t in self.named))
        self.assertEqual(info["bytes"], sum({storage_id(t): storage_nbytes(t) for _, t in self.named}.values()))
        vals = {v["name"]: v for v in info["values"]}
        self.assertEqual(vals["epoch"]["value"], 5)
        self.assertEqual(vals["loss"]["value"], self.ck["loss"])
        self.assertEqual(vals["optimizer_state_dict.param_groups.0.lr"]["value"], 1e-3)
        for name, typ, _ in flatten_values(self.ck):
            self.assertEqual(vals[name]["type"], typ, name)

    def test_stats(self):
        for path, obj in ((self.path, self.ck), (self.rn_path, self.rn)):
            st = self.ckpt_json("stats", path)
            got = {e["name"]: e for e in st["tensors"]}
            for name, t in flatten(obj):
                with self.subTest(file=os.path.basename(path), tensor=name):
                    self.compare_stats(got[name], t, name)


if __name__ == "__main__":
    common.main()
