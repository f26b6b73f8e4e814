#include "treeproxy.h"

#include "moduletreemodel.h"

namespace ckpt::ui {

bool naturalLess(const QString& a, const QString& b) {
    qsizetype i = 0, j = 0;
    while (i < a.size() && j < b.size()) {
        if (a[i].isDigit() && b[j].isDigit()) {
            qsizetype ie = i, je = j;
            while (ie < a.size() && a[ie].isDigit())
                ++ie;
            while (je < b.size() && b[je].isDigit())
                ++je;
            // Compare values without converting: skip leading zeros, then the longer run is larger.
            qsizetype is = i, js = j;
            while (is + 1 < ie && a[is] == QLatin1Char('0'))
                ++is;
            while (js + 1 < je && b[js] == QLatin1Char('0'))
                ++js;
            if (ie - is != je - js)
                return ie - is < je - js;
            for (qsizetype k = 0; k < ie - is; ++k)
                if (a[is + k] != b[js + k])
                    return a[is + k] < b[js + k];
            i = ie;
            j = je;
            continue;
        }
        const QChar x = a[i].toCaseFolded(), y = b[j].toCaseFolded();
        if (x != y)
            return x < y;
        ++i;
        ++j;
    }
    if ((a.size() - i) != (b.size() - j))
        return a.size() - i < b.size() - j;
    return a < b;
}

TreeProxy::TreeProxy(QObject* parent)
    : QSortFilterProxyModel(parent) {
    setRecursiveFilteringEnabled(true);
    setSortRole(ModuleTreeModel::SortRole);
    connect(this, &QAbstractItemModel::modelReset, this, &TreeProxy::countMatches);
}

void TreeProxy::setFilter(const QString& text, Mode mode) {
    m_text = text;
    m_mode = mode;
    m_valid = true;
    m_error.clear();
    if (mode == Mode::Glob)
        m_regex = QRegularExpression(QRegularExpression::wildcardToRegularExpression(text));
    else if (mode == Mode::Regex)
        m_regex = QRegularExpression(text);
    if (mode != Mode::Substring && !m_regex.isValid()) {
        m_valid = false;
        m_error = m_regex.errorString();
    }
    m_regex.optimize();
    invalidateFilter();
    countMatches();
}

bool TreeProxy::matches(const QString& fullName) const {
    if (m_text.isEmpty())
        return true;
    if (!m_valid)
        return false;
    if (m_mode == Mode::Substring)
        return fullName.contains(m_text, Qt::CaseInsensitive);
    return m_regex.match(fullName).hasMatch();
}

bool TreeProxy::filterAcceptsRow(int sourceRow, const QModelIndex& sourceParent) const {
    if (m_text.isEmpty())
        return true;
    const QModelIndex index = sourceModel()->index(sourceRow, 0, sourceParent);
    return matches(index.data(ModuleTreeModel::FullNameRole).toString());
}

void TreeProxy::countMatches() {
    int count = -1;
    auto* model = qobject_cast<ModuleTreeModel*>(sourceModel());
    if (!m_text.isEmpty() && model && model->checkpoint()) {
        count = 0;
        const auto& nodes = model->checkpoint()->tree.nodes();
        for (std::size_t i = 1; i < nodes.size(); ++i)
            if (nodes[i].kind != ModuleNode::Kind::Module && matches(model->fullName(static_cast<int>(i))))
                ++count;
    }
    if (count != m_matches) {
        m_matches = count;
        Q_EMIT matchCountChanged(count);
    }
}

bool TreeProxy::lessThan(const QModelIndex& left, const QModelIndex& right) const {
    const QVariant l = left.data(ModuleTreeModel::SortRole);
    const QVariant r = right.data(ModuleTreeModel::SortRole);
    if (l.typeId() == QMetaType::QString && r.typeId() == QMetaType::QString)
        return naturalLess(l.toString(), r.toString());
    return QVariant::compare(l, r) == QPartialOrdering::Less;
}

} // namespace ckpt::ui
