#pragma once

#include "loadedcheckpoint.h"

#include "analysis/stats.h"

#include <QFutureWatcher>
#include <QWidget>

#include <atomic>
#include <functional>
#include <memory>

class QCPBars;
class QCheckBox;
class QCustomPlot;
class QLabel;
class QProgressBar;
class QSpinBox;
class QToolButton;
class QTimer;

namespace ckpt::ui {

struct StatsResult {
    std::optional<TensorStats> stats; // empty when cancelled or failed
    QString error;
    QStringList skipped; // tensors of a module whose values could not be read
};
using StatsResultPtr = std::shared_ptr<const StatsResult>;

// Statistics and a histogram of one tensor, or of every tensor under a module taken together. Computed
// on a worker thread with progress and cancel; a result for a selection no longer shown is dropped.
class HistogramPage final : public QWidget {
    Q_OBJECT
public:
    explicit HistogramPage(QWidget* parent = nullptr);
    ~HistogramPage() override;

    void showTensors(LoadedPtr loaded, std::vector<int> tensors, const QString& title);
    void clear();
    void cancel();

    int bins() const;
    void setBins(int bins);
    void setLogScale(bool log);
    bool isComputing() const { return m_watcher != nullptr; }
    const StatsResultPtr& result() const { return m_result; }
    QCustomPlot* plot() const { return m_plot; }
    // Runs on the worker thread before each computation starts (tests use it to hold a worker back).
    void setWorkerHook(std::function<void()> hook) { m_workerHook = std::move(hook); }
    // Text of the tooltip for the bin under a plot x coordinate, or empty.
    QString binToolTip(double x) const;

Q_SIGNALS:
    void finished(bool cancelled);

private:
    void start();
    void showResult(const StatsResultPtr& result);
    void drawHistogram();
    void applyPalette();
    void changeEvent(QEvent* event) override;

    LoadedPtr m_loaded;
    std::vector<int> m_tensors;
    QString m_title;
    StatsResultPtr m_result;
    QFutureWatcher<StatsResultPtr>* m_watcher = nullptr;
    std::shared_ptr<std::atomic<bool>> m_cancel;
    std::shared_ptr<std::atomic<std::uint64_t>> m_progress; // per mille, written by the worker
    quint64 m_generation = 0;
    std::function<void()> m_workerHook;

    QLabel* m_title_ = nullptr;
    QCustomPlot* m_plot = nullptr;
    QCPBars* m_bars = nullptr;
    QLabel* m_statsLabel = nullptr;
    QSpinBox* m_bins = nullptr;
    QCheckBox* m_log = nullptr;
    QProgressBar* m_progressBar = nullptr;
    QToolButton* m_cancelButton = nullptr;
    QTimer* m_progressTimer = nullptr;
    QTimer* m_restart = nullptr;
};

} // namespace ckpt::ui
