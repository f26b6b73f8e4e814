// GGUF reader: one row per validation rule with the message a user sees, fixtures built in memory; exact
// dequantization of q8_0 / q4_0 against hand-computed values; shapes in PyTorch order (reverse of ne).

#include "testutil.h"

#include "analysis/elements.h"
#include "analysis/stats.h"

#include <QTest>

#include <vector>

using namespace testutil;

namespace {

void u32(std::string& b, std::uint32_t v) {
    for (int i = 0; i < 4; ++i)
        b += static_cast<char>((v >> (8 * i)) & 0xFF);
}
void u64(std::string& b, std::uint64_t v) {
    for (int i = 0; i < 8; ++i)
        b += static_cast<char>((v >> (8 * i)) & 0xFF);
}
void str(std::string& b, const std::string& s) {
    u64(b, s.size());
    b += s;
}
std::string header(std::uint64_t tensors, std::uint64_t kvs, std::uint32_t version = 3) {
    std::string b = "GGUF";
    u32(b, version);
    u64(b, tensors);
    u64(b, kvs);
    return b;
}
std::string kvString(const std::string& key, const std::string& value) {
    std::string b;
    str(b, key);
    u32(b, 8);
    str(b, value);
    return b;
}
std::string kvU32(const std::string& key, std::uint32_t value, std::uint32_t type = 4) {
    std::string b;
    str(b, key);
    u32(b, type);
    u32(b, value);
    return b;
}
std::string tensorInfo(const std::string& name, const std::vector<std::uint64_t>& ne, std::uint32_t type,
                       std::uint64_t offset) {
    std::string b;
    str(b, name);
    u32(b, static_cast<std::uint32_t>(ne.size()));
    for (auto n : ne)
        u64(b, n);
    u32(b, type);
    u64(b, offset);
    return b;
}
// Header + architecture key + the given tensor infos, padded to 32, then `data`.
std::string file(const std::vector<std::string>& infos, const std::string& data,
                 const std::vector<std::string>& extraKvs = {}) {
    std::string b = header(infos.size(), 1 + extraKvs.size()) + kvString("general.architecture", "test");
    for (const auto& kv : extraKvs)
        b += kv;
    for (const auto& i : infos)
        b += i;
    b.resize((b.size() + 31) / 32 * 32, '\0');
    return b + data;
}
std::string floats(std::initializer_list<float> v) {
    std::string b;
    for (float f : v) {
        std::uint32_t u;
        std::memcpy(&u, &f, 4);
        u32(b, u);
    }
    return b;
}

} // namespace

class TestGguf : public QObject {
    Q_OBJECT
private Q_SLOTS:
    void rules_data();
    void rules();
    void metadataValues();
    void shapesAreReversed();
    void dequantizeQ8_0();
    void dequantizeQ4_0();
    void dequantizeBlocks_data();
    void dequantizeBlocks();
    void blockNbytes();
    void otherQuantTypesRefused();
    void brokenTensorKeepsOthersReadable();
    void layoutGgmlWouldRefuseWarns();
    void longKeyWithManyStrings();
};

void TestGguf::rules_data() {
    QTest::addColumn<QByteArray>("bytes");
    QTest::addColumn<QString>("expected");
    auto row = [](const char* name, const std::string& b, const std::string& expected) {
        QTest::newRow(name) << QByteArray(b.data(), static_cast<qsizetype>(b.size()))
                            << QString::fromStdString(expected);
    };
    const std::string f32data = floats({1, 2, 3, 4, 5, 6});
    const std::string good = file({tensorInfo("a", {3, 2}, 0, 0)}, f32data);
    row("valid file", good, "ok");
    {
        std::string b = good;
        b[3] = 'X';
        row("bad magic", b, "not a recognised checkpoint format (first bytes: 47 47 55 58");
    }
    row("version 1", header(0, 0, 1),
        "t.gguf: at byte 4: GGUF version 1 (32-bit counts, 2023) is not supported");
    row("version 4", header(0, 0, 4),
        "at byte 4: GGUF version 4 is not supported; only versions 2 and 3 are");
    row("big-endian", header(0, 0, 0x03000000),
        "written big-endian; big-endian GGUF files are not supported");
    row("version 2 reads", header(0, 0, 2), "ok");
    row("truncated header", header(0, 0).substr(0, 18),
        "t.gguf: at byte 16: needs 8 bytes but only 2 are left");
    row("huge tensor count", header(1ull << 32, 0),
        "at byte 8: tensor count 4294967296 exceeds the limit of 16777216");
    row("huge key count", header(0, 1ull << 40),
        "at byte 16: metadata key count 1099511627776 exceeds the limit");
    row("counts beyond the file", header(10, 1000),
        "the header declares 1000 metadata keys and 10 tensors, more than the 0 bytes left can hold");
    {
        std::string b = header(0, 1);
        u64(b, 1000);
        b += std::string(20, 'k');
        row("key string past end", b,
            "at byte 24: metadata key 0 of 1000 bytes runs past the end of the file");
    }
    {
        std::string b = header(0, 1);
        str(b, "a");
        u32(b, 8);
        u64(b, 1ull << 31);
        b += std::string(20, 'v');
        row("string value past end", b, "string value of 'a' of 2147483648 bytes runs past the end");
    }
    {
        std::string b = header(0, 1);
        str(b, "a");
        u32(b, 13);
        u64(b, 0);
        row("unknown value type", b, "at byte 33: metadata key 'a' has unknown value type 13");
    }
    {
        std::string b = header(0, 1);
        str(b, "a");
        u32(b, 9);
        u32(b, 20);
        u64(b, 0);
        row("unknown array element type", b, "array value of 'a' has unknown element type 20");
    }
    {
        std::string b = header(0, 1);
        str(b, "a");
        u32(b, 9);
        u32(b, 4);
        u64(b, 1000);
        b += std::string(40, '\0');
        row("array count beyond the file", b,
            "array value of 'a' declares 1000 u32 items, more than the 40 bytes");
    }
    {
        std::string b = header(0, 1);
        str(b, "a");
        u32(b, 9);
        u32(b, 4);
        u64(b, (1ull << 30) + 1);
        row("array count over the limit", b,
            "array value of 'a' has 1073741825 items; the limit is 1073741824");
    }
    {
        std::string b = header(0, 1);
        str(b, "deep");
        u32(b, 9);
        for (int i = 0; i < 5; ++i) { // five levels of arrays, one item each
            u32(b, 9);
            u64(b, 1);
        }
        u32(b, 4);
        u64(b, 0);
        row("nested array depth", b, "value of 'deep' nests arrays deeper than 4 levels");
    }
    {
        std::string b = header(0, 1);
        str(b, "ok");
        u32(b, 9);
        for (int i = 0; i < 3; ++i) {
            u32(b, 9);
            u64(b, 1);
        }
        u32(b, 4);
        u64(b, 1);
        u32(b, 7);
        row("nested arrays within the cap", b, "ok");
    }
    row("duplicate key", header(0, 2) + kvU32("a", 1) + kvU32("a", 2), "duplicate metadata key 'a'");
    row("key of 2^16-1 bytes", file({}, {}, {kvU32(std::string(65535, 'k'), 1)}), "ok");
    row("key longer than the spec's 2^16-1 bytes", header(0, 1) + kvU32(std::string(65536, 'k'), 1),
        "t.gguf: at byte 24: metadata key 0 is 65536 bytes long; the limit is 65535");
    row("alignment not a power of two", file({}, {}, {kvU32("general.alignment", 48)}),
        "general.alignment must be a u32 power of two; it is the u32 48");
    row("alignment zero", file({}, {}, {kvU32("general.alignment", 0)}),
        "general.alignment must be a u32 power of two");
    row("alignment of the wrong type", file({}, {}, {kvU32("general.alignment", 32, 5)}),
        "general.alignment must be a u32 power of two; it is the i32 32");
    row("tensor name too long", file({tensorInfo(std::string(64, 'n'), {1}, 0, 0)}, f32data),
        "is 64 bytes long; ggml allows at most 63");
    row("duplicate tensor name", file({tensorInfo("a", {1}, 0, 0), tensorInfo("a", {1}, 0, 32)}, f32data),
        "duplicate tensor name 'a'");
    row("n_dims > 4", file({tensorInfo("a", {1, 1, 1, 1, 1}, 0, 0)}, f32data),
        "tensor 'a' has 5 dimensions; ggml allows at most 4");
    row("truncated tensor info", file({tensorInfo("a", {3, 2}, 0, 0)}, "").substr(0, 77),
        "needs 4 bytes but only 0 are left");
    row("unknown ggml type", file({tensorInfo("a", {1}, 99, 0)}, f32data), "a: unknown ggml type 99");
    row("removed ggml type 4", file({tensorInfo("a", {1}, 4, 0)}, f32data), "a: unknown ggml type 4");
    row("ne[0] not a multiple of the block size", file({tensorInfo("q", {16}, 8, 0)}, std::string(34, '\0')),
        "q: ne[0] = 16 is not a multiple of the q8_0 block size 32");
    row("negative dimension", file({tensorInfo("a", {1ull << 63}, 0, 0)}, f32data),
        "a: dimension ne[0] = 9223372036854775808 is negative as ggml's int64");
    row("element count overflow", file({tensorInfo("a", {1ull << 62, 4}, 0, 0)}, f32data),
        "a: number of elements overflows");
    row("size overflow", file({tensorInfo("a", {1ull << 62}, 28, 0)}, f32data),
        "a: byte size of 4611686018427387904 float64 elements overflows");
    row("f32 size overflow", file({tensorInfo("a", {1ull << 62}, 0, 0)}, f32data),
        "a: byte size of 4611686018427387904 float32 elements overflows");
    row("misaligned offset", file({tensorInfo("a", {1}, 0, 4)}, f32data),
        "a: data offset 4 is not a multiple of the alignment 32");
    row("offset out of file", file({tensorInfo("a", {3, 2}, 0, 1ull << 20)}, f32data),
        "a: data (24 bytes at data offset 1048576, data section at byte 128) runs past the end of the file "
        "(152 bytes)");
    row("offset overflowing", file({tensorInfo("a", {3, 2}, 0, ~0ull - 31)}, f32data),
        "runs past the end of the file");
    row("data cut short", file({tensorInfo("a", {3, 2}, 0, 0)}, f32data.substr(0, 20)),
        "a: data (24 bytes at data offset 0, data section at byte 128) runs past the end of the file (148 "
        "bytes)");
    row("overlapping offsets",
        file({tensorInfo("a", {8}, 0, 0), tensorInfo("b", {8}, 0, 0)}, f32data + f32data),
        "b: data (bytes 0..32 of the data section) overlaps tensor 'a'");
    row("overlap in reverse file order",
        file({tensorInfo("a", {8}, 0, 32), tensorInfo("b", {16}, 0, 0)}, f32data + f32data + f32data),
        "a: data (bytes 32..64 of the data section) overlaps tensor 'b'");
}

void TestGguf::rules() {
    QFETCH(QByteArray, bytes);
    QFETCH(QString, expected);
    const std::string outcome = openOutcome("t.gguf", bytes.toStdString());
    if (expected == "ok")
        QCOMPARE(QString::fromStdString(outcome), expected);
    else
        QVERIFY2(outcome.find(expected.toStdString()) != std::string::npos, outcome.c_str());
}

void TestGguf::metadataValues() {
    std::string arr;
    str(arr, "tokens");
    u32(arr, 9);
    u32(arr, 8);
    u64(arr, 100);
    for (int i = 0; i < 100; ++i)
        str(arr, "t" + std::to_string(i));
    std::string big;
    str(big, "big");
    u32(big, 10);
    u64(big, ~0ull);
    std::string neg;
    str(neg, "neg");
    u32(neg, 1);
    neg += static_cast<char>(0x80);
    const auto ck = ckpt::openCheckpointBuffer("m.gguf", file({}, {}, {arr, big, neg}));
    QCOMPARE(ck->format, std::string("gguf"));
    QCOMPARE(ck->values.size(), std::size_t(4));
    QCOMPARE(ck->values[0].name, std::string("general.architecture"));
    QCOMPARE(ck->values[0].value->text, std::string("test"));
    const ckpt::Value* tokens = ck->values[1].value;
    QCOMPARE(tokens->items.size(), std::size_t(65));
    QCOMPARE(tokens->items[63]->text, std::string("t63"));
    QCOMPARE(tokens->items[64]->text, std::string("... 36 more (100 items)"));
    QCOMPARE(ck->values[2].value->kind, ckpt::ValueKind::BigInt);
    QCOMPARE(ck->values[2].value->text, std::string("18446744073709551615"));
    QCOMPARE(ck->values[3].value->integer, std::int64_t(-128));
}

void TestGguf::shapesAreReversed() {
    // ne = [3, 2]: 2 rows of 3; PyTorch order is [2, 3] and element (1, 1) is the fifth float in the file.
    const auto ck = ckpt::openCheckpointBuffer(
        "s.gguf", file({tensorInfo("a", {3, 2}, 0, 0)}, floats({1, 2, 3, 4, 5, 6})));
    const auto& t = ck->tensors.at(0);
    QCOMPARE(t.shape, (std::vector<std::int64_t>{2, 3}));
    QCOMPARE(t.strides, (std::vector<std::int64_t>{3, 1}));
    QCOMPARE(t.nbytes(), std::uint64_t(24));
    ckpt::TensorReader r(ck, t);
    QCOMPARE(r.element(4), 5.0);
    std::vector<double> all;
    r.forEachChunk([&](std::span<const double> v, std::uint64_t) {
        all.insert(all.end(), v.begin(), v.end());
        return true;
    });
    QCOMPARE(all, (std::vector<double>{1, 2, 3, 4, 5, 6}));
}

void TestGguf::dequantizeQ8_0() {
    // Two blocks: d = 0.5 (f16 0x3800) with q = -128, -1, 0, 1, 127, then 2, 3, ...; d = -0.25 (0xB400) with
    // q = i.
    std::string data;
    std::vector<double> expected;
    data += std::string("\x00\x38", 2);
    const std::int8_t first[5] = {-128, -1, 0, 1, 127};
    for (int j = 0; j < 32; ++j) {
        const std::int8_t q = j < 5 ? first[j] : static_cast<std::int8_t>(j - 3);
        data += static_cast<char>(q);
        expected.push_back(0.5 * q);
    }
    data += std::string("\x00\xB4", 2);
    for (int j = 0; j < 32; ++j) {
        data += static_cast<char>(j);
        expected.push_back(-0.25 * j);
    }
    QCOMPARE(expected[0], -64.0);
    QCOMPARE(expected[4], 63.5);
    QCOMPARE(expected[33], -0.25);
    const auto ck = ckpt::openCheckpointBuffer("q8.gguf", file({tensorInfo("q", {64}, 8, 0)}, data));
    const auto& t = ck->tensors.at(0);
    QVERIFY2(t.error.empty(), t.error.c_str());
    QCOMPARE(std::string(ckpt::dtypeName(t.dtype)), std::string("q8_0"));
    QCOMPARE(t.nbytes(), std::uint64_t(68));
    ckpt::TensorReader r(ck, t);
    for (std::uint64_t i = 0; i < 64; ++i)
        QCOMPARE(r.element(i), expected[i]);
    std::vector<double> all;
    bool inOrder = true;
    r.forEachChunk(
        [&](std::span<const double> v, std::uint64_t first) {
            inOrder &= first == all.size() && v.size() == 32;
            all.insert(all.end(), v.begin(), v.end());
            return true;
        },
        40); // not a whole number of blocks: rounded down to one
    QVERIFY(inOrder);
    QCOMPARE(all, expected);
    const auto stats = ckpt::computeStats(ck, t, 4);
    QVERIFY(stats);
    QCOMPARE(stats->min, -64.0);
    QCOMPARE(stats->max, 63.5);
}

void TestGguf::dequantizeQ4_0() {
    // d = 0.25 (f16 0x3400); byte j holds element j in its low nibble and element j + 16 in its high nibble.
    std::string data("\x00\x34", 2);
    for (int j = 0; j < 16; ++j)
        data += static_cast<char>((j << 4) | (15 - j));
    const auto ck = ckpt::openCheckpointBuffer("q4.gguf", file({tensorInfo("q", {32}, 2, 0)}, data));
    const auto& t = ck->tensors.at(0);
    QVERIFY2(t.error.empty(), t.error.c_str());
    QCOMPARE(t.nbytes(), std::uint64_t(18));
    ckpt::TensorReader r(ck, t);
    QCOMPARE(r.element(0), 1.75);  // (15 - 8) * 0.25
    QCOMPARE(r.element(15), -2.0); // (0 - 8) * 0.25
    QCOMPARE(r.element(16), -2.0); // high nibble of byte 0: 0
    QCOMPARE(r.element(31), 1.75); // high nibble of byte 15: 15
    QCOMPARE(r.element(20), -1.0); // high nibble of byte 4: (4 - 8) * 0.25
    std::vector<double> all;
    r.forEachChunk([&](std::span<const double> v, std::uint64_t) {
        all.insert(all.end(), v.begin(), v.end());
        return true;
    });
    QCOMPARE(all.size(), std::size_t(32));
    for (int j = 0; j < 16; ++j) {
        QCOMPARE(all[static_cast<std::size_t>(j)], (15 - j - 8) * 0.25);
        QCOMPARE(all[static_cast<std::size_t>(j + 16)], (j - 8) * 0.25);
    }
}

namespace {

// Encoders of ggml's block layouts (ggml-common.h, quantize_row_<type>_ref): from chosen integer quants,
// scales and mins, the bytes of each block and the value each element stands for (d and dmin powers of two,
// so every value is exact in float and double).
struct Quantized {
    std::string bytes;
    std::vector<double> values;
};

class Lcg {
public:
    int next(int lo, int hi) { // inclusive
        m_state = m_state * 6364136223846793005ull + 1442695040888963407ull;
        return lo + static_cast<int>((m_state >> 33) % static_cast<std::uint64_t>(hi - lo + 1));
    }

private:
    std::uint64_t m_state = 12345;
};

void half(std::string& b, std::uint16_t h) {
    b += static_cast<char>(h & 0xFF);
    b += static_cast<char>(h >> 8);
}
constexpr std::uint16_t kHalf = 0x3800, kQuarter = 0x3400, kMinusEighth = 0xB000; // 0.5, 0.25, -0.125

Quantized encode(int type, int blocks) {
    Quantized out;
    Lcg rng;
    for (int blk = 0; blk < blocks; ++blk) {
        std::string b;
        if (type == 3 || type == 6 || type == 7) { // q4_1, q5_0, q5_1: 32 elements
            const bool five = type != 3, hasMin = type != 6;
            const double d = 0.5, m = -0.125;
            int q[32];
            for (int& v : q)
                v = rng.next(0, five ? 31 : 15);
            half(b, kHalf);
            if (hasMin)
                half(b, kMinusEighth);
            if (five) {
                std::uint32_t qh = 0;
                for (int j = 0; j < 32; ++j)
                    qh |= static_cast<std::uint32_t>(q[j] >> 4) << j;
                for (int i = 0; i < 4; ++i)
                    b += static_cast<char>((qh >> (8 * i)) & 0xFF);
            }
            for (int j = 0; j < 16; ++j)
                b += static_cast<char>((q[j] & 0xF) | ((q[j + 16] & 0xF) << 4));
            for (int j = 0; j < 32; ++j)
                out.values.push_back(type == 6 ? d * (q[j] - 16) : d * q[j] + m);
        } else if (type == 9) { // q8_1
            half(b, kQuarter);
            half(b, 0); // s = d * sum(q): not used for values
            for (int j = 0; j < 32; ++j) {
                const int q = rng.next(-128, 127);
                b += static_cast<char>(static_cast<std::int8_t>(q));
                out.values.push_back(0.25 * q);
            }
        } else if (type == 10) { // q2_k: 16 groups of 16, 2-bit quants
            int q[256], sc[16], mn[16];
            for (int& v : q)
                v = rng.next(0, 3);
            for (int g = 0; g < 16; ++g) {
                sc[g] = rng.next(0, 15);
                mn[g] = rng.next(0, 15);
                b += static_cast<char>(sc[g] | (mn[g] << 4));
            }
            for (int j = 0; j < 256; j += 128)
                for (int l = 0; l < 32; ++l)
                    b += static_cast<char>(q[j + l] | (q[j + l + 32] << 2) | (q[j + l + 64] << 4) |
                                           (q[j + l + 96] << 6));
            half(b, kHalf);
            half(b, kQuarter);
            for (int i = 0; i < 256; ++i)
                out.values.push_back(0.5 * sc[i / 16] * q[i] - 0.25 * mn[i / 16]);
        } else if (type == 12 || type == 13) { // q4_k, q5_k: 8 groups of 32, 6-bit scales and mins
            const bool five = type == 13;
            int q[256], sc[8], mn[8];
            for (int& v : q)
                v = rng.next(0, five ? 31 : 15);
            for (int g = 0; g < 8; ++g) {
                sc[g] = rng.next(0, 63);
                mn[g] = rng.next(0, 63);
            }
            half(b, kHalf);
            half(b, kQuarter);
            std::uint8_t scales[12];
            for (int j = 0; j < 4; ++j) {
                scales[j] = static_cast<std::uint8_t>(sc[j] | ((sc[j + 4] >> 4) << 6));
                scales[j + 4] = static_cast<std::uint8_t>(mn[j] | ((mn[j + 4] >> 4) << 6));
                scales[j + 8] = static_cast<std::uint8_t>((sc[j + 4] & 0xF) | ((mn[j + 4] & 0xF) << 4));
            }
            b.append(reinterpret_cast<const char*>(scales), 12);
            if (five) {
                std::uint8_t qh[32] = {};
                for (int c = 0; c < 4; ++c)
                    for (int l = 0; l < 32; ++l) {
                        qh[l] |= static_cast<std::uint8_t>((q[64 * c + l] >> 4) << (2 * c));
                        qh[l] |= static_cast<std::uint8_t>((q[64 * c + 32 + l] >> 4) << (2 * c + 1));
                    }
                b.append(reinterpret_cast<const char*>(qh), 32);
            }
            for (int j = 0; j < 256; j += 64)
                for (int l = 0; l < 32; ++l)
                    b += static_cast<char>((q[j + l] & 0xF) | ((q[j + l + 32] & 0xF) << 4));
            for (int i = 0; i < 256; ++i)
                out.values.push_back(0.5 * sc[i / 32] * q[i] - 0.25 * mn[i / 32]);
        } else if (type == 14) { // q6_k: 16 groups of 16, signed scales, 6-bit quants offset by 32
            int q[256], sc[16];
            for (int& v : q)
                v = rng.next(0, 63);
            for (int& v : sc)
                v = rng.next(-8, 8);
            std::uint8_t ql[128] = {}, qh[64] = {};
            for (int i = 0; i < 256; ++i) {
                const int n = i / 128 * 128, r = i - n, part = r / 32, l = r % 32;
                const int at = n / 2 + l + (part & 1) * 32;
                ql[at] |= static_cast<std::uint8_t>((q[i] & 0xF) << (part >= 2 ? 4 : 0));
                qh[n / 4 + l] |= static_cast<std::uint8_t>((q[i] >> 4) << (2 * part));
            }
            b.append(reinterpret_cast<const char*>(ql), 128);
            b.append(reinterpret_cast<const char*>(qh), 64);
            for (int v : sc)
                b += static_cast<char>(static_cast<std::int8_t>(v));
            half(b, kHalf);
            for (int i = 0; i < 256; ++i)
                out.values.push_back(0.5 * sc[i / 16] * (q[i] - 32));
        } else if (type == 15) { // q8_k: f32 d, 256 int8, 16 int16 block sums
            const float d = -0.0625f;
            b.append(reinterpret_cast<const char*>(&d), 4);
            int sums[16] = {};
            for (int j = 0; j < 256; ++j) {
                const int q = rng.next(-127, 127);
                sums[j / 16] += q;
                b += static_cast<char>(static_cast<std::int8_t>(q));
                out.values.push_back(-0.0625 * q);
            }
            for (int v : sums)
                half(b, static_cast<std::uint16_t>(static_cast<std::int16_t>(v)));
        }
        out.bytes += b;
    }
    return out;
}

} // namespace

void TestGguf::dequantizeBlocks_data() {
    QTest::addColumn<int>("type");
    QTest::addColumn<QString>("name");
    QTest::addColumn<int>("blockBytes");
    QTest::newRow("q4_1") << 3 << "q4_1" << 20;
    QTest::newRow("q5_0") << 6 << "q5_0" << 22;
    QTest::newRow("q5_1") << 7 << "q5_1" << 24;
    QTest::newRow("q8_1") << 9 << "q8_1" << 36;
    QTest::newRow("q2_k") << 10 << "q2_k" << 84;
    QTest::newRow("q4_k") << 12 << "q4_k" << 144;
    QTest::newRow("q5_k") << 13 << "q5_k" << 176;
    QTest::newRow("q6_k") << 14 << "q6_k" << 210;
    QTest::newRow("q8_k") << 15 << "q8_k" << 292;
}

void TestGguf::dequantizeBlocks() {
    QFETCH(int, type);
    QFETCH(QString, name);
    QFETCH(int, blockBytes);
    const int blocks = 4;
    const Quantized q = encode(type, blocks);
    QCOMPARE(q.bytes.size(), std::size_t(blocks * blockBytes));
    const auto n = static_cast<std::uint64_t>(q.values.size());
    // Two rows of two blocks each ([2, n / 2] in PyTorch order; GGUF rows are whole blocks).
    const auto ck = ckpt::openCheckpointBuffer(
        "q.gguf", file({tensorInfo("q", {n / 2, 2}, static_cast<std::uint32_t>(type), 0)}, q.bytes));
    const auto& t = ck->tensors.at(0);
    QVERIFY2(t.error.empty(), t.error.c_str());
    QCOMPARE(QString::fromStdString(std::string(ckpt::dtypeName(t.dtype))), name);
    ckpt::TensorReader r(ck, t);
    QCOMPARE(r.numel(), n);
    for (std::uint64_t i = 0; i < n; ++i)
        QVERIFY2(r.element(i) == q.values[i], (std::to_string(i) + ": " + std::to_string(r.element(i)) +
                                               " != " + std::to_string(q.values[i]))
                                                  .c_str());
    std::vector<double> all;
    r.forEachChunk([&](std::span<const double> v, std::uint64_t first) {
        if (first != all.size())
            return false;
        all.insert(all.end(), v.begin(), v.end());
        return true;
    });
    QCOMPARE(all, q.values);
    const auto stats = ckpt::computeStats(ck, t, 4);
    QVERIFY(stats);
    QCOMPARE(stats->min, *std::min_element(q.values.begin(), q.values.end()));
    QCOMPARE(stats->max, *std::max_element(q.values.begin(), q.values.end()));
}

void TestGguf::blockNbytes() {
    std::uint64_t n = 0;
    QVERIFY(ckpt::dtypeNbytes(ckpt::DType::GgmlQ4_K, 512, &n));
    QCOMPARE(n, std::uint64_t(288));
    QVERIFY(ckpt::dtypeNbytes(ckpt::DType::Float32, 10, &n));
    QCOMPARE(n, std::uint64_t(40));
    QVERIFY(!ckpt::dtypeNbytes(ckpt::DType::Float64, 1ull << 62, &n));
    QCOMPARE(ckpt::dtypeSize(ckpt::DType::GgmlQ8_0), std::size_t(0));
    QCOMPARE(ckpt::dtypeBlockBytes(ckpt::DType::GgmlQ8_0), std::size_t(34));
    QVERIFY(!ckpt::dtypeFromName("q4_0")); // not a torch dtype: a pickle cannot name it
    QCOMPARE(*ckpt::dtypeFromAnyName("q4_0"), ckpt::DType::GgmlQ4_0);
    QCOMPARE(*ckpt::dtypeFromName("float32"), ckpt::DType::Float32);
}

void TestGguf::otherQuantTypesRefused() {
    const auto ck =
        ckpt::openCheckpointBuffer("k.gguf", file({tensorInfo("k", {256}, 11, 0)}, std::string(110, '\0')));
    const auto& t = ck->tensors.at(0);
    QVERIFY2(t.error.empty(), t.error.c_str());
    QCOMPARE(std::string(ckpt::dtypeName(t.dtype)), std::string("q3_k"));
    try {
        ckpt::TensorReader r(ck, t);
        QFAIL("q3_k read");
    } catch (const ckpt::Error& e) {
        QCOMPARE(e.code(), ckpt::ErrorCode::Unsupported);
        QCOMPARE(e.message(), std::string("statistics of q3_k tensors are not supported"));
    }
}

void TestGguf::brokenTensorKeepsOthersReadable() {
    const auto ck = ckpt::openCheckpointBuffer(
        "b.gguf", file({tensorInfo("good", {2}, 0, 0), tensorInfo("bad", {2}, 99, 32)}, floats({7, 8})));
    QCOMPARE(ck->tensors.size(), std::size_t(2));
    QVERIFY(ck->hasErrors());
    QCOMPARE(ck->tensors[1].error, std::string("unknown ggml type 99"));
    ckpt::TensorReader r(ck, ck->tensors[0]);
    QCOMPARE(r.element(1), 8.0);
}

void TestGguf::layoutGgmlWouldRefuseWarns() {
    // Tensors in reverse data order: they do not overlap, so both read, but ggml wants offsets in file order.
    const std::string data = floats({1, 2, 0, 0, 0, 0, 0, 0, 3, 4});
    std::string b = header(2, 0);
    b += tensorInfo("second", {2}, 0, 32) + tensorInfo("first", {2}, 0, 0);
    b.resize((b.size() + 31) / 32 * 32, '\0');
    const auto ck = ckpt::openCheckpointBuffer("w.gguf", b + data);
    QVERIFY(!ck->hasErrors());
    std::vector<std::string> warnings;
    for (const auto& f : ck->findings)
        if (f.severity == ckpt::Severity::Warning)
            warnings.push_back(f.object + ": " + f.message);
    QCOMPARE(warnings.size(), std::size_t(2));
    QCOMPARE(warnings[0],
             std::string("second: tensor data is not laid out as ggml writes it: offset 32, expected 0; "
                         "llama.cpp refuses such files"));
    QCOMPARE(warnings[1], std::string(": no general.architecture key; llama.cpp requires one"));
    QCOMPARE(ckpt::TensorReader(ck, *ck->findTensor("second")).element(1), 4.0);
}

void TestGguf::longKeyWithManyStrings() {
    // The longest key the spec allows, holding an array of two million empty strings: reading it takes time
    // linear in the file (the key goes into a message only when one is needed).
    const std::string key(65535, 'k');
    const std::uint64_t n = 2'000'000;
    std::string b = header(0, 1);
    str(b, key);
    u32(b, 9); // array
    u32(b, 8); // of strings
    u64(b, n);
    b.append(n * 8, '\0'); // n empty strings
    const auto ck = ckpt::openCheckpointBuffer("s.gguf", b);
    QCOMPARE(ck->values.size(), std::size_t(1));
    QCOMPARE(ck->values[0].name, key);
    const ckpt::Value* list = ck->values[0].value;
    QCOMPARE(list->items.size(), std::size_t(65));
    QCOMPARE(list->items[0]->text, std::string());
    QCOMPARE(list->items[64]->text, std::string("... 1999936 more (2000000 items)"));

    // The last string runs past the end: the message names the key.
    putU64(b, b.size() - 8, 5);
    QCOMPARE(openOutcome("s.gguf", b), "s.gguf: at byte " + std::to_string(b.size() - 8) +
                                           ": string value of '" + key +
                                           "' of 5 bytes runs past the end of the file (0 bytes left)");
}

QTEST_GUILESS_MAIN(TestGguf)
#include "tst_gguf.moc"
