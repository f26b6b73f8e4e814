"""MIME definitions: compiled by update-mime-database into a temporary data directory (the system's
freedesktop.org.xml plus ours, nothing else), then `xdg-mime query filetype` on a fixture of each format.
The fixtures are written by the formats' own libraries (PyTorch, NumPy, h5py) or byte by byte from the format
specification (safetensors, GGUF), and the TensorFlow index is a real one from ../shared/fixtures/real/tf."""

import json
import os
import shutil
import struct
import unittest
import zipfile

import h5py
import numpy as np
import torch

import common
from common import APP_ID, packaging_file, need_tool, run, workfile

SYSTEM_TYPES = "/usr/share/mime/packages/freedesktop.org.xml"
TF_FIXTURES = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..",
                                            "shared", "fixtures", "real", "tf", "lso_ckpt_tf2.2"))


ANY = "any"  # a checkpoint whose tensors are not counted here


def write_safetensors(path):
    data = np.arange(6, dtype=np.float32).tobytes()
    header = json.dumps({"w": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, len(data)]}}).encode()
    header += b" " * (-len(header) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(header)) + header + data)


def write_gguf(path):
    # GGUF v3: magic, version, tensor count, metadata count; one string key and one f32 tensor, 32-byte aligned.
    def string(s):
        return struct.pack("<Q", len(s)) + s.encode()
    out = b"GGUF" + struct.pack("<IQQ", 3, 1, 1)
    out += string("general.architecture") + struct.pack("<I", 8) + string("test")
    out += string("w") + struct.pack("<I", 1) + struct.pack("<Q", 4) + struct.pack("<I", 0) + struct.pack("<Q", 0)
    out += b"\0" * (-len(out) % 32)
    out += np.ones(4, dtype=np.float32).tobytes()
    with open(path, "wb") as f:
        f.write(out)


def make_fixtures(d):
    """{file name: (expected MIME type, number of tensors written, or None where it is not a checkpoint)}"""
    sd = {"layer.weight": torch.randn(3, 4), "layer.bias": torch.zeros(3)}
    expected = {}
    torch.save(sd, os.path.join(d, "model.pt"))
    expected["model.pt"] = ("application/x-pytorch", 2)
    for name in ("model.pth", "last.ckpt", "checkpoint.pth.tar", "pytorch_model.bin"):
        shutil.copy(os.path.join(d, "model.pt"), os.path.join(d, name))
        expected[name] = ("application/x-pytorch", 2)  # .bin: by the zip magic and the ARCHIVE/data.pkl entry
    torch.save(sd, os.path.join(d, "legacy_model.bin"), _use_new_zipfile_serialization=False)
    expected["legacy_model.bin"] = ("application/x-pytorch-legacy", 2)
    torch.jit.script(torch.nn.Linear(2, 2)).save(os.path.join(d, "scripted.bin"))
    expected["scripted.bin"] = ("application/x-pytorch", 2)  # data.pkl is not the first entry here

    write_safetensors(os.path.join(d, "model.safetensors"))
    expected["model.safetensors"] = ("application/x-safetensors", 1)
    with open(os.path.join(d, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {}, "weight_map": {"w": "model.safetensors"}}, f)
    expected["model.safetensors.index.json"] = ("application/x-sharded-checkpoint-index", 1)

    write_gguf(os.path.join(d, "model.gguf"))
    expected["model.gguf"] = ("application/x-gguf", 1)
    shutil.copy(os.path.join(d, "model.gguf"), os.path.join(d, "gguf_model.bin"))
    expected["gguf_model.bin"] = ("application/x-gguf", 1)

    np.save(os.path.join(d, "array.npy"), np.arange(10, dtype=np.int16))
    expected["array.npy"] = ("application/x-npy", 1)
    shutil.copy(os.path.join(d, "array.npy"), os.path.join(d, "array.bin"))
    expected["array.bin"] = ("application/x-npy", 1)
    np.savez(os.path.join(d, "arrays.npz"), a=np.zeros(3), b=np.ones((2, 2)))
    expected["arrays.npz"] = ("application/x-npz", 2)

    with h5py.File(os.path.join(d, "model.h5"), "w") as f:
        f.attrs["keras_version"] = "2.11.0"
        f.create_dataset("model_weights/dense/dense/kernel:0", data=np.ones((2, 3), dtype=np.float32))
    expected["model.h5"] = ("application/x-hdf", 1)
    shutil.copy(os.path.join(d, "model.h5"), os.path.join(d, "model.weights.h5"))
    expected["model.weights.h5"] = ("application/x-keras-weights", 1)
    with zipfile.ZipFile(os.path.join(d, "model.keras"), "w") as z:
        z.writestr("metadata.json", json.dumps({"keras_version": "3.0.0"}))
        z.writestr("config.json", json.dumps({"class_name": "Sequential", "config": {}}))
        z.write(os.path.join(d, "model.weights.h5"), "model.weights.h5")
    expected["model.keras"] = ("application/x-keras", 1)

    # Negative controls: a zip that is not a torch archive, and bytes with no signature, both named .bin.
    with zipfile.ZipFile(os.path.join(d, "archive.bin"), "w") as z:
        z.writestr("notes/data.txt", "not a checkpoint")
    expected["archive.bin"] = ("application/zip", None)
    with open(os.path.join(d, "random.bin"), "wb") as f:
        f.write(bytes(range(7, 250)) * 4)
    expected["random.bin"] = ("application/octet-stream", None)
    return expected


class MimeTypes(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.data = workfile("data")
        os.makedirs(os.path.join(cls.data, "mime", "packages"))
        cls.home = workfile("home")
        os.makedirs(cls.home)
        cls.fixtures = workfile("fixtures")
        os.makedirs(cls.fixtures)
        cls.expected = make_fixtures(cls.fixtures)
        if os.path.isdir(TF_FIXTURES):
            shutil.copy(os.path.join(TF_FIXTURES, "ckpt.index"), cls.fixtures)
            shutil.copy(os.path.join(TF_FIXTURES, "ckpt.data-00000-of-00002"), cls.fixtures)
            shutil.copy(os.path.join(TF_FIXTURES, "ckpt.data-00001-of-00002"), cls.fixtures)
            # Opened as the whole bundle; its tensors are counted by the interop tests.
            cls.expected["ckpt.index"] = ("application/x-tensorflow-checkpoint", ANY)
            cls.expected["ckpt.data-00000-of-00002"] = ("application/x-tensorflow-checkpoint-data", ANY)
        else:
            print("TensorFlow fixtures not found at %s (they live in ../shared): .index not checked" % TF_FIXTURES)

    def compile_database(self):
        tool = need_tool(self, "update-mime-database", "shared-mime-info")
        packages = os.path.join(self.data, "mime", "packages")
        shutil.copy(SYSTEM_TYPES, packages)
        shutil.copy(packaging_file(APP_ID + ".mime.xml"), os.path.join(packages, APP_ID + ".xml"))
        proc = run([tool, "-V", os.path.join(self.data, "mime")])
        self.assertEqual(proc.returncode, 0, proc.stderr)
        # update-mime-database reports definitions it cannot read on stderr but still exits 0.
        self.assertNotIn(APP_ID, proc.stderr, proc.stderr)
        self.assertNotIn("Error", proc.stderr, proc.stderr)

    def query_env(self):
        """xdg-mime asks gio (GNOME) or mimetype (generic): both read shared-mime-info's database. Without
        either it would fall back to file(1), which does not."""
        env = dict(os.environ, XDG_DATA_HOME=self.home, XDG_DATA_DIRS=self.data)
        env.pop("KDE_FULL_SESSION", None)
        env.pop("KDE_SESSION_VERSION", None)
        env.pop("DISPLAY", None)
        env.pop("WAYLAND_DISPLAY", None)
        if shutil.which("gio"):
            env["XDG_CURRENT_DESKTOP"] = "GNOME"
        elif shutil.which("mimetype"):
            env["XDG_CURRENT_DESKTOP"] = "X-Generic"
        else:
            self.fail("xdg-mime needs gio (Debian package libglib2.0-bin) or mimetype (libfile-mimeinfo-perl) "
                      "to read the shared-mime-info database")
        return env

    def test_query_filetype(self):
        self.compile_database()
        xdg_mime = need_tool(self, "xdg-mime", "xdg-utils")
        env = self.query_env()
        expected = self.expected
        got = {}
        for name in sorted(expected):
            proc = run([xdg_mime, "query", "filetype", os.path.join(self.fixtures, name)], env=env)
            self.assertEqual(proc.returncode, 0, "%s: %s" % (name, proc.stderr))
            got[name] = proc.stdout.strip()
        self.assertEqual(got, {name: t for name, (t, _) in expected.items()})

    def test_program_opens_every_type(self):
        """What the desktop file offers to open, ckpt opens: each fixture of one of our types has the tensors
        written into it."""
        ckpt = common.ARGS.ckpt
        self.assertTrue(os.access(ckpt, os.X_OK), "no ckpt binary at %r" % ckpt)
        for name, (_, tensors) in sorted(self.expected.items()):
            if tensors is None:
                continue
            with self.subTest(fixture=name):
                proc = run([ckpt, "info", os.path.join(self.fixtures, name), "--json"])
                self.assertEqual(proc.returncode, 0, proc.stderr)
                if tensors != ANY:
                    self.assertEqual(json.loads(proc.stdout)["tensors"], tensors)

    def test_unknown_without_our_definitions(self):
        """The same query against the system's types alone: the checkpoint types come from our file."""
        bare = workfile("bare")
        os.makedirs(os.path.join(bare, "mime", "packages"))
        shutil.copy(SYSTEM_TYPES, os.path.join(bare, "mime", "packages"))
        proc = run([need_tool(self, "update-mime-database", "shared-mime-info"), os.path.join(bare, "mime")])
        self.assertEqual(proc.returncode, 0, proc.stderr)
        env = self.query_env()
        env["XDG_DATA_DIRS"] = bare
        proc = run([need_tool(self, "xdg-mime", "xdg-utils"), "query", "filetype",
                    os.path.join(self.fixtures, "model.gguf")], env=env)
        self.assertEqual(proc.stdout.strip(), "application/octet-stream")


if __name__ == "__main__":
    common.main()
