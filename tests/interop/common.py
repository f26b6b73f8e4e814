"""Shared helpers for the interoperability tests.

Every test module is runnable on its own:

    /usr/bin/python3 tests/interop/test_x.py --ckpt PATH/TO/ckpt --workdir DIR [unittest args]

The modules generate their fixtures with the real PyTorch installed under /usr/bin/python3, run the `ckpt`
binary on them and compare its JSON with what PyTorch reports for the same file (see docs/cli.md).
"""

import argparse
import json
import os
import pickle
import struct
import subprocess
import sys
import unittest
import zipfile

import numpy as np
import torch

CKPT = None      # path of the ckpt binary
WORKDIR = None   # folder for this module's fixtures

DEFAULT_BINS = 32
RUN_TIMEOUT = 60          # seconds for an ordinary ckpt run
MALFORMED_TIMEOUT = 120   # seconds for a run on a malformed file: a hang detector, generous for a busy machine under ASan


# --------------------------------------------------------------------------------------------------------------
# Entry point


def main():
    """Parse --ckpt / --workdir, pass everything else to unittest."""
    global CKPT, WORKDIR
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--ckpt", required=True)
    parser.add_argument("--workdir", required=True)
    args, rest = parser.parse_known_args()
    CKPT = os.path.abspath(args.ckpt)
    WORKDIR = os.path.abspath(args.workdir)
    os.makedirs(WORKDIR, exist_ok=True)
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    unittest.main(module="__main__", argv=[sys.argv[0]] + rest)


def workfile(name):
    return os.path.join(WORKDIR, name)


def save_both_formats(obj, stem):
    """torch.save `obj` as a zip file and in the legacy format; returns ({format: path}, {format: loaded})."""
    paths = {"zip": workfile(stem + ".pt"), "legacy": workfile(stem + "_legacy.pt")}
    torch.save(obj, paths["zip"])
    torch.save(obj, paths["legacy"], _use_new_zipfile_serialization=False)
    return paths, {k: torch.load(p) for k, p in paths.items()}


class CkptTestCase(unittest.TestCase):
    """Base class: checks that the binary exists and offers comparison helpers."""

    maxDiff = 4000

    @classmethod
    def setUpClass(cls):
        if CKPT is None:
            raise unittest.SkipTest("run through common.main() with --ckpt/--workdir")
        if not (os.path.isfile(CKPT) and os.access(CKPT, os.X_OK)):
            raise AssertionError("ckpt binary not found or not executable: %s" % CKPT)

    # ---- running ckpt ----------------------------------------------------------------------------------------

    def run_ckpt(self, *args, timeout=RUN_TIMEOUT, cwd=None):
        cmd = [CKPT] + [str(a) for a in args]
        try:
            proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout,
                                  cwd=cwd or WORKDIR)
        except subprocess.TimeoutExpired:
            self.fail("ckpt hung (> %ss): %s" % (timeout, " ".join(cmd)))
        self.assertGreaterEqual(proc.returncode, 0,
                                "ckpt crashed with signal %d: %s\nstderr: %s"
                                % (-proc.returncode, " ".join(cmd), proc.stderr.decode(errors="replace")[-2000:]))
        return proc

    def ckpt_json(self, *args, expect_rc=0, timeout=RUN_TIMEOUT, cwd=None):
        """Run ckpt with --json appended, check the exit status and return the parsed JSON."""
        args = list(args)
        if "--json" not in args:
            args.append("--json")
        proc = self.run_ckpt(*args, timeout=timeout, cwd=cwd)
        if expect_rc is not None:
            self.assertEqual(proc.returncode, expect_rc,
                             "ckpt %s: exit %d, stderr: %s" % (" ".join(map(str, args)), proc.returncode,
                                                               proc.stderr.decode(errors="replace")[-2000:]))
        return parse_json_strict(self, proc.stdout, args)

    def assert_error_output(self, proc, path, what=""):
        """Exit status 2, at least one stderr line, every line of the form 'ckpt: FILE...'."""
        err = proc.stderr.decode("utf-8", errors="replace")
        self.assertEqual(proc.returncode, 2, "%s: expected exit 2, got %d; stderr: %r"
                         % (what or path, proc.returncode, err[-500:]))
        lines = [ln for ln in err.split("\n") if ln.strip()]
        self.assertTrue(lines, "%s: no message on stderr" % (what or path))
        for ln in lines:
            self.assertTrue(ln.startswith("ckpt: "), "%s: stderr line does not start with 'ckpt: ': %r"
                            % (what or path, ln))
            if path is not None:
                self.assertIn(path, ln, "%s: stderr line does not name the file: %r" % (what or path, ln))

    # ---- ls comparison ---------------------------------------------------------------------------------------

    def compare_ls(self, ls, named, path=None, ordered=True, requires_grad_nullable=False, devices=None,
                   check_bytes=True, allow_extra=None):
        """Compare `ckpt ls --json` output with [(name, tensor)] as PyTorch loaded them.

        devices: optional {name: device string} overriding the tensor's own device (for remapped loads).
        allow_extra: optional predicate(name) -> bool for extra ckpt tensors that are tolerated.
        """
        entries = ls["tensors"]
        got_names = [e["name"] for e in entries]
        exp_names = [n for n, _ in named]
        if allow_extra is not None:
            got_names = [n for n in got_names if n in set(exp_names) or not allow_extra(n)]
        if ordered:
            self.assertEqual(got_names, exp_names, "tensor names / order differ")
        else:
            self.assertEqual(sorted(got_names), sorted(exp_names), "tensor names differ")
        self.assertEqual(len(set(got_names)), len(got_names), "duplicate tensor names")
        by_name = {e["name"]: e for e in entries}
        data = None
        if check_bytes and path is not None:
            with open(path, "rb") as f:
                data = f.read() if os.path.getsize(path) < (1 << 30) else None
        for name, t in named:
            e = by_name[name]
            with self.subTest(tensor=name):
                self.assertNotIn("error", e, "unexpected error on %s: %s" % (name, e.get("error")))
                self.assertEqual(e["dtype"], dtype_name(t.dtype))
                self.assertEqual(e["shape"], list(t.shape))
                self.assertEqual(e["strides"], list(t.stride()))
                self.assertEqual(e["storage_offset"], t.storage_offset())
                self.assertEqual(e["nbytes"], t.numel() * t.element_size())
                dev = devices.get(name, str(t.device)) if devices else str(t.device)
                self.assertEqual(e["device"], dev)
                if requires_grad_nullable and e["requires_grad"] is None:
                    pass
                else:
                    self.assertIs(e["requires_grad"], bool(t.requires_grad))
                self.assertIsInstance(e["storage_group"], int)
                self.assertIn("storage_key", e)
                if data is not None and e.get("data_offset") is not None and t.numel() > 0:
                    self.check_bytes_at(data, e["data_offset"], t, name)
        # storage sharing: same torch storage <=> same storage_group
        exp_part = partition([(n, storage_id(t)) for n, t in named])
        got_part = partition([(n, by_name[n]["storage_group"]) for n, _ in named])
        self.assertEqual(got_part, exp_part, "storage groups differ from PyTorch's storage sharing")

    def check_bytes_at(self, data, off, t, name):
        """The bytes at data_offset are those of the element at storage_offset (all of them if contiguous)."""
        raw = contiguous_bytes(t)
        if t.is_contiguous() and not t.is_quantized:
            n = len(raw)
        else:
            n = t.element_size()   # first element only
        self.assertLessEqual(off + n, len(data), "%s: data_offset %d past end of file" % (name, off))
        self.assertEqual(data[off:off + n], raw[:n], "%s: bytes at data_offset %d differ from the tensor's"
                         % (name, off))

    # ---- stats comparison ------------------------------------------------------------------------------------

    def compare_stats(self, got, t, name, bins=DEFAULT_BINS):
        """Compare one entry of `ckpt stats --json` with statistics computed from tensor t."""
        self.assertEqual(got["name"], name)
        self.assertEqual(got["dtype"], dtype_name(t.dtype))
        self.assertEqual(got["shape"], list(t.shape))
        candidates = value_candidates(t)
        failures = []
        for label, vals in candidates:
            ref = ref_stats(vals, bins)
            msg = stats_mismatch(got, ref, bins)
            if msg is None:
                return
            failures.append("%s reference: %s" % (label, msg))
        self.fail("%s: stats differ from PyTorch/NumPy: %s" % (name, "; ".join(failures)))


def parse_json_strict(tc, raw, args=()):
    def bad_constant(c):
        raise ValueError("non-standard JSON constant %s" % c)
    try:
        return json.loads(raw.decode("utf-8"), parse_constant=bad_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        tc.fail("ckpt %s: output is not valid JSON (%s): %r" % (" ".join(map(str, args)), exc, raw[:300]))


# --------------------------------------------------------------------------------------------------------------
# PyTorch-side reference


def dtype_name(dtype):
    return str(dtype).replace("torch.", "")


def storage_id(t):
    """Identity of the storage a tensor lives in (equal for views and tied weights)."""
    return t.storage()._storage._cdata


def storage_nbytes(t):
    return t.storage()._storage.nbytes()


def partition(pairs):
    groups = {}
    for name, key in pairs:
        groups.setdefault(key, set()).add(name)
    return sorted(sorted(g) for g in groups.values())


SCALARS = (type(None), bool, int, float, complex, str, bytes)


def flatten(obj, prefix=""):
    """[(name, tensor)] in pickle order, following the naming rules of docs/cli.md."""
    out = []
    _flatten(obj, prefix, out, None)
    return out


def flatten_values(obj, prefix=""):
    """[(name, type, value)] for the non-tensor leaves."""
    out = []
    _flatten(obj, prefix, None, out)
    return out


def _join(prefix, key):
    return "%s.%s" % (prefix, key) if prefix else str(key)


def _flatten(obj, prefix, tensors, values):
    if isinstance(obj, torch.Tensor):
        if tensors is not None:
            tensors.append((prefix, obj))
    elif isinstance(obj, dict):
        for k, v in obj.items():
            _flatten(v, _join(prefix, k), tensors, values)
    elif isinstance(obj, (list, tuple)):
        if obj and all(isinstance(x, SCALARS) for x in obj):
            if values is not None:
                values.append((prefix, "list", list(obj)))
            return
        for i, v in enumerate(obj):
            _flatten(v, _join(prefix, i), tensors, values)
    elif isinstance(obj, SCALARS):
        if values is not None:
            typ = {type(None): "none", bool: "bool", int: "int", float: "float", complex: "complex",
                   str: "str", bytes: "bytes"}[type(obj)]
            values.append((prefix, typ, obj))


def contiguous_bytes(t):
    """Raw little-endian bytes of t in row-major order, as torch stores a contiguous tensor."""
    if t.is_quantized:
        t = t.int_repr()
    t = t.detach().contiguous().reshape(-1)
    if t.dtype == torch.bool:
        t = t.view(torch.uint8)
    elif t.dtype in (torch.float16, torch.bfloat16):
        t = t.view(torch.int16)
    elif t.is_complex():
        t = torch.view_as_real(t).reshape(-1)
    return t.numpy().tobytes()


def value_candidates(t):
    """[(label, float64 numpy array)]: the values ckpt converts to double; more than one where the
    contract allows two roundings (quantized: double or float32 dequantize; complex: |z| in double or float)."""
    t = t.detach()
    if t.is_quantized:
        q = t.int_repr().to(torch.float64)
        if t.qscheme() in (torch.per_tensor_affine, torch.per_tensor_symmetric):
            exact = (q - t.q_zero_point()) * t.q_scale()
        else:
            axis = t.q_per_channel_axis()
            shape = [1] * t.dim()
            shape[axis] = t.shape[axis]
            scales = t.q_per_channel_scales().to(torch.float64).reshape(shape)
            zps = t.q_per_channel_zero_points().to(torch.float64).reshape(shape)
            exact = (q - zps) * scales
        return [("double dequantize", exact.reshape(-1).numpy()),
                ("torch.dequantize", t.dequantize().to(torch.float64).reshape(-1).numpy())]
    if t.is_complex():
        z = t.reshape(-1).numpy().astype(np.complex128)
        return [("|z| in double", np.abs(z)),
                ("torch.abs", t.abs().to(torch.float64).reshape(-1).numpy())]
    return [("double", t.to(torch.float64).reshape(-1).numpy())]


def ref_stats(vals, bins=DEFAULT_BINS):
    vals = np.asarray(vals, dtype=np.float64)
    finite = vals[np.isfinite(vals)]
    ref = {
        "count": int(vals.size),
        "zeros": int(np.count_nonzero(vals == 0)),
        "nan": int(np.count_nonzero(np.isnan(vals))),
        "inf": int(np.count_nonzero(np.isinf(vals))),
    }
    if finite.size:
        mn, mx = float(finite.min()), float(finite.max())
        ref.update(min=mn, max=mx, mean=float(np.mean(finite)))
        ref["std"] = float(np.std(finite, ddof=1)) if finite.size >= 2 else None
        counts, edges = np.histogram(finite, bins=bins, range=(mn, mx))
        ref["counts"] = [int(c) for c in counts]
        ref["edges"] = [float(e) for e in edges]
    else:
        ref.update(min=None, max=None, mean=None, std=None, counts=None, edges=None)
    return ref


def _close(a, b, rel, scale):
    if a is None or b is None:
        return a is None and b is None
    if not isinstance(a, (int, float)) or isinstance(a, bool):
        return False
    return abs(a - b) <= rel * abs(b) + 1e-12 * scale


def stats_mismatch(got, ref, bins):
    """None when `got` (one ckpt stats entry) matches the reference, else a description."""
    errs = []
    for k in ("count", "zeros", "nan", "inf"):
        if got.get(k) != ref[k]:
            errs.append("%s: expected %r, got %r" % (k, ref[k], got.get(k)))
    scale = max(abs(ref["min"] or 0.0), abs(ref["max"] or 0.0), 1e-300)
    for k, rel in (("min", 1e-9), ("max", 1e-9), ("mean", 1e-6), ("std", 1e-6)):
        if not _close(got.get(k), ref[k], rel, scale):
            errs.append("%s: expected %r, got %r" % (k, ref[k], got.get(k)))
    if ref["counts"] is not None:
        h = got.get("histogram") or {}
        counts, edges = h.get("counts"), h.get("edges")
        if counts != ref["counts"]:
            errs.append("histogram counts: expected %r, got %r" % (ref["counts"], counts))
        if not isinstance(edges, list) or len(edges) != bins + 1:
            errs.append("histogram edges: expected %d values, got %r" % (bins + 1, edges))
        else:
            escale = max(abs(ref["edges"][0]), abs(ref["edges"][-1]), 1e-300)
            for i, (ge, re_) in enumerate(zip(edges, ref["edges"])):
                if not _close(ge, re_, 1e-9, escale):
                    errs.append("histogram edge %d: expected %r, got %r" % (i, re_, ge))
                    break
    return "; ".join(errs) if errs else None


# --------------------------------------------------------------------------------------------------------------
# Hand-built pickles and containers


class PickleWriter:
    """Emits protocol-2 pickle opcodes by hand (no Python objects are pickled)."""

    def __init__(self, proto=2):
        self.b = bytearray(b"\x80" + bytes([proto]))

    def raw(self, data):
        self.b += data
        return self

    def mark(self):
        return self.raw(b"(")

    def glob(self, module, name):
        return self.raw(b"c" + module.encode() + b"\n" + name.encode() + b"\n")

    def stack_global(self, module, name):
        return self.str(module).str(name).raw(b"\x93")

    def str(self, s):
        d = s.encode("utf-8")
        return self.raw(b"X" + struct.pack("<I", len(d)) + d)

    def int(self, v):
        if 0 <= v < 256:
            return self.raw(b"K" + bytes([v]))
        if -(1 << 31) <= v < (1 << 31):
            return self.raw(b"J" + struct.pack("<i", v))
        n = (v.bit_length() + 8) // 8
        if n < 256:
            return self.raw(b"\x8a" + bytes([n]) + v.to_bytes(n, "little", signed=True))    # LONG1
        return self.raw(b"\x8b" + struct.pack("<i", n) + v.to_bytes(n, "little", signed=True))  # LONG4

    def float(self, v):
        return self.raw(b"G" + struct.pack(">d", v))

    def bool(self, v):
        return self.raw(b"\x88" if v else b"\x89")

    def none(self):
        return self.raw(b"N")

    def tuple(self):           # closes a mark
        return self.raw(b"t")

    def tuple1(self):
        return self.raw(b"\x85")

    def empty_tuple(self):
        return self.raw(b")")

    def empty_dict(self):
        return self.raw(b"}")

    def empty_list(self):
        return self.raw(b"]")

    def setitems(self):        # closes a mark
        return self.raw(b"u")

    def appends(self):         # closes a mark
        return self.raw(b"e")

    def reduce(self):
        return self.raw(b"R")

    def persid(self):
        return self.raw(b"Q")

    def ints_tuple(self, vals):
        self.mark()
        for v in vals:
            self.int(v)
        return self.tuple()

    def tensor(self, key, storage_type, storage_numel, offset, size, stride, requires_grad=False,
               location="cpu", legacy=False):
        """torch._utils._rebuild_tensor_v2(persistent storage, offset, size, stride, requires_grad, OrderedDict())"""
        self.glob("torch._utils", "_rebuild_tensor_v2")
        self.mark()
        self.mark().str("storage").glob("torch", storage_type).str(key).str(location).int(storage_numel)
        if legacy:
            self.none()
        self.tuple().persid()
        self.int(offset).ints_tuple(size).ints_tuple(stride).bool(requires_grad)
        self.glob("collections", "OrderedDict").empty_tuple().reduce()
        self.tuple().reduce()
        return self

    def stop(self):
        self.raw(b".")
        return bytes(self.b)


STORAGE_TYPES = {torch.float32: "FloatStorage", torch.float64: "DoubleStorage", torch.int64: "LongStorage",
                 torch.int32: "IntStorage", torch.uint8: "ByteStorage", torch.float16: "HalfStorage"}


def write_torch_zip(path, data_pkl, storages, prefix="archive", extra=(), version=b"3\n"):
    """A torch zip written with Python's zipfile (unaligned, stored): prefix/data.pkl, prefix/data/<key>,
    prefix/version. torch 1.13 loads such archives."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr(prefix + "/data.pkl", data_pkl)
        for key, raw in storages:
            z.writestr(prefix + "/data/" + key, raw)
        for name, raw in extra:
            z.writestr(prefix + "/" + name, raw)
        if version is not None:
            z.writestr(prefix + "/version", version)


LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


def write_legacy(path, main_pickle, storages):
    """The pre-1.6 pickle sequence: magic, protocol 1001, sys_info, main pickle, key list, raw storages.
    storages: [(key, numel, raw bytes)]."""
    sys_info = dict(protocol_version=1001, little_endian=True, type_sizes=dict(short=2, int=4, long=4))
    keys = sorted(k for k, _, _ in storages)
    by_key = {k: (n, raw) for k, n, raw in storages}
    with open(path, "wb") as f:
        f.write(pickle.dumps(LEGACY_MAGIC, protocol=2))
        f.write(pickle.dumps(1001, protocol=2))
        f.write(pickle.dumps(sys_info, protocol=2))
        f.write(main_pickle)
        f.write(pickle.dumps(keys, protocol=2))
        for k in keys:
            n, raw = by_key[k]
            f.write(struct.pack("<q", n))
            f.write(raw)


def zip_data_offsets(path):
    """{record name: (header offset, data offset, size)} read from the file with zipfile + local headers."""
    out = {}
    with zipfile.ZipFile(path) as z, open(path, "rb") as f:
        for info in z.infolist():
            f.seek(info.header_offset)
            hdr = f.read(30)
            n, m = struct.unpack("<HH", hdr[26:30])
            out[info.filename] = (info.header_offset, info.header_offset + 30 + n + m, info.file_size)
    return out


def load_cpu(path):
    return torch.load(path, map_location="cpu")
