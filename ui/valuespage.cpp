#include "valuespage.h"

#include "io/error.h"

#include <QComboBox>
#include <QFutureWatcher>
#include <QHBoxLayout>
#include <QHeaderView>
#include <QLabel>
#include <QSpinBox>
#include <QTableView>
#include <QVBoxLayout>
#include <QtConcurrent/QtConcurrentRun>

namespace ckpt::ui {

ValuesPage::ValuesPage(QWidget* parent)
    : QWidget(parent)
    , m_model(new ValuesModel(this)) {
    auto* layout = new QVBoxLayout(this);
    auto* dims = new QHBoxLayout;
    dims->addWidget(new QLabel(tr("Rows:"), this));
    m_rowDim = new QComboBox(this);
    m_rowDim->setAccessibleName(tr("Dimension shown as rows"));
    dims->addWidget(m_rowDim);
    dims->addWidget(new QLabel(tr("Columns:"), this));
    m_colDim = new QComboBox(this);
    m_colDim->setAccessibleName(tr("Dimension shown as columns"));
    dims->addWidget(m_colDim);
    m_indexBox = new QWidget(this);
    m_indexLayout = new QHBoxLayout(m_indexBox);
    m_indexLayout->setContentsMargins(0, 0, 0, 0);
    dims->addWidget(m_indexBox);
    dims->addStretch();
    layout->addLayout(dims);
    m_message = new QLabel(this);
    m_message->setWordWrap(true);
    m_message->hide();
    layout->addWidget(m_message);
    m_view = new QTableView(this);
    m_view->setModel(m_model);
    // Uniform sizes: the view never measures rows it does not show, so huge tensors scroll at once.
    m_view->verticalHeader()->setSectionResizeMode(QHeaderView::Fixed);
    m_view->horizontalHeader()->setSectionResizeMode(QHeaderView::Fixed);
    m_view->horizontalHeader()->setDefaultSectionSize(96);
    m_view->setWordWrap(false);
    layout->addWidget(m_view, 1);
    connect(m_rowDim, &QComboBox::activated, this, &ValuesPage::applySlice);
    connect(m_colDim, &QComboBox::activated, this, &ValuesPage::applySlice);
}

void ValuesPage::clear() {
    ++m_generation;
    m_loaded.reset();
    m_model->clear();
    m_message->hide();
    rebuildControls();
}

void ValuesPage::showTensor(const LoadedPtr& loaded, int tensor) {
    m_loaded = loaded;
    const int generation = ++m_generation;
    const TensorInfo& t = loaded->checkpoint->tensors[static_cast<std::size_t>(tensor)];
    // Data read on demand (a chunked HDF5 dataset): read it on a worker thread first, the page says so.
    const auto& ck = *loaded->checkpoint;
    if (t.storage >= 0 && static_cast<std::size_t>(t.storage) < ck.storages.size()) {
        const auto source = static_cast<std::size_t>(ck.storages[static_cast<std::size_t>(t.storage)].source);
        if (source < ck.sources.size() && ck.sources[source].file && !ck.sources[source].file->isLoaded()) {
            m_model->clear();
            rebuildControls();
            m_message->setText(tr("Reading the values of %1…").arg(QString::fromStdString(t.name)));
            m_message->show();
            auto* watcher = new QFutureWatcher<void>(this);
            connect(watcher, &QFutureWatcher<void>::finished, this,
                    [this, watcher, loaded, tensor, generation] {
                        watcher->deleteLater();
                        if (generation == m_generation)
                            showTensor(loaded,
                                       tensor); // loaded now, or its error is kept for setTensor to report
                    });
            auto file = ck.sources[source].file;
            watcher->setFuture(QtConcurrent::run([file] {
                try {
                    file->ensureReadable();
                } catch (const Error&) {
                }
            }));
            return;
        }
    }
    QString error;
    if (!m_model->setTensor(loaded->checkpoint, t, &error)) {
        m_message->setText(
            tr("The values of %1 cannot be shown: %2").arg(QString::fromStdString(t.name), error));
        m_message->show();
    } else {
        m_message->hide();
    }
    rebuildControls();
}

void ValuesPage::rebuildControls() {
    m_indices.clear();
    while (QLayoutItem* item = m_indexLayout->takeAt(0)) {
        if (item->widget())
            item->widget()->deleteLater();
        delete item;
    }
    m_rowDim->clear();
    m_colDim->clear();
    const TensorInfo* t = m_model->tensor();
    const int nd = t ? static_cast<int>(t->shape.size()) : 0;
    m_rowDim->setEnabled(nd >= 1);
    m_colDim->setEnabled(nd >= 2);
    m_colDim->addItem(tr("none"), -1);
    for (int d = 0; d < nd; ++d) {
        const QString label = tr("dim %1 (%2)").arg(d).arg(t->shape[static_cast<std::size_t>(d)]);
        m_rowDim->addItem(label, d);
        m_colDim->addItem(label, d);
    }
    m_rowDim->setCurrentIndex(m_rowDim->findData(m_model->rowDimension()));
    m_colDim->setCurrentIndex(m_colDim->findData(m_model->columnDimension()));
    for (int d = 0; d < nd; ++d) {
        auto* label = new QLabel(tr("[%1]").arg(d), m_indexBox);
        auto* spin = new QSpinBox(m_indexBox);
        spin->setRange(0,
                       static_cast<int>(std::min<std::int64_t>(
                           std::max<std::int64_t>(t->shape[static_cast<std::size_t>(d)] - 1, 0), INT32_MAX)));
        spin->setAccessibleName(tr("Index in dimension %1").arg(d));
        spin->setValue(static_cast<int>(m_model->fixedIndex()[static_cast<std::size_t>(d)]));
        connect(spin, &QSpinBox::valueChanged, this, &ValuesPage::applySlice);
        m_indexLayout->addWidget(label);
        m_indexLayout->addWidget(spin);
        m_indices.push_back(spin);
    }
    // Only the dimensions not shown need an index.
    for (int d = 0; d < nd; ++d) {
        const bool shown = d == m_model->rowDimension() || d == m_model->columnDimension();
        m_indices[static_cast<std::size_t>(d)]->setVisible(!shown);
        m_indexLayout->itemAt(2 * d)->widget()->setVisible(!shown);
    }
}

void ValuesPage::applySlice() {
    if (!m_model->tensor())
        return;
    std::vector<std::int64_t> fixed;
    for (QSpinBox* s : m_indices)
        fixed.push_back(s->value());
    int row = m_rowDim->currentData().toInt();
    int col = m_colDim->currentData().toInt();
    if (col == row)
        col = -1;
    m_model->setSlice(row, col, std::move(fixed));
    for (int d = 0; d < static_cast<int>(m_indices.size()); ++d) {
        const bool shown = d == m_model->rowDimension() || d == m_model->columnDimension();
        m_indices[static_cast<std::size_t>(d)]->setVisible(!shown);
        m_indexLayout->itemAt(2 * d)->widget()->setVisible(!shown);
    }
}

} // namespace ckpt::ui
