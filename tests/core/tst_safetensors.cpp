// safetensors validation: each row one rule of the format (other-formats.md §2), built in memory, and the
// message a user sees.

#include "testutil.h"

#include "analysis/elements.h"
#include "formats/safetensors.h"

#include <QTest>

#include <random>

using namespace testutil;

namespace {

std::string le64(std::uint64_t v) {
    std::string b(8, '\0');
    putU64(b, 0, v);
    return b;
}

// A file with `header` as its JSON and `data` as its buffer.
std::string st(const std::string& header, const std::string& data = {}) {
    return le64(header.size()) + header + data;
}

std::string floats(std::initializer_list<float> v) {
    std::string b;
    for (const float f : v)
        b.append(reinterpret_cast<const char*>(&f), sizeof f);
    return b;
}

const std::string kGood =
    st(R"({"__metadata__":{"format":"pt"},"b":{"dtype":"F32","shape":[2],"data_offsets":[12,20]},)"
       R"("a":{"dtype":"F32","shape":[3],"data_offsets":[0,12]}})",
       floats({1, 2, 3, 4, 5}));

} // namespace

class TestSafetensors : public QObject {
    Q_OBJECT
private Q_SLOTS:
    void cases_data();
    void cases();
    void readerRefusesDirectly_data();
    void readerRefusesDirectly();
    void readsValues();
    void everyDType();
    void goldenVectors();
    void everyTruncationFails();
    void randomCorruptionNeverCrashes();
};

void TestSafetensors::cases_data() {
    QTest::addColumn<QByteArray>("bytes");
    QTest::addColumn<QString>("expected");
    auto row = [](const char* name, const std::string& b, const std::string& expected) {
        QTest::newRow(name) << QByteArray(b.data(), static_cast<qsizetype>(b.size()))
                            << QString::fromStdString(expected);
    };
    const std::string one = R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
    row("unmodified", kGood, "ok");
    row("empty header", st("{}"), "ok");
    row("header padded with spaces", st("{}      "), "ok");
    row("whitespace before the header", st("  \n" + one, floats({1, 2})), "ok");
    row("rank 0 tensor", st(R"({"s":{"dtype":"F64","shape":[],"data_offsets":[0,8]}})", std::string(8, '\0')),
        "ok");
    row("zero-size tensor", st(R"({"z":{"dtype":"F32","shape":[2,0],"data_offsets":[0,0]}})"), "ok");
    row("header too large", le64(100'000'001) + "{" + std::string(20, ' '),
        "t.st: at byte 0: header too large: header length 100000001 exceeds the limit of 100000000 bytes");
    row("header length past the end", le64(1000) + one,
        "invalid header length: header of 1000 bytes runs past the end of the");
    row("header length overflows", le64(~0ull) + one, "header too large");
    row("invalid JSON", st(R"({"x":{"dtype":"F32",,}})"),
        "t.st: at byte 28: invalid JSON in header: parse error at line 1, column 21: syntax error");
    row("trailing garbage after the JSON", st(one + "x", floats({1, 2})), "invalid JSON in header");
    // nlohmann reports these with an exception of its own type (out_of_range), not a parse error; the message
    // quotes the token, cut when it is long; the place is the last byte of the number (8 + 33, 8 + 10026).
    row("number out of range",
        st(R"({"x":{"dtype":"F32","shape":[1e400],"data_offsets":[0,4]}})", floats({1})),
        "t.st: at byte 41: invalid JSON in header: number overflow parsing '1e400'");
    row("number out of range, ten thousand digits",
        st(R"({"__metadata__":{"a":)" + std::string(10'000, '5') + "e99999}}"),
        "t.st: at byte 10034: invalid JSON in header: number overflow parsing '" + std::string(175, '5') +
            "...");
    row("invalid UTF-8", st("{\"x\xff\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]}}"),
        "invalid UTF-8 in header");
    row("duplicate key",
        st(R"({"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
           R"("x":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
           floats({1, 2})),
        "t.st: at byte 8: x: invalid JSON in header: key 'x' appears twice");
    row("duplicate key in a tensor entry",
        st(R"({"x":{"dtype":"F32","dtype":"F64","shape":[1],"data_offsets":[0,4]}})", floats({1})),
        "key 'dtype' appears twice in a nested object");
    row("metadata not strings", st(R"({"__metadata__":{"epoch":3}})"),
        "__metadata__ value 'epoch' is not a string");
    row("metadata not an object", st(R"({"__metadata__":"x"})"), "__metadata__ must be an object");
    row("entry not an object", st(R"({"x":3})"),
        "t.st: at byte 8: x: invalid JSON in header: tensor 'x': entry is not an object");
    row("dtype missing", st(R"({"x":{"shape":[1],"data_offsets":[0,4]}})", floats({1})),
        "tensor 'x': missing or non-string \"dtype\"");
    row("negative dim", st(R"({"x":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", floats({1})),
        "shape [-1] must hold non-negative integers");
    row("fractional dim", st(R"({"x":{"dtype":"F32","shape":[1.5],"data_offsets":[0,4]}})", floats({1})),
        "must hold non-negative integers");
    row("negative offset", st(R"({"x":{"dtype":"F32","shape":[1],"data_offsets":[-4,0]}})", floats({1})),
        "data_offsets [-4,0] must hold non-negative integers");
    row("three offsets", st(R"({"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4,8]}})", floats({1})),
        "\"data_offsets\" must be an array of two integers");
    {
        std::string dims = "[";
        for (int i = 0; i < 65; ++i)
            dims += (i ? ",1" : "1");
        row("too many dims",
            st(R"({"x":{"dtype":"F32","shape":)" + dims + R"(],"data_offsets":[0,4]}})", floats({1})),
            "tensor 'x' has 65 dimensions (limit 64)");
    }
    row("nested too deep", st(R"({"__metadata__":)" + std::string(100, '[') + std::string(100, ']') + "}"),
        "invalid JSON in header: nested deeper than 64");
    row("unknown dtype",
        st(R"({"x":{"dtype":"F128","shape":[1],"data_offsets":[0,16]}})", std::string(16, '\0')),
        "x: unknown dtype 'F128' for tensor `x`");
    row("size mismatch for dtype and shape",
        st(R"({"x":{"dtype":"F64","shape":[2],"data_offsets":[0,8]}})", floats({1, 2})),
        "x: invalid shape, data type, or offset for tensor `x`: shape [2] of F64 needs 16 bytes but "
        "data_offsets [0, 8] give 8");
    row("byte size overflows",
        st(R"({"x":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,4]}})", floats({1})),
        "x: tensor `x`: shape [4294967296, 4294967296] of F32 overflows 64-bit byte counts");
    row("sub-byte size not whole bytes", st(R"({"x":{"dtype":"F4","shape":[3],"data_offsets":[0,2]}})", "ab"),
        "x: tensor `x`: shape [3] of F4 does not fill a whole number of bytes (12 bits)");
    row("hole between tensors",
        st(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})",
           floats({1, 2, 3})),
        "b: invalid offset for tensor `b`: data begins at byte 8 of the data buffer, leaving a hole of 4 "
        "bytes "
        "after byte 4");
    row("hole at the start", st(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", floats({1, 2})),
        "a: invalid offset for tensor `a`: data begins at byte 4");
    row("overlapping tensors",
        st(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
           floats({1, 2})),
        "b: invalid offset for tensor `b`: data [4, 8) overlaps the previous tensor, which ends at byte 8");
    row("offsets reversed", st(R"({"a":{"dtype":"F32","shape":[0],"data_offsets":[4,0]}})", floats({1})),
        "a: invalid offset for tensor `a`: data_offsets [4, 0] end before they begin");
    row("data past the end", st(one, floats({1})),
        "x: tensor `x`: data [0, 8) of the data buffer runs past the end of the file (the buffer holds 4 "
        "bytes)");
    row("data past the end, huge offset",
        st(R"({"x":{"dtype":"F32","shape":[1],"data_offsets":[0,18446744073709551615]}})", floats({1})),
        "runs past the end of the file");
    row("file not fully covered", st(one, floats({1, 2, 3})), "ok");
    row("strides overflow next to a zero dim",
        st(R"({"x":{"dtype":"F32","shape":[0,4611686018427387904,4611686018427387904,2],"data_offsets":[0,0]}})"),
        "x: tensor `x`: shape [0, 4611686018427387904, 4611686018427387904, 2] is too large for 64-bit "
        "strides");
    row("too small", std::string("\x10\0\0", 3), "not a recognised checkpoint format");
}

void TestSafetensors::readerRefusesDirectly_data() {
    QTest::addColumn<QByteArray>("bytes");
    QTest::addColumn<QString>("expected");
    QTest::newRow("header too small")
        << QByteArray("\x02\0\0", 3)
        << QString("t.st: at byte 0: header too small: a safetensors file starts "
                   "with an 8-byte header length, the file has 3 bytes");
    QTest::newRow("not an object") << QByteArray::fromStdString(st("[1, 2]"))
                                   << QString("t.st: at byte 8: invalid JSON in header: the header is not a "
                                              "JSON object");
}

void TestSafetensors::readerRefusesDirectly() {
    QFETCH(QByteArray, bytes);
    QFETCH(QString, expected);
    try {
        ckpt::readSafetensors(ckpt::MappedFile::fromBuffer("t.st", bytes.toStdString()));
        QFAIL("no error");
    } catch (const ckpt::Error& e) {
        QCOMPARE(QString::fromStdString(e.what()), expected);
    }
}

void TestSafetensors::cases() {
    QFETCH(QByteArray, bytes);
    QFETCH(QString, expected);
    const std::string got = openOutcome("t.st", bytes.toStdString());
    if (expected == "ok")
        QCOMPARE(QString::fromStdString(got), expected);
    else
        QVERIFY2(got.find(expected.toStdString()) != std::string::npos, ("got: " + got).c_str());
}

void TestSafetensors::readsValues() {
    const auto ck = ckpt::openCheckpointBuffer("t.st", kGood);
    QCOMPARE(QString::fromStdString(ck->format), QString("safetensors"));
    QCOMPARE(ck->tensors.size(), std::size_t(2));
    // file order (by data offset), not header order
    QCOMPARE(QString::fromStdString(ck->tensors[0].name), QString("a"));
    QCOMPARE(QString::fromStdString(ck->tensors[1].name), QString("b"));
    QCOMPARE(ck->values.size(), std::size_t(1));
    QCOMPARE(QString::fromStdString(ck->values[0].name), QString("__metadata__.format"));
    QCOMPARE(QString::fromStdString(ck->values[0].value->text), QString("pt"));
    ckpt::TensorReader a(ck, ck->tensors[0]);
    QCOMPARE(a.element(2), 3.0);
    ckpt::TensorReader b(ck, ck->tensors[1]);
    QCOMPARE(b.element(0), 4.0);
    QCOMPARE(b.element(1), 5.0);
    QCOMPARE(ck->storages[static_cast<std::size_t>(ck->tensors[1].storage)].fileOffset,
             std::uint64_t(8 + kGood.size() - 8 - 20 + 12));

    // a healthy tensor stays readable next to a broken one
    const auto mixed =
        ckpt::openCheckpointBuffer("m.st", st(R"({"ok":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                                              R"("bad":{"dtype":"F64","shape":[1],"data_offsets":[4,8]}})",
                                              floats({7, 8})));
    QCOMPARE(mixed->tensors.size(), std::size_t(2));
    QVERIFY(mixed->tensors[0].error.empty());
    QVERIFY(!mixed->tensors[1].error.empty());
    QCOMPARE(ckpt::TensorReader(mixed, mixed->tensors[0]).element(0), 7.0);

    // strides are row-major
    const auto m = ckpt::openCheckpointBuffer(
        "s.st", st(R"({"m":{"dtype":"U8","shape":[2,3,4],"data_offsets":[0,24]}})", std::string(24, '\1')));
    QCOMPARE(m->tensors[0].strides, (std::vector<std::int64_t>{12, 4, 1}));
}

void TestSafetensors::everyDType() {
    const std::pair<const char*, ckpt::DType> table[] = {
        {"BOOL", ckpt::DType::Bool},
        {"U8", ckpt::DType::UInt8},
        {"I8", ckpt::DType::Int8},
        {"F8_E5M2", ckpt::DType::Float8_e5m2},
        {"F8_E4M3", ckpt::DType::Float8_e4m3fn},
        {"F8_E8M0", ckpt::DType::Float8_e8m0fnu},
        {"F8_E4M3FNUZ", ckpt::DType::Float8_e4m3fnuz},
        {"F8_E5M2FNUZ", ckpt::DType::Float8_e5m2fnuz},
        {"I16", ckpt::DType::Int16},
        {"U16", ckpt::DType::UInt16},
        {"F16", ckpt::DType::Float16},
        {"BF16", ckpt::DType::BFloat16},
        {"I32", ckpt::DType::Int32},
        {"U32", ckpt::DType::UInt32},
        {"F32", ckpt::DType::Float32},
        {"C64", ckpt::DType::Complex64},
        {"F64", ckpt::DType::Float64},
        {"I64", ckpt::DType::Int64},
        {"U64", ckpt::DType::UInt64},
    };
    for (const auto& [name, dtype] : table) {
        const std::size_t n = ckpt::dtypeSize(dtype) * 3;
        const auto ck = ckpt::openCheckpointBuffer("d.st", st(std::string(R"({"t":{"dtype":")") + name +
                                                                  R"(","shape":[3],"data_offsets":[0,)" +
                                                                  std::to_string(n) + "]}}",
                                                              std::string(n, '\0')));
        QVERIFY2(ck->tensors.at(0).error.empty(), name);
        QVERIFY2(ck->tensors[0].dtype == dtype, name);
    }
    // F4 packs two elements a byte: listed with its size checked, values not shown
    const auto f4 = ckpt::openCheckpointBuffer(
        "f4.st", st(R"({"t":{"dtype":"F4","shape":[1,2],"data_offsets":[0,1]}})", "x"));
    QCOMPARE(f4->tensors.size(), std::size_t(1));
    QVERIFY(f4->tensors[0].error.find("sub-byte") != std::string::npos);
    QVERIFY(!f4->hasErrors());
}

void TestSafetensors::goldenVectors() {
    // The crate's test_empty: 8-byte length, "{}" and 6 spaces.
    const std::string empty = st("{}      ");
    QCOMPARE(empty.size(), std::size_t(16));
    QCOMPARE(openOutcome("e.st", empty), std::string("ok"));
    // test_serialization: F32 [1,2,3] with N = 64 (header padded with spaces), 96 bytes in all.
    std::string h = R"({"test":{"dtype":"F32","shape":[1,2],"data_offsets":[0,8]}})";
    h.resize(64 + 16, ' ');
    h.resize(((h.size() + 7) / 8) * 8, ' ');
    const auto ck = ckpt::openCheckpointBuffer("g.st", st(h, floats({1, 2})));
    QCOMPARE(ck->tensors.at(0).shape, (std::vector<std::int64_t>{1, 2}));
}

void TestSafetensors::everyTruncationFails() {
    for (std::size_t cut = 0; cut < kGood.size(); ++cut) {
        const std::string got = openOutcome("t.st", kGood.substr(0, cut));
        QVERIFY2(got != "ok", ("truncation at " + std::to_string(cut) + " was not reported").c_str());
    }
}

void TestSafetensors::randomCorruptionNeverCrashes() {
    std::mt19937 rng(7);
    for (int i = 0; i < 3000; ++i) {
        std::string b = kGood;
        const int flips = 1 + static_cast<int>(rng() % 4);
        for (int k = 0; k < flips; ++k)
            b[rng() % b.size()] = static_cast<char>(rng() & 0xFF);
        try {
            const auto ck = ckpt::openCheckpointBuffer("r.st", b);
            for (const auto& t : ck->tensors)
                if (t.error.empty() && t.storage >= 0) {
                    ckpt::TensorReader r(ck, t);
                    r.forEachChunk([](std::span<const double>, std::uint64_t) { return true; });
                }
        } catch (const ckpt::Error&) {
        }
    }
}

QTEST_GUILESS_MAIN(TestSafetensors)
#include "tst_safetensors.moc"
