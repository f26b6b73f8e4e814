// TensorFlow V2 bundles: tables built here byte by byte (LevelDB table format, BundleHeaderProto /
// BundleEntryProto on the wire), each malformed case with the message a user sees, plus the real files of
// ../shared/fixtures/real/tf when they are there.

#include "testutil.h"

#include "analysis/elements.h"
#include "analysis/stats.h"
#include "formats/tfbundle.h"

#include <QTemporaryDir>
#include <QTest>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <map>
#include <set>

using namespace testutil;
namespace fs = std::filesystem;

namespace {

std::string u32le(std::uint32_t v) {
    std::string s(4, '\0');
    putU32(s, 0, v);
    return s;
}
std::uint32_t crcOf(const std::string& s) {
    return ckpt::crc32c({reinterpret_cast<const std::uint8_t*>(s.data()), s.size()});
}

using KV = std::vector<std::pair<std::string, std::string>>;

// Block contents: prefix-compressed entries, a restart point every `interval` entries, the restart array.
std::string blockContents(const KV& kv, int interval = 16) {
    std::string b, prev;
    std::vector<std::uint32_t> restarts;
    for (std::size_t i = 0; i < kv.size(); ++i) {
        std::size_t shared = 0;
        if (i % static_cast<std::size_t>(interval) == 0) {
            restarts.push_back(static_cast<std::uint32_t>(b.size()));
        } else {
            while (shared < prev.size() && shared < kv[i].first.size() && prev[shared] == kv[i].first[shared])
                ++shared;
        }
        b += varint(shared) + varint(kv[i].first.size() - shared) + varint(kv[i].second.size());
        b += kv[i].first.substr(shared) + kv[i].second;
        prev = kv[i].first;
    }
    if (restarts.empty())
        restarts.push_back(0);
    for (auto r : restarts)
        b += u32le(r);
    return b + u32le(static_cast<std::uint32_t>(restarts.size()));
}

std::string withTrailer(const std::string& contents, char type = 0) {
    const std::string typed = contents + type;
    return typed + u32le(ckpt::maskCrc32c(crcOf(typed)));
}

struct TableParts {
    std::string data; // data block contents (before the trailer)
    bool corruptCrc = false;
    std::uint64_t indexOffsetOverride = 0;
    char type = 0; // 1: `data` is already Snappy-compressed
};

// Raw Snappy with literals only: the uncompressed length, then literal runs of at most 60 bytes.
std::string snappyLiterals(const std::string& s) {
    std::string out;
    std::uint64_t n = s.size();
    while (n >= 0x80) {
        out += static_cast<char>((n & 0x7f) | 0x80);
        n >>= 7;
    }
    out += static_cast<char>(n);
    for (std::size_t at = 0; at < s.size(); at += 60) {
        const std::string run = s.substr(at, 60);
        out += static_cast<char>((run.size() - 1) << 2);
        out += run;
    }
    return out;
}

std::string handle(std::uint64_t off, std::uint64_t size) {
    return varint(off) + varint(size);
}

std::string buildTable(const TableParts& p) {
    std::string file = withTrailer(p.data, p.type);
    if (p.corruptCrc)
        file[file.size() - 1] = static_cast<char>(file.back() ^ 0x55);
    const std::uint64_t dataSize = p.data.size();
    const std::uint64_t metaOff = file.size();
    const std::string meta = blockContents({});
    file += withTrailer(meta);
    const std::uint64_t indexOff = file.size();
    const std::string index = blockContents({{"\xff", handle(0, dataSize)}}, 1);
    file += withTrailer(index);
    std::string footer = handle(metaOff, meta.size()) +
                         handle(p.indexOffsetOverride ? p.indexOffsetOverride : indexOff, index.size());
    footer.resize(40, '\0');
    std::string magic(8, '\0');
    putU64(magic, 0, 0xdb4775248b80fb57ull);
    return file + footer + magic;
}

std::string header(int shards = 1) {
    return fieldVarint(1, static_cast<std::uint64_t>(shards)) + fieldBytes(3, fieldVarint(1, 1));
}
std::string shapeProto(const std::vector<std::int64_t>& dims) {
    std::string s;
    for (auto d : dims)
        s += fieldBytes(2, fieldVarint(1, static_cast<std::uint64_t>(d)));
    return s;
}
std::string entry(int dtype, const std::vector<std::int64_t>& dims, std::uint64_t offset, std::uint64_t size,
                  int shard = 0) {
    std::string e = fieldVarint(1, static_cast<std::uint64_t>(dtype)) + fieldBytes(2, shapeProto(dims));
    if (shard)
        e += fieldVarint(3, static_cast<std::uint64_t>(shard));
    if (offset)
        e += fieldVarint(4, offset);
    return e + fieldVarint(5, size);
}

std::string floats(std::initializer_list<float> v) {
    std::string s;
    for (float f : v)
        s.append(reinterpret_cast<const char*>(&f), 4);
    return s;
}

// A string tensor's bytes: varint lengths, masked CRC of the lengths (as u32 LE), the strings.
std::string stringTensor(const std::vector<std::string>& strs) {
    std::string lens, fixed, data;
    for (const auto& s : strs) {
        lens += varint(s.size());
        fixed += u32le(static_cast<std::uint32_t>(s.size()));
        data += s;
    }
    return lens + u32le(ckpt::maskCrc32c(crcOf(fixed))) + data;
}

// The default good bundle: w float32 [3] at 0, b float32 [] at 12.
KV goodEntries() {
    return {{"", header()}, {"b", entry(1, {}, 12, 4)}, {"w", entry(1, {3}, 0, 12)}};
}
std::string goodShard() {
    return floats({1.f, 2.f, 3.f, 0.5f});
}

void writeFile(const std::string& path, const std::string& bytes) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// What opening says: the error thrown, or the tensors' errors joined; "ok" otherwise.
std::string outcome(const std::string& path) {
    try {
        const auto ck = ckpt::openCheckpoint(path);
        std::string errors;
        for (const auto& t : ck->tensors)
            if (!t.error.empty())
                errors += (errors.empty() ? "" : " | ") + t.name + ": " + t.error;
        for (const auto& f : ck->findings)
            if (f.severity == ckpt::Severity::Error && !ck->findTensor(f.object))
                errors += (errors.empty() ? "" : " | ") + f.object + ": " + f.message;
        return errors.empty() ? "ok" : errors;
    } catch (const ckpt::Error& e) {
        return e.what();
    }
}

std::string fixtures() {
    return std::string(CKPT_TEST_DATA) + "/../../../../shared/fixtures/real/tf";
}

} // namespace

class TestTfBundle : public QObject {
    Q_OBJECT
private Q_SLOTS:
    void crc32cKnownValues();
    void malformed_data();
    void malformed();
    void stringChecksums_data();
    void stringChecksums();
    void nameCollisions();
    void readsValues();
    void objectGraphNames();
    void waysToOpen();
    void notABundle();
    void everyTruncationFails();
    void fromBufferWithoutShards();
    void realFixtures();
    void realFixtureCorrupted();
    void tensorChecksums();
    void realFixturesChecksums();
    void objectGraphLongChain();
    void objectGraphNamesCapped();
    void stringTensorsBudget();
    void keyLimits();
};

void TestTfBundle::crc32cKnownValues() {
    // RFC 3720 B.4 and LevelDB's crc32c_test.
    const std::string zeros(32, '\0');
    QCOMPARE(crcOf(zeros), 0x8a9136aau);
    QCOMPARE(crcOf(std::string(32, '\xff')), 0x62a8ab43u);
    QCOMPARE(crcOf("123456789"), 0xe3069283u);
    QCOMPARE(ckpt::unmaskCrc32c(ckpt::maskCrc32c(0x12345678u)), 0x12345678u);
}

void TestTfBundle::malformed_data() {
    QTest::addColumn<QByteArray>("index");
    QTest::addColumn<QByteArray>("shard"); // empty: no shard file
    QTest::addColumn<QString>("expected");
    auto row = [](const char* name, const std::string& index, const std::string& shard,
                  const char* expected) {
        QTest::newRow(name) << QByteArray(index.data(), static_cast<qsizetype>(index.size()))
                            << QByteArray(shard.data(), static_cast<qsizetype>(shard.size()))
                            << QString(expected);
    };
    auto table = [](const KV& kv, int interval = 16) { return buildTable({blockContents(kv, interval)}); };
    auto with = [](const std::string& key, const std::string& value) {
        KV kv = goodEntries();
        for (auto& [k, v] : kv)
            if (k == key)
                v = value;
        return kv;
    };
    row("valid", table(goodEntries()), goodShard(), "ok");
    row("valid, restart every entry", table(goodEntries(), 1), goodShard(), "ok");
    {
        std::string b = table(goodEntries());
        b[b.size() - 1] = 0;
        row("bad footer magic", b, goodShard(), "not an sstable (bad magic number)");
    }
    row("shorter than a footer", "tiny.index", goodShard(), "shorter than the 48-byte footer");
    {
        TableParts p{blockContents(goodEntries())};
        p.indexOffsetOverride = 100000;
        row("index block past end", buildTable(p), goodShard(), "index block at offset 100000");
    }
    {
        std::string c = blockContents(goodEntries());
        putU32(c, c.size() - 4, 0x10000000);
        row("bad restart count", buildTable({c}), goodShard(), "bad restart count 268435456 in data block 0");
    }
    {
        std::string c = blockContents(goodEntries());
        putU32(c, c.size() - 8, 0x7fff);
        row("restart point outside entries", buildTable({c}), goodShard(),
            "restart point 0 (32767) of data block 0");
    }
    {
        // Second entry claims 9 shared bytes; the previous key ("") has none.
        std::string c = varint(0) + varint(0) + varint(header().size()) + header();
        c += varint(9) + varint(1) + varint(2) + "wxx";
        c += u32le(0) + u32le(1);
        row("key prefix past previous key", buildTable({c}), goodShard(),
            "shares 9 key bytes but the previous key has only 0");
    }
    {
        std::string c = varint(0) + varint(0) + varint(200) + header();
        c += u32le(0) + u32le(1);
        row("entry value past block end", buildTable({c}), goodShard(),
            "runs past the end of the block's entries");
    }
    {
        TableParts p{blockContents(goodEntries())};
        p.corruptCrc = true;
        row("block crc mismatch", buildTable(p), goodShard(),
            "block checksum mismatch in data block 0 at offset 0");
    }
    {
        std::string b = table(goodEntries());
        const std::size_t dataSize = blockContents(goodEntries()).size();
        b[dataSize] = 7; // block type, after the data block
        // keep the CRC right so that the type is what is wrong
        const std::string typed = b.substr(0, dataSize + 1);
        putU32(b, dataSize + 1, ckpt::maskCrc32c(crcOf(typed)));
        row("unknown block type", b, goodShard(), "bad block type 7 of data block 0");
    }
    {
        TableParts p{snappyLiterals(blockContents(goodEntries()))};
        p.type = 1;
        row("snappy data block", buildTable(p), goodShard(), "ok");
        p.data = "\x05\xfe\x01";
        row("corrupt snappy data block", buildTable(p), goodShard(),
            "corrupted compressed block contents in data block 0");
        // 200 MiB declared by 4 bytes: Snappy's densest copy (3 bytes for 64) cannot hold it, refused before
        // its buffer is allocated and cleared.
        p.data = varint(200u << 20) + std::string("\xfe\x01\x00", 3);
        row("snappy block declaring more than 64:3", buildTable(p), goodShard(),
            "data block 0 declares 209715200 bytes from 7 compressed bytes, more than Snappy's densest "
            "encoding "
            "(64:3) can hold");
    }
    row("no bundle header", table({{"w", entry(1, {3}, 0, 12)}}), goodShard(), "table has no bundle header");
    row("v1 saver table", table({{"", fieldBytes(1, fieldBytes(1, "x"))}, {"w", "junk"}}), goodShard(),
        "TensorFlow V1 checkpoints are not supported");
    row("zero shards", table(with("", fieldVarint(1, 0))), goodShard(),
        "bundle header declares 0 data shards");
    row("min consumer too new", table(with("", header() + fieldBytes(3, fieldVarint(2, 7)))), goodShard(),
        "bundle needs a newer reader (min_consumer 7)");
    row("entry offset past shard end", table(with("b", entry(1, {}, 100, 4))), goodShard(),
        "b: entry offset 100 + size 4 runs past the end of data shard");
    row("size dtype shape mismatch", table(with("w", entry(1, {3}, 0, 8))), goodShard(),
        "w: invalid size in bundle entry: 8 bytes, but DT_FLOAT [3] needs 12");
    row("shape overflow", table(with("w", entry(1, {1ll << 40, 1ll << 40}, 0, 8))), goodShard(),
        "has more elements than 2^64");
    row("negative dim", table(with("w", entry(1, {-1}, 0, 8))), goodShard(), "w: invalid tensor shape [-1]");
    // No elements, so no byte size to overflow, but the strides of the other dimensions overflow int64.
    row("strides overflow", table(with("w", entry(1, {0, 1ll << 40, 1ll << 40, 1ll << 40}, 0, 0))),
        goodShard(),
        "w: tensor shape [0, 1099511627776, 1099511627776, 1099511627776] is too large for 64-bit strides");
    row("missing shard", table(goodEntries()), "", "b: data shard '");
    row("shard id past shard count", table(with("w", entry(1, {3}, 0, 12, 3))), goodShard(),
        "w: shard_id 3 is outside the bundle's 1 shards");
    row("unknown dtype", table(with("w", entry(99, {3}, 0, 12))), goodShard(),
        "w: unknown TensorFlow dtype 99");
    row("quantized dtype", table(with("w", entry(15, {3}, 0, 6))), goodShard(),
        "w: TensorFlow dtype DT_QINT16 is not readable");
    row("variant dtype", table(with("w", entry(21, {}, 0, 12))), goodShard(),
        "w: TensorFlow dtype DT_VARIANT is not readable");
    row("truncated varint", table(with("w", fieldVarint(1, 1) + "\x28\x80")), goodShard(),
        "w: bundle entry: truncated varint");
    row("protobuf field length past end", table(with("w", fieldVarint(1, 1) + "\x12\x32\x12")), goodShard(),
        "w: bundle entry: protobuf field 2 length 50 runs past the end of the message");
    row("wrong wire type", table(with("w", "\x0d\x01\x00\x00\x00")), goodShard(),
        "w: bundle entry: protobuf field 1 has wire type 5, expected 0");
    row("group wire type", table(with("w", "\x4b")), goodShard(), "unsupported protobuf wire type 3");
    row("partitioned variable",
        table(with("w", entry(1, {3}, 0, 12) + fieldBytes(7, "") + fieldBytes(7, ""))), goodShard(),
        "w: partitioned variable saved in 2 slices; slices are not assembled");
    {
        KV kv = goodEntries();
        kv.insert(kv.begin() + 2, {"s", entry(7, {2}, 16, 40)});
        row("string lengths disagree with size", table(kv),
            goodShard() + stringTensor({"ab", "cd"}) + std::string(30, 'x'),
            "s: string tensor 's': string lengths add up to 4 bytes, but the entry holds 34");
    }
}

void TestTfBundle::stringChecksums_data() {
    QTest::addColumn<int>("lengthsMaskDelta");
    QTest::addColumn<int>("entryCrcDelta");
    QTest::addColumn<QString>("expected");
    QTest::newRow("both right") << 0 << 0 << "ok";
    QTest::newRow("entry crc wrong") << 0 << 1 << "s: checksum does not match: stored";
    QTest::newRow("lengths crc wrong") << 1 << 0 << "s: checksum of the string lengths does not match";
}

void TestTfBundle::stringChecksums() {
    QFETCH(int, lengthsMaskDelta);
    QFETCH(int, entryCrcDelta);
    QFETCH(QString, expected);
    std::string str = stringTensor({"ab", "cde"});
    const std::uint32_t lengthsCrc = ckpt::unmaskCrc32c(static_cast<std::uint32_t>(
        static_cast<unsigned char>(str[2]) | static_cast<unsigned char>(str[3]) << 8 |
        static_cast<unsigned char>(str[4]) << 16 |
        static_cast<std::uint32_t>(static_cast<unsigned char>(str[5])) << 24));
    const std::uint32_t entryCrc =
        ckpt::crc32c({reinterpret_cast<const std::uint8_t*>(str.data()) + 6, str.size() - 6},
                     ckpt::crc32c({reinterpret_cast<const std::uint8_t*>(str.data()) + 2, 4}, lengthsCrc));
    putU32(str, 2, ckpt::maskCrc32c(lengthsCrc) + static_cast<std::uint32_t>(lengthsMaskDelta));
    KV kv = goodEntries();
    kv.insert(kv.begin() + 2,
              {"s", entry(7, {2}, 16, str.size()) + "\x35" +
                        u32le(ckpt::maskCrc32c(entryCrc + static_cast<std::uint32_t>(entryCrcDelta)))});
    QTemporaryDir dir;
    const std::string prefix = dir.path().toStdString() + "/m";
    writeFile(prefix + ".index", buildTable({blockContents(kv)}));
    writeFile(prefix + ".data-00000-of-00001", goodShard() + str);
    const std::string got = outcome(prefix);
    QVERIFY2(got.find(expected.toStdString()) != std::string::npos, got.c_str());
}

void TestTfBundle::nameCollisions() {
    // "a/b" and "a.b" both read as "a.b": the second keeps its key, and a third distinct key reads apart.
    KV kv{{"", header()},
          {"a.b", entry(1, {}, 0, 4)},
          {"a/b", entry(1, {}, 4, 4)},
          {"a/b/.ATTRIBUTES/VARIABLE_VALUE", entry(1, {}, 8, 4)}};
    QTemporaryDir dir;
    const std::string prefix = dir.path().toStdString() + "/m";
    writeFile(prefix + ".index", buildTable({blockContents(kv)}));
    writeFile(prefix + ".data-00000-of-00001", goodShard());
    const auto ck = ckpt::openCheckpoint(prefix);
    QCOMPARE(ck->tensors.size(), std::size_t(3));
    std::set<std::string> names;
    for (const auto& t : ck->tensors)
        names.insert(t.name);
    QCOMPARE(names.size(), std::size_t(3));
    QCOMPARE(ck->tensors[0].name, std::string("a.b"));
}

void TestTfBundle::malformed() {
    QFETCH(QByteArray, index);
    QFETCH(QByteArray, shard);
    QFETCH(QString, expected);
    QTemporaryDir dir;
    QVERIFY(dir.isValid());
    const std::string prefix = dir.path().toStdString() + "/m";
    writeFile(prefix + ".index", index.toStdString());
    if (!shard.isEmpty())
        writeFile(prefix + ".data-00000-of-00001", shard.toStdString());
    const std::string got = outcome(prefix + ".index");
    if (expected == "ok")
        QCOMPARE(QString::fromStdString(got), expected);
    else if (got.find(expected.toStdString()) == std::string::npos)
        QFAIL(qPrintable("expected '" + expected + "' in: " + QString::fromStdString(got)));
}

void TestTfBundle::readsValues() {
    QTemporaryDir dir;
    const std::string prefix = dir.path().toStdString() + "/m";
    KV kv = goodEntries();
    kv.push_back({"x/y", entry(9, {2}, 16, 16)}); // int64 [2]
    kv.push_back({"z", entry(7, {}, 32, 0)});     // filled below
    std::string shard = goodShard();
    std::int64_t ints[2] = {-7, 1ll << 40};
    shard.append(reinterpret_cast<const char*>(ints), 16);
    const std::string str = stringTensor({"hello"});
    kv.back().second = entry(7, {}, shard.size(), str.size());
    shard += str;
    writeFile(prefix + ".index", buildTable({blockContents(kv)}));
    writeFile(prefix + ".data-00000-of-00001", shard);
    const auto ck = ckpt::openCheckpoint(prefix);
    QCOMPARE(ck->format, std::string("tensorflow"));
    QCOMPARE(ck->tensors.size(), std::size_t(3));
    const auto* w = ck->findTensor("w");
    QVERIFY(w);
    ckpt::TensorReader rw(ck, *w);
    QCOMPARE(rw.element(2), 3.0);
    const auto* xy = ck->findTensor("x.y");
    QVERIFY(xy);
    QCOMPARE(ck->storages[static_cast<std::size_t>(xy->storage)].key, std::string("x/y"));
    ckpt::TensorReader rx(ck, *xy);
    QCOMPARE(rx.element(0), -7.0);
    QCOMPARE(rx.element(1), double(1ll << 40));
    QVERIFY(!ck->findTensor("z"));
    bool found = false;
    for (const auto& v : ck->values)
        if (v.name == "z") {
            found = true;
            QCOMPARE(v.value->kind, ckpt::ValueKind::String);
            QCOMPARE(v.value->text, std::string("hello"));
        }
    QVERIFY(found);
}

void TestTfBundle::objectGraphNames() {
    // root -(net)-> 1 -(w)-> 2 [VARIABLE_VALUE: k1]; root -(opt)-> 3 {slot m of 2 -> 4}; 4 [VARIABLE_VALUE:
    // k2]
    auto child = [](int id, const std::string& name) {
        return fieldBytes(1, fieldVarint(1, static_cast<std::uint64_t>(id)) + fieldBytes(2, name));
    };
    auto attr = [](const std::string& name, const std::string& key) {
        return fieldBytes(2, fieldBytes(1, name) + fieldBytes(3, key));
    };
    std::string graph = fieldBytes(1, child(1, "net") + child(3, "opt"));
    graph += fieldBytes(1, child(2, "w"));
    graph += fieldBytes(1, attr("VARIABLE_VALUE", "k1") + attr("OTHER", "k3"));
    graph += fieldBytes(1, fieldBytes(3, fieldVarint(1, 2) + fieldBytes(2, "m") + fieldVarint(3, 4)));
    graph += fieldBytes(1, attr("VARIABLE_VALUE", "k2"));
    const std::string g = stringTensor({graph});
    std::string shard = goodShard() + floats({9.f}) + g;
    KV kv{{"", header()},
          {"_CHECKPOINTABLE_OBJECT_GRAPH", entry(7, {}, 20, g.size())},
          {"k1", entry(1, {3}, 0, 12)},
          {"k2", entry(1, {}, 12, 4)},
          {"k3", entry(1, {}, 16, 4)},
          {"plain/key", entry(1, {}, 16, 4)}};
    QTemporaryDir dir;
    const std::string prefix = dir.path().toStdString() + "/ckpt-1";
    writeFile(prefix + ".index", buildTable({blockContents(kv)}));
    writeFile(prefix + ".data-00000-of-00001", shard);
    const auto ck = ckpt::openCheckpoint(prefix + ".index");
    std::map<std::string, std::string> names; // key -> name
    for (const auto& t : ck->tensors)
        names[ck->storages[static_cast<std::size_t>(t.storage)].key] = t.name;
    QCOMPARE(names["k1"], std::string("net.w"));
    QCOMPARE(names["k2"], std::string("net.w.m"));
    QCOMPARE(names["k3"], std::string("net.w.OTHER"));
    QCOMPARE(names["plain/key"], std::string("plain.key"));
    QVERIFY(ck->formatDetail.find("object graph of 5 objects") != std::string::npos);
}

void TestTfBundle::waysToOpen() {
    QTemporaryDir dir;
    const std::string d = dir.path().toStdString();
    for (const char* p : {"ckpt-1", "ckpt-2"}) {
        writeFile(d + "/" + p + ".index", buildTable({blockContents(goodEntries())}));
        writeFile(d + "/" + p + ".data-00000-of-00001", goodShard());
    }
    writeFile(d + "/checkpoint",
              "model_checkpoint_path: \"ckpt-2\"\nall_model_checkpoint_paths: \"ckpt-1\"\n"
              "all_model_checkpoint_paths: \"ckpt-2\"\nall_model_checkpoint_timestamps: 1.5\n");
    for (const std::string& path :
         {d, d + "/checkpoint", d + "/ckpt-2", d + "/ckpt-2.index", d + "/ckpt-2.data-00000-of-00001"}) {
        const auto ck = ckpt::openCheckpoint(path);
        QCOMPARE(ck->tensors.size(), std::size_t(2));
        QCOMPARE(ck->sources.back().path, d + "/ckpt-2.data-00000-of-00001");
        const ckpt::Value* all = nullptr;
        for (const auto& v : ck->values)
            if (v.name == "checkpoint.all_model_checkpoint_paths")
                all = v.value;
        QVERIFY(all);
        QCOMPARE(all->items.size(), std::size_t(2));
        QCOMPARE(all->items[0]->text, std::string("ckpt-2")); // latest first
        QCOMPARE(all->items[1]->text, std::string("ckpt-1"));
    }
    // A shard whose index is gone.
    fs::remove(d + "/ckpt-1.index");
    QVERIFY(outcome(d + "/ckpt-1.data-00000-of-00001").find("TensorFlow data shard without its index") !=
            std::string::npos);
    // The state file names a checkpoint that does not exist, and there are several indexes... one here.
    writeFile(d + "/checkpoint", "model_checkpoint_path: \"gone\"\n");
    QCOMPARE(ckpt::openCheckpoint(d)->tensors.size(), std::size_t(2)); // falls back to the only .index
    // Several indexes and no usable state file: say so rather than pick one.
    writeFile(d + "/other.index", buildTable({blockContents(goodEntries())}));
    QVERIFY(outcome(d).find("directory holds several TensorFlow checkpoints") != std::string::npos);
    // A key longer than the cap, built by prefix compression.
    std::string c = varint(0) + varint(0) + varint(header().size()) + header();
    c += varint(0) + varint(2u << 20) + varint(0) + std::string(2u << 20, 'k');
    c += u32le(0) + u32le(1);
    writeFile(d + "/other.index", buildTable({c}));
    QVERIFY(outcome(d + "/other.index").find("has a key of 2097152 bytes, more than the limit") !=
            std::string::npos);
}

void TestTfBundle::notABundle() {
    QTemporaryDir dir;
    const std::string d = dir.path().toStdString();
    writeFile(d + "/plain.bin", std::string(100, 'x'));
    QVERIFY(!ckpt::tryOpenTfBundle(d + "/plain.bin"));
    QVERIFY(!ckpt::tryOpenTfBundle(d + "/nothing-here"));
    QVERIFY(!ckpt::tryOpenTfBundle(d)); // a directory without an index
}

void TestTfBundle::everyTruncationFails() {
    const std::string good = buildTable({blockContents(goodEntries())});
    for (std::size_t n = 0; n < good.size(); ++n) {
        try {
            ckpt::readTfBundle(ckpt::MappedFile::fromBuffer("t.index", good.substr(0, n)), "t",
                               [](const std::string&) { return nullptr; });
            QFAIL(qPrintable(QString("truncation to %1 bytes was accepted").arg(n)));
        } catch (const ckpt::Error& e) {
            QVERIFY(std::string(e.what()).find("t.index") != std::string::npos);
        }
    }
}

void TestTfBundle::fromBufferWithoutShards() {
    const auto ck = ckpt::readTfBundle(
        ckpt::MappedFile::fromBuffer("t.index", buildTable({blockContents(goodEntries())})), "t",
        [](const std::string&) { return nullptr; });
    QCOMPARE(ck->tensors.size(), std::size_t(2));
    for (const auto& t : ck->tensors)
        QVERIFY(t.error.find("is missing") != std::string::npos);
    QVERIFY(ck->hasErrors());
}

void TestTfBundle::realFixtures() {
    if (!fs::is_directory(fixtures()))
        QSKIP("real TensorFlow fixtures (../shared/fixtures/real/tf) are not here");
    const auto ck = ckpt::openCheckpoint(fixtures() + "/saved_model_half_plus_two_cpu"); // Snappy block
    const auto* a = ck->findTensor("a");
    const auto* b = ck->findTensor("b");
    QVERIFY(a && b);
    QCOMPARE(ckpt::TensorReader(ck, *a).element(0), 0.5);
    QCOMPARE(ckpt::TensorReader(ck, *b).element(0), 2.0);
    const auto lso = ckpt::openCheckpoint(fixtures() + "/lso_ckpt_tf2.2");
    QCOMPARE(lso->sources.size(), std::size_t(3)); // index + 2 shards
    QVERIFY(lso->findTensor("layer_with_weights-0.kernel.momentum"));
    const auto* iter = lso->findTensor("optimizer.base_optimizer.iter");
    QVERIFY(iter);
    QCOMPARE(iter->dtype, ckpt::DType::Int64);
    QVERIFY(!lso->hasErrors());
    try {
        ckpt::openCheckpoint(fixtures() + "/bad_v1_saver");
        QFAIL("V1 accepted");
    } catch (const ckpt::Error& e) {
        QCOMPARE(e.code(), ckpt::ErrorCode::Unsupported);
        QVERIFY(std::string(e.what()).find("TensorFlow V1 checkpoints are not supported") !=
                std::string::npos);
    }
}

void TestTfBundle::realFixtureCorrupted() {
    if (!fs::is_directory(fixtures()))
        QSKIP("real TensorFlow fixtures (../shared/fixtures/real/tf) are not here");
    QTemporaryDir dir;
    const std::string d = dir.path().toStdString();
    std::string index = readFile(fixtures() + "/saved_model_half_plus_two_cpu/variables.index");
    writeFile(d + "/variables.data-00000-of-00001",
              readFile(fixtures() + "/saved_model_half_plus_two_cpu/variables.data-00000-of-00001"));
    index[10] = static_cast<char>(index[10] ^ 1); // inside the Snappy data block
    writeFile(d + "/variables.index", index);
    const std::string got = outcome(d + "/variables.index");
    QVERIFY2(got.find("block checksum mismatch in data block 0") != std::string::npos, got.c_str());
}

// BundleEntryProto.crc32c (masked CRC-32C of the bytes as stored) is checked when values are read: a
// flipped byte in the data shard makes reading fail with both checksums, naming the shard and the tensor;
// the other tensor stays readable; opening (metadata only) does not read the bytes.
void TestTfBundle::tensorChecksums() {
    QTemporaryDir dir;
    const std::string prefix = dir.path().toStdString() + "/m";
    const std::string shard = goodShard(); // w = [1, 2, 3] at 0, b = 0.5 at 12
    auto withCrc = [&](std::string e, std::size_t off, std::size_t n) {
        return e + varint((6u << 3) | 5) + u32le(ckpt::maskCrc32c(crcOf(shard.substr(off, n))));
    };
    const KV kv = {{"", header()},
                   {"b", withCrc(entry(1, {}, 12, 4), 12, 4)},
                   {"w", withCrc(entry(1, {3}, 0, 12), 0, 12)}};
    writeFile(prefix + ".index", buildTable({blockContents(kv)}));
    writeFile(prefix + ".data-00000-of-00001", shard);
    {
        const auto ck = ckpt::openCheckpoint(prefix);
        const auto st = ckpt::computeStats(ck, *ck->findTensor("w"), 4);
        QVERIFY(st);
        QCOMPARE(st->max, 3.0);
    }
    std::string flipped = shard;
    flipped[5] = static_cast<char>(flipped[5] ^ 0x40); // inside w's second element
    writeFile(prefix + ".data-00000-of-00001", flipped);
    const auto ck = ckpt::openCheckpoint(prefix);
    QVERIFY(!ck->hasErrors());
    const std::uint32_t stored = crcOf(shard.substr(0, 12)), calculated = crcOf(flipped.substr(0, 12));
    const std::string expected = prefix +
                                 ".data-00000-of-00001: at byte 0: w: checksum does not match: stored " +
                                 std::to_string(stored) + " vs. calculated " + std::to_string(calculated) +
                                 " on the 12 bytes of tensor 'w'";
    try {
        ckpt::computeStats(ck, *ck->findTensor("w"), 4);
        QFAIL("a flipped byte went unnoticed");
    } catch (const ckpt::Error& e) {
        QCOMPARE(e.code(), ckpt::ErrorCode::Malformed);
        QVERIFY2(std::string(e.what()).find(expected) != std::string::npos, e.what());
        QCOMPARE(e.object(), std::string("w"));
    }
    const auto b = ckpt::computeStats(ck, *ck->findTensor("b"), 4);
    QVERIFY(b);
    QCOMPARE(b->max, 0.5);
}

// TensorFlow's own checksums on the real files agree with the bytes (every tensor's statistics compute).
void TestTfBundle::realFixturesChecksums() {
    if (!fs::is_directory(fixtures()))
        QSKIP("real TensorFlow fixtures (../shared/fixtures/real/tf) are not here");
    int checked = 0;
    for (const char* name :
         {"lso_ckpt_tf2.2", "saved_model_half_plus_two_cpu", "saved_model_counter", "tf_text_regression"}) {
        if (!fs::exists(fixtures() + "/" + name))
            continue;
        const auto ck = ckpt::openCheckpoint(fixtures() + "/" + name);
        for (const auto& t : ck->tensors) {
            if (t.storage < 0 || !ck->storages[static_cast<std::size_t>(t.storage)].crc32c)
                continue;
            QVERIFY2(ckpt::computeStats(ck, t, 4), t.name.c_str());
            ++checked;
        }
    }
    QVERIFY(checked > 5);
}

namespace {

std::string graphChild(std::size_t id, const std::string& name) {
    return fieldBytes(1, fieldVarint(1, id) + fieldBytes(2, name));
}
std::string graphAttr(const std::string& name, const std::string& key) {
    return fieldBytes(2, fieldBytes(1, name) + fieldBytes(3, key));
}

// A bundle of float scalars (all reading the same 4 bytes) and an object graph.
std::shared_ptr<ckpt::Checkpoint> bundleWithGraph(const std::string& graph,
                                                  const std::vector<std::string>& keys) {
    const std::string g = stringTensor({graph});
    const std::string shard = floats({1.f}) + g;
    KV kv{{"", header()}, {"_CHECKPOINTABLE_OBJECT_GRAPH", entry(7, {}, 4, g.size())}};
    for (const auto& k : keys)
        kv.push_back({k, entry(1, {}, 0, 4)});
    std::sort(kv.begin(), kv.end());
    return ckpt::readTfBundle(
        ckpt::MappedFile::fromBuffer("g.index", buildTable({blockContents(kv)})), "g",
        [shard](const std::string& path) { return ckpt::MappedFile::fromBuffer(path, shard); });
}

} // namespace

void TestTfBundle::objectGraphLongChain() {
    // root -(n)-> 1 -(n)-> 2 ... -(n)-> N-1 [VARIABLE_VALUE: deep]: a name of 2N bytes, built once, where
    // keeping every node's full path would take N^2 bytes (10 GB here).
    const std::size_t n = 100'000;
    std::string graph;
    for (std::size_t i = 0; i + 1 < n; ++i)
        graph += fieldBytes(1, graphChild(i + 1, "n"));
    graph += fieldBytes(1, graphAttr("VARIABLE_VALUE", "deep"));
    const auto ck = bundleWithGraph(graph, {"deep"});
    QCOMPARE(ck->tensors.size(), std::size_t(1));
    std::string expected = "n";
    for (std::size_t i = 1; i + 1 < n; ++i)
        expected += ".n";
    QCOMPARE(ck->tensors[0].name, expected);
    QVERIFY(ck->formatDetail.find("object graph of 100000 objects") != std::string::npos);
    QVERIFY(!ck->hasErrors());
}

void TestTfBundle::objectGraphNamesCapped() {
    // A chain of 2000 nodes with 1000-byte local names, each node a variable: the names would add up to 2 GB.
    // Names are built up to 64 MiB in all; the rest of the tensors are named by their keys, with a warning.
    const std::size_t n = 2000;
    const std::string local(1000, 'a');
    std::string graph = fieldBytes(1, graphChild(1, local));
    std::vector<std::string> keys;
    for (std::size_t i = 1; i < n; ++i) {
        char key[16];
        std::snprintf(key, sizeof key, "k%05zu", i);
        keys.push_back(key);
        graph +=
            fieldBytes(1, (i + 1 < n ? graphChild(i + 1, local) : "") + graphAttr("VARIABLE_VALUE", key));
    }
    const auto ck = bundleWithGraph(graph, keys);
    QCOMPARE(ck->tensors.size(), n - 1);
    QCOMPARE(ck->tensors.front().name, local);
    QCOMPARE(ck->tensors[1].name, local + "." + local);
    QCOMPARE(ck->tensors.back().name, std::string("k01999"));
    std::size_t named = 0;
    for (const auto& t : ck->tensors)
        named += t.name.starts_with(local);
    QVERIFY(named > 300 && named < 400); // 1001 * k^2 / 2 bytes for the first k
    bool warned = false;
    for (const auto& f : ck->findings)
        warned =
            warned || (f.severity == ckpt::Severity::Warning &&
                       f.message == "names from the object graph add up to more than 67108864 bytes; the "
                                    "remaining tensors are named by their keys");
    QVERIFY(warned);
}

void TestTfBundle::stringTensorsBudget() {
    // Ten string tensors reading the same 20 MiB: three are decoded, the rest listed with a note, so that
    // entries sharing bytes cannot make memory grow with the number of entries.
    const std::string str = stringTensor({std::string(20u << 20, 'x')});
    KV kv{{"", header()}};
    for (int i = 0; i < 10; ++i)
        kv.push_back({"s" + std::to_string(i), entry(7, {}, 0, str.size())});
    const auto ck = ckpt::readTfBundle(
        ckpt::MappedFile::fromBuffer("s.index", buildTable({blockContents(kv)})), "s",
        [&str](const std::string& path) { return ckpt::MappedFile::fromBuffer(path, str); });
    QCOMPARE(ck->values.size(), std::size_t(10));
    for (std::size_t i = 0; i < 10; ++i) {
        const auto& v = ck->values[i];
        QCOMPARE(v.name, "s" + std::to_string(i));
        if (i < 3) {
            QCOMPARE(v.value->kind, ckpt::ValueKind::String);
            QCOMPARE(v.value->text.size(), std::size_t(20u << 20));
        } else {
            QCOMPARE(v.value->kind, ckpt::ValueKind::Bytes);
            QCOMPARE(v.value->text, "<string tensor [] of " + std::to_string(str.size()) +
                                        " bytes, not loaded: the bundle's string tensors exceed 67108864 "
                                        "bytes in all>");
        }
    }
    QCOMPARE(ck->findings.size(), std::size_t(1));
    QCOMPARE(ck->findings[0].severity, ckpt::Severity::Warning);
    QCOMPARE(ck->findings[0].object, std::string("s3"));
    QCOMPARE(ck->findings[0].message,
             std::string("string tensors add up to more than 67108864 bytes; this one and later ones are not "
                         "loaded"));
}

void TestTfBundle::keyLimits() {
    auto open = [](const std::string& block) {
        try {
            ckpt::readTfBundle(ckpt::MappedFile::fromBuffer("k.index", buildTable({block})), "k",
                               [](const std::string&) { return nullptr; });
            return std::string("ok");
        } catch (const ckpt::Error& e) {
            return std::string(e.what());
        }
    };
    const std::string head = varint(0) + varint(0) + varint(header().size()) + header();
    // One key: 64 KiB allowed, one byte more refused.
    for (std::size_t size : {std::size_t(64) << 10, (std::size_t(64) << 10) + 1}) {
        const std::string c =
            head + varint(0) + varint(size) + varint(0) + std::string(size, 'k') + u32le(0) + u32le(1);
        const std::string got = open(c);
        if (size == 64u << 10)
            QVERIFY2(got.find("keys out of order") == std::string::npos &&
                         got.find("limit") == std::string::npos,
                     got.c_str());
        else
            QCOMPARE(got, "k.index: at byte " + std::to_string(head.size()) + ": entry at byte " +
                              std::to_string(head.size()) +
                              " of data block 0 has a key of 65537 bytes, more than the limit of 65536");
    }
    // All keys: 64 KiB keys sharing all but their last 4 bytes cost 9 bytes each; with the index block's
    // 1-byte separator key, the 1024th passes 64 MiB.
    std::string c = head;
    std::size_t crossing = 0;
    for (std::uint32_t i = 0; i < 1100; ++i) {
        std::string suffix(4, '\0');
        for (int k = 0; k < 4; ++k)
            suffix[static_cast<std::size_t>(k)] = static_cast<char>(i >> (24 - 8 * k));
        if (i == 1023)
            crossing = c.size();
        if (i == 0)
            c += varint(0) + varint(65536) + varint(0) + std::string(65532, 'k') + suffix;
        else
            c += varint(65532) + varint(4) + varint(0) + suffix;
    }
    c += u32le(0) + u32le(1);
    const std::string got = open(c);
    QCOMPARE(got, "k.index: at byte " + std::to_string(crossing) +
                      ": the table's keys add up to more than the limit of 67108864 bytes at the entry at "
                      "byte " +
                      std::to_string(crossing) + " of data block 0");
}

QTEST_GUILESS_MAIN(TestTfBundle)
#include "tst_tfbundle.moc"
