// The browser window offscreen, on a checkpoint written by real PyTorch, against what PyTorch, NumPy and
// Python computed from the same file (tests/ui/make_fixtures.py).

#include "checkpointview.h"
#include "detailspane.h"
#include "guitest.h"
#include "histogrampage.h"
#include "mainwindow.h"
#include "moduletreemodel.h"
#include "treeproxy.h"
#include "valuesmodel.h"
#include "valuespage.h"

#include "analysis/torchstats/loader.h"
#include "report/report.h"

#include <qcustomplot.h>

#include <QAbstractItemModelTester>
#include <QApplication>
#include <QClipboard>
#include <QComboBox>
#include <QFile>
#include <QFileInfo>
#include <QJsonArray>
#include <QJsonDocument>
#include <QJsonObject>
#include <QLineEdit>
#include <QMimeData>
#include <QSemaphore>
#include <QSettings>
#include <QSignalSpy>
#include <QStandardPaths>
#include <QTabWidget>
#include <QTemporaryDir>
#include <QTest>
#include <QTimer>
#include <QTreeView>

#include <cmath>
#include <filesystem>

using namespace ckpt;
using namespace ckpt::ui;
using namespace ckpt::uitest;

namespace {

QString fixturePath() {
    return expected().value(QStringLiteral("file")).toString();
}

// The indented dump the fixture generator writes: modules with totals, tensors with shape, dtype and device.
void dumpTree(const ModuleTreeModel& m, const QModelIndex& parent, int depth, QStringList& out) {
    const auto& loaded = *m.checkpoint();
    for (int r = 0; r < m.rowCount(parent); ++r) {
        const QModelIndex i = m.index(r, 0, parent);
        const ModuleNode& n = loaded.tree.node(i.data(ModuleTreeModel::NodeRole).toInt());
        const QString pad(depth * 2, QLatin1Char(' '));
        const QString name = QString::fromStdString(n.name);
        if (n.tensor >= 0) {
            const TensorInfo& t = loaded.checkpoint->tensors[static_cast<std::size_t>(n.tensor)];
            out << pad + QStringLiteral("%1 %2 %3 %4")
                             .arg(name, QString::fromStdString(shapeText(t.shape)),
                                  QString::fromLatin1(dtypeName(t.dtype).data()),
                                  QString::fromStdString(t.device));
        } else if (n.value >= 0) {
            out << pad + name + QStringLiteral(" (value)");
        } else {
            out << pad + QStringLiteral("%1 (%2 tensors, %3 parameters)")
                             .arg(name)
                             .arg(n.tensors)
                             .arg(n.parameters);
        }
        dumpTree(m, i, depth + 1, out);
    }
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

} // namespace

class TestBrowser : public QObject {
    Q_OBJECT
private Q_SLOTS:
    void initTestCase();
    void treeMatchesPyTorch();
    void modelsPassTheTester();
    void naturalAndNumericSort();
    void filters_data();
    void filters();
    void histogramEqualsNumpy_data();
    void histogramEqualsNumpy();
    void cancelStopsTheWorker();
    void valuesTableSlices();
    void valuesOfChunkedDataset();
    void copyFullName();
    void fileChangedOnDiskOffersReload();
    void unreadableFileShowsError();
    void recentFilesAndState();
    void dropOpensEveryFile();
    void staysResponsiveWhileOpening();
    void findingsOnFileAndObjects();
    void detailsOfSharedStorage();
    void logScale();

private:
    QJsonObject m_expected;
};

void TestBrowser::initTestCase() {
    m_expected = expected();
    QStandardPaths::setTestModeEnabled(true);
    QSettings().clear();
}

void TestBrowser::treeMatchesPyTorch() {
    MainWindow w;
    CheckpointView* v = openAndWait(w, fixturePath());
    QVERIFY(v && v->loaded());
    QStringList got;
    dumpTree(*v->model(), {}, 0, got);
    QStringList want;
    for (const auto& line : m_expected.value(QStringLiteral("tree")).toArray())
        want << line.toString();
    QCOMPARE(got, want);
}

void TestBrowser::modelsPassTheTester() {
    MainWindow w;
    CheckpointView* v = openAndWait(w, fixturePath());
    QVERIFY(v);
    QAbstractItemModelTester treeTester(v->model(), QAbstractItemModelTester::FailureReportingMode::QtTest);
    QAbstractItemModelTester proxyTester(v->proxy(), QAbstractItemModelTester::FailureReportingMode::QtTest);
    QAbstractItemModelTester valuesTester(v->valuesPage()->model(),
                                          QAbstractItemModelTester::FailureReportingMode::QtTest);
    // Exercise them: filter, sort, reload, select tensors of every rank.
    v->proxy()->setFilter(QStringLiteral("layers"), TreeProxy::Mode::Substring);
    v->proxy()->sort(ModuleTreeModel::ParametersColumn, Qt::DescendingOrder);
    v->proxy()->setFilter(QString(), TreeProxy::Mode::Substring);
    v->proxy()->sort(ModuleTreeModel::NameColumn, Qt::AscendingOrder);
    for (const char* name :
         {"cube", "model.head.weight", "model.embed.weight", "optimizer.state.0.momentum_buffer"})
        QVERIFY2(v->selectName(QString::fromLatin1(name)), name);
    v->valuesPage()->model()->setSlice(0, 2, {0, 1, 0});
    v->reload();
    QSignalSpy done(v, &CheckpointView::loadFinished);
    QVERIFY(done.wait(30000));
}

void TestBrowser::naturalAndNumericSort() {
    MainWindow w;
    CheckpointView* v = openAndWait(w, fixturePath());
    QVERIFY(v && v->selectName(QStringLiteral("model.layers")));
    TreeProxy* p = v->proxy();
    p->sort(ModuleTreeModel::NameColumn, Qt::AscendingOrder);
    const QModelIndex layers =
        p->mapFromSource(v->model()->indexForNode(v->loaded()->tree.find("model.layers")));
    QStringList order;
    for (int r = 0; r < p->rowCount(layers); ++r)
        order << p->index(r, 0, layers).data(ModuleTreeModel::SortRole).toString();
    QStringList want;
    for (const auto& s : m_expected.value(QStringLiteral("natural_order")).toArray())
        want << s.toString();
    QCOMPARE(order, want); // 2 before 10, not 10 before 2
    p->sort(ModuleTreeModel::ParametersColumn, Qt::DescendingOrder);
    qulonglong previous = ~0ull;
    const QModelIndex root;
    for (int r = 0; r < p->rowCount(root); ++r) {
        const qulonglong n = p->index(r, ModuleTreeModel::ParametersColumn, root)
                                 .data(ModuleTreeModel::SortRole)
                                 .toULongLong();
        QVERIFY(n <= previous);
        previous = n;
    }
    QCOMPARE(p->index(0, 0, root).data(ModuleTreeModel::SortRole).toString(), QStringLiteral("big"));
}

void TestBrowser::filters_data() {
    QTest::addColumn<QString>("key");
    const QJsonObject filters = expected().value(QStringLiteral("filters")).toObject();
    for (const QString& key : filters.keys())
        QTest::newRow(key.toUtf8().constData()) << key;
}

void TestBrowser::filters() {
    QFETCH(QString, key);
    const int want = m_expected.value(QStringLiteral("filters")).toObject().value(key).toInt();
    const QString mode = key.section(QLatin1Char(':'), 0, 0);
    const QString text = key.section(QLatin1Char(':'), 1);
    MainWindow w;
    CheckpointView* v = openAndWait(w, fixturePath());
    QVERIFY(v);
    v->filterMode()->setCurrentIndex(mode == QLatin1String("substring") ? 0
                                     : mode == QLatin1String("glob")    ? 1
                                                                        : 2);
    v->filterEdit()->setText(text);
    QTRY_COMPARE(v->proxy()->matchCount(), want);
    // Every visible leaf matches, and every match is visible with its ancestors.
    int visibleLeaves = 0;
    std::function<void(const QModelIndex&)> walk = [&](const QModelIndex& parent) {
        for (int r = 0; r < v->proxy()->rowCount(parent); ++r) {
            const QModelIndex i = v->proxy()->index(r, 0, parent);
            if (i.data(ModuleTreeModel::KindRole).toInt() != static_cast<int>(ModuleNode::Kind::Module))
                ++visibleLeaves;
            walk(i);
        }
    };
    walk({});
    QVERIFY(visibleLeaves >= want);
    v->filterEdit()->setText(QStringLiteral("(unclosed"));
    if (mode == QLatin1String("regex")) {
        QTRY_VERIFY(!v->proxy()->filterIsValid());
        QCOMPARE(v->proxy()->matchCount(), 0);
    }
}

void TestBrowser::histogramEqualsNumpy_data() {
    QTest::addColumn<QString>("key");
    for (const QString& k : expected().value(QStringLiteral("histograms")).toObject().keys())
        QTest::newRow(k.toUtf8().constData()) << k;
}

void TestBrowser::histogramEqualsNumpy() {
    QFETCH(QString, key);
    const QJsonObject want = m_expected.value(QStringLiteral("histograms")).toObject().value(key).toObject();
    const QString name = key.section(QLatin1Char('@'), 0, 0);
    const int bins = key.section(QLatin1Char('@'), 1).toInt();
    MainWindow w;
    CheckpointView* v = openAndWait(w, fixturePath());
    QVERIFY(v);
    HistogramPage* page = v->histogramPage();
    page->setBins(bins);
    QSignalSpy finished(page, &HistogramPage::finished);
    QVERIFY(v->selectName(name));
    v->showStatistics();
    QVERIFY(finished.wait(30000) || !finished.isEmpty());
    QTRY_VERIFY(page->result() && page->result()->stats);
    const TensorStats& s = *page->result()->stats;
    QCOMPARE(s.histogram.counts.size(), std::size_t(bins));
    const QJsonArray counts = want.value(QStringLiteral("counts")).toArray();
    for (int i = 0; i < bins; ++i)
        QCOMPARE(static_cast<qint64>(s.histogram.counts[static_cast<std::size_t>(i)]), counts[i].toInteger());
    QCOMPARE(s.min, want.value(QStringLiteral("min")).toDouble());
    QCOMPARE(s.max, want.value(QStringLiteral("max")).toDouble());
    QVERIFY(std::abs(s.mean - want.value(QStringLiteral("mean")).toDouble()) <=
            1e-9 * (1 + std::abs(s.mean)));
    QVERIFY(std::abs(s.std - want.value(QStringLiteral("std")).toDouble()) <= 1e-9 * (1 + std::abs(s.std)));
    QCOMPARE(static_cast<qint64>(s.count), want.value(QStringLiteral("count")).toInteger());
    if (name == QLatin1String("big") && !qEnvironmentVariableIsEmpty("CKPT_TORCHSTATS"))
        QVERIFY2(torchStatsPluginIfLoaded(),
                 "a 4,000,000-element float32 tensor was not computed by LibTorch");
    // The bars drawn are the counts, and hovering a bar names its range and count.
    const double mid = (s.histogram.edges[0] + s.histogram.edges[1]) / 2;
    QVERIFY(page->binToolTip(mid).contains(QString::fromStdString(groupedNumber(s.histogram.counts[0]))));
    QVERIFY(page->binToolTip(s.histogram.edges.back())
                .endsWith(QStringLiteral("\n%1 elements")
                              .arg(QString::fromStdString(groupedNumber(s.histogram.counts.back())))));
}

void TestBrowser::cancelStopsTheWorker() {
    MainWindow w;
    CheckpointView* v = openAndWait(w, fixturePath());
    QVERIFY(v && v->selectName(QStringLiteral("big")));
    HistogramPage* page = v->histogramPage();
    QSignalSpy finished(page, &HistogramPage::finished);
    // Hold the worker until the cancel is in, however fast the machine or the statistics are.
    QSemaphore go;
    page->setWorkerHook([&go] { go.acquire(); });
    v->showStatistics();
    QVERIFY(page->isComputing());
    page->cancel();
    go.release();
    QVERIFY(finished.wait(30000) || !finished.isEmpty());
    page->setWorkerHook({});
    QCOMPARE(finished.first().first().toBool(), true);
    QVERIFY(!page->result()->stats);
    // A new selection while computing drops the old result: only the last one is shown.
    QSignalSpy again(page, &HistogramPage::finished);
    v->selectName(QStringLiteral("big"));
    page->setBins(10);
    v->selectName(QStringLiteral("cube"));
    QTRY_VERIFY_WITH_TIMEOUT(!again.isEmpty() && page->result() && page->result()->stats, 30000);
    QCOMPARE(page->result()->stats->count, 24u);
}

void TestBrowser::valuesTableSlices() {
    MainWindow w;
    CheckpointView* v = openAndWait(w, fixturePath());
    QVERIFY(v && v->selectName(QStringLiteral("cube")));
    ValuesModel* m = v->valuesPage()->model();
    const QJsonObject slices = m_expected.value(QStringLiteral("slices")).toObject();
    auto check = [&](const QString& key, int rowDim, int colDim, std::vector<std::int64_t> fixed) {
        m->setSlice(rowDim, colDim, fixed);
        const QJsonArray rows = slices.value(key).toArray();
        QCOMPARE(m->rowCount(), rows.size());
        for (int r = 0; r < rows.size(); ++r) {
            const QJsonArray cols = rows[r].toArray();
            QCOMPARE(m->columnCount(), cols.size());
            for (int c = 0; c < cols.size(); ++c)
                QCOMPARE(m->index(r, c).data(Qt::UserRole).toDouble(), cols[c].toDouble());
        }
    };
    check(QStringLiteral("cube:1,2:[1]"), 1, 2, {1, 0, 0});
    check(QStringLiteral("cube:0,2:[0,2]"), 0, 2, {0, 2, 0});
    // A 4,000,000-element vector is a 4,000,000-row table that reads only the cells asked for.
    QVERIFY(v->selectName(QStringLiteral("big")));
    QCOMPARE(m->rowCount(), 4000000);
    QCOMPARE(m->columnCount(), 1);
    QVERIFY(m->index(3999999, 0).data().isValid());
}

// A chunked, gzip-compressed Keras dataset is read on a worker thread when its values are first shown: the
// table is empty right after the selection, then holds what h5py reads.
void TestBrowser::valuesOfChunkedDataset() {
    const QJsonObject k = m_expected.value(QStringLiteral("keras_chunked")).toObject();
    MainWindow w;
    CheckpointView* v = openAndWait(w, k.value(QStringLiteral("file")).toString());
    QVERIFY(v && v->selectName(k.value(QStringLiteral("tensor")).toString()));
    ValuesModel* m = v->valuesPage()->model();
    QCOMPARE(m->rowCount(), 0);
    const QJsonArray rows = k.value(QStringLiteral("values")).toArray();
    QTRY_COMPARE_WITH_TIMEOUT(m->rowCount(), rows.size(), 30000);
    for (int r = 0; r < rows.size(); ++r) {
        const QJsonArray cols = rows[r].toArray();
        QCOMPARE(m->columnCount(), cols.size());
        for (int c = 0; c < cols.size(); ++c)
            QCOMPARE(m->index(r, c).data(Qt::UserRole).toDouble(), cols[c].toDouble());
    }
}

void TestBrowser::copyFullName() {
    MainWindow w;
    CheckpointView* v = openAndWait(w, fixturePath());
    QVERIFY(v && v->selectName(QStringLiteral("model.layers.10.attn.weight")));
    v->copySelectedName();
    QCOMPARE(QApplication::clipboard()->text(), QStringLiteral("model.layers.10.attn.weight"));
}

void TestBrowser::fileChangedOnDiskOffersReload() {
    QTemporaryDir dir;
    const QString copy = dir.filePath(QStringLiteral("copy.pt"));
    QVERIFY(QFile::copy(fixturePath(), copy));
    MainWindow w;
    CheckpointView* v = openAndWait(w, copy);
    QVERIFY(v && v->loaded());
    QVERIFY(!v->changeBannerVisible());
    // A training job saving over the file: it shrinks under the mapping.
    std::filesystem::resize_file(copy.toStdString(), 2048);
    QTRY_VERIFY_WITH_TIMEOUT(v->changeBannerVisible(), 10000);
    // Reading values now fails cleanly instead of crashing.
    QVERIFY(v->selectName(QStringLiteral("big")));
    QCOMPARE(v->valuesPage()->model()->rowCount(), 0);
    HistogramPage* page = v->histogramPage();
    QVERIFY(v->selectName(QStringLiteral("model.head.weight")));
    v->showStatistics();
    QTRY_VERIFY_WITH_TIMEOUT(page->result() && !page->result()->error.isEmpty(), 10000);
    // Reload reads the new contents: here, a truncated file and its message.
    QSignalSpy done(v, &CheckpointView::loadFinished);
    v->reload();
    QVERIFY(done.wait(30000));
    QCOMPARE(done.first().first().toBool(), false);
    QVERIFY(v->errorText().contains(QStringLiteral("copy.pt")));
}

void TestBrowser::unreadableFileShowsError() {
    QTemporaryDir dir;
    const QString bad = dir.filePath(QStringLiteral("bad.pt"));
    QFile f(bad);
    QVERIFY(f.open(QIODevice::WriteOnly));
    f.write("not a checkpoint at all");
    f.close();
    MainWindow w;
    CheckpointView* v = openAndWait(w, bad);
    QVERIFY(v && !v->loaded());
    QVERIFY2(v->errorText().contains(QStringLiteral("not a recognised checkpoint format")),
             qPrintable(v->errorText()));
}

void TestBrowser::recentFilesAndState() {
    {
        MainWindow w;
        QVERIFY(openAndWait(w, fixturePath()));
        QCOMPARE(w.recentFiles().value(0), fixturePath());
        w.resize(1000, 700);
        w.close();
    }
    MainWindow again;
    QCOMPARE(again.recentFiles().value(0), fixturePath());
    QCOMPARE(again.size(), QSize(1000, 700));
}

void TestBrowser::dropOpensEveryFile() {
    MainWindow w;
    w.show();
    QMimeData mime;
    const QString second =
        m_expected.value(QStringLiteral("whole_module")).toObject().value(QStringLiteral("file")).toString();
    mime.setUrls({QUrl::fromLocalFile(fixturePath()), QUrl::fromLocalFile(second)});
    QDragEnterEvent enter(QPoint(10, 10), Qt::CopyAction, &mime, Qt::LeftButton, Qt::NoModifier);
    QApplication::sendEvent(&w, &enter);
    QVERIFY(enter.isAccepted());
    QDropEvent drop(QPointF(10, 10), Qt::CopyAction, &mime, Qt::LeftButton, Qt::NoModifier);
    QApplication::sendEvent(&w, &drop);
    QCOMPARE(w.tabs()->count(), 2);
    QTRY_VERIFY_WITH_TIMEOUT(!w.currentView()->isLoading(), 30000);
    QCOMPARE(w.currentView()->path(), QFileInfo(second).absoluteFilePath());
}

void TestBrowser::staysResponsiveWhileOpening() {
    // The event loop keeps turning while 100,000 tensors are read: a 10 ms timer fires meanwhile.
    const QJsonObject many = m_expected.value(QStringLiteral("many")).toObject();
    MainWindow w;
    w.show();
    int ticks = 0;
    QTimer timer;
    timer.setInterval(10);
    QObject::connect(&timer, &QTimer::timeout, [&] { ++ticks; });
    timer.start();
    CheckpointView* v = w.openFile(many.value(QStringLiteral("file")).toString());
    QVERIFY(v->isLoading());
    QSignalSpy done(v, &CheckpointView::loadFinished);
    QVERIFY(done.wait(60000));
    QVERIFY2(ticks >= 3, qPrintable(QStringLiteral("only %1 timer ticks while opening").arg(ticks)));
    QCOMPARE(static_cast<int>(v->loaded()->checkpoint->tensors.size()),
             many.value(QStringLiteral("tensors")).toInt());
    QCOMPARE(v->model()->rowCount(), many.value(QStringLiteral("tensors")).toInt());
}

void TestBrowser::findingsOnFileAndObjects() {
    const QJsonObject whole = m_expected.value(QStringLiteral("whole_module")).toObject();
    MainWindow w;
    CheckpointView* v = openAndWait(w, whole.value(QStringLiteral("file")).toString());
    QVERIFY(v && v->loaded());
    const ModuleTree& tree = v->loaded()->tree;
    QCOMPARE(static_cast<int>(tree.root().findings), whole.value(QStringLiteral("flagged")).toArray().size());
    for (const auto& name : whole.value(QStringLiteral("flagged")).toArray()) {
        if (name.toString() == QLatin1String("(root)"))
            continue;
        const QModelIndex i = v->model()->indexForNode(tree.find(name.toString().toStdString()));
        QVERIFY(i.data(ModuleTreeModel::FindingsRole).toInt() >= 1);
        QVERIFY(i.data(Qt::ToolTipRole).toString().contains(QStringLiteral("not a known data type")));
    }
    QVERIFY(v->detailsPane()->toPlainText().contains(QStringLiteral("security")));
}

void TestBrowser::detailsOfSharedStorage() {
    MainWindow w;
    CheckpointView* v = openAndWait(w, fixturePath());
    QVERIFY(v && v->selectName(QStringLiteral("cube")));
    const QString text = v->detailsPane()->toPlainText();
    QVERIFY2(text.contains(QStringLiteral("Shares storage with")) &&
                 text.contains(QStringLiteral("cube_row")),
             qPrintable(text));
    QVERIFY(text.contains(QStringLiteral("Bytes in file")));
    // Following the link selects the other tensor, a view 12 elements into the same storage.
    Q_EMIT v->detailsPane()->tensorLinkActivated(QStringLiteral("cube_row"));
    QCOMPARE(v->selectedName(), QStringLiteral("cube_row"));
    QVERIFY(v->detailsPane()->toPlainText().contains(QStringLiteral("12 elements")));
    // The file's details give the share of bytes per top-level key.
    v->treeView()->clearSelection();
    v->detailsPane()->showNode(v->loaded(), 0);
    QVERIFY(v->detailsPane()->toPlainText().contains(QStringLiteral("Share of bytes per top-level key")));
}

void TestBrowser::logScale() {
    MainWindow w;
    CheckpointView* v = openAndWait(w, fixturePath());
    QVERIFY(v && v->selectName(QStringLiteral("model.head.weight")));
    HistogramPage* page = v->histogramPage();
    v->showStatistics();
    QTRY_VERIFY_WITH_TIMEOUT(page->result() && page->result()->stats, 30000);
    page->setLogScale(true);
    QCOMPARE(page->plot()->yAxis->scaleType(), QCPAxis::stLogarithmic);
    page->setLogScale(false);
    QCOMPARE(page->plot()->yAxis->scaleType(), QCPAxis::stLinear);
}

QTEST_MAIN(TestBrowser)
#include "tst_browser.moc"
