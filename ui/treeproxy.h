#pragma once

#include <QRegularExpression>
#include <QSortFilterProxyModel>

namespace ckpt::ui {

// Natural order, the same in every locale: runs of digits compare by value (`2` < `10`), other
// characters case-insensitively; ties are broken by the exact text.
bool naturalLess(const QString& a, const QString& b);

// Sorting and filtering of the module tree: names in natural order (`layers.2` before `layers.10`), numbers
// as numbers; the filter matches full dotted names by substring, glob or regular expression and keeps each
// match with its ancestors.
class TreeProxy final : public QSortFilterProxyModel {
    Q_OBJECT
public:
    enum class Mode { Substring, Glob, Regex };

    explicit TreeProxy(QObject* parent = nullptr);

    void setFilter(const QString& text, Mode mode);
    QString filterText() const { return m_text; }
    bool filterIsValid() const { return m_valid; }
    QString filterError() const { return m_error; }
    // Tensors and values whose full name matches (modules are not counted); -1 without a filter.
    int matchCount() const { return m_matches; }

Q_SIGNALS:
    void matchCountChanged(int count);

protected:
    bool filterAcceptsRow(int sourceRow, const QModelIndex& sourceParent) const final;
    bool lessThan(const QModelIndex& left, const QModelIndex& right) const final;

private:
    bool matches(const QString& fullName) const;
    void countMatches();

    QString m_text;
    Mode m_mode = Mode::Substring;
    QRegularExpression m_regex;
    bool m_valid = true;
    QString m_error;
    int m_matches = -1;
};

} // namespace ckpt::ui
