#pragma once

#include "loadedcheckpoint.h"

#include "run/run.h"

#include <QFutureWatcher>
#include <QWidget>

#include <atomic>
#include <functional>
#include <memory>

class QComboBox;
class QCustomPlot;
class QLabel;
class QProgressBar;
class QSpinBox;
class QToolButton;
class QTimer;
class QTreeView;

namespace ckpt::ui {

class ModuleTreeModel;
class TreeProxy;

// A run found on disk, with the module tree of its last checkpoint to choose from.
struct LoadedRun {
    Run run;
    LoadedPtr last; // null when the last checkpoint cannot be opened
    QString error;
};
using LoadedRunPtr = std::shared_ptr<const LoadedRun>;

struct TimelineResult {
    std::optional<Timeline> timeline; // empty when cancelled or failed
    QString error;
};
using TimelineResultPtr = std::shared_ptr<const TimelineResult>;

// A training run over time: for the tensor or module chosen in the tree, curves of its norm, mean, std and
// change from the previous checkpoint, and its histograms across the run, as offset ridges or overlaid.
// Discovery and every figure are computed on worker threads, with progress and cancel.
class TimelineView final : public QWidget {
    Q_OBJECT
public:
    enum class HistogramMode { Ridges, Overlay };

    // A directory, a TensorFlow `checkpoint` state file, or several checkpoint files.
    explicit TimelineView(const QStringList& paths, QWidget* parent = nullptr);
    ~TimelineView() override;

    QString title() const;
    const LoadedRunPtr& run() const { return m_run; }
    bool isLoading() const { return m_loadWatcher != nullptr; }
    bool isComputing() const { return m_watcher != nullptr; }
    const TimelineResultPtr& result() const { return m_result; }

    // Selects a tensor or module by full name (empty: every tensor); false when the tree has no such row.
    bool selectName(const QString& fullName);
    QString selectedName() const { return m_name; }
    void cancel();
    void setBins(int bins);
    int bins() const;
    void setHistogramMode(HistogramMode mode);
    HistogramMode histogramMode() const;

    QTreeView* treeView() const { return m_tree; }
    QCustomPlot* curvesPlot() const { return m_curves; }
    QCustomPlot* histogramPlot() const { return m_hist; }
    // Runs on the worker thread before each computation (tests hold a worker back with it).
    void setWorkerHook(std::function<void()> hook) { m_workerHook = std::move(hook); }

Q_SIGNALS:
    void loadFinished(bool ok);
    void finished(bool cancelled);
    void statusMessage(const QString& text);

private:
    void onLoaded();
    void start();
    void showResult(const TimelineResultPtr& result);
    void drawCurves();
    void drawHistograms();
    void applyPalette();

    QStringList m_paths;
    LoadedRunPtr m_run;
    QFutureWatcher<LoadedRunPtr>* m_loadWatcher = nullptr;
    QString m_name;
    QString m_pendingSelect;
    bool m_hasPendingSelect = false;
    TimelineResultPtr m_result;
    QFutureWatcher<TimelineResultPtr>* m_watcher = nullptr;
    std::shared_ptr<std::atomic<bool>> m_cancel;
    std::shared_ptr<std::atomic<std::uint64_t>> m_progress;
    quint64 m_generation = 0;
    std::function<void()> m_workerHook;

    QLabel* m_header = nullptr;
    QLabel* m_titleLabel = nullptr;
    QTreeView* m_tree = nullptr;
    ModuleTreeModel* m_model = nullptr;
    TreeProxy* m_proxy = nullptr;
    QCustomPlot* m_curves = nullptr;
    QCustomPlot* m_hist = nullptr;
    QComboBox* m_mode = nullptr;
    QSpinBox* m_bins = nullptr;
    QProgressBar* m_progressBar = nullptr;
    QToolButton* m_cancelButton = nullptr;
    QTimer* m_progressTimer = nullptr;
    QTimer* m_restart = nullptr;
};

} // namespace ckpt::ui
