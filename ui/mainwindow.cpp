#include "mainwindow.h"

#include "checkpointview.h"
#include "diffview.h"
#include "exportdialog.h"
#include "timelineview.h"

#include <QAction>
#include <QApplication>
#include <QCloseEvent>
#include <QDragEnterEvent>
#include <QFileDialog>
#include <QFileInfo>
#include <QLabel>
#include <QMenuBar>
#include <QMessageBox>
#include <QMimeData>
#include <QSettings>
#include <QStackedWidget>
#include <QStatusBar>
#include <QTabWidget>

namespace ckpt::ui {
namespace {
constexpr int kMaxRecent = 10;
}

MainWindow::MainWindow(QWidget* parent)
    : QMainWindow(parent) {
    setWindowTitle(tr("Checkpoint Browser"));
    setAcceptDrops(true);
    m_tabs = new QTabWidget(this);
    m_tabs->setDocumentMode(true);
    m_tabs->setTabsClosable(true);
    m_tabs->setMovable(true);
    connect(m_tabs, &QTabWidget::tabCloseRequested, this, &MainWindow::closeTab);
    connect(m_tabs, &QTabWidget::currentChanged, this, &MainWindow::updateActions);
    // With no file open, the window says how to open one.
    m_stack = new QStackedWidget(this);
    auto* empty = new QLabel(tr("Open a checkpoint with File > Open (Ctrl+O), or drop one here."), m_stack);
    empty->setAlignment(Qt::AlignCenter);
    m_stack->addWidget(empty);
    m_stack->addWidget(m_tabs);
    setCentralWidget(m_stack);

    QMenu* file = menuBar()->addMenu(tr("&File"));
    file->addAction(tr("&Open…"), QKeySequence::Open, this, &MainWindow::openDialog);
    m_recentMenu = file->addMenu(tr("Open &Recent"));
    file->addAction(tr("Open R&un…"), this, &MainWindow::openRunDialog);
    file->addAction(tr("Co&mpare…"), this, [this] { compareDialog(false); });
    QAction* compareWith = file->addAction(tr("Compare &With…"), this, [this] { compareDialog(true); });
    QAction* reload = file->addAction(tr("Re&load"), QKeySequence::Refresh, this, [this] {
        if (auto* v = currentView())
            v->reload();
    });
    QAction* close = file->addAction(tr("&Close"), QKeySequence::Close, this,
                                     [this] { closeTab(m_tabs->currentIndex()); });
    QAction* exportAction = file->addAction(tr("&Export…"), QKeySequence(Qt::CTRL | Qt::SHIFT | Qt::Key_S),
                                            this, &MainWindow::exportDialog);
    file->addSeparator();
    file->addAction(tr("&Quit"), QKeySequence::Quit, this, &QWidget::close);

    QMenu* edit = menuBar()->addMenu(tr("&Edit"));
    QAction* copy = edit->addAction(tr("&Copy Full Name"), this, [this] {
        if (auto* v = currentView())
            v->copySelectedName();
    });
    QAction* find = edit->addAction(tr("&Filter…"), QKeySequence::Find, this, [this] {
        if (auto* v = currentView())
            v->focusFilter();
    });
    QMenu* view = menuBar()->addMenu(tr("&View"));
    QAction* stats = view->addAction(tr("&Statistics"), QKeySequence(Qt::CTRL | Qt::Key_T), this, [this] {
        if (auto* v = currentView())
            v->showStatistics();
    });
    QAction* values = view->addAction(tr("&Values"), QKeySequence(Qt::CTRL | Qt::Key_E), this, [this] {
        if (auto* v = currentView())
            v->showValues();
    });
    m_viewActions = {reload, copy, find, stats, values, compareWith, exportAction};
    m_closeAction = close; // closes any tab: a checkpoint, a comparison or a run

    QMenu* help = menuBar()->addMenu(tr("&Help"));
    help->addAction(tr("&About"), this, [this] {
        QMessageBox::about(
            this, tr("About Checkpoint Browser"),
            tr("<b>Checkpoint Browser</b><p>Looks inside model checkpoints without loading or running "
               "them: every file is read as data, read-only.</p>"));
    });

    QSettings settings;
    restoreGeometry(settings.value(QStringLiteral("window/geometry")).toByteArray());
    restoreState(settings.value(QStringLiteral("window/state")).toByteArray());
    if (!settings.contains(QStringLiteral("window/geometry")))
        resize(1280, 800);
    rebuildRecentMenu();
    updateActions();
    statusBar()->showMessage(tr("Ready"));
}

ExportDialog* MainWindow::exportDialog() {
    CheckpointView* v = currentView();
    if (!v || !v->loaded()) {
        statusBar()->showMessage(tr("Nothing to export: the checkpoint is not open yet"), 5000);
        return nullptr;
    }
    auto* dialog = new ExportDialog(v->loaded(), this);
    dialog->setAttribute(Qt::WA_DeleteOnClose);
    dialog->open();
    return dialog;
}

CheckpointView* MainWindow::currentView() const {
    return qobject_cast<CheckpointView*>(m_tabs->currentWidget());
}

CheckpointView* MainWindow::openFile(const QString& path) {
    const QString canonical = QFileInfo(path).absoluteFilePath();
    for (int i = 0; i < m_tabs->count(); ++i)
        if (auto* v = qobject_cast<CheckpointView*>(m_tabs->widget(i)); v && v->path() == canonical) {
            m_tabs->setCurrentIndex(i);
            return v;
        }
    auto* view = new CheckpointView(canonical, m_tabs);
    const int index = m_tabs->addTab(view, QFileInfo(canonical).fileName());
    m_tabs->setTabToolTip(index, canonical);
    m_tabs->setCurrentIndex(index);
    connect(view, &CheckpointView::statusMessage, this,
            [this](const QString& text) { statusBar()->showMessage(text); });
    connect(view, &CheckpointView::loadFinished, this, [this, canonical](bool ok) {
        if (ok)
            addRecent(canonical);
    });
    updateActions();
    return view;
}

DiffView* MainWindow::openDiff(const QString& pathA, const QString& pathB) {
    auto* view = new DiffView(pathA, pathB, m_tabs);
    const int index = m_tabs->addTab(view, view->title());
    m_tabs->setTabToolTip(index, view->pathA() + QStringLiteral("\n") + view->pathB());
    m_tabs->setCurrentIndex(index);
    connect(view, &DiffView::statusMessage, this,
            [this](const QString& text) { statusBar()->showMessage(text); });
    updateActions();
    return view;
}

TimelineView* MainWindow::openRun(const QStringList& paths) {
    QStringList absolute;
    for (const QString& p : paths)
        absolute << QFileInfo(p).absoluteFilePath();
    auto* view = new TimelineView(absolute, m_tabs);
    const int index = m_tabs->addTab(view, view->title());
    m_tabs->setTabToolTip(index, absolute.join(QLatin1Char('\n')));
    m_tabs->setCurrentIndex(index);
    connect(view, &TimelineView::statusMessage, this,
            [this](const QString& text) { statusBar()->showMessage(text); });
    updateActions();
    return view;
}

void MainWindow::compareDialog(bool withCurrent) {
    QSettings settings;
    const QString dir = settings.value(QStringLiteral("lastDirectory")).toString();
    const QString filter =
        tr("Checkpoints (*.pt *.pth *.bin *.ckpt *.tar *.pkl *.safetensors *.json *.index *.gguf "
           "*.npy *.npz *.h5 *.keras);;All files (*)");
    QString a;
    if (withCurrent && currentView())
        a = currentView()->path();
    else
        a = QFileDialog::getOpenFileName(this, tr("Compare: First Checkpoint (A)"), dir, filter);
    if (a.isEmpty())
        return;
    const QString b = QFileDialog::getOpenFileName(
        this, tr("Compare %1 With (B)").arg(QFileInfo(a).fileName()), QFileInfo(a).absolutePath(), filter);
    if (!b.isEmpty())
        openDiff(a, b);
}

void MainWindow::openRunDialog() {
    QSettings settings;
    const QString dir =
        QFileDialog::getExistingDirectory(this, tr("Open Run: Directory of Checkpoints"),
                                          settings.value(QStringLiteral("lastDirectory")).toString());
    if (!dir.isEmpty())
        openRun({dir});
}

void MainWindow::openDialog() {
    QSettings settings;
    const QStringList paths = QFileDialog::getOpenFileNames(
        this, tr("Open Checkpoint"), settings.value(QStringLiteral("lastDirectory")).toString(),
        tr("Checkpoints (*.pt *.pth *.bin *.ckpt *.tar *.pkl *.safetensors *.json *.index *.gguf *.npy "
           "*.npz);;"
           "All files (*)"));
    for (const QString& p : paths) {
        settings.setValue(QStringLiteral("lastDirectory"), QFileInfo(p).absolutePath());
        openFile(p);
    }
}

QStringList MainWindow::recentFiles() const {
    return QSettings().value(QStringLiteral("recentFiles")).toStringList();
}

void MainWindow::addRecent(const QString& path) {
    QStringList recent = recentFiles();
    recent.removeAll(path);
    recent.prepend(path);
    while (recent.size() > kMaxRecent)
        recent.removeLast();
    QSettings().setValue(QStringLiteral("recentFiles"), recent);
    rebuildRecentMenu();
}

void MainWindow::rebuildRecentMenu() {
    m_recentMenu->clear();
    const QStringList recent = recentFiles();
    for (const QString& path : recent)
        m_recentMenu->addAction(QFileInfo(path).fileName() + QStringLiteral("  —  ") +
                                    QFileInfo(path).absolutePath(),
                                this, [this, path] { openFile(path); });
    if (!recent.isEmpty()) {
        m_recentMenu->addSeparator();
        m_recentMenu->addAction(tr("Clear List"), this, [this] {
            QSettings().remove(QStringLiteral("recentFiles"));
            rebuildRecentMenu();
        });
    }
    m_recentMenu->setEnabled(!recent.isEmpty());
}

void MainWindow::closeTab(int index) {
    if (QWidget* w = m_tabs->widget(index)) {
        m_tabs->removeTab(index);
        w->deleteLater();
    }
    updateActions();
}

void MainWindow::updateActions() {
    const bool open = currentView() != nullptr;
    m_stack->setCurrentIndex(m_tabs->count() > 0 ? 1 : 0);
    for (QAction* a : m_viewActions)
        a->setEnabled(open);
    m_closeAction->setEnabled(m_tabs->count() > 0);
    if (auto* v = currentView())
        setWindowTitle(tr("%1 — Checkpoint Browser").arg(QFileInfo(v->path()).fileName()));
    else if (m_tabs->currentWidget())
        setWindowTitle(tr("%1 — Checkpoint Browser").arg(m_tabs->tabText(m_tabs->currentIndex())));
    else
        setWindowTitle(tr("Checkpoint Browser"));
}

void MainWindow::closeEvent(QCloseEvent* event) {
    QSettings settings;
    settings.setValue(QStringLiteral("window/geometry"), saveGeometry());
    settings.setValue(QStringLiteral("window/state"), saveState());
    QMainWindow::closeEvent(event);
}

void MainWindow::dragEnterEvent(QDragEnterEvent* event) {
    if (event->mimeData()->hasUrls())
        event->acceptProposedAction();
}

void MainWindow::dropEvent(QDropEvent* event) {
    for (const QUrl& url : event->mimeData()->urls())
        if (url.isLocalFile())
            openFile(url.toLocalFile());
    event->acceptProposedAction();
}

} // namespace ckpt::ui
