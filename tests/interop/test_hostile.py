"""A corpus of hostile pickles, one per known way of making a pickle run code or exhaust the reader, each hidden
inside the three PyTorch containers (zip data.pkl, the legacy pickle sequence, a TorchScript archive's data.pkl
and constants.pkl) next to real tensors. The payloads are never run: the pickles are written opcode by opcode
and only ckpt reads them.

For every file, `ckpt info`, `ckpt ls` and `ckpt stats` must
  - exit cleanly (0 with JSON, or 2 with a one-line error naming the file for the structural attacks),
  - report a security finding that names the callable the file tried to call,
  - still list the healthy tensors with their values,
  - and leave no trace: the marker file each payload would create (with its absolute path and relative to
    the working folder) does not exist afterwards."""

import collections
import marshal
import os
import struct
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from common import CkptTestCase, PickleWriter, contiguous_bytes, workfile, write_legacy, write_torch_zip  # noqa

import torch  # noqa: E402

WEIGHT = torch.arange(12, dtype=torch.float32).reshape(3, 4) / 7
BIAS = torch.tensor([1.5, -2.0, 0.0], dtype=torch.float64)


def _cmd(marker):
    return "touch %s" % marker


def _code(marker):
    return "open(%r, 'w').close()" % marker


# ---- payloads that call something -----------------------------------------------------------------------------
# Each emitter leaves exactly one value on the pickle stack.

def reduce_call(module, name, arg_kind="cmd"):
    def emit(p, marker):
        p.glob(module, name).str(_cmd(marker) if arg_kind == "cmd" else _code(marker)).tuple1().reduce()
    return emit


def getattr_chain(p, marker):
    # getattr(__import__('os'), 'system')('touch ...')
    p.glob("builtins", "getattr").mark()
    p.glob("builtins", "__import__").str("os").tuple1().reduce()
    p.str("system").tuple().reduce()
    p.str(_cmd(marker)).tuple1().reduce()


def importlib_chain(p, marker):
    # getattr(importlib.import_module('os'), 'system')('touch ...')
    p.glob("builtins", "getattr").mark()
    p.glob("importlib", "import_module").str("os").tuple1().reduce()
    p.str("system").tuple().reduce()
    p.str(_cmd(marker)).tuple1().reduce()


def subprocess_popen(p, marker):
    p.glob("subprocess", "Popen").empty_list().mark().str("touch").str(marker).appends().tuple1().reduce()


def posixsubprocess_fork_exec(p, marker):
    # _posixsubprocess.fork_exec(args, executable_list, ...): the argument list alone is enough to show intent
    p.glob("_posixsubprocess", "fork_exec").mark()
    p.empty_list().mark().raw(b"C\x05touch").raw(b"C" + bytes([len(marker)]) + marker.encode()).appends()
    p.empty_list().mark().raw(b"C\x0e/usr/bin/touch").appends()
    p.bool(True).empty_tuple().none().none().tuple().reduce()


def marshal_function(p, marker):
    # types.FunctionType(marshal.loads(code), {})() - code object bytes made by compile(), never executed
    code = marshal.dumps(compile(_code(marker), "<payload>", "exec"))
    p.glob("types", "FunctionType").mark()
    p.glob("marshal", "loads").raw(b"B" + struct.pack("<I", len(code)) + code).tuple1().reduce()
    p.empty_dict().tuple().reduce()
    p.empty_tuple().reduce()


def runpy_run_code(p, marker):
    p.glob("runpy", "_run_code").mark().str(_code(marker)).empty_dict().tuple().reduce()


def newobj_popen(p, marker):
    p.glob("subprocess", "Popen").mark().str(_cmd(marker)).tuple().raw(b"\x81")   # NEWOBJ


def newobj_ex_popen(p, marker):
    # NEWOBJ_EX: cls, args, kwargs - Popen('touch ...', shell=True)
    p.stack_global("subprocess", "Popen").mark().str(_cmd(marker)).tuple()
    p.empty_dict().mark().str("shell").bool(True).setitems().raw(b"\x92")


def inst_os_system(p, marker):
    p.mark().str(_cmd(marker)).raw(b"ios\nsystem\n")                                  # INST


def obj_posix_system(p, marker):
    p.mark().glob("posix", "system").str(_cmd(marker)).raw(b"o")                      # OBJ


def build_setstate(p, marker):
    # obj = argparse.Namespace(); obj.__dict__/slots get __setstate__ = os.system; BUILD 'touch ...' then calls
    # obj.__setstate__('touch ...') under Python's pickle.
    p.glob("argparse", "Namespace").empty_tuple().raw(b"\x81")
    p.mark().none().empty_dict().mark().str("__setstate__").glob("os", "system").setitems().tuple().raw(b"b")
    p.str(_cmd(marker)).raw(b"b")


def persid_dangerous_type(p, marker):
    # a storage whose "type" is os.system, and whose key is the result of a call
    p.mark().str("storage").glob("os", "system")
    p.glob("builtins", "exec").str(_code(marker)).tuple1().reduce()
    p.str("cpu").int(4).tuple().persid()


def persid_path_key(p, marker):
    # a persistent id that is not a tuple, and one whose key tries to leave the archive
    p.empty_list().mark()
    p.str("../../../../etc/passwd").persid()
    p.mark().str("storage").glob("torch", "FloatStorage").str("../../../etc/passwd").str("cpu").int(4).tuple()
    p.persid()
    p.mark().str("module").glob("posix", "system").str(_cmd(marker)).tuple().persid()
    p.appends()


CALLS = {
    # name: (emitter, accepted names in the security finding, pickle protocol)
    "reduce_os_system": (reduce_call("os", "system"), {"os.system", "posix.system"}, 2),
    "reduce_posix_system": (reduce_call("posix", "system"), {"os.system", "posix.system"}, 2),
    "reduce_builtins_exec": (reduce_call("builtins", "exec", "code"), {"builtins.exec"}, 2),
    "reduce_builtins_eval": (reduce_call("builtins", "eval", "code"), {"builtins.eval"}, 2),
    "getattr_chain": (getattr_chain, {"builtins.getattr", "builtins.__import__"}, 2),
    "importlib_chain": (importlib_chain, {"importlib.import_module"}, 2),
    "subprocess_popen": (subprocess_popen, {"subprocess.Popen"}, 2),
    "posixsubprocess_fork_exec": (posixsubprocess_fork_exec, {"_posixsubprocess.fork_exec"}, 3),
    "marshal_function": (marshal_function, {"marshal.loads", "types.FunctionType"}, 3),
    "runpy_run_code": (runpy_run_code, {"runpy._run_code"}, 2),
    "newobj_popen": (newobj_popen, {"subprocess.Popen"}, 2),
    "newobj_ex_popen": (newobj_ex_popen, {"subprocess.Popen"}, 4),
    "inst_os_system": (inst_os_system, {"os.system", "posix.system"}, 2),
    "obj_posix_system": (obj_posix_system, {"os.system", "posix.system"}, 2),
    "build_setstate": (build_setstate, {"os.system", "posix.system"}, 2),
}
# Every accepted name of a call must be named, not just one, for these (the whole chain is reported).
ALL_NAMED = {"getattr_chain", "importlib_chain", "marshal_function"}

# Persistent ids are storages or nothing: anything else makes the whole file malformed (PyTorch's own loader
# would call the hostile callables while building the id), with this message.
PERSID = {
    "persid_dangerous_type": (persid_dangerous_type, "storage key is not a string"),
    "persid_path_key": (persid_path_key, "persistent id is not a ('storage', type, key, location, size) tuple"),
}


# ---- payloads that attack the reader itself ------------------------------------------------------------------
# Each emits raw opcodes in place of the value; most make the pickle invalid, which must be a clean error.

def memo_get_unset(p):
    p.raw(b"h\x07")                                      # BINGET of a slot never PUT


def memo_get_huge(p):
    p.raw(b"j\xff\xff\xff\xff")                          # LONG_BINGET 4294967295


def memo_put_huge(p):
    p.empty_list().raw(b"r\xff\xff\xff\xff").raw(b"0").raw(b"j\xff\xff\xff\xff")   # PUT/GET 4294967295


def memo_get_text_huge(p):
    p.raw(b"g99999999999999999999999\n")                # GET with an index beyond 64 bits


def memo_flood(p):
    p.empty_list().raw(b"\x94" * 3_000_000)              # MEMOIZE the same list three million times


def self_reference(p):
    # l = []; l.append(l); d = {}; d['d'] = d - cycles through the memo
    p.empty_list().raw(b"q\x00").raw(b"h\x00").raw(b"a")
    p.empty_list().mark().empty_dict().raw(b"q\x01").str("d").raw(b"h\x01").raw(b"s").appends()
    p.raw(b"0")


def nested_lists(p):
    depth = 200_000                                       # [[[[...]]]]
    p.raw(b"]" * depth).raw(b"a" * (depth - 1))


def nested_marks(p):
    p.raw(b"(" * 1_000_000).raw(b"t" * 1_000_000)       # a million nested tuples through MARK


def nested_reduce(p):
    # OrderedDict(OrderedDict(...(...)...)) - recursion through calls rather than containers
    depth = 100_000
    for _ in range(depth):
        p.glob("collections", "OrderedDict")
    p.empty_list()
    p.raw(b"\x85R" * depth)


def huge_binunicode(p):
    p.raw(b"X\xff\xff\xff\xff" + b"A" * 16)


def huge_binunicode8(p):
    p.raw(b"\x8d" + struct.pack("<Q", 1 << 63) + b"A" * 16)


def huge_binbytes8(p):
    p.raw(b"\x8e" + struct.pack("<Q", (1 << 64) - 1) + b"A" * 16)


def huge_long4(p):
    p.raw(b"\x8b" + struct.pack("<i", 0x7FFFFFFF) + b"\x01" * 16)


def huge_frame(p):
    p.raw(b"\x95" + struct.pack("<Q", 1 << 62)).none()


def huge_tensor_shape(p):
    # a tensor that claims 2^62 x 2^62 elements of a 12-element storage
    p.tensor("0", "FloatStorage", 12, 0, [1 << 62, 1 << 62], [1, 1])


def huge_storage(p):
    # the weight's storage again, now claiming 2^61 elements: extent checks must not overflow, allocate or read
    p.tensor("0", "FloatStorage", 1 << 61, (1 << 61) - 4, [4], [1])


def _put(index):
    return b"r" + struct.pack("<I", index)                # LONG_BINPUT


def _get(index):
    return b"j" + struct.pack("<I", index)                # LONG_BINGET


def memo_far_puts(p):
    # 8,000 PUTs, each 65,535 slots past the last: a dense memo table would grow 512 KiB per 5-byte opcode
    p.none()
    for k in range(8000):
        p.raw(_put(65536 * (k + 1) - 1))


def shared_dag(p):
    # 30 levels of [x, x] where x is the level below, through the memo: 2^30 paths from 600 bytes
    p.empty_list().raw(_put(1000)).raw(b"0")
    for level in range(30):
        p.empty_list().mark().raw(_get(1000 + level)).raw(_get(1000 + level)).appends().raw(_put(1001 + level))
        if level < 29:
            p.raw(b"0")


def copy_amplification(p):
    # a 100,000-item list, then list(it) 2,000 times: 200 million item copies from 230 KB
    p.empty_list().raw(_put(2000)).mark().raw(b"K\x01" * 100_000).appends().raw(b"0")
    p.glob("builtins", "list").raw(_put(2001)).raw(b"0")
    p.none()
    for _ in range(2000):
        p.raw(b"0").raw(_get(2001)).raw(_get(2000)).tuple1().reduce()


BIG_INT = -(7 ** 900)   # 316 bytes: over the length that is converted to digits
BIG_INT_SHOWN = 3 ** 1280 + 12345   # 254 bytes: converted


def big_ints(p):
    # 8,000 integers of 254 bytes, each popped: converted to decimal one pass per nine digits
    for _ in range(8000):
        p.int(BIG_INT_SHOWN + 1).raw(b"0")
    p.mark().int(BIG_INT_SHOWN).int(-BIG_INT_SHOWN).int(BIG_INT).int(1 << 64).int(-(1 << 64)).tuple()


def rebuild_from_type_nested(p):
    # _rebuild_from_type_v2(f, None, (f, None, (... ()))) 20,000 levels deep, through its own arguments
    n = 20_000
    p.glob("torch._tensor", "_rebuild_from_type_v2").raw(_put(3000))
    p.raw((_get(3000) + b"N") * n).empty_tuple().raw(b"\x87" * n).reduce()


def sparse_short(p):
    # _rebuild_sparse_tensor(layout, (indices,)): a COO tuple without its values and size
    p.glob("torch._utils", "_rebuild_sparse_tensor").mark().glob("torch", "sparse_coo")
    p.mark().none().tuple().tuple().reduce()


STRUCTURAL = {
    "memo_get_unset": (memo_get_unset, 2),
    "memo_get_huge": (memo_get_huge, 2),
    "memo_put_huge": (memo_put_huge, 2),
    "memo_get_text_huge": (memo_get_text_huge, 2),
    "memo_flood": (memo_flood, 4),
    "self_reference": (self_reference, 2),
    "nested_lists": (nested_lists, 2),
    "nested_marks": (nested_marks, 2),
    "nested_reduce": (nested_reduce, 2),
    "huge_binunicode": (huge_binunicode, 2),
    "huge_binunicode8": (huge_binunicode8, 4),
    "huge_binbytes8": (huge_binbytes8, 4),
    "huge_long4": (huge_long4, 2),
    "huge_frame": (huge_frame, 4),
    "huge_tensor_shape": (huge_tensor_shape, 2),
    "huge_storage": (huge_storage, 2),
    "memo_far_puts": (memo_far_puts, 2),
    "shared_dag": (shared_dag, 2),
    "copy_amplification": (copy_amplification, 2),
    "big_ints": (big_ints, 2),
    "rebuild_from_type_nested": (rebuild_from_type_nested, 2),
    "sparse_short": (sparse_short, 2),
}

CONTAINERS = ("zip", "legacy", "torchscript", "torchscript_constants")
FORMAT_NAMES = {"zip": "pytorch-zip", "legacy": "pytorch-legacy", "torchscript": "torchscript",
                "torchscript_constants": "torchscript"}
LEGACY_KEYS = ["94011111111111", "94022222222222"]


def main_pickle(emit, proto, legacy, keys, with_payload=True):
    """{'weight': tensor, 'evil': <payload>, 'bias': tensor}"""
    p = PickleWriter(proto)
    p.empty_dict().mark()
    p.str("weight").tensor(keys[0], "FloatStorage", 12, 0, [3, 4], [4, 1], legacy=legacy)
    if with_payload:
        p.str("evil")
        emit(p)
    p.str("bias").tensor(keys[1], "DoubleStorage", 3, 0, [3], [1], legacy=legacy)
    p.setitems()
    return p.stop()


def constants_pickle(emit, proto):
    """A TorchScript constants.pkl: a tuple of constants, the payload among them."""
    p = PickleWriter(proto)
    p.mark().int(7)
    emit(p)
    p.tuple()
    return p.stop()


TS_CODE = b"class Module(Module):\n  __parameters__ = []\n  def forward(self: __torch__.Module) -> None:\n" \
          b"    return None\n"


def write_container(path, container, emit, proto):
    storages = [("0", contiguous_bytes(WEIGHT)), ("1", contiguous_bytes(BIAS))]
    if container == "zip":
        write_torch_zip(path, main_pickle(emit, proto, False, ["0", "1"]), storages, prefix="evil")
    elif container == "legacy":
        write_legacy(path, main_pickle(emit, proto, True, LEGACY_KEYS),
                     [(LEGACY_KEYS[0], 12, contiguous_bytes(WEIGHT)), (LEGACY_KEYS[1], 3, contiguous_bytes(BIAS))])
    elif container == "torchscript":
        write_torch_zip(path, main_pickle(emit, proto, False, ["0", "1"]), storages, prefix="evil",
                        extra=[("constants.pkl", PickleWriter(2).empty_tuple().stop()), ("code/__torch__.py", TS_CODE)])
    else:   # torchscript_constants: the payload hides in constants.pkl, data.pkl is clean
        write_torch_zip(path, main_pickle(emit, proto, False, ["0", "1"], with_payload=False), storages,
                        prefix="evil", extra=[("constants.pkl", constants_pickle(emit, proto)),
                                              ("code/__torch__.py", TS_CODE)])


class HostileTest(CkptTestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.folder = workfile("hostile")
        os.makedirs(cls.folder, exist_ok=True)
        for f in os.listdir(cls.folder):
            os.remove(os.path.join(cls.folder, f))
        cls.markers = set()
        cls.calls = {}
        for name, (emit, _accepted, proto) in CALLS.items():
            for container in CONTAINERS:
                # an absolute marker path, so a payload that ran from any folder would leave it here
                marker = os.path.join(cls.folder, "pwned_%s_%s" % (name, container))
                cls.markers.add(marker)
                path = os.path.join(cls.folder, "call_%s_%s.pt" % (name, container))
                write_container(path, container, lambda p, e=emit, m=marker: e(p, m), proto)
                cls.calls[(name, container)] = path
        cls.persid = {}
        for name, (emit, _message) in PERSID.items():
            for container in CONTAINERS:
                marker = os.path.join(cls.folder, "pwned_%s_%s" % (name, container))
                cls.markers.add(marker)
                path = os.path.join(cls.folder, "persid_%s_%s.pt" % (name, container))
                write_container(path, container, lambda p, e=emit, m=marker: e(p, m), 2)
                cls.persid[(name, container)] = path
        cls.structural = {}
        for name, (emit, proto) in STRUCTURAL.items():
            for container in CONTAINERS:
                path = os.path.join(cls.folder, "struct_%s_%s.pt" % (name, container))
                write_container(path, container, emit, proto)
                cls.structural[(name, container)] = path

    def assert_no_markers(self, *folders):
        time.sleep(0.3)   # a process spawned in the background would need a moment to create its marker
        left = sorted(m for m in self.markers if os.path.exists(m))
        for folder in folders:
            left += sorted(f for f in os.listdir(folder) if f.startswith("pwned_"))
        self.assertEqual(left, [], "a payload ran")

    def test_calls_are_reported_and_never_run(self):
        for (name, container), path in sorted(self.calls.items()):
            accepted = CALLS[name][1]
            with self.subTest(payload=name, container=container):
                for cmd in ("info", "ls"):
                    out = self.ckpt_json(cmd, path, cwd=self.folder)
                    self.assertEqual(out["format"], FORMAT_NAMES[container])
                    named = {f.get("global") for f in out["findings"] if f["severity"] == "security"}
                    if name in ALL_NAMED:
                        self.assertTrue(accepted <= named, "%s: findings %r lack %r" % (cmd, named, accepted))
                    else:
                        self.assertTrue(named & accepted, "%s: findings %r name none of %r"
                                        % (cmd, named, accepted))
                ls = self.ckpt_json("ls", path, cwd=self.folder)
                self.compare_ls(ls, [("weight", WEIGHT), ("bias", BIAS)], path=path)
                st = self.ckpt_json("stats", path, cwd=self.folder)
                got = {e["name"]: e for e in st["tensors"]}
                self.compare_stats(got["weight"], WEIGHT, "weight")
                self.compare_stats(got["bias"], BIAS, "bias")
                proc = self.run_ckpt("ls", path, cwd=self.folder)
                self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assert_no_markers(self.folder)

    def test_calls_never_run_from_another_folder(self):
        with tempfile.TemporaryDirectory() as tmp:
            for path in self.calls.values():
                proc = self.run_ckpt("stats", path, "--json", cwd=tmp)
                self.assertEqual(proc.returncode, 0, path)
            self.assert_no_markers(tmp)

    def test_persistent_id_tricks_are_refused(self):
        for (name, container), path in sorted(self.persid.items()):
            with self.subTest(payload=name, container=container):
                for cmd in ("info", "ls", "stats"):
                    proc = self.run_ckpt(cmd, path, cwd=self.folder)
                    self.assert_error_output(proc, path, name)
                    self.assertIn(PERSID[name][1], proc.stderr.decode(errors="replace"))
        self.assert_no_markers(self.folder)

    def test_structural_attacks_end_cleanly(self):
        """Memo abuse, nesting and huge lengths: a clean error naming the file, or a result; never a crash
        (run_ckpt fails on a signal), a hang or a runaway allocation (ulimit below)."""
        outcomes = {}
        for (name, container), path in sorted(self.structural.items()):
            with self.subTest(payload=name, container=container):
                for cmd in ("info", "ls", "stats"):
                    proc = self.run_ckpt(cmd, path, "--json", timeout=common.RUN_TIMEOUT)
                    if proc.returncode == 0:
                        out = common.parse_json_strict(self, proc.stdout, (cmd, path))
                        if cmd != "stats":
                            self.assertEqual(out["format"], FORMAT_NAMES[container])
                        outcomes[(name, container, cmd)] = "ok"
                    else:
                        self.assert_error_output(proc, path, "%s %s" % (cmd, name))
                        outcomes[(name, container, cmd)] = "error"
        # the ones that must be refused whatever the container (the pickle cannot be read past them)
        for name in ("memo_get_unset", "memo_get_huge", "memo_get_text_huge", "huge_binunicode",
                     "huge_binunicode8", "huge_binbytes8", "huge_long4"):
            for container in CONTAINERS:
                self.assertEqual(outcomes[(name, container, "info")], "error", (name, container))

    def test_structural_errors_say_what_is_wrong(self):
        expect = {
            "memo_get_unset": "memo index 7 was never stored",
            "memo_get_huge": "memo index 4294967295 was never stored",
            "memo_get_text_huge": "GET index is not a number",
            "nested_marks": "more than 65536 nested MARKs",
            "huge_binunicode": "needs 4294967295 bytes but only",
            "huge_binunicode8": "string of 9223372036854775808 bytes runs past the end",
            "huge_binbytes8": "bytes of 18446744073709551615 bytes run past the end",
            "huge_long4": "needs 2147483647 bytes but only",
            "copy_amplification": "pickle copies more than",
            "rebuild_from_type_nested": "_rebuild_from_type_v2 nested deeper than 16 levels",
        }
        for name, text in expect.items():
            for container in CONTAINERS:
                path = self.structural[(name, container)]
                with self.subTest(payload=name, container=container):
                    proc = self.run_ckpt("info", path)
                    self.assert_error_output(proc, path, name)
                    self.assertIn(text, proc.stderr.decode(errors="replace"))

    def test_survivable_attacks_leave_healthy_tensors(self):
        """Memo games, cycles, deep nesting and absurd shapes that are valid pickles: the file opens, the
        tensors around them read right, the absurd tensor carries an error."""
        bad_tensor = {"huge_tensor_shape": "evil: element count overflows 64 bits",
                      "huge_storage": "evil: view needs 9223372036854775808 bytes of storage '0', which holds 48",
                      "sparse_short": "evil: a sparse_coo tensor has no dense data to read"}
        for name in ("memo_put_huge", "memo_flood", "self_reference", "nested_lists", "nested_reduce",
                     "huge_frame", "huge_tensor_shape", "huge_storage", "memo_far_puts", "shared_dag", "big_ints",
                     "sparse_short"):
            for container in ("zip", "legacy", "torchscript"):
                if name == "huge_storage" and container == "legacy":
                    continue    # refused there: legacy storages are listed after the pickle, '0' is not one
                path = self.structural[(name, container)]
                with self.subTest(payload=name, container=container):
                    # stats exits 2 when a tensor could not be read, after printing all the others
                    st = self.ckpt_json("stats", path, expect_rc=2 if name in bad_tensor else 0)
                    got = {e["name"]: e for e in st["tensors"]}
                    self.compare_stats(got["weight"], WEIGHT, "weight")
                    self.compare_stats(got["bias"], BIAS, "bias")
                    if name in bad_tensor:
                        proc = self.run_ckpt("stats", path)
                        self.assertIn(bad_tensor[name], proc.stderr.decode(errors="replace"))

    def test_amplification_stays_small(self):
        """Payloads of a few hundred bytes to 2 MB that would make a naive reader build gigabytes or run for
        minutes (a dense memo table grown by far-off PUTs, 2^30 paths through shared lists, a list copied
        2,000 times, thousands of big integers, nested rebuild calls): each run stays under 600 MB of
        resident memory (AddressSanitizer's own included) and ends in a result or a clean error."""
        for name in ("memo_far_puts", "shared_dag", "copy_amplification", "big_ints", "rebuild_from_type_nested"):
            path = self.structural[(name, "zip")]
            with self.subTest(payload=name):
                proc = subprocess.run(["/usr/bin/time", "-f", "maxrss %M", common.CKPT, "info", "--json", path],
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=common.RUN_TIMEOUT)
                err = proc.stderr.decode(errors="replace")
                self.assertIn(proc.returncode, (0, 2), err[-1000:])
                rss_kib = int(err.rsplit("maxrss ", 1)[1].split()[0])
                self.assertLess(rss_kib, 600 * 1024, name)

    def test_shared_lists_are_listed_a_bounded_number_of_times(self):
        info = self.ckpt_json("info", self.structural[("shared_dag", "zip")])
        names = [v["name"] for v in info["values"] if v["name"].startswith("evil")]
        # 16 full listings of each shared level, then the level as one value: far fewer than 2^30 names
        self.assertLess(len(names), 100_000)
        self.assertIn("evil.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0", names)
        self.assertTrue(any("listed in full under the first 16" in f["message"] for f in info["findings"]),
                        info["findings"])

    def test_big_integers_read_as_python_prints_them(self):
        info = self.ckpt_json("info", self.structural[("big_ints", "zip")])
        evil = [v for v in info["values"] if v["name"] == "evil"]
        self.assertEqual(len(evil), 1, info["values"])
        self.assertEqual(evil[0]["value"], [str(BIG_INT_SHOWN), str(-BIG_INT_SHOWN),
                                            "<%d-byte integer>" % ((BIG_INT.bit_length() + 8) // 8),
                                            str(1 << 64), str(-(1 << 64))])

    def test_copied_items_are_not_reused(self):
        """tuple(L) shares L's items; a tensor rebuilt from that tuple must not hand them back for reuse,
        or L would show the strings made after it."""
        p = PickleWriter(2)
        p.empty_dict().mark().str("a")
        p.empty_list().raw(_put(10)).mark().none().int(0).str("hello").str("world").appends()
        p.str("t").glob("torch._utils", "_rebuild_tensor_v2")
        p.glob("builtins", "tuple").raw(_get(10)).tuple1().reduce().reduce()
        p.str("c").str("NEWSTRING1").str("d").str("NEWSTRING2").setitems()
        path = os.path.join(self.folder, "copied_items.pkl")
        with open(path, "wb") as f:
            f.write(p.stop())
        info = self.ckpt_json("info", path)
        values = {v["name"]: v["value"] for v in info["values"]}
        self.assertEqual(values["a"], [None, 0, "hello", "world"])
        self.assertEqual(values["c"], "NEWSTRING1")
        self.assertEqual(values["d"], "NEWSTRING2")

    def test_quantization_parameters_that_are_quantized_are_refused(self):
        """Per-channel scales that are per-channel quantized tensors, 40 deep, each level's scales and zero
        points the next level: reading t0 would read 2^40 parameter tensors. One clean error instead."""
        objs = [QuantChain(None)]
        for _ in range(40):
            objs.append(QuantChain(objs[-1]))
        path = os.path.join(self.folder, "quant_chain.pt")
        torch.save(collections.OrderedDict(("t%d" % i, o) for i, o in enumerate(reversed(objs))), path)
        proc = self.run_ckpt("stats", path, "t0")
        self.assert_error_output(proc, path, "quant_chain")
        self.assertIn("t0: per-channel quantization parameters are themselves quantized",
                      proc.stderr.decode(errors="replace"))
        # the last level is an ordinary per-tensor quantized tensor: it reads
        last = self.ckpt_json("stats", path, "t40")
        self.assertEqual([t["name"] for t in last["tensors"]], ["t40"])

    def test_quantization_parameters_declaring_more_channels_than_stored(self):
        """Per-channel scales and zero points of 2^60 elements with stride 0 over one stored value each: the
        reader copied one value per channel (an allocation of 2^63 bytes). PyTorch itself writes them
        contiguous. Refused by what the storage holds; an empty tensor over such an axis reads (no element)."""
        n = 1 << 60

        def qtensor(size, stride, axis):
            p = PickleWriter()
            p.empty_dict().mark().str("q")
            p.glob("torch._utils", "_rebuild_qtensor").mark()
            p.mark().str("storage").glob("torch", "QInt8Storage").str("0").str("cpu").int(1).tuple().persid()
            p.int(0).ints_tuple(size).ints_tuple(stride)
            p.mark().glob("torch", "per_channel_affine")
            p.tensor("1", "DoubleStorage", 1, 0, [n], [0])
            p.tensor("2", "LongStorage", 1, 0, [n], [0])
            p.int(axis).tuple()
            p.bool(False).glob("collections", "OrderedDict").empty_tuple().reduce()
            p.tuple().reduce().setitems()
            return p.stop()

        records = [("0", b"\x01"), ("1", struct.pack("<d", 0.5)), ("2", struct.pack("<q", 0))]
        path = os.path.join(self.folder, "quant_stride0.pt")
        write_torch_zip(path, qtensor([n], [0], 0), records)
        proc = self.run_ckpt("stats", path, "q")
        self.assert_error_output(proc, path, "quant_stride0")
        self.assertIn("q: per-channel quantization parameters declare %d channels but their storage holds 1 "
                      "value\n" % n, proc.stderr.decode(errors="replace"))
        path = os.path.join(self.folder, "quant_stride0_empty.pt")
        write_torch_zip(path, qtensor([0, n], [0, 0], 1), records)
        stats = self.ckpt_json("stats", path, "q")["tensors"]
        self.assertEqual([(t["name"], t["shape"], t["count"]) for t in stats], [("q", [0, n], 0)])


class QuantChain:
    """Pickles as a quantized tensor whose per-channel parameters are the next QuantChain (PyTorch itself
    never writes this)."""

    def __init__(self, nxt):
        self.nxt = nxt
        self.storage = torch.zeros(2, dtype=torch.int8).storage()

    def __reduce__(self):
        qp = ((torch.per_channel_affine, self.nxt, self.nxt, 0) if self.nxt is not None
              else (torch.per_tensor_affine, 1.0, 0))
        return (torch._utils._rebuild_qtensor,
                (self.storage, 0, (2,), (1,), qp, False, collections.OrderedDict()))


if __name__ == "__main__":
    common.main()
