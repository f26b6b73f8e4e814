// Exhaustive corruption: every fixture of every format (the fuzz seeds, written by the formats' reference
// writers, the unit-test data, the real TensorFlow and Keras files of ../shared) truncated at every byte
// offset (a dense sample for the larger ones and those read through the HDF5 child process) and damaged by
// thousands of random bit flips with a fixed seed. Each variant is opened, both reports are built and the
// statistics of every tensor are computed: the only outcomes allowed are a result or a clean ckpt::Error
// (a crash, a sanitizer report, another exception or a hang fails the test), and memory stays bounded.
// Plus the SIGBUS guard on the LibTorch plugin's worker threads.

#include "testutil.h"

#include "analysis/elements.h"
#include "analysis/stats.h"
#include "analysis/torchstats/loader.h"
#include "formats/keras.h"
#include "formats/shardindex.h"
#include "formats/tfbundle.h"
#include "formats/torchpickle.h"
#include "io/mappedfile.h"
#include "report/report.h"

#include <QDir>
#include <QTemporaryDir>
#include <QTest>

#include <algorithm>

#include <filesystem>
#include <functional>
#include <map>
#include <random>

#include <fcntl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

using namespace testutil;
namespace fs = std::filesystem;

namespace {

#if defined(__SANITIZE_ADDRESS__)
constexpr bool kAsan = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
constexpr bool kAsan = true;
#else
constexpr bool kAsan = false;
#endif
#else
constexpr bool kAsan = false;
#endif

const std::string kSeeds = std::string(CKPT_TEST_DATA) + "/../../fuzz/seeds";
const std::string kReal = std::string(CKPT_TEST_DATA) + "/../../../../shared/fixtures/real";

struct Outcome {
    std::size_t opened = 0, refused = 0;
    std::size_t whole = 0; // opened with no error finding and every tensor's values read
    std::map<std::string, std::size_t> messages; // first words of the errors, for the log
};

// Opens one variant and reads everything a user could ask for; a clean Error at any point is an outcome.
void exercise(const std::function<ckpt::CheckpointPtr()>& open, Outcome& out) {
    ckpt::CheckpointPtr ck;
    try {
        ck = open();
    } catch (const ckpt::Error& e) {
        ++out.refused;
        ++out.messages[e.message().substr(0, 24)];
        return;
    }
    QVERIFY(ck);
    ++out.opened;
    (void)ckpt::dumpJson(ckpt::infoJson(*ck, "x"));
    (void)ckpt::dumpJson(ckpt::lsJson(*ck, "x", ""));
    bool whole = std::none_of(ck->findings.begin(), ck->findings.end(),
                              [](const ckpt::Finding& f) { return f.severity == ckpt::Severity::Error; });
    for (const auto& t : ck->tensors) {
        if (t.numel() > (1u << 22)) {
            whole = false;
            continue; // a flipped dimension: the same code reads it, it would only take longer
        }
        try {
            if (!ckpt::computeStats(ck, t, 16))
                whole = false;
        } catch (const ckpt::Error&) {
            whole = false;
        }
    }
    out.whole += whole;
}

// Truncation offsets: every one for small files, else every byte of the first and last `edge` bytes and
// `middle` offsets spread between.
std::vector<std::size_t> cuts(std::size_t size, std::size_t dense, std::size_t edge, std::size_t middle) {
    std::vector<std::size_t> c;
    if (size <= dense) {
        for (std::size_t i = 0; i < size; ++i)
            c.push_back(i);
        return c;
    }
    for (std::size_t i = 0; i < edge; ++i)
        c.push_back(i);
    for (std::size_t i = 0; i < middle; ++i)
        c.push_back(edge + (size - 2 * edge) * i / middle);
    for (std::size_t i = size - edge; i < size; ++i)
        c.push_back(i);
    return c;
}

// 1 to 4 bits flipped at random places; half the time near the start, where headers are.
std::string flipped(const std::string& bytes, std::mt19937_64& rng) {
    std::string b = bytes;
    const int flips = 1 + static_cast<int>(rng() % 4);
    for (int i = 0; i < flips; ++i) {
        const std::size_t span = (rng() & 1) ? std::min<std::size_t>(b.size(), 512) : b.size();
        b[rng() % span] ^= static_cast<char>(1u << (rng() % 8));
    }
    return b;
}

struct Budget {
    std::size_t dense, edge, middle, flips;
};

// Small files: every offset and 2000 flips (fewer under ASan); files read through the HDF5 child process (a
// fork per open): a sample.
Budget budgetFor(const std::string& kind) {
    if (kind == "h5" || kind == "keras")
        return kAsan ? Budget{0, 16, 48, 60} : Budget{0, 32, 160, 200};
    return kAsan ? Budget{1024, 256, 512, 600} : Budget{4096, 512, 2048, 2000};
}

std::vector<std::string> filesIn(const std::string& dir) {
    std::vector<std::string> out;
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(dir, ec))
        if (e.is_regular_file())
            out.push_back(e.path().string());
    std::sort(out.begin(), out.end());
    return out;
}

long maxRssMiB() {
    rusage ru{};
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss / 1024;
}

} // namespace

class TestCorruption : public QObject {
    Q_OBJECT
private Q_SLOTS:
    void singleFiles_data();
    void singleFiles();
    void tensorflowBundle();
    void shardedIndex();
    void memoryStayedBounded();
    void pluginWorkersSurviveTruncation();
    void fuzzFindings_data();
    void fuzzFindings();
    void hdf5ChildMemoryIsBounded();
    void unguardedReadOfLostPage();
    void modifiedInPlaceIsRefused();
    void hdf5ReaderAnswerIsChecked_data();
    void hdf5ReaderAnswerIsChecked();
};

void TestCorruption::singleFiles_data() {
    QTest::addColumn<QString>("kind");
    QTest::addColumn<QString>("path");
    QTest::addColumn<QString>("format");
    const std::map<std::string, std::string> formats{{"torchzip", "pytorch-zip"},
                                                     {"legacy", "pytorch-legacy"},
                                                     {"torchscript", "torchscript"},
                                                     {"safetensors", "safetensors"},
                                                     {"gguf", "gguf"},
                                                     {"npy", "numpy"},
                                                     {"npz", "npz"},
                                                     {"h5", "keras-h5"}};
    for (const auto& [kind, format] : formats)
        for (const auto& f : filesIn(kSeeds + "/" + kind))
            QTest::newRow((kind + "/" + fs::path(f).filename().string()).c_str())
                << QString::fromStdString(kind) << QString::fromStdString(f)
                << QString::fromStdString(format);
    QTest::newRow("data/small.pt") << "torchzip" << QString::fromStdString(dataPath("small.pt"))
                                   << "pytorch-zip";
    QTest::newRow("data/small_legacy.pt")
        << "legacy" << QString::fromStdString(dataPath("small_legacy.pt")) << "pytorch-legacy";
    const std::string keras = kReal + "/keras/nested_container_keras3.keras";
    if (fs::exists(keras))
        QTest::newRow("real/nested_container_keras3.keras")
            << "keras" << QString::fromStdString(keras) << "keras";
}

void TestCorruption::singleFiles() {
    QFETCH(QString, kind);
    QFETCH(QString, path);
    QFETCH(QString, format);
    const std::string bytes = readFile(path.toStdString());
    const std::string name = fs::path(path.toStdString()).filename().string();

    // The intact file opens as what it is; the empty one says so.
    const auto intact = ckpt::openCheckpointBuffer(name, bytes);
    QVERIFY(intact->format.rfind(format.toStdString(), 0) == 0);
    try {
        (void)ckpt::openCheckpointBuffer(name, {});
        QFAIL("an empty file opened");
    } catch (const ckpt::Error& e) {
        QCOMPARE(QString::fromStdString(e.message()), QStringLiteral("file is empty"));
    }

    const Budget b = budgetFor(kind.toStdString());
    // Bytes past the last one any tensor uses (GGUF's alignment padding at the end) hold nothing to lose.
    std::uint64_t used = 0;
    for (const auto& st : intact->storages)
        if (st.source == 0)
            used = std::max(used, st.fileOffset + st.nbytes);
    Outcome truncated, flips, padding;
    for (const std::size_t n : cuts(bytes.size(), b.dense, b.edge, b.middle)) {
        exercise([&] { return ckpt::openCheckpointBuffer(name, bytes.substr(0, n)); },
                 n < used || kind != "gguf" ? truncated : padding);
        if (QTest::currentTestFailed())
            QFAIL(qPrintable(QStringLiteral("truncated at %1").arg(n)));
    }
    std::mt19937_64 rng(20240607);
    for (std::size_t i = 0; i < b.flips; ++i) {
        const std::string v = flipped(bytes, rng);
        exercise([&] { return ckpt::openCheckpointBuffer(name, v); }, flips);
        if (QTest::currentTestFailed())
            QFAIL(qPrintable(QStringLiteral("bit flip variant %1").arg(i)));
    }
    // Losing the end of a file is never silent: a truncated file is refused, or opens with an error for
    // what is missing (a corrupt tensor does not hide the healthy ones).
    QCOMPARE(truncated.whole, std::size_t{0});
    QVERIFY(truncated.refused > 0);
    qInfo("%s: %zu truncations (%zu opened with errors, %zu refused), %zu bit-flip variants (%zu opened, "
          "%zu refused)",
          qPrintable(QTest::currentDataTag()), truncated.opened + truncated.refused, truncated.opened,
          truncated.refused, flips.opened + flips.refused, flips.opened, flips.refused);
}

void TestCorruption::tensorflowBundle() {
    const std::string dir = kReal + "/tf/lso_ckpt_tf2.2";
    if (!fs::exists(dir))
        QSKIP("../shared/fixtures/real is not beside the project");
    std::map<std::string, std::string> files{
        {"ckpt.index", readFile(dir + "/ckpt.index")},
        {"ckpt.data-00000-of-00002", readFile(dir + "/ckpt.data-00000-of-00002")},
        {"ckpt.data-00001-of-00002", readFile(dir + "/ckpt.data-00001-of-00002")}};
    auto openWith = [&](const std::string& damaged, const std::string& bytes) {
        return [&, damaged, bytes] {
            auto get = [&](const std::string& n) { return n == damaged ? bytes : files.at(n); };
            return ckpt::readTfBundle(ckpt::MappedFile::fromBuffer("ckpt.index", get("ckpt.index")), "ckpt",
                                      [&](const std::string& p) -> std::shared_ptr<const ckpt::MappedFile> {
                                          if (!files.count(p))
                                              return nullptr;
                                          return ckpt::MappedFile::fromBuffer(p, get(p));
                                      });
        };
    };
    Outcome intact;
    exercise(openWith("", ""), intact);
    QCOMPARE(intact.opened, std::size_t{1});
    const Budget b = budgetFor("tf");
    std::mt19937_64 rng(20240607);
    for (const auto& [name, bytes] : files) {
        Outcome truncated, flips;
        for (const std::size_t n : cuts(bytes.size(), b.dense, b.edge, b.middle)) {
            exercise(openWith(name, bytes.substr(0, n)), truncated);
            if (QTest::currentTestFailed())
                QFAIL(qPrintable(QStringLiteral("%1 truncated at %2").arg(name.c_str()).arg(n)));
        }
        for (std::size_t i = 0; i < b.flips; ++i) {
            exercise(openWith(name, flipped(bytes, rng)), flips);
            if (QTest::currentTestFailed())
                QFAIL(qPrintable(QStringLiteral("%1 bit flip variant %2").arg(name.c_str()).arg(i)));
        }
        if (name == "ckpt.index") // the table's footer is at its end
            QCOMPARE(truncated.opened, std::size_t{0});
        QCOMPARE(truncated.whole, std::size_t{0});
        qInfo("%s: %zu truncations (%zu opened), %zu bit flips (%zu opened)", name.c_str(),
              truncated.opened + truncated.refused, truncated.opened, flips.opened + flips.refused,
              flips.opened);
    }
}

void TestCorruption::shardedIndex() {
    // Index JSON beside two safetensors shards; the index is damaged (the shards are safetensors files,
    // covered above).
    QTemporaryDir tmp;
    QVERIFY(tmp.isValid());
    const std::string dir = tmp.path().toStdString();
    const std::string shard = readFile(kSeeds + "/safetensors/small.safetensors");
    for (const char* n : {"/a.safetensors", "/b.safetensors"})
        std::ofstream(dir + n, std::ios::binary) << shard;
    const std::string index =
        R"({"metadata": {"total_size": 72}, "weight_map": {"w": "a.safetensors", "h": "a.safetensors", )"
        R"("i": "b.safetensors", "e": "b.safetensors", "x": "c.safetensors"}})";
    const std::string path = dir + "/model.safetensors.index.json";
    auto openWith = [&](const std::string& bytes) {
        return [&, bytes]() -> ckpt::CheckpointPtr {
            std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
            auto ck = ckpt::tryOpenShardIndex(path);
            if (!ck)
                throw ckpt::Error(ckpt::ErrorCode::BadMagic, "not an index", path);
            return ck;
        };
    };
    Outcome intact, truncated, flips;
    exercise(openWith(index), intact);
    QCOMPARE(intact.opened, std::size_t{1});
    for (std::size_t n = 0; n < index.size(); ++n) {
        exercise(openWith(index.substr(0, n)), truncated);
        if (QTest::currentTestFailed())
            QFAIL(qPrintable(QStringLiteral("truncated at %1").arg(n)));
    }
    QCOMPARE(truncated.opened, std::size_t{0}); // a JSON object cut short is never an index
    std::mt19937_64 rng(20240607);
    for (std::size_t i = 0; i < (kAsan ? 300u : 1000u); ++i) {
        exercise(openWith(flipped(index, rng)), flips);
        if (QTest::currentTestFailed())
            QFAIL(qPrintable(QStringLiteral("bit flip variant %1").arg(i)));
    }
    qInfo("index: %zu truncations, %zu bit flips (%zu opened)", truncated.refused,
          flips.opened + flips.refused, flips.opened);
}

void TestCorruption::memoryStayedBounded() {
    // Every variant above ran in this process: a flipped length that made a reader allocate what the file
    // claims would show here (ASan's shadow memory and quarantine take their share under the asan preset).
    const long limit = kAsan ? 3072 : 1024;
    qInfo("peak resident memory: %ld MiB", maxRssMiB());
    QVERIFY2(maxRssMiB() < limit, qPrintable(QStringLiteral("peak RSS %1 MiB").arg(maxRssMiB())));
}

void TestCorruption::pluginWorkersSurviveTruncation() {
    // The plugin reads the mapping on LibTorch's worker threads; pages lost to a truncation raise SIGBUS
    // there, which the guard it is given must turn into an error instead of killing the process.
    const ckpt_stats_api* api = ckpt::torchStatsPlugin();
    if (!api)
        QSKIP(qPrintable(QString::fromStdString("no LibTorch plugin: " + ckpt::torchStatsPluginInfo())));
    QTemporaryDir tmp;
    QVERIFY(tmp.isValid());
    const std::string path = tmp.path().toStdString() + "/f32.bin";
    const std::size_t numel = 1u << 20; // 64 chunks: every worker thread gets some
    {
        std::vector<float> v(numel);
        for (std::size_t i = 0; i < numel; ++i)
            v[i] = static_cast<float>(i % 1000) * 0.5f;
        std::ofstream(path, std::ios::binary)
            .write(reinterpret_cast<const char*>(v.data()),
                   static_cast<std::streamsize>(numel * sizeof(float)));
    }
    const auto file = ckpt::MappedFile::open(path);
    ckpt_stats_input in{};
    in.data = file->data();
    in.dtype = 6; // Float32
    in.numel = numel;
    in.bins = 8;
    in.threads = 0;
    in.guard = [](void (*fn)(void*), void* arg) { return ckpt::MappedFile::runGuarded(fn, arg) ? 1 : 0; };
    std::vector<double> edges(9);
    std::vector<std::uint64_t> counts(8);
    ckpt_stats_output out{};
    out.edges = edges.data();
    out.counts = counts.data();
    const int rc = api->compute(&in, &out);
    if (rc == CKPT_STATS_UNSUPPORTED)
        QSKIP("the plugin declines on this CPU (no AVX2, FMA, F16C)");
    QCOMPARE(rc, CKPT_STATS_OK); // intact: a result
    QCOMPARE(out.count, std::uint64_t{numel});
    QCOMPARE(out.max, 499.5);

    QCOMPARE(::truncate(path.c_str(), 4096), 0); // all but the first page gone
    QVERIFY(file->changedOnDisk());
    out = {};
    out.edges = edges.data();
    out.counts = counts.data();
    QCOMPARE(api->compute(&in, &out), CKPT_STATS_ERROR);
    QCOMPARE(QString::fromUtf8(out.error), QStringLiteral(CKPT_STATS_LOST_PAGES));
}

// What the fuzz targets found (tests/fuzz/regressions/): each opens to a clean error with this message.
void TestCorruption::fuzzFindings_data() {
    QTest::addColumn<QString>("file");
    QTest::addColumn<QString>("message");
    QTest::newRow("libhdf5 asks for a 2^46-byte buffer (in the child process)")
        << "hdf5_huge_image_buffer.h5"
        << "libhdf5 cannot open the file: memory allocation failed for on disk image buffer";
}

void TestCorruption::fuzzFindings() {
    QFETCH(QString, file);
    QFETCH(QString, message);
    const std::string path = kSeeds + "/../regressions/" + file.toStdString();
    try {
        (void)ckpt::openCheckpointBuffer(file.toStdString(), readFile(path));
        QFAIL("opened");
    } catch (const ckpt::Error& e) {
        // Under AddressSanitizer the child dies on the allocation instead (ASan's exit status 1, or a
        // signal), which is an error for the file too.
        if (kAsan && (e.message().starts_with("libhdf5 crashed reading the file") ||
                      e.message() == "the HDF5 reader failed (exit status 1)"))
            return;
        QCOMPARE(QString::fromStdString(e.message()), message);
    }
}

void TestCorruption::hdf5ChildMemoryIsBounded() {
    // fuzz_keras: a 13 KB .keras file whose global heap declares a 4 GiB collection. libhdf5 allocated and
    // cleared all of it (2.3 s, 4.2 GB resident) before it found the heap's signature damaged; the child that
    // reads a file's structure now has 1 GiB of address space beyond its start, so the allocation fails at
    // once and the attribute is a warning, as the damaged heap was before.
    if (kAsan)
        QSKIP("the HDF5 child's address space is not capped under AddressSanitizer");
    const std::string path = kSeeds + "/../regressions/keras_global_heap_4gib.keras";
    const auto ck = ckpt::openCheckpoint(path);
    std::vector<std::string> findings;
    for (const auto& f : ck->findings)
        findings.push_back(f.object + ": " + f.message);
    QVERIFY2(std::find(findings.begin(), findings.end(),
                       "/: HDF5 attribute '/@backend' cannot be read: memory allocation failed for chunk") !=
                 findings.end(),
             findings.empty() ? "no findings" : findings.front().c_str());
    rusage children{};
    QCOMPARE(::getrusage(RUSAGE_CHILDREN, &children), 0);
    QVERIFY2(children.ru_maxrss < 512 * 1024, qPrintable(QString::number(children.ru_maxrss) + " KiB"));
}

void TestCorruption::unguardedReadOfLostPage() {
    // A read straight from the mapping (as the readers do for metadata while a file opens) of a page lost to
    // a truncation reads zeros instead of killing the process; the file is marked, so every guarded read and
    // every later check refuses, and opening fails with Error(Changed).
    QTemporaryDir tmp;
    QVERIFY(tmp.isValid());
    const std::string path = tmp.path().toStdString() + "/f.bin";
    std::ofstream(path, std::ios::binary) << std::string(64 * 1024, '\x5a');
    const auto file = ckpt::MappedFile::open(path);
    std::uint8_t byte = 0;
    QVERIFY(file->copyGuarded(40000, 1, &byte));
    QCOMPARE(int(byte), 0x5a);
    QVERIFY(!file->lostPages());
    QCOMPARE(::truncate(path.c_str(), 4096), 0);
    const volatile std::uint8_t* p = file->data();
    QCOMPARE(int(p[50000]), 0);  // SIGBUS without the handler's page of zeros
    QCOMPARE(int(p[100]), 0x5a); // pages still in the file are untouched
    QVERIFY(file->lostPages());
    QVERIFY(file->changedOnDisk());
    QVERIFY(!file->copyGuarded(100, 1, &byte)); // even where the page is still there: the file is not whole
    try {
        file->ensureReadable();
        QFAIL("ensureReadable passed on a file with lost pages");
    } catch (const ckpt::Error& e) {
        QCOMPARE(int(e.code()), int(ckpt::ErrorCode::Changed));
    }
}

void TestCorruption::modifiedInPlaceIsRefused() {
    // A job writing over an open checkpoint in place (same size, new bytes) leaves the mapping showing the
    // new bytes at the old offsets: reading a tensor then is Error(Changed) "modified", before the first
    // value or, when the write comes while the tensor is read, after the last. A file replaced by rename
    // keeps the bytes that were opened, which read as before. Modification times are set explicitly (whole
    // seconds apart), as a coarse file system clock could give a write the time of the one before.
    QTemporaryDir tmp;
    QVERIFY(tmp.isValid());
    const std::string path = tmp.path().toStdString() + "/f32.npy";
    // numpy.save of numpy.arange(12, dtype=float32).reshape(3, 4): the 48 data bytes end the file
    const std::string original = readFile(kSeeds + "/npy/f32.npy");
    const std::size_t dataAt = original.size() - 48;
    const auto setMtime = [](const std::string& p, long seconds) {
        const struct timespec times[2] = {{seconds, 0}, {seconds, 0}};
        QCOMPARE(::utimensat(AT_FDCWD, p.c_str(), times, 0), 0);
    };
    const auto writeWhole = [&](const std::string& p, const std::string& bytes, long mtime) {
        std::ofstream(p, std::ios::binary) << bytes;
        setMtime(p, mtime);
    };
    const auto writeInPlace = [&](float value, long mtime) { // the first element, same size, new time
        std::fstream f(path, std::ios::binary | std::ios::in | std::ios::out);
        f.seekp(static_cast<std::streamoff>(dataAt));
        f.write(reinterpret_cast<const char*>(&value), sizeof value);
        f.close();
        setMtime(path, mtime);
    };
    const auto maxOf = [](const ckpt::CheckpointPtr& ck) {
        return ckpt::computeStats(ck, ck->tensors.at(0), 8, {}).value().max;
    };
    const auto expectModified = [](const std::function<void()>& read) {
        try {
            read();
            QFAIL("read the tensor of a file modified since it was opened");
        } catch (const ckpt::Error& e) {
            QCOMPARE(int(e.code()), int(ckpt::ErrorCode::Changed));
            QCOMPARE(QString::fromStdString(e.message()),
                     QStringLiteral("the file was modified on disk after it was opened; reload it"));
        }
    };
    writeWhole(path, original, 1'000'000'000);

    // Replaced by rename: the old bytes stay mapped and read right; the file says it changed.
    auto ck = ckpt::openCheckpoint(path);
    QCOMPARE(maxOf(ck), 11.0);
    std::string doubled = original;
    const float big = 1000.0f;
    std::memcpy(doubled.data() + dataAt, &big, sizeof big);
    writeWhole(path + ".new", doubled, 1'000'000'001);
    QCOMPARE(::rename((path + ".new").c_str(), path.c_str()), 0);
    QVERIFY(ck->sources.front().file->changedOnDisk());
    QCOMPARE(maxOf(ck), 11.0);

    // Written in place after the open: refused before the first value.
    ck = ckpt::openCheckpoint(path);
    QCOMPARE(maxOf(ck), 1000.0);
    writeInPlace(2000.0f, 1'000'000'002);
    QVERIFY(ck->sources.front().file->changedOnDisk());
    expectModified([&] { maxOf(ck); });
    expectModified([&] { ckpt::TensorReader(ck, ck->tensors.at(0)); });

    // Written in place while the tensor is read: the reader saw the new value, and says so at the end.
    ck = ckpt::openCheckpoint(path);
    const ckpt::TensorReader reader(ck, ck->tensors.at(0));
    std::vector<double> seen;
    expectModified([&] {
        reader.forEachChunk(
            [&](std::span<const double> values, std::uint64_t first) {
                if (first == 0)
                    writeInPlace(3000.0f, 1'000'000'003);
                seen.insert(seen.end(), values.begin(), values.end());
                return true;
            },
            4);
    });
    QCOMPARE(seen.size(), std::size_t{12}); // every value went by, the first one before the write
    QCOMPARE(seen.front(), 2000.0);
    QCOMPARE(seen.back(), 11.0);

    // Only the modification time changed (touch): the bytes may be the same, but nothing says so.
    ck = ckpt::openCheckpoint(path);
    setMtime(path, 1'000'000'004);
    expectModified([&] { maxOf(ck); });
    ck = ckpt::openCheckpoint(path);
    QCOMPARE(maxOf(ck), 3000.0);
}

// The HDF5 child's answer (fuzz seed keras/wire.bin after its mode byte): a dataset in the image at offset 0
// (24 bytes, float32 [3, 2]) and one read into memory (8 bytes, float32 [2]). Each row patches one field.
void TestCorruption::hdf5ReaderAnswerIsChecked_data() {
    QTest::addColumn<int>("at"); // byte offset in the answer, -1: none
    QTest::addColumn<quint64>("value");
    QTest::addColumn<bool>("accepted");
    // Offsets: tag 0, detail 8 (8 + 12), sources 28: count, path 36 (8 + 7), bytes 51 (8 + 8); storages 67:
    // count, "/k" 75 (8 + 2), dtype 85, nbytes 93, source 101, offset 109, big-endian 117; "/b" 125 (10),
    // dtype 135, nbytes 143, source 151, offset 159, big-endian 167; tensors 175: count, "k" 183 (9),
    // dtype 192, rank 200, shape 208 216, strides 224 232, storage 240, error 248 (8) ...
    QTest::newRow("intact") << -1 << quint64(0) << true;
    QTest::newRow("storage dtype past the table") << 85 << quint64(200) << false;
    QTest::newRow("storage smaller than its tensor") << 93 << quint64(1) << true; // the tensor gets an error
    QTest::newRow("storage larger than the image") << 93 << quint64(25) << false;
    QTest::newRow("storage offset past the image") << 109 << quint64(1) << false;
    QTest::newRow("in-memory storage larger than its buffer") << 143 << quint64(9) << false;
    QTest::newRow("storage of a source never sent") << 151 << quint64(5) << false;
    QTest::newRow("tensor dtype past the table") << 192 << quint64(99) << false;
    QTest::newRow("negative dimension") << 208 << ~quint64(0) << false;
    QTest::newRow("tensor of a storage never sent") << 240 << quint64(2) << false;
    QTest::newRow("rank beyond the limit") << 200 << quint64(1000) << false;
}

void TestCorruption::hdf5ReaderAnswerIsChecked() {
    QFETCH(int, at);
    QFETCH(quint64, value);
    QFETCH(bool, accepted);
    std::string answer = readFile(kSeeds + "/keras/wire.bin").substr(1);
    // The image the in-place storage points into: 24 bytes of it must exist.
    auto ck = ckpt::newCheckpoint(ckpt::MappedFile::fromBuffer("w.h5", std::string(24, '\0')), "keras-h5");
    if (at >= 0)
        putU64(answer, static_cast<std::size_t>(at), value);
    try {
        (void)ckpt::decodeHdf5ReaderAnswer(answer, *ck, 0, "w.h5");
        QVERIFY2(accepted, "a malformed answer was accepted");
        QCOMPARE(ck->tensors.size(), std::size_t{2});
        QCOMPARE(ck->tensors[0].error.empty(), at != 93);
        for (const auto& t : ck->tensors)
            if (t.error.empty())
                QVERIFY(ckpt::computeStats(ck, t, 4).has_value());
    } catch (const ckpt::Error& e) {
        QVERIFY2(!accepted, e.what());
        QCOMPARE(QString::fromStdString(e.message()),
                 QStringLiteral("the HDF5 reader sent an incomplete answer"));
    }
}

QTEST_GUILESS_MAIN(TestCorruption)
#include "tst_corruption.moc"
