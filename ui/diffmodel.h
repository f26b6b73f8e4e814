#pragma once

#include "diff/diff.h"

#include <QAbstractItemModel>
#include <QSortFilterProxyModel>

#include <unordered_map>
#include <vector>

namespace ckpt::ui {

// Two checkpoints merged into one tree of names: every tensor of either side with its status (added,
// removed, changed, same, or still being compared) and its change figures, every module with the figures
// of the tensors below it taken together. Built from the structure first; value figures arrive as the
// comparison finishes each tensor (updateTensors()).
class DiffModel final : public QAbstractItemModel {
    Q_OBJECT
public:
    enum Column {
        NameColumn,
        StatusColumn,
        ShapeColumn,
        DTypeColumn,
        RelL2Column,
        MaxAbsColumn,
        CosineColumn,
        ChangedColumn,
        ColumnCount
    };
    enum Role {
        SortRole = Qt::UserRole + 1, // numbers as numbers (rows without a figure sort lowest)
        FullNameRole,
        StatusRole,     // DiffStatus as int, or kPending
        TensorDiffRole, // index into tensors(), -1 for modules and values
        ValueRole,      // index into values() for a non-tensor value that differs, else -1
    };
    static constexpr int kPending = -1;

    explicit DiffModel(QObject* parent = nullptr);

    // The structure of a comparison (DiffResult of a structure-only pass, or a finished one).
    void setStructure(CheckpointPtr a, CheckpointPtr b, const DiffResult& structure, bool valuesPending);
    // Figures of tensors whose comparison finished; modules above them are summed again.
    void updateTensors(const std::vector<TensorDiff>& diffs);
    // The comparison ended (finished or cancelled): rows still pending stay marked so.
    void finishPending(bool cancelled);

    const std::vector<TensorDiff>& tensors() const { return m_tensors; }
    const std::vector<ValueChange>& values() const { return m_values; }
    const CheckpointPtr& a() const { return m_a; }
    const CheckpointPtr& b() const { return m_b; }
    int pendingCount() const { return m_pending; }
    QModelIndex indexForName(const QString& fullName) const;
    // Status of a row as a word ("added", "removed", "changed", "same", "error", "pending").
    static QString statusText(int status);
    static QColor statusColor(int status);

    QModelIndex index(int row, int column, const QModelIndex& parent = {}) const final;
    QModelIndex parent(const QModelIndex& child) const final;
    int rowCount(const QModelIndex& parent = {}) const final;
    int columnCount(const QModelIndex& parent = {}) const final;
    QVariant data(const QModelIndex& index, int role = Qt::DisplayRole) const final;
    QVariant headerData(int section, Qt::Orientation orientation, int role = Qt::DisplayRole) const final;

private:
    struct Node {
        QString name;
        QString fullName;
        int parent = -1;
        int row = 0;
        std::vector<int> children;
        int tensor = -1; // index into m_tensors
        int value = -1;  // index into m_values
        // Modules: over the tensors below.
        ValueDiff values;
        bool hasValues = false;
        int added = 0, removed = 0, changed = 0, same = 0, pending = 0, errors = 0;
    };
    int statusOf(const Node& n) const;
    int insert(const std::string& name, std::unordered_map<std::string, int>& modules);
    void announce(const std::vector<int>& nodes);
    static constexpr std::size_t kBatchRows = 64;
    void aggregate();
    QModelIndex indexOf(int node, int column) const;

    CheckpointPtr m_a, m_b;
    std::vector<TensorDiff> m_tensors;
    std::vector<ValueChange> m_values;
    std::vector<bool> m_tensorPending;
    std::vector<Node> m_nodes; // m_nodes[0] is the invisible root
    std::vector<int> m_tensorNode;
    std::unordered_map<std::string, int> m_byName; // TensorDiff::name -> m_tensors index
    int m_pending = 0;
};

// Sorting (names in natural order, figures as numbers) and the "changed only" filter, which keeps every
// tensor that is not the same on both sides, with its modules.
class DiffProxy final : public QSortFilterProxyModel {
    Q_OBJECT
public:
    explicit DiffProxy(QObject* parent = nullptr);
    void setChangedOnly(bool on);
    bool changedOnly() const { return m_changedOnly; }

protected:
    bool filterAcceptsRow(int sourceRow, const QModelIndex& sourceParent) const final;
    bool lessThan(const QModelIndex& left, const QModelIndex& right) const final;

private:
    bool m_changedOnly = false;
};

} // namespace ckpt::ui
