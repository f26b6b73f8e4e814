// The export dialog offscreen, on the checkpoint tests/ui/make_fixtures.py writes with real PyTorch: the
// check boxes over the module tree, the live preview, and an export whose result real PyTorch loads and
// compares with the same selection, renaming and cast done in PyTorch.

#include "checkpointview.h"
#include "exportdialog.h"
#include "loadedcheckpoint.h"
#include "mainwindow.h"

#include "formats/open.h"

#include <QAbstractItemModelTester>
#include <QApplication>
#include <QCheckBox>
#include <QComboBox>
#include <QDir>
#include <QFile>
#include <QJsonDocument>
#include <QJsonObject>
#include <QLabel>
#include <QLineEdit>
#include <QProcess>
#include <QPushButton>
#include <QSemaphore>
#include <QSignalSpy>
#include <QTemporaryDir>
#include <QTest>
#include <QTreeView>
#include <QTreeWidget>

using namespace ckpt;
using namespace ckpt::ui;

namespace {

QString fixturePath() {
    QFile f(qEnvironmentVariable("CKPT_GUI_FIXTURES") + QStringLiteral("/gui_fixture.json"));
    if (!f.open(QIODevice::ReadOnly))
        qFatal("fixture missing: run tests/ui/make_fixtures.py (CTest does it as a fixture step)");
    return QJsonDocument::fromJson(f.readAll()).object().value(QStringLiteral("file")).toString();
}

QStringList previewKeys(const ExportDialog& d) {
    QStringList keys;
    for (int i = 0; i < d.previewList()->topLevelItemCount(); ++i)
        keys << d.previewList()->topLevelItem(i)->text(0);
    return keys;
}

QString previewDtype(const ExportDialog& d, const QString& key) {
    for (int i = 0; i < d.previewList()->topLevelItemCount(); ++i)
        if (d.previewList()->topLevelItem(i)->text(0) == key)
            return d.previewList()->topLevelItem(i)->text(2);
    return {};
}

// Waits for the preview of the latest change.
void settle(ExportDialog& d) {
    QSignalSpy spy(&d, &ExportDialog::previewUpdated);
    QVERIFY(spy.wait(10000));
    // later edits restart the timer: take the last preview
    while (spy.wait(400)) {
    }
}

} // namespace

class TestExport : public QObject {
    Q_OBJECT
private Q_SLOTS:
    void initTestCase() {
        m_loaded = loadCheckpoint(fixturePath());
        QVERIFY(m_loaded);
    }

    void selectionModel() {
        ExportSelectionModel model(m_loaded);
        QAbstractItemModelTester tester(&model, QAbstractItemModelTester::FailureReportingMode::QtTest);
        const auto& ck = *m_loaded->checkpoint;
        QVERIFY(model.checkedNames().empty()); // everything
        QCOMPARE(model.checkedTensorCount(), static_cast<int>(ck.tensors.size()));
        const QModelIndex opt = model.indexForNode(m_loaded->tree.find("optimizer"));
        QVERIFY(opt.isValid());
        QSignalSpy changed(&model, &ExportSelectionModel::selectionChanged);
        QVERIFY(model.setData(opt, Qt::Unchecked, Qt::CheckStateRole));
        QCOMPARE(changed.count(), 1);
        QCOMPARE(opt.data(Qt::CheckStateRole).toInt(), int(Qt::Unchecked));
        const auto names = model.checkedNames();
        std::size_t optimizerTensors = 0, others = 0;
        for (const auto& t : ck.tensors)
            (t.name.rfind("optimizer.", 0) == 0 ? optimizerTensors : others) += 1;
        QVERIFY(optimizerTensors > 0);
        QCOMPARE(model.checkedTensorCount(), static_cast<int>(others));
        for (const auto& n : names)
            QVERIFY2(n.rfind("optimizer.", 0) != 0, n.c_str());
        // a module of the optimizer partly ticked again makes its parent partly checked
        const QModelIndex child = model.index(0, 0, opt);
        QVERIFY(model.setData(child, Qt::Checked, Qt::CheckStateRole));
        QVERIFY(model.rowCount(opt) > 1); // state and param_groups
        QCOMPARE(opt.data(Qt::CheckStateRole).toInt(), int(Qt::PartiallyChecked));
        QCOMPARE(model.index(0, 0).parent(), QModelIndex());
        const QModelIndex root0 = model.indexForNode(m_loaded->tree.find("model"));
        QCOMPARE(root0.data(Qt::CheckStateRole).toInt(), int(Qt::Checked));
        model.setAllChecked(false);
        QCOMPARE(model.checkedTensorCount(), 0);
        model.setAllChecked(true);
        QVERIFY(model.checkedNames().empty());
    }

    void previewFollowsOptions() {
        ExportDialog d(m_loaded);
        settle(d);
        const auto& ck = *m_loaded->checkpoint;
        QCOMPARE(previewKeys(d).size(), static_cast<int>(ck.tensors.size()));
        QVERIFY(d.exportButton()->isEnabled());

        d.presetBox()->setCurrentIndex(1); // weights only
        settle(d);
        QStringList expected;
        for (const auto& t : ck.tensors)
            if (t.name.rfind("optimizer.", 0) != 0)
                expected << QString::fromStdString(t.name);
        QCOMPARE(previewKeys(d), expected);
        QVERIFY(d.summaryLabel()->text().contains(
            QStringLiteral("optimizer, scheduler or EMA tensors left out")));

        d.stripEdit()->setText(QStringLiteral("model."));
        d.dtypeBox()->setCurrentIndex(d.dtypeBox()->findText(QStringLiteral("bfloat16")));
        settle(d);
        QVERIFY(previewKeys(d).contains(QStringLiteral("layers.0.norm.weight")));
        QCOMPARE(previewDtype(d, QStringLiteral("layers.0.norm.weight")), QStringLiteral("float32")); // kept
        QCOMPARE(previewDtype(d, QStringLiteral("layers.0.attn.weight")), QStringLiteral("bfloat16"));

        d.renameEdit()->setText(QStringLiteral("^layers\\.(\\d+)\\.=blocks.$1."));
        settle(d);
        QVERIFY(previewKeys(d).contains(QStringLiteral("blocks.0.norm.weight")));
        QVERIFY(!previewKeys(d).contains(QStringLiteral("layers.0.norm.weight")));
        d.renameEdit()->setText(QStringLiteral("^layers\\.\\d+\\.=x."));
        settle(d);
        QVERIFY2(d.summaryLabel()->text().contains(QStringLiteral("would both be written as")),
                 qPrintable(d.summaryLabel()->text()));
        QVERIFY(!d.exportButton()->isEnabled());
        d.renameEdit()->clear();
        d.includeEdit()->setText(QStringLiteral("re:("));
        settle(d);
        QVERIFY2(d.summaryLabel()->text().contains(QStringLiteral("invalid regular expression")),
                 qPrintable(d.summaryLabel()->text()));
        QVERIFY(!d.exportButton()->isEnabled());
        d.includeEdit()->setText(QStringLiteral("nothing.*"));
        settle(d);
        QVERIFY(d.summaryLabel()->text().contains(QStringLiteral("no tensor is selected")));
        QVERIFY(!d.exportButton()->isEnabled());
        d.includeEdit()->clear();
        d.deviceMapEdit()->setText(QStringLiteral("cpu"));
        settle(d);
        QVERIFY(d.summaryLabel()->text().contains(QStringLiteral("is not of the form FROM=TO")));
        d.deviceMapEdit()->setText(QStringLiteral("cpu=cuda:1"));
        settle(d);
        QCOMPARE(d.previewList()->topLevelItem(0)->text(3), QStringLiteral("cuda:1"));
        QVERIFY(d.exportButton()->isEnabled());

        if (const QString shot = qEnvironmentVariable("CKPT_EXPORT_SCREENSHOT"); !shot.isEmpty()) {
            d.deviceMapEdit()->setText(QStringLiteral("*=cpu"));
            d.excludeEdit()->setText(QStringLiteral("cube*"));
            d.selectionView()->expand(d.selectionModel()->indexForNode(m_loaded->tree.find("model")));
            d.selectionView()->expand(d.selectionModel()->indexForNode(m_loaded->tree.find("model.layers")));
            d.selectionModel()->setData(
                d.selectionModel()->indexForNode(m_loaded->tree.find("model.layers.11")), Qt::Unchecked,
                Qt::CheckStateRole);
            d.show();
            settle(d);
            QVERIFY(d.grab().save(shot));
        }
    }

    void exportLoadsInPyTorch() {
        QTemporaryDir dir;
        ExportDialog d(m_loaded);
        settle(d);
        d.selectionModel()->setAllChecked(false);
        QVERIFY(d.selectionModel()->setData(d.selectionModel()->indexForNode(m_loaded->tree.find("model")),
                                            Qt::Checked, Qt::CheckStateRole));
        d.stripEdit()->setText(QStringLiteral("model."));
        d.dtypeBox()->setCurrentIndex(d.dtypeBox()->findText(QStringLiteral("bfloat16")));
        d.keepDtypeEdit()->setText(QStringLiteral("*norm*"));
        const QString dst = dir.filePath(QStringLiteral("weights.pt"));
        d.setDestination(dst);
        settle(d);
        QVERIFY(d.exportButton()->isEnabled());
        QSignalSpy done(&d, &ExportDialog::exportFinished);
        QTest::mouseClick(d.exportButton(), Qt::LeftButton);
        QVERIFY(d.isExporting() || done.count() == 1);
        QVERIFY(done.count() == 1 || done.wait(60000));
        QVERIFY2(done.at(0).at(0).toBool(), qPrintable(done.at(0).at(1).toString()));
        QVERIFY(d.statusLabel()->text().contains(QStringLiteral("verified")));

        // Real PyTorch loads it with weights_only=True and finds what the same operations give in PyTorch.
        const QString script = QStringLiteral(
            "import sys, torch\n"
            "src = torch.load(sys.argv[1])['model']\n"
            "exp = {k[len('model.'):] if k.startswith('model.') else k: v for k, v in src.items()}\n"
            "exp = {k: (v.to(torch.bfloat16) if v.is_floating_point() and 'norm' not in k else v) for k, v "
            "in exp.items()}\n"
            "got = torch.load(sys.argv[2], weights_only=True)\n"
            "assert list(got) == list(exp), (list(got), list(exp))\n"
            "for k in exp:\n"
            "    assert got[k].dtype == exp[k].dtype and torch.equal(got[k], exp[k]), k\n"
            "print('same', len(got))\n");
        QProcess py;
        py.start(QStringLiteral("/usr/bin/python3"), {QStringLiteral("-c"), script, fixturePath(), dst});
        QVERIFY(py.waitForFinished(120000));
        const QString out = QString::fromUtf8(py.readAllStandardOutput());
        QVERIFY2(py.exitCode() == 0 && out.startsWith(QStringLiteral("same ")),
                 qPrintable(out + QString::fromUtf8(py.readAllStandardError())));
    }

    void cancelLeavesNothing() {
        QTemporaryDir dir;
        ExportDialog d(m_loaded);
        settle(d);
        const QString dst = dir.filePath(QStringLiteral("cancelled.safetensors"));
        d.formatBox()->setCurrentIndex(1);
        d.setDestination(dst);
        settle(d);
        QSemaphore entered, release;
        d.setWorkerProgressHook([&] {
            entered.release();
            release.acquire();
        });
        QSignalSpy done(&d, &ExportDialog::exportFinished);
        d.startExport();
        QVERIFY(d.isExporting());
        QCOMPARE(d.cancelButton()->text(), QStringLiteral("Cancel"));
        QVERIFY(entered.tryAcquire(1, 30000)); // the worker is inside the export, held
        QTest::mouseClick(d.cancelButton(), Qt::LeftButton);
        release.release(1000);
        QVERIFY(done.wait(30000));
        QCOMPARE(done.at(0).at(0).toBool(), false);
        QCOMPARE(done.at(0).at(1).toString(), QStringLiteral("Export cancelled; nothing was written."));
        QVERIFY(!QFile::exists(dst));
        QCOMPARE(QDir(dir.path()).entryList(QDir::Files | QDir::Hidden).size(), 0);
        QCOMPARE(d.cancelButton()->text(), QStringLiteral("Close"));
    }

    void fileMenuOpensDialog() {
        MainWindow w;
        QVERIFY(!w.exportDialog()); // nothing open
        auto* view = w.openFile(fixturePath());
        QVERIFY(view);
        QTRY_VERIFY_WITH_TIMEOUT(view->loaded() != nullptr, 30000);
        ExportDialog* d = w.exportDialog();
        QVERIFY(d);
        QVERIFY(d->isVisible());
        QVERIFY(d->windowTitle().contains(QStringLiteral("gui_fixture.pt")));
        d->close();
    }

private:
    LoadedPtr m_loaded;
};

QTEST_MAIN(TestExport)
#include "tst_export.moc"
