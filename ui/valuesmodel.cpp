#include "valuesmodel.h"

#include "io/error.h"

#include <limits>

namespace ckpt::ui {

ValuesModel::ValuesModel(QObject* parent)
    : QAbstractTableModel(parent) {}

void ValuesModel::clear() {
    beginResetModel();
    m_reader.reset();
    m_fixed.clear();
    m_rowDim = m_colDim = -1;
    endResetModel();
}

bool ValuesModel::setTensor(CheckpointPtr checkpoint, const TensorInfo& tensor, QString* error) {
    beginResetModel();
    m_reader.reset();
    try {
        m_reader.emplace(std::move(checkpoint), tensor);
    } catch (const Error& e) {
        if (error)
            *error = QString::fromStdString(e.message());
        endResetModel();
        return false;
    }
    const std::size_t nd = tensor.shape.size();
    m_fixed.assign(nd, 0);
    // The last two dimensions, as a matrix is printed; a vector as one column.
    m_rowDim = nd >= 2 ? static_cast<int>(nd) - 2 : (nd == 1 ? 0 : -1);
    m_colDim = nd >= 2 ? static_cast<int>(nd) - 1 : -1;
    m_complex = tensor.dtype == DType::Complex32 || tensor.dtype == DType::Complex64 ||
                tensor.dtype == DType::Complex128;
    endResetModel();
    return true;
}

void ValuesModel::setSlice(int rowDim, int colDim, std::vector<std::int64_t> fixed) {
    if (!m_reader)
        return;
    const int nd = static_cast<int>(m_reader->tensor().shape.size());
    beginResetModel();
    m_rowDim = rowDim >= 0 && rowDim < nd ? rowDim : -1;
    m_colDim = colDim >= 0 && colDim < nd && colDim != m_rowDim ? colDim : -1;
    fixed.resize(static_cast<std::size_t>(nd), 0);
    for (int d = 0; d < nd; ++d)
        fixed[static_cast<std::size_t>(d)] = std::clamp<std::int64_t>(
            fixed[static_cast<std::size_t>(d)], 0, std::max<std::int64_t>(extent(d) - 1, 0));
    m_fixed = std::move(fixed);
    endResetModel();
}

std::int64_t ValuesModel::extent(int dim) const {
    return dim >= 0 && m_reader ? m_reader->tensor().shape[static_cast<std::size_t>(dim)] : 1;
}

int ValuesModel::rowCount(const QModelIndex& parent) const {
    if (parent.isValid() || !m_reader || m_reader->numel() == 0)
        return 0;
    return static_cast<int>(std::min<std::int64_t>(extent(m_rowDim), std::numeric_limits<int>::max()));
}

int ValuesModel::columnCount(const QModelIndex& parent) const {
    if (parent.isValid() || !m_reader || m_reader->numel() == 0)
        return 0;
    return static_cast<int>(std::min<std::int64_t>(extent(m_colDim), std::numeric_limits<int>::max()));
}

std::uint64_t ValuesModel::elementIndex(int row, int column) const {
    const auto& shape = m_reader->tensor().shape;
    std::uint64_t linear = 0;
    for (std::size_t d = 0; d < shape.size(); ++d) {
        std::int64_t i = m_fixed[d];
        if (static_cast<int>(d) == m_rowDim)
            i = row;
        else if (static_cast<int>(d) == m_colDim)
            i = column;
        linear = linear * static_cast<std::uint64_t>(shape[d]) + static_cast<std::uint64_t>(i);
    }
    return linear;
}

QVariant ValuesModel::data(const QModelIndex& index, int role) const {
    if (!m_reader || !index.isValid())
        return {};
    if (role == Qt::TextAlignmentRole)
        return QVariant::fromValue(Qt::AlignRight | Qt::AlignVCenter);
    if (role != Qt::DisplayRole && role != Qt::ToolTipRole && role != Qt::UserRole)
        return {};
    try {
        const std::uint64_t i = elementIndex(index.row(), index.column());
        if (m_complex) {
            const auto z = m_reader->elementComplex(i);
            return QStringLiteral("%1%2%3j")
                .arg(z.real(), 0, 'g', 7)
                .arg(z.imag() < 0 ? "" : "+")
                .arg(z.imag(), 0, 'g', 7);
        }
        const double v = m_reader->element(i);
        if (role == Qt::UserRole)
            return v;
        if (role == Qt::ToolTipRole)
            return QString::number(v, 'g', 17);
        return QString::number(v, 'g', 7);
    } catch (const Error& e) {
        return role == Qt::ToolTipRole ? QVariant(QString::fromStdString(e.message()))
                                       : QVariant(tr("error"));
    }
}

QVariant ValuesModel::headerData(int section, Qt::Orientation, int role) const {
    if (role == Qt::DisplayRole)
        return section;
    return {};
}

} // namespace ckpt::ui
