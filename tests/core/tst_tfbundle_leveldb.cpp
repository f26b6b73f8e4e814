// TensorFlow bundle indexes against Debian's LevelDB, whose table format TensorFlow's .index files use
// (other-formats.md §1): tables written by leveldb::TableBuilder (raw and Snappy blocks, small blocks so
// that there are many blocks and restart points) with BundleHeaderProto / BundleEntryProto values encoded
// here from the spec read back to exactly the tensors and values written; and the real TensorFlow
// fixtures, iterated with leveldb::Table, list exactly the keys our reader lists as tensors.

#include "testutil.h"

#include "analysis/elements.h"
#include "formats/tfbundle.h"

#include <leveldb/env.h>
#include <leveldb/iterator.h>
#include <leveldb/options.h>
#include <leveldb/table.h>
#include <leveldb/table_builder.h>

#include <QTemporaryDir>
#include <QTest>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <set>

namespace fs = std::filesystem;
using namespace testutil;

Q_DECLARE_METATYPE(leveldb::CompressionType)

namespace {

// ---- protobuf wire format (the few encodings BundleHeaderProto / BundleEntryProto use) ----

std::string fieldFixed32(int field, std::uint32_t v) {
    std::string s = varint((static_cast<std::uint64_t>(field) << 3) | 5);
    for (int i = 0; i < 4; ++i)
        s += static_cast<char>((v >> (8 * i)) & 0xFF);
    return s;
}

// BundleHeaderProto {num_shards = 1, endianness = 2 (LITTLE = 0, left out), version = 3 {producer = 1}}.
std::string headerProto(int shards) {
    return fieldVarint(1, static_cast<std::uint64_t>(shards)) + fieldBytes(3, fieldVarint(1, 1));
}

// BundleEntryProto {dtype 1, shape 2 {dim 2 {size 1}}, shard_id 3, offset 4, size 5, crc32c 6 (fixed32)}.
std::string entryProto(int dtype, const std::vector<std::int64_t>& dims, int shard, std::uint64_t offset,
                       std::uint64_t size, std::uint32_t maskedCrc) {
    std::string shape;
    for (auto d : dims)
        shape += fieldBytes(2, fieldVarint(1, static_cast<std::uint64_t>(d)));
    std::string e = fieldVarint(1, static_cast<std::uint64_t>(dtype)) + fieldBytes(2, shape);
    if (shard)
        e += fieldVarint(3, static_cast<std::uint64_t>(shard));
    if (offset)
        e += fieldVarint(4, offset);
    return e + fieldVarint(5, size) + fieldFixed32(6, maskedCrc);
}

struct Decoded {
    int dtype = 0;
    std::vector<std::int64_t> shape;
    bool sliced = false;
};

std::uint64_t readVarint(const std::string& s, std::size_t& at) {
    std::uint64_t v = 0;
    for (int shift = 0; at < s.size() && shift < 64; shift += 7) {
        const auto b = static_cast<unsigned char>(s[at++]);
        v |= static_cast<std::uint64_t>(b & 0x7F) << shift;
        if (!(b & 0x80))
            return v;
    }
    throw std::runtime_error("bad varint");
}

// Walks a message: fn(field, wiretype, varint value, bytes) per field.
template <typename Fn> void walk(const std::string& s, Fn fn) {
    std::size_t at = 0;
    while (at < s.size()) {
        const std::uint64_t tag = readVarint(s, at);
        const int field = static_cast<int>(tag >> 3), wt = static_cast<int>(tag & 7);
        if (wt == 0) {
            fn(field, wt, readVarint(s, at), std::string());
        } else if (wt == 2) {
            const auto n = static_cast<std::size_t>(readVarint(s, at));
            fn(field, wt, 0, s.substr(at, n));
            at += n;
        } else if (wt == 5) {
            at += 4;
        } else if (wt == 1) {
            at += 8;
        } else {
            throw std::runtime_error("unexpected wire type");
        }
    }
}

Decoded decodeEntry(const std::string& value) {
    Decoded d;
    walk(value, [&](int f, int, std::uint64_t v, const std::string& b) {
        if (f == 1)
            d.dtype = static_cast<int>(v);
        else if (f == 2)
            walk(b, [&](int sf, int, std::uint64_t, const std::string& dim) {
                if (sf == 2) {
                    std::int64_t size = 0;
                    walk(dim, [&](int df, int, std::uint64_t dv, const std::string&) {
                        if (df == 1)
                            size = static_cast<std::int64_t>(dv);
                    });
                    d.shape.push_back(size);
                }
            });
        else if (f == 7)
            d.sliced = true;
    });
    return d;
}

// TensorFlow's DataType numbers (types.proto) and the names our reader gives them.
const std::map<int, std::string> kTfDtypes = {
    {1, "float32"},  {2, "float64"}, {3, "int32"},  {4, "uint8"},     {5, "int16"},
    {6, "int8"},     {9, "int64"},   {10, "bool"},  {14, "bfloat16"}, {17, "uint16"},
    {19, "float16"}, {22, "uint32"}, {23, "uint64"}};

// ---- a bundle written through leveldb::TableBuilder ----

struct Written {
    std::string key;
    int dtype;
    std::vector<std::int64_t> shape;
    std::vector<double> values;
};

// Element bytes of `dtype` for value v (all values are exactly representable in every dtype used).
std::string encode(int dtype, double v) {
    std::string b;
    auto put = [&](auto x) { b.append(reinterpret_cast<const char*>(&x), sizeof x); };
    switch (dtype) {
    case 1:
        put(static_cast<float>(v));
        break;
    case 2:
        put(v);
        break;
    case 3:
        put(static_cast<std::int32_t>(v));
        break;
    case 4:
        put(static_cast<std::uint8_t>(v));
        break;
    case 5:
        put(static_cast<std::int16_t>(v));
        break;
    case 6:
        put(static_cast<std::int8_t>(v));
        break;
    case 9:
        put(static_cast<std::int64_t>(v));
        break;
    case 10:
        put(static_cast<std::uint8_t>(v != 0));
        break;
    case 14: { // bfloat16: the upper half of the float32 (values chosen exact)
        const float f = static_cast<float>(v);
        std::uint32_t u;
        std::memcpy(&u, &f, 4);
        put(static_cast<std::uint16_t>(u >> 16));
        break;
    }
    case 17:
        put(static_cast<std::uint16_t>(v));
        break;
    case 19: { // float16 of small integers and halves: built from sign, exponent and mantissa
        const double a = std::fabs(v);
        std::uint16_t h = 0;
        if (a != 0) {
            int e = 0;
            const double m = std::frexp(a, &e); // a = m * 2^e, m in [0.5, 1)
            h = static_cast<std::uint16_t>(((e - 1 + 15) << 10) |
                                           static_cast<std::uint16_t>(std::lround((m * 2 - 1) * 1024)));
        }
        if (v < 0)
            h |= 0x8000;
        put(h);
        break;
    }
    default:
        throw std::runtime_error("dtype not used here");
    }
    return b;
}

std::size_t dtypeBytes(int dtype) {
    return encode(dtype, 0).size();
}

void writeFile(const std::string& path, const std::string& bytes) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::string fixtures() {
    return std::string(CKPT_TEST_DATA) + "/../../../../shared/fixtures/real/tf";
}

// Writes prefix.index with LevelDB and prefix.data-0000S-of-00002; returns what was written.
std::vector<Written> writeBundle(const std::string& prefix, leveldb::CompressionType compression,
                                 std::size_t blockSize, int restartInterval) {
    const int dtypes[] = {1, 2, 3, 4, 5, 6, 9, 10, 14, 17, 19};
    std::vector<Written> all;
    for (int i = 0; i < 240; ++i) {
        Written w;
        char key[96];
        std::snprintf(key, sizeof key, "model/layer_with_weights-%03d/%s/.ATTRIBUTES/VARIABLE_VALUE", i / 2,
                      i % 2 ? "bias" : "kernel");
        w.key = key;
        w.dtype = dtypes[i % std::size(dtypes)];
        if (i % 7 == 3)
            w.shape = {}; // scalar
        else if (i % 2)
            w.shape = {i % 5 + 1};
        else
            w.shape = {i % 3 + 1, 4};
        std::int64_t n = 1;
        for (auto d : w.shape)
            n *= d;
        for (std::int64_t k = 0; k < n; ++k) {
            double v = static_cast<double>((i * 7 + k * 3) % 50);
            if (w.dtype == 10)
                v = (i + k) % 2;
            else if (w.dtype != 4 && w.dtype != 17)
                v -= 20; // signed types get negatives
            if (w.dtype == 1 || w.dtype == 2 || w.dtype == 19 || w.dtype == 14)
                v += 0.5;
            w.values.push_back(v);
        }
        all.push_back(std::move(w));
    }
    // Data files: tensors alternate between the two shards, written in reverse key order.
    std::string shards[2];
    std::map<std::string, std::string> entries;
    entries[""] = headerProto(2);
    for (std::size_t j = all.size(); j-- > 0;) {
        const Written& w = all[j];
        const int shard = static_cast<int>(j % 2);
        std::string bytes;
        for (double v : w.values)
            bytes += encode(w.dtype, v);
        const std::uint32_t crc = ckpt::maskCrc32c(
            ckpt::crc32c({reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size()}));
        entries[w.key] = entryProto(w.dtype, w.shape, shard, shards[shard].size(), bytes.size(), crc);
        shards[shard] += bytes;
    }
    writeFile(prefix + ".data-00000-of-00002", shards[0]);
    writeFile(prefix + ".data-00001-of-00002", shards[1]);

    leveldb::Options options;
    options.compression = compression;
    options.block_size = blockSize;
    options.block_restart_interval = restartInterval;
    leveldb::WritableFile* file = nullptr;
    if (!leveldb::Env::Default()->NewWritableFile(prefix + ".index", &file).ok())
        throw std::runtime_error("cannot create " + prefix + ".index");
    std::unique_ptr<leveldb::WritableFile> owned(file);
    leveldb::TableBuilder builder(options, file);
    for (const auto& [k, v] : entries) // std::map: bytewise key order, as the table requires
        builder.Add(k, v);
    if (!builder.Finish().ok() || !file->Close().ok())
        throw std::runtime_error("LevelDB could not write " + prefix + ".index");
    return all;
}

// Iterates a table with LevelDB (checksums verified): key -> value.
std::map<std::string, std::string> levelDbEntries(const std::string& path, std::set<std::uint64_t>* blocks) {
    leveldb::RandomAccessFile* raw = nullptr;
    if (!leveldb::Env::Default()->NewRandomAccessFile(path, &raw).ok())
        throw std::runtime_error("LevelDB cannot open " + path);
    std::unique_ptr<leveldb::RandomAccessFile> file(raw);
    leveldb::Table* t = nullptr;
    const auto status = leveldb::Table::Open(leveldb::Options(), file.get(), fs::file_size(path), &t);
    if (!status.ok())
        throw std::runtime_error("LevelDB cannot read " + path + ": " + status.ToString());
    std::unique_ptr<leveldb::Table> table(t);
    leveldb::ReadOptions ro;
    ro.verify_checksums = true;
    std::unique_ptr<leveldb::Iterator> it(table->NewIterator(ro));
    std::map<std::string, std::string> out;
    for (it->SeekToFirst(); it->Valid(); it->Next()) {
        out.emplace(it->key().ToString(), it->value().ToString());
        if (blocks)
            blocks->insert(table->ApproximateOffsetOf(it->key()));
    }
    if (!it->status().ok())
        throw std::runtime_error("LevelDB iteration of " + path + " failed: " + it->status().ToString());
    return out;
}

} // namespace

class TestTfBundleLevelDb : public QObject {
    Q_OBJECT

private slots:
    void writtenByLevelDb_data() {
        QTest::addColumn<leveldb::CompressionType>("compression");
        QTest::addColumn<int>("blockSize");
        QTest::addColumn<int>("restartInterval");
        QTest::newRow("raw blocks of 64 bytes, a restart at every entry")
            << leveldb::kNoCompression << 64 << 1;
        QTest::newRow("raw blocks of 256 bytes, restarts every 3") << leveldb::kNoCompression << 256 << 3;
        QTest::newRow("raw 4 KiB blocks, restarts every 16") << leveldb::kNoCompression << 4096 << 16;
        QTest::newRow("snappy blocks of 512 bytes, restarts every 2")
            << leveldb::kSnappyCompression << 512 << 2;
        QTest::newRow("snappy 4 KiB blocks, restarts every 16") << leveldb::kSnappyCompression << 4096 << 16;
    }

    void writtenByLevelDb() {
        QFETCH(leveldb::CompressionType, compression);
        QFETCH(int, blockSize);
        QFETCH(int, restartInterval);
        QTemporaryDir dir;
        const std::string prefix = dir.path().toStdString() + "/ckpt-7";
        const auto written =
            writeBundle(prefix, compression, static_cast<std::size_t>(blockSize), restartInterval);

        // The table is what LevelDB says it is: every entry back, spread over many blocks.
        std::set<std::uint64_t> blocks;
        const auto kv = levelDbEntries(prefix + ".index", &blocks);
        QCOMPARE(kv.size(), written.size() + 1);
        if (blockSize < 4096)
            QVERIFY2(blocks.size() > 10, std::to_string(blocks.size()).c_str());
        if (compression == leveldb::kSnappyCompression) {
            // Snappy blocks are really there: the same entries take less room than raw ones.
            QTemporaryDir rawDir;
            const std::string rawPrefix = rawDir.path().toStdString() + "/raw";
            writeBundle(rawPrefix, leveldb::kNoCompression, static_cast<std::size_t>(blockSize),
                        restartInterval);
            QVERIFY(fs::file_size(prefix + ".index") < fs::file_size(rawPrefix + ".index"));
        }

        for (const std::string& path : {prefix + ".index", prefix, dir.path().toStdString()}) {
            const auto ck = ckpt::openCheckpoint(path);
            QCOMPARE(ck->format, std::string("tensorflow"));
            QVERIFY(!ck->hasErrors());
            QCOMPARE(ck->sources.size(), std::size_t(3));
            QCOMPARE(ck->tensors.size(), written.size());
            std::map<std::string, const ckpt::TensorInfo*> byKey;
            for (const auto& t : ck->tensors)
                byKey[ck->storages.at(static_cast<std::size_t>(t.storage)).key] = &t;
            for (std::size_t j = 0; j < written.size(); ++j) {
                const Written& w = written[j];
                const auto found = byKey.find(w.key);
                QVERIFY2(found != byKey.end(), w.key.c_str());
                const ckpt::TensorInfo& t = *found->second;
                QCOMPARE(std::string(ckpt::dtypeName(t.dtype)), kTfDtypes.at(w.dtype));
                QCOMPARE(t.shape, w.shape);
                const auto& s = ck->storages[static_cast<std::size_t>(t.storage)];
                QCOMPARE(
                    fs::path(ck->sources.at(static_cast<std::size_t>(s.source)).path).filename().string(),
                    fs::path(prefix + (j % 2 ? ".data-00001-of-00002" : ".data-00000-of-00002"))
                        .filename()
                        .string());
                QCOMPARE(s.nbytes, w.values.size() * dtypeBytes(w.dtype));
                ckpt::TensorReader r(ck, t);
                QCOMPARE(r.numel(), std::uint64_t(w.values.size()));
                std::vector<double> got;
                r.forEachChunk([&](std::span<const double> v, std::uint64_t) {
                    got.insert(got.end(), v.begin(), v.end());
                    return true;
                });
                QCOMPARE(got, w.values);
            }
        }
    }

    // Every real .index: the keys LevelDB finds, less the header ("") and the string entries (the object
    // graph and other DT_STRING values, shown as values), are exactly the tensors listed, with their dtype
    // and shape.
    void realFixturesMatchLevelDb() {
        if (!fs::is_directory(fixtures()))
            QSKIP("real TensorFlow fixtures (../shared/fixtures/real/tf) are not here");
        int indexes = 0;
        for (const auto& entry : fs::recursive_directory_iterator(fixtures())) {
            if (entry.path().extension() != ".index")
                continue;
            ++indexes;
            const std::string path = entry.path().string();
            const auto kv = levelDbEntries(path, nullptr);
            std::map<std::string, std::pair<std::string, std::vector<std::int64_t>>> expected;
            std::set<std::string> strings;
            QVERIFY2(kv.count(""), path.c_str());
            for (const auto& [k, v] : kv) {
                if (k.empty())
                    continue;
                const Decoded d = decodeEntry(v);
                QVERIFY2(!d.sliced, (path + ": " + k).c_str());
                if (d.dtype == 7) {
                    strings.insert(k);
                    continue;
                }
                QVERIFY2(kTfDtypes.count(d.dtype), (path + ": " + k).c_str());
                expected[k] = {kTfDtypes.at(d.dtype), d.shape};
            }
            const auto ck = ckpt::openCheckpoint(path);
            QVERIFY2(!ck->hasErrors(), path.c_str());
            std::map<std::string, std::pair<std::string, std::vector<std::int64_t>>> got;
            for (const auto& t : ck->tensors)
                got[ck->storages.at(static_cast<std::size_t>(t.storage)).key] = {
                    std::string(ckpt::dtypeName(t.dtype)), t.shape};
            QVERIFY2(got == expected, path.c_str());
            for (const auto& s : strings)
                QVERIFY2(!got.count(s), s.c_str());
        }
        QVERIFY(indexes >= 5);
    }
};

QTEST_GUILESS_MAIN(TestTfBundleLevelDb)
#include "tst_tfbundle_leveldb.moc"
