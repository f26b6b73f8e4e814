"""GGUF (llama.cpp / ggml) files written byte by byte from the spec (other-formats.md section 4; ggml
docs/gguf.md) with struct, read by ckpt: metadata of every value type, tensors in F32, F16, Q8_0 and Q4_0
(random blocks, dequantized independently in NumPy as ggml's dequantize_row_q8_0 / q4_0 do), compared with
`ckpt ls/info/stats --json`; malformed files through the CLI."""

import os
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from common import CkptTestCase, MALFORMED_TIMEOUT, ref_stats, stats_mismatch, workfile  # noqa: E402

import numpy as np  # noqa: E402

# GGUF metadata value types
U8, I8, U16, I16, U32, I32, F32, BOOL, STRING, ARRAY, U64, I64, F64 = range(13)
SCALAR_FMT = {U8: "<B", I8: "<b", U16: "<H", I16: "<h", U32: "<I", I32: "<i", F32: "<f", BOOL: "<?",
              U64: "<Q", I64: "<q", F64: "<d"}
# ggml types: code, elements per block, bytes per block
GGML = {"f32": (0, 1, 4), "f16": (1, 1, 2), "q4_0": (2, 32, 18), "q8_0": (8, 32, 34), "q4_k": (12, 256, 144),
        "q3_k": (11, 256, 110),
        "bf16": (30, 1, 2), "i32": (26, 1, 4)}
DTYPE_NAME = {"f32": "float32", "f16": "float16", "q4_0": "q4_0", "q8_0": "q8_0", "q4_k": "q4_k",
              "q3_k": "q3_k",
              "bf16": "bfloat16", "i32": "int32"}


def gstr(s):
    b = s.encode("utf-8") if isinstance(s, str) else s
    return struct.pack("<Q", len(b)) + b


def gvalue(typ, v):
    if typ == STRING:
        return gstr(v)
    if typ == ARRAY:
        elem, items = v
        out = struct.pack("<IQ", elem, len(items))
        for it in items:
            out += gvalue(elem, it)
        return out
    return struct.pack(SCALAR_FMT[typ], v)


def pad(n, a):
    return (n + a - 1) // a * a


def build_gguf(kvs, tensors, alignment=32, version=3, offsets=None):
    """kvs: [(key, type, value)]; tensors: [(name, ne list, ggml type name, raw bytes)].
    offsets: optional explicit data offsets (for malformed files)."""
    out = b"GGUF" + struct.pack("<IQQ", version, len(tensors), len(kvs))
    for key, typ, v in kvs:
        out += gstr(key) + struct.pack("<I", typ) + gvalue(typ, v)
    data = b""
    for i, (name, ne, gtype, raw) in enumerate(tensors):
        off = len(data) if offsets is None else offsets[i]
        out += gstr(name) + struct.pack("<I", len(ne)) + b"".join(struct.pack("<Q", n) for n in ne)
        out += struct.pack("<IQ", GGML[gtype][0] if isinstance(gtype, str) else gtype, off)
        data += raw + b"\0" * (pad(len(raw), alignment) - len(raw))
    if tensors:
        out += b"\0" * (pad(len(out), alignment) - len(out))
    return out + data


def q8_0_blocks(rng, nblocks):
    d = (rng.uniform(0.001, 0.05, nblocks)).astype(np.float16)
    qs = rng.integers(-128, 128, (nblocks, 32)).astype(np.int8)
    raw = b"".join(d[i].tobytes() + qs[i].tobytes() for i in range(nblocks))
    vals = (d.astype(np.float32)[:, None] * qs.astype(np.float32)).astype(np.float64).reshape(-1)
    return raw, vals


def q4_0_blocks(rng, nblocks):
    d = (rng.uniform(-0.1, 0.1, nblocks)).astype(np.float16)
    qs = rng.integers(0, 256, (nblocks, 16)).astype(np.uint8)
    raw = b"".join(d[i].tobytes() + qs[i].tobytes() for i in range(nblocks))
    low = (qs & 0x0F).astype(np.int32) - 8   # elements 0..15 of each block
    high = (qs >> 4).astype(np.int32) - 8    # elements 16..31
    q = np.concatenate([low, high], axis=1).astype(np.float32)
    vals = (d.astype(np.float32)[:, None] * q).astype(np.float64).reshape(-1)
    return raw, vals


TOKENS = ["tok%d" % i for i in range(100)]

KVS = [
    ("general.architecture", STRING, "llama"),
    ("general.name", STRING, "tiny ünïcode model"),
    ("general.alignment", U32, 64),
    ("general.quantization_version", U32, 2),
    ("test.u8", U8, 250),
    ("test.i8", I8, -120),
    ("test.u16", U16, 65000),
    ("test.i16", I16, -32000),
    ("test.u32", U32, 4000000000),
    ("test.i32", I32, -2000000000),
    ("test.f32", F32, 0.1),
    ("test.bool_true", BOOL, True),
    ("test.bool_false", BOOL, False),
    ("test.u64", U64, 18446744073709551615),
    ("test.i64", I64, -9223372036854775807),
    ("test.f64", F64, 2.718281828459045),
    ("test.empty_string", STRING, ""),
    ("test.array_i32", ARRAY, (I32, [1, -2, 3])),
    ("test.array_f32", ARRAY, (F32, [0.5, -1.25])),
    ("test.array_empty", ARRAY, (U8, [])),
    ("test.nested", ARRAY, (ARRAY, [(I32, [1, 2]), (I32, [3])])),
    ("tokenizer.ggml.tokens", ARRAY, (STRING, TOKENS)),
    ("tokenizer.ggml.scores", ARRAY, (F32, [float(i) for i in range(100)])),
]


def expected_value(typ, v):
    if typ == F32:
        return float(np.float32(v))
    if typ == U64 and v > 2 ** 63 - 1:
        return str(v)
    if typ == ARRAY:
        elem, items = v
        kept = [expected_value(elem, x) for x in items[:64]]
        if len(items) > 64:
            kept.append("... %d more (%d items)" % (len(items) - 64, len(items)))
        return kept
    return v


class GgufTest(CkptTestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        rng = np.random.default_rng(5)
        f32 = rng.standard_normal((3, 5)).astype(np.float32)           # torch shape [3, 5], ne = [5, 3]
        f16 = rng.standard_normal((2, 4, 8)).astype(np.float16)
        q8raw, q8vals = q8_0_blocks(rng, 12)                           # 4 rows of 96
        q4raw, q4vals = q4_0_blocks(rng, 16)                           # 8 rows of 64
        q3k = rng.integers(0, 256, 110 * 2).astype(np.uint8).tobytes()  # 2 blocks of 256
        cls.tensors = [
            ("token_embd.weight", [5, 3], "f32", f32.tobytes()),
            ("blk.0.attn_norm.weight", [8, 4, 2], "f16", f16.tobytes()),
            ("blk.0.attn_q.weight", [96, 4], "q8_0", q8raw),
            ("blk.0.ffn_up.weight", [64, 8], "q4_0", q4raw),
            ("blk.0.ffn_down.weight", [256, 2], "q3_k", q3k),
        ]
        cls.values = {
            "token_embd.weight": f32.astype(np.float64).reshape(-1),
            "blk.0.attn_norm.weight": f16.astype(np.float64).reshape(-1),
            "blk.0.attn_q.weight": q8vals,
            "blk.0.ffn_up.weight": q4vals,
        }
        cls.path = workfile("model.gguf")
        with open(cls.path, "wb") as f:
            f.write(build_gguf(KVS, cls.tensors, alignment=64))

    def test_ls(self):
        ls = self.ckpt_json("ls", self.path)
        self.assertEqual(ls["format"], "gguf")
        self.assertEqual([e["name"] for e in ls["tensors"]], [t[0] for t in self.tensors])
        with open(self.path, "rb") as f:
            data = f.read()
        for (name, ne, gtype, raw), e in zip(self.tensors, ls["tensors"]):
            with self.subTest(tensor=name):
                self.assertNotIn("error", e)
                self.assertEqual(e["dtype"], DTYPE_NAME[gtype])
                self.assertEqual(e["shape"], list(reversed(ne)))      # PyTorch order: reverse of ne
                self.assertEqual(e["nbytes"], len(raw))
                self.assertEqual(e["data_offset"] % 64, 0)
                self.assertEqual(data[e["data_offset"]:e["data_offset"] + len(raw)], raw)

    def test_info_values(self):
        info = self.ckpt_json("info", self.path)
        self.assertEqual(info["format"], "gguf")
        self.assertIn("GGUF version 3", info["format_detail"])
        self.assertEqual(info["tensors"], len(self.tensors))
        got = {v["name"]: v for v in info["values"]}
        self.assertEqual(list(got), [k for k, _, _ in KVS])
        for key, typ, v in KVS:
            with self.subTest(key=key):
                if key == "test.nested":
                    self.assertEqual(got[key]["type"], "list")
                    self.assertEqual(len(got[key]["value"]), 2)
                    continue
                exp = expected_value(typ, v)
                if typ == F32 or typ == F64:
                    self.assertAlmostEqual(got[key]["value"], exp, places=12)
                else:
                    self.assertEqual(got[key]["value"], exp)
        self.assertEqual(got["tokenizer.ggml.tokens"]["value"][-1], "... 36 more (100 items)")
        self.assertEqual(info["dtypes"]["q8_0"]["parameters"], 384)

    def test_stats(self):
        names = list(self.values)
        st = self.ckpt_json("stats", self.path, *names)
        by = {e["name"]: e for e in st["tensors"]}
        for name in names:
            with self.subTest(tensor=name):
                msg = stats_mismatch(by[name], ref_stats(self.values[name]), common.DEFAULT_BINS)
                self.assertIsNone(msg, msg)

    def test_stats_unsupported_type(self):
        proc = self.run_ckpt("stats", self.path, "blk.0.ffn_down.weight", "--json")
        self.assert_error_output(proc, self.path)
        self.assertIn("statistics of q3_k tensors are not supported", proc.stderr.decode())

    def test_version2(self):
        path = workfile("v2.gguf")
        with open(path, "wb") as f:
            f.write(build_gguf(KVS[:1], self.tensors[:1], version=2))
        ls = self.ckpt_json("ls", path)
        self.assertEqual(ls["tensors"][0]["shape"], [3, 5])

    def malformed(self, name, data, expect):
        path = workfile(name + ".gguf")
        with open(path, "wb") as f:
            f.write(data)
        for cmd in ("ls", "info", "stats"):
            proc = self.run_ckpt(cmd, path, "--json", timeout=MALFORMED_TIMEOUT)
            self.assert_error_output(proc, path, "%s %s" % (cmd, name))
            self.assertIn(expect, proc.stderr.decode("utf-8", errors="replace"), "%s %s" % (cmd, name))

    def test_malformed(self):
        good = build_gguf(KVS[:1], self.tensors[:1])
        f32 = self.tensors[0]
        self.malformed("version1", b"GGUF" + struct.pack("<I", 1) + good[8:], "GGUF version 1")
        self.malformed("bigendian", b"GGUF" + struct.pack(">I", 3) + good[8:], "big-endian")
        self.malformed("truncated_header", good[:20], "needs 8 bytes but only 4 are left")
        self.malformed("huge_tensor_count", good[:8] + struct.pack("<Q", 1 << 40) + good[16:],
                       "tensor count 1099511627776 exceeds")
        self.malformed("string_past_end", b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", 1000) + b"ab" * 10,
                       "metadata key 0 of 1000 bytes runs past the end")
        self.malformed("unknown_value_type",
                       b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + gstr("a") + struct.pack("<I", 13) + b"\0" * 8,
                       "metadata key 'a' has unknown value type 13")
        self.malformed("five_dims", build_gguf(KVS[:1], [("t", [1, 1, 1, 1, 1], "f32", b"\0" * 4)]),
                       "has 5 dimensions")
        self.malformed("unknown_ggml_type", build_gguf(KVS[:1], [("t", [1], 99, b"\0" * 4)]),
                       "t: unknown ggml type 99")
        self.malformed("offset_out_of_file", build_gguf(KVS[:1], [f32], offsets=[1 << 20]),
                       "runs past the end of the file")
        self.malformed("misaligned_offset", build_gguf(KVS[:1], [f32], offsets=[4]),
                       "data offset 4 is not a multiple of the alignment 32")
        self.malformed("overlap", build_gguf(KVS[:1], [f32, ("u", [5, 3], "f32", f32[3])], offsets=[0, 32]),
                       "overlaps tensor 'token_embd.weight'")
        self.malformed("garbage_after_magic", b"GGUF" + bytes(range(256)) * 4, "GGUF version")


if __name__ == "__main__":
    common.main()
