#pragma once

#include "loadedcheckpoint.h"
#include "valuesmodel.h"

#include <QWidget>

class QComboBox;
class QHBoxLayout;
class QLabel;
class QSpinBox;
class QTableView;

namespace ckpt::ui {

// The values of a tensor as a table: pick the two dimensions shown and an index for each other one.
class ValuesPage final : public QWidget {
    Q_OBJECT
public:
    explicit ValuesPage(QWidget* parent = nullptr);

    void showTensor(const LoadedPtr& loaded, int tensor);
    void clear();
    ValuesModel* model() const { return m_model; }
    QTableView* view() const { return m_view; }

private:
    void rebuildControls();
    void applySlice();

    LoadedPtr m_loaded;
    int m_generation = 0; // of the tensor asked for last: a read that finishes for another is ignored
    ValuesModel* m_model;
    QLabel* m_message;
    QComboBox* m_rowDim;
    QComboBox* m_colDim;
    QWidget* m_indexBox;
    QHBoxLayout* m_indexLayout;
    std::vector<QSpinBox*> m_indices;
    QTableView* m_view;
};

} // namespace ckpt::ui
