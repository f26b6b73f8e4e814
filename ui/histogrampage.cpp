#include "histogrampage.h"
#include "plotstyle.h"

#include "analysis/torchstats/loader.h"
#include "io/error.h"
#include "report/report.h"

#include <qcustomplot.h>

#include <QCheckBox>
#include <QHBoxLayout>
#include <QLabel>
#include <QProgressBar>
#include <QSpinBox>
#include <QTimer>
#include <QToolButton>
#include <QToolTip>
#include <QVBoxLayout>
#include <QtConcurrent/QtConcurrentRun>

#include <cmath>

namespace ckpt::ui {
namespace {

QString number(double v) {
    return std::isnan(v) ? QStringLiteral("–") : QString::number(v, 'g', 7);
}

QString count(std::uint64_t n) {
    return QString::fromStdString(groupedNumber(n));
}

} // namespace

HistogramPage::HistogramPage(QWidget* parent)
    : QWidget(parent) {
    auto* layout = new QVBoxLayout(this);
    m_title_ = new QLabel(this);
    m_title_->setTextFormat(Qt::PlainText);
    m_title_->setWordWrap(true);
    QFont bold = m_title_->font();
    bold.setBold(true);
    m_title_->setFont(bold);
    layout->addWidget(m_title_);

    auto* controls = new QHBoxLayout;
    controls->addWidget(new QLabel(tr("Bins:"), this));
    m_bins = new QSpinBox(this);
    m_bins->setRange(1, 2000);
    m_bins->setValue(64);
    m_bins->setAccessibleName(tr("Histogram bins"));
    controls->addWidget(m_bins);
    m_log = new QCheckBox(tr("&Log count axis"), this);
    controls->addWidget(m_log);
    controls->addStretch();
    m_progressBar = new QProgressBar(this);
    m_progressBar->setRange(0, 1000);
    m_progressBar->setTextVisible(false);
    m_progressBar->setMaximumWidth(200);
    m_progressBar->hide();
    controls->addWidget(m_progressBar);
    m_cancelButton = new QToolButton(this);
    m_cancelButton->setText(tr("Cancel"));
    m_cancelButton->hide();
    controls->addWidget(m_cancelButton);
    layout->addLayout(controls);

    auto* body = new QHBoxLayout;
    m_plot = new QCustomPlot(this);
    m_plot->setMinimumSize(320, 220);
    m_plot->setInteraction(QCP::iRangeZoom, false);
    m_bars = new QCPBars(m_plot->xAxis, m_plot->yAxis);
    m_bars->setWidthType(QCPBars::wtPlotCoords);
    m_plot->xAxis->setLabel(tr("value"));
    m_plot->yAxis->setLabel(tr("count"));
    body->addWidget(m_plot, 1);
    m_statsLabel = new QLabel(this);
    m_statsLabel->setTextInteractionFlags(Qt::TextSelectableByMouse);
    m_statsLabel->setAlignment(Qt::AlignTop | Qt::AlignLeft);
    m_statsLabel->setMinimumWidth(180);
    m_statsLabel->setWordWrap(true); // error messages name files and byte ranges
    body->addWidget(m_statsLabel);
    layout->addLayout(body, 1);
    applyPalette();

    m_progressTimer = new QTimer(this);
    m_progressTimer->setInterval(50); // the worker writes a number; the GUI looks at it 20 times a second
    connect(m_progressTimer, &QTimer::timeout, this, [this] {
        if (m_progress)
            m_progressBar->setValue(static_cast<int>(m_progress->load()));
    });
    m_restart = new QTimer(this);
    m_restart->setSingleShot(true);
    m_restart->setInterval(250);
    connect(m_restart, &QTimer::timeout, this, &HistogramPage::start);
    connect(m_bins, &QSpinBox::valueChanged, m_restart, qOverload<>(&QTimer::start));
    connect(m_log, &QCheckBox::toggled, this, &HistogramPage::drawHistogram);
    connect(m_cancelButton, &QToolButton::clicked, this, &HistogramPage::cancel);
    connect(m_plot, &QCustomPlot::mouseMove, this, [this](QMouseEvent* event) {
        const QString tip = binToolTip(m_plot->xAxis->pixelToCoord(event->position().x()));
        if (tip.isEmpty())
            QToolTip::hideText();
        else
            QToolTip::showText(event->globalPosition().toPoint(), tip, m_plot);
    });
}

HistogramPage::~HistogramPage() {
    // The worker reads through the checkpoint this page holds: stop it before anything goes away.
    if (m_watcher) {
        m_cancel->store(true);
        m_watcher->waitForFinished();
    }
}

int HistogramPage::bins() const {
    return m_bins->value();
}

void HistogramPage::setBins(int bins) {
    m_bins->setValue(bins);
    if (m_restart->isActive()) {
        m_restart->stop();
        start();
    }
}

void HistogramPage::setLogScale(bool log) {
    m_log->setChecked(log);
}

void HistogramPage::showTensors(LoadedPtr loaded, std::vector<int> tensors, const QString& title) {
    m_loaded = std::move(loaded);
    m_tensors = std::move(tensors);
    m_title = title;
    start();
}

void HistogramPage::clear() {
    cancel();
    m_loaded.reset();
    m_tensors.clear();
    m_result.reset();
    m_title_->clear();
    m_statsLabel->clear();
    drawHistogram();
}

void HistogramPage::cancel() {
    if (m_cancel)
        m_cancel->store(true);
}

void HistogramPage::start() {
    cancel(); // whatever ran before is for a selection no longer shown
    const quint64 generation = ++m_generation;
    m_result.reset();
    m_title_->setText(m_title);
    if (!m_loaded || m_tensors.empty()) {
        m_statsLabel->setText(m_loaded ? tr("No tensors here.") : QString());
        drawHistogram();
        return;
    }
    auto cancelFlag = std::make_shared<std::atomic<bool>>(false);
    auto progress = std::make_shared<std::atomic<std::uint64_t>>(0);
    m_cancel = cancelFlag;
    m_progress = progress;
    m_statsLabel->setText(tr("Computing…"));
    m_progressBar->setValue(0);
    m_progressBar->show();
    m_cancelButton->show();
    m_progressTimer->start();

    const LoadedPtr loaded = m_loaded;
    const std::vector<int> tensors = m_tensors;
    const int bins = m_bins->value();
    // An earlier watcher still running finishes on its own: its result is dropped by the generation check.
    auto* watcher = new QFutureWatcher<StatsResultPtr>(this);
    m_watcher = watcher;
    connect(watcher, &QFutureWatcher<StatsResultPtr>::finished, this, [this, watcher, generation] {
        watcher->deleteLater();
        if (generation != m_generation)
            return;
        m_watcher = nullptr;
        m_progressTimer->stop();
        m_progressBar->hide();
        m_cancelButton->hide();
        showResult(watcher->result());
    });
    watcher->setFuture(QtConcurrent::run([loaded, tensors, bins, cancelFlag, progress,
                                          hook = m_workerHook]() -> StatsResultPtr {
        if (hook)
            hook();
        auto result = std::make_shared<StatsResult>();
        const ProgressFn onProgress = [&](std::uint64_t done, std::uint64_t total) {
            progress->store(total ? done * 1000 / total : 0);
            return !cancelFlag->load();
        };
        try {
            const Checkpoint& ck = *loaded->checkpoint;
            if (tensors.size() == 1) {
                // LibTorch for every tensor it handles: its one-time load happens here, on the worker.
                result->stats = computeStatsWithPlugin(
                    loaded->checkpoint, ck.tensors[static_cast<std::size_t>(tensors[0])], bins, onProgress);
            } else {
                std::vector<const TensorInfo*> list;
                for (int i : tensors)
                    list.push_back(&ck.tensors[static_cast<std::size_t>(i)]);
                std::vector<std::string> skipped;
                result->stats = computeStatsOfMany(loaded->checkpoint, list, bins, onProgress, &skipped);
                for (const auto& s : skipped)
                    result->skipped << QString::fromStdString(printable(s));
            }
        } catch (const Error& e) {
            result->error = QString::fromStdString(printable(e.message()));
        }
        return result;
    }));
}

void HistogramPage::showResult(const StatsResultPtr& result) {
    m_result = result;
    const bool cancelled = !result->stats && result->error.isEmpty();
    if (cancelled) {
        m_statsLabel->setText(tr("Cancelled."));
    } else if (!result->stats) {
        m_statsLabel->setText(tr("Cannot read the values:\n%1").arg(result->error));
    } else {
        const TensorStats& s = *result->stats;
        QString text = tr("count\t%1\nmin\t%2\nmax\t%3\nmean\t%4\nstd\t%5\nzeros\t%6\nNaN\t%7\nInf\t%8")
                           .arg(count(s.count), number(s.min), number(s.max), number(s.mean), number(s.std),
                                count(s.zeros), count(s.nan), count(s.inf));
        if (!result->skipped.isEmpty())
            text += tr("\n\n%n tensor(s) without readable values left out", nullptr,
                       static_cast<int>(result->skipped.size()));
        m_statsLabel->setText(text);
    }
    drawHistogram();
    Q_EMIT finished(cancelled);
}

void HistogramPage::drawHistogram() {
    QVector<double> keys, values;
    double width = 1;
    if (m_result && m_result->stats && m_result->stats->finite > 0) {
        const Histogram& h = m_result->stats->histogram;
        width = (h.edges.back() - h.edges.front()) / static_cast<double>(h.counts.size());
        for (std::size_t i = 0; i < h.counts.size(); ++i) {
            keys << (h.edges[i] + h.edges[i + 1]) / 2;
            values << static_cast<double>(h.counts[i]);
        }
        m_plot->xAxis->setRange(h.edges.front(), h.edges.back());
    }
    m_bars->setWidth(width);
    m_bars->setData(keys, values, true);
    const bool log = m_log->isChecked();
    m_plot->yAxis->setScaleType(log ? QCPAxis::stLogarithmic : QCPAxis::stLinear);
    const double peak = values.isEmpty() ? 1 : *std::max_element(values.begin(), values.end());
    if (log) {
        m_plot->yAxis->setTicker(QSharedPointer<QCPAxisTickerLog>::create());
    } else if (peak < 10) { // counts are whole numbers: no 0.5 ticks on a small histogram
        auto fixed = QSharedPointer<QCPAxisTickerFixed>::create();
        fixed->setTickStep(1);
        fixed->setScaleStrategy(QCPAxisTickerFixed::ssMultiples);
        m_plot->yAxis->setTicker(fixed);
    } else {
        m_plot->yAxis->setTicker(QSharedPointer<QCPAxisTicker>::create());
    }
    // Bars start at 0 (linear) or below 1 (log), so a bin of one element stays visible.
    m_bars->setBaseValue(log ? 0.5 : 0);
    m_plot->yAxis->setRange(log ? 0.5 : 0, log ? std::max(peak * 2, 10.0) : std::max(peak * 1.05, 1.0));
    m_plot->replot(QCustomPlot::rpQueuedReplot);
}

QString HistogramPage::binToolTip(double x) const {
    if (!m_result || !m_result->stats || m_result->stats->finite == 0)
        return {};
    const Histogram& h = m_result->stats->histogram;
    if (!(x >= h.edges.front() && x <= h.edges.back()))
        return {};
    const auto it = std::upper_bound(h.edges.begin(), h.edges.end(), x);
    std::size_t bin = static_cast<std::size_t>(std::max<std::ptrdiff_t>(it - h.edges.begin() - 1, 0));
    bin = std::min(bin, h.counts.size() - 1);
    const bool last = bin + 1 == h.counts.size();
    return tr("[%1, %2%3\n%4 elements")
        .arg(number(h.edges[bin]), number(h.edges[bin + 1]), last ? QStringLiteral("]") : QStringLiteral(")"),
             count(h.counts[bin]));
}

void HistogramPage::applyPalette() {
    // Follow the platform theme, dark or light.
    const QPalette p = palette();
    m_plot->setBackground(p.brush(QPalette::Base));
    stylePlotAxes({m_plot->xAxis, m_plot->yAxis}, p);
    QColor fill = p.color(QPalette::Highlight);
    m_bars->setPen(QPen(fill.darker(120)));
    fill.setAlpha(170);
    m_bars->setBrush(fill);
    m_plot->replot(QCustomPlot::rpQueuedReplot);
}

void HistogramPage::changeEvent(QEvent* event) {
    if (event->type() == QEvent::PaletteChange)
        applyPalette();
    QWidget::changeEvent(event);
}

} // namespace ckpt::ui
