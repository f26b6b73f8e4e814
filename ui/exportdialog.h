#pragma once

#include "loadedcheckpoint.h"

#include "export/exporter.h"

#include <QAbstractItemModel>
#include <QDialog>
#include <QFutureWatcher>

#include <atomic>
#include <functional>
#include <memory>
#include <vector>

class QCheckBox;
class QComboBox;
class QLabel;
class QLineEdit;
class QProgressBar;
class QPushButton;
class QTimer;
class QTreeView;
class QTreeWidget;

namespace ckpt::ui {

// The module tree with a check box on every row, for choosing what an export writes. A model of its own, so
// the browser's tree model stays as it is. Modules are checked, unchecked or partly checked from the tensors
// below them; checking a module checks everything below it.
class ExportSelectionModel final : public QAbstractItemModel {
    Q_OBJECT
public:
    enum Column { NameColumn, ShapeColumn, SizeColumn, ColumnCount };

    explicit ExportSelectionModel(LoadedPtr loaded, QObject* parent = nullptr);

    // Names of the checked tensors and values; empty when everything is checked.
    std::vector<std::string> checkedNames() const;
    int checkedTensorCount() const { return m_checkedTensors; }
    void setAllChecked(bool checked);
    QModelIndex indexForNode(int node) const;

    QModelIndex index(int row, int column, const QModelIndex& parent = {}) const final;
    QModelIndex parent(const QModelIndex& child) const final;
    int rowCount(const QModelIndex& parent = {}) const final;
    int columnCount(const QModelIndex& parent = {}) const final;
    QVariant data(const QModelIndex& index, int role = Qt::DisplayRole) const final;
    bool setData(const QModelIndex& index, const QVariant& value, int role = Qt::EditRole) final;
    Qt::ItemFlags flags(const QModelIndex& index) const final;
    QVariant headerData(int section, Qt::Orientation orientation, int role = Qt::DisplayRole) const final;

Q_SIGNALS:
    void selectionChanged();

private:
    int nodeOf(const QModelIndex& index) const {
        return index.isValid() ? static_cast<int>(index.internalId()) : 0;
    }
    void setSubtree(int node, bool checked);
    void recount();
    void emitSubtreeChanged(int node);

    LoadedPtr m_loaded;
    std::vector<std::uint8_t> m_checked; // per leaf node (tensor or value)
    std::vector<std::uint32_t> m_leaves; // per node: leaves below
    std::vector<std::uint32_t> m_ticked; // per node: checked leaves below
    int m_checkedTensors = 0;
};

// File > Export…: choose tensors in the tree, set the options (preset, filters, renames, device map, dtype
// cast, format), watch the preview of the keys and size, then write the file on a worker thread with
// progress and cancel.
class ExportDialog final : public QDialog {
    Q_OBJECT
public:
    explicit ExportDialog(LoadedPtr loaded, QWidget* parent = nullptr);
    ~ExportDialog() override;

    ExportOptions options() const;
    void setDestination(const QString& path);
    void startExport();
    void cancelExport();
    bool isExporting() const { return m_exportWatcher != nullptr; }
    // Called on the worker thread at each progress step of an export (tests hold the worker with it).
    void setWorkerProgressHook(std::function<void()> hook) { m_workerHook = std::move(hook); }

    ExportSelectionModel* selectionModel() const { return m_model; }
    QTreeView* selectionView() const { return m_tree; }
    QTreeWidget* previewList() const { return m_preview; }
    QLabel* summaryLabel() const { return m_summary; }
    QLabel* statusLabel() const { return m_status; }
    QComboBox* presetBox() const { return m_preset; }
    QComboBox* dtypeBox() const { return m_dtype; }
    QComboBox* formatBox() const { return m_format; }
    QLineEdit* includeEdit() const { return m_include; }
    QLineEdit* excludeEdit() const { return m_exclude; }
    QLineEdit* stripEdit() const { return m_strip; }
    QLineEdit* addPrefixEdit() const { return m_addPrefix; }
    QLineEdit* renameEdit() const { return m_rename; }
    QLineEdit* deviceMapEdit() const { return m_deviceMap; }
    QLineEdit* keepDtypeEdit() const { return m_keepDtype; }
    QCheckBox* keepValuesBox() const { return m_keepValues; }
    QProgressBar* progressBar() const { return m_progress; }
    QPushButton* exportButton() const { return m_exportButton; }
    QPushButton* cancelButton() const { return m_cancelButton; }

Q_SIGNALS:
    void previewUpdated();
    void exportFinished(bool ok, const QString& message);

protected:
    void reject() override;

private:
    struct Preview {
        quint64 generation = 0;
        std::shared_ptr<const ExportPlan> plan;
        ExportLayout layout;
        QString error;
    };
    struct Outcome {
        bool ok = false;
        QString message;
    };

    void schedulePreview();
    void startPreview();
    void showPreview();
    void onExportDone();
    void browse();
    void updateButtons();

    LoadedPtr m_loaded;
    ExportSelectionModel* m_model;
    QTreeView* m_tree;
    QComboBox* m_preset;
    QLineEdit* m_include;
    QLineEdit* m_exclude;
    QLineEdit* m_strip;
    QLineEdit* m_addPrefix;
    QLineEdit* m_rename;
    QLineEdit* m_deviceMap;
    QComboBox* m_dtype;
    QLineEdit* m_keepDtype;
    QCheckBox* m_keepValues;
    QComboBox* m_format;
    QLineEdit* m_destination;
    QTreeWidget* m_preview;
    QLabel* m_summary;
    QLabel* m_status;
    QProgressBar* m_progress;
    QPushButton* m_exportButton;
    QPushButton* m_cancelButton;
    QTimer* m_previewTimer;
    QTimer* m_progressTimer;

    quint64 m_generation = 0;
    bool m_previewRunning = false;
    bool m_previewAgain = false;
    bool m_planOk = false;
    QFutureWatcher<Preview>* m_previewWatcher;
    QFutureWatcher<Outcome>* m_exportWatcher = nullptr;
    // shared with the worker, which may outlive a cancelled dialog for a moment
    struct Progress {
        std::atomic<quint64> done{0}, total{1};
        std::atomic<bool> cancel{false};
    };
    std::shared_ptr<Progress> m_exportProgress;
    std::function<void()> m_workerHook;
};

} // namespace ckpt::ui
