"""Malicious pickles that try to run code, embedded as data.pkl of a torch zip and as the main pickle of the
legacy format, mixed with real tensors. ckpt must list the tensors, report a security finding naming the
callable, and never run it. The test first proves each payload is live by loading the very same file with
torch.load (Python's pickle) in a subprocess, in a temporary folder, where it creates its marker file."""

import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from common import CkptTestCase, PickleWriter, contiguous_bytes, workfile, write_legacy, write_torch_zip  # noqa

import torch  # noqa: E402


def _system(module):
    def emit(p, marker):
        p.glob(module, "system").str("touch %s" % marker).tuple1().reduce()
    return emit


def _exec(p, marker):
    p.glob("builtins", "exec").str("open(%r, 'w').close()" % marker).tuple1().reduce()


def _eval_py2_name(p, marker):
    p.glob("__builtin__", "eval").str("open(%r, 'w').close()" % marker).tuple1().reduce()


def _popen(p, marker):
    p.glob("subprocess", "Popen").empty_list().mark().str("touch").str(marker).appends().tuple1().reduce()


def _stack_global(p, marker):
    p.stack_global("os", "system").str("touch %s" % marker).tuple1().reduce()


def _nested_deep(p, marker):
    # {'meta': [1, 2.5, {'hook': os.system(...)}]} - the call sits deep inside ordinary data
    p.empty_dict().mark().str("meta").empty_list().mark().int(1).float(2.5)
    p.empty_dict().mark().str("hook")
    _system("posix")(p, marker)
    p.setitems().appends().setitems()


OS_NAMES = {"os.system", "posix.system"}

# name -> (payload emitter, accepted "global" values, pickle protocol)
PAYLOADS = {
    "os_system": (_system("os"), OS_NAMES, 2),
    "posix_system": (_system("posix"), OS_NAMES, 2),
    "builtins_exec": (_exec, {"builtins.exec"}, 2),
    "builtin_eval": (_eval_py2_name, {"builtins.eval", "__builtin__.eval"}, 2),
    "subprocess_popen": (_popen, {"subprocess.Popen"}, 2),
    "stack_global_os_system": (_stack_global, OS_NAMES, 4),
    "nested_posix_system": (_nested_deep, OS_NAMES, 2),
}

WEIGHT = torch.arange(12, dtype=torch.float32).reshape(3, 4) / 7
BIAS = torch.tensor([1.5, -2.0, 0.0], dtype=torch.float64)


def build_main_pickle(emit, marker, proto, legacy, keys):
    p = PickleWriter(proto)
    p.empty_dict().mark()
    p.str("weight").tensor(keys[0], "FloatStorage", 12, 0, [3, 4], [4, 1], legacy=legacy)
    p.str("evil")
    emit(p, marker)
    p.str("bias").tensor(keys[1], "DoubleStorage", 3, 0, [3], [1], legacy=legacy)
    p.setitems()
    return p.stop()


def marker_name(name, fmt):
    return "pwned_%s_%s" % (name, fmt)


def build_files(folder):
    """{(payload name, format): path}"""
    files = {}
    for name, (emit, _globs, proto) in PAYLOADS.items():
        zpath = os.path.join(folder, "evil_%s.pt" % name)
        pkl = build_main_pickle(emit, marker_name(name, "zip"), proto, False, ["0", "1"])
        write_torch_zip(zpath, pkl, [("0", contiguous_bytes(WEIGHT)), ("1", contiguous_bytes(BIAS))],
                        prefix="evil_%s" % name)
        files[(name, "zip")] = zpath
        lpath = os.path.join(folder, "evil_%s_legacy.pt" % name)
        keys = ["94011111111111", "94022222222222"]
        pkl = build_main_pickle(emit, marker_name(name, "legacy"), proto, True, keys)
        write_legacy(lpath, pkl, [(keys[0], 12, contiguous_bytes(WEIGHT)), (keys[1], 3, contiguous_bytes(BIAS))])
        files[(name, "legacy")] = lpath
    return files


PROOF_SCRIPT = r'''
import json, os, shutil, sys, tempfile, time
import torch
out = {}
for path, marker in zip(sys.argv[1::2], sys.argv[2::2]):
    tmp = tempfile.mkdtemp(prefix="ckpt_proof_")
    os.chdir(tmp)
    err = None
    try:
        obj = torch.load(path, weights_only=False)
        ok_tensors = torch.is_tensor(obj["weight"]) and torch.is_tensor(obj["bias"])
    except Exception as e:
        err = repr(e)
        ok_tensors = False
    deadline = time.time() + 5
    while not os.path.exists(marker) and time.time() < deadline:
        time.sleep(0.02)
    out[path] = {"marker": os.path.exists(marker), "error": err, "tensors": ok_tensors}
    os.chdir("/")
    shutil.rmtree(tmp, ignore_errors=True)
print(json.dumps(out))
'''


class MaliciousTest(CkptTestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.folder = workfile("evil")
        os.makedirs(cls.folder, exist_ok=True)
        for f in os.listdir(cls.folder):
            os.remove(os.path.join(cls.folder, f))
        cls.files = build_files(cls.folder)

    def markers_present(self, folder):
        return sorted(f for f in os.listdir(folder) if f.startswith("pwned_"))

    def test_payloads_are_live_under_python_pickle(self):
        args = []
        for (name, fmt), path in sorted(self.files.items()):
            args += [path, marker_name(name, fmt)]
        proc = subprocess.run([sys.executable, "-c", PROOF_SCRIPT] + args, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, timeout=300)
        self.assertEqual(proc.returncode, 0, proc.stderr.decode(errors="replace")[-2000:])
        res = json.loads(proc.stdout.decode().strip().splitlines()[-1])
        for (name, fmt), path in sorted(self.files.items()):
            with self.subTest(payload=name, format=fmt):
                r = res[path]
                self.assertTrue(r["marker"], "payload did not run under torch.load: %r" % r)
                self.assertTrue(r["tensors"], "torch.load did not return the tensors: %r" % r)

    def test_ckpt_lists_tensors_and_reports_never_runs(self):
        for (name, fmt), path in sorted(self.files.items()):
            accepted = PAYLOADS[name][1]
            with self.subTest(payload=name, format=fmt):
                for cmd in ("ls", "info"):
                    out = self.ckpt_json(cmd, path, cwd=self.folder)
                    self.assertEqual(out["format"], "pytorch-zip" if fmt == "zip" else "pytorch-legacy")
                    sec = [f for f in out["findings"] if f["severity"] == "security"]
                    self.assertTrue(any(f.get("global") in accepted for f in sec),
                                    "%s: no security finding naming %s: %r" % (cmd, sorted(accepted),
                                                                             out["findings"]))
                ls = self.ckpt_json("ls", path, cwd=self.folder)
                self.compare_ls(ls, [("weight", WEIGHT), ("bias", BIAS)], path=path)
                st = self.ckpt_json("stats", path, cwd=self.folder)
                got = {e["name"]: e for e in st["tensors"]}
                self.compare_stats(got["weight"], WEIGHT, "weight")
                self.compare_stats(got["bias"], BIAS, "bias")
                proc = self.run_ckpt("ls", path, cwd=self.folder)      # plain text mode too
                self.assertEqual(proc.returncode, 0)
        time.sleep(0.5)        # give an (illegitimately) spawned process time to create its marker
        self.assertEqual(self.markers_present(self.folder), [], "ckpt executed a payload")
        self.assertEqual(self.markers_present(common.WORKDIR), [], "ckpt executed a payload")

    def test_no_terminal_escapes_in_text_output(self):
        """Names and strings from the file must not reach the terminal as raw control characters (a file could
        otherwise rewrite the screen, the window title, or fake output lines)."""
        hostile = "w\x1b]0;owned\x07\x1b[2J\rfake\nline"
        p = PickleWriter().empty_dict().mark()
        p.str(hostile).tensor("0", "FloatStorage", 12, 0, [3, 4], [4, 1])
        p.str("note").str("hello\x1b[31m red\nsecond line")
        p.str("bias").tensor("1", "DoubleStorage", 3, 0, [3], [1])
        p.setitems()
        path = os.path.join(self.folder, "hostile_text.pt")
        write_torch_zip(path, p.stop(), [("0", contiguous_bytes(WEIGHT)), ("1", contiguous_bytes(BIAS))])
        ls = self.ckpt_json("ls", path)
        self.assertEqual([e["name"] for e in ls["tensors"]], [hostile, "bias"])
        for cmd in ("ls", "info", "stats"):
            with self.subTest(command=cmd):
                proc = self.run_ckpt(cmd, path)
                self.assertEqual(proc.returncode, 0, proc.stderr)
                for stream in (proc.stdout, proc.stderr):
                    bad = sorted({chr(c) for c in stream if c < 0x20 and c not in (0x0A, 0x09)} | (
                        {"\x7f"} if b"\x7f" in stream else set()))
                    self.assertEqual(bad, [], "raw control characters in `ckpt %s` output" % cmd)

    def test_payload_markers_absent_in_cwd_variants(self):
        # run from a fresh temporary folder too (the payloads use relative marker paths)
        with tempfile.TemporaryDirectory() as tmp:
            for path in self.files.values():
                proc = self.run_ckpt("info", path, "--json", cwd=tmp)
                self.assertEqual(proc.returncode, 0, path)
            time.sleep(0.3)
            self.assertEqual(self.markers_present(tmp), [])


if __name__ == "__main__":
    common.main()
