"""TorchScript archives (torch.jit.script and torch.jit.trace): names equal state_dict() keys, constants are
listed as __constants__.N, code/ records are reported, and statistics match."""

import importlib
import os
import pickle
import sys
import zipfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from common import CkptTestCase, workfile  # noqa: E402

import torch  # noqa: E402

MODULE_SOURCE = '''
import torch
from torch import nn


class Block(nn.Module):
    def __init__(self, n: int):
        super().__init__()
        self.lin = nn.Linear(n, n)
        self.norm = nn.LayerNorm(n)

    def forward(self, x):
        return self.norm(torch.relu(self.lin(x))) + x


class ScriptNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv1d(2, 4, 3, padding=1)
        self.bn = nn.BatchNorm1d(4)
        self.blocks = nn.ModuleList([Block(8), Block(8)])
        self.head = nn.Linear(8, 3)
        self.tied = nn.Linear(8, 3, bias=False)
        self.tied.weight = self.head.weight                # tied: one storage
        self.register_buffer("scale", torch.linspace(0.5, 1.5, 3))
        self.register_buffer("window", self.stem.weight.detach()[1:3])   # a view of a parameter's storage
        self.register_buffer("counter", torch.tensor(11, dtype=torch.int64))

    def forward(self, x):
        h = self.bn(self.stem(x)).flatten(1)
        for b in self.blocks:
            h = b(h)
        return self.head(h) * self.scale + self.tied(h) + self.window.sum()


class TraceNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)
        self.bn = nn.BatchNorm1d(3)
        self.register_buffer("offset", torch.tensor([1.0, 2.0, 3.0]))
        self.const = torch.tensor([5.0, -6.0, 7.5])      # plain attribute: becomes a traced constant
        self.const2 = torch.arange(6, dtype=torch.float64).reshape(2, 3)

    def forward(self, x):
        y = self.bn(self.fc(x)) + self.offset + self.const
        return y * self.const2.sum()
'''


def load_zip_pickle(path, record):
    """Unpickle `record` (data.pkl or constants.pkl) of a TorchScript zip with storages read from its folder
    (data/ or constants/), without running TorchScript."""
    z = zipfile.ZipFile(path)
    prefix = z.namelist()[0].split("/")[0]
    folder = {"data.pkl": "data", "constants.pkl": "constants"}[record]

    class Reader(pickle.Unpickler):
        def find_class(self, module, name):
            if module.startswith("__torch__"):
                return lambda *a, **k: {}
            return super().find_class(module, name)

        def persistent_load(self, pid):
            _, storage_type, key, _location, numel = pid
            dtype = storage_type.dtype
            raw = bytearray(z.read("%s/%s/%s" % (prefix, folder, key)))
            t = torch.frombuffer(raw, dtype=dtype) if raw else torch.empty(0, dtype=dtype)
            return t.storage()

    import io
    return Reader(io.BytesIO(z.read("%s/%s" % (prefix, record)))).load()


class TorchScriptTest(CkptTestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        with open(workfile("ts_models.py"), "w") as f:
            f.write(MODULE_SOURCE)
        sys.path.insert(0, common.WORKDIR)
        mod = importlib.import_module("ts_models")
        torch.manual_seed(3)
        cls.script_path = workfile("scripted.pt")
        torch.jit.script(mod.ScriptNet().eval()).save(cls.script_path)
        cls.trace_path = workfile("traced.pt")
        torch.jit.trace(mod.TraceNet().eval(), torch.randn(5, 4)).save(cls.trace_path)

    def reference(self, path):
        m = torch.jit.load(path)
        sd = m.state_dict(keep_vars=True)
        return m, list(sd.items())

    def constants(self, path):
        consts = load_zip_pickle(path, "constants.pkl")
        return [("__constants__.%d" % i, t) for i, t in enumerate(consts) if isinstance(t, torch.Tensor)]

    def check_file(self, path):
        m, named = self.reference(path)
        consts = self.constants(path)
        ls = self.ckpt_json("ls", path)
        self.assertEqual(ls["format"], "torchscript")
        got = [e["name"] for e in ls["tensors"]]
        self.assertEqual(sorted(n for n in got if not n.startswith("__constants__.")), sorted(n for n, _ in named))
        self.assertEqual(sorted(n for n in got if n.startswith("__constants__.")), sorted(n for n, _ in consts))
        self.compare_ls(ls, named + consts, path=path, ordered=False)
        st = self.ckpt_json("stats", path)
        gst = {e["name"]: e for e in st["tensors"]}
        for name, t in named + consts:
            with self.subTest(file=os.path.basename(path), tensor=name):
                self.compare_stats(gst[name], t, name)
        info = self.ckpt_json("info", path)
        self.assertEqual(info["format"], "torchscript")
        self.assertEqual(info["tensors"], len(named) + len(consts))
        self.assertEqual(info["parameters"], sum(t.numel() for _, t in named + consts))
        recs = [r["name"] for r in info["records"]]
        self.assertTrue(any("code/" in r and r.endswith(".py") for r in recs), recs)
        with zipfile.ZipFile(path) as z:
            sizes = {i.filename.split("/", 1)[1]: i.file_size for i in z.infolist()}
        for r in info["records"]:
            if r["name"] in sizes:
                self.assertEqual(r["size"], sizes[r["name"]], r["name"])
        return m, named, consts

    def test_scripted(self):
        m, named, consts = self.check_file(self.script_path)
        self.assertIn("blocks.1.norm.weight", [n for n, _ in named])
        self.assertIn("counter", [n for n, _ in named])
        ls = {e["name"]: e for e in self.ckpt_json("ls", self.script_path)["tensors"]}
        self.assertEqual(ls["tied.weight"]["storage_group"], ls["head.weight"]["storage_group"])
        self.assertEqual(ls["window"]["storage_group"], ls["stem.weight"]["storage_group"])
        self.assertEqual(ls["window"]["storage_offset"], 6)

    def test_traced(self):
        m, named, consts = self.check_file(self.trace_path)
        self.assertGreaterEqual(len(consts), 2, "the traced fixture should carry tensor constants")

    def test_no_code_executed_and_no_findings_of_error_severity(self):
        for path in (self.script_path, self.trace_path):
            ls = self.ckpt_json("ls", path)
            for f in ls["findings"]:
                self.assertNotEqual(f["severity"], "error", f)


if __name__ == "__main__":
    common.main()
