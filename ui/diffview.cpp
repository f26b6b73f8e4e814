#include "diffview.h"

#include "diffmodel.h"
#include "plotstyle.h"

#include "io/error.h"
#include "model/dtype.h"
#include "report/report.h"

#include <qcustomplot.h>

#include <QCheckBox>
#include <QDialog>
#include <QDialogButtonBox>
#include <QFileInfo>
#include <QFormLayout>
#include <QHBoxLayout>
#include <QHeaderView>
#include <QLabel>
#include <QLineEdit>
#include <QProgressBar>
#include <QPushButton>
#include <QSpinBox>
#include <QSplitter>
#include <QTimer>
#include <QToolButton>
#include <QTreeView>
#include <QVBoxLayout>
#include <QtConcurrent/QtConcurrentRun>

#include <cmath>

namespace ckpt::ui {
namespace {

const QColor kColorA(31, 119, 180);     // blue
const QColor kColorB(255, 127, 14);     // orange
const QColor kColorDelta(117, 84, 166); // purple

QString number(double v) {
    return std::isnan(v) ? QStringLiteral("–") : QString::number(v, 'g', 6);
}

// A histogram as a stepped outline with a translucent fill.
void stepGraph(QCPGraph* g, const Histogram& h, const QColor& color) {
    QVector<double> keys, values;
    for (std::size_t i = 0; i < h.counts.size(); ++i) {
        keys << (h.edges[i] + h.edges[i + 1]) / 2;
        values << static_cast<double>(h.counts[i]);
    }
    g->setData(keys, values, true);
    g->setLineStyle(QCPGraph::lsStepCenter);
    g->setPen(QPen(color, 2));
    QColor fill = color;
    fill.setAlpha(70);
    g->setBrush(fill);
}

double peakOf(const Histogram& h) {
    double p = 1;
    for (const auto c : h.counts)
        p = std::max(p, static_cast<double>(c));
    return p;
}

} // namespace

DiffView::DiffView(const QString& pathA, const QString& pathB, QWidget* parent)
    : QWidget(parent)
    , m_pathA(QFileInfo(pathA).absoluteFilePath())
    , m_pathB(QFileInfo(pathB).absoluteFilePath()) {
    auto* layout = new QVBoxLayout(this);
    layout->setContentsMargins(4, 4, 4, 4);
    m_header = new QLabel(tr("Opening both checkpoints…"), this);
    m_header->setTextFormat(Qt::RichText);
    m_header->setWordWrap(true);
    m_header->setTextInteractionFlags(Qt::TextSelectableByMouse);
    layout->addWidget(m_header);

    auto* controls = new QHBoxLayout;
    m_changedOnly = new QCheckBox(tr("C&hanged only"), this);
    m_changedOnly->setToolTip(tr("Hide tensors that are the same in both files"));
    controls->addWidget(m_changedOnly);
    m_alignButton = new QToolButton(this);
    m_alignButton->setText(tr("&Alignment…"));
    m_alignButton->setToolTip(
        tr("Choose the prefixes stripped from the names of each side before they are matched"));
    m_alignButton->setEnabled(false); // once both files are open
    controls->addWidget(m_alignButton);
    controls->addStretch();
    m_progressBar = new QProgressBar(this);
    m_progressBar->setRange(0, 1000);
    m_progressBar->setMaximumWidth(240);
    m_progressBar->setFormat(tr("comparing values… %p%"));
    m_progressBar->hide();
    controls->addWidget(m_progressBar);
    m_cancelButton = new QToolButton(this);
    m_cancelButton->setText(tr("Cancel"));
    m_cancelButton->hide();
    controls->addWidget(m_cancelButton);
    layout->addLayout(controls);

    auto* splitter = new QSplitter(Qt::Horizontal, this);
    m_model = new DiffModel(this);
    m_proxy = new DiffProxy(this);
    m_proxy->setSourceModel(m_model);
    m_tree = new QTreeView(splitter);
    m_tree->setModel(m_proxy);
    m_tree->setSortingEnabled(true);
    m_tree->sortByColumn(-1, Qt::AscendingOrder); // file order until a header is clicked
    m_tree->setUniformRowHeights(true);
    m_tree->setAccessibleName(tr("Merged tree of both checkpoints"));
    m_tree->header()->setStretchLastSection(false);
    splitter->addWidget(m_tree);

    auto* right = new QWidget(splitter);
    auto* rightLayout = new QVBoxLayout(right);
    rightLayout->setContentsMargins(0, 0, 0, 0);
    auto* selRow = new QHBoxLayout;
    m_selTitle = new QLabel(right);
    m_selTitle->setTextFormat(Qt::PlainText);
    QFont bold = m_selTitle->font();
    bold.setBold(true);
    m_selTitle->setFont(bold);
    selRow->addWidget(m_selTitle, 1);
    selRow->addWidget(new QLabel(tr("Bins:"), right));
    m_bins = new QSpinBox(right);
    m_bins->setRange(2, 1000);
    m_bins->setValue(48);
    m_bins->setAccessibleName(tr("Histogram bins"));
    selRow->addWidget(m_bins);
    rightLayout->addLayout(selRow);
    m_figures = new QLabel(right);
    m_figures->setTextFormat(Qt::RichText);
    m_figures->setTextInteractionFlags(Qt::TextSelectableByMouse);
    m_figures->setWordWrap(true);
    rightLayout->addWidget(m_figures);
    m_plot = new QCustomPlot(right);
    m_plot->setMinimumSize(360, 320);
    m_plot->plotLayout()->clear();
    const QPalette pal = palette();
    m_plot->setBackground(pal.brush(QPalette::Base));
    for (int k = 0; k < 2; ++k) {
        auto* rect = new QCPAxisRect(m_plot);
        m_plot->plotLayout()->addElement(k, 0, rect);
        rect->axis(QCPAxis::atLeft)->setLabel(tr("count"));
        rect->axis(QCPAxis::atBottom)->setLabel(k == 0 ? tr("value") : tr("B − A"));
        stylePlotAxes(rect->axes(), pal);
    }
    m_plot->legend = new QCPLegend;
    m_plot->axisRect(0)->insetLayout()->addElement(m_plot->legend, Qt::AlignTop | Qt::AlignRight);
    m_plot->legend->setLayer(QStringLiteral("legend"));
    m_plot->legend->setBrush(pal.brush(QPalette::Base));
    m_plot->legend->setTextColor(pal.color(QPalette::Text));
    m_plot->legend->setVisible(false); // until a tensor is selected
    rightLayout->addWidget(m_plot, 1);
    splitter->addWidget(right);
    splitter->setStretchFactor(0, 3);
    splitter->setStretchFactor(1, 2);
    layout->addWidget(splitter, 1);

    m_drainTimer = new QTimer(this);
    m_drainTimer->setInterval(100); // figures land in the tree ten times a second
    connect(m_drainTimer, &QTimer::timeout, this, &DiffView::drain);
    m_restart = new QTimer(this);
    m_restart->setSingleShot(true);
    m_restart->setInterval(250);
    connect(m_restart, &QTimer::timeout, this, &DiffView::startHistograms);
    connect(m_bins, &QSpinBox::valueChanged, m_restart, qOverload<>(&QTimer::start));
    connect(m_changedOnly, &QCheckBox::toggled, this, [this](bool on) {
        m_proxy->setChangedOnly(on);
        if (on && m_model->tensors().size() <= 2000)
            m_tree->expandAll();
    });
    connect(m_cancelButton, &QToolButton::clicked, this, &DiffView::cancel);
    connect(m_alignButton, &QToolButton::clicked, this, &DiffView::alignmentDialog);
    connect(m_tree->selectionModel(), &QItemSelectionModel::currentChanged, this, &DiffView::onSelection);

    const QString a = m_pathA, b = m_pathB;
    m_loadWatcher = new QFutureWatcher<LoadedDiffPtr>(this);
    connect(m_loadWatcher, &QFutureWatcher<LoadedDiffPtr>::finished, this, &DiffView::onLoaded);
    m_loadWatcher->setFuture(QtConcurrent::run([a, b]() -> LoadedDiffPtr {
        auto out = std::make_shared<LoadedDiff>();
        try {
            out->a = loadCheckpoint(a);
            out->b = loadCheckpoint(b);
            DiffOptions structureOnly;
            structureOnly.compareValues = false;
            if (auto r = diffCheckpoints(out->a->checkpoint, out->b->checkpoint, structureOnly))
                out->structure = std::move(*r);
        } catch (const Error& e) {
            out->error = QString::fromStdString(printable(e.what()));
        }
        return out;
    }));
}

DiffView::~DiffView() {
    cancel();
    if (m_histCancel)
        m_histCancel->store(true);
    if (m_watcher)
        m_watcher->waitForFinished();
    if (m_histWatcher)
        m_histWatcher->waitForFinished();
    if (m_loadWatcher)
        m_loadWatcher->waitForFinished();
}

QString DiffView::title() const {
    return tr("%1 ⟷ %2").arg(QFileInfo(m_pathA).fileName(), QFileInfo(m_pathB).fileName());
}

void DiffView::onLoaded() {
    m_loaded = m_loadWatcher->result();
    m_loadWatcher->deleteLater();
    m_loadWatcher = nullptr;
    if (!m_loaded->error.isEmpty()) {
        m_header->setText(tr("<b>Cannot compare:</b> %1").arg(m_loaded->error.toHtmlEscaped()));
        Q_EMIT loadFinished(false);
        return;
    }
    m_model->setStructure(m_loaded->a->checkpoint, m_loaded->b->checkpoint, m_loaded->structure, true);
    // Expanding rows one by one costs the view a copy each: only a short first level is opened.
    if (m_proxy->rowCount() <= 100)
        m_tree->expandToDepth(0);
    m_tree->resizeColumnToContents(DiffModel::NameColumn);
    m_tree->header()->resizeSection(DiffModel::NameColumn,
                                    std::max(m_tree->header()->sectionSize(DiffModel::NameColumn), 220));
    int columns = 0;
    for (int c = DiffModel::NameColumn; c < DiffModel::ColumnCount; ++c) {
        if (c != DiffModel::NameColumn)
            m_tree->resizeColumnToContents(c);
        columns += m_tree->header()->sectionSize(c);
    }
    // The tree as wide as its columns, up to 65 % of the view; the plots take the rest.
    if (auto* splitter = qobject_cast<QSplitter*>(m_tree->parentWidget())) {
        const int total = std::max(splitter->width(), 800);
        const int tree = std::min(columns + 24, total * 13 / 20);
        splitter->setSizes({tree, total - tree});
    }
    updateHeader();
    m_alignButton->setEnabled(true);
    Q_EMIT loadFinished(true);
    if (!m_pendingSelect.isEmpty())
        selectName(std::exchange(m_pendingSelect, QString()));
    startComparison();
}

void DiffView::startComparison() {
    auto cancelFlag = std::make_shared<std::atomic<bool>>(false);
    auto progress = std::make_shared<std::atomic<std::uint64_t>>(0);
    auto inbox = std::make_shared<Inbox>();
    m_cancel = cancelFlag;
    m_progress = progress;
    m_inbox = inbox;
    m_progressBar->setValue(0);
    m_progressBar->show();
    m_cancelButton->show();
    m_drainTimer->start();
    const LoadedDiffPtr loaded = m_loaded;
    const DiffOptions options = m_options;
    m_watcher = new QFutureWatcher<DiffRunResultPtr>(this);
    connect(m_watcher, &QFutureWatcher<DiffRunResultPtr>::finished, this, [this] {
        m_result = m_watcher->result();
        m_watcher->deleteLater();
        m_watcher = nullptr;
        m_drainTimer->stop();
        drain();
        m_progressBar->hide();
        m_cancelButton->hide();
        const bool cancelled = !m_result->result;
        if (m_result->result)
            m_model->updateTensors(m_result->result->tensors);
        m_model->finishPending(cancelled);
        updateHeader();
        showFigures();
        for (int c = DiffModel::StatusColumn; c < DiffModel::ColumnCount; ++c)
            m_tree->resizeColumnToContents(c);
        Q_EMIT comparisonFinished(cancelled);
    });
    m_watcher->setFuture(QtConcurrent::run(
        [loaded, options, cancelFlag, progress, inbox, hook = m_workerHook]() -> DiffRunResultPtr {
            if (hook)
                hook();
            auto out = std::make_shared<DiffRunResult>();
            try {
                out->result = diffCheckpoints(
                    loaded->a->checkpoint, loaded->b->checkpoint, options,
                    [&](std::uint64_t done, std::uint64_t total) {
                        progress->store(total ? done * 1000 / total : 0);
                        return !cancelFlag->load();
                    },
                    [&](const TensorDiff& d) {
                        std::lock_guard lock(inbox->mutex);
                        inbox->diffs.push_back(d);
                    });
            } catch (const Error& e) {
                out->error = QString::fromStdString(printable(e.what()));
            }
            return out;
        }));
}

void DiffView::drain() {
    if (m_progress)
        m_progressBar->setValue(static_cast<int>(m_progress->load()));
    if (!m_inbox)
        return;
    std::vector<TensorDiff> diffs;
    {
        std::lock_guard lock(m_inbox->mutex);
        diffs.swap(m_inbox->diffs);
    }
    if (diffs.empty())
        return;
    m_model->updateTensors(diffs);
    updateHeader();
    for (const TensorDiff& d : diffs)
        if (m_selectedTensor >= 0 &&
            m_model->tensors()[static_cast<std::size_t>(m_selectedTensor)].name == d.name) {
            showFigures();
            break;
        }
}

void DiffView::setAlignment(std::optional<std::string> prefixA, std::optional<std::string> prefixB) {
    if (!m_loaded || !m_loaded->error.isEmpty() || m_loadWatcher)
        return;
    // Stop the running comparison: its worker checks the flag between chunks, so the wait is short, and its
    // results belong to the old alignment.
    cancel();
    if (m_watcher) {
        m_watcher->disconnect(this);
        m_watcher->waitForFinished();
        m_watcher->deleteLater();
        m_watcher = nullptr;
    }
    m_drainTimer->stop();
    m_inbox.reset();
    m_progressBar->hide();
    m_cancelButton->hide();
    m_alignButton->setEnabled(false);

    m_options.prefixA = std::move(prefixA);
    m_options.prefixB = std::move(prefixB);
    DiffOptions structureOnly = m_options;
    structureOnly.compareValues = false;
    m_header->setText(tr("Aligning the names…"));
    const LoadedDiffPtr previous = m_loaded;
    m_loadWatcher = new QFutureWatcher<LoadedDiffPtr>(this);
    connect(m_loadWatcher, &QFutureWatcher<LoadedDiffPtr>::finished, this, &DiffView::onLoaded);
    m_loadWatcher->setFuture(QtConcurrent::run([previous, structureOnly]() -> LoadedDiffPtr {
        auto out = std::make_shared<LoadedDiff>();
        out->a = previous->a;
        out->b = previous->b;
        try {
            if (auto r = diffCheckpoints(out->a->checkpoint, out->b->checkpoint, structureOnly))
                out->structure = std::move(*r);
        } catch (const Error& e) {
            out->error = QString::fromStdString(printable(e.what()));
        }
        return out;
    }));
}

void DiffView::alignmentDialog() {
    if (!m_loaded || !m_loaded->error.isEmpty())
        return;
    const KeyAlignment& current = m_loaded->structure.alignment;
    QDialog dialog(this);
    dialog.setWindowTitle(tr("Name alignment"));
    auto* form = new QFormLayout(&dialog);
    auto* rule =
        new QLabel(tr("Now: %1").arg(QString::fromStdString(printable(current.description))), &dialog);
    rule->setWordWrap(true);
    form->addRow(rule);
    auto* editA = new QLineEdit(QString::fromStdString(current.prefixA), &dialog);
    auto* editB = new QLineEdit(QString::fromStdString(current.prefixB), &dialog);
    editA->setPlaceholderText(tr("nothing stripped"));
    editB->setPlaceholderText(tr("nothing stripped"));
    form->addRow(tr("Strip from A's names:"), editA);
    form->addRow(tr("Strip from B's names:"), editB);
    auto* buttons = new QDialogButtonBox(QDialogButtonBox::Ok | QDialogButtonBox::Cancel, &dialog);
    QPushButton* automatic = buttons->addButton(tr("&Automatic"), QDialogButtonBox::ResetRole);
    bool useAutomatic = false;
    connect(automatic, &QPushButton::clicked, &dialog, [&] {
        useAutomatic = true;
        dialog.accept();
    });
    connect(buttons, &QDialogButtonBox::accepted, &dialog, &QDialog::accept);
    connect(buttons, &QDialogButtonBox::rejected, &dialog, &QDialog::reject);
    form->addRow(buttons);
    if (dialog.exec() != QDialog::Accepted)
        return;
    if (useAutomatic)
        setAlignment(std::nullopt, std::nullopt);
    else
        setAlignment(editA->text().toStdString(), editB->text().toStdString());
}

void DiffView::cancel() {
    if (m_cancel)
        m_cancel->store(true);
}

void DiffView::updateHeader() {
    if (!m_loaded || !m_loaded->error.isEmpty())
        return;
    const DiffResult& s = m_result && m_result->result ? *m_result->result : m_loaded->structure;
    auto count = [&](DiffStatus st) {
        std::size_t n = 0;
        for (const TensorDiff& d : m_model->tensors())
            n += d.status == st;
        return n;
    };
    QString text = tr("<b>A</b> %1<br><b>B</b> %2<br>").arg(m_pathA.toHtmlEscaped(), m_pathB.toHtmlEscaped());
    text += QString::fromStdString(printable(s.alignment.description)).toHtmlEscaped();
    auto badge = [](int status, std::size_t n, const QString& word) {
        return QStringLiteral("<span style='color:%1'><b>%2</b> %3</span>")
            .arg(DiffModel::statusColor(status).darker(115).name())
            .arg(n)
            .arg(word);
    };
    text += QStringLiteral("<br>") +
            badge(static_cast<int>(DiffStatus::Changed), count(DiffStatus::Changed), tr("changed")) +
            QStringLiteral(" · ") +
            badge(static_cast<int>(DiffStatus::Added), count(DiffStatus::Added), tr("added")) +
            QStringLiteral(" · ") +
            badge(static_cast<int>(DiffStatus::Removed), count(DiffStatus::Removed), tr("removed")) +
            QStringLiteral(" · ") +
            badge(static_cast<int>(DiffStatus::Same), count(DiffStatus::Same), tr("same"));
    if (m_model->pendingCount() > 0)
        text += tr(" · %1 being compared").arg(m_model->pendingCount());
    if (!s.values.empty())
        text += tr(" · %n value(s) differ", nullptr, static_cast<int>(s.values.size()));
    m_header->setText(text);
}

bool DiffView::selectName(const QString& fullName) {
    if (!m_loaded) {
        m_pendingSelect = fullName;
        return true;
    }
    const QModelIndex source = m_model->indexForName(fullName);
    if (!source.isValid())
        return false;
    const QModelIndex index = m_proxy->mapFromSource(source);
    if (!index.isValid())
        return false;
    m_tree->setCurrentIndex(index);
    m_tree->scrollTo(index);
    return true;
}

QString DiffView::selectedName() const {
    return m_tree->currentIndex().data(DiffModel::FullNameRole).toString();
}

void DiffView::setChangedOnly(bool on) {
    m_changedOnly->setChecked(on);
}

int DiffView::bins() const {
    return m_bins->value();
}

void DiffView::setBins(int bins) {
    m_bins->setValue(bins);
    if (m_restart->isActive()) {
        m_restart->stop();
        startHistograms();
    }
}

void DiffView::onSelection() {
    const QModelIndex current = m_tree->currentIndex();
    m_selectedTensor = current.isValid() ? current.data(DiffModel::TensorDiffRole).toInt() : -1;
    m_selTitle->setText(current.data(DiffModel::FullNameRole).toString());
    showFigures();
    startHistograms();
}

void DiffView::showFigures() {
    const QModelIndex current = m_tree->currentIndex();
    if (!current.isValid()) {
        m_figures->clear();
        return;
    }
    const int status = current.data(DiffModel::StatusRole).toInt();
    QString text = QStringLiteral("<span style='color:%1'><b>%2</b></span>")
                       .arg(DiffModel::statusColor(status).darker(115).name(), DiffModel::statusText(status));
    auto cell = [&](int column) { return current.siblingAtColumn(column).data().toString().toHtmlEscaped(); };
    if (!cell(DiffModel::ShapeColumn).isEmpty())
        text += tr(" · shape %1 · %2").arg(cell(DiffModel::ShapeColumn), cell(DiffModel::DTypeColumn));
    if (!cell(DiffModel::RelL2Column).isEmpty())
        text +=
            tr("<br>rel.&nbsp;L2&nbsp;<b>%1</b> · max&nbsp;|B−A|&nbsp;%2 · cosine&nbsp;%3 · changed&nbsp;%4")
                .arg(cell(DiffModel::RelL2Column), cell(DiffModel::MaxAbsColumn),
                     cell(DiffModel::CosineColumn), cell(DiffModel::ChangedColumn));
    if (m_selectedTensor >= 0) {
        const TensorDiff& d = m_model->tensors()[static_cast<std::size_t>(m_selectedTensor)];
        if (d.values && status != DiffModel::kPending)
            text += tr(" · <span style='white-space:nowrap'>mean |B−A| %1</span>")
                        .arg(number(d.values->meanAbs()));
        if (!d.error.empty())
            text += QStringLiteral("<br>") + QString::fromStdString(printable(d.error)).toHtmlEscaped();
    }
    m_figures->setText(text);
}

void DiffView::startHistograms() {
    if (m_histCancel)
        m_histCancel->store(true);
    const quint64 generation = ++m_histGeneration;
    m_histResult.reset();
    if (!m_loaded || m_selectedTensor < 0) {
        drawHistograms();
        return;
    }
    const TensorDiff d = m_model->tensors()[static_cast<std::size_t>(m_selectedTensor)];
    const LoadedDiffPtr loaded = m_loaded;
    const int bins = m_bins->value();
    auto cancelFlag = std::make_shared<std::atomic<bool>>(false);
    m_histCancel = cancelFlag;
    auto* watcher = new QFutureWatcher<PairHistogramsPtr>(this);
    m_histWatcher = watcher;
    connect(watcher, &QFutureWatcher<PairHistogramsPtr>::finished, this, [this, watcher, generation] {
        watcher->deleteLater();
        if (generation != m_histGeneration)
            return;
        m_histWatcher = nullptr;
        m_histResult = watcher->result();
        drawHistograms();
        Q_EMIT histogramsFinished();
    });
    watcher->setFuture(QtConcurrent::run([loaded, d, bins, cancelFlag]() -> PairHistogramsPtr {
        auto out = std::make_shared<PairHistograms>();
        const ProgressFn progress = [&](std::uint64_t, std::uint64_t) { return !cancelFlag->load(); };
        try {
            const CheckpointPtr& a = loaded->a->checkpoint;
            const CheckpointPtr& b = loaded->b->checkpoint;
            if (d.a >= 0 && d.b >= 0)
                out->histograms = diffHistograms(a, a->tensors[static_cast<std::size_t>(d.a)], b,
                                                 b->tensors[static_cast<std::size_t>(d.b)], bins, progress);
            else if (d.b >= 0) {
                out->onlyInB = true;
                out->only = computeStats(b, b->tensors[static_cast<std::size_t>(d.b)], bins, progress);
            } else if (d.a >= 0) {
                out->only = computeStats(a, a->tensors[static_cast<std::size_t>(d.a)], bins, progress);
            }
        } catch (const Error& e) {
            out->error = QString::fromStdString(printable(e.message()));
        }
        return out;
    }));
}

void DiffView::drawHistograms() {
    m_plot->clearGraphs();
    QCPAxisRect* top = m_plot->axisRect(0);
    QCPAxisRect* bottom = m_plot->axisRect(1);
    if (m_histResult && m_histResult->histograms) {
        const DiffHistograms& h = *m_histResult->histograms;
        QCPGraph* ga = m_plot->addGraph(top->axis(QCPAxis::atBottom), top->axis(QCPAxis::atLeft));
        stepGraph(ga, h.a, kColorA);
        ga->setName(tr("A  %1").arg(QFileInfo(m_pathA).fileName()));
        QCPGraph* gb = m_plot->addGraph(top->axis(QCPAxis::atBottom), top->axis(QCPAxis::atLeft));
        stepGraph(gb, h.b, kColorB);
        gb->setName(tr("B  %1").arg(QFileInfo(m_pathB).fileName()));
        top->axis(QCPAxis::atBottom)->setRange(h.a.edges.front(), h.a.edges.back());
        top->axis(QCPAxis::atLeft)->setRange(0, std::max(peakOf(h.a), peakOf(h.b)) * 1.08);
        if (!h.delta.counts.empty()) {
            QCPGraph* gd = m_plot->addGraph(bottom->axis(QCPAxis::atBottom), bottom->axis(QCPAxis::atLeft));
            stepGraph(gd, h.delta, kColorDelta);
            gd->setName(tr("B − A"));
            bottom->axis(QCPAxis::atBottom)->setRange(h.delta.edges.front(), h.delta.edges.back());
            bottom->axis(QCPAxis::atLeft)->setRange(0, peakOf(h.delta) * 1.08);
        }
        m_plot->legend->setVisible(true);
    } else if (m_histResult && m_histResult->only && m_histResult->only->finite > 0) {
        const Histogram& h = m_histResult->only->histogram;
        QCPGraph* g = m_plot->addGraph(top->axis(QCPAxis::atBottom), top->axis(QCPAxis::atLeft));
        stepGraph(g, h, m_histResult->onlyInB ? kColorB : kColorA);
        g->setName(m_histResult->onlyInB ? tr("B only") : tr("A only"));
        top->axis(QCPAxis::atBottom)->setRange(h.edges.front(), h.edges.back());
        top->axis(QCPAxis::atLeft)->setRange(0, peakOf(h) * 1.08);
        m_plot->legend->setVisible(true);
    } else {
        m_plot->legend->setVisible(false);
    }
    if (m_histResult && !m_histResult->error.isEmpty())
        m_figures->setText(m_figures->text() + QStringLiteral("<br>") + m_histResult->error.toHtmlEscaped());
    m_plot->replot(QCustomPlot::rpQueuedReplot);
}

} // namespace ckpt::ui
