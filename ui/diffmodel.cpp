#include "diffmodel.h"

#include "treeproxy.h"

#include "model/dtype.h"
#include "report/report.h"

#include <QColor>
#include <QIcon>
#include <QPainter>
#include <QPainterPath>
#include <QPixmap>

#include <cmath>
#include <map>

namespace ckpt::ui {
namespace {

// A round badge with a sign: + added, − removed, ~ changed, = same, ! error, … pending.
QIcon statusIcon(int status) {
    static std::map<int, QIcon> cache;
    auto it = cache.find(status);
    if (it != cache.end())
        return it->second;
    QPixmap pm(32, 32);
    pm.fill(Qt::transparent);
    QPainter p(&pm);
    p.setRenderHint(QPainter::Antialiasing);
    const QColor c = DiffModel::statusColor(status);
    p.setBrush(c);
    p.setPen(QPen(c.darker(140), 2));
    p.drawEllipse(QRectF(2, 2, 28, 28));
    p.setPen(QPen(Qt::white, 4, Qt::SolidLine, Qt::RoundCap));
    switch (status) {
    case static_cast<int>(DiffStatus::Added):
        p.drawLine(QPointF(9, 16), QPointF(23, 16));
        p.drawLine(QPointF(16, 9), QPointF(16, 23));
        break;
    case static_cast<int>(DiffStatus::Removed):
        p.drawLine(QPointF(9, 16), QPointF(23, 16));
        break;
    case static_cast<int>(DiffStatus::Changed): {
        QPainterPath wave;
        wave.moveTo(8, 18);
        wave.cubicTo(11, 10, 15, 10, 16, 16);
        wave.cubicTo(17, 22, 21, 22, 24, 14);
        p.setBrush(Qt::NoBrush);
        p.drawPath(wave);
        break;
    }
    case static_cast<int>(DiffStatus::Same):
        p.drawLine(QPointF(10, 13), QPointF(22, 13));
        p.drawLine(QPointF(10, 20), QPointF(22, 20));
        break;
    case static_cast<int>(DiffStatus::Error):
        p.drawLine(QPointF(16, 8), QPointF(16, 18));
        p.drawPoint(QPointF(16, 24));
        break;
    default:
        for (int x : {10, 16, 22})
            p.drawPoint(QPointF(x, 16));
    }
    p.end();
    return cache[status] = QIcon(pm);
}

QString figure(double v) {
    if (std::isnan(v))
        return QStringLiteral("NaN");
    if (std::isinf(v))
        return v > 0 ? QStringLiteral("inf") : QStringLiteral("-inf");
    return QString::number(v, 'g', 4);
}

QString shapeOf(const CheckpointPtr& ck, int index) {
    if (!ck || index < 0)
        return {};
    return QString::fromStdString(shapeText(ck->tensors[static_cast<std::size_t>(index)].shape));
}

QString dtypeOf(const CheckpointPtr& ck, int index) {
    if (!ck || index < 0)
        return {};
    return QString::fromLatin1(dtypeName(ck->tensors[static_cast<std::size_t>(index)].dtype).data());
}

QString sides(const QString& a, const QString& b) {
    if (a.isEmpty())
        return b;
    if (b.isEmpty() || a == b)
        return a;
    return a + QStringLiteral(" → ") + b;
}

} // namespace

DiffModel::DiffModel(QObject* parent)
    : QAbstractItemModel(parent) {
    m_nodes.emplace_back();
}

QString DiffModel::statusText(int status) {
    if (status == kPending)
        return tr("comparing…");
    return QString::fromLatin1(diffStatusName(static_cast<DiffStatus>(status)));
}

QColor DiffModel::statusColor(int status) {
    switch (status) {
    case static_cast<int>(DiffStatus::Added):
        return QColor(46, 160, 67);
    case static_cast<int>(DiffStatus::Removed):
        return QColor(207, 34, 46);
    case static_cast<int>(DiffStatus::Changed):
        return QColor(219, 133, 0);
    case static_cast<int>(DiffStatus::Same):
        return QColor(140, 149, 159);
    case static_cast<int>(DiffStatus::Error):
        return QColor(130, 80, 223);
    default:
        return QColor(84, 174, 255);
    }
}

void DiffModel::setStructure(CheckpointPtr a, CheckpointPtr b, const DiffResult& structure,
                             bool valuesPending) {
    beginResetModel();
    m_a = std::move(a);
    m_b = std::move(b);
    m_tensors = structure.tensors;
    m_nodes.assign(1, Node{});
    m_tensorNode.assign(m_tensors.size(), -1);
    m_tensorPending.assign(m_tensors.size(), false);
    m_byName.clear();
    m_pending = 0;
    std::unordered_map<std::string, int> modules; // full name -> node
    for (std::size_t t = 0; t < m_tensors.size(); ++t) {
        const TensorDiff& d = m_tensors[t];
        m_byName.emplace(d.name, static_cast<int>(t));
        // Pairs whose values are still to be compared wait; shape changes are final already.
        if (valuesPending && d.a >= 0 && d.b >= 0 && !d.shapeChanged && !d.values && d.error.empty()) {
            m_tensorPending[t] = true;
            ++m_pending;
        }
        m_tensorNode[t] = insert(d.name, modules);
        m_nodes[static_cast<std::size_t>(m_tensorNode[t])].tensor = static_cast<int>(t);
    }
    m_values = structure.values;
    for (std::size_t v = 0; v < m_values.size(); ++v)
        m_nodes[static_cast<std::size_t>(insert(m_values[v].name, modules))].value = static_cast<int>(v);
    aggregate();
    endResetModel();
}

// The leaf node of a dotted name, with the modules above it made where missing.
int DiffModel::insert(const std::string& name, std::unordered_map<std::string, int>& modules) {
    int parent = 0;
    std::size_t start = 0;
    while (true) {
        const std::size_t dot = name.find('.', start);
        const bool last = dot == std::string::npos;
        const std::size_t end = last ? name.size() : dot;
        const std::string full = name.substr(0, end);
        if (!last)
            if (auto it = modules.find(full); it != modules.end()) {
                parent = it->second;
                start = dot + 1;
                continue;
            }
        Node n;
        n.name = QString::fromStdString(printable(name.substr(start, end - start)));
        n.fullName = QString::fromStdString(printable(full));
        n.parent = parent;
        n.row = static_cast<int>(m_nodes[static_cast<std::size_t>(parent)].children.size());
        const int node = static_cast<int>(m_nodes.size());
        m_nodes[static_cast<std::size_t>(parent)].children.push_back(node);
        m_nodes.push_back(std::move(n));
        if (last)
            return node;
        modules.emplace(full, node);
        parent = node;
        start = dot + 1;
    }
}

void DiffModel::updateTensors(const std::vector<TensorDiff>& diffs) {
    if (diffs.empty())
        return;
    std::vector<int> touched;
    for (const TensorDiff& d : diffs) {
        const auto it = m_byName.find(d.name);
        if (it == m_byName.end())
            continue;
        const auto t = static_cast<std::size_t>(it->second);
        m_tensors[t] = d;
        if (m_tensorPending[t]) {
            m_tensorPending[t] = false;
            --m_pending;
        }
        touched.push_back(m_tensorNode[t]);
    }
    aggregate();
    announce(touched);
}

void DiffModel::announce(const std::vector<int>& nodes) {
    // A view answers each dataChanged() by looking the row up among its laid-out rows, a linear search for
    // a row inside a collapsed module: a large batch is announced as one layout change instead (no row
    // moves, so no persistent index changes).
    if (nodes.size() > kBatchRows) {
        Q_EMIT layoutAboutToBeChanged({}, QAbstractItemModel::NoLayoutChangeHint);
        Q_EMIT layoutChanged({}, QAbstractItemModel::NoLayoutChangeHint);
        return;
    }
    std::vector<bool> seen(m_nodes.size(), false);
    for (int node : nodes)
        for (int n = node; n > 0 && !seen[static_cast<std::size_t>(n)];
             n = m_nodes[static_cast<std::size_t>(n)].parent) {
            seen[static_cast<std::size_t>(n)] = true; // the row and the modules summing it
            const Node& x = m_nodes[static_cast<std::size_t>(n)];
            const QModelIndex parent = indexOf(x.parent, 0);
            Q_EMIT dataChanged(index(x.row, 0, parent), index(x.row, ColumnCount - 1, parent));
        }
}

void DiffModel::finishPending(bool cancelled) {
    Q_UNUSED(cancelled);
    if (m_pending == 0)
        return;
    // Rows still waiting when the comparison stopped were never compared.
    std::vector<int> touched;
    for (std::size_t t = 0; t < m_tensorPending.size(); ++t)
        if (m_tensorPending[t]) {
            m_tensorPending[t] = false;
            m_tensors[t].status = DiffStatus::Error;
            m_tensors[t].error = "the comparison was cancelled before this tensor";
            touched.push_back(m_tensorNode[t]);
        }
    m_pending = 0;
    aggregate();
    announce(touched);
}

void DiffModel::aggregate() {
    // Children come after their parents in m_nodes: one backward sweep sums every module.
    for (Node& n : m_nodes)
        if (n.tensor < 0 && n.value < 0) {
            n.values = ValueDiff{};
            n.hasValues = false;
            n.added = n.removed = n.changed = n.same = n.pending = n.errors = 0;
        }
    for (std::size_t i = m_nodes.size(); i-- > 1;) {
        Node& n = m_nodes[i];
        Node& p = m_nodes[static_cast<std::size_t>(n.parent)];
        if (n.value >= 0) {
            const int st = statusOf(n);
            p.added += st == static_cast<int>(DiffStatus::Added);
            p.removed += st == static_cast<int>(DiffStatus::Removed);
            p.changed += st == static_cast<int>(DiffStatus::Changed);
        } else if (n.tensor >= 0) {
            const auto t = static_cast<std::size_t>(n.tensor);
            const TensorDiff& d = m_tensors[t];
            if (m_tensorPending[t])
                ++p.pending;
            else if (d.status == DiffStatus::Added)
                ++p.added;
            else if (d.status == DiffStatus::Removed)
                ++p.removed;
            else if (d.status == DiffStatus::Changed)
                ++p.changed;
            else if (d.status == DiffStatus::Same)
                ++p.same;
            else
                ++p.errors;
            if (d.values && !m_tensorPending[t]) {
                p.values.merge(*d.values);
                p.hasValues = true;
            }
        } else {
            p.added += n.added;
            p.removed += n.removed;
            p.changed += n.changed;
            p.same += n.same;
            p.pending += n.pending;
            p.errors += n.errors;
            if (n.hasValues) {
                p.values.merge(n.values);
                p.hasValues = true;
            }
        }
    }
}

int DiffModel::statusOf(const Node& n) const {
    if (n.value >= 0) {
        const ValueChange& v = m_values[static_cast<std::size_t>(n.value)];
        return static_cast<int>(!v.a ? DiffStatus::Added : !v.b ? DiffStatus::Removed : DiffStatus::Changed);
    }
    if (n.tensor >= 0) {
        const auto t = static_cast<std::size_t>(n.tensor);
        return m_tensorPending[t] ? kPending : static_cast<int>(m_tensors[t].status);
    }
    if (n.added + n.removed + n.changed + n.errors > 0) {
        if (n.changed + n.errors == 0 && n.same + n.pending == 0)
            return static_cast<int>(n.removed == 0 ? DiffStatus::Added
                                    : n.added == 0 ? DiffStatus::Removed
                                                   : DiffStatus::Changed);
        return static_cast<int>(DiffStatus::Changed);
    }
    if (n.pending > 0)
        return kPending;
    return static_cast<int>(DiffStatus::Same);
}

QModelIndex DiffModel::indexOf(int node, int column) const {
    if (node <= 0)
        return {};
    return createIndex(m_nodes[static_cast<std::size_t>(node)].row, column, static_cast<quintptr>(node));
}

QModelIndex DiffModel::indexForName(const QString& fullName) const {
    for (std::size_t i = 1; i < m_nodes.size(); ++i)
        if (m_nodes[i].fullName == fullName)
            return indexOf(static_cast<int>(i), 0);
    return {};
}

QModelIndex DiffModel::index(int row, int column, const QModelIndex& parent) const {
    if (row < 0 || column < 0 || column >= ColumnCount)
        return {};
    const int p = parent.isValid() ? static_cast<int>(parent.internalId()) : 0;
    const Node& n = m_nodes[static_cast<std::size_t>(p)];
    if (row >= static_cast<int>(n.children.size()))
        return {};
    return createIndex(row, column, static_cast<quintptr>(n.children[static_cast<std::size_t>(row)]));
}

QModelIndex DiffModel::parent(const QModelIndex& child) const {
    if (!child.isValid())
        return {};
    return indexOf(m_nodes[child.internalId()].parent, 0);
}

int DiffModel::rowCount(const QModelIndex& parent) const {
    if (parent.isValid() && parent.column() != 0)
        return 0;
    const int p = parent.isValid() ? static_cast<int>(parent.internalId()) : 0;
    return static_cast<int>(m_nodes[static_cast<std::size_t>(p)].children.size());
}

int DiffModel::columnCount(const QModelIndex&) const {
    return ColumnCount;
}

QVariant DiffModel::data(const QModelIndex& index, int role) const {
    if (!index.isValid())
        return {};
    const Node& n = m_nodes[index.internalId()];
    const int status = statusOf(n);
    const TensorDiff* d = n.tensor >= 0 ? &m_tensors[static_cast<std::size_t>(n.tensor)] : nullptr;
    const bool pending = status == kPending;
    const ValueDiff* v =
        d ? (d->values && !pending ? &*d->values : nullptr) : (n.hasValues ? &n.values : nullptr);
    switch (role) {
    case FullNameRole:
        return n.fullName;
    case StatusRole:
        return status;
    case TensorDiffRole:
        return n.tensor;
    case ValueRole:
        return n.value;
    case Qt::DecorationRole:
        if (index.column() == NameColumn)
            return statusIcon(status);
        return {};
    case Qt::ForegroundRole:
        if (index.column() == StatusColumn)
            return statusColor(status).darker(120);
        if (status == static_cast<int>(DiffStatus::Same))
            return QColor(110, 118, 129);
        return {};
    case Qt::BackgroundRole:
        if (status == static_cast<int>(DiffStatus::Same) || pending)
            return {};
        {
            QColor c = statusColor(status);
            c.setAlpha(38);
            return c;
        }
    case Qt::ToolTipRole:
        if (d && !d->error.empty())
            return QString::fromStdString(printable(d->error));
        if (n.value >= 0)
            return data(index.siblingAtColumn(ShapeColumn), Qt::DisplayRole);
        if (!d)
            return tr("%1 added, %2 removed, %3 changed, %4 same below")
                .arg(n.added)
                .arg(n.removed)
                .arg(n.changed)
                .arg(n.same);
        return {};
    case Qt::TextAlignmentRole:
        if (index.column() >= RelL2Column)
            return QVariant(Qt::AlignRight | Qt::AlignVCenter);
        return {};
    case Qt::DisplayRole:
    case SortRole: {
        const bool sort = role == SortRole;
        switch (index.column()) {
        case NameColumn:
            return n.name;
        case StatusColumn:
            if (sort)
                return status;
            if (n.value >= 0)
                return statusText(status) + tr(": value");
            if (!d)
                return statusText(status) + (n.changed + n.added + n.removed > 0
                                                 ? tr(" (%1)").arg(n.changed + n.added + n.removed)
                                                 : QString());
            if (d->status == DiffStatus::Changed && d->kind != ChangeKind::Values && !pending)
                return statusText(status) + QStringLiteral(": ") +
                       QString::fromLatin1(changeKindName(d->kind));
            return statusText(status);
        case ShapeColumn:
            if (n.value >= 0) {
                const ValueChange& c = m_values[static_cast<std::size_t>(n.value)];
                return sides(QString::fromStdString(printable(c.a.value_or(""))),
                             QString::fromStdString(printable(c.b.value_or(""))));
            }
            return d ? sides(shapeOf(m_a, d->a), shapeOf(m_b, d->b)) : QVariant();
        case DTypeColumn:
            return d ? sides(dtypeOf(m_a, d->a), dtypeOf(m_b, d->b)) : QVariant();
        case RelL2Column:
            if (!v)
                return sort ? QVariant(-1.0) : QVariant();
            return sort ? QVariant(v->relL2()) : QVariant(figure(v->relL2()));
        case MaxAbsColumn:
            if (!v)
                return sort ? QVariant(-1.0) : QVariant();
            return sort ? QVariant(v->maxAbs) : QVariant(figure(v->maxAbs));
        case CosineColumn:
            if (!v)
                return sort ? QVariant(-2.0) : QVariant();
            return sort ? QVariant(v->cosine()) : QVariant(QString::number(v->cosine(), 'f', 6));
        case ChangedColumn:
            if (!v)
                return sort ? QVariant(-1.0) : QVariant();
            return sort
                       ? QVariant(v->changedFraction())
                       : QVariant(QString::number(v->changedFraction() * 100, 'f', 1) + QStringLiteral(" %"));
        default:
            return {};
        }
    }
    default:
        return {};
    }
}

QVariant DiffModel::headerData(int section, Qt::Orientation orientation, int role) const {
    if (orientation != Qt::Horizontal)
        return {};
    if (role == Qt::DisplayRole) {
        switch (section) {
        case NameColumn:
            return tr("Name");
        case StatusColumn:
            return tr("Status");
        case ShapeColumn:
            return tr("Shape");
        case DTypeColumn:
            return tr("DType");
        case RelL2Column:
            return tr("Rel. L2");
        case MaxAbsColumn:
            return tr("Max |B−A|");
        case CosineColumn:
            return tr("Cosine");
        case ChangedColumn:
            return tr("Changed");
        default:
            return {};
        }
    }
    if (role == Qt::ToolTipRole && section == RelL2Column)
        return tr("‖B − A‖ / ‖A‖; for a module, over all its tensors together");
    return {};
}

DiffProxy::DiffProxy(QObject* parent)
    : QSortFilterProxyModel(parent) {
    setRecursiveFilteringEnabled(true);
    setSortRole(DiffModel::SortRole);
}

void DiffProxy::setChangedOnly(bool on) {
    if (m_changedOnly == on)
        return;
    m_changedOnly = on;
    invalidateRowsFilter();
}

bool DiffProxy::filterAcceptsRow(int sourceRow, const QModelIndex& sourceParent) const {
    if (!m_changedOnly)
        return true;
    const QModelIndex i = sourceModel()->index(sourceRow, 0, sourceParent);
    if (i.data(DiffModel::ValueRole).toInt() >= 0)
        return true; // only values that differ are listed
    if (i.data(DiffModel::TensorDiffRole).toInt() < 0)
        return false; // modules stay through their matching tensors (recursive filtering)
    return i.data(DiffModel::StatusRole).toInt() != static_cast<int>(DiffStatus::Same);
}

bool DiffProxy::lessThan(const QModelIndex& left, const QModelIndex& right) const {
    const QVariant l = left.data(DiffModel::SortRole), r = right.data(DiffModel::SortRole);
    if (l.typeId() == QMetaType::QString && r.typeId() == QMetaType::QString)
        return naturalLess(l.toString(), r.toString());
    return l.toDouble() < r.toDouble();
}

} // namespace ckpt::ui
