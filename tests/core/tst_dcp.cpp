// PyTorch distributed checkpoints written by PyTorch's own writer (tests/interop/test_dcp.py --generate, run
// with /usr/bin/python3 and torch): every element of every tensor, read one by one and streamed in chunks
// of awkward sizes, equals what torch's load_state_dict returns for the same folder; tensors of several
// chunks name every file holding one.

#include "testutil.h"

#include "analysis/elements.h"
#include "analysis/stats.h"

#include <QProcess>
#include <QTemporaryDir>
#include <QTest>

#include <nlohmann/json.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>

using namespace testutil;

class TestDcp : public QObject {
    Q_OBJECT

    QTemporaryDir m_dir;
    nlohmann::json m_manifest;

    static std::vector<double> readF64(const std::string& path) {
        const std::string raw = readFile(path);
        std::vector<double> v(raw.size() / 8);
        std::memcpy(v.data(), raw.data(), v.size() * 8);
        return v;
    }

    static bool same(double a, double b) { return a == b || (std::isnan(a) && std::isnan(b)); }

private slots:
    void initTestCase() {
        QVERIFY(m_dir.isValid());
        const QString script = QStringLiteral(CKPT_TEST_DATA "/../../interop/test_dcp.py");
        if (!QFileInfo::exists(QStringLiteral("/usr/bin/python3")))
            QSKIP("/usr/bin/python3 (with PyTorch) is not installed");
        QProcess p;
        p.start(QStringLiteral("/usr/bin/python3"), {script, QStringLiteral("--generate"), m_dir.path()});
        QVERIFY(p.waitForFinished(300'000));
        if (p.exitCode() != 0 && p.readAllStandardError().contains("No module named 'torch'"))
            QSKIP("PyTorch is not installed for /usr/bin/python3");
        QCOMPARE(p.exitCode(), 0);
        m_manifest =
            nlohmann::json::parse(readFile(m_dir.filePath(QStringLiteral("manifest.json")).toStdString()));
        QCOMPARE(m_manifest.size(), std::size_t(3));
    }

    void values_data() {
        QTest::addColumn<QString>("kase");
        QTest::addColumn<QString>("opened");
        for (const char* c : {"plain", "per_rank", "ranks"}) {
            QTest::newRow((std::string(c) + " folder").c_str()) << c << "";
            QTest::newRow((std::string(c) + " .metadata").c_str()) << c << ".metadata";
            QTest::newRow((std::string(c) + " data file").c_str()) << c << "__0_0.distcp";
        }
    }

    void values() {
        QFETCH(QString, kase);
        QFETCH(QString, opened);
        const auto& c = m_manifest.at(kase.toStdString());
        const std::string folder = c.at("folder");
        const auto ck = ckpt::openCheckpoint(opened.isEmpty() ? folder : folder + "/" + opened.toStdString());
        QCOMPARE(QString::fromStdString(ck->format), QStringLiteral("pytorch-dcp"));
        QVERIFY(!ck->hasErrors());
        std::size_t chunked = 0;
        for (const auto& [name, want] : c.at("tensors").items()) {
            const ckpt::TensorInfo* t = ck->findTensor(name);
            QVERIFY2(t, name.c_str());
            QCOMPARE(std::string(ckpt::dtypeName(t->dtype)), want.at("dtype").get<std::string>());
            QCOMPARE(t->shape, want.at("shape").get<std::vector<std::int64_t>>());
            const auto expected = readF64(want.at("values"));
            ckpt::TensorReader r(ck, *t);
            QCOMPARE(r.numel(), std::uint64_t(expected.size()));
            for (std::uint64_t i = 0; i < expected.size(); ++i)
                QVERIFY2(same(r.element(i), expected[i]),
                         (name + " element " + std::to_string(i) + ": " + std::to_string(r.element(i)) +
                          " != " + std::to_string(expected[i]))
                             .c_str());
            for (std::size_t step : {std::size_t(1), std::size_t(5), std::size_t(7), std::size_t(16384)}) {
                std::uint64_t next = 0;
                bool ok = true;
                r.forEachChunk(
                    [&](std::span<const double> v, std::uint64_t first) {
                        ok = ok && first == next;
                        for (std::size_t i = 0; i < v.size() && ok; ++i)
                            ok = first + i < expected.size() && same(v[i], expected[first + i]);
                        next = first + v.size();
                        return ok;
                    },
                    step);
                QVERIFY2(ok && next == expected.size(),
                         (name + " streamed by " + std::to_string(step)).c_str());
            }
            // The files the chunks live in: those torch's metadata names.
            std::set<std::string> files;
            const auto chunks = want.at("chunks").get<std::size_t>();
            if (chunks > 1) {
                ++chunked;
                QVERIFY(t->chunkSet >= 0);
                QCOMPARE(ck->chunkSets.at(static_cast<std::size_t>(t->chunkSet)).size(), chunks);
                for (const auto& part : ck->chunkSets[static_cast<std::size_t>(t->chunkSet)])
                    files.insert(
                        std::filesystem::path(
                            ck->sources
                                .at(static_cast<std::size_t>(
                                    ck->storages.at(static_cast<std::size_t>(part.part.storage)).source))
                                .path)
                            .filename()
                            .string());
            } else {
                QCOMPARE(t->chunkSet, -1);
                files.insert(std::filesystem::path(
                                 ck->sources
                                     .at(static_cast<std::size_t>(
                                         ck->storages.at(static_cast<std::size_t>(t->storage)).source))
                                     .path)
                                 .filename()
                                 .string());
            }
            const auto wantFiles = want.at("files").get<std::vector<std::string>>();
            QCOMPARE(files, std::set<std::string>(wantFiles.begin(), wantFiles.end()));
        }
        if (kase == QStringLiteral("ranks"))
            QCOMPARE(chunked, std::size_t(5));
    }

    // Statistics of a tensor of several chunks cover every chunk once: computed over the assembled values
    // and compared with the values torch loaded.
    void statsOfChunks() {
        const auto& c = m_manifest.at("ranks");
        const auto ck = ckpt::openCheckpoint(c.at("folder").get<std::string>());
        for (const char* name : {"w", "grid", "cols", "cube"}) {
            const auto expected = readF64(c.at("tensors").at(name).at("values"));
            const auto st = ckpt::computeStats(ck, *ck->findTensor(name), 4);
            QVERIFY(st);
            QCOMPARE(st->count, std::uint64_t(expected.size()));
            QCOMPARE(st->min, *std::min_element(expected.begin(), expected.end()));
            QCOMPARE(st->max, *std::max_element(expected.begin(), expected.end()));
            double sum = 0;
            for (double v : expected)
                sum += v;
            QVERIFY(std::abs(st->mean - sum / static_cast<double>(expected.size())) < 1e-9);
        }
    }

    // A distributed checkpoint used as one shard of a sharded checkpoint: its tensors of several chunks read
    // the same values through the shard index as directly.
    void shardOfChunks() {
        const auto& c = m_manifest.at("ranks");
        const std::string folder = c.at("folder");
        const std::filesystem::path dir = std::filesystem::path(folder).parent_path();
        nlohmann::json index;
        for (const auto& [name, want] : c.at("tensors").items())
            index["weight_map"][name] = std::filesystem::path(folder).filename().string();
        const std::string indexPath = (dir / "ranks.safetensors.index.json").string();
        {
            std::ofstream out(indexPath);
            out << index.dump();
        }
        const auto sharded = ckpt::openCheckpoint(indexPath);
        const auto direct = ckpt::openCheckpoint(folder);
        std::filesystem::remove(indexPath);
        QCOMPARE(QString::fromStdString(sharded->format), QStringLiteral("sharded"));
        QVERIFY(!sharded->hasErrors());
        std::size_t chunked = 0;
        for (const auto& [name, want] : c.at("tensors").items()) {
            const ckpt::TensorInfo* t = sharded->findTensor(name);
            const ckpt::TensorInfo* d = direct->findTensor(name);
            QVERIFY2(t && d, name.c_str());
            QVERIFY2(t->error.empty(), t->error.c_str());
            QCOMPARE(t->chunkSet >= 0, d->chunkSet >= 0);
            chunked += t->chunkSet >= 0;
            const auto expected = readF64(want.at("values"));
            ckpt::TensorReader rs(sharded, *t), rd(direct, *d);
            QCOMPARE(rs.numel(), std::uint64_t(expected.size()));
            for (std::uint64_t i = 0; i < expected.size(); ++i)
                QVERIFY2(same(rs.element(i), expected[i]) && same(rs.element(i), rd.element(i)),
                         (name + " element " + std::to_string(i)).c_str());
        }
        QCOMPARE(chunked, std::size_t(5));
    }
};

QTEST_GUILESS_MAIN(TestDcp)
#include "tst_dcp.moc"
