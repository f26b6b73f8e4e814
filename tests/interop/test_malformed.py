"""Malformed files through the CLI: truncations at many offsets, missing storage records, declared sizes larger
than records, zip offsets out of the file, garbage and empty files, broken pickles. Every run must end within a
few seconds with exit status 2 (not a signal), and every stderr line must read `ckpt: FILE...`."""

import os
import pickletools
import random
import struct
import sys
import zipfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from common import (CkptTestCase, PickleWriter, contiguous_bytes, workfile, write_legacy,  # noqa: E402
                    write_torch_zip, zip_data_offsets, MALFORMED_TIMEOUT)

import torch  # noqa: E402

COMMANDS = (("ls", "--json"), ("info", "--json"), ("stats", "--json"))


def make_base():
    torch.manual_seed(9)
    return {"a": torch.randn(64), "b": torch.randn(32, 4), "c": torch.arange(10), "d": torch.randn(3).half(),
            "e": [torch.ones(5, dtype=torch.int32)]}


def find_eocd(data):
    pos = data.rfind(b"PK\x05\x06")
    assert pos >= 0
    return pos


def central_directory(data):
    """[(entry offset, name, local header offset)] parsed from the classic EOCD (small files only)."""
    eocd = find_eocd(data)
    n, = struct.unpack("<H", data[eocd + 10:eocd + 12])
    cd_off, = struct.unpack("<I", data[eocd + 16:eocd + 20])
    out = []
    p = cd_off
    for _ in range(n):
        assert data[p:p + 4] == b"PK\x01\x02"
        nl, el, cl = struct.unpack("<HHH", data[p + 28:p + 34])
        lho, = struct.unpack("<I", data[p + 42:p + 46])
        out.append((p, data[p + 46:p + 46 + nl].decode(), lho))
        p += 46 + nl + el + cl
    return cd_off, out


def pickle_spans(path):
    """[(start, end)] of the five pickles of a legacy file."""
    spans = []
    with open(path, "rb") as f:
        for _ in range(5):
            start = f.tell()
            for _ in pickletools.genops(f):
                pass
            spans.append((start, f.tell()))
    return spans


class MalformedTest(CkptTestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.folder = workfile("malformed")
        os.makedirs(cls.folder, exist_ok=True)
        cls.base = make_base()
        cls.zip_path = os.path.join(cls.folder, "base.pt")
        cls.legacy_path = os.path.join(cls.folder, "base_legacy.pt")
        torch.save(cls.base, cls.zip_path)
        torch.save(cls.base, cls.legacy_path, _use_new_zipfile_serialization=False)
        with open(cls.zip_path, "rb") as f:
            cls.zip_bytes = f.read()
        with open(cls.legacy_path, "rb") as f:
            cls.legacy_bytes = f.read()

    # ---- helpers ---------------------------------------------------------------------------------------------

    def write(self, name, data):
        path = os.path.join(self.folder, name)
        with open(path, "wb") as f:
            f.write(data)
        return path

    def expect_error(self, path, what, commands=COMMANDS):
        for cmd in commands:
            proc = self.run_ckpt(cmd[0], path, *cmd[1:], timeout=MALFORMED_TIMEOUT)
            self.assert_error_output(proc, path, "%s (%s)" % (what, cmd[0]))

    def expect_partial(self, path, what, healthy, broken):
        """The file opens, `healthy` tensors are listed without error, `broken` ones carry an error, exit 2."""
        self.expect_error(path, what)
        proc = self.run_ckpt("ls", path, "--json", timeout=MALFORMED_TIMEOUT)
        ls = common.parse_json_strict(self, proc.stdout, ["ls", path])
        by = {e["name"]: e for e in ls["tensors"]}
        for n in healthy:
            self.assertIn(n, by, "%s: healthy tensor %s not listed" % (what, n))
            self.assertNotIn("error", by[n], "%s: healthy tensor %s has an error" % (what, n))
        for n in broken:
            self.assertIn(n, by, "%s: broken tensor %s not listed" % (what, n))
            self.assertTrue(by[n].get("error"), "%s: broken tensor %s carries no error" % (what, n))
        err = proc.stderr.decode(errors="replace")
        self.assertGreaterEqual(len([ln for ln in err.splitlines() if ln.strip()]), len(broken))

    # ---- truncation ------------------------------------------------------------------------------------------

    def zip_truncation_offsets(self):
        data = self.zip_bytes
        size = len(data)
        offs = {0, 1, 2, 3, 4, 10, 29, 30, 31, size - 1, size - 2, size - 21, size - 22, size - 23}
        for name, (hdr, start, n) in zip_data_offsets(self.zip_path).items():
            offs |= {hdr, hdr + 4, hdr + 26, hdr + 30, hdr + 31, start - 1, start, start + n // 2,
                     start + n - 1, start + n, start + n + 8}
        cd_off, entries = central_directory(data)
        offs |= {cd_off, cd_off + 1, cd_off + 20, cd_off + 45, cd_off + 46}
        for p, _name, _ in entries:
            offs |= {p + 10, p + 44, p + 50}
        z64 = data.rfind(b"PK\x06\x06")
        loc = data.rfind(b"PK\x06\x07")
        offs |= {z64, z64 + 12, z64 + 40, loc, loc + 8, loc + 19}
        rng = random.Random(5)
        offs |= {rng.randrange(size) for _ in range(20)}
        return sorted(o for o in offs if 0 <= o < size)

    def test_truncated_zip(self):
        offsets = self.zip_truncation_offsets()
        self.assertGreater(len(offsets), 60)
        for off in offsets:
            with self.subTest(truncated_at=off):
                path = self.write("trunc_zip_%d.pt" % off, self.zip_bytes[:off])
                self.expect_error(path, "zip truncated at %d" % off)
                os.remove(path)

    def test_truncated_legacy(self):
        data = self.legacy_bytes
        size = len(data)
        offs = {0, 1, 2, 14, 15, 16, size - 1, size - 4}
        spans = pickle_spans(self.legacy_path)
        for s, e in spans:
            offs |= {s + 1, (s + e) // 2, e - 1}
        storage_start = spans[-1][1]
        offs |= {storage_start, storage_start + 4, storage_start + 8, storage_start + 9,
                 (storage_start + size) // 2}
        rng = random.Random(6)
        offs |= {rng.randrange(size) for _ in range(15)}
        for off in sorted(o for o in offs if 0 <= o < size):
            with self.subTest(truncated_at=off):
                path = self.write("trunc_legacy_%d.pt" % off, data[:off])
                self.expect_error(path, "legacy truncated at %d" % off)
                os.remove(path)

    # ---- storage records ---------------------------------------------------------------------------------------

    def _storages(self):
        return [("0", contiguous_bytes(torch.arange(12, dtype=torch.float32))),
                ("1", contiguous_bytes(torch.ones(4, dtype=torch.float64)))]

    def test_missing_storage_record(self):
        p = PickleWriter().empty_dict().mark()
        p.str("good").tensor("0", "FloatStorage", 12, 0, [12], [1])
        p.str("missing").tensor("7", "FloatStorage", 5, 0, [5], [1])
        p.str("good2").tensor("1", "DoubleStorage", 4, 0, [2, 2], [2, 1])
        p.setitems()
        path = os.path.join(self.folder, "missing_key.pt")
        write_torch_zip(path, p.stop(), self._storages())
        self.expect_partial(path, "missing storage record", ["good", "good2"], ["missing"])

    def test_declared_numel_larger_than_record(self):
        p = PickleWriter().empty_dict().mark()
        p.str("good").tensor("0", "FloatStorage", 12, 0, [12], [1])
        p.str("too_big").tensor("1", "DoubleStorage", 1000, 0, [1000], [1])
        p.setitems()
        path = os.path.join(self.folder, "numel_too_big.pt")
        write_torch_zip(path, p.stop(), self._storages())
        self.expect_partial(path, "declared numel > record", ["good"], ["too_big"])

    def test_view_outside_storage(self):
        p = PickleWriter().empty_dict().mark()
        p.str("good").tensor("0", "FloatStorage", 12, 0, [12], [1])
        p.str("oob_view").tensor("1", "DoubleStorage", 4, 2, [3], [1])
        p.str("oob_stride").tensor("0", "FloatStorage", 12, 0, [4, 4], [4, 1])
        p.setitems()
        path = os.path.join(self.folder, "view_oob.pt")
        write_torch_zip(path, p.stop(), self._storages())
        self.expect_partial(path, "view outside its storage", ["good"], ["oob_view", "oob_stride"])

    def test_record_shorter_than_tensor(self):
        path = os.path.join(self.folder, "short_record.pt")
        src = zipfile.ZipFile(self.zip_path)
        with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
            for info in src.infolist():
                raw = src.read(info.filename)
                if info.filename.endswith("/data/1"):       # storage of "b" (32 x 4 float32)
                    raw = raw[: len(raw) // 2]
                z.writestr(info.filename, raw)
        self.expect_partial(path, "record shorter than its tensor", ["a", "c", "d", "e.0"], ["b"])

    def test_legacy_storage_count_mismatch(self):
        p = PickleWriter().empty_dict().mark()
        p.str("good").tensor("10", "FloatStorage", 12, 0, [12], [1], legacy=True)
        p.str("bad").tensor("20", "DoubleStorage", 4, 0, [4], [1], legacy=True)
        p.setitems()
        path = os.path.join(self.folder, "legacy_count.pt")
        st = self._storages()
        # the header of storage "20" says 400 elements while the pickle says 4 and only 4 follow
        write_legacy(path, p.stop(), [("10", 12, st[0][1]), ("20", 400, st[1][1])])
        self.expect_error(path, "legacy storage count mismatch")

    # ---- zip structure -------------------------------------------------------------------------------------------

    def patched(self, name, patches):
        data = bytearray(self.zip_bytes)
        for off, raw in patches:
            data[off:off + len(raw)] = raw
        return self.write(name, bytes(data))

    def test_local_header_offset_out_of_file(self):
        _cd, entries = central_directory(self.zip_bytes)
        for p, name, _lho in entries:
            if name.endswith("/data.pkl") or name.endswith("/data/0"):
                for label, value in (("far", 0x7FFFFFF0), ("end", len(self.zip_bytes) - 10),
                                     ("garbage", 5)):
                    with self.subTest(entry=name, offset=label):
                        path = self.patched("lho_%s_%s.pt" % (name.replace("/", "_"), label),
                                            [(p + 42, struct.pack("<I", value))])
                        self.expect_error(path, "local header offset of %s -> %s" % (name, label))

    def test_record_size_out_of_file(self):
        _cd, entries = central_directory(self.zip_bytes)
        for p, name, _lho in entries:
            if name.endswith("/data/0") or name.endswith("/data.pkl"):
                with self.subTest(entry=name):
                    path = self.patched("size_%s.pt" % name.replace("/", "_"),
                                        [(p + 20, struct.pack("<II", 0x7FFFFFF0, 0x7FFFFFF0))])
                    self.expect_error(path, "record size of %s out of file" % name)

    def test_central_directory_offset_out_of_file(self):
        data = self.zip_bytes
        eocd = find_eocd(data)
        z64 = data.rfind(b"PK\x06\x06")
        patches = [(eocd + 16, struct.pack("<I", 0x7FFFFF00))]
        if z64 >= 0:
            patches.append((z64 + 48, struct.pack("<Q", 0x7FFFFFFFFF00)))
        path = self.patched("cd_offset.pt", patches)
        self.expect_error(path, "central directory offset out of file")
        patches = [(eocd + 10, struct.pack("<H", 60000))]
        if z64 >= 0:
            patches.append((z64 + 32, struct.pack("<Q", 1 << 40)))
        path = self.patched("cd_count.pt", patches)
        self.expect_error(path, "central directory entry count too large")

    # ---- garbage -----------------------------------------------------------------------------------------------------

    def test_garbage_and_empty(self):
        rng = random.Random(77)
        cases = {
            "empty.pt": b"",
            "garbage.pt": bytes(rng.randrange(256) for _ in range(4096)),
            "pk_garbage.pt": b"PK\x03\x04" + bytes(rng.randrange(256) for _ in range(2000)),
            "legacy_magic_garbage.pt": self.legacy_bytes[:15] + bytes(rng.randrange(256) for _ in range(500)),
            "text.pt": b"this is not a checkpoint\n" * 20,
            "one_byte.pt": b"\x80",
            "zeros.pt": bytes(10000),
        }
        for name, data in cases.items():
            with self.subTest(file=name):
                self.expect_error(self.write(name, data), name)

    def test_missing_path_and_directory(self):
        missing = os.path.join(self.folder, "does_not_exist.pt")
        self.expect_error(missing, "missing file")
        self.expect_error(self.folder, "a directory")

    def test_broken_pickles(self):
        good_tensor = PickleWriter().tensor("0", "FloatStorage", 12, 0, [12], [1]).b[2:]
        cases = {
            "garbage_pickle": bytes(random.Random(3).randrange(256) for _ in range(300)),
            "no_stop": b"\x80\x02}q\x00(X\x01\x00\x00\x00a" + bytes(good_tensor) + b"u",
            "stack_underflow": b"\x80\x02R.",
            "bad_memo": b"\x80\x02h\x07.",
            "bad_opcode": b"\x80\x02}\xff.",
            "setitems_on_list": b"\x80\x02](X\x01\x00\x00\x00aK\x01u.",
            "huge_string_len": b"\x80\x02X\xff\xff\xff\x7fabc.",
            "persid_not_tuple": b"\x80\x02K\x05Q.",
            "empty_data_pkl": b"",
        }
        for name, pkl in cases.items():
            with self.subTest(pickle=name):
                path = os.path.join(self.folder, "pkl_%s.pt" % name)
                write_torch_zip(path, pkl, self._storages())
                self.expect_error(path, name)

    def test_deep_nesting_does_not_crash(self):
        depth = 1_000_000
        p = PickleWriter().empty_dict().mark()
        p.str("good").tensor("0", "FloatStorage", 12, 0, [12], [1])
        p.str("deep").raw(b"]" * depth + b"a" * (depth - 1))
        p.setitems()
        path = os.path.join(self.folder, "deep.pt")
        write_torch_zip(path, p.stop(), self._storages())
        for cmd in ("ls", "info"):
            proc = self.run_ckpt(cmd, path, "--json", timeout=MALFORMED_TIMEOUT)
            self.assertIn(proc.returncode, (0, 2), "%s: exit %d" % (cmd, proc.returncode))
            if proc.returncode == 2:
                self.assert_error_output(proc, path, "deep nesting")

    def test_random_byte_mutations(self):
        """Corrupted bytes anywhere (half of them inside the pickle): exit 0 with valid JSON, or exit 2 with
        `ckpt: FILE` lines; never a signal, never a hang."""
        pkl = zip_data_offsets(self.zip_path)
        pkl_hdr, pkl_start, pkl_size = [v for k, v in pkl.items() if k.endswith("/data.pkl")][0]
        spans = pickle_spans(self.legacy_path)
        targets = {
            "zip": (self.zip_bytes, (pkl_start, pkl_start + pkl_size)),
            "legacy": (self.legacy_bytes, (spans[3][0], spans[3][1])),
        }
        rng = random.Random(4242)
        for fmt, (data, (lo, hi)) in targets.items():
            for i in range(120):
                buf = bytearray(data)
                for _ in range(rng.choice((1, 1, 2, 4))):
                    pos = rng.randrange(lo, hi) if i % 2 == 0 else rng.randrange(len(buf))
                    buf[pos] = rng.choice((0, 0xFF, 0x80, rng.randrange(256), buf[pos] ^ (1 << rng.randrange(8))))
                path = self.write("mut_%s_%d.pt" % (fmt, i), bytes(buf))
                for cmd in ("stats", "info"):
                    with self.subTest(format=fmt, mutation=i, command=cmd):
                        proc = self.run_ckpt(cmd, path, "--json", timeout=MALFORMED_TIMEOUT)
                        self.assertIn(proc.returncode, (0, 2))
                        if proc.returncode == 0:
                            common.parse_json_strict(self, proc.stdout, [cmd, path])
                        else:
                            self.assert_error_output(proc, path, "mutation %d" % i)
                os.remove(path)

    def test_error_lines_survive_hostile_names(self):
        """Names and keys from the file may hold newlines and terminal escapes: the error stays one line per
        error, every line `ckpt: FILE...`, and no raw ESC reaches the terminal."""
        p = PickleWriter().empty_dict().mark()
        p.str("good").tensor("0", "FloatStorage", 12, 0, [12], [1])
        p.str("evil\nname\x1b[31m").tensor("k\x1b]0;title\x07ey\nckpt: fake", "FloatStorage", 5, 0, [5], [1])
        p.setitems()
        path = os.path.join(self.folder, "hostile_names.pt")
        write_torch_zip(path, p.stop(), self._storages())
        for cmd in ("ls", "info", "stats"):
            with self.subTest(command=cmd):
                proc = self.run_ckpt(cmd, path, timeout=MALFORMED_TIMEOUT)
                self.assert_error_output(proc, path, "hostile names (%s)" % cmd)
                self.assertNotIn(b"\x1b", proc.stderr)
                self.assertEqual(len([ln for ln in proc.stderr.split(b"\n") if ln.strip()]), 1, proc.stderr)

    def test_unknown_tensor_name(self):
        proc = self.run_ckpt("stats", self.zip_path, "nope", "--json", timeout=MALFORMED_TIMEOUT)
        self.assert_error_output(proc, self.zip_path, "unknown tensor name")


if __name__ == "__main__":
    common.main()
