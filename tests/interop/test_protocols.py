"""torch.save(..., pickle_protocol=N) for N = 1..5, in the zip and the legacy format, and the non-tensor values
every scalar type gives (`ckpt info` values)."""

import collections
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from common import CkptTestCase, flatten, flatten_values, workfile  # noqa: E402

import torch  # noqa: E402

PROTOCOLS = (2, 3, 4, 5)      # torch.save's default is 2; any protocol >= 1 round-trips through torch.load
FORMATS = ("zip", "legacy")


def make_fixture():
    torch.manual_seed(17)
    w = torch.randn(5, 6)
    return collections.OrderedDict(
        weight=w,
        view=w[1:, ::2],
        ints=torch.arange(-5, 5, dtype=torch.int64),
        half=torch.randn(4).half(),
        flag=torch.tensor([True, False, True]),
        **{"gewicht_ü_名前": torch.randn(2, 2)},
        name="résumé-run/42",
        blob=b"\x00\x01\xfe\xff",
        count=123456789,
        negative=-42,
        int64_max=2 ** 63 - 1,
        rate=3.0e-4,
        ratio=-0.125,
        enabled=True,
        disabled=False,
        nothing=None,
        z=complex(1.5, -2.0),
        betas=(0.9, 0.999),
        milestones=[10, 20, 30],
        labels=["cat", "dog"],
        history={1: {"loss": 0.5, "acc": 0.75}, 2: {"loss": 0.25, "acc": 0.875}},
        layers=[{"w": torch.ones(2, 2), "scale": 2.0}, {"w": torch.zeros(3), "scale": 0.5}],
    )


class ProtocolsTest(CkptTestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.obj = make_fixture()
        cls.paths = {}
        for proto in PROTOCOLS + (1,):
            for fmt in FORMATS:
                path = workfile("proto%d_%s.pt" % (proto, fmt))
                torch.save(cls.obj, path, pickle_protocol=proto, _use_new_zipfile_serialization=(fmt == "zip"))
                cls.paths[(proto, fmt)] = path
        cls.loaded = {k: torch.load(p) for k, p in cls.paths.items()}

    def check_file(self, proto, fmt):
        path = self.paths[(proto, fmt)]
        named = flatten(self.loaded[(proto, fmt)])
        ls = self.ckpt_json("ls", path)
        self.assertEqual(ls["format"], "pytorch-zip" if fmt == "zip" else "pytorch-legacy")
        self.compare_ls(ls, named, path=path)
        st = self.ckpt_json("stats", path)
        got = {e["name"]: e for e in st["tensors"]}
        for name, t in named:
            self.compare_stats(got[name], t, name)
        info = self.ckpt_json("info", path)
        self.assertEqual(info["tensors"], len(named))
        self.check_values(info)

    def check_values(self, info):
        vals = {v["name"]: v for v in info["values"]}
        for name, typ, value in flatten_values(self.obj):
            with self.subTest(value=name):
                self.assertIn(name, vals)
                v = vals[name]
                self.assertEqual(v["type"], typ)
                if typ in ("int", "str", "bool", "none"):
                    self.assertEqual(v["value"], value)
                elif typ == "float":
                    self.assertTrue(math.isfinite(value))
                    self.assertEqual(v["value"], value)
                elif typ == "list":
                    self.assertEqual(v["value"], list(value))

    def test_protocols(self):
        for proto in PROTOCOLS:
            for fmt in FORMATS:
                with self.subTest(protocol=proto, format=fmt):
                    self.check_file(proto, fmt)

    def test_protocol_1(self):
        """Protocol 1 (binary opcodes plus a few protocol-0 ones, e.g. LONG for the legacy magic number)."""
        for fmt in FORMATS:
            with self.subTest(protocol=1, format=fmt):
                self.check_file(1, fmt)

    def test_legacy_magic_in_any_protocol_is_legacy(self):
        """A legacy file never passes for a plain pickle with zero tensors."""
        for proto in PROTOCOLS + (1,):
            with self.subTest(protocol=proto):
                proc = self.run_ckpt("info", self.paths[(proto, "legacy")], "--json")
                if proc.returncode == 0:
                    info = common.parse_json_strict(self, proc.stdout)
                    self.assertEqual(info["format"], "pytorch-legacy")
                    self.assertEqual(info["tensors"], len(flatten(self.obj)))
                else:
                    self.assert_error_output(proc, self.paths[(proto, "legacy")])


if __name__ == "__main__":
    common.main()
