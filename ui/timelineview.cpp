#include "timelineview.h"

#include "moduletreemodel.h"
#include "plotstyle.h"
#include "treeproxy.h"

#include "io/error.h"
#include "report/report.h"

#include <qcustomplot.h>

#include <QComboBox>
#include <QFileInfo>
#include <QHBoxLayout>
#include <QHeaderView>
#include <QLabel>
#include <QProgressBar>
#include <QSpinBox>
#include <QSplitter>
#include <QTimer>
#include <QToolButton>
#include <QTreeView>
#include <QVBoxLayout>
#include <QtConcurrent/QtConcurrentRun>

#include <algorithm>
#include <cmath>
#include <set>

namespace ckpt::ui {
namespace {

// Early checkpoints light, late ones dark, as TensorBoard shades its histograms over time.
QColor timeColor(std::size_t i, std::size_t n) {
    const double t = n > 1 ? static_cast<double>(i) / static_cast<double>(n - 1) : 1.0;
    const QColor early(253, 190, 133), late(166, 54, 3);
    return QColor::fromRgbF(static_cast<float>(early.redF() + t * (late.redF() - early.redF())),
                            static_cast<float>(early.greenF() + t * (late.greenF() - early.greenF())),
                            static_cast<float>(early.blueF() + t * (late.blueF() - early.blueF())));
}

// The x coordinate of each checkpoint: its step when every name carries a distinct one, else its position.
std::vector<double> positions(const Run& run, bool* bySteps) {
    std::set<std::int64_t> steps;
    bool all = true;
    for (const RunEntry& e : run.entries) {
        all = all && e.step >= 0;
        steps.insert(e.step);
    }
    *bySteps = all && steps.size() == run.entries.size();
    std::vector<double> x;
    for (std::size_t i = 0; i < run.entries.size(); ++i)
        x.push_back(*bySteps ? static_cast<double>(run.entries[i].step) : static_cast<double>(i + 1));
    return x;
}

QString stepWord(const Run& run) {
    bool epochs = !run.entries.empty();
    for (const RunEntry& e : run.entries)
        epochs =
            epochs && QString::fromStdString(e.label).contains(QLatin1String("epoch"), Qt::CaseInsensitive);
    return epochs ? QObject::tr("epoch") : QObject::tr("step");
}

} // namespace

TimelineView::TimelineView(const QStringList& paths, QWidget* parent)
    : QWidget(parent)
    , m_paths(paths) {
    auto* layout = new QVBoxLayout(this);
    layout->setContentsMargins(4, 4, 4, 4);
    m_header = new QLabel(tr("Finding the checkpoints of the run…"), this);
    m_header->setTextFormat(Qt::PlainText);
    m_header->setWordWrap(true);
    layout->addWidget(m_header);

    auto* splitter = new QSplitter(Qt::Horizontal, this);
    m_model = new ModuleTreeModel(this);
    m_proxy = new TreeProxy(this);
    m_proxy->setSourceModel(m_model);
    m_tree = new QTreeView(splitter);
    m_tree->setModel(m_proxy);
    m_tree->setUniformRowHeights(true);
    m_tree->setAlternatingRowColors(true);
    m_tree->setAccessibleName(tr("Tensors of the run"));
    for (int c = ModuleTreeModel::DTypeColumn; c < ModuleTreeModel::ColumnCount; ++c)
        m_tree->setColumnHidden(c, true);
    m_tree->header()->setStretchLastSection(false);
    splitter->addWidget(m_tree);

    auto* right = new QWidget(splitter);
    auto* rightLayout = new QVBoxLayout(right);
    rightLayout->setContentsMargins(0, 0, 0, 0);
    auto* controls = new QHBoxLayout;
    m_titleLabel = new QLabel(right);
    m_titleLabel->setTextFormat(Qt::PlainText);
    QFont bold = m_titleLabel->font();
    bold.setBold(true);
    m_titleLabel->setFont(bold);
    controls->addWidget(m_titleLabel, 1);
    m_progressBar = new QProgressBar(right);
    m_progressBar->setRange(0, 1000);
    m_progressBar->setTextVisible(false);
    m_progressBar->setMaximumWidth(200);
    m_progressBar->hide();
    controls->addWidget(m_progressBar);
    m_cancelButton = new QToolButton(right);
    m_cancelButton->setText(tr("Cancel"));
    m_cancelButton->hide();
    controls->addWidget(m_cancelButton);
    controls->addWidget(new QLabel(tr("Histograms:"), right));
    m_mode = new QComboBox(right);
    m_mode->addItem(tr("Offset ridges"));
    m_mode->addItem(tr("Overlay"));
    m_mode->setAccessibleName(tr("Histogram display"));
    controls->addWidget(m_mode);
    controls->addWidget(new QLabel(tr("Bins:"), right));
    m_bins = new QSpinBox(right);
    m_bins->setRange(2, 1000);
    m_bins->setValue(40);
    m_bins->setAccessibleName(tr("Histogram bins"));
    controls->addWidget(m_bins);
    rightLayout->addLayout(controls);

    auto* plots = new QSplitter(Qt::Vertical, right);
    m_curves = new QCustomPlot(plots);
    m_curves->setMinimumSize(400, 260);
    m_curves->plotLayout()->clear();
    const QStringList labels = {tr("norm (L2)"), tr("mean"), tr("std"), tr("change (rel. L2)")};
    for (int k = 0; k < 4; ++k) {
        auto* rect = new QCPAxisRect(m_curves);
        m_curves->plotLayout()->addElement(k / 2, k % 2, rect);
        rect->axis(QCPAxis::atLeft)->setLabel(labels[k]);
        QCPGraph* g = m_curves->addGraph(rect->axis(QCPAxis::atBottom), rect->axis(QCPAxis::atLeft));
        g->setName(labels[k]);
        for (QCPAxis* axis : rect->axes())
            axis->setLayer(QStringLiteral("axes"));
        rect->axis(QCPAxis::atLeft)->grid()->setLayer(QStringLiteral("grid"));
        rect->axis(QCPAxis::atBottom)->grid()->setLayer(QStringLiteral("grid"));
    }
    m_hist = new QCustomPlot(plots);
    m_hist->setMinimumSize(400, 260);
    m_hist->xAxis->setLabel(tr("value"));
    plots->addWidget(m_curves);
    plots->addWidget(m_hist);
    plots->setStretchFactor(0, 1);
    plots->setStretchFactor(1, 1);
    rightLayout->addWidget(plots, 1);
    splitter->addWidget(right);
    splitter->setStretchFactor(0, 1);
    splitter->setStretchFactor(1, 3);
    layout->addWidget(splitter, 1);
    applyPalette();

    m_progressTimer = new QTimer(this);
    m_progressTimer->setInterval(50);
    connect(m_progressTimer, &QTimer::timeout, this, [this] {
        if (m_progress)
            m_progressBar->setValue(static_cast<int>(m_progress->load()));
    });
    m_restart = new QTimer(this);
    m_restart->setSingleShot(true);
    m_restart->setInterval(250);
    connect(m_restart, &QTimer::timeout, this, &TimelineView::start);
    connect(m_bins, &QSpinBox::valueChanged, m_restart, qOverload<>(&QTimer::start));
    connect(m_mode, &QComboBox::currentIndexChanged, this, &TimelineView::drawHistograms);
    connect(m_cancelButton, &QToolButton::clicked, this, &TimelineView::cancel);
    connect(m_tree->selectionModel(), &QItemSelectionModel::currentChanged, this,
            [this](const QModelIndex& current) {
                if (!current.isValid() || current.data(ModuleTreeModel::KindRole).toInt() ==
                                              static_cast<int>(ModuleNode::Kind::Value))
                    return;
                m_name = current.data(ModuleTreeModel::FullNameRole).toString();
                start();
            });

    const QStringList list = m_paths;
    m_loadWatcher = new QFutureWatcher<LoadedRunPtr>(this);
    connect(m_loadWatcher, &QFutureWatcher<LoadedRunPtr>::finished, this, &TimelineView::onLoaded);
    m_loadWatcher->setFuture(QtConcurrent::run([list]() -> LoadedRunPtr {
        auto out = std::make_shared<LoadedRun>();
        try {
            std::vector<std::string> paths;
            for (const QString& p : list)
                paths.push_back(p.toStdString());
            out->run = runFromPaths(paths);
            // The newest checkpoint names what there is to choose; older ones are opened only for figures.
            for (auto it = out->run.entries.rbegin(); it != out->run.entries.rend() && !out->last; ++it) {
                try {
                    out->last = loadCheckpoint(QString::fromStdString(it->path));
                } catch (const Error&) {
                }
            }
            if (!out->last)
                out->error = QObject::tr("None of the checkpoints of the run can be opened.");
        } catch (const Error& e) {
            out->error = QString::fromStdString(printable(e.what()));
        }
        return out;
    }));
}

TimelineView::~TimelineView() {
    if (m_watcher) {
        m_cancel->store(true);
        m_watcher->waitForFinished();
    }
    if (m_loadWatcher)
        m_loadWatcher->waitForFinished();
}

QString TimelineView::title() const {
    if (m_paths.size() == 1)
        return tr("Run: %1").arg(QFileInfo(m_paths.front()).fileName());
    return tr("Run: %n files", nullptr, static_cast<int>(m_paths.size()));
}

void TimelineView::onLoaded() {
    m_run = m_loadWatcher->result();
    m_loadWatcher->deleteLater();
    m_loadWatcher = nullptr;
    const bool ok = m_run->error.isEmpty();
    if (!ok) {
        m_header->setText(tr("Cannot open the run: %1").arg(m_run->error));
        Q_EMIT loadFinished(false);
        return;
    }
    const Run& run = m_run->run;
    QString text = tr("%n checkpoint(s)", nullptr, static_cast<int>(run.entries.size()));
    if (!run.entries.empty())
        text += tr(", from %1 to %2")
                    .arg(QString::fromStdString(printable(run.entries.front().label)),
                         QString::fromStdString(printable(run.entries.back().label)));
    text += tr(" — %1").arg(QString::fromStdString(printable(run.source)));
    if (!run.skipped.empty())
        text += tr(" (%n file(s) left out)", nullptr, static_cast<int>(run.skipped.size()));
    m_header->setText(text);
    m_titleLabel->setText(tr("Choose a tensor or a module in the tree to see it across the run."));
    QStringList skipped;
    for (const auto& s : run.skipped)
        skipped << QString::fromStdString(printable(s));
    m_header->setToolTip(skipped.join(QLatin1Char('\n')));
    m_model->setCheckpoint(m_run->last);
    if (m_proxy->rowCount() <= 100) // expanding costs the view a copy per row: only a short first level
        m_tree->expandToDepth(0);
    m_tree->resizeColumnToContents(ModuleTreeModel::NameColumn);
    Q_EMIT statusMessage(text);
    Q_EMIT loadFinished(true);
    if (m_hasPendingSelect) {
        m_hasPendingSelect = false;
        selectName(m_pendingSelect);
    }
}

bool TimelineView::selectName(const QString& fullName) {
    if (!m_run) {
        m_pendingSelect = fullName;
        m_hasPendingSelect = true;
        return true;
    }
    if (!m_run->last)
        return false;
    if (fullName.isEmpty()) {
        m_name.clear();
        start();
        return true;
    }
    const int node = m_run->last->tree.find(fullName.toStdString());
    if (node < 0)
        return false;
    const QModelIndex index = m_proxy->mapFromSource(m_model->indexForNode(node));
    if (m_tree->currentIndex() == index) {
        m_name = fullName;
        start();
    } else {
        m_tree->setCurrentIndex(index); // starts the computation
    }
    m_tree->scrollTo(index);
    return true;
}

void TimelineView::cancel() {
    if (m_cancel)
        m_cancel->store(true);
}

void TimelineView::setBins(int bins) {
    m_bins->setValue(bins);
    if (m_restart->isActive()) {
        m_restart->stop();
        start();
    }
}

int TimelineView::bins() const {
    return m_bins->value();
}

void TimelineView::setHistogramMode(HistogramMode mode) {
    m_mode->setCurrentIndex(mode == HistogramMode::Ridges ? 0 : 1);
}

TimelineView::HistogramMode TimelineView::histogramMode() const {
    return m_mode->currentIndex() == 0 ? HistogramMode::Ridges : HistogramMode::Overlay;
}

void TimelineView::start() {
    cancel();
    if (!m_run || !m_run->last)
        return;
    const quint64 generation = ++m_generation;
    m_result.reset();
    m_titleLabel->setText(m_name.isEmpty() ? tr("every tensor") : m_name);
    auto cancelFlag = std::make_shared<std::atomic<bool>>(false);
    auto progress = std::make_shared<std::atomic<std::uint64_t>>(0);
    m_cancel = cancelFlag;
    m_progress = progress;
    m_progressBar->setValue(0);
    m_progressBar->show();
    m_cancelButton->show();
    m_progressTimer->start();
    const LoadedRunPtr run = m_run;
    const std::string name = m_name.toStdString();
    const int bins = m_bins->value();
    auto* watcher = new QFutureWatcher<TimelineResultPtr>(this);
    m_watcher = watcher;
    connect(watcher, &QFutureWatcher<TimelineResultPtr>::finished, this, [this, watcher, generation] {
        watcher->deleteLater();
        if (generation != m_generation)
            return;
        m_watcher = nullptr;
        m_progressTimer->stop();
        m_progressBar->hide();
        m_cancelButton->hide();
        showResult(watcher->result());
    });
    watcher->setFuture(QtConcurrent::run(
        [run, name, bins, cancelFlag, progress, hook = m_workerHook]() -> TimelineResultPtr {
            if (hook)
                hook();
            auto result = std::make_shared<TimelineResult>();
            try {
                result->timeline =
                    computeTimeline(run->run, name, bins, [&](std::uint64_t done, std::uint64_t total) {
                        progress->store(total ? done * 1000 / total : 0);
                        return !cancelFlag->load();
                    });
            } catch (const Error& e) {
                result->error = QString::fromStdString(printable(e.what()));
            }
            return result;
        }));
}

void TimelineView::showResult(const TimelineResultPtr& result) {
    m_result = result;
    const bool cancelled = !result->timeline && result->error.isEmpty();
    if (cancelled)
        m_titleLabel->setText(m_titleLabel->text() + tr(" — cancelled"));
    else if (!result->timeline)
        m_titleLabel->setText(tr("%1 — %2").arg(m_titleLabel->text(), result->error));
    drawCurves();
    drawHistograms();
    Q_EMIT finished(cancelled);
}

void TimelineView::drawCurves() {
    const bool have = m_result && m_result->timeline && m_run;
    bool bySteps = false;
    const std::vector<double> x = have ? positions(m_run->run, &bySteps) : std::vector<double>();
    QSharedPointer<QCPAxisTicker> ticker;
    if (have && !bySteps) {
        auto text = QSharedPointer<QCPAxisTickerText>::create();
        for (std::size_t i = 0; i < x.size(); ++i)
            text->addTick(x[i], QString::fromStdString(printable(m_run->run.entries[i].label)));
        ticker = text;
    } else {
        auto fixed = QSharedPointer<QCPAxisTickerFixed>::create();
        fixed->setTickStep(1);
        fixed->setScaleStrategy(QCPAxisTickerFixed::ssMultiples);
        ticker = fixed;
    }
    const QString xLabel = have ? stepWord(m_run->run) : QString();
    const QColor colors[4] = {QColor(31, 119, 180), QColor(44, 160, 44), QColor(148, 103, 189),
                              QColor(214, 39, 40)};
    for (int k = 0; k < 4; ++k) {
        QCPGraph* g = m_curves->graph(k);
        QVector<double> keys, values;
        if (have) {
            const auto& points = m_result->timeline->points;
            for (std::size_t i = 0; i < points.size(); ++i) {
                const RunPoint& p = points[i];
                double v = qQNaN(); // a gap where the checkpoint lacks the tensor
                if (p.present && p.finite > 0) {
                    if (k == 0)
                        v = p.norm;
                    else if (k == 1)
                        v = p.mean;
                    else if (k == 2)
                        v = p.std;
                    else if (p.change)
                        v = *p.change;
                }
                keys << x[i];
                values << v;
            }
        }
        g->setData(keys, values, true);
        g->setPen(QPen(colors[k], 2));
        g->setScatterStyle(QCPScatterStyle(QCPScatterStyle::ssCircle, colors[k], Qt::white, 6));
        QCPAxis* bottom = g->keyAxis();
        bottom->setTicker(ticker);
        bottom->setLabel(xLabel);
        if (!keys.isEmpty()) {
            const double span = std::max(keys.back() - keys.front(), 1.0);
            bottom->setRange(keys.front() - span * 0.04, keys.back() + span * 0.04);
        }
        bool found = false;
        const QCPRange r = g->getValueRange(found);
        if (found) {
            const double pad = std::max((r.upper - r.lower) * 0.08, std::abs(r.upper) * 1e-3 + 1e-12);
            g->valueAxis()->setRange(r.lower - pad, r.upper + pad);
        }
    }
    m_curves->replot(QCustomPlot::rpQueuedReplot);
}

void TimelineView::drawHistograms() {
    m_hist->clearGraphs();
    m_hist->legend->setVisible(false);
    const bool have = m_result && m_result->timeline && !m_result->timeline->edges.empty() && m_run;
    if (!have) {
        m_hist->replot(QCustomPlot::rpQueuedReplot);
        return;
    }
    const Timeline& t = *m_result->timeline;
    const auto& edges = t.edges;
    const std::size_t n = t.points.size();
    std::uint64_t peak = 1;
    for (const RunPoint& p : t.points)
        for (const auto c : p.histogram)
            peak = std::max(peak, c);
    const bool ridges = histogramMode() == HistogramMode::Ridges;
    const QPalette pal = palette();
    auto text = QSharedPointer<QCPAxisTickerText>::create();
    // Few checkpoints get low ridges that barely overlap; a long run gets tall ones that overlap more.
    const double ridgeHeight = std::clamp(static_cast<double>(n) * 0.3, 1.0, 3.0);
    const std::size_t labelEvery = std::max<std::size_t>(1, (n + 11) / 12);
    for (std::size_t i = 0; i < n; ++i) {
        const RunPoint& p = t.points[i];
        if (!p.present || p.histogram.size() + 1 != edges.size())
            continue;
        const RunEntry& entry = m_run->run.entries[i];
        const QString label = entry.step >= 0
                                  ? stepWord(m_run->run) + QLatin1Char(' ') + QString::number(entry.step)
                                  : QString::fromStdString(printable(entry.label));
        const double base = ridges ? static_cast<double>(n - 1 - i) : 0.0;
        // Ridges: every histogram scaled by the run's highest bin, up to three rows tall, so that neighbours
        // overlap as in TensorBoard's offset view and heights stay comparable across the run.
        const double scale = ridges ? ridgeHeight / static_cast<double>(peak) : 1.0;
        QVector<double> keys, values, baseline;
        keys << edges.front();
        values << base;
        for (std::size_t b = 0; b < p.histogram.size(); ++b) {
            keys << (edges[b] + edges[b + 1]) / 2;
            values << base + static_cast<double>(p.histogram[b]) * scale;
        }
        keys << edges.back();
        values << base;
        const QColor c = timeColor(i, n);
        if (ridges) {
            QCPGraph* floor = m_hist->addGraph();
            floor->setData(keys, QVector<double>(keys.size(), base), true);
            floor->setPen(Qt::NoPen);
            floor->removeFromLegend();
            QCPGraph* g = m_hist->addGraph();
            g->setData(keys, values, true);
            g->setPen(QPen(c.darker(150), 1.2));
            g->setBrush(c);
            g->setChannelFillGraph(floor);
            g->setName(label);
            if (i % labelEvery == 0 || i + 1 == n)
                text->addTick(base, label);
        } else {
            QCPGraph* g = m_hist->addGraph();
            g->setData(keys, values, true);
            g->setLineStyle(QCPGraph::lsStepCenter);
            g->setPen(QPen(c, i + 1 == n ? 2.2 : 1.4));
            g->setName(label);
        }
    }
    if (ridges) {
        m_hist->yAxis->setTicker(text);
        m_hist->yAxis->setLabel(QString());
        m_hist->yAxis->setRange(-0.3, static_cast<double>(n - 1) + ridgeHeight + 0.2);
        m_hist->yAxis->grid()->setVisible(false);
    } else {
        m_hist->yAxis->setTicker(QSharedPointer<QCPAxisTicker>::create());
        m_hist->yAxis->setLabel(tr("count"));
        m_hist->yAxis->setRange(0, static_cast<double>(peak) * 1.05);
        m_hist->yAxis->grid()->setVisible(true);
        // A legend of a few checkpoints: the first, the last and some between.
        m_hist->legend->setVisible(true);
        m_hist->legend->setBrush(pal.brush(QPalette::Base));
        m_hist->legend->setTextColor(pal.color(QPalette::Text));
        const int graphs = m_hist->graphCount();
        const int every = std::max(1, (graphs + 5) / 6);
        for (int g = 0; g < graphs; ++g)
            if (g % every != 0 && g + 1 != graphs)
                m_hist->graph(g)->removeFromLegend();
        m_hist->axisRect()->insetLayout()->setInsetAlignment(0, Qt::AlignTop | Qt::AlignRight);
    }
    m_hist->xAxis->setRange(edges.front(), edges.back());
    m_hist->replot(QCustomPlot::rpQueuedReplot);
}

void TimelineView::applyPalette() {
    const QPalette p = palette();
    for (QCustomPlot* plot : {m_curves, m_hist}) {
        plot->setBackground(p.brush(QPalette::Base));
        for (QCPAxisRect* rect : plot->axisRects())
            stylePlotAxes(rect->axes(), p);
    }
}

} // namespace ckpt::ui
