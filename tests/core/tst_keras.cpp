// Keras weights in HDF5 (other-formats.md §3): malformed HDF5 files must fail with a clean message (libhdf5
// runs in a child process, so even a crash inside it is only an error), a small h5py file reads back, and
// the real Keras 3 `.keras` fixture in ../shared/fixtures/real/keras when it is there.

#include "testutil.h"

#include "analysis/elements.h"

#include <QTest>

#include <filesystem>
#include <zlib.h>

using namespace testutil;

namespace {

// h5py 3.7: File('tiny.h5','w').create_dataset('layers/d/vars/0', data=float32 [1.5, -2, 3]);
// zlib-compressed.
const char kTinyZ[] = "\x78\xda\xeb\xf4\x70\x71\xe3\xe5\x92\xe2\x62\x00\x01\x0e\x0e\x06\x16\x06\x01\x06\x64"
                      "\xf0\x1f\x0a\xe6\x08\xa2\xf2"
                      "\x61\xf2\x09\x50\x9a\x11\x4a\x77\x40\xe9\x15\x4c\x30\x71\x46\xb0\x9c\x04\x54\x5c\x10"
                      "\x6a\x3e\xba\xba\x90\x20\x57"
                      "\x57\x90\xea\xff\x68\x00\x66\xcf\x03\x56\x08\xcd\xc1\x30\x0a\x46\x22\xf0\x70\x75\x0c"
                      "\x00\xd1\x11\x50\x3e\x2c\x95"
                      "\x9e\x60\x42\x55\x97\x93\x58\x99\x5a\x54\x8c\x48\x8f\x1e\x14\xda\x8b\x2b\xfd\x7a\x30"
                      "\x43\xf8\x19\xac\xc4\xa5\xdf"
                      "\x17\x9c\xa3\xe9\x77\x34\xfd\x62\xa6\xdf\x0e\x56\x54\x75\x29\x68\xe5\x29\xa5\xe9\x37"
                      "\xd8\xcf\xdf\x05\x94\x82\x61"
                      "\xe9\x4e\x81\x19\xcd\x7c\xb4\x74\x3c\x0a\x48\x2b\x07\x02\xd8\x21\xfc\x02\x4e\xe2\xca"
                      "\x81\x0f\xbc\xa3\xe5\xc0\x68"
                      "\x39\x80\x59\x0e\x4c\xe0\x44\x55\x57\x96\x08\xaa\xc5\x68\x57\x0e\x68\xb0\xa3\x96\x03"
                      "\xe8\xe9\x78\x14\x90\x56\x0e"
                      "\x44\x70\x43\xf8\x15\xbc\xc4\x95\x03\x1e\x02\xa3\xe5\xc0\x68\x39\x80\x59\x0e\xcc\xe0"
                      "\x45\x55\x67\x40\xe3\xf6\x80"
                      "\x01\x37\xaa\xf9\xe8\xe9\x78\x14\xe0\x2a\x07\x58\x21\x61\xc6\x08\xe3\x43\x4a\x04\x46"
                      "\x46\x88\x00\xb4\x59\x85\x44"
                      "\x4b\x80\x95\x0a\x2a\xc8\x03\xfb\xd8\xe0\x96\x18\x83\x38\x07\x83\x78\x3d\x54\x9e\x15"
                      "\x18\x23\x20\x79\x26\x26\x26"
                      "\x46\x48\xb9\x00\x31\x8f\x99\x71\x02\xb4\xe7\xcd\x83\xe6\x82\x8e\x41\x15\x1e\xe8\xe9"
                      "\xca\x82\x7f\x34\x8d\x90\x07"
                      "\x0e\xd8\x83\x08\x06\x06\x07\x07\x00\x46\xab\x7c\x58";
constexpr std::size_t kTinySize = 4508;
constexpr std::size_t kTinyDataOffset = 4496;

std::string tiny() {
    std::string out(kTinySize, '\0');
    uLongf n = kTinySize;
    if (uncompress(reinterpret_cast<Bytef*>(out.data()), &n, reinterpret_cast<const Bytef*>(kTinyZ),
                   sizeof kTinyZ - 1) != Z_OK ||
        n != kTinySize)
        throw std::runtime_error("cannot inflate the embedded HDF5 file");
    return out;
}

const std::string kSig("\x89HDF\r\n\x1a\n", 8);

std::string realKeras() {
    return std::string(CKPT_TEST_DATA) +
           "/../../../../shared/fixtures/real/keras/nested_container_keras3.keras";
}

} // namespace

class TestKeras : public QObject {
    Q_OBJECT
private Q_SLOTS:
    void malformed_data();
    void malformed();
    void tinyFile();
    void realFixture();
    void realFixtureCorrupted_data();
    void realFixtureCorrupted();
};

void TestKeras::malformed_data() {
    QTest::addColumn<QByteArray>("bytes");
    QTest::addColumn<QString>("expected");
    auto row = [](const char* name, const std::string& b, const std::string& expected) {
        QTest::newRow(name) << QByteArray(b.data(), static_cast<qsizetype>(b.size()))
                            << QString::fromStdString(expected);
    };
    const std::string good = tiny();
    row("unmodified", good, "ok");
    row("signature only", kSig, "t.h5: at byte 0: libhdf5 cannot open the file: ");
    row("zeros after signature", kSig + std::string(600, '\0'), "libhdf5 cannot open the file");
    row("superblock version 9", good.substr(0, 8) + '\x09' + good.substr(9), "bad superblock version number");
    row("truncated to 100 bytes", good.substr(0, 100),
        "libhdf5 cannot open the file: truncated file: eof = 100");
    row("last byte missing", good.substr(0, good.size() - 1), "truncated file");
    {
        std::string b = good;
        putU64(b, 40, ~0ull); // end-of-file address
        row("end of file address huge", b, "truncated file");
    }
    {
        std::string b = good;
        for (std::size_t i = 100; i < 4000; ++i) // everything past the superblock
            b[i] = static_cast<char>(i * 7);
        row("metadata overwritten", b, "t.h5");
    }
    row("user block of 512 bytes, no superblock after it", std::string(512, 'x') + kSig, "t.h5");
}

void TestKeras::malformed() {
    QFETCH(QByteArray, bytes);
    QFETCH(QString, expected);
    const std::string got = openOutcome("t.h5", bytes.toStdString());
    if (expected == "ok")
        QCOMPARE(QString::fromStdString(got), expected);
    else
        QVERIFY2(got != "ok" && got.find(expected.toStdString()) != std::string::npos,
                 ("got: " + got).c_str());
}

void TestKeras::tinyFile() {
    const auto ck = ckpt::openCheckpointBuffer("tiny.h5", tiny());
    QCOMPARE(QString::fromStdString(ck->format), QString("keras-h5"));
    QCOMPARE(ck->tensors.size(), std::size_t(1));
    const auto& t = ck->tensors[0];
    QCOMPARE(QString::fromStdString(t.name), QString("layers.d.vars.0"));
    QCOMPARE(t.dtype, ckpt::DType::Float32);
    QCOMPARE(t.shape, (std::vector<std::int64_t>{3}));
    QVERIFY(t.error.empty());
    const auto& s = ck->storages.at(static_cast<std::size_t>(t.storage));
    QCOMPARE(s.fileOffset, std::uint64_t(kTinyDataOffset));
    QCOMPARE(s.source, 0);
    ckpt::TensorReader r(ck, t);
    QCOMPARE(r.element(0), 1.5);
    QCOMPARE(r.element(1), -2.0);
    QCOMPARE(r.element(2), 3.0);
}

void TestKeras::realFixture() {
    if (!std::filesystem::exists(realKeras()))
        QSKIP("real Keras fixtures (../shared/fixtures/real/keras) are not here");
    const auto ck = ckpt::openCheckpoint(realKeras());
    QCOMPARE(QString::fromStdString(ck->format), QString("keras"));
    QVERIFY(!ck->hasErrors());
    QVERIFY(ck->findings.empty());
    std::vector<std::string> names;
    for (const auto& t : ck->tensors)
        names.push_back(t.name);
    QCOMPARE(names, (std::vector<std::string>{"layers.dense.vars.0", "layers.dense_1.vars.0",
                                              "layers.dense_2.vars.0", "layers.dense_3.vars.0",
                                              "layers.dense_3.vars.1"}));
    // other-formats.md §3.3: model.weights.h5 at byte 556, datasets at 9160, 11656, 14152, 16648, 17280 of it
    const std::uint64_t offsets[] = {9160, 11656, 14152, 16648, 17280};
    for (std::size_t i = 0; i < 5; ++i) {
        const auto& t = ck->tensors[i];
        QCOMPARE(t.dtype, ckpt::DType::Float32);
        const auto& s = ck->storages.at(static_cast<std::size_t>(t.storage));
        QCOMPARE(s.source, 0);
        QCOMPARE(s.fileOffset, 556 + offsets[i]);
        QCOMPARE(s.nbytes, t.nbytes());
        ckpt::TensorReader r(ck, t);
        for (std::uint64_t k = 0; k < t.numel(); ++k)
            QVERIFY(std::isfinite(r.element(k)));
    }
    QCOMPARE(ck->tensors[3].shape, (std::vector<std::int64_t>{4, 2}));
    QCOMPARE(ck->tensors[4].shape, (std::vector<std::int64_t>{2}));
    std::map<std::string, std::string> values;
    for (const auto& v : ck->values)
        if (v.value->kind == ckpt::ValueKind::String)
            values[v.name] = v.value->text;
    QCOMPARE(QString::fromStdString(values["metadata.keras_version"]), QString("3.15.0"));
    QCOMPARE(QString::fromStdString(values["config.class_name"]), QString("NestedDenseModel"));
    QCOMPARE(QString::fromStdString(values["layers.dense.vars.name"]), QString("d_0"));
    QVERIFY(values["config.json"].starts_with("{"));
}

void TestKeras::realFixtureCorrupted_data() {
    QTest::addColumn<int>("cut");
    QTest::addColumn<int>("at");
    QTest::addColumn<QString>("expected");
    // the member model.weights.h5 starts at byte 556 of the archive
    QTest::newRow("member superblock damaged")
        << 0 << 556 + 9 << "member 'model.weights.h5': libhdf5 cannot open";
    QTest::newRow("member signature damaged") << 0 << 556 << "";
    QTest::newRow("archive truncated") << 9000 << -1 << "";
}

void TestKeras::realFixtureCorrupted() {
    if (!std::filesystem::exists(realKeras()))
        QSKIP("real Keras fixtures (../shared/fixtures/real/keras) are not here");
    QFETCH(int, cut);
    QFETCH(int, at);
    QFETCH(QString, expected);
    std::string b = readFile(realKeras());
    if (at >= 0)
        b[static_cast<std::size_t>(at)] = '\x7f';
    if (cut > 0)
        b.resize(static_cast<std::size_t>(cut));
    const std::string got = openOutcome("x.keras", b);
    QVERIFY2(got != "ok", "a damaged archive opened without an error");
    QVERIFY2(got.find(expected.toStdString()) != std::string::npos, ("got: " + got).c_str());
}

QTEST_GUILESS_MAIN(TestKeras)
#include "tst_keras.moc"
