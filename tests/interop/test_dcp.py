"""PyTorch distributed checkpoints (torch.distributed.checkpoint), written by the real PyTorch 1.13 writer
(`torch.distributed._shard.checkpoint`: save_state_dict with FileSystemWriter, no_dist=True) and read back
with its own load_state_dict. Several ranks are simulated by running the writer's plan / write / finish
steps for each rank in turn, with a planner that saves each rank's chunks of the sharded tensors.

Also a fixture generator for the C++ test tst_dcp:
    /usr/bin/python3 tests/interop/test_dcp.py --generate DIR
writes DIR/<case>/ checkpoints and DIR/manifest.json: per case and tensor, dtype, shape, the files its chunks
are in and the values torch's load_state_dict returns, as float64 little-endian bytes in DIR/<case>.<n>.f64.
"""

import dataclasses
import json
import os
import pickle
import shutil
import sys

# torch 1.13's sharded_tensor.metadata declares a dataclass field whose default is another (unhashable)
# dataclass instance, which Python 3.11 refuses at import. Give such classes the identity hash so that the
# module imports; pickling (what the writer does) is unaffected.
_process_class = dataclasses._process_class


def _hashable_process_class(cls, *args, **kwargs):
    out = _process_class(cls, *args, **kwargs)
    if out.__hash__ is None and out.__module__.startswith("torch.distributed"):
        out.__hash__ = object.__hash__
    return out


dataclasses._process_class = _hashable_process_class

import torch  # noqa: E402
import torch.distributed._shard.checkpoint as dcp  # noqa: E402
from torch.distributed._shard.checkpoint.default_planner import DefaultSavePlanner  # noqa: E402
from torch.distributed._shard.checkpoint.metadata import ChunkStorageMetadata, MetadataIndex  # noqa: E402
from torch.distributed._shard.checkpoint.planner import (  # noqa: E402
    SavePlan, TensorWriteData, WriteItem, WriteItemType)
from torch.distributed._shard.checkpoint.planner_helpers import _create_write_items  # noqa: E402
from torch.distributed._shard.sharded_tensor.metadata import TensorProperties  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


# ----------------------------------------------------------------------------------------------------------
# Writers


def plain_state_dict():
    g = torch.Generator().manual_seed(11)
    w = torch.randn(6, 5, generator=g)
    return {
        "layer.weight": w,
        "layer.weight_t": w.t(),  # not contiguous: saved with its strides
        "layer.bias": torch.randn(5, generator=g).to(torch.float16),
        "embed": torch.randn(4, 3, generator=g).to(torch.bfloat16),
        "counts": torch.arange(-3, 9, dtype=torch.int64).reshape(3, 4),
        "mask": torch.tensor([True, False, True]),
        "scale": torch.tensor(2.5, dtype=torch.float64),
        "step": 1234,
        "name": "run-7",
        "extra": {"lr": 0.125, "buf": torch.tensor([1.0, -1.0])},
    }


def write_plain(folder, single_file_per_rank=False):
    shutil.rmtree(folder, ignore_errors=True)
    sd = plain_state_dict()
    dcp.save_state_dict(sd, dcp.FileSystemWriter(folder, single_file_per_rank=single_file_per_rank),
                        no_dist=True)
    return sd


class ChunkPlanner(DefaultSavePlanner):
    """Saves the chunks this rank holds of the sharded tensors (and, on rank 0, everything else)."""

    def __init__(self, chunks):
        super().__init__()
        self.chunks = chunks  # {fqn: [(offsets, piece)]}

    def create_local_plan(self):
        items = []
        for fqn, obj in self.state_dict.items():
            if fqn in self.chunks:
                for offsets, piece in self.chunks[fqn]:
                    items.append(WriteItem(
                        index=MetadataIndex(fqn, torch.Size(offsets)),
                        type=WriteItemType.SHARD,
                        tensor_data=TensorWriteData(
                            chunk=ChunkStorageMetadata(offsets=torch.Size(offsets), sizes=piece.size()),
                            properties=TensorProperties.create_from_tensor(obj),
                            size=obj.size())))
            elif self.is_coordinator:
                items += _create_write_items(fqn, obj)
        self.plan = SavePlan(items)
        return self.plan

    def lookup_object(self, index):
        if index.fqn in self.chunks:
            for offsets, piece in self.chunks[index.fqn]:
                if torch.Size(offsets) == index.offset:
                    return piece
            raise KeyError(index)
        return super().lookup_object(index)


def split(t, bounds):
    """Chunks of t: bounds is one list of cut points per dimension; every cell of the grid is a chunk."""
    cells = [[]]
    for d, cuts in enumerate(bounds):
        edges = [0] + list(cuts) + [t.shape[d]]
        cells = [c + [(edges[i], edges[i + 1])] for c in cells for i in range(len(edges) - 1)]
    out = []
    for cell in cells:
        piece = t
        for d, (a, b) in enumerate(cell):
            piece = piece.narrow(d, a, b - a)
        out.append(([a for a, _ in cell], piece.clone()))
    return out


def ranks_state_dict():
    g = torch.Generator().manual_seed(5)
    return {
        "w": torch.randn(8, 6, generator=g),                        # rows over 4 ranks
        "grid": torch.arange(60, dtype=torch.float64).reshape(6, 10) * 0.5 - 7,  # a 2 x 2 grid
        "cols": torch.randn(5, 8, generator=g).to(torch.float16),   # columns over 2 ranks
        "v": torch.randn(10, generator=g).to(torch.bfloat16),       # uneven halves
        "cube": torch.arange(2 * 3 * 4, dtype=torch.int32).reshape(2, 3, 4),  # split along the middle
        "solo": torch.tensor([[3, 1], [4, 1]], dtype=torch.int16),  # whole, on rank 0
        "epoch": 3,
    }


def write_ranks(folder, nranks=4):
    """Four ranks, each writing its chunks to its own file (__<rank>_0.distcp), rank 0 also the rest."""
    shutil.rmtree(folder, ignore_errors=True)
    sd = ranks_state_dict()
    chunks = {
        "w": split(sd["w"], [[2, 4, 6], []]),
        "grid": split(sd["grid"], [[4], [3]]),
        "cols": split(sd["cols"], [[], [5]]),
        "v": split(sd["v"], [[3]]),
        "cube": split(sd["cube"], [[], [1], []]),
    }
    per_rank = [dict() for _ in range(nranks)]
    for fqn, pieces in chunks.items():
        for i, piece in enumerate(pieces):
            per_rank[i % nranks].setdefault(fqn, []).append(piece)
    writer = dcp.FileSystemWriter(folder, single_file_per_rank=True)
    planners = [ChunkPlanner(per_rank[r]) for r in range(nranks)]
    local = []
    for r, p in enumerate(planners):
        p.init(sd, r == 0)
        writer.init(r == 0)
        local.append(writer.prepare_local_plan(p.create_local_plan()))
    global_plans, metadata = planners[0].create_global_plan(local)
    global_plans = writer.prepare_global_plan(global_plans)
    results = []
    for r, p in enumerate(planners):
        fut = writer.write_data(p.finish_plan(global_plans[r]), p)
        results.append(fut.value())
    writer.finish(metadata, results)
    return sd, chunks


def load_back(folder):
    """What torch's own reader returns for every entry of the checkpoint."""
    with open(os.path.join(folder, ".metadata"), "rb") as fh:
        md = pickle.load(fh)
    target = {}
    for fqn, m in md.state_dict_metadata.items():
        if hasattr(m, "chunks"):
            target[fqn] = torch.zeros(m.size, dtype=m.properties.dtype)
        else:
            target[fqn] = None
    dcp.load_state_dict(target, dcp.FileSystemReader(folder), no_dist=True)
    return md, target


def chunk_files(md, fqn):
    return sorted({info.relative_path for idx, info in md.storage_data.items() if idx.fqn == fqn})


def generate(out):
    """Fixtures and the manifest for tst_dcp."""
    os.makedirs(out, exist_ok=True)
    manifest = {}
    cases = {"plain": lambda f: write_plain(f), "per_rank": lambda f: write_plain(f, True),
             "ranks": lambda f: write_ranks(f)}
    for case, write in cases.items():
        folder = os.path.join(out, case)
        write(folder)
        md, loaded = load_back(folder)
        entries = {}
        for n, (fqn, t) in enumerate(loaded.items()):
            if not isinstance(t, torch.Tensor) or fqn not in md.state_dict_metadata or \
                    not hasattr(md.state_dict_metadata[fqn], "chunks"):
                continue
            raw = os.path.join(out, "%s.%d.f64" % (case, n))
            with open(raw, "wb") as fh:
                fh.write(t.detach().to(torch.float64).contiguous().numpy().astype("<f8").tobytes())
            entries[fqn] = {"dtype": str(t.dtype).replace("torch.", ""), "shape": list(t.shape),
                            "values": raw, "files": chunk_files(md, fqn),
                            "chunks": len(md.state_dict_metadata[fqn].chunks)}
        manifest[case] = {"folder": folder, "tensors": entries}
    with open(os.path.join(out, "manifest.json"), "w") as fh:
        json.dump(manifest, fh, indent=1)


if __name__ == "__main__" and "--generate" in sys.argv:
    generate(sys.argv[sys.argv.index("--generate") + 1])
    sys.exit(0)


# ----------------------------------------------------------------------------------------------------------
# Tests

import common  # noqa: E402
from common import CkptTestCase, workfile  # noqa: E402


class DcpTest(CkptTestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.plain_dir = workfile("plain")
        cls.plain_sd = write_plain(cls.plain_dir)
        cls.rank_dir = workfile("per_rank")
        write_plain(cls.rank_dir, True)
        cls.ranks_dir = workfile("ranks")
        cls.ranks_sd, cls.ranks_chunks = write_ranks(cls.ranks_dir)

    def check_case(self, folder, bins=common.DEFAULT_BINS):
        md, loaded = load_back(folder)
        tensors = []
        for k, v in loaded.items():
            if hasattr(md.state_dict_metadata[k], "chunks"):
                tensors.append((k, v))
            else:  # tensors inside other values are listed under the value's name
                tensors += common.flatten(v, k)
        for path in (folder, os.path.join(folder, ".metadata"),
                     os.path.join(folder, sorted(f for f in os.listdir(folder) if f.endswith(".distcp"))[0])):
            with self.subTest(path=path):
                ls = self.ckpt_json("ls", path)
                self.assertEqual(ls["format"], "pytorch-dcp")
                self.assertEqual([f for f in ls["findings"] if f["severity"] != "info"], [])
                by = {e["name"]: e for e in ls["tensors"]}
                self.assertEqual(sorted(by), sorted(k for k, _ in tensors))
                for name, t in tensors:
                    e = by[name]
                    self.assertNotIn("error", e)
                    self.assertEqual(e["dtype"], common.dtype_name(t.dtype), name)
                    self.assertEqual(e["shape"], list(t.shape), name)
                    self.assertEqual(e["nbytes"], t.numel() * t.element_size(), name)
                    owner = name if name in md.state_dict_metadata else name.split(".")[0]
                    entry = md.state_dict_metadata[owner]
                    files = chunk_files(md, owner)
                    if len(getattr(entry, "chunks", [None])) == 1:
                        # One chunk: mapped in place; its bytes are in the file ckpt names.
                        self.assertEqual(os.path.basename(e["file"]), files[0], name)
                        with open(e["file"], "rb") as fh:
                            data = fh.read()
                        if e["strides"] == list(t.contiguous().stride()):
                            self.check_bytes_at(data, e["data_offset"], t, name)
        st = {e["name"]: e for e in self.ckpt_json("stats", folder, "--bins", str(bins))["tensors"]}
        for name, t in tensors:
            with self.subTest(tensor=name):
                self.compare_stats(st[name], t, name, bins=bins)
        return md, loaded

    def test_plain(self):
        md, loaded = self.check_case(self.plain_dir)
        # The writer's own data agrees with what was saved (the fixture is what it claims to be).
        for k, v in self.plain_sd.items():
            if isinstance(v, torch.Tensor):
                self.assertTrue(torch.equal(loaded[k], v), k)
        info = self.ckpt_json("info", self.plain_dir)
        values = {v["name"]: v["value"] for v in info["values"]}
        self.assertEqual(values.get("step"), 1234)
        self.assertEqual(values.get("name"), "run-7")
        self.assertEqual(values.get("extra.lr"), 0.125)
        ls = {e["name"]: e for e in self.ckpt_json("ls", self.plain_dir)["tensors"]}
        self.assertEqual(ls["layer.weight_t"]["strides"], [1, 5])
        self.assertIn("extra.buf", ls)

    def test_single_file_per_rank(self):
        md, _ = self.check_case(self.rank_dir)
        self.assertEqual(sorted(f for f in os.listdir(self.rank_dir) if f.endswith(".distcp")),
                         ["__0_0.distcp"])
        self.assertTrue(any(info.offset > 0 for info in md.storage_data.values()))

    def test_ranks(self):
        md, loaded = self.check_case(self.ranks_dir, bins=7)
        for k, v in self.ranks_sd.items():
            if isinstance(v, torch.Tensor):
                self.assertTrue(torch.equal(loaded[k], v), k)
        self.assertEqual(len(md.state_dict_metadata["w"].chunks), 4)
        self.assertEqual(chunk_files(md, "w"), ["__0_0.distcp", "__1_0.distcp", "__2_0.distcp",
                                                "__3_0.distcp"])
        ls = {e["name"]: e for e in self.ckpt_json("ls", self.ranks_dir)["tensors"]}
        # A tensor of several chunks names every file that holds one.
        self.assertEqual(sorted(os.path.basename(f) for f in ls["w"]["files"]), chunk_files(md, "w"))
        self.assertEqual(ls["w"]["chunks"], 4)

    # ---- malformed ------------------------------------------------------------------------------------------

    def variant(self, name, edit=None, remove=None, truncate=None):
        folder = workfile(name)
        shutil.rmtree(folder, ignore_errors=True)
        shutil.copytree(self.ranks_dir, folder)
        if edit:
            path = os.path.join(folder, ".metadata")
            with open(path, "rb") as fh:
                md = pickle.load(fh)
            edit(md)
            with open(path, "wb") as fh:
                pickle.dump(md, fh)
        if remove:
            os.remove(os.path.join(folder, remove))
        if truncate:
            path = os.path.join(folder, truncate[0])
            with open(path, "r+b") as fh:
                fh.truncate(truncate[1])
        return folder

    def expect_tensor_error(self, folder, tensor, text):
        proc = self.run_ckpt("ls", folder, "--json", timeout=common.MALFORMED_TIMEOUT)
        self.assertEqual(proc.returncode, 2, proc.stderr)
        self.assertIn(text, proc.stderr.decode())
        ls = common.parse_json_strict(self, proc.stdout)
        by = {e["name"]: e for e in ls["tensors"]}
        self.assertIn(text, by[tensor].get("error", ""))
        self.assertNotIn("error", by["solo"])

    def test_missing_file(self):
        folder = self.variant("missing", remove="__1_0.distcp")
        self.expect_tensor_error(folder, "w", "data file '__1_0.distcp' named by .metadata is missing")

    def test_truncated_file(self):
        folder = self.variant("truncated", truncate=("__2_0.distcp", 100))
        proc = self.run_ckpt("ls", folder, "--json", timeout=common.MALFORMED_TIMEOUT)
        self.assertEqual(proc.returncode, 2)
        self.assertIn("lies outside '__2_0.distcp' (100 bytes)", proc.stderr.decode())

    def test_path_traversal(self):
        def edit(md):
            for idx, info in md.storage_data.items():
                if idx.fqn == "v":
                    info.relative_path = "../../etc/passwd"
        folder = self.variant("traversal", edit=edit)
        self.expect_tensor_error(folder, "v", "storage_data names '../../etc/passwd', which is not a plain "
                                              "file name in the checkpoint's folder; refused")

    def test_overlapping_chunks(self):
        def edit(md):
            md.state_dict_metadata["w"].chunks[1].offsets = torch.Size([1, 0])
        folder = self.variant("overlap", edit=edit)
        self.expect_tensor_error(folder, "w", "chunks 0 and 1 of 'w' overlap")

    def test_chunk_outside(self):
        def edit(md):
            md.state_dict_metadata["grid"].chunks[3].sizes = torch.Size([2, 9])
        folder = self.variant("outside", edit=edit)
        self.expect_tensor_error(folder, "grid", "chunk 3 of 'grid' (offsets [4, 3], sizes [2, 9]) lies "
                                                 "outside the tensor's size [6, 10]")

    def test_gap(self):
        def edit(md):
            del md.state_dict_metadata["w"].chunks[2]
        folder = self.variant("gap", edit=edit)
        self.expect_tensor_error(folder, "w", "the chunks of 'w' cover 36 of its 48 elements")

    def test_wrong_dtype(self):
        def edit(md):
            md.state_dict_metadata["v"].properties.dtype = torch.float32
        folder = self.variant("dtype", edit=edit)
        self.expect_tensor_error(folder, "v", "chunk 0 of 'v' holds bfloat16 values, but the metadata says "
                                              "float32")

    def test_slice_not_archive(self):
        def edit(md):
            for idx, info in md.storage_data.items():
                if idx.fqn == "cols":
                    info.offset += 1
        folder = self.variant("notzip", edit=edit)
        self.expect_tensor_error(folder, "cols", "the slice is not a torch.save zip archive")

    def test_not_metadata(self):
        folder = workfile("notmeta")
        shutil.rmtree(folder, ignore_errors=True)
        shutil.copytree(self.ranks_dir, folder)
        path = os.path.join(folder, ".metadata")
        # A pickle that names the DCP module but holds something else.
        with open(path, "wb") as fh:
            fh.write(b"\x80\x04\x95\x00\x00\x00\x00\x00\x00\x00\x00\x8c,torch.distributed._shard.checkpoint."
                     b"metadata\x94\x8c\x08Metadata\x94\x86\x94.")
        proc = self.run_ckpt("ls", folder, timeout=common.MALFORMED_TIMEOUT)
        self.assert_error_output(proc, path)
        self.assertIn("not a distributed checkpoint's Metadata", proc.stderr.decode())

    def test_malicious_metadata(self):
        folder = workfile("evil")
        shutil.rmtree(folder, ignore_errors=True)
        shutil.copytree(self.ranks_dir, folder)
        path = os.path.join(folder, ".metadata")
        with open(path, "rb") as fh:
            data = fh.read()
        # Replace planner_data (None) by os.system('touch PWNED').
        marker = os.path.join(folder, "PWNED")
        call = (b"\x8c\x02os\x8c\x06system\x93\x8c" + bytes([len("touch " + marker)]) +
                ("touch " + marker).encode() + b"\x85R")
        i = data.index(b"planner_data") + len(b"planner_data") + 1  # past MEMOIZE
        self.assertEqual(data[i:i + 1], b"N")
        data = data[:i] + call + data[i + 1:]
        data = data[:3] + (len(data) - 11).to_bytes(8, "little") + data[11:]  # FRAME length
        with open(path, "wb") as fh:
            fh.write(data)
        ls = self.ckpt_json("ls", folder)
        self.assertFalse(os.path.exists(marker))
        sec = [f for f in ls["findings"] if f["severity"] == "security"]
        self.assertTrue(any("os.system" in f["message"] for f in sec), sec)
        self.assertEqual(len(ls["tensors"]), 6)


if __name__ == "__main__":
    common.main()
