// Keras weights in HDF5 (other-formats.md §3): malformed HDF5 files must fail with a clean message (libhdf5
// runs in a child process, so even a crash inside it is only an error), a small h5py file reads back, and
// the real Keras 3 `.keras` fixture in ../shared/fixtures/real/keras when it is there.

#include "testutil.h"

#include "analysis/elements.h"

#include <QTemporaryDir>
#include <QTest>

#include <filesystem>
#include <fstream>
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

// h5py 3.7: layers/d/vars/0 contiguous float32 [1.5, -2, 3]; layers/d/vars/1 float32 (3, 4) holding
// arange(12) * 0.25 - 1 in chunks of (1, 4), gzip; zlib-compressed.
const char kLazyZ[] =
    "\x78\xda\xed\x97\xb1\x4f\x02\x31\x14\xc6\xdb\xde\x9d\x1c\x22\x01\x12\x0d\xca\x22\x83\x83\x23\x6e\x24"
    "\x6a\xc4\x04\xcc\x4d\x4a\xd4\x81\xc9\xdc\x45\x51\x07\x06\x23\xc4\xe8\x60\x94\x0d\x37\x46\x07\x07\x47"
    "\x47\xfc\x03\x4c\x18\x30\x71\x73\x75\x70\x70\x74\x74\x74\xd3\xeb\xb5\x3d\x6c\x0d\x0a\x51\xa3\x86\xf7"
    "\x1b\x78\x79\xed\xa3\x85\xde\xc7\xc7\xeb\x89\x95\x5d\x08\x0f\x26\x06\x11\xc5\x34\x91\x8e\xa2\xe8\x2d"
    "\x2f\x9c\xbb\x09\x39\x17\xf3\x36\x8f\x98\xc7\x1a\x8f\x17\x44\x8c\x63\x6f\x6e\x94\x8f\xc7\xf8\xfa\x6a"
    "\xdd\xea\x72\x2e\x47\xab\x5f\x14\xc4\x3e\x0f\x06\x8b\x26\x02\xfa\x11\x2b\x37\x9f\xa7\xb1\xc0\x73\xa1"
    "\xd2\x1b\x22\xd7\x95\x9c\x83\xe2\x6e\xb9\xad\x47\xeb\x8b\xfb\x76\xd2\xaf\xa5\xb1\x7c\xdb\xe8\x4e\xbf"
    "\x8f\x41\xd0\x2f\xe8\xf7\xbd\x7e\x6b\x86\x5c\xb7\xa1\xf8\xe9\x57\xf5\xbb\xb2\xb8\x94\xa5\x0a\x16\xba"
    "\x4b\x6a\xca\xfa\x8a\x8e\x81\xde\x7c\x20\x1f\x60\xf9\x4e\xb0\x3b\x1f\x78\x0a\x83\x0f\x80\x0f\xbc\xf7"
    "\x81\x7a\x50\xae\xdb\x73\xe8\xbf\xd8\xcf\xf9\xc0\x64\x40\xf6\x01\x55\xc7\x40\x6f\x3e\x50\x08\xb1\x7c"
    "\x3f\xdc\x9d\x0f\x58\x51\xf9\xf9\x03\xfd\xed\x03\x42\x4f\xa7\x61\xb9\x2e\xc5\xe3\x94\xd2\x17\x64\xbe"
    "\xc9\x07\x52\x21\x79\x5d\x55\xc7\x40\x27\x1f\x30\xd8\x99\x61\x91\xb3\x27\x88\x31\x1b\xe0\x6d\xd5\x9b"
    "\x38\xea\x95\xc6\x92\xe3\xee\x1d\xdb\xeb\xc4\x50\xdc\x44\xf1\x23\x3e\x6f\xb8\x4f\x84\xce\x13\x42\x30"
    "\xeb\x0f\xd8\x7a\x1a\xae\xc7\x58\xc5\x90\xf2\x09\x6a\x7f\xea\x3c\x98\xae\x88\xaf\xab\x74\xe4\xe3\x7a"
    "\xff\x7f\x6f\x0c\xb4\x24\xd3\x9c\xa3\x2f\xee\x2f\x3c\xb3\xbf\xb6\x6e\x6f\xdf\xdd\x36\x1f\x50\x6b\x28"
    "\x73\xdf\x88\xa0\xf1\xb2\x3e\x43\x07\x51\x75\x60\x3a\xe9\xb8\x13\x76\x04\x05\xd3\xf8\xd0\x2b\x6c\x6c"
    "\xd9\x05\xd4\x0a\x1c\x3f\x57\x67\x51\xa2\xa2\x5d\xc1\x49\x02\x00\x00\x00\xc0\xff\xe9\x2b\x07\x94\xbe"
    "\x72\x92\x45\x22\xf7\x95\xba\xd2\x5f\xea\xbd\xf6\x99\x1a\xdb\x21\xe4\xce\x63\xaf\x6f\x15\xfb\x99\xde"
    "\x0d\x77\xa3\xb8\x59\x72\x2a\x45\x7f\x5d\xbf\x1f\x25\xda\x79\xa2\x7d\x65\xd0\xdb\x5b\xe7\x7f\xe4\x3c"
    "\xe8\x3d\x1a\xbb\xdf\x4a\xbd\x47\x8f\x7c\xf2\xbe\x33\xde\x35\x0f\x2b\xf7\x26\x95\x4b\x5e\x27\xd6\x23"
    "\x1d\xea\xae\x63\x72\xae\x9e\xbb\x0e\xd2\x05\x00\x00\x00\x00\x00\xf8\x55\x5e\x01\xfa\xe6\xae\x96";
constexpr std::size_t kLazySize = 9432;
constexpr std::size_t kLazyChunk1 = 4529, kLazyChunk1Size = 20; // the second chunk, as h5py's get_chunk_info

std::string inflated(const char* z, std::size_t zsize, std::size_t size) {
    std::string out(size, '\0');
    uLongf n = size;
    if (uncompress(reinterpret_cast<Bytef*>(out.data()), &n, reinterpret_cast<const Bytef*>(z), zsize) !=
            Z_OK ||
        n != size)
        throw std::runtime_error("cannot inflate the embedded HDF5 file");
    return out;
}

std::string tiny() {
    return inflated(kTinyZ, sizeof kTinyZ - 1, kTinySize);
}

void writeFile(const std::string& path, const std::string& bytes) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    if (!out.flush())
        throw std::runtime_error("cannot write " + path);
}

// The error reading the first element of `t` throws; empty when it reads.
std::string readError(const ckpt::CheckpointPtr& ck, const ckpt::TensorInfo& t) {
    try {
        ckpt::TensorReader r(ck, t);
        r.element(0);
        return {};
    } catch (const ckpt::Error& e) {
        return std::string(ckpt::errorCodeName(e.code())) + " | " + e.file() + " | " + e.object() + " | " +
               e.message();
    }
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
    void chunkedReadOnDemand();
    void chunkedReadFails_data();
    void chunkedReadFails();
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

// A gzip-compressed chunked dataset is not read at opening; its bytes come from libhdf5 at the first read.
void TestKeras::chunkedReadOnDemand() {
    QTemporaryDir dir;
    const std::string path = dir.path().toStdString() + "/lazy.weights.h5";
    writeFile(path, inflated(kLazyZ, sizeof kLazyZ - 1, kLazySize));
    const auto ck = ckpt::openCheckpoint(path);
    QVERIFY(!ck->hasErrors());
    QCOMPARE(QString::fromStdString(ck->formatDetail),
             QString("Keras 3 weights, 2 datasets (1 chunked or compressed, read on demand)"));
    QCOMPARE(ck->tensors.size(), std::size_t(2));
    const auto& t = ck->tensors[1];
    QCOMPARE(QString::fromStdString(t.name), QString("layers.d.vars.1"));
    QCOMPARE(t.shape, (std::vector<std::int64_t>{3, 4}));
    const auto& s = ck->storages.at(static_cast<std::size_t>(t.storage));
    const auto& src = ck->sources.at(static_cast<std::size_t>(s.source));
    QCOMPARE(QString::fromStdString(src.path), QString::fromStdString(path + ":/layers/d/vars/1"));
    QCOMPARE(src.file->size(), std::uint64_t(48));
    QVERIFY(!src.file->isLoaded());
    ckpt::TensorReader r(ck, t);
    QVERIFY(src.file->isLoaded());
    for (std::uint64_t k = 0; k < 12; ++k)
        QCOMPARE(r.element(k), static_cast<double>(k) * 0.25 - 1);
    ckpt::TensorReader r0(ck, ck->tensors[0]);
    QCOMPARE(r0.element(1), -2.0);
}

void TestKeras::chunkedReadFails_data() {
    QTest::addColumn<QString>("how");
    QTest::addColumn<QString>("expected");
    QTest::newRow("chunk corrupted before opening")
        << "before"
        << "malformed | FILE | layers.d.vars.1 | HDF5 dataset '/layers/d/vars/1': cannot be read (chunked, 1 "
           "filter): inflate() failed";
    QTest::newRow("chunk corrupted after opening") << "after"
                                                   << "changed | FILE | layers.d.vars.1 | the file changed "
                                                      "on disk after it was opened; reload it to read "
                                                      "HDF5 dataset '/layers/d/vars/1'";
    QTest::newRow("file replaced after opening") << "replaced"
                                                 << "changed | FILE | layers.d.vars.1 | the file changed on "
                                                    "disk after it was opened; reload it to read "
                                                    "HDF5 dataset '/layers/d/vars/1'";
}

// A chunked dataset that cannot be read is an error of that tensor only, every time it is asked for.
void TestKeras::chunkedReadFails() {
    QFETCH(QString, how);
    QFETCH(QString, expected);
    QTemporaryDir dir;
    const std::string path = dir.path().toStdString() + "/lazy.weights.h5";
    const std::string good = inflated(kLazyZ, sizeof kLazyZ - 1, kLazySize);
    std::string bad = good;
    for (std::size_t i = kLazyChunk1 + 2; i < kLazyChunk1 + kLazyChunk1Size - 2; ++i)
        bad[i] = static_cast<char>(bad[i] ^ 0x5a);
    writeFile(path, how == "before" ? bad : good);
    const auto ck = ckpt::openCheckpoint(path);
    QVERIFY(!ck->hasErrors());
    if (how == "after") {
        writeFile(path, bad);
    } else if (how == "replaced") {
        writeFile(path + ".new", good);
        std::filesystem::rename(path + ".new", path);
    }
    const std::string want = expected.toStdString().replace(expected.indexOf("FILE"), 4, path);
    QCOMPARE(QString::fromStdString(readError(ck, ck->tensors[1])), QString::fromStdString(want));
    QCOMPARE(QString::fromStdString(readError(ck, ck->tensors[1])), QString::fromStdString(want));
    if (how == "after") { // written over in place: the mapped dataset beside it is refused too
        QCOMPARE(QString::fromStdString(readError(ck, ck->tensors[0])),
                 QString::fromStdString("changed | " + path +
                                        " | layers.d.vars.0 | the file was modified on disk after it was "
                                        "opened; reload it"));
        return;
    }
    ckpt::TensorReader r0(ck, ck->tensors[0]);
    QCOMPARE(r0.element(0), 1.5);
    QCOMPARE(r0.element(1), -2.0);
    QCOMPARE(r0.element(2), 3.0);
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
