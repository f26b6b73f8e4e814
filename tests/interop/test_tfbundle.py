"""TensorFlow V2 bundles: the real files in ../shared/fixtures/real/tf, read by `ckpt` and by an independent
parser written here (LevelDB table + raw Snappy + protobuf wire format), with no TensorFlow involved.

    /usr/bin/python3 tests/interop/test_tfbundle.py --ckpt build/dev/app/ckpt --workdir /tmp/ckpt-interop
"""

import os
import struct
import unittest

import common

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.normpath(os.path.join(HERE, "..", "..", "..", "shared", "fixtures", "real", "tf"))

TF_DTYPES = {1: "float32", 2: "float64", 3: "int32", 4: "uint8", 5: "int16", 6: "int8", 8: "complex64",
             9: "int64", 10: "bool", 14: "bfloat16", 17: "uint16", 18: "complex128", 19: "float16",
             22: "uint32", 23: "uint64"}
DT_STRING = 7
SNAPPY_BLOCKS = []  # paths of blocks the test parser decompressed


# ---- an independent reader ----------------------------------------------------------------------------------

def varint(b, pos):
    v = shift = 0
    while True:
        c = b[pos]
        pos += 1
        v |= (c & 0x7F) << shift
        shift += 7
        if not c & 0x80:
            return v, pos


def crc32c(data, crc=0):
    crc ^= 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def unmask(m):
    r = (m - 0xA282EAD8) & 0xFFFFFFFF
    return ((r >> 17) | (r << 15)) & 0xFFFFFFFF


def snappy_decompress(src):
    """Raw Snappy (no framing): varint length, then literals and copies."""
    n, pos = varint(src, 0)
    out = bytearray()
    while pos < len(src):
        tag = src[pos]
        pos += 1
        kind = tag & 3
        if kind == 0:
            length = tag >> 2
            if length >= 60:
                extra = length - 59
                length = int.from_bytes(src[pos:pos + extra], "little")
                pos += extra
            length += 1
            out += src[pos:pos + length]
            pos += length
            continue
        if kind == 1:
            length = ((tag >> 2) & 7) + 4
            offset = ((tag >> 5) << 8) | src[pos]
            pos += 1
        elif kind == 2:
            length = (tag >> 2) + 1
            offset = int.from_bytes(src[pos:pos + 2], "little")
            pos += 2
        else:
            length = (tag >> 2) + 1
            offset = int.from_bytes(src[pos:pos + 4], "little")
            pos += 4
        for _ in range(length):
            out.append(out[-offset])
    assert len(out) == n, "snappy length mismatch"
    return bytes(out)


def read_block(data, offset, size):
    stored = data[offset:offset + size]
    btype = data[offset + size]
    (crc,) = struct.unpack_from("<I", data, offset + size + 1)
    assert unmask(crc) == crc32c(data[offset:offset + size + 1]), "block checksum"
    assert btype in (0, 1), "block type"
    if btype == 1:
        SNAPPY_BLOCKS.append(offset)
    contents = snappy_decompress(stored) if btype == 1 else stored
    (n,) = struct.unpack_from("<I", contents, len(contents) - 4)
    limit = len(contents) - 4 - 4 * n
    pos, key, out = 0, b"", []
    while pos < limit:
        shared, pos = varint(contents, pos)
        non_shared, pos = varint(contents, pos)
        vlen, pos = varint(contents, pos)
        key = key[:shared] + contents[pos:pos + non_shared]
        pos += non_shared
        out.append((key, contents[pos:pos + vlen]))
        pos += vlen
    return out


def read_table(path):
    with open(path, "rb") as f:
        data = f.read()
    footer = data[-48:]
    assert struct.unpack_from("<Q", footer, 40)[0] == 0xDB4775248B80FB57
    pos = 0
    _, pos = varint(footer, pos)
    _, pos = varint(footer, pos)
    ioff, pos = varint(footer, pos)
    isize, pos = varint(footer, pos)
    entries = []
    for _, handle in read_block(data, ioff, isize):
        off, p = varint(handle, 0)
        size, _ = varint(handle, p)
        entries += read_block(data, off, size)
    return entries


def fields(msg):
    """[(field, wire, value)] of a protobuf message; value is int or bytes."""
    pos, out = 0, []
    while pos < len(msg):
        tag, pos = varint(msg, pos)
        field, wire = tag >> 3, tag & 7
        if wire == 0:
            v, pos = varint(msg, pos)
        elif wire == 1:
            v, pos = msg[pos:pos + 8], pos + 8
        elif wire == 5:
            v, pos = struct.unpack_from("<I", msg, pos)[0], pos + 4
        elif wire == 2:
            n, pos = varint(msg, pos)
            v, pos = msg[pos:pos + n], pos + n
        else:
            raise ValueError("wire type %d" % wire)
        out.append((field, wire, v))
    return out


def bundle_entries(index_path):
    """{key: (dtype, shape, shard, offset, size)} of every tensor entry but slices."""
    table = read_table(index_path)
    assert table[0][0] == b""
    out = {}
    for key, value in table[1:]:
        dtype, shape, shard, offset, size = 0, [], 0, 0, 0
        for f, _, v in fields(value):
            if f == 1:
                dtype = v
            elif f == 2:
                for g, _, d in fields(v):
                    if g == 2:
                        shape.append(dict((h, x) for h, _, x in fields(d)).get(1, 0))
            elif f == 3:
                shard = v
            elif f == 4:
                offset = v
            elif f == 5:
                size = v
        out[key.decode()] = (dtype, shape, shard, offset, size)
    return out


def expected_name(key):
    """The documented rule for keys (the object graph gives the same names on these files)."""
    suffix = "/.ATTRIBUTES/VARIABLE_VALUE"
    if key.endswith(suffix):
        key = key[:-len(suffix)]
    if "/.OPTIMIZER_SLOT/" in key:
        key = key[:key.index("/.OPTIMIZER_SLOT/")] + "/" + key.rsplit("/", 1)[1]
    return key.replace("/", ".")


def bundles():
    """(directory, prefix) of every V2 bundle among the fixtures."""
    out = []
    for d in sorted(os.listdir(FIXTURES)):
        full = os.path.join(FIXTURES, d)
        for f in sorted(os.listdir(full)):
            if f.endswith(".index"):
                out.append((full, os.path.join(full, f[:-len(".index")])))
    return out


class TestTfBundle(common.CkptTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        if not os.path.isdir(FIXTURES):
            raise unittest.SkipTest("real TensorFlow fixtures not found at %s (they live in ../shared, "
                                    "outside a user's clone)" % FIXTURES)

    def test_every_bundle_lists_exactly_its_tensors(self):
        found = bundles()
        self.assertGreaterEqual(len(found), 8)
        for directory, prefix in found:
            with self.subTest(bundle=directory):
                entries = bundle_entries(prefix + ".index")
                expected = sorted((expected_name(k), TF_DTYPES[d], s, k, off, size)
                                  for k, (d, s, _, off, size) in entries.items() if d != DT_STRING)
                ls = self.ckpt_json("ls", prefix + ".index")
                self.assertEqual(ls["format"], "tensorflow")
                self.assertEqual(ls["findings"], [])
                got = sorted((t["name"], t["dtype"], t["shape"], t["storage_key"], t["data_offset"], t["nbytes"])
                             for t in ls["tensors"])
                self.assertEqual(got, expected)
                # String tensors are values, not tensors.
                info = self.ckpt_json("info", prefix + ".index")
                names = [v["name"] for v in info["values"]]
                for k, (d, *_rest) in entries.items():
                    if d == DT_STRING:
                        self.assertIn(expected_name(k), names)

    def test_half_plus_two_values(self):
        for d in ("saved_model_half_plus_two_cpu", "saved_model_half_plus_two_tf2_cpu"):
            with self.subTest(bundle=d):
                stats = self.ckpt_json("stats", os.path.join(FIXTURES, d, "variables.index"))
                by = {t["name"]: t for t in stats["tensors"]}
                self.assertEqual((by["a"]["min"], by["a"]["max"]), (0.5, 0.5))
                self.assertEqual((by["b"]["min"], by["b"]["max"]), (2.0, 2.0))

    def test_values_match_shard_bytes(self):
        """Every float32/int64 scalar's value as ckpt reads it equals the bytes at its entry's offset."""
        for directory, prefix in bundles():
            entries = bundle_entries(prefix + ".index")
            nshards = len([f for f in os.listdir(directory) if ".data-" in f])
            stats = {t["name"]: t for t in self.ckpt_json("stats", prefix + ".index")["tensors"]}
            for key, (dtype, shape, shard, offset, size) in entries.items():
                if shape or dtype not in (1, 9):
                    continue
                with open("%s.data-%05d-of-%05d" % (prefix, shard, nshards), "rb") as f:
                    f.seek(offset)
                    raw = f.read(size)
                value = struct.unpack("<f" if dtype == 1 else "<q", raw)[0]
                with self.subTest(key=key):
                    self.assertEqual(stats[expected_name(key)]["min"], value)

    def test_object_graph_names_and_slots(self):
        ls = self.ckpt_json("ls", os.path.join(FIXTURES, "lso_ckpt_tf2.2"))
        names = {t["name"]: t for t in ls["tensors"]}
        self.assertIn("layer_with_weights-0.kernel", names)
        self.assertEqual(names["layer_with_weights-0.kernel.momentum"]["storage_key"],
                         "layer_with_weights-0/kernel/.OPTIMIZER_SLOT/optimizer/base_optimizer/momentum/"
                         ".ATTRIBUTES/VARIABLE_VALUE")
        self.assertEqual(names["optimizer.base_optimizer.iter"]["dtype"], "int64")
        info = self.ckpt_json("info", os.path.join(FIXTURES, "lso_ckpt_tf2.2"))
        values = {v["name"]: v for v in info["values"]}
        self.assertEqual(values["checkpoint.all_model_checkpoint_paths"]["value"], ["ckpt"])
        self.assertEqual(values["checkpoint.model_checkpoint_path"]["value"], "ckpt")
        self.assertEqual(values["_CHECKPOINTABLE_OBJECT_GRAPH"]["type"], "bytes")
        self.assertIn("object graph", info["format_detail"])

    def test_every_way_of_naming_a_bundle_gives_the_same_tensors(self):
        for directory, prefix in bundles():
            with self.subTest(bundle=directory):
                shard = prefix + ".data-00000-of-%05d" % len([f for f in os.listdir(directory) if ".data-" in f])
                lists = []
                for path in (prefix + ".index", prefix, shard, directory):
                    ls = self.ckpt_json("ls", path)
                    lists.append([(t["name"], t["dtype"], t["shape"], t["data_offset"]) for t in ls["tensors"]])
                for other in lists[1:]:
                    self.assertEqual(other, lists[0])

    def test_v1_saver_refused(self):
        for path in (os.path.join(FIXTURES, "bad_v1_saver", "export"), os.path.join(FIXTURES, "bad_v1_saver")):
            with self.subTest(path=path):
                proc = self.run_ckpt("ls", path)
                self.assertEqual(proc.returncode, 2)
                self.assertIn("TensorFlow V1 checkpoints are not supported", proc.stderr.decode())
                self.assertEqual(proc.stdout, b"")

    def test_independent_parser_reads_snappy_blocks(self):
        """The fixtures README says these two have Snappy data blocks: make sure the test parser saw them."""
        for d in ("saved_model_half_plus_two_cpu", "saved_model_half_plus_two_tf2_cpu"):
            del SNAPPY_BLOCKS[:]
            self.assertTrue(bundle_entries(os.path.join(FIXTURES, d, "variables.index")))
            self.assertTrue(SNAPPY_BLOCKS, d)


if __name__ == "__main__":
    common.main()
