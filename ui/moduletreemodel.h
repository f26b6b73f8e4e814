#pragma once

#include "loadedcheckpoint.h"

#include <QAbstractItemModel>

#include <vector>

namespace ckpt::ui {

// The module tree of one checkpoint: modules, tensors and non-tensor values, with totals per module.
class ModuleTreeModel final : public QAbstractItemModel {
    Q_OBJECT
public:
    enum Column {
        NameColumn,
        ShapeColumn,
        DTypeColumn,
        DeviceColumn,
        ParametersColumn,
        SizeColumn,
        ColumnCount
    };
    enum Role {
        SortRole = Qt::UserRole + 1, // numbers as numbers, names as text for natural sorting
        FullNameRole,                // the dotted name from the root
        NodeRole,                    // index into ModuleTree::nodes()
        KindRole,                    // ModuleNode::Kind
        TensorRole,                  // Checkpoint::tensors index or -1
        FindingsRole,                // number of security findings on the row or below
    };

    explicit ModuleTreeModel(QObject* parent = nullptr);

    void setCheckpoint(LoadedPtr loaded);
    const LoadedPtr& checkpoint() const { return m_loaded; }
    QModelIndex indexForNode(int node, int column = NameColumn) const;
    QString fullName(int node) const;

    QModelIndex index(int row, int column, const QModelIndex& parent = {}) const final;
    QModelIndex parent(const QModelIndex& child) const final;
    int rowCount(const QModelIndex& parent = {}) const final;
    int columnCount(const QModelIndex& parent = {}) const final;
    QVariant data(const QModelIndex& index, int role = Qt::DisplayRole) const final;
    QVariant headerData(int section, Qt::Orientation orientation, int role = Qt::DisplayRole) const final;

private:
    int nodeOf(const QModelIndex& index) const;

    LoadedPtr m_loaded;
    mutable std::vector<QString> m_fullNames; // filled on first use: filtering asks for every row
};

} // namespace ckpt::ui
