"""NumPy .npy / .npz written by numpy itself (np.save, np.savez, np.savez_compressed): ls metadata and
statistics against numpy, Fortran order, big-endian, 0-d, empty, object arrays refused, malformed files."""

import os
import struct
import subprocess
import sys
import zipfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from common import CkptTestCase, ref_stats, stats_mismatch, workfile  # noqa: E402

import numpy as np  # noqa: E402

nan, inf = float("nan"), float("inf")

NAMES = {"b": "bool", "i1": "int8", "u1": "uint8", "i2": "int16", "u2": "uint16", "i4": "int32",
         "u4": "uint32", "i8": "int64", "u8": "uint64", "f2": "float16", "f4": "float32", "f8": "float64",
         "c8": "complex64", "c16": "complex128"}


def dtype_name(dt):
    return NAMES["b" if dt.kind == "b" else dt.kind + str(dt.itemsize)]


def torch_strides(a):
    """Strides in elements as torch.from_numpy reports them (contiguous conventions for size-0/1 dims)."""
    shape = a.shape
    if a.flags.f_contiguous and not a.flags.c_contiguous:
        s, acc = [], 1
        for d in shape:
            s.append(acc)
            acc *= max(d, 1)
        return s
    s, acc = [0] * len(shape), 1
    for i in reversed(range(len(shape))):
        s[i] = acc
        acc *= max(shape[i], 1)
    return s


def values_of(a):
    a = np.asarray(a)
    if a.dtype.kind == "c":
        return np.abs(a.astype(np.complex128)).reshape(-1)
    return a.astype(np.float64).reshape(-1)


def make_arrays():
    rng = np.random.default_rng(5)
    f32 = rng.standard_normal((8, 9)).astype(np.float32)
    f32[0, :3] = [nan, inf, -inf]
    f32[1, :2] = 0
    d = {
        "f32": f32,
        "f64": rng.standard_normal(100),
        "f16": (rng.standard_normal(50) * 100).astype(np.float16),
        "i8": np.arange(-128, 128, dtype=np.int8),
        "u8": np.arange(256, dtype=np.uint8).reshape(16, 16),
        "i16": np.array([-32768, 32767, 0, 3], dtype=np.int16),
        "u16": np.array([0, 65535, 12], dtype=np.uint16),
        "i32": rng.integers(-2**31, 2**31 - 1, 30).astype(np.int32),
        "u32": np.array([0, 2**32 - 1], dtype=np.uint32),
        "i64": np.array([-2**63, 2**63 - 1, 0, 9], dtype=np.int64),
        "u64": np.array([0, 2**64 - 1, 5], dtype=np.uint64),
        "bool": rng.random(40) > 0.5,
        "c64": (rng.standard_normal(10) + 1j * rng.standard_normal(10)).astype(np.complex64),
        "c128": rng.standard_normal((3, 3)) + 1j * rng.standard_normal((3, 3)),
        "scalar": np.array(3.25),
        "empty": np.zeros((0, 4), dtype=np.float32),
        "fortran": np.asfortranarray(rng.standard_normal((4, 5, 3)).astype(np.float32)),
        "fortran_i16": np.asfortranarray(np.arange(12, dtype=np.int16).reshape(3, 4)),
        "big_f4": rng.standard_normal((5, 6)).astype(">f4"),
        "big_i8": np.array([1, -2, 2**40], dtype=">i8"),
        "big_c16": (rng.standard_normal(4) + 1j).astype(">c16"),
        "big_fortran_f8": np.asfortranarray(rng.standard_normal((3, 4))).astype(">f8", order="F"),
    }
    assert d["fortran"].flags.f_contiguous and not d["fortran"].flags.c_contiguous
    assert d["big_fortran_f8"].flags.f_contiguous and not d["big_fortran_f8"].flags.c_contiguous
    return d


class NumpyTest(CkptTestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.arrays = make_arrays()
        cls.npy = {}
        for name, a in cls.arrays.items():
            cls.npy[name] = workfile(name + ".npy")
            np.save(cls.npy[name], a)
        cls.npz = workfile("arrays.npz")
        np.savez(cls.npz, **cls.arrays)
        cls.npzc = workfile("arrays_compressed.npz")
        np.savez_compressed(cls.npzc, **cls.arrays)

    def check_entry(self, e, a, path):
        self.assertNotIn("error", e)
        self.assertEqual(e["dtype"], dtype_name(a.dtype))
        self.assertEqual(e["shape"], list(a.shape))
        if a.size:
            self.assertEqual(e["strides"], torch_strides(a))
        self.assertEqual(e["storage_offset"], 0)
        self.assertEqual(e["nbytes"], a.nbytes)
        self.assertEqual(e["device"], "cpu")
        self.assertIsNone(e["requires_grad"])

    def check_stats(self, path, names, bins=common.DEFAULT_BINS):
        st = self.ckpt_json("stats", path, "--bins", str(bins))
        got = {e["name"]: e for e in st["tensors"]}
        for name, a in names.items():
            if a.size == 0:
                continue
            with self.subTest(tensor=name, bins=bins):
                self.assertIn(name, got)
                self.assertEqual(got[name]["shape"], list(a.shape))
                msg = stats_mismatch(got[name], ref_stats(values_of(a), bins), bins)
                self.assertIsNone(msg, "%s: %s" % (name, msg))

    def test_npy_ls(self):
        for name, path in self.npy.items():
            a = self.arrays[name]
            with self.subTest(array=name):
                ls = self.ckpt_json("ls", path)
                self.assertEqual(ls["format"], "numpy")
                self.assertEqual([e["name"] for e in ls["tensors"]], ["array"])
                e = ls["tensors"][0]
                self.check_entry(e, a, path)
                # the data offset holds the array's bytes in its own byte order and memory order
                with open(path, "rb") as f:
                    data = f.read()
                raw = a.tobytes(order="F" if (a.flags.f_contiguous and not a.flags.c_contiguous) else "C")
                self.assertEqual(data[e["data_offset"]:e["data_offset"] + len(raw)], raw)

    def test_npy_stats(self):
        for name, path in self.npy.items():
            a = self.arrays[name]
            if a.size == 0:
                continue
            with self.subTest(array=name):
                st = self.ckpt_json("stats", path)
                msg = stats_mismatch(st["tensors"][0], ref_stats(values_of(a)), common.DEFAULT_BINS)
                self.assertIsNone(msg, "%s: %s" % (name, msg))

    def test_npz(self):
        for path, fmt in ((self.npz, "stored"), (self.npzc, "deflated")):
            with self.subTest(npz=fmt):
                with zipfile.ZipFile(path) as z:
                    methods = {i.compress_type for i in z.infolist()}
                self.assertEqual(methods, {zipfile.ZIP_STORED} if fmt == "stored" else {zipfile.ZIP_DEFLATED})
                ls = self.ckpt_json("ls", path)
                self.assertEqual(ls["format"], "npz")
                self.assertEqual([e["name"] for e in ls["tensors"]], list(self.arrays))
                for e in ls["tensors"]:
                    with self.subTest(tensor=e["name"]):
                        self.check_entry(e, self.arrays[e["name"]], path)
                self.check_stats(path, self.arrays)
                self.check_stats(path, self.arrays, bins=5)

    def test_npz_stored_is_mapped_in_place(self):
        ls = self.ckpt_json("ls", self.npz)
        with open(self.npz, "rb") as f:
            data = f.read()
        for e in ls["tensors"]:
            a = self.arrays[e["name"]]
            if a.size == 0 or a.flags.f_contiguous and not a.flags.c_contiguous:
                continue
            with self.subTest(tensor=e["name"]):
                self.assertEqual(data[e["data_offset"]:e["data_offset"] + a.nbytes], a.tobytes())

    def test_npz_compressed_inflated_on_demand(self):
        """savez_compressed members are inflated when their values are read, not when the file opens."""
        path = workfile("big_zeros_compressed.npz")
        big = np.zeros(105_000_000, dtype=np.float32)  # 420 MB inflated, about 400 KB deflated
        small = np.random.default_rng(9).standard_normal((33, 17)).astype(np.float32)
        np.savez_compressed(path, big=big, small=small)
        del big
        self.assertLess(os.path.getsize(path), 2 << 20)
        if os.path.exists("/usr/bin/time"):
            proc = subprocess.run(["/usr/bin/time", "-f", "%M", common.CKPT, "info", path],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=common.RUN_TIMEOUT)
            self.assertEqual(proc.returncode, 0, proc.stderr.decode(errors="replace")[-2000:])
            self.assertIn(b"inflated on demand", proc.stdout)
            peak_kb = int(proc.stderr.decode().strip().split("\n")[-1])
            self.assertLess(peak_kb, 150 * 1024, "ckpt info peak RSS %d KB" % peak_kb)
        ls = self.ckpt_json("ls", path)
        by = {e["name"]: e for e in ls["tensors"]}
        self.assertEqual(by["big"]["shape"], [105_000_000])
        self.assertEqual(by["big"]["nbytes"], 420_000_000)
        st = self.ckpt_json("stats", path, "small")
        self.assertEqual([e["name"] for e in st["tensors"]], ["small"])
        msg = stats_mismatch(st["tensors"][0], ref_stats(values_of(small)), common.DEFAULT_BINS)
        self.assertIsNone(msg, msg)
        st = self.ckpt_json("stats", path, "big", timeout=common.MALFORMED_TIMEOUT)
        e = st["tensors"][0]
        self.assertEqual((e["count"], e["zeros"], e["nan"], e["inf"]), (105_000_000, 105_000_000, 0, 0))
        self.assertEqual((e["min"], e["max"], e["mean"], e["std"]), (0.0, 0.0, 0.0, 0.0))

    def test_npz_corrupt_deflate_stream(self):
        """A member whose deflate stream breaks after its header: the file opens, reading it fails cleanly."""
        path = workfile("corrupt_stream.npz")
        good = np.arange(10.0)
        np.savez_compressed(path, good=good, bad=np.random.default_rng(3).standard_normal(100_000))
        with open(path, "rb") as f:
            data = bytearray(f.read())
        with zipfile.ZipFile(path) as z:
            info = z.getinfo("bad.npy")
        name_len, extra_len = struct.unpack("<HH", data[info.header_offset + 26:info.header_offset + 30])
        start = info.header_offset + 30 + name_len + extra_len
        for i in range(8):
            data[start + info.compress_size // 2 + i] ^= 0x5A
        with open(path, "wb") as f:
            f.write(data)
        info_json = self.ckpt_json("info", path)
        self.assertIn("inflated on demand", info_json["format_detail"])
        ls = self.ckpt_json("ls", path)
        self.assertEqual({e["name"]: e["shape"] for e in ls["tensors"]}, {"good": [10], "bad": [100_000]})
        st = self.ckpt_json("stats", path, "good")
        self.assertIsNone(stats_mismatch(st["tensors"][0], ref_stats(values_of(good)), common.DEFAULT_BINS))
        proc = self.run_ckpt("stats", path, "bad", timeout=common.MALFORMED_TIMEOUT)
        self.assert_error_output(proc, path)
        self.assertIn("'bad.npy'", proc.stderr.decode(errors="replace"))

    def test_object_array_refused(self):
        marker = workfile("pwned_marker")
        path = workfile("objects.npz")
        np.savez(path, ok=np.arange(4.0), obj=np.array([1, "two", {"x": 3}], dtype=object))
        proc = self.run_ckpt("ls", path, "--json", timeout=common.MALFORMED_TIMEOUT)
        self.assertEqual(proc.returncode, 2)
        ls = common.parse_json_strict(self, proc.stdout)
        by = {e["name"]: e for e in ls["tensors"]}
        self.assertNotIn("error", by["ok"])
        self.assertIn("Python objects", by["obj"]["error"])
        self.assertTrue(any(f["severity"] == "error" and f["object"] == "obj" for f in ls["findings"]))
        self.assertFalse(os.path.exists(marker))
        st = self.ckpt_json("stats", path, "ok")
        self.assertEqual(st["tensors"][0]["mean"], 1.5)
        p1 = workfile("objects.npy")
        np.save(p1, np.array([None, 1], dtype=object))
        self.assert_error_output(self.run_ckpt("ls", p1, timeout=common.MALFORMED_TIMEOUT), p1)

    def test_malformed(self):
        with open(self.npy["f64"], "rb") as f:
            good = f.read()
        cases = {
            "bad magic": b"\x93NUMPX" + good[6:],
            "bad version": good[:6] + b"\x09\x00" + good[8:],
            "header past the end": good[:8] + b"\xff\xff" + good[10:60],
            "broken header": good[:10] + b"{'descr' '<f8'" + good[24:],
            "data truncated": good[:-8],
            "object dtype": good[:10] + good[10:].replace(b"'<f8'", b"'|O' ", 1),
            "string dtype": good[:10] + good[10:].replace(b"'<f8'", b"'<U2'", 1),
        }
        for what, b in cases.items():
            path = workfile("bad_%s.npy" % what.replace(" ", "_"))
            with open(path, "wb") as f:
                f.write(b)
            with self.subTest(case=what):
                self.assert_error_output(self.run_ckpt("ls", path, timeout=common.MALFORMED_TIMEOUT), path, what)
        # a member of an npz that is not an array
        path = workfile("bad_member.npz")
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("good.npy", good)
            z.writestr("junk.npy", b"\x93NUMPY\x01\x00\x05\x00{'d'}")
        proc = self.run_ckpt("ls", path, "--json", timeout=common.MALFORMED_TIMEOUT)
        self.assertEqual(proc.returncode, 2)
        ls = common.parse_json_strict(self, proc.stdout)
        by = {e["name"]: e for e in ls["tensors"]}
        self.assertNotIn("error", by["good"])
        self.assertIn("error", by["junk"])


if __name__ == "__main__":
    common.main()
