// Run timelines: discovery and ordering of a run's checkpoints, and the norm, mean, std, change and
// histograms of a tensor or module across it, against what PyTorch and NumPy computed from the same files
// (tests/ui/make_fixtures.py trains a small model for ten epochs and saves a checkpoint per epoch).

#include "guitest.h"
#include "timelineview.h"

#include "io/error.h"
#include "run/run.h"

#include <qcustomplot.h>

#include <QApplication>
#include <QFile>
#include <QFileInfo>
#include <QJsonArray>
#include <QJsonDocument>
#include <QJsonObject>
#include <QSemaphore>
#include <QSignalSpy>
#include <QTemporaryDir>
#include <QTest>

#include <cmath>
#include <fstream>

using namespace ckpt;
using namespace ckpt::ui;
using namespace ckpt::uitest;

class TestTimeline : public QObject {
    Q_OBJECT
private Q_SLOTS:
    void initTestCase();
    void stepFromName_data();
    void stepFromName();
    void discoveryOrdersByStep();
    void explicitFilesAreOrdered();
    void missingDirectoryIsAnError();
    void tensorflowStateFile();
    void figuresEqualPyTorch_data();
    void figuresEqualPyTorch();
    void kerasRun();
    void unreadableCheckpointInTheMiddle();
    void viewDrawsTheFigures();
    void cancelStopsTheWorker();

private:
    QJsonObject m_run;
};

void TestTimeline::initTestCase() {
    m_run = expected().value(QStringLiteral("run")).toObject();
    QVERIFY(!m_run.isEmpty());
}

void TestTimeline::stepFromName_data() {
    QTest::addColumn<QString>("name");
    QTest::addColumn<qint64>("step"); // -1: none
    QTest::newRow("epoch padded") << "ckpt_epoch_05.pt" << qint64(5);
    QTest::newRow("step glued") << "model_step1000.safetensors" << qint64(1000);
    QTest::newRow("keras h5") << "keras_model_05.h5" << qint64(5);
    QTest::newRow("keras weights") << "model_12.weights.h5" << qint64(12);
    QTest::newRow("tf bundle") << "ckpt-12.index" << qint64(12);
    QTest::newRow("step beats epoch") << "run_epoch_3_step_4500.pt" << qint64(4500);
    QTest::newRow("last number") << "resnet50_v2_77.pth" << qint64(77);
    QTest::newRow("shard only") << "model-00001-of-00002.safetensors" << qint64(-1);
    QTest::newRow("no number") << "best.pt" << qint64(-1);
}

void TestTimeline::stepFromName() {
    QFETCH(QString, name);
    QFETCH(qint64, step);
    const auto got = ckpt::stepFromName(name.toStdString());
    QCOMPARE(got ? qint64(*got) : qint64(-1), step);
}

void TestTimeline::discoveryOrdersByStep() {
    const Run run = discoverRun(m_run.value(QStringLiteral("dir")).toString().toStdString());
    QStringList labels;
    QList<qint64> steps;
    for (const RunEntry& e : run.entries) {
        labels << QString::fromStdString(e.label);
        steps << e.step;
    }
    QStringList want;
    QList<qint64> wantSteps;
    for (const auto& v : m_run.value(QStringLiteral("order")).toArray())
        want << v.toString();
    for (const auto& v : m_run.value(QStringLiteral("steps")).toArray())
        wantSteps << v.toInteger();
    QCOMPARE(labels, want); // ckpt_epoch_2.pt before ckpt_epoch_10.pt
    QCOMPARE(steps, wantSteps);
    QCOMPARE(QString::fromStdString(run.kind), QStringLiteral("directory"));
    // best.pt carries no step and is left out with a reason; notes.txt is not a checkpoint at all.
    QCOMPARE(run.skipped.size(), std::size_t(1));
    QVERIFY(QString::fromStdString(run.skipped[0]).startsWith(QStringLiteral("best.pt: ")));
}

void TestTimeline::explicitFilesAreOrdered() {
    const QString dir = m_run.value(QStringLiteral("dir")).toString();
    const Run run =
        runFromPaths({(dir + "/ckpt_epoch_10.pt").toStdString(), (dir + "/ckpt_epoch_2.pt").toStdString(),
                      (dir + "/ckpt_epoch_9.pt").toStdString()});
    QCOMPARE(run.entries.size(), std::size_t(3));
    QCOMPARE(run.entries[0].step, 2);
    QCOMPARE(run.entries[1].step, 9);
    QCOMPARE(run.entries[2].step, 10);
    QVERIFY(naturalLess("epoch_2", "epoch_10"));
    QVERIFY(!naturalLess("epoch_10", "epoch_2"));
}

void TestTimeline::missingDirectoryIsAnError() {
    QTemporaryDir empty;
    try {
        discoverRun(empty.path().toStdString());
        QFAIL("an empty directory is not a run");
    } catch (const Error& e) {
        QCOMPARE(e.code(), ErrorCode::NotFound);
        QCOMPARE(QString::fromStdString(e.message()), QStringLiteral("no checkpoint files in the directory"));
    }
}

void TestTimeline::tensorflowStateFile() {
    // A real TensorFlow checkpoint (two data shards) copied under two step prefixes, listed by a state file
    // that also names a bundle no longer on disk (TensorFlow keeps the last N).
    const QString real =
        QStringLiteral(CKPT_UI_TEST_SOURCE_DIR "/../../../shared/fixtures/real/tf/lso_ckpt_tf2.2");
    if (!QFileInfo::exists(real + QStringLiteral("/ckpt.index")))
        QSKIP("real TensorFlow fixtures (../shared/fixtures/real/tf) are not here");
    QTemporaryDir dir;
    for (const QString& step : {QStringLiteral("3"), QStringLiteral("10")})
        for (const QString& suffix : {QStringLiteral(".index"), QStringLiteral(".data-00000-of-00002"),
                                      QStringLiteral(".data-00001-of-00002")})
            QVERIFY(QFile::copy(real + QStringLiteral("/ckpt") + suffix,
                                dir.filePath(QStringLiteral("ckpt-") + step + suffix)));
    {
        QFile state(dir.filePath(QStringLiteral("checkpoint")));
        QVERIFY(state.open(QIODevice::WriteOnly));
        state.write("model_checkpoint_path: \"ckpt-10\"\n"
                    "all_model_checkpoint_paths: \"ckpt-10\"\n"
                    "all_model_checkpoint_paths: \"ckpt-7\"\n"
                    "all_model_checkpoint_paths: \"ckpt-3\"\n");
    }
    for (const QString& path : {dir.path(), dir.filePath(QStringLiteral("checkpoint"))}) {
        const Run run = discoverRun(path.toStdString());
        QCOMPARE(QString::fromStdString(run.kind), QStringLiteral("tensorflow-state"));
        QCOMPARE(run.entries.size(), std::size_t(2));
        QCOMPARE(QString::fromStdString(run.entries[0].label), QStringLiteral("ckpt-3"));
        QCOMPARE(run.entries[0].step, 3);
        QCOMPARE(QString::fromStdString(run.entries[1].label), QStringLiteral("ckpt-10"));
        QCOMPARE(run.skipped.size(), std::size_t(1));
        QVERIFY(QString::fromStdString(run.skipped[0]).endsWith(QStringLiteral("its .index is missing")));
        // The same bytes twice: equal figures, and no change between them.
        const auto t = computeTimeline(run, "layer_with_weights-0.kernel", 8);
        QVERIFY(t);
        QCOMPARE(t->points[0].count, std::uint64_t(4));
        QVERIFY(t->points[0].present && t->points[1].present);
        QCOMPARE(t->points[1].norm, t->points[0].norm);
        QVERIFY(t->points[1].change);
        QCOMPARE(*t->points[1].change, 0.0);
        QVERIFY(t->points[0].histogram == t->points[1].histogram);
    }
}

void TestTimeline::figuresEqualPyTorch_data() {
    QTest::addColumn<QString>("name");
    QTest::addColumn<QString>("group");
    QTest::newRow("tensor model.0.weight") << "model.0.weight"
                                           << "tensors";
    QTest::newRow("tensor model.2.bias") << "model.2.bias"
                                         << "tensors";
    QTest::newRow("module model") << "model"
                                  << "modules";
}

void TestTimeline::figuresEqualPyTorch() {
    QFETCH(QString, name);
    QFETCH(QString, group);
    const QJsonObject want = m_run.value(group).toObject().value(name).toObject();
    const Run run = discoverRun(m_run.value(QStringLiteral("dir")).toString().toStdString());
    const int bins = m_run.value(QStringLiteral("bins")).toInt();
    std::uint64_t lastDone = 0, lastTotal = 0;
    const auto timeline =
        computeTimeline(run, name.toStdString(), bins, [&](std::uint64_t d, std::uint64_t t) {
            lastDone = d;
            lastTotal = t;
            return true;
        });
    QVERIFY(timeline);
    QCOMPARE(lastDone, lastTotal);
    const QJsonArray points = want.value(QStringLiteral("points")).toArray();
    QCOMPARE(timeline->points.size(), std::size_t(points.size()));
    QVERIFY(close(timeline->edges.front(), want.value(QStringLiteral("lo")).toDouble()));
    QVERIFY(close(timeline->edges.back(), want.value(QStringLiteral("hi")).toDouble()));
    for (int i = 0; i < points.size(); ++i) {
        const QJsonObject p = points[i].toObject();
        const RunPoint& got = timeline->points[static_cast<std::size_t>(i)];
        QVERIFY2(got.present && got.error.empty(), got.error.c_str());
        QCOMPARE(qint64(got.count), p.value(QStringLiteral("count")).toInteger());
        QVERIFY2(close(got.norm, p.value(QStringLiteral("norm")).toDouble()), qPrintable(QString::number(i)));
        QVERIFY2(close(got.mean, p.value(QStringLiteral("mean")).toDouble(), 1e-8),
                 qPrintable(QString::number(i)));
        QVERIFY2(close(got.std, p.value(QStringLiteral("std")).toDouble()), qPrintable(QString::number(i)));
        if (p.value(QStringLiteral("change")).isNull()) {
            QVERIFY(!got.change);
        } else {
            QVERIFY(got.change);
            QVERIFY2(close(*got.change, p.value(QStringLiteral("change")).toDouble()),
                     qPrintable(QString::number(i)));
        }
        QList<qint64> hist, wantHist;
        for (const auto c : got.histogram)
            hist << qint64(c);
        for (const auto& c : p.value(QStringLiteral("histogram")).toArray())
            wantHist << c.toInteger();
        QCOMPARE(hist, wantHist);
    }
}

void TestTimeline::kerasRun() {
    const QJsonObject want = expected().value(QStringLiteral("keras_run")).toObject();
    const Run run = discoverRun(want.value(QStringLiteral("dir")).toString().toStdString());
    QStringList labels;
    for (const RunEntry& e : run.entries)
        labels << QString::fromStdString(e.label);
    QStringList order;
    for (const auto& v : want.value(QStringLiteral("order")).toArray())
        order << v.toString();
    QCOMPARE(labels, order);
    const auto t = computeTimeline(run, want.value(QStringLiteral("tensor")).toString().toStdString(), 10);
    QVERIFY(t);
    const QJsonArray points = want.value(QStringLiteral("points")).toArray();
    QCOMPARE(t->points.size(), std::size_t(points.size()));
    for (int i = 0; i < points.size(); ++i) {
        const QJsonObject p = points[i].toObject();
        const RunPoint& got = t->points[static_cast<std::size_t>(i)];
        QVERIFY2(got.present && got.error.empty(), got.error.c_str());
        QVERIFY(close(got.norm, p.value(QStringLiteral("norm")).toDouble()));
        QVERIFY(close(got.mean, p.value(QStringLiteral("mean")).toDouble(), 1e-8));
        QVERIFY(close(got.std, p.value(QStringLiteral("std")).toDouble()));
        QCOMPARE(bool(got.change), !p.value(QStringLiteral("change")).isNull());
        if (got.change)
            QVERIFY(close(*got.change, p.value(QStringLiteral("change")).toDouble()));
    }
}

void TestTimeline::unreadableCheckpointInTheMiddle() {
    // Epoch 2 is not a checkpoint: it says so, the others keep their figures, and epoch 3 has no change to
    // show (nothing readable before it).
    const QString src = m_run.value(QStringLiteral("dir")).toString();
    QTemporaryDir dir;
    QVERIFY(QFile::copy(src + QStringLiteral("/ckpt_epoch_1.pt"),
                        dir.filePath(QStringLiteral("ckpt_epoch_1.pt"))));
    QVERIFY(QFile::copy(src + QStringLiteral("/ckpt_epoch_3.pt"),
                        dir.filePath(QStringLiteral("ckpt_epoch_3.pt"))));
    {
        QFile bad(dir.filePath(QStringLiteral("ckpt_epoch_2.pt")));
        QVERIFY(bad.open(QIODevice::WriteOnly));
        bad.write("this is not a checkpoint at all");
    }
    const Run run = discoverRun(dir.path().toStdString());
    QCOMPARE(run.entries.size(), std::size_t(3));
    const auto t = computeTimeline(run, "model.0.weight", 10);
    QVERIFY(t);
    QVERIFY(t->points[0].present && t->points[0].error.empty());
    QVERIFY(!t->points[1].present);
    QCOMPARE(
        QString::fromStdString(t->points[1].error),
        dir.filePath(QStringLiteral("ckpt_epoch_2.pt")) +
            QStringLiteral(": at byte 0: not a recognised checkpoint format (first bytes: 74 68 69 73 20 69 "
                           "73 20)"));
    QVERIFY(t->points[2].present && t->points[2].error.empty());
    QVERIFY(!t->points[2].change);
    const QJsonArray want = m_run.value(QStringLiteral("tensors"))
                                .toObject()
                                .value(QStringLiteral("model.0.weight"))
                                .toObject()
                                .value(QStringLiteral("points"))
                                .toArray();
    QVERIFY(close(t->points[2].norm, want[2].toObject().value(QStringLiteral("norm")).toDouble()));
}

void TestTimeline::viewDrawsTheFigures() {
    TimelineView view({m_run.value(QStringLiteral("dir")).toString()});
    QSignalSpy loaded(&view, &TimelineView::loadFinished);
    QVERIFY(loaded.wait(30000));
    QCOMPARE(loaded.first().first().toBool(), true);
    QSignalSpy done(&view, &TimelineView::finished);
    view.setBins(m_run.value(QStringLiteral("bins")).toInt());
    QVERIFY(view.selectName(QStringLiteral("model.2.bias")));
    QVERIFY(done.wait(30000));
    QCOMPARE(done.last().first().toBool(), false);
    const QJsonArray points = m_run.value(QStringLiteral("tensors"))
                                  .toObject()
                                  .value(QStringLiteral("model.2.bias"))
                                  .toObject()
                                  .value(QStringLiteral("points"))
                                  .toArray();
    // The curves hold the figures, one point per epoch at x = epoch.
    QCPGraph* norm = view.curvesPlot()->graph(0);
    QCPGraph* change = view.curvesPlot()->graph(3);
    QCOMPARE(norm->dataCount(), int(points.size()));
    for (int i = 0; i < points.size(); ++i) {
        const QJsonObject p = points[i].toObject();
        QCOMPARE(norm->data()->at(i)->key, double(p.value(QStringLiteral("epoch")).toInt()));
        QVERIFY(close(norm->data()->at(i)->value, p.value(QStringLiteral("norm")).toDouble()));
        if (i == 0)
            QVERIFY(std::isnan(change->data()->at(i)->value));
        else
            QVERIFY(close(change->data()->at(i)->value, p.value(QStringLiteral("change")).toDouble()));
    }
    // Ridges: a filled ridge over a baseline per checkpoint; overlay: one outline per checkpoint.
    QCOMPARE(view.histogramMode(), TimelineView::HistogramMode::Ridges);
    QCOMPARE(view.histogramPlot()->graphCount(), 2 * int(points.size()));
    view.setHistogramMode(TimelineView::HistogramMode::Overlay);
    QCOMPARE(view.histogramPlot()->graphCount(), int(points.size()));
    // The overlay's outline of the last epoch is its histogram (bin centres, plus a zero at each end).
    QCPGraph* last = view.histogramPlot()->graph(int(points.size()) - 1);
    const QJsonArray wantHist = points.last().toObject().value(QStringLiteral("histogram")).toArray();
    QCOMPARE(last->dataCount(), int(wantHist.size()) + 2);
    for (int b = 0; b < wantHist.size(); ++b)
        QCOMPARE(last->data()->at(b + 1)->value, double(wantHist[b].toInteger()));
}

void TestTimeline::cancelStopsTheWorker() {
    TimelineView view({m_run.value(QStringLiteral("dir")).toString()});
    QSignalSpy loaded(&view, &TimelineView::loadFinished);
    QVERIFY(loaded.wait(30000));
    QSemaphore entered, release;
    view.setWorkerHook([&] {
        entered.release();
        release.acquire();
    });
    QSignalSpy done(&view, &TimelineView::finished);
    QVERIFY(view.selectName(QStringLiteral("model")));
    QVERIFY(entered.tryAcquire(1, 30000)); // the worker is held before it reads anything
    QVERIFY(view.isComputing());
    view.cancel();
    release.release();
    QVERIFY(done.wait(30000));
    QCOMPARE(done.last().first().toBool(), true);
    QVERIFY(!view.result()->timeline);
    QVERIFY(!view.isComputing());
}

QTEST_MAIN(TestTimeline)
#include "tst_timeline.moc"
