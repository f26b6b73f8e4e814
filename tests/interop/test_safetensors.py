"""safetensors files written byte by byte from the format description (other-formats.md §2), checked with an
independent Python parser, then read by ckpt: ls metadata, values and statistics against NumPy / PyTorch, and
malformed files through the CLI."""

import json
import math
import os
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from common import CkptTestCase, ref_stats, stats_mismatch, workfile  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

nan, inf = math.nan, math.inf

# safetensors dtype -> (bytes per element, name ckpt prints)
DTYPES = {
    "BOOL": (1, "bool"), "U8": (1, "uint8"), "I8": (1, "int8"), "I16": (2, "int16"), "U16": (2, "uint16"),
    "F16": (2, "float16"), "BF16": (2, "bfloat16"), "I32": (4, "int32"), "U32": (4, "uint32"),
    "F32": (4, "float32"), "F64": (8, "float64"), "I64": (8, "int64"), "U64": (8, "uint64"),
    "C64": (8, "complex64"), "F8_E4M3": (1, "float8_e4m3fn"), "F8_E5M2": (1, "float8_e5m2"),
}


def write_safetensors(path, tensors, metadata=None, align=True):
    """tensors: {name: (dtype, shape, raw bytes)}. As the Rust crate's `prepare`: sorted by alignment
    (descending) then name, JSON padded with spaces to a multiple of 8 (unless align=False)."""
    order = sorted(tensors, key=lambda n: (-DTYPES[tensors[n][0]][0], n))
    header, data = {}, bytearray()
    if metadata is not None:
        header["__metadata__"] = metadata
    for name in order:
        dtype, shape, raw = tensors[name]
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    h = json.dumps(header, separators=(",", ":")).encode()
    if align:
        h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + bytes(data))


def parse_safetensors(path):
    """Independent reader: {name: (dtype, shape, raw)}, metadata, and the absolute offset of each tensor."""
    with open(path, "rb") as f:
        b = f.read()
    n = struct.unpack_from("<Q", b, 0)[0]
    header = json.loads(b[8:8 + n].decode("utf-8"))
    meta = header.pop("__metadata__", None)
    out, offsets = {}, {}
    for name, e in header.items():
        s, t = e["data_offsets"]
        out[name] = (e["dtype"], tuple(e["shape"]), b[8 + n + s:8 + n + t])
        offsets[name] = 8 + n + s
    return out, meta, offsets


def f8_to_float(b, fmt):
    """Reference decoding of one float8 byte (e4m3fn: bias 7, no inf, S.1111.111 = nan; e5m2: IEEE-like)."""
    sign = -1.0 if b & 0x80 else 1.0
    if fmt == "F8_E4M3":
        e, m = (b >> 3) & 0xF, b & 7
        if e == 0xF and m == 7:
            return nan
        return sign * (m / 8.0 * 2.0 ** -6 if e == 0 else (1 + m / 8.0) * 2.0 ** (e - 7))
    e, m = (b >> 2) & 0x1F, b & 3
    if e == 0x1F:
        return sign * inf if m == 0 else nan
    return sign * (m / 4.0 * 2.0 ** -14 if e == 0 else (1 + m / 4.0) * 2.0 ** (e - 15))


def make_fixture():
    rng = np.random.default_rng(42)
    f32 = rng.standard_normal(120).astype(np.float32)
    f32[[1, 2, 3]] = [nan, inf, -inf]
    f32[[4, 5]] = 0.0
    f16 = (rng.standard_normal(60) * 100).astype(np.float16)
    f16[0] = 65504
    bf16 = torch.from_numpy(rng.standard_normal(50)).to(torch.bfloat16)
    bf16[0] = float("nan")
    c64 = (rng.standard_normal(20) + 1j * rng.standard_normal(20)).astype(np.complex64)
    f8a = np.arange(256, dtype=np.uint8)
    arrays = {
        "model.embed.weight": f32.reshape(12, 10),
        "model.f64": rng.standard_normal((3, 4, 5)),
        "model.f16": f16.reshape(6, 10),
        "i8": np.arange(-128, 128, dtype=np.int8),
        "u8": np.arange(256, dtype=np.uint8).reshape(16, 16),
        "i16": np.array([-32768, 32767, 0, 1, -1] * 4, dtype=np.int16),
        "u16": np.array([0, 65535, 1, 1000] * 3, dtype=np.uint16),
        "i32": rng.integers(-2**31, 2**31 - 1, 40).astype(np.int32),
        "u32": np.array([0, 2**32 - 1, 7], dtype=np.uint32),
        "i64": np.array([-2**63, 2**63 - 1, 0, 5], dtype=np.int64),
        "u64": np.array([0, 2**64 - 1, 2**53 + 1], dtype=np.uint64),
        "mask": rng.random(33) > 0.5,
        "c64": c64.reshape(4, 5),
        "scalar": np.array(2.5, dtype=np.float32),
        "empty": np.zeros((3, 0), dtype=np.float32),
    }
    np_to_st = {np.dtype(np.float32): "F32", np.dtype(np.float64): "F64", np.dtype(np.float16): "F16",
                np.dtype(np.int8): "I8", np.dtype(np.uint8): "U8", np.dtype(np.int16): "I16",
                np.dtype(np.uint16): "U16", np.dtype(np.int32): "I32", np.dtype(np.uint32): "U32",
                np.dtype(np.int64): "I64", np.dtype(np.uint64): "U64", np.dtype(np.bool_): "BOOL",
                np.dtype(np.complex64): "C64"}
    tensors, values = {}, {}
    for name, a in arrays.items():
        a = np.ascontiguousarray(a)
        tensors[name] = (np_to_st[a.dtype], a.shape, a.astype(a.dtype.newbyteorder("<")).tobytes())
        values[name] = np.abs(a.astype(np.complex128)).reshape(-1) if a.dtype.kind == "c" \
            else a.astype(np.float64).reshape(-1)
    tensors["bf16"] = ("BF16", tuple(bf16.shape), bf16.view(torch.int16).numpy().astype("<i2").tobytes())
    values["bf16"] = bf16.to(torch.float64).numpy()
    for fmt in ("F8_E4M3", "F8_E5M2"):
        name = "f8." + fmt.lower()
        tensors[name] = (fmt, (16, 16), f8a.tobytes())
        values[name] = np.array([f8_to_float(int(b), fmt) for b in f8a])
    return tensors, values


class SafetensorsTest(CkptTestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.tensors, cls.values = make_fixture()
        cls.meta = {"format": "pt", "note": "hand-written"}
        cls.path = workfile("model.safetensors")
        write_safetensors(cls.path, cls.tensors, cls.meta)
        cls.unaligned = workfile("unaligned.safetensors")
        write_safetensors(cls.unaligned, cls.tensors, cls.meta, align=False)

    def test_writer_matches_independent_parser(self):
        for path in (self.path, self.unaligned):
            parsed, meta, _ = parse_safetensors(path)
            self.assertEqual(meta, self.meta)
            self.assertEqual(set(parsed), set(self.tensors))
            for name, (dtype, shape, raw) in self.tensors.items():
                self.assertEqual(parsed[name], (dtype, tuple(shape), raw))

    def test_golden_empty(self):
        # the crate's test_empty: 8-byte length 8, "{}" and six spaces
        path = workfile("empty.safetensors")
        with open(path, "wb") as f:
            f.write(b"\x08" + b"\0" * 7 + b"{}" + b" " * 6)
        ls = self.ckpt_json("ls", path)
        self.assertEqual(ls["format"], "safetensors")
        self.assertEqual(ls["tensors"], [])

    def test_ls(self):
        for path in (self.path, self.unaligned):
            with self.subTest(path=path):
                ls = self.ckpt_json("ls", path)
                self.assertEqual(ls["format"], "safetensors")
                self.assertEqual(ls["file"], path)
                self.assertEqual([f for f in ls["findings"] if f["severity"] != "info"], [])
                _, _, offsets = parse_safetensors(path)
                # listed in the order of their data
                self.assertEqual([e["name"] for e in ls["tensors"]], sorted(offsets, key=offsets.get))
                with open(path, "rb") as f:
                    data = f.read()
                groups = set()
                for e in ls["tensors"]:
                    dtype, shape, raw = self.tensors[e["name"]]
                    with self.subTest(tensor=e["name"]):
                        self.assertNotIn("error", e)
                        self.assertEqual(e["dtype"], DTYPES[dtype][1])
                        self.assertEqual(e["shape"], list(shape))
                        strides = [int(np.prod(shape[i + 1:], dtype=np.int64)) for i in range(len(shape))]
                        if 0 not in shape:
                            self.assertEqual(e["strides"], strides)
                        self.assertEqual(e["storage_offset"], 0)
                        self.assertEqual(e["nbytes"], len(raw))
                        self.assertEqual(e["device"], "cpu")
                        self.assertIsNone(e["requires_grad"])
                        self.assertEqual(e["data_offset"], offsets[e["name"]])
                        self.assertEqual(data[e["data_offset"]:e["data_offset"] + len(raw)], raw)
                        groups.add(e["storage_group"])
                self.assertEqual(len(groups), len(ls["tensors"]), "every tensor has its own storage")

    def test_metadata_values(self):
        info = self.ckpt_json("info", self.path)
        self.assertEqual(info["format"], "safetensors")
        got = {v["name"]: v["value"] for v in info["values"]}
        self.assertEqual(got, {"__metadata__." + k: v for k, v in self.meta.items()})
        self.assertEqual(info["tensors"], len(self.tensors))

    def test_matches_torch(self):
        # the same values through PyTorch's own types, for the dtypes torch 1.13 has
        ls = self.ckpt_json("ls", self.path)
        st = {e["name"]: e for e in self.ckpt_json("stats", self.path)["tensors"]}
        for e in ls["tensors"]:
            dtype, shape, raw = self.tensors[e["name"]]
            tdt = getattr(torch, DTYPES[dtype][1], None)
            if tdt is None or dtype in ("U16", "U32", "U64", "F8_E4M3", "F8_E5M2"):
                continue
            with self.subTest(tensor=e["name"]):
                if dtype == "BOOL":
                    t = torch.frombuffer(bytearray(raw), dtype=torch.uint8).to(torch.bool) if raw else \
                        torch.zeros(0, dtype=torch.bool)
                else:
                    t = torch.frombuffer(bytearray(raw), dtype=tdt) if raw else torch.zeros(0, dtype=tdt)
                t = t.reshape(shape)
                if t.numel():
                    self.compare_stats(st[e["name"]], t, e["name"])

    def test_stats(self):
        for bins in (common.DEFAULT_BINS, 7):
            st = self.ckpt_json("stats", self.unaligned, "--bins", str(bins))
            got = {e["name"]: e for e in st["tensors"]}
            for name, vals in self.values.items():
                if vals.size == 0:
                    continue
                with self.subTest(tensor=name, bins=bins):
                    self.assertIn(name, got)
                    msg = stats_mismatch(got[name], ref_stats(vals, bins), bins)
                    self.assertIsNone(msg, "%s: %s" % (name, msg))

    def test_malformed(self):
        def header_file(name, header, data=b"", length=None):
            h = json.dumps(header).encode() if not isinstance(header, bytes) else header
            path = workfile(name)
            with open(path, "wb") as f:
                f.write(struct.pack("<Q", len(h) if length is None else length) + h + data)
            return path

        data = struct.pack("<3f", 1, 2, 3)
        cases = {
            "header too large": (header_file("large.safetensors", b"{}" + b" " * 30, length=100_000_001),
                                 "header too large"),
            "header length past the end": (header_file("past.safetensors", b"{}" + b" " * 30, length=4096),
                                           "invalid header length"),
            "invalid json": (header_file("json.safetensors", b'{"a": {"dtype": "F32",,}}'),
                             "invalid JSON in header"),
            "duplicate key": (header_file(
                "dup.safetensors",
                b'{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},'
                b'"a":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}', data), "appears twice"),
            "hole": (header_file("hole.safetensors", {
                "a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
                "b": {"dtype": "F32", "shape": [1], "data_offsets": [8, 12]}}, data), "hole"),
            "overlap": (header_file("overlap.safetensors", {
                "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, data), "overlaps"),
            "size mismatch": (header_file("size.safetensors", {
                "a": {"dtype": "F64", "shape": [3], "data_offsets": [0, 12]}}, data),
                "invalid shape, data type, or offset"),
            "unknown dtype": (header_file("dtype.safetensors", {
                "a": {"dtype": "F12", "shape": [3], "data_offsets": [0, 12]}}, data), "unknown dtype 'F12'"),
            "past the end": (header_file("end.safetensors", {
                "a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, data), "past the end"),
        }
        for what, (path, text) in cases.items():
            with self.subTest(case=what):
                proc = self.run_ckpt("ls", path, "--json", timeout=common.MALFORMED_TIMEOUT)
                self.assert_error_output(proc, path, what)
                self.assertIn(text, proc.stderr.decode(errors="replace"))
        # one broken tensor does not hide the healthy one
        path2 = header_file("mixed.safetensors", {
            "ok": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
            "bad": {"dtype": "F64", "shape": [2], "data_offsets": [4, 12]}}, data)
        ls = self.ckpt_json("ls", path2, expect_rc=2)
        by = {e["name"]: e for e in ls["tensors"]}
        self.assertNotIn("error", by["ok"])
        self.assertIn("error", by["bad"])
        st = self.ckpt_json("stats", path2, "ok")
        self.assertEqual(st["tensors"][0]["mean"], 1.0)


if __name__ == "__main__":
    common.main()
