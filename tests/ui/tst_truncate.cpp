// A checkpoint truncated or rewritten on disk while the window has it open (a training job saving over its
// checkpoint): the window survives (no SIGBUS, also when LibTorch's worker threads are reading the mapping),
// reading values afterwards shows the error, and the view offers to reload. Fixtures are written here: a
// safetensors file with a small float32 tensor, a float64 one and a 16M-element float32 tensor, whose
// statistics LibTorch computes on its worker threads.

#include "checkpointview.h"
#include "histogrampage.h"
#include "mainwindow.h"
#include "valuesmodel.h"
#include "valuespage.h"

#include <QApplication>
#include <QDir>
#include <QFile>
#include <QLabel>
#include <QSignalSpy>
#include <QTemporaryDir>
#include <QTest>
#include <QThread>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

using namespace ckpt::ui;

namespace {

constexpr std::int64_t kBigRows = 4096, kBigCols = 4096; // 16M float32: 64 MiB

struct Fixture {
    std::string header;   // with its 8-byte length
    std::uint64_t dataAt; // where the tensor bytes start
};

// small: F32 [3,4] = i / 8; bias: F64 [3]; big: F32 [4096,4096] = (i % 1000) * 0.25, max 249.75.
Fixture writeFixture(const QString& path) {
    const std::string json = R"({"__metadata__":{"format":"pt"},)"
                             R"("small":{"dtype":"F32","shape":[3,4],"data_offsets":[0,48]},)"
                             R"("bias":{"dtype":"F64","shape":[3],"data_offsets":[48,72]},)"
                             R"("big":{"dtype":"F32","shape":[4096,4096],"data_offsets":[72,67108936]}})";
    std::string header(8, '\0');
    for (int i = 0; i < 8; ++i)
        header[static_cast<std::size_t>(i)] = static_cast<char>((json.size() >> (8 * i)) & 0xff);
    header += json;
    QFile f(path);
    if (!f.open(QIODevice::WriteOnly))
        qFatal("cannot write %s", qPrintable(path));
    f.write(header.data(), static_cast<qint64>(header.size()));
    float small[12];
    for (int i = 0; i < 12; ++i)
        small[i] = static_cast<float>(i) / 8;
    const double bias[3] = {1.5, -2.0, 0.25};
    f.write(reinterpret_cast<const char*>(small), sizeof small);
    f.write(reinterpret_cast<const char*>(bias), sizeof bias);
    std::vector<float> row(kBigCols);
    for (std::int64_t r = 0; r < kBigRows; ++r) {
        for (std::int64_t c = 0; c < kBigCols; ++c)
            row[static_cast<std::size_t>(c)] = static_cast<float>((r * kBigCols + c) % 1000) * 0.25f;
        f.write(reinterpret_cast<const char*>(row.data()), static_cast<qint64>(row.size() * sizeof(float)));
    }
    f.close();
    return {header, header.size()};
}

CheckpointView* openAndWait(MainWindow& w, const QString& path) {
    CheckpointView* v = w.openFile(path);
    if (v->isLoading()) {
        QSignalSpy done(v, &CheckpointView::loadFinished);
        if (!done.wait(30000))
            return nullptr;
    }
    return v;
}

// Selects a tensor on the statistics page and waits for its result.
StatsResultPtr statisticsOf(CheckpointView* v, const QString& name) {
    HistogramPage* page = v->histogramPage();
    v->showStatistics();
    QSignalSpy finished(page, &HistogramPage::finished);
    if (!v->selectName(name))
        return nullptr;
    if (!finished.wait(60000))
        return nullptr;
    return page->result();
}

QString valuesMessage(CheckpointView* v) {
    for (const QLabel* l : v->valuesPage()->findChildren<QLabel*>())
        if (!l->isHidden() && l->text().contains(QStringLiteral("cannot be shown")))
            return l->text();
    return {};
}

void screenshot(QWidget& w, const char* name) {
    const QByteArray dir = qgetenv("CKPT_TEST_SCREENSHOTS");
    if (!dir.isEmpty())
        w.grab().save(QDir(QString::fromLocal8Bit(dir)).filePath(QString::fromLatin1(name)));
}

} // namespace

class TestTruncate : public QObject {
    Q_OBJECT
private Q_SLOTS:
    void readingAfterTruncationShowsErrorAndOffersReload();
    void truncatedWhileStatisticsRun();
    void rewrittenInPlaceOffersReload();
};

void TestTruncate::readingAfterTruncationShowsErrorAndOffersReload() {
    QTemporaryDir dir;
    const QString path = dir.filePath(QStringLiteral("model.safetensors"));
    const Fixture fx = writeFixture(path);
    MainWindow w;
    w.resize(1100, 700);
    w.show();
    CheckpointView* v = openAndWait(w, path);
    QVERIFY(v && v->loaded());
    QVERIFY(!v->changeBannerVisible());

    // Intact: LibTorch's statistics of the large tensor, and values of the small one.
    StatsResultPtr r = statisticsOf(v, QStringLiteral("big"));
    QVERIFY(r && r->stats && r->error.isEmpty());
    QCOMPARE(r->stats->count, std::uint64_t(kBigRows * kBigCols));
    QCOMPARE(r->stats->max, 249.75);
    QTest::qWait(100); // the plot redraws on the next event loop pass
    screenshot(w, "intact.png");
    v->showValues();
    QVERIFY(v->selectName(QStringLiteral("small")));
    QCOMPARE(v->valuesPage()->model()->rowCount(), 3);

    // Saved over: only the header and 16 bytes of `small` are left.
    std::filesystem::resize_file(path.toStdString(), fx.dataAt + 16);
    QTRY_VERIFY_WITH_TIMEOUT(v->changeBannerVisible(), 10000);

    // Every read now fails with the reason, the window stays.
    for (const char* name : {"bias", "big", "small"}) { // each a new selection: values are read anew
        r = statisticsOf(v, QString::fromLatin1(name));
        QVERIFY2(r && !r->stats, name);
        QVERIFY2(r->error.contains(QStringLiteral("truncated on disk")), qPrintable(r->error));
        QVERIFY(v->selectName(QString::fromLatin1(name)));
        v->showValues();
        QCOMPARE(v->valuesPage()->model()->rowCount(), 0);
        QVERIFY2(valuesMessage(v).contains(QStringLiteral("truncated on disk")),
                 qPrintable(valuesMessage(v)));
    }
    v->showStatistics();
    QTest::qWait(50);
    screenshot(w, "truncated.png");

    // Reload: the file as it is now, its header whole and its data cut short, lists every tensor with the
    // error that its bytes run past the end of the file; the banner is gone.
    QSignalSpy done(v, &CheckpointView::loadFinished);
    v->reload();
    QVERIFY(done.wait(30000));
    QCOMPARE(done.first().first().toBool(), true);
    QVERIFY(!v->changeBannerVisible());
    QCOMPARE(v->loaded()->checkpoint->tensors.size(), std::size_t{3});
    for (const auto& t : v->loaded()->checkpoint->tensors)
        QVERIFY2(!t.error.empty(), t.name.c_str());
    r = statisticsOf(v, QStringLiteral("bias"));
    QVERIFY(r && !r->stats && !r->error.isEmpty());
    screenshot(w, "reloaded.png");
}

void TestTruncate::truncatedWhileStatisticsRun() {
    // The truncation lands while LibTorch's threads (or the portable path) read the mapping, or just before
    // or after: each outcome is a result or the error, never a crash. Several rounds shift the moment.
    QTemporaryDir dir;
    int errors = 0, results = 0;
    for (int round = 0; round < 4; ++round) {
        const QString path = dir.filePath(QStringLiteral("race%1.safetensors").arg(round));
        const Fixture fx = writeFixture(path);
        MainWindow w;
        CheckpointView* v = openAndWait(w, path);
        QVERIFY(v && v->loaded());
        QVERIFY(v->selectName(QStringLiteral("small")));
        v->showStatistics();
        HistogramPage* page = v->histogramPage();
        QSignalSpy finished(page, &HistogramPage::finished);
        QTRY_VERIFY_WITH_TIMEOUT(page->result() != nullptr, 30000);
        finished.clear();
        QVERIFY(v->selectName(QStringLiteral("big"))); // starts the worker
        if (round > 0)
            QThread::msleep(static_cast<unsigned long>(round * 4));
        std::filesystem::resize_file(path.toStdString(), fx.dataAt + 4096 * round);
        QVERIFY(finished.wait(60000));
        const StatsResultPtr r = page->result();
        QVERIFY(r);
        if (r->stats) {
            ++results;
            QCOMPARE(r->stats->max, 249.75);
        } else {
            ++errors;
            QVERIFY2(r->error.contains(QStringLiteral("truncated on disk")), qPrintable(r->error));
        }
        QTRY_VERIFY_WITH_TIMEOUT(v->changeBannerVisible(), 10000);
    }
    qInfo("truncation during statistics: %d errors, %d results finished first", errors, results);
}

void TestTruncate::rewrittenInPlaceOffersReload() {
    // The same size, new contents (a job writing over the file in place): the view notices and offers to
    // reload; reloading shows the new values.
    QTemporaryDir dir;
    const QString path = dir.filePath(QStringLiteral("inplace.safetensors"));
    const Fixture fx = writeFixture(path);
    MainWindow w;
    CheckpointView* v = openAndWait(w, path);
    QVERIFY(v && v->loaded());
    QVERIFY(v->selectName(QStringLiteral("small")));
    QTest::qWait(20); // a later modification time than the one seen at open
    {
        QFile f(path);
        QVERIFY(f.open(QIODevice::ReadWrite));
        QVERIFY(f.seek(static_cast<qint64>(fx.dataAt)));
        const float nine[12] = {9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9};
        f.write(reinterpret_cast<const char*>(nine), sizeof nine);
    }
    QTRY_VERIFY_WITH_TIMEOUT(v->changeBannerVisible(), 10000);
    QSignalSpy done(v, &CheckpointView::loadFinished);
    v->reload();
    QVERIFY(done.wait(30000));
    QCOMPARE(done.first().first().toBool(), true);
    QVERIFY(!v->changeBannerVisible());
    QVERIFY(v->selectName(QStringLiteral("small")));
    QCOMPARE(v->valuesPage()->model()->index(0, 0).data(Qt::UserRole).toDouble(), 9.0);
}

QTEST_MAIN(TestTruncate)
#include "tst_truncate.moc"
