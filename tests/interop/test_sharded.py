"""Hugging Face sharded checkpoints: an index JSON in the HF layout (indent=2, sort_keys=True) next to shards
written by torch.save or by hand as safetensors. ckpt opens the folder or the index and lists every tensor
of every shard under its weight_map name, with the values PyTorch wrote."""

import json
import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from common import CkptTestCase, workfile  # noqa: E402
from test_safetensors import write_safetensors  # noqa: E402

import torch  # noqa: E402


def state_dict():
    g = torch.Generator().manual_seed(3)
    sd = {}
    for i in range(5):
        sd["model.layers.%d.attn.weight" % i] = torch.randn(8, 8, generator=g)
        sd["model.layers.%d.attn.bias" % i] = torch.randn(8, generator=g)
        sd["model.layers.%d.norm.weight" % i] = torch.ones(8, dtype=torch.float16)
    sd["model.embed.weight"] = torch.randn(16, 8, generator=g).to(torch.bfloat16)
    sd["model.steps"] = torch.tensor([1, 2, 3], dtype=torch.int64)
    return sd


def split(sd, n):
    """HF order: names in order, n nearly equal shards."""
    names = list(sd)
    per = (len(names) + n - 1) // n
    return [{k: sd[k] for k in names[i * per:(i + 1) * per]} for i in range(n)]


def write_index(folder, index_name, shards, fname, total_size=None):
    weight_map = {}
    total = 0
    for i, part in enumerate(shards):
        f = fname % (i + 1, len(shards))
        for k, t in part.items():
            weight_map[k] = f
            total += t.numel() * t.element_size()
    index = {"metadata": {"total_size": total if total_size is None else total_size}, "weight_map": weight_map}
    path = os.path.join(folder, index_name)
    with open(path, "w") as fh:
        json.dump(index, fh, indent=2, sort_keys=True)
    return path, weight_map


def torch_shards(folder, sd, n=3):
    os.makedirs(folder, exist_ok=True)
    shards = split(sd, n)
    for i, part in enumerate(shards):
        torch.save(part, os.path.join(folder, "pytorch_model-%05d-of-%05d.bin" % (i + 1, n)))
    return write_index(folder, "pytorch_model.bin.index.json", shards, "pytorch_model-%05d-of-%05d.bin")


ST = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.int64: "I64"}


def st_bytes(t):
    t = t.contiguous()
    if t.dtype in (torch.float16, torch.bfloat16):
        t = t.view(torch.int16)
    return t.numpy().tobytes()


def safetensors_shards(folder, sd, n=2):
    os.makedirs(folder, exist_ok=True)
    shards = split(sd, n)
    for i, part in enumerate(shards):
        write_safetensors(os.path.join(folder, "model-%05d-of-%05d.safetensors" % (i + 1, n)),
                          {k: (ST[t.dtype], tuple(t.shape), st_bytes(t)) for k, t in part.items()},
                          {"format": "pt"})
    return write_index(folder, "model.safetensors.index.json", shards, "model-%05d-of-%05d.safetensors")


class ShardedTest(CkptTestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.sd = state_dict()
        cls.torch_dir = workfile("torch")
        shutil.rmtree(cls.torch_dir, ignore_errors=True)
        cls.torch_index, cls.torch_map = torch_shards(cls.torch_dir, cls.sd)
        cls.st_dir = workfile("st")
        shutil.rmtree(cls.st_dir, ignore_errors=True)
        cls.st_index, cls.st_map = safetensors_shards(cls.st_dir, cls.sd)

    def loaded(self, folder, weight_map):
        """What PyTorch reads back, shard by shard, in weight_map (sorted) order."""
        out = {}
        for f in sorted(set(weight_map.values())):
            if f.endswith(".bin"):
                out.update(torch.load(os.path.join(folder, f)))
        return out

    def check_files(self, ls, folder, weight_map):
        """If ckpt names each tensor's file, it is the one the index says, and the bytes are there."""
        for e in ls["tensors"]:
            if "file" in e:
                self.assertEqual(os.path.basename(e["file"]), weight_map[e["name"]])
                with open(os.path.join(folder, weight_map[e["name"]]), "rb") as fh:
                    data = fh.read()
                self.assertEqual(data[e["data_offset"]:e["data_offset"] + e["nbytes"]],
                                 st_bytes(self.sd[e["name"]]))

    def test_torch_shards(self):
        loaded = self.loaded(self.torch_dir, self.torch_map)
        named = [(k, loaded[k]) for k in sorted(self.torch_map)]
        for path in (self.torch_dir, self.torch_index):
            with self.subTest(path=path):
                ls = self.ckpt_json("ls", path)
                self.assertEqual(ls["format"], "sharded")
                self.assertEqual([f for f in ls["findings"] if f["severity"] in ("error", "warning")], [])
                self.compare_ls(ls, named, check_bytes=False)
                self.check_files(ls, self.torch_dir, self.torch_map)
        st = {e["name"]: e for e in self.ckpt_json("stats", self.torch_dir)["tensors"]}
        for name, t in named:
            with self.subTest(tensor=name):
                self.compare_stats(st[name], t, name)

    def test_safetensors_shards(self):
        named = [(k, self.sd[k]) for k in sorted(self.st_map)]
        for path in (self.st_dir, self.st_index):
            with self.subTest(path=path):
                ls = self.ckpt_json("ls", path)
                self.assertEqual(ls["format"], "sharded")
                self.assertEqual([f for f in ls["findings"] if f["severity"] in ("error", "warning")], [])
                self.assertEqual([e["name"] for e in ls["tensors"]], [n for n, _ in named])
                for e in ls["tensors"]:
                    t = self.sd[e["name"]]
                    self.assertEqual(e["dtype"], common.dtype_name(t.dtype))
                    self.assertEqual(e["shape"], list(t.shape))
                    self.assertEqual(e["nbytes"], t.numel() * t.element_size())
                    self.assertNotIn("error", e)
                self.check_files(ls, self.st_dir, self.st_map)
        st = {e["name"]: e for e in self.ckpt_json("stats", self.st_index, "--bins", "9")["tensors"]}
        for name, t in named:
            with self.subTest(tensor=name):
                self.compare_stats(st[name], t, name, bins=9)

    def test_metadata_values(self):
        info = self.ckpt_json("info", self.st_dir)
        got = {v["name"]: v["value"] for v in info["values"]}
        total = sum(t.numel() * t.element_size() for t in self.sd.values())
        self.assertEqual(got.get("metadata.total_size"), total)
        self.assertEqual(info["tensors"], len(self.sd))

    def variant(self, name, edit_index=None, remove=None):
        """A copy of the safetensors set with the index edited or a shard removed."""
        folder = workfile(name)
        shutil.rmtree(folder, ignore_errors=True)
        shutil.copytree(self.st_dir, folder)
        path = os.path.join(folder, "model.safetensors.index.json")
        if edit_index:
            with open(path) as fh:
                index = json.load(fh)
            edit_index(index)
            with open(path, "w") as fh:
                json.dump(index, fh, indent=2)
        if remove:
            os.remove(os.path.join(folder, remove))
        return folder, path

    def test_missing_shard(self):
        folder, index = self.variant("missing", remove="model-00002-of-00002.safetensors")
        proc = self.run_ckpt("ls", folder, "--json", timeout=common.MALFORMED_TIMEOUT)
        self.assertEqual(proc.returncode, 2)
        self.assertIn("model-00002-of-00002.safetensors", proc.stderr.decode())
        ls = common.parse_json_strict(self, proc.stdout)
        by = {e["name"]: e for e in ls["tensors"]}
        for name, f in self.st_map.items():
            self.assertEqual("error" in by[name], f.startswith("model-00002"), name)

    def test_refused_paths(self):
        for bad in ("../model-00001-of-00002.safetensors", "/etc/passwd", "sub/x.safetensors", ".."):
            def edit(index, bad=bad):
                index["weight_map"]["model.steps"] = bad
            folder, index = self.variant("traversal", edit_index=edit)
            with self.subTest(shard=bad):
                proc = self.run_ckpt("ls", index, timeout=common.MALFORMED_TIMEOUT)
                self.assert_error_output(proc, index, bad)
                self.assertIn("not a plain file name", proc.stderr.decode())

    def test_entry_not_in_shard(self):
        def edit(index):
            index["weight_map"]["model.ghost"] = "model-00001-of-00002.safetensors"
        folder, index = self.variant("ghost", edit_index=edit)
        proc = self.run_ckpt("ls", folder, "--json", timeout=common.MALFORMED_TIMEOUT)
        self.assertEqual(proc.returncode, 2)
        self.assertIn("model.ghost", proc.stderr.decode())
        ls = common.parse_json_strict(self, proc.stdout)
        by = {e["name"]: e for e in ls["tensors"]}
        self.assertIn("error", by["model.ghost"])
        self.assertNotIn("error", by["model.steps"])

    def test_warnings(self):
        def edit(index):
            index["metadata"]["total_size"] += 1
            del index["weight_map"]["model.steps"]
        folder, index = self.variant("warnings", edit_index=edit)
        ls = self.ckpt_json("ls", folder)
        messages = [f["message"] for f in ls["findings"] if f["severity"] == "warning"]
        self.assertTrue(any("total_size" in m for m in messages), messages)
        self.assertTrue(any("'model.steps'" in m and "not mapped" in m for m in messages), messages)
        self.assertNotIn("model.steps", [e["name"] for e in ls["tensors"]])

    def test_broken_index(self):
        folder = workfile("broken_index")
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, "model.safetensors.index.json")
        with open(path, "w") as fh:
            fh.write('{"weight_map": {"a": ')
        self.assert_error_output(self.run_ckpt("ls", path, timeout=common.MALFORMED_TIMEOUT), path)


if __name__ == "__main__":
    common.main()
