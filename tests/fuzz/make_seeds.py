"""Writes the small seed files of every fuzz target (and of tests/core/tst_corruption.cpp) into
tests/fuzz/seeds/<target>/, with the formats' reference writers where they are installed (torch.save,
torch.jit.save, numpy.save/savez, h5py) and the interop tests' byte-exact builders otherwise (safetensors,
GGUF, the sharded index). Run with Debian's /usr/bin/python3; the outputs are committed, so that building the
fuzzers and the corruption test needs no Python."""

import io
import json
import os
import shutil
import struct
import sys
import zipfile

here = os.path.dirname(os.path.abspath(__file__))
root = os.path.dirname(os.path.dirname(here))
sys.argv = sys.argv[:1]
sys.path.insert(0, os.path.join(root, "tests", "interop"))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import h5py  # noqa: E402

import test_gguf as G  # noqa: E402
from test_safetensors import write_safetensors  # noqa: E402

out = os.path.join(here, "seeds")


def folder(name):
    d = os.path.join(out, name)
    os.makedirs(d, exist_ok=True)
    return d


def put(target, name, data):
    with open(os.path.join(folder(target), name), "wb") as f:
        f.write(data)


def saved(obj, **kw):
    b = io.BytesIO()
    torch.save(obj, b, **kw)
    return b.getvalue()


torch.manual_seed(7)
np.random.seed(7)

# ---- PyTorch: zip, legacy, TorchScript --------------------------------------------------------------------
small = {"w": torch.arange(12, dtype=torch.float32).reshape(3, 4), "b": torch.tensor([1.5, -2.0]),
         "n": torch.tensor(7, dtype=torch.int64)}
mixed = {"h": torch.randn(2, 3).half(), "bf": torch.randn(4).bfloat16(), "i8": torch.arange(-3, 3, dtype=torch.int8),
         "t": torch.randn(4, 4).t(), "view": None, "opt": {"step": 3, "lr": 0.01, "betas": (0.9, 0.999)},
         "names": ["a", "b"], "flag": True}
mixed["view"] = mixed["t"][1:3]
for name, obj in (("small", small), ("mixed", mixed)):
    put("torchzip", name + ".pt", saved(obj))
    put("legacy", name + "_legacy.pt", saved(obj, _use_new_zipfile_serialization=False))
    put("legacy", name + "_legacy_p4.pt", saved(obj, _use_new_zipfile_serialization=False, pickle_protocol=4))


class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(3, 2)
        self.register_buffer("scale", torch.tensor([0.5, 2.0]))

    def forward(self, x):
        return self.lin(x) * self.scale


b = io.BytesIO()
torch.jit.save(torch.jit.script(Tiny()), b)
put("torchscript", "tiny.pt", b.getvalue())

# ---- safetensors ------------------------------------------------------------------------------------------
tmp = os.path.join(out, ".tmp")
os.makedirs(tmp, exist_ok=True)
st = {"w": ("F32", (3, 4), np.arange(12, dtype=np.float32).tobytes()),
      "h": ("F16", (2,), np.array([1.5, -2], dtype=np.float16).tobytes()),
      "i": ("I64", (2, 1), np.array([7, -9], dtype=np.int64).tobytes()),
      "e": ("BF16", (0,), b"")}
write_safetensors(os.path.join(tmp, "a.safetensors"), st, metadata={"format": "pt"})
shutil.copy(os.path.join(tmp, "a.safetensors"), os.path.join(folder("safetensors"), "small.safetensors"))

# ---- GGUF -------------------------------------------------------------------------------------------------
rng = np.random.default_rng(7)
q8, _ = G.q8_0_blocks(rng, 2)
q4, _ = G.q4_0_blocks(rng, 1)
kvs = [("general.architecture", G.STRING, "llama"), ("general.alignment", G.U32, 32),
       ("llama.block_count", G.U64, 2), ("tokenizer.ggml.tokens", G.ARRAY, (G.STRING, ["a", "bc"])),
       ("f", G.F64, 0.25), ("flag", G.BOOL, True)]
tensors = [("w", [4, 2], "f32", np.arange(8, dtype=np.float32).tobytes()),
           ("h", [3], "f16", np.array([1, 2, 3], dtype=np.float16).tobytes()),
           ("q8", [64], "q8_0", q8), ("q4", [32], "q4_0", q4)]
put("gguf", "small.gguf", G.build_gguf(kvs, tensors))

# ---- NumPy ------------------------------------------------------------------------------------------------
for name, arr in (("f32", np.arange(12, dtype=np.float32).reshape(3, 4)),
                  ("fortran_f64", np.asfortranarray(np.arange(6, dtype=np.float64).reshape(2, 3))),
                  ("be_i32", np.arange(5, dtype=">i4")), ("bool", np.array([True, False])),
                  ("scalar_c64", np.array(1 + 2j, dtype=np.complex64))):
    b = io.BytesIO()
    np.save(b, arr)
    put("npy", name + ".npy", b.getvalue())
for name, fn in (("plain", np.savez), ("compressed", np.savez_compressed)):
    b = io.BytesIO()
    fn(b, a=np.arange(6, dtype=np.float32).reshape(2, 3), b=np.array([1, 2], dtype=np.uint8))
    put("npz", name + ".npz", b.getvalue())

# ---- Hugging Face sharded index: the JSON (its shards are written by the fuzz target itself) -------------
index = {"metadata": {"total_size": 16}, "weight_map": {"w": "a.safetensors", "v": "b.safetensors",
                                                        "x": "c.safetensors"}}
put("shardindex", "model.safetensors.index.json", json.dumps(index, indent=2).encode())

# ---- Keras / HDF5 -----------------------------------------------------------------------------------------
# fuzz_keras reads a mode byte first: 'w' the HDF5 child's answer (the parent's decoder), 'z' a .keras zip,
# 'h' an HDF5 file.
h5 = os.path.join(tmp, "w.h5")
with h5py.File(h5, "w") as f:
    f.attrs["keras_version"] = "2.11.0"
    f.attrs["backend"] = "tensorflow"
    mw = f.create_group("model_weights")
    mw.attrs["layer_names"] = np.array([b"dense"])
    g = mw.create_group("dense")
    g.attrs["weight_names"] = np.array([b"dense/kernel:0", b"dense/bias:0"])
    g.create_dataset("dense/kernel:0", data=np.arange(6, dtype=np.float32).reshape(3, 2))
    g.create_dataset("dense/bias:0", data=np.zeros(2, dtype=np.float32), chunks=(2,), compression="gzip")
with open(h5, "rb") as f:
    h5bytes = f.read()
put("keras", "h5.bin", b"h" + h5bytes)
kz = io.BytesIO()
with zipfile.ZipFile(kz, "w") as z:
    z.writestr("config.json", json.dumps({"class_name": "Sequential", "config": {"name": "s"}}))
    z.writestr("metadata.json", json.dumps({"keras_version": "3.0.0", "date_saved": "2024-01-01"}))
    z.writestr("model.weights.h5", h5bytes)
put("keras", "zip.bin", b"z" + kz.getvalue())
put("h5", "small.h5", h5bytes)


def wire_str(s):
    s = s.encode() if isinstance(s, str) else s
    return struct.pack("<Q", len(s)) + s


def wire_answer():
    """What the HDF5 child sends for a file with one dataset in place and one read into memory."""
    w = struct.pack("<Q", 0x4b455241534f4b) + wire_str("Keras 2 HDF5")
    mem = np.zeros(2, dtype=np.float32).tobytes()
    w += struct.pack("<Q", 1) + wire_str("w.h5:/b") + wire_str(mem)                  # sources
    w += struct.pack("<Q", 2)                                                        # storages
    w += wire_str("/k") + struct.pack("<QQqQQ", 6, 24, -1, 0, 0)
    w += wire_str("/b") + struct.pack("<QQqQQ", 6, 8, 0, 0, 0)
    w += struct.pack("<Q", 2)                                                        # tensors
    w += wire_str("k") + struct.pack("<QQ", 6, 2) + struct.pack("<qqqq", 3, 2, 2, 1) + struct.pack("<q", 0)
    w += wire_str("")
    w += wire_str("b") + struct.pack("<QQ", 6, 1) + struct.pack("<qq", 2, 1) + struct.pack("<q", 1) + wire_str("")
    w += struct.pack("<Q", 2)                                                        # values
    w += wire_str("keras_version") + struct.pack("<QqQ", 6, 0, 0) + wire_str("2.11.0")
    w += wire_str("n") + struct.pack("<QqQ", 2, 5, 0) + wire_str("")
    w += struct.pack("<Q", 1) + struct.pack("<Q", 1) + wire_str("a warning") + wire_str("k")   # findings
    return w


put("keras", "wire.bin", b"w" + wire_answer())
put("keras", "wire_error.bin", b"w" + struct.pack("<QQ", 0x4b45524153455552, 3) + wire_str("msg") + wire_str("obj"))

# ---- TensorFlow protobufs: [u16 length][BundleEntryProto][TrackableObjectGraph] ---------------------------


def varint(v):
    o = b""
    while True:
        c = v & 0x7F
        v >>= 7
        if v:
            o += bytes([c | 0x80])
        else:
            return o + bytes([c])


def field(num, wire, payload):
    key = varint(num << 3 | wire)
    if wire == 0:
        return key + varint(payload)
    return key + varint(len(payload)) + payload


dims = b"".join(field(2, 2, field(1, 0, d)) for d in (2, 3))
entry = field(1, 0, 1) + field(2, 2, dims) + field(3, 0, 0) + field(4, 0, 0) + field(5, 0, 24) + \
    b"\x35" + struct.pack("<I", 12345)
# TrackableObjectGraph: nodes { children { node_id, local_name } attributes { name, full_name, checkpoint_key }
#                                slot_variables { original_variable_node_id, slot_name, slot_variable_node_id } }
root_node = field(1, 2, field(1, 0, 1) + field(2, 2, b"layer")) + field(1, 2, field(1, 0, 2) + field(2, 2, b"opt"))
var_node = field(2, 2, field(1, 2, b"VARIABLE_VALUE") + field(2, 2, b"w") + field(3, 2, b"a"))
opt_node = field(3, 2, field(1, 0, 1) + field(2, 2, b"m") + field(3, 0, 1))
graph = field(1, 2, root_node) + field(1, 2, var_node) + field(1, 2, opt_node)
put("tfproto", "entry_graph.bin", struct.pack("<H", len(entry)) + entry + graph)

shutil.rmtree(tmp)
print("seeds written to", out)
