"""ckpt export against real PyTorch: what it writes loads with torch.load(weights_only=True) and equals what
PyTorch computes for the same selection, renaming, device mapping and cast; safetensors output is checked by a
reader written here from the format's specification; killing the export at any stage leaves the destination
absent (or as it was) or complete, and the source unchanged."""

import hashlib
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
import zipfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from common import CkptTestCase, flatten, workfile  # noqa: E402

import h5py  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.serialization  # noqa: E402

REAL = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "..",
                                     "shared", "fixtures", "real"))
if not os.path.isdir(REAL):
    REAL = "/work/shared/fixtures/real"


def save_with_tags(obj, path, tag_of):
    original = torch.serialization.location_tag
    try:
        torch.serialization.location_tag = tag_of
        torch.save(obj, path)
    finally:
        torch.serialization.location_tag = original


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ---- an independent safetensors reader, from the specification (other-formats.md §2) ----------------------

ST_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": "bf16", "I64": np.int64,
             "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}


def read_safetensors(path):
    """{name: torch tensor}, metadata; checks the layout rules the format requires."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n].decode("utf-8"))
    meta = header.pop("__metadata__", None)
    buf = data[8 + n:]
    spans = sorted(tuple(v["data_offsets"]) for v in header.values())
    pos = 0
    for b, e in spans:
        assert b == pos, "hole or overlap at %d" % b
        pos = e
    assert pos == len(buf), "buffer not fully covered"
    out = {}
    for name, v in header.items():
        b, e = v["data_offsets"]
        raw = buf[b:e]
        kind = ST_DTYPES[v["dtype"]]
        if kind == "bf16":
            u = np.frombuffer(raw, dtype=np.uint16).astype(np.uint32) << 16
            arr = torch.from_numpy(u.view(np.float32).copy()).to(torch.bfloat16)
        else:
            arr = torch.from_numpy(np.frombuffer(raw, dtype=kind).copy())
        out[name] = arr.reshape(v["shape"])
    return out, meta


def write_safetensors(path, tensors, metadata=None):
    """Writes a safetensors file byte by byte as the specification says (float32 / int64 only)."""
    header, blobs, pos = {}, [], 0
    if metadata:
        header["__metadata__"] = metadata
    for name, t in tensors.items():
        raw = t.contiguous().numpy().tobytes()
        header[name] = {"dtype": {torch.float32: "F32", torch.int64: "I64"}[t.dtype], "shape": list(t.shape),
                        "data_offsets": [pos, pos + len(raw)]}
        blobs.append(raw)
        pos += len(raw)
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Embedding(11, 8)
        self.enc = torch.nn.Linear(8, 16)
        self.norm = torch.nn.BatchNorm1d(16)
        self.head = torch.nn.Linear(16, 11, bias=False)
        self.head.weight = torch.nn.Parameter(torch.randn(11, 16))


def trained():
    """A model, an Adam optimizer and a scheduler after two steps, and an EMA copy."""
    torch.manual_seed(5)
    net = Net()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.StepLR(opt, 1)
    for _ in range(2):
        x = torch.randint(0, 11, (4,))
        loss = net.head(net.norm(net.enc(net.emb(x)))).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    ema = {k: v.detach().clone() * 0.5 for k, v in net.state_dict().items()}
    return net, opt, sched, ema


class ExportTest(CkptTestCase):

    def export(self, src, dst, *options, expect_rc=0, env=None):
        proc = self.run_ckpt("export", src, "-o", dst, *options) if env is None else self._run_env(
            ["export", src, "-o", dst] + list(options), env)
        if expect_rc is not None:
            self.assertEqual(proc.returncode, expect_rc, "ckpt export %s: %s"
                             % (" ".join(map(str, options)), proc.stderr.decode(errors="replace")))
        return proc

    def _run_env(self, args, env):
        e = dict(os.environ)
        e.update(env)
        return subprocess.run([common.CKPT] + [str(a) for a in args], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, env=e, timeout=common.RUN_TIMEOUT, cwd=common.WORKDIR)

    def assert_same(self, got, expected):
        self.assertEqual(list(got.keys()), list(expected.keys()))
        for k, v in expected.items():
            with self.subTest(tensor=k):
                self.assertEqual(got[k].dtype, v.dtype)
                self.assertEqual(got[k].shape, v.shape)
                self.assertTrue(torch.equal(got[k], v) or
                                (v.is_floating_point() and torch.equal(got[k].isnan(), v.isnan()) and
                                 torch.equal(got[k].nan_to_num(0), v.nan_to_num(0))), "values differ")

    # ---- devices -------------------------------------------------------------------------------------------

    def test_cuda_storages_remapped_to_cpu_load_without_map_location(self):
        torch.manual_seed(1)
        w = torch.randn(6, 4)
        sd = {"weight": w, "weight_t": w.t(), "bias": torch.randn(4), "steps": torch.tensor(7),
              "half": torch.randn(3, 3).half()}
        src, dst = workfile("cuda0.pt"), workfile("cuda0_cpu.pt")
        save_with_tags(sd, src, lambda s: "cuda:0")
        with zipfile.ZipFile(src) as z:
            self.assertIn(b"cuda:0", z.read(next(n for n in z.namelist() if n.endswith("data.pkl"))))
        if not torch.cuda.is_available():
            with self.assertRaisesRegex(Exception, "CUDA"):
                torch.load(src, weights_only=True)
        before = sha256(src)
        self.export(src, dst, "--map-location", "cuda:0=cpu")
        got = torch.load(dst, weights_only=True)
        self.assert_same(got, sd)
        self.assertEqual(got["weight"].data_ptr(), got["weight_t"].data_ptr(), "a view is no longer a view")
        self.assertEqual(got["weight_t"].stride(), (1, 4))
        self.assertEqual(sha256(src), before)
        with zipfile.ZipFile(dst) as z, open(dst, "rb") as f:  # CRCs as a zip tool checks them, aligned data
            self.assertIsNone(z.testzip())
            for info in z.infolist():
                if "/data/" in info.filename:
                    f.seek(info.header_offset + 26)
                    name_len, extra_len = struct.unpack("<HH", f.read(4))
                    self.assertEqual((info.header_offset + 30 + name_len + extra_len) % 64, 0, info.filename)
        ls = self.ckpt_json("ls", dst)
        self.assertEqual({e["device"] for e in ls["tensors"]}, {"cpu"})

    def test_device_map_star_and_chain(self):
        sd = {"a": torch.ones(2), "b": torch.zeros(3)}
        src, dst = workfile("cuda1.pt"), workfile("cuda1_to0.pt")
        save_with_tags(sd, src, lambda s: "cuda:1")
        self.export(src, dst, "--map-location", "cuda:1=cuda:0")
        ls = self.ckpt_json("ls", dst)
        self.assertEqual([e["device"] for e in ls["tensors"]], ["cuda:0", "cuda:0"])
        self.export(src, workfile("cuda1_star.pt"), "--map-location", "*=cpu")
        self.assert_same(torch.load(workfile("cuda1_star.pt"), weights_only=True), sd)

    # ---- training checkpoints ----------------------------------------------------------------------------

    def check_weights_only(self, obj, stem):
        src, dst = workfile(stem + ".pt"), workfile(stem + "_weights.pt")
        torch.save(obj, src)
        proc = self.export(src, dst, "--preset", "weights-only")
        self.assertIn(b"optimizer, scheduler or EMA tensors left out", proc.stderr)
        sd = torch.load(dst, weights_only=True)
        fresh = Net()
        fresh.load_state_dict(sd, strict=True)
        net_sd = self.net.state_dict()
        for k, v in fresh.state_dict().items():
            self.assertTrue(torch.equal(v, net_sd[k]), k)
        self.assertEqual(list(sd.keys()), list(net_sd.keys()))

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.net, cls.opt, cls.sched, cls.ema = trained()

    def test_weights_only_plain_training_checkpoint(self):
        self.check_weights_only({"model": self.net.state_dict(), "optimizer": self.opt.state_dict(),
                                 "scheduler": self.sched.state_dict(), "ema": self.ema, "epoch": 2,
                                 "scaler": {"scale": torch.tensor(65536.0)}}, "train_plain")

    def test_weights_only_lightning_layout(self):
        self.check_weights_only({"epoch": 2, "global_step": 4, "pytorch-lightning_version": "2.1.0",
                                 "state_dict": self.net.state_dict(),
                                 "optimizer_states": [self.opt.state_dict()],
                                 "lr_schedulers": [self.sched.state_dict()],
                                 "callbacks": {"EMA": {"ema_weights": self.ema}},
                                 "loops": {"fit_loop": {"state_dict": {"step": torch.tensor(4)}}}},
                                "train_lightning")

    def test_weights_only_timm_layout(self):
        self.check_weights_only({"epoch": 2, "arch": "net", "state_dict": self.net.state_dict(),
                                 "state_dict_ema": self.ema, "optimizer": self.opt.state_dict(),
                                 "version": 2}, "train_timm")

    def test_weights_only_ddp_state_dict(self):
        sd = {"module." + k: v for k, v in self.net.state_dict().items()}
        src, dst = workfile("ddp.pt"), workfile("ddp_weights.pt")
        torch.save(sd, src)
        self.export(src, dst, "--preset", "weights-only")
        Net().load_state_dict(torch.load(dst, weights_only=True), strict=True)

    # ---- selection, renaming, casting ---------------------------------------------------------------------

    def special_values(self, dtype):
        torch.manual_seed(9)
        v = torch.randn(64, dtype=torch.float64) * 1000
        extra = torch.tensor([0.0, -0.0, float("inf"), float("-inf"), float("nan"), 1e-40, -3e-39, 65504.0,
                              65520.0, 1e30, 1.00390625, 1.01171875, 2 ** -24, 2 ** -25, 3.4e38],
                             dtype=torch.float64)
        return torch.cat([v, extra]).to(dtype)

    def test_filters_strip_prefix_and_bfloat16_cast_match_pytorch(self):
        sd = {"module." + k: v for k, v in self.net.state_dict().items()}
        sd["module.extra.f64"] = self.special_values(torch.float64)
        sd["module.extra.f32"] = self.special_values(torch.float32)
        sd["module.extra.f16"] = self.special_values(torch.float32).half()
        src = workfile("ddp_full.pt")
        torch.save(sd, src)
        for dtype, name in ((torch.bfloat16, "bfloat16"), (torch.float16, "float16")):
            dst = workfile("ddp_%s.pt" % name)
            self.export(src, dst, "--strip-prefix", "module.", "--exclude", "*.num_batches_tracked",
                        "--include", "re:^module\\.(enc|norm|extra)\\.", "--dtype", name,
                        "--keep-dtype", "norm.*")
            expected = {}
            for k, v in sd.items():
                if k.endswith(".num_batches_tracked") or not k.split(".")[1] in ("enc", "norm", "extra"):
                    continue
                k = k[len("module."):]
                if v.is_floating_point() and not k.startswith("norm."):
                    v = v.to(dtype)
                expected[k] = v
            self.assert_same(torch.load(dst, weights_only=True), expected)

    def test_add_prefix_and_regex_rename(self):
        sd = self.net.state_dict()
        src, dst = workfile("plain_sd.pt"), workfile("renamed.pt")
        torch.save(sd, src)
        self.export(src, dst, "--rename", "^enc\\.(weight|bias)$=encoder.proj.$1", "--add-prefix", "backbone.")
        expected = {"backbone." + (("encoder.proj." + k[4:]) if k.startswith("enc.") else k): v for k, v in sd.items()}
        self.assert_same(torch.load(dst, weights_only=True), expected)
        # --dry-run lists the same keys with their shapes and dtypes, and writes nothing
        dry = workfile("renamed_dry.pt")
        proc = self.export(src, dry, "--rename", "^enc\\.(weight|bias)$=encoder.proj.$1", "--add-prefix",
                           "backbone.", "--dry-run")
        rows = [line.split("\t") for line in proc.stdout.decode().splitlines()[:-1]]
        self.assertEqual([r[0] for r in rows], list(expected))
        for r in rows:
            self.assertEqual(r[1], str(list(expected[r[0]].shape)))
            self.assertEqual(r[2], common.dtype_name(expected[r[0]].dtype))
        self.assertFalse(os.path.exists(dry))

    def test_tied_weights_stay_tied(self):
        torch.manual_seed(3)
        emb = torch.randn(10, 4)
        sd = {"embed.weight": emb, "lm_head.weight": emb, "rows": emb[2:5], "other": torch.randn(3)}
        src, dst = workfile("tied.pt"), workfile("tied_out.pt")
        torch.save(sd, src)
        self.export(src, dst, "--dtype", "float16")
        got = torch.load(dst, weights_only=True)
        self.assertEqual(got["embed.weight"].data_ptr(), got["lm_head.weight"].data_ptr())
        self.assertEqual(got["rows"].storage().data_ptr(), got["embed.weight"].storage().data_ptr())
        self.assertEqual(got["rows"].storage_offset(), 8)
        self.assert_same(got, {k: v.half() for k, v in sd.items()})

    # ---- safetensors ------------------------------------------------------------------------------------------

    def test_safetensors_export_read_back_by_both_readers(self):
        torch.manual_seed(4)
        w = torch.randn(5, 6)
        sd = {"emb": w, "tied": w, "t_view": w.t(), "part": w[1:3], "ids": torch.arange(7),
              "scale": torch.tensor(2.5, dtype=torch.float64), "norm.weight": torch.ones(6)}
        src, dst = workfile("for_st.pt"), workfile("out.safetensors")
        torch.save(sd, src)
        proc = self.export(src, dst, "--dtype", "bfloat16", "--keep-dtype", "norm.*")
        err = proc.stderr.decode()
        self.assertIn("'tied' is the same data as 'emb' (tied): written once", err)
        self.assertIn("'t_view' is a non-contiguous view", err)
        self.assertIn("'part' shares bytes with 'emb'", err)
        got, _ = read_safetensors(dst)
        expected = {k: (v.contiguous().to(torch.bfloat16) if v.is_floating_point() and k != "norm.weight"
                        else v.contiguous()) for k, v in sd.items() if k != "tied"}
        self.assertEqual(sorted(got), sorted(expected))
        for k, v in expected.items():
            self.assertEqual(got[k].dtype, v.dtype, k)
            self.assertTrue(torch.equal(got[k], v), k)
        ls = self.ckpt_json("ls", dst)
        self.assertEqual(sorted(e["name"] for e in ls["tensors"]), sorted(expected))
        for e in ls["tensors"]:
            self.assertEqual(e["shape"], list(expected[e["name"]].shape))
            self.assertEqual(e["dtype"], common.dtype_name(expected[e["name"]].dtype))
        st = self.ckpt_json("stats", dst, "t_view")
        self.assertEqual(st["tensors"][0]["max"], float(expected["t_view"].float().max()))

    def test_safetensors_metadata_kept_and_to_torch(self):
        torch.manual_seed(6)
        tensors = {"a.weight": torch.randn(3, 2), "a.bias": torch.randn(3), "steps": torch.arange(4)}
        src = workfile("meta.safetensors")
        write_safetensors(src, tensors, {"format": "pt", "note": "made by the test"})
        dst = workfile("meta_out.safetensors")
        self.export(src, dst, "--exclude", "steps")
        got, meta = read_safetensors(dst)
        self.assertEqual(meta, {"format": "pt", "note": "made by the test"})
        self.assert_same({k: got[k] for k in tensors if k in got}, {k: tensors[k] for k in ("a.weight", "a.bias")})
        pt = workfile("meta_out.pt")
        self.export(src, pt)
        self.assert_same(torch.load(pt, weights_only=True), tensors)

    def test_keras_to_safetensors_matches_h5py(self):
        src = os.path.join(REAL, "keras", "nested_container_keras3.keras")
        if not os.path.exists(src):
            self.skipTest("fixtures folder %s absent" % REAL)
        dst = workfile("keras.safetensors")
        self.export(src, dst)
        got, _ = read_safetensors(dst)
        with zipfile.ZipFile(src) as z:
            h5path = workfile("keras_model.weights.h5")
            with open(h5path, "wb") as f:
                f.write(z.read("model.weights.h5"))
        ref = {}
        with h5py.File(h5path, "r") as h:
            def visit(name, obj):
                if isinstance(obj, h5py.Dataset):
                    ref[name.replace("/", ".")] = torch.from_numpy(np.array(obj))
            h.visititems(visit)
        self.assertEqual(sorted(got), sorted(ref))
        for k, v in ref.items():
            self.assertTrue(torch.equal(got[k], v), k)

    def test_tensorflow_to_safetensors_and_torch(self):
        src = os.path.join(REAL, "tf", "lso_ckpt_tf2.2")
        if not os.path.exists(src):
            self.skipTest("fixtures folder %s absent" % REAL)
        dst = workfile("tf.safetensors")
        self.export(src, dst)
        got, _ = read_safetensors(dst)
        ls = self.ckpt_json("ls", src)
        self.assertEqual(sorted(got), sorted(e["name"] for e in ls["tensors"]))
        # the same values as our reader finds in the source's data shards
        stats = {t["name"]: t for t in self.ckpt_json("stats", src)["tensors"]}
        for k, v in got.items():
            self.assertEqual(float(v.double().sum()), stats[k]["sum"] if "sum" in stats[k] else
                             stats[k]["mean"] * v.numel(), k)
        pt = workfile("tf.pt")
        self.export(src, pt)
        self.assert_same(torch.load(pt, weights_only=True), got)

    def test_numpy_big_endian_and_fortran_order(self):
        src = workfile("arrays.npz")
        arrays = {"be": np.arange(-3, 9, dtype=">f4").reshape(3, 4) / 7, "ints": np.arange(5, dtype="<i8"),
                  "fortran": np.asfortranarray(np.linspace(-2, 2, 12, dtype="<f8").reshape(3, 4))}
        np.savez(src, **arrays)
        st = workfile("arrays.safetensors")
        self.export(src, st)
        got, _ = read_safetensors(st)
        for k, v in arrays.items():
            self.assertTrue(torch.equal(got[k], torch.from_numpy(np.ascontiguousarray(v.astype(v.dtype.newbyteorder("="))))), k)
        pt = workfile("arrays_bf16.pt")
        self.export(src, pt, "--dtype", "bfloat16")
        expected = {k: torch.from_numpy(np.ascontiguousarray(v.astype(v.dtype.newbyteorder("=")))) for k, v in arrays.items()}
        expected = {k: (v.to(torch.bfloat16) if v.is_floating_point() else v) for k, v in expected.items()}
        got = torch.load(pt, weights_only=True)
        for k, v in expected.items():
            self.assertEqual(got[k].dtype, v.dtype, k)
            self.assertTrue(torch.equal(got[k].contiguous(), v), k)

    def test_legacy_torch_source(self):
        torch.manual_seed(12)
        w = torch.randn(4, 5)
        sd = {"w": w, "w_rows": w[1:3], "n": torch.arange(3)}
        src, dst = workfile("legacy_src.pt"), workfile("legacy_out.pt")
        torch.save(sd, src, _use_new_zipfile_serialization=False)
        self.export(src, dst)
        got = torch.load(dst, weights_only=True)
        self.assert_same(got, sd)
        self.assertEqual(got["w_rows"].storage().data_ptr(), got["w"].storage().data_ptr())

    # ---- interruption --------------------------------------------------------------------------------------

    def test_kill_at_every_stage(self):
        torch.manual_seed(8)
        sd = {"layer%d" % i: torch.randn(256, 1024) for i in range(8)}
        src = workfile("kill_src.pt")
        torch.save(sd, src)
        before = sha256(src)
        outdir = workfile("kill")
        shutil.rmtree(outdir, ignore_errors=True)
        os.makedirs(outdir)
        for stage in ("created", "data", "written", "verified", "renamed"):
            for fmt in ("torch", "safetensors"):
                with self.subTest(stage=stage, format=fmt):
                    dst = os.path.join(outdir, "out_%s_%s" % (stage, fmt))
                    with open(dst, "wb") as f:
                        f.write(b"previous contents")
                    env = dict(os.environ, CKPT_EXPORT_TEST_PAUSE=stage)
                    proc = subprocess.Popen([common.CKPT, "export", src, "-o", dst, "--format", fmt,
                                             "--dtype", "float16"], stderr=subprocess.PIPE,
                                            stdout=subprocess.DEVNULL, env=env)
                    lines = []
                    while True:
                        line = proc.stderr.readline()
                        lines.append(line)
                        if not line or b"paused at" in line:
                            break
                    self.assertIn(b"ckpt export: paused at " + stage.encode() + b"\n", lines)
                    proc.send_signal(signal.SIGKILL)
                    proc.wait()
                    proc.stderr.close()
                    temps = [n for n in os.listdir(outdir) if ".ckpt-export-" in n]
                    self.assertEqual(len(temps), 0 if stage == "renamed" else 1, temps)
                    if stage == "renamed":
                        got = (torch.load(dst, weights_only=True) if fmt == "torch" else read_safetensors(dst)[0])
                        self.assert_same(got, {k: v.half() for k, v in sd.items()})
                    else:
                        with open(dst, "rb") as f:
                            self.assertEqual(f.read(), b"previous contents")
                    self.assertEqual(sha256(src), before)
                    # the next export into that folder removes the stale temporary file
                    again = self.export(src, os.path.join(outdir, "next.pt"), "--include", "layer0")
                    if stage != "renamed":
                        self.assertIn(b"removed 1 temporary file(s) of an interrupted export", again.stderr)
                    self.assertEqual([n for n in os.listdir(outdir) if ".ckpt-export-" in n], [])
        self.assertEqual(sha256(src), before)

    # ---- errors -----------------------------------------------------------------------------------------------

    def test_errors(self):
        src = workfile("err.pt")
        torch.save({"a.x": torch.ones(2), "x": torch.zeros(2), "b": torch.ones(1)}, src)
        before = sha256(src)
        proc = self.export(src, src, expect_rc=2)
        self.assertEqual(proc.stderr.decode(), "ckpt: %s: the destination is the source file; export never "
                                               "writes to its source\n" % src)
        link = workfile("err_link.pt")
        if os.path.exists(link):
            os.unlink(link)
        os.link(src, link)
        proc = self.export(src, link, expect_rc=2)
        self.assertEqual(proc.stderr.decode(), "ckpt: %s: the destination is the source file (the same file "
                                               "under another name); export never writes to its source\n" % link)
        proc = self.export(src, workfile("err_out.pt"), "--strip-prefix", "a.", expect_rc=2)
        self.assertEqual(proc.stderr.decode(),
                         "ckpt: %s: 'a.x' and 'x' would both be written as 'x'\n" % src)
        self.assertFalse(os.path.exists(workfile("err_out.pt")))
        proc = self.export(src, workfile("err_out.pt"), "--dtype", "float12", expect_rc=2)
        self.assertEqual(proc.stderr.decode(), "ckpt: unknown dtype 'float12' (known: float32, float16, "
                                               "bfloat16, float64) (ckpt --help shows the usage)\n")
        proc = self.export(src, workfile("err_out.pt"), "--include", "nothing*", expect_rc=2)
        self.assertEqual(proc.stderr.decode(), "ckpt: %s: no tensor is selected\n" % src)
        proc = self.export(src, workfile("no_such_dir/out.pt"), expect_rc=2)
        self.assertIn("the destination folder '%s' does not exist" % workfile("no_such_dir"), proc.stderr.decode())
        self.assertEqual(sha256(src), before)

    def test_names_and_text_that_are_not_utf8(self):
        """GGUF names and strings are raw bytes; PyTorch's str and safetensors' JSON need UTF-8, so such a name
        or kept string is refused before anything is written, and a --rename makes a file torch.load reads."""
        from test_gguf import STRING, build_gguf
        bad = b"bad\xffname"
        with self.assertRaises(UnicodeDecodeError):
            bad.decode("utf-8")
        src = workfile("not_utf8.gguf")
        with open(src, "wb") as f:
            f.write(build_gguf([("general.note", STRING, b"caf\xe9")],
                               [(bad, [2], "f32", struct.pack("<2f", 1, 2)),
                                ("good", [2], "f32", struct.pack("<2f", 3, 4))]))
        shown = bad.decode("utf-8", errors="replace")
        for dst in ("not_utf8_out.pt", "not_utf8_out.safetensors"):
            out = workfile(dst)
            if os.path.exists(out):
                os.unlink(out)
            proc = self.export(src, out, expect_rc=2)  # stderr: a note that values were left out, the error
            self.assertIn("\nckpt: %s: '%s' is not valid UTF-8; rename it (--rename) or exclude it\n" % (src, shown),
                          proc.stderr.decode(errors="replace"))
            self.assertFalse(os.path.exists(out))
            proc = self.export(src, out, "--rename", "bad.name=bad_name", "--keep-values", expect_rc=2)
            self.assertEqual(proc.stderr.decode(errors="replace"),
                             "ckpt: %s: 'general.note' is text that is not valid UTF-8; exclude it\n" % src)
            self.assertFalse(os.path.exists(out))
        # A safetensors header's __metadata__ holds every kept value as text: a list of raw bytes is refused,
        # and a long list of valid text is cut at a character boundary, so the header stays valid JSON.
        from test_gguf import ARRAY
        good = [("w", [2], "f32", struct.pack("<2f", 5, 6))]
        meta_src = workfile("not_utf8_meta.gguf")
        with open(meta_src, "wb") as f:
            f.write(build_gguf([("__metadata__.x", ARRAY, (STRING, [b"\xff\xfe"]))], good))
        out = workfile("not_utf8_meta.safetensors")
        if os.path.exists(out):  # from an earlier run of this test
            os.unlink(out)
        proc = self.export(meta_src, out, expect_rc=2)
        self.assertEqual(proc.stderr.decode(errors="replace"),
                         "ckpt: %s: '__metadata__.x' is text that is not valid UTF-8; exclude it\n" % meta_src)
        self.assertFalse(os.path.exists(out))
        with open(meta_src, "wb") as f:
            f.write(build_gguf([("__metadata__.x", ARRAY, (STRING, ["a" + "\u00e9" * 600_000]))], good))
        self.export(meta_src, out)
        tensors, meta = read_safetensors(out)  # decodes the header as UTF-8 JSON
        self.assertTrue(torch.equal(tensors["w"], torch.tensor([5.0, 6.0])))
        self.assertTrue(meta["x"].startswith("['a\u00e9\u00e9"))
        self.assertTrue(meta["x"].endswith("\u00e9..."))

        out = workfile("not_utf8_out.pt")
        self.export(src, out, "--rename", "bad.name=bad_name")
        sd = torch.load(out)
        self.assertEqual(list(sd), ["bad_name", "good"])
        self.assertTrue(torch.equal(sd["bad_name"], torch.tensor([1.0, 2.0])))
        self.assertTrue(torch.equal(sd["good"], torch.tensor([3.0, 4.0])))

    def test_not_enough_space(self):
        """A 256 KiB tmpfs in a private mount namespace (unprivileged user namespaces) for the destination."""
        src = workfile("space_src.pt")
        torch.save({"w": torch.zeros(1024, 1024)}, src)
        small = workfile("small_fs")
        os.makedirs(small, exist_ok=True)
        probe = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=256k tmpfs \"$0\"", small],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        if probe.returncode != 0:
            self.skipTest("cannot mount a small tmpfs here: %s" % probe.stderr.decode().strip())
        dst = os.path.join(small, "out.pt")
        proc = subprocess.run(["unshare", "-rm", "sh", "-c",
                               'mount -t tmpfs -o size=256k tmpfs "$0" && "$1" export "$2" -o "$3"; echo "rc=$?"; '
                               'ls -A "$0"', small, common.CKPT, src, dst],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=common.RUN_TIMEOUT)
        out = proc.stdout.decode().split()
        self.assertEqual(out, ["rc=2"], "exit status and files left in the small file system")
        self.assertRegex(proc.stderr.decode(),
                         r"^ckpt: %s: not enough free space in '%s': the export needs \d+ bytes, 262144 are "
                         r"available\n$" % (dst, small))


if __name__ == "__main__":
    common.main()
