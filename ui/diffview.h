#pragma once

#include "loadedcheckpoint.h"

#include "diff/diff.h"

#include <QFutureWatcher>
#include <QWidget>

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

class QCheckBox;
class QCustomPlot;
class QLabel;
class QProgressBar;
class QSpinBox;
class QToolButton;
class QTimer;
class QTreeView;

namespace ckpt::ui {

class DiffModel;
class DiffProxy;

struct LoadedDiff {
    LoadedPtr a, b;
    DiffResult structure; // names, statuses and structure of every tensor, before any value is read
    QString error;
};
using LoadedDiffPtr = std::shared_ptr<const LoadedDiff>;

struct DiffRunResult {
    std::optional<DiffResult> result; // empty when cancelled or failed
    QString error;
};
using DiffRunResultPtr = std::shared_ptr<const DiffRunResult>;

struct PairHistograms {
    std::optional<DiffHistograms> histograms; // both sides and B - A
    std::optional<TensorStats> only;          // a tensor on one side only
    bool onlyInB = false;
    QString error;
};
using PairHistogramsPtr = std::shared_ptr<const PairHistograms>;

// Diff mode: two checkpoints merged into one tree with each row's status and change figures, filled in as
// a worker thread compares the values; for the selected tensor both histograms overlaid and the histogram
// of B - A.
class DiffView final : public QWidget {
    Q_OBJECT
public:
    DiffView(const QString& pathA, const QString& pathB, QWidget* parent = nullptr);
    ~DiffView() override;

    QString pathA() const { return m_pathA; }
    QString pathB() const { return m_pathB; }
    QString title() const;
    bool isLoading() const { return m_loadWatcher != nullptr; }
    bool isComparing() const { return m_watcher != nullptr; }
    const LoadedDiffPtr& loaded() const { return m_loaded; }
    const DiffRunResultPtr& result() const { return m_result; }
    const PairHistogramsPtr& histograms() const { return m_histResult; }

    bool selectName(const QString& fullName);
    QString selectedName() const;
    void setChangedOnly(bool on);
    // Overrides the automatic name alignment (the prefixes stripped from A's and B's names, as ckpt diff's
    // --prefix-a / --prefix-b); two empty optionals go back to the automatic rule. Compares again.
    void setAlignment(std::optional<std::string> prefixA, std::optional<std::string> prefixB);
    const DiffOptions& options() const { return m_options; }
    void cancel();
    int bins() const;
    void setBins(int bins);

    DiffModel* model() const { return m_model; }
    DiffProxy* proxy() const { return m_proxy; }
    QTreeView* treeView() const { return m_tree; }
    QCustomPlot* plot() const { return m_plot; }
    // Runs on the worker thread before the value comparison starts (tests hold it back with it).
    void setWorkerHook(std::function<void()> hook) { m_workerHook = std::move(hook); }

Q_SIGNALS:
    void loadFinished(bool ok);
    void comparisonFinished(bool cancelled);
    void histogramsFinished();
    void statusMessage(const QString& text);

private:
    struct Inbox {
        std::mutex mutex;
        std::vector<TensorDiff> diffs;
    };
    void onLoaded();
    void startComparison();
    void drain();
    void onSelection();
    void startHistograms();
    void showFigures();
    void drawHistograms();
    void updateHeader();

    void alignmentDialog();

    QString m_pathA, m_pathB;
    DiffOptions m_options;
    LoadedDiffPtr m_loaded;
    QFutureWatcher<LoadedDiffPtr>* m_loadWatcher = nullptr;
    DiffRunResultPtr m_result;
    QFutureWatcher<DiffRunResultPtr>* m_watcher = nullptr;
    std::shared_ptr<Inbox> m_inbox;
    std::shared_ptr<std::atomic<bool>> m_cancel;
    std::shared_ptr<std::atomic<std::uint64_t>> m_progress;
    std::function<void()> m_workerHook;
    QString m_pendingSelect;

    PairHistogramsPtr m_histResult;
    QFutureWatcher<PairHistogramsPtr>* m_histWatcher = nullptr;
    std::shared_ptr<std::atomic<bool>> m_histCancel;
    quint64 m_histGeneration = 0;
    int m_selectedTensor = -1;

    QLabel* m_header = nullptr;
    QCheckBox* m_changedOnly = nullptr;
    QToolButton* m_alignButton = nullptr;
    QProgressBar* m_progressBar = nullptr;
    QToolButton* m_cancelButton = nullptr;
    QTreeView* m_tree = nullptr;
    DiffModel* m_model = nullptr;
    DiffProxy* m_proxy = nullptr;
    QLabel* m_selTitle = nullptr;
    QLabel* m_figures = nullptr;
    QSpinBox* m_bins = nullptr;
    QCustomPlot* m_plot = nullptr;
    QTimer* m_drainTimer = nullptr;
    QTimer* m_restart = nullptr;
};

} // namespace ckpt::ui
