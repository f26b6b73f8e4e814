// Malformed PyTorch files: each case a real torch.save file with one defect, and the message a user sees.

#include "testutil.h"

#include "analysis/stats.h"
#include "io/zipreader.h"

#include <QTest>

#include <random>

#include <zlib.h>

using namespace testutil;

class TestMalformed : public QObject {
    Q_OBJECT
private Q_SLOTS:
    void zipCases_data();
    void zipCases();
    void legacyCases_data();
    void legacyCases();
    void everyTruncationFails_data();
    void everyTruncationFails();
    void randomCorruptionNeverCrashes();
    void inflate_data();
    void inflate();
};

namespace {

// A zip archive written field by field: `data` is stored as given; the sizes in the headers are those given.
struct Member {
    std::string name;
    std::string data;
    std::uint16_t method = 0;
    std::uint32_t compressedField = 0;
    std::uint32_t uncompressedField = 0;
    std::string centralExtra;
};

std::string le(std::uint64_t v, int bytes) {
    std::string b;
    for (int i = 0; i < bytes; ++i)
        b += static_cast<char>((v >> (8 * i)) & 0xFF);
    return b;
}

std::string zipOf(const std::vector<Member>& members) {
    std::string out, central;
    for (const Member& m : members) {
        const std::size_t at = out.size();
        out += le(0x04034b50, 4) + le(20, 2) + le(0, 2) + le(m.method, 2) + le(0, 4) + le(0, 4) +
               le(m.compressedField, 4) + le(m.uncompressedField, 4) + le(m.name.size(), 2) + le(0, 2) +
               m.name + m.data;
        central += le(0x02014b50, 4) + le(20, 2) + le(20, 2) + le(0, 2) + le(m.method, 2) + le(0, 4) +
                   le(0, 4) + le(m.compressedField, 4) + le(m.uncompressedField, 4) + le(m.name.size(), 2) +
                   le(m.centralExtra.size(), 2) + le(0, 2) + le(0, 2) + le(0, 2) + le(0, 4) + le(at, 4) +
                   m.name + m.centralExtra;
    }
    const std::size_t cdAt = out.size();
    out += central;
    out += le(0x06054b50, 4) + le(0, 2) + le(0, 2) + le(members.size(), 2) + le(members.size(), 2) +
           le(central.size(), 4) + le(cdAt, 4) + le(0, 2);
    return out;
}

Member stored(const std::string& name, const std::string& data) {
    return {name, data, 0, static_cast<std::uint32_t>(data.size()), static_cast<std::uint32_t>(data.size()),
            {}};
}

// Raw deflate (as zip stores it) at the best compression.
std::string deflateRaw(const std::string& in) {
    z_stream zs{};
    if (deflateInit2(&zs, Z_BEST_COMPRESSION, Z_DEFLATED, -MAX_WBITS, 9, Z_DEFAULT_STRATEGY) != Z_OK)
        throw std::runtime_error("deflateInit2");
    std::string out(deflateBound(&zs, in.size()), '\0');
    zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
    zs.avail_in = static_cast<uInt>(in.size());
    zs.next_out = reinterpret_cast<Bytef*>(out.data());
    zs.avail_out = static_cast<uInt>(out.size());
    const int rc = deflate(&zs, Z_FINISH);
    out.resize(zs.total_out);
    deflateEnd(&zs);
    if (rc != Z_STREAM_END)
        throw std::runtime_error("deflate");
    return out;
}

Member deflated(const std::string& name, const std::string& data, std::uint32_t declared) {
    const std::string z = deflateRaw(data);
    return {name, z, 8, static_cast<std::uint32_t>(z.size()), declared, {}};
}

const std::string kPickle = std::string("\x80\x02N.", 4); // None

} // namespace

void TestMalformed::zipCases_data() {
    QTest::addColumn<QByteArray>("bytes");
    QTest::addColumn<QString>("expected");
    const std::string good = readFile(dataPath("small.pt"));
    auto row = [](const char* name, const std::string& b, const char* expected) {
        QTest::newRow(name) << QByteArray(b.data(), static_cast<qsizetype>(b.size())) << QString(expected);
    };
    row("unmodified", good, "ok");
    row("empty file", "", "t.pt: file is empty");
    row("not a checkpoint", "hello world, this is text",
        "not a recognised checkpoint format (first bytes: 68 65 6c 6c");
    row("preview format", "PYTORCH1 and some more bytes",
        "unsupported archive format from the PyTorch preview release");
    row("truncated in the middle", good.substr(0, good.size() / 2), "no zip end-of-central-directory record");
    row("truncated by one byte", good.substr(0, good.size() - 1), "no zip end-of-central-directory record");
    {
        std::string b = good;
        putU64(b, b.find("PK\x06\x06") + 48, 0xFFFFFFFFFFull); // zip64 central directory offset
        row("central directory out of bounds", b, "central directory (offset 1099511627775");
    }
    {
        std::string b = good;
        putU32(b, centralEntry(b, "small/data.pkl") + 42, 0x7FFFFFF0); // local header offset
        row("data.pkl header out of bounds", b,
            "zip entry 'small/data.pkl': local header offset 2147483632 lies outside");
    }
    {
        std::string b = good;
        const std::size_t ce = centralEntry(b, "small/data/0");
        putU32(b, ce + 20, 4);
        putU32(b, ce + 24, 4);
        row("storage larger than its record", b,
            "w: storage '0' declares 48 bytes but its record 'small/data/0' holds only 4");
    }
    {
        std::string b = good;
        const std::size_t ce = centralEntry(b, "small/data/1");
        putU32(b, ce + 20, 0x7FFFFFFF);
        putU32(b, ce + 24, 0x7FFFFFFF);
        row("storage record runs past the end", b,
            "storage record 'small/data/1': data (2147483647 bytes at offset");
    }
    row("storage record missing", replaceAll(good, "small/data/0", "small/data/X"),
        "w: storage record 'small/data/0' referenced by the pickle does not exist");
    row("duplicate entry names", replaceAll(good, "small/data/1", "small/data/0"),
        "zip entry name 'small/data/0' appears twice");
    row("names differing only in case", replaceAll(good, "small/data/1", "small/DATA/0"),
        "appears twice (names are compared ignoring case");
    row("no data.pkl", replaceAll(good, "small/data.pkl", "small/data.pkX"),
        "archive has no 'small/data.pkl' record");
    row("entry outside a folder", replaceAll(good, "small/data.pkl", "smallXdata.pkl"),
        "file in archive is not in a subdirectory: 'smallXdata.pkl'");
    {
        std::string b = good;
        const std::size_t dataStart = 30 + getU16(b, 26) + getU16(b, 28);
        b[dataStart] = static_cast<char>(0xFF);
        const std::string expected =
            "t.pt: at byte " + std::to_string(dataStart) + ": small/data.pkl: unknown pickle opcode 0xff";
        row("bad pickle opcode", b, expected.c_str());
    }
    {
        std::string b = good;
        const std::size_t ce = centralEntry(b, "small/data.pkl");
        putU32(b, ce + 20, 40);
        putU32(b, ce + 24, 40);
        row("pickle cut short", b, "small/data.pkl: text line runs past the end of the data");
    }
    {
        std::string b = good;
        const std::size_t ce0 = centralEntry(b, "small/data/0");
        putU32(b, ce0 + 20, 48 + 100); // record 0 now reaches into record 1's header
        putU32(b, ce0 + 24, 48 + 100);
        row("overlapping entries", b, "entries 'small/data/0' and 'small/data/1' overlap");
    }
    {
        // data.pkl's compressed size is saturated, but its zip64 extra field is empty.
        Member pkl = stored("a/data.pkl", kPickle);
        pkl.compressedField = 0xFFFFFFFF;
        pkl.centralExtra = le(0x0001, 2) + le(0, 2);
        const std::string b = zipOf({pkl, stored("a/version", "3\n")});
        const std::size_t field = centralEntry(b, "a/data.pkl") + 46 + pkl.name.size() + 4;
        const std::string expected = "t.pt: at byte " + std::to_string(field) +
                                     ": zip64 extra field of 'a/data.pkl': needs 8 bytes but only 0 are left";
        row("zip64 extra field too short", b, expected.c_str());
    }
    {
        // A few bytes of deflate cannot hold 1.5 GB: refused before any output is produced.
        const std::string b =
            zipOf({deflated("a/data.pkl", kPickle, 1'500'000'000), stored("a/version", "3\n")});
        const std::string z = deflateRaw(kPickle);
        const std::string expected = "zip entry 'a/data.pkl' declares 1500000000 bytes from " +
                                     std::to_string(z.size()) +
                                     " compressed bytes, more than deflate can produce (at most 1032 bytes "
                                     "per compressed byte)";
        row("deflated size beyond deflate's ratio", b, expected.c_str());
    }
    row("deflated pickle", zipOf({deflated("a/data.pkl", kPickle, 4), stored("a/version", "3\n")}), "ok");
}

void TestMalformed::zipCases() {
    QFETCH(QByteArray, bytes);
    QFETCH(QString, expected);
    const std::string got = openOutcome("t.pt", bytes.toStdString());
    if (expected == "ok")
        QCOMPARE(QString::fromStdString(got), expected);
    else
        QVERIFY2(got.find(expected.toStdString()) != std::string::npos, ("got: " + got).c_str());
}

void TestMalformed::legacyCases_data() {
    QTest::addColumn<QByteArray>("bytes");
    QTest::addColumn<QString>("expected");
    const std::string good = readFile(dataPath("small_legacy.pt"));
    auto row = [](const char* name, const std::string& b, const char* expected) {
        QTest::newRow(name) << QByteArray(b.data(), static_cast<qsizetype>(b.size())) << QString(expected);
    };
    row("unmodified", good, "ok");
    row("cut inside the last storage", good.substr(0, good.size() - 3),
        "declares 8 bytes but the file holds only 5 more");
    row("cut after the key list", good.substr(0, good.find("\x80\x02]q") + 2),
        "storage key list: needs 1 bytes");
    {
        std::string b = good;
        b[4] ^= 0x01; // inside the magic number's LONG1
        row("wrong magic number", b, "t.pt: at byte 0: invalid magic number; corrupt file?");
    }
    {
        std::string b = good;
        b[18] = static_cast<char>(0xEB); // protocol version 1001 -> 1003 (BININT2 low byte)
        row("wrong protocol version", b, "invalid protocol version: 1003");
    }
}

void TestMalformed::legacyCases() {
    zipCases();
}

void TestMalformed::everyTruncationFails_data() {
    QTest::addColumn<QString>("fixture");
    QTest::newRow("zip") << "small.pt";
    QTest::newRow("legacy") << "small_legacy.pt";
    QTest::newRow("sample training checkpoint (sampled)")
        << "../../../resources/sample/training_checkpoint.pt";
}

void TestMalformed::everyTruncationFails() {
    QFETCH(QString, fixture);
    const std::string good = readFile(dataPath(fixture.toUtf8().constData()));
    const std::size_t step = good.size() > 4096 ? good.size() / 1500 : 1;
    for (std::size_t cut = 0; cut < good.size(); cut += step) {
        const std::string got = openOutcome("t.pt", good.substr(0, cut));
        QVERIFY2(got != "ok", ("truncation at " + std::to_string(cut) + " was not reported").c_str());
    }
}

void TestMalformed::randomCorruptionNeverCrashes() {
    // Flipped bytes may still give a readable file; what matters is a clean outcome every time.
    std::mt19937 rng(12345);
    for (const char* fixture : {"small.pt", "small_legacy.pt"}) {
        const std::string good = readFile(dataPath(fixture));
        for (int i = 0; i < 3000; ++i) {
            std::string b = good;
            const int flips = 1 + static_cast<int>(rng() % 4);
            for (int f = 0; f < flips; ++f)
                b[rng() % b.size()] ^= static_cast<char>(1u << (rng() % 8));
            try {
                const auto ck = ckpt::openCheckpointBuffer("t.pt", b);
                for (const auto& t : ck->tensors) {
                    try {
                        ckpt::computeStats(ck, t, 8);
                    } catch (const ckpt::Error&) {
                    }
                }
            } catch (const ckpt::Error&) {
            }
        }
    }
}

// Inflating follows the stream, not the declared size: exact sizes inflate (also at deflate's best ratios),
// any other declared size is an error.
void TestMalformed::inflate_data() {
    QTest::addColumn<int>("size");
    QTest::addColumn<int>("declaredDelta");
    QTest::addColumn<QString>("expected");
    QTest::newRow("empty") << 0 << 0 << "ok";
    QTest::newRow("small") << 1000 << 0 << "ok";
    QTest::newRow("64 MiB of zeros") << (64 << 20) << 0 << "ok";
    QTest::newRow("declared one byte short")
        << 100'000 << -1 << "does not inflate to its declared 99999 bytes";
    QTest::newRow("declared one byte long")
        << 100'000 << 1 << "does not inflate to its declared 100001 bytes";
    QTest::newRow("declared 10x") << (1 << 20) << (9 << 20)
                                  << "does not inflate to its declared 10485760 bytes";
}

void TestMalformed::inflate() {
    QFETCH(int, size);
    QFETCH(int, declaredDelta);
    QFETCH(QString, expected);
    std::string data(static_cast<std::size_t>(size), '\0');
    std::uint32_t x = 12345; // below 16 MiB: pseudo-random bytes, which deflate hardly compresses
    for (std::size_t i = 0; size < (16 << 20) && i < data.size(); ++i) {
        x = x * 1664525u + 1013904223u;
        data[i] = static_cast<char>(x >> 24);
    }
    const std::uint32_t declared = static_cast<std::uint32_t>(size + declaredDelta);
    const std::string b = zipOf({deflated("a/blob", data, declared)});
    ckpt::ZipArchive zip(ckpt::MappedFile::fromBuffer("t.zip", b));
    const ckpt::ZipEntry* e = zip.find("a/blob");
    QVERIFY(e);
    if (size >= (16 << 20))
        QVERIFY(e->compressedSize * 500 < e->uncompressedSize); // a ratio near deflate's maximum
    try {
        const std::string got = zip.read(*e, 1ull << 30);
        QCOMPARE(QString("ok"), expected);
        QVERIFY(got == data);
    } catch (const ckpt::Error& err) {
        QVERIFY2(std::string(err.what()).find(expected.toStdString()) != std::string::npos, err.what());
    }
}

QTEST_GUILESS_MAIN(TestMalformed)
#include "tst_malformed.moc"
