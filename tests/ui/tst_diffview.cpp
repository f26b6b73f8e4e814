// Diff mode offscreen: the merged tree of two checkpoints written by real PyTorch (one training step apart,
// a tensor removed, one added, one reshaped, one untouched), its statuses and change figures against what
// PyTorch computed from the same tensors (tests/ui/make_fixtures.py), the "changed only" filter, the
// overlaid histograms against NumPy, and cancel.

#include "diffmodel.h"
#include "diffview.h"
#include "guitest.h"
#include "mainwindow.h"

#include <qcustomplot.h>

#include <QAbstractItemModelTester>
#include <QApplication>
#include <QFile>
#include <QJsonArray>
#include <QJsonDocument>
#include <QJsonObject>
#include <QSemaphore>
#include <QSignalSpy>
#include <QStandardPaths>
#include <QTabWidget>
#include <QTest>
#include <QTreeView>

#include <cmath>

using namespace ckpt;
using namespace ckpt::ui;
using namespace ckpt::uitest;

namespace {

// Every tensor row of a model (or proxy) under `parent`, by full name.
void tensorRows(const QAbstractItemModel& m, const QModelIndex& parent, QMap<QString, QModelIndex>& out) {
    for (int r = 0; r < m.rowCount(parent); ++r) {
        const QModelIndex i = m.index(r, 0, parent);
        if (i.data(DiffModel::TensorDiffRole).toInt() >= 0)
            out.insert(i.data(DiffModel::FullNameRole).toString(), i);
        tensorRows(m, i, out);
    }
}

QList<qint64> counts(const Histogram& h) {
    QList<qint64> out;
    for (const auto c : h.counts)
        out << qint64(c);
    return out;
}

QList<qint64> counts(const QJsonArray& a) {
    QList<qint64> out;
    for (const auto& v : a)
        out << v.toInteger();
    return out;
}

} // namespace

class TestDiffView : public QObject {
    Q_OBJECT
private Q_SLOTS:
    void initTestCase();
    void mergedTreeMatchesPyTorch();
    void sortByChange();
    void changedOnlyFilter();
    void overlayHistograms();
    void cancelStopsTheComparison();
    void openedFromTheWindow();
    void hundredThousandTensors();
    void prefixedCopyIsTheSame();

private:
    QJsonObject m_diff;
};

void TestDiffView::initTestCase() {
    QStandardPaths::setTestModeEnabled(true);
    m_diff = expected().value(QStringLiteral("diff")).toObject();
    QVERIFY(!m_diff.isEmpty());
}

void TestDiffView::mergedTreeMatchesPyTorch() {
    DiffView view(m_diff.value(QStringLiteral("a")).toString(), m_diff.value(QStringLiteral("b")).toString());
    // The tester watches the model from the structure through every incremental update.
    QAbstractItemModelTester tester(view.model(), QAbstractItemModelTester::FailureReportingMode::QtTest);
    QAbstractItemModelTester proxyTester(view.proxy(),
                                         QAbstractItemModelTester::FailureReportingMode::QtTest);
    QSignalSpy done(&view, &DiffView::comparisonFinished);
    QVERIFY(done.wait(30000));
    QCOMPARE(done.first().first().toBool(), false);
    QCOMPARE(view.model()->pendingCount(), 0);

    QMap<QString, QModelIndex> rows;
    tensorRows(*view.model(), {}, rows);
    const QJsonObject statuses = m_diff.value(QStringLiteral("statuses")).toObject();
    QCOMPARE(rows.size(), statuses.size());
    for (auto it = statuses.begin(); it != statuses.end(); ++it) {
        QVERIFY2(rows.contains(it.key()), qPrintable(it.key()));
        const QModelIndex i = rows.value(it.key());
        QCOMPARE(DiffModel::statusText(i.data(DiffModel::StatusRole).toInt()), it.value().toString());
    }
    const QJsonObject figures = m_diff.value(QStringLiteral("figures")).toObject();
    for (auto it = figures.begin(); it != figures.end(); ++it) {
        const QJsonObject f = it.value().toObject();
        const QModelIndex i = rows.value(it.key());
        const double rel = i.siblingAtColumn(DiffModel::RelL2Column).data(DiffModel::SortRole).toDouble();
        const double maxAbs = i.siblingAtColumn(DiffModel::MaxAbsColumn).data(DiffModel::SortRole).toDouble();
        QVERIFY2(close(rel, f.value(QStringLiteral("rel_l2")).toDouble()), qPrintable(it.key()));
        QVERIFY2(close(maxAbs, f.value(QStringLiteral("max_abs")).toDouble()), qPrintable(it.key()));
        const TensorDiff& d =
            view.model()->tensors()[static_cast<std::size_t>(i.data(DiffModel::TensorDiffRole).toInt())];
        QVERIFY(d.values);
        QVERIFY2(close(d.values->meanAbs(), f.value(QStringLiteral("mean_abs")).toDouble()),
                 qPrintable(it.key()));
    }
    // A module's change is over all its tensors together: sqrt(sum ||B - A||^2 / sum ||A||^2).
    const QModelIndex module = view.model()->indexForName(QStringLiteral("0"));
    QVERIFY(module.isValid());
    QVERIFY(close(module.siblingAtColumn(DiffModel::RelL2Column).data(DiffModel::SortRole).toDouble(),
                  m_diff.value(QStringLiteral("modules")).toObject().value(QStringLiteral("0")).toDouble()));
    QCOMPARE(DiffModel::statusText(module.data(DiffModel::StatusRole).toInt()), QStringLiteral("changed"));
    QCOMPARE(DiffModel::statusText(
                 view.model()->indexForName(QStringLiteral("frozen")).data(DiffModel::StatusRole).toInt()),
             QStringLiteral("same"));
    QCOMPARE(DiffModel::statusText(
                 view.model()->indexForName(QStringLiteral("new")).data(DiffModel::StatusRole).toInt()),
             QStringLiteral("added"));
    // Rows carry a status icon and, unless the same, a tinted background.
    QVERIFY(!rows.value(QStringLiteral("new.bias")).data(Qt::DecorationRole).value<QIcon>().isNull());
    QVERIFY(rows.value(QStringLiteral("old.bias")).data(Qt::BackgroundRole).isValid());
    QVERIFY(!rows.value(QStringLiteral("frozen.weight")).data(Qt::BackgroundRole).isValid());
    // Non-tensor values that differ are rows too, with both sides' values.
    const QJsonObject values = m_diff.value(QStringLiteral("values")).toObject();
    for (auto it = values.begin(); it != values.end(); ++it) {
        const QModelIndex i = view.model()->indexForName(it.key());
        QVERIFY2(i.isValid(), qPrintable(it.key()));
        QVERIFY(i.data(DiffModel::ValueRole).toInt() >= 0);
        QCOMPARE(DiffModel::statusText(i.data(DiffModel::StatusRole).toInt()),
                 it.value().toArray()[0].toString());
        QCOMPARE(i.siblingAtColumn(DiffModel::ShapeColumn).data().toString(),
                 it.value().toArray()[1].toString());
    }
    QCOMPARE(rows.value(QStringLiteral("reshaped.weight"))
                 .siblingAtColumn(DiffModel::ShapeColumn)
                 .data()
                 .toString(),
             QStringLiteral("[6, 2] → [3, 4]"));
}

void TestDiffView::sortByChange() {
    DiffView view(m_diff.value(QStringLiteral("a")).toString(), m_diff.value(QStringLiteral("b")).toString());
    QSignalSpy done(&view, &DiffView::comparisonFinished);
    QVERIFY(done.wait(30000));
    view.proxy()->sort(DiffModel::RelL2Column, Qt::DescendingOrder);
    // Top-level modules in descending order of their change: the proxy's order equals the figures' order.
    QList<double> got;
    for (int r = 0; r < view.proxy()->rowCount(); ++r)
        got << view.proxy()->index(r, DiffModel::RelL2Column).data(DiffModel::SortRole).toDouble();
    QList<double> sorted = got;
    std::sort(sorted.begin(), sorted.end(), std::greater<>());
    QCOMPARE(got, sorted);
    // The module that moved most, from PyTorch's sums of its tensors.
    QMap<QString, QPair<double, double>> sums;
    const QJsonObject figures = m_diff.value(QStringLiteral("figures")).toObject();
    for (auto it = figures.begin(); it != figures.end(); ++it) {
        auto& s = sums[it.key().section(QLatin1Char('.'), 0, 0)];
        s.first += it.value().toObject().value(QStringLiteral("diff_squares")).toDouble();
        s.second += it.value().toObject().value(QStringLiteral("a_squares")).toDouble();
    }
    QString most;
    double mostRel = -1;
    for (auto it = sums.begin(); it != sums.end(); ++it)
        if (std::sqrt(it->first / it->second) > mostRel) {
            mostRel = std::sqrt(it->first / it->second);
            most = it.key();
        }
    QCOMPARE(view.proxy()->index(0, 0).data().toString(), most);
    QVERIFY(close(got.front(), mostRel));
}

void TestDiffView::changedOnlyFilter() {
    DiffView view(m_diff.value(QStringLiteral("a")).toString(), m_diff.value(QStringLiteral("b")).toString());
    QSignalSpy done(&view, &DiffView::comparisonFinished);
    QVERIFY(done.wait(30000));
    view.setChangedOnly(true);
    QMap<QString, QModelIndex> shown;
    tensorRows(*view.proxy(), {}, shown);
    QStringList want;
    const QJsonObject statuses = m_diff.value(QStringLiteral("statuses")).toObject();
    for (auto it = statuses.begin(); it != statuses.end(); ++it)
        if (it.value().toString() != QLatin1String("same"))
            want << it.key();
    want.sort();
    QCOMPARE(shown.keys(), want);
    view.setChangedOnly(false);
    shown.clear();
    tensorRows(*view.proxy(), {}, shown);
    QCOMPARE(shown.size(), statuses.size());
}

void TestDiffView::overlayHistograms() {
    const QJsonObject overlay = m_diff.value(QStringLiteral("overlay")).toObject();
    DiffView view(m_diff.value(QStringLiteral("a")).toString(), m_diff.value(QStringLiteral("b")).toString());
    QSignalSpy loaded(&view, &DiffView::loadFinished);
    QVERIFY(loaded.wait(30000));
    view.setBins(overlay.value(QStringLiteral("bins")).toInt());
    QSignalSpy drawn(&view, &DiffView::histogramsFinished);
    QVERIFY(view.selectName(overlay.value(QStringLiteral("name")).toString()));
    QVERIFY(drawn.wait(30000));
    QVERIFY(view.histograms() && view.histograms()->histograms);
    const DiffHistograms& h = *view.histograms()->histograms;
    QVERIFY(close(h.lo, overlay.value(QStringLiteral("lo")).toDouble()));
    QVERIFY(close(h.hi, overlay.value(QStringLiteral("hi")).toDouble()));
    QCOMPARE(counts(h.a), counts(overlay.value(QStringLiteral("a")).toArray()));
    QCOMPARE(counts(h.b), counts(overlay.value(QStringLiteral("b")).toArray()));
    QVERIFY(close(h.deltaLo, overlay.value(QStringLiteral("diff_lo")).toDouble()));
    QVERIFY(close(h.deltaHi, overlay.value(QStringLiteral("diff_hi")).toDouble()));
    QCOMPARE(counts(h.delta), counts(overlay.value(QStringLiteral("diff")).toArray()));
    // Both sides on the upper axes, B - A on the lower ones.
    QCOMPARE(view.plot()->graphCount(), 3);
    QCOMPARE(view.plot()->graph(0)->dataCount(), overlay.value(QStringLiteral("bins")).toInt());
}

void TestDiffView::cancelStopsTheComparison() {
    DiffView view(m_diff.value(QStringLiteral("a")).toString(), m_diff.value(QStringLiteral("b")).toString());
    QSemaphore entered, release;
    view.setWorkerHook([&] {
        entered.release();
        release.acquire();
    });
    QSignalSpy loaded(&view, &DiffView::loadFinished);
    QVERIFY(loaded.wait(30000));
    QVERIFY(entered.tryAcquire(1, 30000)); // held before any value is read
    QVERIFY(view.isComparing());
    QVERIFY(view.model()->pendingCount() > 0); // the structure is shown already, values pending
    QSignalSpy done(&view, &DiffView::comparisonFinished);
    view.cancel();
    release.release();
    QVERIFY(done.wait(30000));
    QCOMPARE(done.first().first().toBool(), true);
    QVERIFY(!view.result()->result);
    QCOMPARE(view.model()->pendingCount(), 0);
    // Structure found before the cancel stays: the added and removed tensors.
    QCOMPARE(DiffModel::statusText(
                 view.model()->indexForName(QStringLiteral("new.bias")).data(DiffModel::StatusRole).toInt()),
             QStringLiteral("added"));
}

void TestDiffView::openedFromTheWindow() {
    MainWindow w;
    DiffView* view = w.openDiff(m_diff.value(QStringLiteral("a")).toString(),
                                m_diff.value(QStringLiteral("b")).toString());
    QCOMPARE(w.tabs()->currentWidget(), view);
    QCOMPARE(w.tabs()->tabText(w.tabs()->currentIndex()), QStringLiteral("diff_a.pt ⟷ diff_b.pt"));
    QSignalSpy done(view, &DiffView::comparisonFinished);
    QVERIFY(done.wait(30000));
}

void TestDiffView::hundredThousandTensors() {
    // Figures arrive in large batches here, announced as layout changes: the tester checks them too.
    const QString many =
        expected().value(QStringLiteral("many")).toObject().value(QStringLiteral("file")).toString();
    DiffView view(many, many);
    QAbstractItemModelTester proxyTester(view.proxy(),
                                         QAbstractItemModelTester::FailureReportingMode::QtTest);
    QSignalSpy done(&view, &DiffView::comparisonFinished);
    QVERIFY(done.wait(300000));
    QCOMPARE(done.first().first().toBool(), false);
    QCOMPARE(view.model()->tensors().size(), std::size_t(100000));
    QCOMPARE(view.model()->pendingCount(), 0);
    QCOMPARE(view.model()->rowCount(), 100000); // layer0 ... layer99999
    for (const TensorDiff& d : view.model()->tensors())
        QCOMPARE(d.status, DiffStatus::Same);
    QCOMPARE(DiffModel::statusText(view.model()->index(99999, 0).data(DiffModel::StatusRole).toInt()),
             QStringLiteral("same"));
    view.setChangedOnly(true);
    QCOMPARE(view.proxy()->rowCount(), 0);
}

void TestDiffView::prefixedCopyIsTheSame() {
    DiffView view(m_diff.value(QStringLiteral("b")).toString(),
                  m_diff.value(QStringLiteral("b_module")).toString());
    QAbstractItemModelTester tester(view.model(), QAbstractItemModelTester::FailureReportingMode::QtTest);
    QSignalSpy done(&view, &DiffView::comparisonFinished);
    QVERIFY(done.wait(30000));
    QCOMPARE(QString::fromStdString(view.loaded()->structure.alignment.prefixB), QStringLiteral("module."));
    QCOMPARE(qsizetype(view.model()->tensors().size()),
             qsizetype(m_diff.value(QStringLiteral("b_tensors")).toInt()));
    for (const TensorDiff& d : view.model()->tensors())
        QVERIFY2(d.status == DiffStatus::Same, d.name.c_str());
    // Tensors are shown under B's names, every module the same.
    const QModelIndex top = view.model()->index(0, 0);
    QCOMPARE(top.data().toString(), QStringLiteral("module"));
    QCOMPARE(DiffModel::statusText(top.data(DiffModel::StatusRole).toInt()), QStringLiteral("same"));

    // The user overrides the alignment: nothing stripped, so every tensor of A is removed and every one of B
    // added; then back to the automatic rule, and everything is the same again.
    const int n = m_diff.value(QStringLiteral("b_tensors")).toInt();
    QSignalSpy loaded(&view, &DiffView::loadFinished);
    view.setAlignment(std::string(), std::string());
    QVERIFY(loaded.wait(30000));
    QVERIFY(done.wait(30000));
    QCOMPARE(view.loaded()->structure.alignment.rule, KeyAlignment::Rule::Manual);
    int added = 0, removed = 0;
    for (const TensorDiff& d : view.model()->tensors()) {
        added += d.status == DiffStatus::Added;
        removed += d.status == DiffStatus::Removed;
    }
    QCOMPARE(added, n);
    QCOMPARE(removed, n);
    view.setAlignment(std::nullopt, std::nullopt);
    QVERIFY(loaded.wait(30000));
    QVERIFY(done.wait(30000));
    QCOMPARE(QString::fromStdString(view.loaded()->structure.alignment.prefixB), QStringLiteral("module."));
    for (const TensorDiff& d : view.model()->tensors())
        QVERIFY2(d.status == DiffStatus::Same, d.name.c_str());
}

QTEST_MAIN(TestDiffView)
#include "tst_diffview.moc"
