"""Keras weights in HDF5 written by h5py (Debian python3-h5py): the Keras 2 `.h5` layout (model_weights /
optimizer_weights with layer_names / weight_names attributes, model_config), the Keras 3 `layers/<name>/vars/<i>`
layout (.weights.h5), `.keras` zips around such a file, and the real Keras 3 fixture. `ckpt ls --json` and
`ckpt stats --json` are compared with what h5py reads back; malformed files must fail cleanly."""

import io
import json
import os
import subprocess
import sys
import zipfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from common import CkptTestCase, ref_stats, stats_mismatch, workfile  # noqa: E402

import numpy as np  # noqa: E402

try:
    import h5py  # noqa: E402
except ImportError:  # pragma: no cover
    h5py = None

HERE = os.path.dirname(os.path.abspath(__file__))
REAL = os.path.normpath(os.path.join(HERE, "..", "..", "..", "shared", "fixtures", "real", "keras"))

NAMES = {"b": "bool", "i1": "int8", "u1": "uint8", "i2": "int16", "u2": "uint16", "i4": "int32",
         "u4": "uint32", "i8": "int64", "u8": "uint64", "f2": "float16", "f4": "float32", "f8": "float64"}


def dtype_name(dt):
    return NAMES["b" if dt.kind == "b" else dt.kind + str(dt.itemsize)]


def c_strides(shape):
    s, acc = [0] * len(shape), 1
    for i in reversed(range(len(shape))):
        s[i] = acc
        acc *= max(shape[i], 1)
    return s


def values_of(a):
    return np.asarray(a).astype(np.float64).reshape(-1)


def keras3_arrays():
    """{dataset path: (array, chunked+gzip?)} in the order ckpt lists them (natural order)."""
    rng = np.random.default_rng(11)
    f32 = rng.standard_normal((6, 5)).astype(np.float32)
    f32[0, :3] = [np.nan, np.inf, -np.inf]
    f32[1, :2] = 0
    out = [
        ("layers/dense/vars/0", f32, False),
        ("layers/dense/vars/1", rng.standard_normal(5).astype(np.float32), False),
        ("layers/dense/vars/2", (rng.standard_normal((3, 4)) * 50).astype(np.float16), False),
        ("layers/dense/vars/3", rng.standard_normal(40), False),
        ("layers/dense/vars/4", np.arange(-128, 128, dtype=np.int8), False),
        ("layers/dense/vars/5", rng.integers(-2**31, 2**31 - 1, 30).astype(np.int32), False),
        ("layers/dense/vars/6", np.array([-2**40, 7, 0, 2**40], dtype=np.int64), False),
        ("layers/dense/vars/7", np.arange(256, dtype=np.uint8).reshape(16, 16), False),
        ("layers/dense/vars/8", np.array([0, 65535, 12], dtype=np.uint16), False),
        ("layers/dense/vars/9", rng.random(33) > 0.5, False),
        ("layers/dense/vars/10", rng.standard_normal((4, 3)).astype(">f4"), False),
        ("layers/dense/vars/11", np.array([1, -2, 2**40], dtype=">i8"), False),
        ("layers/dense_1/vars/0", rng.standard_normal((64, 32)).astype(np.float32), True),
        ("layers/dense_1/vars/1", rng.standard_normal((10, 7)), True),
        ("layers/dense_1/vars/2", (rng.standard_normal(300) * 10).astype(np.float16), True),
        ("layers/dense_1/vars/3", rng.integers(-1000, 1000, (20, 20)).astype(">i4"), True),
        ("layers/dense_1/vars/4", rng.random(50) > 0.3, True),
        ("optimizer/vars/0", np.array(17, dtype=np.int64), False),
        ("optimizer/vars/1", np.array(0.001, dtype=np.float32), False),
        ("vars/0", np.zeros((0, 4), dtype=np.float32), False),
    ]
    return out


def write_keras3(path, arrays):
    with h5py.File(path, "w") as f:
        for name, a, chunked in arrays:
            if chunked:
                f.create_dataset(name, data=a, chunks=True, compression="gzip", shuffle=True)
            else:
                f.create_dataset(name, data=a)
        f["layers/dense/vars"].attrs["name"] = "d_0"
        f["vars"].attrs["name"] = "my_model"


MODEL_CONFIG = {"class_name": "Sequential", "config": {"name": "seq", "layers": [
    {"class_name": "Dense", "config": {"name": "zeta", "units": 4}},
    {"class_name": "Dense", "config": {"name": "alpha", "units": 2}}]}}
TRAINING_CONFIG = {"loss": "mse", "optimizer_config": {"class_name": "Adam", "config": {"learning_rate": 0.001}}}


def keras2_arrays():
    """[(tensor name, dataset path, array)] in Keras order: layer_names, weight_names, optimizer weights."""
    rng = np.random.default_rng(3)
    return [
        ("model_weights.zeta.zeta.kernel", "model_weights/zeta/zeta/kernel:0",
         rng.standard_normal((3, 4)).astype(np.float32)),
        ("model_weights.zeta.zeta.bias", "model_weights/zeta/zeta/bias:0", np.zeros(4, dtype=np.float32)),
        ("model_weights.alpha.alpha.kernel", "model_weights/alpha/alpha/kernel:0",
         rng.standard_normal((4, 2)).astype(np.float32)),
        ("model_weights.alpha.alpha.bias", "model_weights/alpha/alpha/bias:0",
         rng.standard_normal(2).astype(np.float32)),
        ("optimizer_weights.Adam.iter", "optimizer_weights/Adam/iter:0", np.array(12, dtype=np.int64)),
        ("optimizer_weights.Adam.zeta.kernel.m", "optimizer_weights/Adam/zeta/kernel/m:0",
         rng.standard_normal((3, 4)).astype(np.float32)),
        ("optimizer_weights.Adam.zeta.kernel.v", "optimizer_weights/Adam/zeta/kernel/v:0",
         rng.random((3, 4)).astype(np.float32)),
    ]


def write_keras2(path, arrays, chunked=False):
    with h5py.File(path, "w") as f:
        f.attrs["keras_version"] = b"2.11.0"
        f.attrs["backend"] = b"tensorflow"
        f.attrs["model_config"] = json.dumps(MODEL_CONFIG).encode()
        f.attrs["training_config"] = json.dumps(TRAINING_CONFIG).encode()
        mw = f.create_group("model_weights")
        mw.attrs["layer_names"] = np.array([b"zeta", b"alpha", b"dropout"], dtype="S")
        mw.attrs["backend"] = b"tensorflow"
        mw.attrs["keras_version"] = b"2.11.0"
        # written in an order different from Keras's, which the attributes restore
        for _, p, a in reversed(arrays):
            if chunked and a.ndim:
                f.create_dataset(p, data=a, chunks=True, compression="gzip")
            else:
                f.create_dataset(p, data=a)
        for layer in ("zeta", "alpha"):
            f["model_weights/" + layer].attrs["weight_names"] = np.array(
                [(layer + "/kernel:0").encode(), (layer + "/bias:0").encode()], dtype="S")
        f.create_group("model_weights/dropout").attrs["weight_names"] = np.array([], dtype="S1")
        f["optimizer_weights"].attrs["weight_names"] = np.array(
            [p[len("optimizer_weights/"):].encode() for _, p, _ in arrays if p.startswith("optimizer")], dtype="S")


def dataset_offsets(h5bytes):
    """{dataset path: file offset or None} as h5py reports them (contiguous datasets only)."""
    out = {}
    with h5py.File(io.BytesIO(h5bytes), "r") as f:
        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                out[name] = obj.id.get_offset()
        f.visititems(visit)
    return out


class KerasTest(CkptTestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        if h5py is None:
            raise AssertionError("python3-h5py is required for the Keras interop tests")
        cls.k3 = keras3_arrays()
        cls.k3path = workfile("model.weights.h5")
        write_keras3(cls.k3path, cls.k3)
        cls.k2 = keras2_arrays()
        cls.k2path = workfile("keras2_model.h5")
        write_keras2(cls.k2path, cls.k2)
        cls.k2chunked = workfile("keras2_chunked.h5")
        write_keras2(cls.k2chunked, cls.k2, chunked=True)
        with open(cls.k3path, "rb") as f:
            cls.k3bytes = f.read()
        cls.kzip = workfile("model.keras")
        cls.config = {"module": "keras", "class_name": "Functional", "config": {"name": "func_model"}}
        with zipfile.ZipFile(cls.kzip, "w") as z:   # ZIP_STORED, as Keras writes it
            z.writestr("metadata.json", json.dumps({"keras_version": "3.3.3", "date_saved": "2026-01-01@00:00:00"}))
            z.writestr("config.json", json.dumps(cls.config))
            z.writestr("model.weights.h5", cls.k3bytes)
        cls.kzipdeflated = workfile("deflated.keras")
        with zipfile.ZipFile(cls.kzipdeflated, "w", zipfile.ZIP_DEFLATED) as z:
            z.writestr("metadata.json", json.dumps({"keras_version": "3.3.3"}))
            z.writestr("config.json", json.dumps(cls.config))
            z.writestr("model.weights.h5", cls.k3bytes)

    # ---- helpers -----------------------------------------------------------------------------------------

    def check_entries(self, ls, expected, data=None, base=0, offsets=None):
        """expected: [(name, array, dataset path, chunked)]; data: bytes of the file for offset checks."""
        self.assertEqual([e["name"] for e in ls["tensors"]], [n for n, _, _, _ in expected])
        by = {e["name"]: e for e in ls["tensors"]}
        for name, a, p, chunked in expected:
            e = by[name]
            with self.subTest(tensor=name):
                self.assertNotIn("error", e)
                self.assertEqual(e["dtype"], dtype_name(a.dtype))
                self.assertEqual(e["shape"], list(a.shape))
                self.assertEqual(e["strides"], c_strides(a.shape))
                self.assertEqual(e["storage_offset"], 0)
                self.assertEqual(e["nbytes"], a.nbytes)
                self.assertEqual(e["device"], "cpu")
                if data is not None and not chunked and a.size:
                    off = e.get("data_offset")
                    self.assertIsNotNone(off, "contiguous dataset not mapped in place")
                    if offsets is not None:
                        self.assertEqual(off, base + offsets[p])
                    self.assertEqual(data[off:off + a.nbytes], a.tobytes(), "bytes at data_offset differ")

    def check_stats(self, path, expected, bins=common.DEFAULT_BINS):
        st = self.ckpt_json("stats", path, "--bins", str(bins))
        got = {e["name"]: e for e in st["tensors"]}
        for name, a, _, _ in expected:
            if a.size == 0:
                continue
            with self.subTest(tensor=name, bins=bins):
                self.assertIn(name, got)
                self.assertEqual(got[name]["dtype"], dtype_name(a.dtype))
                msg = stats_mismatch(got[name], ref_stats(values_of(a), bins), bins)
                self.assertIsNone(msg, "%s: %s" % (name, msg))

    def k3_expected(self):
        return [(p.replace("/", "."), a, p, c) for p, a, c in self.k3]

    def k2_expected(self, chunked=False):
        return [(n, a, p, chunked and a.ndim > 0) for n, p, a in self.k2]

    # ---- Keras 3 .weights.h5 -----------------------------------------------------------------------------

    def test_keras3_weights_ls(self):
        ls = self.ckpt_json("ls", self.k3path)
        self.assertEqual(ls["format"], "keras-h5")
        self.check_entries(ls, self.k3_expected(), self.k3bytes, 0, dataset_offsets(self.k3bytes))

    def test_keras3_weights_stats(self):
        self.check_stats(self.k3path, self.k3_expected())
        self.check_stats(self.k3path, self.k3_expected(), bins=7)

    def test_keras3_values(self):
        info = self.run_ckpt("info", self.k3path)
        self.assertEqual(info.returncode, 0, info.stderr)
        out = info.stdout.decode()
        self.assertIn("layers.dense.vars.name = 'd_0'", out)
        self.assertIn("vars.name = 'my_model'", out)

    # ---- Keras 2 .h5 -------------------------------------------------------------------------------------

    def test_keras2_ls(self):
        with open(self.k2path, "rb") as f:
            data = f.read()
        ls = self.ckpt_json("ls", self.k2path)
        self.assertEqual(ls["format"], "keras-h5")
        self.check_entries(ls, self.k2_expected(), data, 0, dataset_offsets(data))

    def test_keras2_chunked(self):
        ls = self.ckpt_json("ls", self.k2chunked)
        self.check_entries(ls, self.k2_expected(True))
        self.check_stats(self.k2chunked, self.k2_expected(True))

    def test_keras2_stats(self):
        self.check_stats(self.k2path, self.k2_expected())

    def test_keras2_values(self):
        proc = self.run_ckpt("info", self.k2path)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        out = proc.stdout.decode()
        self.assertIn("Keras 2 model", out)
        self.assertIn("keras_version = '2.11.0'", out)
        self.assertIn("backend = 'tensorflow'", out)
        self.assertIn("model_config = '{\"class_name\": \"Sequential\"", out)
        self.assertIn("training_config = ", out)
        self.assertIn("model_weights.backend = 'tensorflow'", out)

    def test_keras2_save_weights_layout(self):
        """Keras 2 save_weights('x.h5'): the model_weights content at the root."""
        path = workfile("keras2_weights.h5")
        rng = np.random.default_rng(8)
        k = rng.standard_normal((2, 3)).astype(np.float32)
        b = rng.standard_normal(3).astype(np.float32)
        with h5py.File(path, "w") as f:
            f.attrs["layer_names"] = np.array([b"d"], dtype="S")
            f.attrs["backend"] = b"tensorflow"
            f.create_dataset("d/d/bias:0", data=b)
            f.create_dataset("d/d/kernel:0", data=k)
            f["d"].attrs["weight_names"] = np.array([b"d/kernel:0", b"d/bias:0"], dtype="S")
        ls = self.ckpt_json("ls", path)
        self.check_entries(ls, [("d.d.kernel", k, "d/d/kernel:0", False), ("d.d.bias", b, "d/d/bias:0", False)])

    def test_user_block(self):
        """A 512-byte user block before the superblock: found, and H5Dget_offset is absolute."""
        path = workfile("userblock.h5")
        a = np.array([1.5, -2.0, 3.0], dtype=np.float32)
        with h5py.File(path, "w", userblock_size=512) as f:
            f.create_dataset("layers/d/vars/0", data=a)
        with open(path, "rb") as f:
            data = f.read()
        ls = self.ckpt_json("ls", path)
        self.check_entries(ls, [("layers.d.vars.0", a, "layers/d/vars/0", False)], data)
        self.check_stats(path, [("layers.d.vars.0", a, "layers/d/vars/0", False)])

    # ---- .keras ------------------------------------------------------------------------------------------

    def test_keras_zip_stored(self):
        with zipfile.ZipFile(self.kzip) as z:
            self.assertEqual({i.compress_type for i in z.infolist()}, {zipfile.ZIP_STORED})
        base = common.zip_data_offsets(self.kzip)["model.weights.h5"][1]
        with open(self.kzip, "rb") as f:
            data = f.read()
        ls = self.ckpt_json("ls", self.kzip)
        self.assertEqual(ls["format"], "keras")
        self.check_entries(ls, self.k3_expected(), data, base, dataset_offsets(self.k3bytes))
        self.check_stats(self.kzip, self.k3_expected())
        proc = self.run_ckpt("info", self.kzip)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        out = proc.stdout.decode()
        self.assertIn("config.class_name = 'Functional'", out)
        self.assertIn("metadata.keras_version = '3.3.3'", out)

    def test_keras_zip_deflated(self):
        ls = self.ckpt_json("ls", self.kzipdeflated)
        self.assertEqual(ls["format"], "keras")
        self.check_entries(ls, self.k3_expected())
        self.check_stats(self.kzipdeflated, self.k3_expected())

    def test_real_keras3_fixture(self):
        path = os.path.join(REAL, "nested_container_keras3.keras")
        if not os.path.isfile(path):
            self.skipTest("real fixtures not present: %s" % REAL)
        with zipfile.ZipFile(path) as z:
            h5 = z.read("model.weights.h5")
            meta = json.loads(z.read("metadata.json"))
        base = common.zip_data_offsets(path)["model.weights.h5"][1]
        expected = []
        with h5py.File(io.BytesIO(h5), "r") as f:
            def visit(name, obj):
                if isinstance(obj, h5py.Dataset):
                    expected.append((name.replace("/", "."), obj[()], name, obj.chunks is not None))
            f.visititems(visit)
        self.assertTrue(expected)
        with open(path, "rb") as f:
            data = f.read()
        ls = self.ckpt_json("ls", path)
        self.assertEqual(ls["format"], "keras")
        self.assertEqual(ls.get("findings", []), [])
        self.check_entries(ls, expected, data, base, dataset_offsets(h5))
        self.check_stats(path, expected)
        out = self.run_ckpt("info", path).stdout.decode()
        self.assertIn("metadata.keras_version = '%s'" % meta["keras_version"], out)

    # ---- chunked / compressed datasets read on demand ----------------------------------------------------

    def run_measured(self, *args):
        """(exit status, stdout, peak resident set in bytes of ckpt and the children it waited for), measured
        by GNU time (scripts/setup.sh installs it): a process forked from this one would start with the
        test's own peak."""
        report = workfile("measured.time")
        proc = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", report, common.CKPT] + [str(a) for a in args],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=common.RUN_TIMEOUT,
                              cwd=common.WORKDIR)
        with open(report) as f:
            peak_kib = int(f.read().split()[-1])
        return proc.returncode, proc.stdout, peak_kib * 1024

    def test_chunked_read_on_demand(self):
        """Opening a file with a 96 MiB gzip-compressed chunked dataset does not read it: `ckpt info` and
        `ckpt ls` stay far below its size in peak memory (the libhdf5 child included, which read it whole at
        opening before), while `ckpt stats`, which needs the values, reads it (in two slabs) and matches h5py,
        and `ckpt diff` finds it identical to the same array stored contiguous."""
        path = workfile("big_chunked.weights.h5")
        rng = np.random.default_rng(12)
        big = (rng.integers(0, 16, (6144, 4096)) * 0.5 - 3.75).astype(np.float32)   # 96 MiB, gzip ~ 5:1
        small = rng.standard_normal((8, 5)).astype(np.float32)
        with h5py.File(path, "w") as f:
            f.create_dataset("layers/dense/vars/0", data=big, chunks=(256, 4096), compression="gzip",
                             compression_opts=1)
            f.create_dataset("layers/dense/vars/1", data=small)
        plain = workfile("big_contiguous.weights.h5")
        with h5py.File(plain, "w") as f:
            f.create_dataset("layers/dense/vars/0", data=big)
            f.create_dataset("layers/dense/vars/1", data=small)
        tiny = workfile("tiny.weights.h5")
        with h5py.File(tiny, "w") as f:
            f.create_dataset("layers/dense/vars/1", data=small)
        del big
        self.assertLess(os.path.getsize(path), 48 << 20)
        # Peak memory above that of the same command on a file without the big dataset: the program's own
        # (several times larger under AddressSanitizer) is not the dataset's.
        rc, out, baseline = self.run_measured("info", tiny)
        self.assertEqual(rc, 0, out[-1000:])
        for cmd in ("info", "ls"):
            rc, out, peak = self.run_measured(cmd, path)
            self.assertEqual(rc, 0, out[-1000:])
            self.assertLess(peak - baseline, 48 << 20,
                            "ckpt %s peaked at %d bytes (%d on a tiny file): the dataset was read"
                            % (cmd, peak, baseline))
        rc, out, _ = self.run_measured("info", path)
        self.assertIn(b"Keras 3 weights, 2 datasets (1 chunked or compressed, read on demand)", out)
        rc, out, peak = self.run_measured("stats", "--json", path)
        self.assertEqual(rc, 0, out[-1000:])
        self.assertGreater(peak - baseline, 64 << 20, "the measure does not see the dataset read by ckpt stats")
        got = {e["name"]: e for e in json.loads(out)["tensors"]}
        with h5py.File(path, "r") as f:
            for name in ("layers/dense/vars/0", "layers/dense/vars/1"):
                ref = ref_stats(values_of(f[name][()]))
                with self.subTest(tensor=name):
                    msg = stats_mismatch(got[name.replace("/", ".")], ref, common.DEFAULT_BINS)
                    self.assertIsNone(msg, msg)
        # element by element, in order: the same values stored contiguous (mapped in place) compare identical
        d = self.ckpt_json("diff", path, plain)
        self.assertEqual((d["identical"], d["changed"], d.get("errors", [])), (2, [], []))

    def test_chunked_read_fails_per_tensor(self):
        """A gzip chunk whose bytes are damaged: the file still opens and lists every tensor (the chunk is not
        read then); `ckpt stats` reports libhdf5's error for that tensor alone and the right values for the
        others."""
        path = workfile("damaged_chunk.weights.h5")
        rng = np.random.default_rng(13)
        arrays = {
            "layers/a/vars/0": rng.standard_normal((64, 64)).astype(np.float32),
            "layers/a/vars/1": rng.standard_normal((64, 64)).astype(np.float32),
            "layers/a/vars/2": np.arange(10, dtype=np.float32),
        }
        with h5py.File(path, "w") as f:
            for name, a in arrays.items():
                if a.ndim == 2:
                    f.create_dataset(name, data=a, chunks=(16, 64), compression="gzip")
                else:
                    f.create_dataset(name, data=a)
        with h5py.File(path, "r") as f:
            chunk = f["layers/a/vars/0"].id.get_chunk_info(1)
        with open(path, "r+b") as f:
            f.seek(chunk.byte_offset + 8)
            f.write(bytes(b ^ 0x5A for b in f.read(chunk.size - 16)))
            f.seek(chunk.byte_offset + 8)
        ls = self.ckpt_json("ls", path)
        self.assertEqual([e["name"] for e in ls["tensors"]], ["layers.a.vars.0", "layers.a.vars.1",
                                                             "layers.a.vars.2"])
        self.assertTrue(all("error" not in e for e in ls["tensors"]), ls)
        self.assertEqual(ls.get("findings", []), [])
        proc = self.run_ckpt("stats", "--json", path)
        self.assertEqual(proc.returncode, 2, proc.stderr)
        got = {e["name"]: e for e in json.loads(proc.stdout)["tensors"]}
        message = "HDF5 dataset '/layers/a/vars/0': cannot be read (chunked, 1 filter): inflate() failed"
        self.assertEqual(got["layers.a.vars.0"], {"name": "layers.a.vars.0", "error": message})
        self.assertEqual(proc.stderr.decode(), "ckpt: %s: layers.a.vars.0: %s\n" % (path, message))
        for name in ("layers/a/vars/1", "layers/a/vars/2"):
            with self.subTest(tensor=name):
                msg = stats_mismatch(got[name.replace("/", ".")], ref_stats(values_of(arrays[name])),
                                     common.DEFAULT_BINS)
                self.assertIsNone(msg, msg)

    def test_chunked_export_and_diff(self):
        """`ckpt export` and `ckpt diff` read chunked gzip datasets on demand: the exported safetensors holds the
        bytes h5py reads, the diff's figures are NumPy's, and a damaged chunk on one side is an error of that
        tensor (exit 2) while the others are still compared."""
        rng = np.random.default_rng(14)
        a = {"layers/a/vars/0": rng.standard_normal((48, 16)).astype(np.float32),
             "layers/a/vars/1": rng.standard_normal(40),
             "layers/a/vars/2": rng.standard_normal((12, 4)).astype(np.float32)}
        b = {k: v.copy() for k, v in a.items()}
        b["layers/a/vars/0"][3:7] += 0.5
        paths = {}
        for side, arrays in (("a", a), ("b", b)):
            paths[side] = workfile("diff_%s.weights.h5" % side)
            with h5py.File(paths[side], "w") as f:
                for name, x in arrays.items():
                    f.create_dataset(name, data=x, chunks=(8,) + x.shape[1:], compression="gzip")
        out = workfile("chunked_export.safetensors")
        proc = self.run_ckpt("export", paths["a"], "-o", out, "--quiet")
        self.assertEqual(proc.returncode, 0, proc.stderr)
        with open(out, "rb") as f:
            data = f.read()
        n = int.from_bytes(data[:8], "little")
        header = json.loads(data[8:8 + n])
        with h5py.File(paths["a"], "r") as f:
            for name in a:
                e = header[name.replace("/", ".")]
                ref = f[name][()]
                with self.subTest(tensor=name):
                    self.assertEqual(e["shape"], list(ref.shape))
                    self.assertEqual(data[8 + n + e["data_offsets"][0]:8 + n + e["data_offsets"][1]],
                                     ref.tobytes())
        d = self.ckpt_json("diff", paths["a"], paths["b"], expect_rc=1)
        self.assertEqual(d["identical"], 2)
        self.assertEqual([c["name"] for c in d["changed"]], ["layers.a.vars.0"])
        delta = np.abs(b["layers/a/vars/0"].astype(np.float64) - a["layers/a/vars/0"].astype(np.float64))
        self.assertAlmostEqual(d["changed"][0]["max_abs"], float(delta.max()), delta=1e-12)
        self.assertAlmostEqual(d["changed"][0]["mean_abs"], float(delta.mean()), delta=1e-12)
        # damage the second chunk of layers/a/vars/2 in B
        with h5py.File(paths["b"], "r") as f:
            chunk = f["layers/a/vars/2"].id.get_chunk_info(1)
        with open(paths["b"], "r+b") as f:
            f.seek(chunk.byte_offset + 4)
            damaged = bytes(x ^ 0x5A for x in f.read(chunk.size - 8))
            f.seek(chunk.byte_offset + 4)
            f.write(damaged)
        proc = self.run_ckpt("diff", paths["a"], paths["b"], "--json")
        self.assertEqual(proc.returncode, 2, proc.stderr)
        message = ("%s: layers.a.vars.2: HDF5 dataset '/layers/a/vars/2': cannot be read (chunked, 1 filter): "
                   "inflate() failed" % paths["b"])
        self.assertEqual(proc.stderr.decode(), "ckpt: %s (values not compared)\n" % message)
        d = json.loads(proc.stdout)
        self.assertEqual(d["errors"], [{"name": "layers.a.vars.2", "error": message}])
        self.assertEqual([c["name"] for c in d["changed"]], ["layers.a.vars.0"])
        self.assertEqual(d["identical"], 1)

    # ---- malformed ---------------------------------------------------------------------------------------

    def test_malformed(self):
        with open(self.k2path, "rb") as f:
            good = f.read()
        sig = b"\x89HDF\r\n\x1a\n"
        rng = np.random.default_rng(1)
        cases = {
            "signature only": sig,
            "garbage after signature": sig + bytes(rng.integers(0, 256, 4000, dtype=np.uint8)),
            "zeros after signature": sig + bytes(2000),
            "truncated to 100 bytes": good[:100],
            "truncated to half": good[:len(good) // 2],
            "last byte missing": good[:-1],
            "superblock version 9": good[:8] + b"\x09" + good[9:],
            "end-of-file address huge": good[:40] + b"\xff" * 8 + good[48:],
        }
        for what, b in cases.items():
            path = workfile("bad_%s.h5" % what.replace(" ", "_"))
            with open(path, "wb") as f:
                f.write(b)
            with self.subTest(case=what):
                self.assert_error_output(self.run_ckpt("ls", path, timeout=common.MALFORMED_TIMEOUT), path, what)
        # a .keras whose weights member is truncated
        path = workfile("bad_member.keras")
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("metadata.json", "{}")
            z.writestr("config.json", "{}")
            z.writestr("model.weights.h5", self.k3bytes[:len(self.k3bytes) // 3])
        self.assert_error_output(self.run_ckpt("ls", path, timeout=common.MALFORMED_TIMEOUT), path,
                                 "truncated member")

    def test_config_json_deep_or_large(self):
        """config.json of 60 MiB: nested 60 million levels deep (a warning, the rest of the archive read), or
        flat with 15 million numbers (read, only its top-level fields kept). Both stay under 600 MB."""
        cases = {"deep": ("[" * (60 << 20), "config.json: nests deeper than 256 levels at byte 256 of the member"),
                 "wide": ('{"class_name": "Wide", "config": {"name": "wide", "values": [' +
                          ",".join(["0"] * (15 << 20)) + "]}}", None)}
        for what, (config, warning) in cases.items():
            path = workfile("config_%s.keras" % what)
            with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
                z.writestr("metadata.json", '{"keras_version": "3.3.3"}')
                z.writestr("config.json", config)
                z.writestr("model.weights.h5", self.k3bytes)
            with self.subTest(case=what):
                proc = subprocess.run(["/usr/bin/time", "-f", "maxrss %M", common.CKPT, "info", path],
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=common.RUN_TIMEOUT)
                err = proc.stderr.decode(errors="replace")
                self.assertEqual(proc.returncode, 0, err[-1000:])
                self.assertLess(int(err.rsplit("maxrss ", 1)[1].split()[0]), 600 * 1024)
                out = proc.stdout.decode()
                self.assertIn("metadata.keras_version = '3.3.3'", out)
                if warning:
                    self.assertIn(warning, out)
                else:
                    self.assertIn("config.class_name = 'Wide'", out)
                    self.assertIn("config.name = 'wide'", out)
                self.check_entries(self.ckpt_json("ls", path), self.k3_expected())

    def test_corrupted_bytes_never_crash(self):
        """Overwrite bytes, mostly in the metadata at the start of a valid file: ckpt must answer (exit 0 or 2,
        never a signal) in time. libhdf5 1.10 itself crashes on some of these (H5HG_read on a damaged global
        heap): ckpt runs it in a child process and reports that as an error."""
        rng = np.random.default_rng(2)
        path = workfile("corrupt.h5")
        for k in range(200):
            with open(self.k2path if k % 2 == 0 else self.k3path, "rb") as f:
                good = bytearray(f.read())
            b = bytearray(good)
            for _ in range(int(rng.integers(1, 9))):
                at = int(rng.integers(0, min(len(b), 4096) if rng.random() < 0.8 else len(b)))
                b[at] = int(rng.integers(0, 256))
            with open(path, "wb") as f:
                f.write(b)
            with self.subTest(round=k):
                proc = self.run_ckpt("stats", path, timeout=common.MALFORMED_TIMEOUT)
                self.assertIn(proc.returncode, (0, 2), proc.stderr[-500:])


if __name__ == "__main__":
    common.main()
