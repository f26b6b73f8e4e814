#include "checkpointview.h"

#include "detailspane.h"
#include "histogrampage.h"
#include "moduletreemodel.h"
#include "treeproxy.h"
#include "valuespage.h"

#include "io/error.h"
#include "report/report.h"

#include <QAction>
#include <QApplication>
#include <QClipboard>
#include <QComboBox>
#include <QFileInfo>
#include <QFileSystemWatcher>
#include <QFrame>
#include <QHBoxLayout>
#include <QHeaderView>
#include <QLabel>
#include <QLineEdit>
#include <QMenu>
#include <QPushButton>
#include <QSettings>
#include <QSplitter>
#include <QTabWidget>
#include <QTimer>
#include <QTreeView>
#include <QVBoxLayout>
#include <QtConcurrent/QtConcurrentRun>

namespace ckpt::ui {

CheckpointView::CheckpointView(const QString& path, QWidget* parent)
    : QWidget(parent)
    , m_path(path) {
    m_clock.start();
    auto* layout = new QVBoxLayout(this);
    layout->setContentsMargins(4, 4, 4, 4);

    m_changeBanner = new QFrame(this);
    m_changeBanner->setFrameShape(QFrame::StyledPanel);
    m_changeBanner->setAutoFillBackground(true);
    {
        auto* row = new QHBoxLayout(m_changeBanner);
        auto* text =
            new QLabel(tr("The file changed on disk since it was opened: values read now may be wrong or "
                          "missing. Reload it to see what it holds now."),
                       m_changeBanner);
        text->setWordWrap(true);
        row->addWidget(text, 1);
        auto* reloadButton = new QPushButton(tr("&Reload"), m_changeBanner);
        connect(reloadButton, &QPushButton::clicked, this, &CheckpointView::reload);
        row->addWidget(reloadButton);
    }
    m_changeBanner->hide();
    layout->addWidget(m_changeBanner);

    m_findingsBanner = new QLabel(this);
    m_findingsBanner->setWordWrap(true);
    m_findingsBanner->setTextFormat(Qt::RichText);
    m_findingsBanner->hide();
    connect(m_findingsBanner, &QLabel::linkActivated, this, [this] {
        m_tree->clearSelection();
        m_details->showNode(m_loaded, 0);
        m_tabs->setCurrentWidget(m_details);
    });
    layout->addWidget(m_findingsBanner);

    auto* filterRow = new QHBoxLayout;
    m_filter = new QLineEdit(this);
    m_filter->setPlaceholderText(tr("Filter names (Ctrl+F)"));
    m_filter->setClearButtonEnabled(true);
    m_filter->setAccessibleName(tr("Filter"));
    filterRow->addWidget(m_filter, 1);
    m_filterMode = new QComboBox(this);
    m_filterMode->addItem(tr("Substring"), static_cast<int>(TreeProxy::Mode::Substring));
    m_filterMode->addItem(tr("Glob"), static_cast<int>(TreeProxy::Mode::Glob));
    m_filterMode->addItem(tr("Regex"), static_cast<int>(TreeProxy::Mode::Regex));
    m_filterMode->setAccessibleName(tr("Filter mode"));
    filterRow->addWidget(m_filterMode);
    m_matches = new QLabel(this);
    filterRow->addWidget(m_matches);
    layout->addLayout(filterRow);

    auto* splitter = new QSplitter(Qt::Horizontal, this);
    splitter->setObjectName(QStringLiteral("mainSplitter"));
    m_model = new ModuleTreeModel(this);
    m_proxy = new TreeProxy(this);
    m_proxy->setSourceModel(m_model);
    m_tree = new QTreeView(splitter);
    m_tree->setModel(m_proxy);
    m_tree->setSortingEnabled(true);
    m_tree->sortByColumn(-1, Qt::AscendingOrder); // file order until a header is clicked
    m_tree->setUniformRowHeights(true);           // large trees lay out without measuring every row
    m_tree->setAlternatingRowColors(true);
    m_tree->setContextMenuPolicy(Qt::CustomContextMenu);
    m_tree->header()->setStretchLastSection(false);
    m_tree->header()->setSectionResizeMode(ModuleTreeModel::NameColumn, QHeaderView::Interactive);
    m_tree->setAccessibleName(tr("Module tree"));
    m_loadingLabel = new QLabel(tr("Opening %1…").arg(QFileInfo(path).fileName()), this);
    m_loadingLabel->setAlignment(Qt::AlignCenter);
    layout->addWidget(m_loadingLabel);

    m_tabs = new QTabWidget(splitter);
    m_details = new DetailsPane(m_tabs);
    m_histogram = new HistogramPage(m_tabs);
    m_values = new ValuesPage(m_tabs);
    m_tabs->addTab(m_details, tr("&Details"));
    m_tabs->addTab(m_histogram, tr("&Statistics"));
    m_tabs->addTab(m_values, tr("&Values"));
    splitter->addWidget(m_tree);
    splitter->addWidget(m_tabs);
    splitter->setStretchFactor(0, 3);
    splitter->setStretchFactor(1, 2);
    splitter->hide();
    layout->addWidget(splitter, 1);

    auto* copy = new QAction(tr("Copy Full Name"), this);
    copy->setShortcut(QKeySequence::Copy);
    copy->setShortcutContext(Qt::WidgetWithChildrenShortcut);
    m_tree->addAction(copy);
    connect(copy, &QAction::triggered, this, &CheckpointView::copySelectedName);
    connect(m_tree, &QTreeView::customContextMenuRequested, this, [this, copy](const QPoint& pos) {
        if (!m_tree->indexAt(pos).isValid())
            return;
        QMenu menu(this);
        menu.addAction(copy);
        menu.addAction(tr("Show Statistics"), this, &CheckpointView::showStatistics);
        menu.addAction(tr("Show Values"), this, &CheckpointView::showValues);
        menu.exec(m_tree->viewport()->mapToGlobal(pos));
    });
    connect(m_details, &DetailsPane::tensorLinkActivated, this, &CheckpointView::selectName);
    connect(m_tabs, &QTabWidget::currentChanged, this, &CheckpointView::updateStatistics);

    m_filterTimer = new QTimer(this);
    m_filterTimer->setSingleShot(true);
    m_filterTimer->setInterval(150); // typing re-filters once the user pauses
    connect(m_filterTimer, &QTimer::timeout, this, &CheckpointView::applyFilter);
    connect(m_filter, &QLineEdit::textChanged, m_filterTimer, qOverload<>(&QTimer::start));
    connect(m_filterMode, &QComboBox::currentIndexChanged, this, &CheckpointView::applyFilter);
    connect(m_proxy, &TreeProxy::matchCountChanged, this, [this](int count) {
        if (count < 0)
            m_matches->clear();
        else
            m_matches->setText(tr("%n match(es)", nullptr, count));
    });

    // A read that failed may be the first sign of a file saved over: look at once, not at the next poll.
    connect(m_histogram, &HistogramPage::finished, this, &CheckpointView::checkFileOnDisk);
    m_fsWatcher = new QFileSystemWatcher(this);
    connect(m_fsWatcher, &QFileSystemWatcher::fileChanged, this, &CheckpointView::checkFileOnDisk);
    m_pollTimer = new QTimer(this);
    m_pollTimer->setInterval(2000); // a file replaced by rename is not always reported by the watcher
    connect(m_pollTimer, &QTimer::timeout, this, &CheckpointView::checkFileOnDisk);

    startLoading();
}

CheckpointView::~CheckpointView() {
    if (m_watcher)
        m_watcher->waitForFinished();
}

void CheckpointView::startLoading() {
    m_watcher = new QFutureWatcher<LoadedPtr>(this);
    connect(m_watcher, &QFutureWatcher<LoadedPtr>::finished, this, &CheckpointView::onLoaded);
    const QString path = m_path;
    m_watcher->setFuture(QtConcurrent::run([path]() -> LoadedPtr {
        try {
            return loadCheckpoint(path);
        } catch (const Error& e) {
            auto failed = std::make_shared<LoadedCheckpoint>();
            failed->path = QString::fromStdString(printable(e.what()));
            return failed; // no checkpoint: `path` carries the message
        } catch (const std::exception& e) {
            auto failed = std::make_shared<LoadedCheckpoint>();
            failed->path = path + QStringLiteral(": ") + QString::fromLocal8Bit(e.what());
            return failed;
        }
    }));
}

void CheckpointView::onLoaded() {
    LoadedPtr result = m_watcher->result();
    m_watcher->deleteLater();
    m_watcher = nullptr;
    if (!result->checkpoint) {
        m_error = result->path;
        m_loadingLabel->setText(tr("Cannot open this file:\n%1").arg(m_error));
        m_loadingLabel->setWordWrap(true);
        m_loadingLabel->show();
        Q_EMIT loadFinished(false);
        return;
    }
    m_error.clear();
    m_loaded = result;
    m_histogram->clear();
    m_values->clear();
    m_statsNode = -1;
    m_model->setCheckpoint(m_loaded);
    m_loadingLabel->hide();
    m_tree->parentWidget()->show();
    m_changeBanner->hide();
    if (!m_sized) { // first load: widths that fit typical names and numbers; the user's changes are kept
                    // after
        m_sized = true;
        const int em = fontMetrics().horizontalAdvance(QLatin1Char('M'));
        const int widths[] = {21 * em, 10 * em, 6 * em, 5 * em, 10 * em, 7 * em};
        for (int c = 0; c < ModuleTreeModel::ColumnCount; ++c)
            m_tree->header()->resizeSection(c, widths[c]);
        int tree = 0;
        for (int w : widths)
            tree += w;
        auto* splitter = static_cast<QSplitter*>(m_tree->parentWidget());
        const QByteArray saved = QSettings().value(QStringLiteral("view/splitter")).toByteArray();
        if (saved.isEmpty() || !splitter->restoreState(saved))
            splitter->setSizes({tree + 2 * em, std::max(splitter->width() - tree - 2 * em, 30 * em)});
        connect(splitter, &QSplitter::splitterMoved, this,
                [splitter] { QSettings().setValue(QStringLiteral("view/splitter"), splitter->saveState()); });
    }
    if (m_model->rowCount() <= 50)
        m_tree->expandToDepth(0);
    connect(m_tree->selectionModel(), &QItemSelectionModel::currentChanged, this,
            &CheckpointView::onSelectionChanged, Qt::UniqueConnection);

    int security = 0;
    for (const auto& f : m_loaded->checkpoint->findings)
        security += f.severity == Severity::Security;
    if (security) {
        m_findingsBanner->setText(tr("<b>%n security finding(s):</b> this file references code outside the "
                                     "data allow-list. Nothing was "
                                     "imported or run. <a href='#'>Show</a>",
                                     nullptr, security));
        m_findingsBanner->show();
    } else {
        m_findingsBanner->hide();
    }
    if (!m_fsWatcher->files().contains(m_path))
        m_fsWatcher->addPath(m_path);
    m_pollTimer->start();
    applyFilter();
    if (!m_reselect.isEmpty())
        selectName(m_reselect);
    else
        m_details->showNode(m_loaded, 0);
    m_loadMs = m_clock.elapsed();
    Q_EMIT statusMessage(tr("%1 tensors, %2 — opened in %3 ms")
                             .arg(QString::fromStdString(groupedNumber(m_loaded->checkpoint->tensors.size())),
                                  QString::fromStdString(humanBytes(m_loaded->checkpoint->storageBytes())))
                             .arg(m_loadMs));
    Q_EMIT loadFinished(true);
}

void CheckpointView::reload() {
    if (m_watcher)
        return;
    m_reselect = selectedName();
    m_clock.restart();
    m_histogram->clear();
    m_values->clear();
    m_model->setCheckpoint(nullptr);
    m_loaded.reset();
    m_pollTimer->stop();
    m_changeBanner->hide();
    m_loadingLabel->setText(tr("Reloading…"));
    m_loadingLabel->show();
    startLoading();
}

void CheckpointView::checkFileOnDisk() {
    if (!m_loaded || m_changeBanner->isVisible())
        return;
    for (const auto& source : m_loaded->checkpoint->sources)
        if (source.file->changedOnDisk()) {
            m_histogram->cancel();
            m_changeBanner->show();
            Q_EMIT statusMessage(tr("%1 changed on disk").arg(m_path));
            return;
        }
}

bool CheckpointView::changeBannerVisible() const {
    return !m_changeBanner->isHidden();
}

int CheckpointView::currentNode() const {
    const QModelIndex index = m_tree->currentIndex();
    return index.isValid() ? index.data(ModuleTreeModel::NodeRole).toInt() : 0;
}

QString CheckpointView::selectedName() const {
    const QModelIndex index = m_tree->currentIndex();
    return index.isValid() ? index.data(ModuleTreeModel::FullNameRole).toString() : QString();
}

bool CheckpointView::selectName(const QString& fullName) {
    if (!m_loaded)
        return false;
    const int node = m_loaded->tree.find(fullName.toStdString());
    if (node <= 0)
        return false;
    QModelIndex index = m_proxy->mapFromSource(m_model->indexForNode(node));
    if (!index.isValid()) { // filtered out: show everything again
        m_filter->clear();
        applyFilter();
        index = m_proxy->mapFromSource(m_model->indexForNode(node));
    }
    m_tree->setCurrentIndex(index);
    m_tree->scrollTo(index);
    return true;
}

void CheckpointView::copySelectedName() {
    const QString name = selectedName();
    if (!name.isEmpty())
        QApplication::clipboard()->setText(name);
}

void CheckpointView::focusFilter() {
    m_filter->setFocus();
    m_filter->selectAll();
}

void CheckpointView::showStatistics() {
    m_tabs->setCurrentWidget(m_histogram);
}

void CheckpointView::showValues() {
    m_tabs->setCurrentWidget(m_values);
}

void CheckpointView::applyFilter() {
    m_filterTimer->stop();
    const auto mode = static_cast<TreeProxy::Mode>(m_filterMode->currentData().toInt());
    m_proxy->setFilter(m_filter->text(), mode);
    m_filter->setToolTip(m_proxy->filterIsValid() ? QString() : m_proxy->filterError());
    QPalette p = m_filter->palette();
    p.setColor(QPalette::Text,
               m_proxy->filterIsValid() ? palette().color(QPalette::Text) : QColor(0xc0, 0x39, 0x2b));
    m_filter->setPalette(p);
    if (!m_filter->text().isEmpty() && m_proxy->matchCount() >= 0 && m_proxy->matchCount() <= 2000)
        m_tree->expandAll();
}

void CheckpointView::onSelectionChanged() {
    if (!m_loaded)
        return;
    const int node = currentNode();
    m_details->showNode(m_loaded, node);
    const ModuleNode& n = m_loaded->tree.node(node);
    if (n.tensor >= 0)
        m_values->showTensor(m_loaded, n.tensor);
    else
        m_values->clear();
    checkFileOnDisk();
    updateStatistics();
}

void CheckpointView::updateStatistics() {
    // Values are read only for the page in view: browsing the tree reads nothing.
    if (!m_loaded || m_tabs->currentWidget() != m_histogram)
        return;
    const int node = currentNode();
    if (node == m_statsNode)
        return;
    m_statsNode = node;
    const ModuleNode& n = m_loaded->tree.node(node);
    const QString name = node > 0 ? m_model->fullName(node) : QFileInfo(m_path).fileName();
    std::vector<int> tensors = m_loaded->tree.tensorsUnder(node);
    const QString title =
        n.tensor >= 0 && tensors.size() == 1
            ? name
            : tr("%1 — all %n tensor(s) together", nullptr, static_cast<int>(tensors.size())).arg(name);
    m_histogram->showTensors(m_loaded, std::move(tensors), title);
}

} // namespace ckpt::ui
