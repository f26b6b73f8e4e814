#pragma once

#include "analysis/elements.h"

#include <QAbstractTableModel>

#include <memory>
#include <optional>

namespace ckpt::ui {

// A 2-D slice of an N-D tensor: two chosen dimensions as rows and columns, a fixed index in every other.
// Cells are read from the mapping when the view asks for them, so a 50,000 x 50,000 tensor scrolls without
// being read as a whole.
class ValuesModel final : public QAbstractTableModel {
    Q_OBJECT
public:
    explicit ValuesModel(QObject* parent = nullptr);

    // Shows the tensor; returns false (and shows nothing) when its values cannot be read, with the reason.
    bool setTensor(CheckpointPtr checkpoint, const TensorInfo& tensor, QString* error = nullptr);
    void clear();
    // rowDim / colDim: dimensions shown (-1 for none); fixed: an index for each dimension (the shown ones
    // are ignored).
    void setSlice(int rowDim, int colDim, std::vector<std::int64_t> fixed);

    int rowDimension() const { return m_rowDim; }
    int columnDimension() const { return m_colDim; }
    const std::vector<std::int64_t>& fixedIndex() const { return m_fixed; }
    const TensorInfo* tensor() const { return m_reader ? &m_reader->tensor() : nullptr; }
    // Row-major element index of a cell.
    std::uint64_t elementIndex(int row, int column) const;

    int rowCount(const QModelIndex& parent = {}) const final;
    int columnCount(const QModelIndex& parent = {}) const final;
    QVariant data(const QModelIndex& index, int role = Qt::DisplayRole) const final;
    QVariant headerData(int section, Qt::Orientation orientation, int role = Qt::DisplayRole) const final;

private:
    std::int64_t extent(int dim) const;

    std::optional<TensorReader> m_reader;
    int m_rowDim = -1;
    int m_colDim = -1;
    std::vector<std::int64_t> m_fixed;
    bool m_complex = false;
};

} // namespace ckpt::ui
