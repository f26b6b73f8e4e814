// NumPy .npy / .npz: each row one rule of numpy/lib/format.py (other-formats.md §5), built in memory.

#include "testutil.h"

#include "analysis/elements.h"

#include <QTest>

#include <random>
#include <zlib.h>

using namespace testutil;

namespace {

// An .npy file: magic, version, header length, header padded with spaces to 64 and '\n', data.
std::string npy(const std::string& dict, const std::string& data, int major = 1, int minor = 0) {
    const std::size_t lenBytes = major == 1 ? 2 : 4;
    std::string h = dict;
    const std::size_t total = 8 + lenBytes + h.size() + 1;
    h.append((64 - total % 64) % 64, ' ');
    h += '\n';
    std::string b = "\x93NUMPY";
    b += static_cast<char>(major);
    b += static_cast<char>(minor);
    for (std::size_t i = 0; i < lenBytes; ++i)
        b += static_cast<char>((h.size() >> (8 * i)) & 0xFF);
    return b + h + data;
}

std::string doubles(std::initializer_list<double> v) {
    std::string b;
    for (const double d : v)
        b.append(reinterpret_cast<const char*>(&d), sizeof d);
    return b;
}

void put16(std::string& b, std::uint16_t v) {
    b += static_cast<char>(v & 0xFF);
    b += static_cast<char>(v >> 8);
}
void put32(std::string& b, std::uint32_t v) {
    for (int i = 0; i < 4; ++i)
        b += static_cast<char>((v >> (8 * i)) & 0xFF);
}

// A zip archive as np.savez (stored) or np.savez_compressed (deflated) writes it.
std::string zip(const std::vector<std::pair<std::string, std::string>>& members, bool deflate) {
    std::string out, central;
    for (const auto& [name, data] : members) {
        std::string payload = data;
        if (deflate) {
            z_stream zs{};
            deflateInit2(&zs, 6, Z_DEFLATED, -MAX_WBITS, 8, Z_DEFAULT_STRATEGY);
            payload.resize(deflateBound(&zs, data.size()));
            zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
            zs.avail_in = static_cast<uInt>(data.size());
            zs.next_out = reinterpret_cast<Bytef*>(payload.data());
            zs.avail_out = static_cast<uInt>(payload.size());
            ::deflate(&zs, Z_FINISH);
            payload.resize(zs.total_out);
            deflateEnd(&zs);
        }
        const auto crc = static_cast<std::uint32_t>(
            crc32(0, reinterpret_cast<const Bytef*>(data.data()), static_cast<uInt>(data.size())));
        const auto offset = static_cast<std::uint32_t>(out.size());
        auto common = [&](std::string& b) {
            put16(b, 20);
            put16(b, 0);
            put16(b, deflate ? 8 : 0);
            put16(b, 0);
            put16(b, 0);
            put32(b, crc);
            put32(b, static_cast<std::uint32_t>(payload.size()));
            put32(b, static_cast<std::uint32_t>(data.size()));
            put16(b, static_cast<std::uint16_t>(name.size()));
            put16(b, 0);
        };
        out += "PK\x03\x04";
        common(out);
        out += name + payload;
        central += "PK\x01\x02";
        put16(central, 20);
        common(central);
        put16(central, 0);
        put16(central, 0);
        put16(central, 0);
        put32(central, 0);
        put32(central, offset);
        central += name;
    }
    const auto cdOffset = static_cast<std::uint32_t>(out.size());
    out += central;
    out += std::string("PK\x05\x06", 4);
    put16(out, 0);
    put16(out, 0);
    put16(out, static_cast<std::uint16_t>(members.size()));
    put16(out, static_cast<std::uint16_t>(members.size()));
    put32(out, static_cast<std::uint32_t>(central.size()));
    put32(out, cdOffset);
    put16(out, 0);
    return out;
}

const std::string kF8 = "{'descr': '<f8', 'fortran_order': False, 'shape': (2, 2), }";
const std::string kGood = npy(kF8, doubles({1, 2, 3, 4}));

} // namespace

class TestNumpy : public QObject {
    Q_OBJECT
private Q_SLOTS:
    void npyCases_data();
    void npyCases();
    void fortranOrder();
    void bigEndian();
    void npz_data();
    void npz();
    void npzKeepsHealthyMembers();
    void npzInflatesOnDemand();
    void npzBrokenDeflatedMember_data();
    void npzBrokenDeflatedMember();
    void everyTruncationFails();
    void randomCorruptionNeverCrashes();
};

void TestNumpy::npyCases_data() {
    QTest::addColumn<QByteArray>("bytes");
    QTest::addColumn<QString>("expected");
    auto row = [](const char* name, const std::string& b, const std::string& expected) {
        QTest::newRow(name) << QByteArray(b.data(), static_cast<qsizetype>(b.size()))
                            << QString::fromStdString(expected);
    };
    row("unmodified", kGood, "ok");
    row("version 2.0", npy(kF8, doubles({1, 2, 3, 4}), 2), "ok");
    row("version 3.0", npy(kF8, doubles({1, 2, 3, 4}), 3), "ok");
    row("0-d", npy("{'descr': '<f8', 'fortran_order': False, 'shape': (), }", doubles({1})), "ok");
    row("empty", npy("{'descr': '<f4', 'fortran_order': False, 'shape': (0, 3), }", ""), "ok");
    row("1-tuple shape",
        npy("{'descr': '|b1', 'fortran_order': False, 'shape': (3,), }", std::string("\1\0\1", 3)), "ok");
    row("python 2 long",
        npy("{'descr': '<i8', 'fortran_order': False, 'shape': (1L,), }", std::string(8, '\0')), "ok");
    row("bad version", npy(kF8, doubles({1, 2, 3, 4}), 4),
        "t.npy: at byte 6: unsupported npy format version 4.0 (known: 1.0, 2.0, 3.0)");
    row("bad minor version", npy(kF8, doubles({1, 2, 3, 4}), 1, 1), "unsupported npy format version 1.1");
    {
        std::string b = kGood;
        b[8] = static_cast<char>(0xFF);
        b[9] = static_cast<char>(0xFF);
        row("header length past the end", b, "t.npy: at byte 8: npy header of 65535 bytes runs past the end");
    }
    {
        std::string b = "\x93NUMPY\x02";
        b += '\0';
        b += std::string("\xff\xff\xff\x7f", 4);
        b += "{}";
        row("header too large", b, "npy header of 2147483647 bytes exceeds the limit of 1048576");
    }
    row("header not a dict", npy("['descr']", ""), "npy header is not a dictionary");
    row("invalid header syntax", npy("{'descr': '<f8' 'shape': ()}", ""), "npy header: expected ',' or '}'");
    row("unterminated string", npy("{'descr: '<f8'}", ""), "npy header: expected ':'");
    row("missing key", npy("{'descr': '<f8', 'shape': (2,), }", doubles({1, 2})),
        "npy header lacks the key 'fortran_order'");
    row("extra key", npy("{'descr': '<f8', 'fortran_order': False, 'shape': (), 'x': 1}", doubles({1})),
        "npy header has the unexpected key 'x'");
    row("duplicate key",
        npy("{'descr': '<f8', 'descr': '<f4', 'fortran_order': False, 'shape': ()}", doubles({1})),
        "npy header: key 'descr' appears twice");
    row("negative dim", npy("{'descr': '<f8', 'fortran_order': False, 'shape': (-1,), }", ""),
        "shape holds something other than a size");
    row("shape not a tuple", npy("{'descr': '<f8', 'fortran_order': False, 'shape': [2], }", doubles({1, 2})),
        "npy header: shape is not a tuple");
    row("fortran_order not a bool", npy("{'descr': '<f8', 'fortran_order': 0, 'shape': (), }", doubles({1})),
        "fortran_order is not True or False");
    {
        std::string dims = "(";
        for (int i = 0; i < 65; ++i)
            dims += "1,";
        row("too many dims",
            npy("{'descr': '<f8', 'fortran_order': False, 'shape': " + dims + "), }", doubles({1})),
            "npy shape has 65 dimensions (limit 64)");
    }
    row("element count overflows",
        npy("{'descr': '<f8', 'fortran_order': False, 'shape': (4294967296, 4294967296, 2), }", ""),
        "npy shape's element count overflows 64 bits");
    row("byte size overflows",
        npy("{'descr': '<f8', 'fortran_order': False, 'shape': (4294967296, 2147483648), }", ""),
        "npy array's byte size overflows 64 bits");
    row("strides overflow next to a zero dim",
        npy("{'descr': '<f8', 'fortran_order': False, 'shape': (0, 4611686018427387904, 4611686018427387904, "
            "2), }",
            ""),
        "array: shape is too large for 64-bit strides");
    row("integer too large",
        npy("{'descr': '<f8', 'fortran_order': False, 'shape': (99999999999999999999,), }", ""),
        "npy header: integer too large");
    row("nested too deep", npy("{'descr': " + std::string(40, '(') + std::string(40, ')') + "}", ""),
        "npy header: nested deeper than 16");
    row("object dtype", npy("{'descr': '|O', 'fortran_order': False, 'shape': (2,), }", "\x80\x02N."),
        "array: array holds Python objects (dtype 'O'), which are stored as a pickle; refused");
    row("string dtype",
        npy("{'descr': '<U3', 'fortran_order': False, 'shape': (1,), }", std::string(12, 'a')),
        "array: unsupported npy dtype '<U3'");
    row("structured dtype", npy("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (1,), }", "abcd"),
        "array: structured (record) arrays are not supported");
    row("data too short", npy(kF8, doubles({1, 2, 3})),
        "array: array needs 32 bytes of data but only 24 follow its header");
}

void TestNumpy::npyCases() {
    QFETCH(QByteArray, bytes);
    QFETCH(QString, expected);
    const std::string got = openOutcome("t.npy", bytes.toStdString());
    if (expected == "ok")
        QCOMPARE(QString::fromStdString(got), expected);
    else
        QVERIFY2(got.find(expected.toStdString()) != std::string::npos, ("got: " + got).c_str());
}

void TestNumpy::fortranOrder() {
    // np.asfortranarray([[1, 2, 3], [4, 5, 6]]): column-major bytes 1 4 2 5 3 6
    const auto ck =
        ckpt::openCheckpointBuffer("f.npy", npy("{'descr': '<f8', 'fortran_order': True, 'shape': (2, 3), }",
                                                doubles({1, 4, 2, 5, 3, 6})));
    QCOMPARE(QString::fromStdString(ck->format), QString("numpy"));
    const auto& t = ck->tensors.at(0);
    QCOMPARE(QString::fromStdString(t.name), QString("array"));
    QCOMPARE(t.strides, (std::vector<std::int64_t>{1, 2}));
    ckpt::TensorReader r(ck, t);
    for (int i = 0; i < 6; ++i)
        QCOMPARE(r.element(static_cast<std::uint64_t>(i)), double(i + 1));
}

void TestNumpy::bigEndian() {
    std::string data;
    for (const std::uint32_t v : {0x3F800000u, 0x40000000u}) // 1.0f, 2.0f
        for (int i = 3; i >= 0; --i)
            data += static_cast<char>((v >> (8 * i)) & 0xFF);
    const auto ck = ckpt::openCheckpointBuffer(
        "b.npy", npy("{'descr': '>f4', 'fortran_order': False, 'shape': (2,), }", data));
    QVERIFY(ck->storages.at(0).bigEndian);
    ckpt::TensorReader r(ck, ck->tensors.at(0));
    QCOMPARE(r.element(0), 1.0);
    QCOMPARE(r.element(1), 2.0);
}

void TestNumpy::npz_data() {
    QTest::addColumn<bool>("deflate");
    QTest::newRow("savez (stored)") << false;
    QTest::newRow("savez_compressed (deflated)") << true;
}

void TestNumpy::npz() {
    QFETCH(bool, deflate);
    const auto ck = ckpt::openCheckpointBuffer(
        "t.npz", zip({{"w.npy", kGood},
                      {"b.npy", npy("{'descr': '<i2', 'fortran_order': False, 'shape': (3,), }",
                                    std::string("\1\0\2\0\3\0", 6))}},
                     deflate));
    QCOMPARE(QString::fromStdString(ck->format), QString("npz"));
    QCOMPARE(ck->tensors.size(), std::size_t(2));
    QCOMPARE(QString::fromStdString(ck->tensors[0].name), QString("w"));
    QCOMPARE(QString::fromStdString(ck->tensors[1].name), QString("b"));
    QCOMPARE(ck->sources.size(), deflate ? std::size_t(3) : std::size_t(1));
    QCOMPARE(ckpt::TensorReader(ck, ck->tensors[0]).element(3), 4.0);
    QCOMPARE(ckpt::TensorReader(ck, ck->tensors[1]).element(2), 3.0);
    QVERIFY(!ck->hasErrors());
}

void TestNumpy::npzKeepsHealthyMembers() {
    const std::string bytes =
        zip({{"ok.npy", kGood},
             {"obj.npy", npy("{'descr': '|O', 'fortran_order': False, 'shape': (1,), }", "\x80\x02N.")},
             {"bad.npy", "not an array"}},
            false);
    QCOMPARE(
        QString::fromStdString(openOutcome("t.npz", bytes)),
        QString("obj: array holds Python objects (dtype 'O'), which are stored as a pickle; refused: reading "
                "it would mean unpickling | bad: member 'bad.npy': not an npy array: it does not start with "
                "\"\\x93NUMPY\""));
    const auto ck = ckpt::openCheckpointBuffer("t.npz", bytes);
    QCOMPARE(ck->tensors.size(), std::size_t(3));
    QVERIFY(ck->tensors[0].error.empty());
    QCOMPARE(ckpt::TensorReader(ck, ck->tensors[0]).element(0), 1.0);
}

namespace {
// 4096 doubles in a compressible pattern: a dynamic-Huffman deflate stream of several kilobytes.
std::string patterned() {
    std::string d;
    for (int i = 0; i < 4096; ++i) {
        const double v = (i * 7919) % 13;
        d.append(reinterpret_cast<const char*>(&v), sizeof v);
    }
    return npy("{'descr': '<f8', 'fortran_order': False, 'shape': (4096,), }", d);
}
} // namespace

void TestNumpy::npzInflatesOnDemand() {
    const auto ck =
        ckpt::openCheckpointBuffer("t.npz", zip({{"w.npy", kGood},
                                                 {"z.npy", npy("{'descr': '<f4', 'fortran_order': False, "
                                                               "'shape': (1000, 1000), }",
                                                               std::string(4000000, '\0'))}},
                                                true));
    QVERIFY(!ck->hasErrors());
    QVERIFY2(ck->formatDetail.find("2 compressed, inflated on demand") != std::string::npos,
             ck->formatDetail.c_str());
    QCOMPARE(ck->sources.size(), std::size_t(3));
    for (std::size_t i = 1; i < 3; ++i)
        QVERIFY(!ck->sources[i].file->isLoaded());
    QCOMPARE(ck->sources[2].file->size(), std::uint64_t(128 + 4000000));
    QCOMPARE(ckpt::TensorReader(ck, ck->tensors[1]).element(999999), 0.0);
    QVERIFY(ck->sources[2].file->isLoaded());
    QVERIFY(!ck->sources[1].file->isLoaded());
    QCOMPARE(ckpt::TensorReader(ck, ck->tensors[0]).element(3), 4.0);
}

void TestNumpy::npzBrokenDeflatedMember_data() {
    QTest::addColumn<QByteArray>("bytes");
    QTest::addColumn<QString>("expected");
    const std::string good = zip({{"w.npy", kGood}, {"v.npy", patterned()}}, true);
    const std::size_t central = centralEntry(good, "v.npy");
    const std::size_t local = static_cast<std::size_t>(static_cast<unsigned char>(good[central + 42])) |
                              static_cast<std::size_t>(static_cast<unsigned char>(good[central + 43])) << 8;
    const std::size_t payload = local + 30 + 5;
    const std::size_t compressedSize = static_cast<std::size_t>(getU16(good, central + 20));
    QVERIFY(compressedSize > 200);
    auto row = [](const char* name, const std::string& b, const std::string& expected) {
        QTest::newRow(name) << QByteArray(b.data(), static_cast<qsizetype>(b.size()))
                            << QString::fromStdString(expected);
    };
    {
        std::string b = good;
        for (std::size_t i = compressedSize / 2; i < compressedSize / 2 + 8; ++i)
            b[payload + i] = static_cast<char>(b[payload + i] ^ 0x5A);
        row("corrupt deflate stream", b,
            "t.npz: at byte " + std::to_string(payload) + ": v: zip entry 'v.npy'");
    }
    {
        std::string b = good;
        b[central + 16] = static_cast<char>(b[central + 16] ^ 1);
        b[local + 14] = static_cast<char>(b[local + 14] ^ 1);
        row("wrong CRC-32", b,
            "t.npz: at byte " + std::to_string(payload) +
                ": v: zip entry 'v.npy' inflates to bytes whose CRC-32 differs from the one the archive "
                "records");
    }
    {
        // a declared size past the stream's end, still large enough for the header's shape
        std::string b = good;
        putU32(b, central + 24, 128 + 4096 * 8 + 16);
        putU32(b, local + 22, 128 + 4096 * 8 + 16);
        row("declared size too large", b,
            "t.npz: at byte " + std::to_string(payload) +
                ": v: zip entry 'v.npy' does not inflate to its declared 32912 bytes");
    }
}

// A deflated member whose header reads but whose data does not: the archive opens, and reading the values
// fails with an error naming the file, the member and the tensor; the other member still reads.
void TestNumpy::npzBrokenDeflatedMember() {
    QFETCH(QByteArray, bytes);
    QFETCH(QString, expected);
    const std::string b = bytes.toStdString();
    QCOMPARE(QString::fromStdString(openOutcome("t.npz", b)), QString("ok"));
    const auto ck = ckpt::openCheckpointBuffer("t.npz", b);
    QCOMPARE(ck->tensors.size(), std::size_t(2));
    const auto& v = ck->tensors[1];
    QCOMPARE(v.shape, (std::vector<std::int64_t>{4096}));
    for (int attempt = 0; attempt < 2; ++attempt) {
        try {
            ckpt::TensorReader r(ck, v);
            r.forEachChunk([](std::span<const double>, std::uint64_t) { return true; });
            QFAIL("reading the broken member succeeded");
        } catch (const ckpt::Error& e) {
            QVERIFY2(std::string(e.what()).find(expected.toStdString()) != std::string::npos, e.what());
            QCOMPARE(QString::fromStdString(e.object()), QString("v"));
        }
    }
    QCOMPARE(ckpt::TensorReader(ck, ck->tensors[0]).element(3), 4.0);
}

void TestNumpy::everyTruncationFails() {
    for (std::size_t cut = 0; cut < kGood.size(); ++cut) {
        const std::string got = openOutcome("t.npy", kGood.substr(0, cut));
        QVERIFY2(got != "ok", ("truncation at " + std::to_string(cut) + " was not reported").c_str());
    }
}

void TestNumpy::randomCorruptionNeverCrashes() {
    std::mt19937 rng(11);
    const std::string npz = zip({{"w.npy", kGood}, {"v.npy", kGood}}, true);
    for (const std::string& good : {kGood, npz}) {
        for (int i = 0; i < 3000; ++i) {
            std::string b = good;
            const int flips = 1 + static_cast<int>(rng() % 4);
            for (int k = 0; k < flips; ++k)
                b[rng() % b.size()] = static_cast<char>(rng() & 0xFF);
            try {
                const auto ck = ckpt::openCheckpointBuffer("r.npz", b);
                for (const auto& t : ck->tensors)
                    if (t.error.empty() && t.storage >= 0) {
                        ckpt::TensorReader r(ck, t);
                        r.forEachChunk([](std::span<const double>, std::uint64_t) { return true; });
                    }
            } catch (const ckpt::Error&) {
            }
        }
    }
}

QTEST_GUILESS_MAIN(TestNumpy)
#include "tst_numpy.moc"
