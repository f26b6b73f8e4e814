#include "moduletreemodel.h"

#include "report/report.h"

#include <QApplication>
#include <QStyle>

namespace ckpt::ui {

ModuleTreeModel::ModuleTreeModel(QObject* parent)
    : QAbstractItemModel(parent) {}

void ModuleTreeModel::setCheckpoint(LoadedPtr loaded) {
    beginResetModel();
    m_loaded = std::move(loaded);
    m_fullNames.clear();
    endResetModel();
}

int ModuleTreeModel::nodeOf(const QModelIndex& index) const {
    return index.isValid() ? static_cast<int>(index.internalId()) : 0;
}

QModelIndex ModuleTreeModel::indexForNode(int node, int column) const {
    if (!m_loaded || node <= 0 || static_cast<std::size_t>(node) >= m_loaded->tree.nodes().size())
        return {};
    return createIndex(m_loaded->tree.node(node).row, column, static_cast<quintptr>(node));
}

QString ModuleTreeModel::fullName(int node) const {
    if (!m_loaded || node <= 0)
        return {};
    if (m_fullNames.empty())
        m_fullNames.resize(m_loaded->tree.nodes().size());
    // Fill uncached ancestors top-down without recursion: a hostile name may have a million segments.
    std::vector<int> pending;
    for (int at = node; at > 0 && m_fullNames[static_cast<std::size_t>(at)].isNull();
         at = m_loaded->tree.node(at).parent)
        pending.push_back(at);
    for (auto it = pending.rbegin(); it != pending.rend(); ++it) {
        const ModuleNode& n = m_loaded->tree.node(*it);
        const QString segment = QString::fromStdString(n.name);
        m_fullNames[static_cast<std::size_t>(*it)] =
            n.parent > 0 ? m_fullNames[static_cast<std::size_t>(n.parent)] + QLatin1Char('.') + segment
                         : (segment.isNull() ? QStringLiteral("") : segment);
    }
    return m_fullNames[static_cast<std::size_t>(node)];
}

QModelIndex ModuleTreeModel::index(int row, int column, const QModelIndex& parent) const {
    if (!m_loaded || row < 0 || column < 0 || column >= ColumnCount)
        return {};
    const ModuleNode& p = m_loaded->tree.node(nodeOf(parent));
    if (static_cast<std::size_t>(row) >= p.children.size())
        return {};
    return createIndex(row, column, static_cast<quintptr>(p.children[static_cast<std::size_t>(row)]));
}

QModelIndex ModuleTreeModel::parent(const QModelIndex& child) const {
    if (!m_loaded || !child.isValid())
        return {};
    const int parentNode = m_loaded->tree.node(nodeOf(child)).parent;
    return indexForNode(parentNode);
}

int ModuleTreeModel::rowCount(const QModelIndex& parent) const {
    if (!m_loaded || (parent.isValid() && parent.column() != NameColumn))
        return 0;
    return static_cast<int>(m_loaded->tree.node(nodeOf(parent)).children.size());
}

int ModuleTreeModel::columnCount(const QModelIndex&) const {
    return ColumnCount;
}

QVariant ModuleTreeModel::headerData(int section, Qt::Orientation orientation, int role) const {
    if (orientation != Qt::Horizontal)
        return {};
    if (role == Qt::DisplayRole) {
        switch (section) {
        case NameColumn:
            return tr("Name");
        case ShapeColumn:
            return tr("Shape");
        case DTypeColumn:
            return tr("DType");
        case DeviceColumn:
            return tr("Device");
        case ParametersColumn:
            return tr("Parameters");
        case SizeColumn:
            return tr("Size");
        }
    }
    if (role == Qt::ToolTipRole && section == ParametersColumn)
        return tr("Number of elements, summed over every tensor below a module");
    if (role == Qt::TextAlignmentRole && section >= ParametersColumn)
        return QVariant::fromValue(Qt::AlignRight | Qt::AlignVCenter);
    return {};
}

QVariant ModuleTreeModel::data(const QModelIndex& index, int role) const {
    if (!m_loaded || !index.isValid())
        return {};
    const int id = nodeOf(index);
    const ModuleNode& n = m_loaded->tree.node(id);
    const Checkpoint& ck = *m_loaded->checkpoint;
    const TensorInfo* t = n.tensor >= 0 ? &ck.tensors[static_cast<std::size_t>(n.tensor)] : nullptr;
    const Value* v = n.value >= 0 ? ck.values[static_cast<std::size_t>(n.value)].value : nullptr;
    const int column = index.column();

    switch (role) {
    case FullNameRole:
        return fullName(id);
    case NodeRole:
        return id;
    case KindRole:
        return static_cast<int>(n.kind);
    case TensorRole:
        return n.tensor;
    case FindingsRole:
        return n.findings;
    case Qt::DisplayRole:
        switch (column) {
        case NameColumn:
            if (v)
                return QString::fromStdString(n.name + " = " + printable(valueRepr(v, 120)));
            return QString::fromStdString(printable(n.name));
        case ShapeColumn:
            return t ? QString::fromStdString(shapeText(t->shape)) : QString();
        case DTypeColumn:
            if (v)
                return QString::fromLatin1(valueKindName(v->kind));
            if (n.dtype == ModuleTree::kMixed)
                return tr("mixed");
            return n.dtype >= 0 ? QString::fromLatin1(dtypeName(static_cast<DType>(n.dtype)).data())
                                : QString();
        case DeviceColumn:
            if (n.device == ModuleTree::kMixed)
                return tr("mixed");
            return n.device >= 0
                       ? QString::fromStdString(m_loaded->tree.devices()[static_cast<std::size_t>(n.device)])
                       : QString();
        case ParametersColumn:
            return n.tensors ? QString::fromStdString(groupedNumber(n.parameters)) : QString();
        case SizeColumn:
            return n.tensors ? QString::fromStdString(humanBytes(n.bytes)) : QString();
        }
        return {};
    case SortRole:
        switch (column) {
        case NameColumn:
            return QString::fromStdString(n.name);
        case ShapeColumn:
            return t ? QVariant::fromValue<qulonglong>(t->numel()) : QVariant::fromValue<qulonglong>(0);
        case ParametersColumn:
            return QVariant::fromValue<qulonglong>(n.parameters);
        case SizeColumn:
            return QVariant::fromValue<qulonglong>(n.bytes);
        default:
            return data(index, Qt::DisplayRole);
        }
    case Qt::TextAlignmentRole:
        if (column >= ParametersColumn)
            return QVariant::fromValue(Qt::AlignRight | Qt::AlignVCenter);
        return {};
    case Qt::DecorationRole:
        if (column != NameColumn)
            return {};
        if (n.findings)
            return QApplication::style()->standardIcon(QStyle::SP_MessageBoxWarning);
        if (n.kind == ModuleNode::Kind::Module)
            return QApplication::style()->standardIcon(QStyle::SP_DirIcon);
        if (t)
            return QApplication::style()->standardIcon(QStyle::SP_FileIcon);
        return {};
    case Qt::ToolTipRole: {
        QString tip = fullName(id);
        if (t && !t->error.empty())
            tip += QLatin1Char('\n') + tr("Unreadable: %1").arg(QString::fromStdString(printable(t->error)));
        if (n.findings) {
            const std::string name = fullName(id).toStdString();
            for (const auto& f : ck.findings)
                if (f.severity == Severity::Security &&
                    (f.object == name || (id == 0 && f.object == "(root)")))
                    tip += QLatin1Char('\n') + QString::fromStdString(printable(f.message));
            if (tip == fullName(id))
                tip += QLatin1Char('\n') +
                       tr("%n security finding(s) below", nullptr, static_cast<int>(n.findings));
        }
        return tip;
    }
    case Qt::ForegroundRole:
        if (t && !t->error.empty())
            return QApplication::palette().brush(QPalette::Disabled, QPalette::Text);
        return {};
    }
    return {};
}

} // namespace ckpt::ui
