#include "exportdialog.h"

#include "io/error.h"
#include "report/report.h"

#include <QCheckBox>
#include <QComboBox>
#include <QDialogButtonBox>
#include <QFileDialog>
#include <QFileInfo>
#include <QFormLayout>
#include <QGroupBox>
#include <QHBoxLayout>
#include <QHeaderView>
#include <QLabel>
#include <QLineEdit>
#include <QLocale>
#include <QProgressBar>
#include <QPushButton>
#include <QRegularExpression>
#include <QSplitter>
#include <QTimer>
#include <QTreeView>
#include <QTreeWidget>
#include <QVBoxLayout>
#include <QtConcurrent/QtConcurrentRun>

namespace ckpt::ui {
namespace {

constexpr int kPreviewRows = 2000; // rows listed; the summary counts them all

QString shapeString(const std::vector<std::int64_t>& shape) {
    return QString::fromStdString(shapeText(shape));
}

QString bytesString(quint64 n) {
    return QLocale().formattedDataSize(static_cast<qint64>(n), 1, QLocale::DataSizeTraditionalFormat);
}

std::vector<std::string> splitList(const QString& text) {
    std::vector<std::string> out;
    for (const QString& part : text.split(QRegularExpression(QStringLiteral("[,\\s]+")), Qt::SkipEmptyParts))
        out.push_back(part.toStdString());
    return out;
}

} // namespace

// ---- ExportSelectionModel
// ------------------------------------------------------------------------------------

ExportSelectionModel::ExportSelectionModel(LoadedPtr loaded, QObject* parent)
    : QAbstractItemModel(parent)
    , m_loaded(std::move(loaded)) {
    const auto& nodes = m_loaded->tree.nodes();
    m_checked.assign(nodes.size(), 1);
    m_leaves.assign(nodes.size(), 0);
    m_ticked.assign(nodes.size(), 0);
    // children always come after their parent: sum leaves bottom-up in one reverse pass
    for (std::size_t i = nodes.size(); i-- > 0;) {
        const ModuleNode& n = nodes[i];
        if (n.kind != ModuleNode::Kind::Module)
            m_leaves[i] += 1;
        if (n.parent >= 0)
            m_leaves[static_cast<std::size_t>(n.parent)] += m_leaves[i];
    }
    recount();
}

void ExportSelectionModel::recount() {
    const auto& nodes = m_loaded->tree.nodes();
    std::fill(m_ticked.begin(), m_ticked.end(), 0u);
    m_checkedTensors = 0;
    for (std::size_t i = nodes.size(); i-- > 0;) {
        const ModuleNode& n = nodes[i];
        if (n.kind != ModuleNode::Kind::Module && m_checked[i]) {
            m_ticked[i] += 1;
            if (n.kind == ModuleNode::Kind::Tensor)
                ++m_checkedTensors;
        }
        if (n.parent >= 0)
            m_ticked[static_cast<std::size_t>(n.parent)] += m_ticked[i];
    }
}

std::vector<std::string> ExportSelectionModel::checkedNames() const {
    std::vector<std::string> out;
    if (m_ticked[0] == m_leaves[0])
        return out;
    const Checkpoint& ck = *m_loaded->checkpoint;
    for (std::size_t i = 0; i < m_checked.size(); ++i) {
        const ModuleNode& n = m_loaded->tree.node(static_cast<int>(i));
        if (!m_checked[i])
            continue;
        if (n.kind == ModuleNode::Kind::Tensor)
            out.push_back(ck.tensors[static_cast<std::size_t>(n.tensor)].name);
        else if (n.kind == ModuleNode::Kind::Value)
            out.push_back(ck.values[static_cast<std::size_t>(n.value)].name);
    }
    if (out.empty())
        out.emplace_back(); // nothing ticked: a name no tensor has
    return out;
}

void ExportSelectionModel::setSubtree(int node, bool checked) {
    const ModuleNode& n = m_loaded->tree.node(node);
    if (n.kind != ModuleNode::Kind::Module)
        m_checked[static_cast<std::size_t>(node)] = checked ? 1 : 0;
    for (const int c : n.children)
        setSubtree(c, checked);
}

void ExportSelectionModel::emitSubtreeChanged(int node) {
    const ModuleNode& n = m_loaded->tree.node(node);
    if (n.children.empty())
        return;
    const QModelIndex parent = node == 0 ? QModelIndex() : indexForNode(node);
    Q_EMIT dataChanged(index(0, 0, parent), index(static_cast<int>(n.children.size()) - 1, 0, parent),
                       {Qt::CheckStateRole});
    for (const int c : n.children)
        if (!m_loaded->tree.node(c).children.empty())
            emitSubtreeChanged(c);
}

void ExportSelectionModel::setAllChecked(bool checked) {
    std::fill(m_checked.begin(), m_checked.end(), checked ? 1 : 0);
    recount();
    emitSubtreeChanged(0);
    Q_EMIT selectionChanged();
}

QModelIndex ExportSelectionModel::indexForNode(int node) const {
    if (node <= 0)
        return {};
    return createIndex(m_loaded->tree.node(node).row, 0, static_cast<quintptr>(node));
}

QModelIndex ExportSelectionModel::index(int row, int column, const QModelIndex& parent) const {
    const ModuleNode& p = m_loaded->tree.node(nodeOf(parent));
    if (row < 0 || column < 0 || column >= ColumnCount || row >= static_cast<int>(p.children.size()))
        return {};
    return createIndex(row, column, static_cast<quintptr>(p.children[static_cast<std::size_t>(row)]));
}

QModelIndex ExportSelectionModel::parent(const QModelIndex& child) const {
    if (!child.isValid())
        return {};
    const int p = m_loaded->tree.node(nodeOf(child)).parent;
    return p <= 0 ? QModelIndex() : createIndex(m_loaded->tree.node(p).row, 0, static_cast<quintptr>(p));
}

int ExportSelectionModel::rowCount(const QModelIndex& parent) const {
    if (parent.isValid() && parent.column() != 0)
        return 0;
    return static_cast<int>(m_loaded->tree.node(nodeOf(parent)).children.size());
}

int ExportSelectionModel::columnCount(const QModelIndex&) const {
    return ColumnCount;
}

QVariant ExportSelectionModel::data(const QModelIndex& index, int role) const {
    if (!index.isValid())
        return {};
    const int node = nodeOf(index);
    const ModuleNode& n = m_loaded->tree.node(node);
    if (role == Qt::CheckStateRole && index.column() == NameColumn) {
        const auto t = m_ticked[static_cast<std::size_t>(node)], l = m_leaves[static_cast<std::size_t>(node)];
        return t == 0 ? Qt::Unchecked : (t == l ? Qt::Checked : Qt::PartiallyChecked);
    }
    if (role == Qt::ToolTipRole)
        return QString::fromStdString(m_loaded->tree.fullName(node));
    if (role != Qt::DisplayRole)
        return {};
    switch (index.column()) {
    case NameColumn:
        return QString::fromStdString(n.name);
    case ShapeColumn:
        if (n.kind == ModuleNode::Kind::Tensor)
            return shapeString(m_loaded->checkpoint->tensors[static_cast<std::size_t>(n.tensor)].shape);
        if (n.kind == ModuleNode::Kind::Value)
            return tr("value");
        return n.tensors == 1 ? tr("1 tensor") : tr("%1 tensors").arg(n.tensors);
    case SizeColumn:
        return n.kind == ModuleNode::Kind::Value ? QVariant() : QVariant(bytesString(n.bytes));
    default:
        return {};
    }
}

bool ExportSelectionModel::setData(const QModelIndex& index, const QVariant& value, int role) {
    if (!index.isValid() || role != Qt::CheckStateRole || index.column() != NameColumn)
        return false;
    const bool checked = value.toInt() != Qt::Unchecked;
    setSubtree(nodeOf(index), checked);
    recount();
    // the row, everything below it and every ancestor change their check state
    emitSubtreeChanged(nodeOf(index));
    for (QModelIndex i = index; i.isValid(); i = i.parent())
        Q_EMIT dataChanged(i, i, {Qt::CheckStateRole});
    Q_EMIT selectionChanged();
    return true;
}

Qt::ItemFlags ExportSelectionModel::flags(const QModelIndex& index) const {
    if (!index.isValid())
        return Qt::NoItemFlags;
    Qt::ItemFlags f = Qt::ItemIsEnabled | Qt::ItemIsSelectable;
    if (index.column() == NameColumn)
        f |= Qt::ItemIsUserCheckable;
    return f;
}

QVariant ExportSelectionModel::headerData(int section, Qt::Orientation orientation, int role) const {
    if (orientation != Qt::Horizontal || role != Qt::DisplayRole)
        return {};
    switch (section) {
    case NameColumn:
        return tr("Name");
    case ShapeColumn:
        return tr("Shape");
    case SizeColumn:
        return tr("Size");
    default:
        return {};
    }
}

// ---- ExportDialog
// ------------------------------------------------------------------------------------------

ExportDialog::ExportDialog(LoadedPtr loaded, QWidget* parent)
    : QDialog(parent)
    , m_loaded(std::move(loaded)) {
    setWindowTitle(tr("Export %1").arg(QFileInfo(m_loaded->path).fileName()));
    resize(1100, 720);

    m_model = new ExportSelectionModel(m_loaded, this);
    m_tree = new QTreeView(this);
    m_tree->setModel(m_model);
    m_tree->setUniformRowHeights(true);
    m_tree->header()->setSectionResizeMode(ExportSelectionModel::NameColumn, QHeaderView::Stretch);
    m_tree->header()->setStretchLastSection(false);
    m_tree->header()->setSectionResizeMode(ExportSelectionModel::ShapeColumn, QHeaderView::ResizeToContents);
    m_tree->header()->setSectionResizeMode(ExportSelectionModel::SizeColumn, QHeaderView::ResizeToContents);
    m_tree->expandToDepth(0);
    auto* all = new QPushButton(tr("All"), this);
    auto* none = new QPushButton(tr("None"), this);
    connect(all, &QPushButton::clicked, this, [this] { m_model->setAllChecked(true); });
    connect(none, &QPushButton::clicked, this, [this] { m_model->setAllChecked(false); });
    auto* treeBox = new QGroupBox(tr("Tensors to export"), this);
    auto* treeLayout = new QVBoxLayout(treeBox);
    treeLayout->addWidget(m_tree);
    auto* allNone = new QHBoxLayout;
    allNone->addWidget(all);
    allNone->addWidget(none);
    allNone->addStretch();
    treeLayout->addLayout(allNone);

    m_preset = new QComboBox(this);
    m_preset->addItem(tr("Everything selected"));
    m_preset->addItem(tr("Model weights only (no optimizer, scheduler, EMA)"));
    m_include = new QLineEdit(this);
    m_include->setPlaceholderText(tr("globs or re:REGEX, e.g. encoder.*"));
    m_exclude = new QLineEdit(this);
    m_exclude->setPlaceholderText(tr("e.g. *.num_batches_tracked"));
    m_strip = new QLineEdit(this);
    m_strip->setPlaceholderText(tr("e.g. module."));
    m_addPrefix = new QLineEdit(this);
    m_rename = new QLineEdit(this);
    m_rename->setPlaceholderText(tr("REGEX=REPLACEMENT, e.g. ^enc\\.=encoder."));
    m_deviceMap = new QLineEdit(this);
    m_deviceMap->setPlaceholderText(tr("FROM=TO, e.g. cuda:0=cpu or *=cpu"));
    m_dtype = new QComboBox(this);
    m_dtype->addItem(tr("unchanged"), QString());
    for (const char* d : {"bfloat16", "float16", "float32", "float64"})
        m_dtype->addItem(QString::fromLatin1(d), QString::fromLatin1(d));
    m_keepDtype = new QLineEdit(QStringLiteral("*norm*"), this);
    m_keepValues = new QCheckBox(tr("Keep non-tensor values (numbers, strings)"), this);
    m_format = new QComboBox(this);
    m_format->addItem(tr("PyTorch (.pt)"));
    m_format->addItem(tr("safetensors"));
    m_destination = new QLineEdit(this);
    auto* browseButton = new QPushButton(tr("Browse…"), this);
    connect(browseButton, &QPushButton::clicked, this, &ExportDialog::browse);
    auto* dest = new QHBoxLayout;
    dest->addWidget(m_destination);
    dest->addWidget(browseButton);

    auto* optionsBox = new QGroupBox(tr("Options"), this);
    auto* form = new QFormLayout(optionsBox);
    form->addRow(tr("Preset:"), m_preset);
    form->addRow(tr("Include:"), m_include);
    form->addRow(tr("Exclude:"), m_exclude);
    form->addRow(tr("Strip prefix:"), m_strip);
    form->addRow(tr("Rename:"), m_rename);
    form->addRow(tr("Add prefix:"), m_addPrefix);
    form->addRow(tr("Devices:"), m_deviceMap);
    form->addRow(tr("Cast floats to:"), m_dtype);
    form->addRow(tr("Keep dtype of:"), m_keepDtype);
    form->addRow(QString(), m_keepValues);
    form->addRow(tr("Format:"), m_format);
    form->addRow(tr("Save as:"), dest);

    m_preview = new QTreeWidget(this);
    m_preview->setRootIsDecorated(false);
    m_preview->setUniformRowHeights(true);
    m_preview->setHeaderLabels({tr("Key"), tr("Shape"), tr("DType"), tr("Device"), tr("Size"), tr("From")});
    m_preview->header()->setStretchLastSection(true);
    m_preview->setColumnWidth(0, 220);
    m_summary = new QLabel(this);
    m_summary->setWordWrap(true);
    m_summary->setTextInteractionFlags(Qt::TextSelectableByMouse);
    auto* previewBox = new QGroupBox(tr("Result"), this);
    auto* previewLayout = new QVBoxLayout(previewBox);
    previewLayout->addWidget(m_preview);
    previewLayout->addWidget(m_summary);

    auto* right = new QWidget(this);
    auto* rightLayout = new QVBoxLayout(right);
    rightLayout->setContentsMargins(0, 0, 0, 0);
    rightLayout->addWidget(optionsBox);
    rightLayout->addWidget(previewBox, 1);
    auto* split = new QSplitter(this);
    split->addWidget(treeBox);
    split->addWidget(right);
    split->setStretchFactor(0, 2);
    split->setStretchFactor(1, 3);
    split->setSizes({460, 640});

    m_status = new QLabel(this);
    m_status->setWordWrap(true);
    m_progress = new QProgressBar(this);
    m_progress->setRange(0, 1000);
    m_progress->setValue(0);
    m_progress->setVisible(false);
    m_exportButton = new QPushButton(tr("Export"), this);
    m_exportButton->setDefault(true);
    m_cancelButton = new QPushButton(tr("Close"), this);
    connect(m_exportButton, &QPushButton::clicked, this, &ExportDialog::startExport);
    connect(m_cancelButton, &QPushButton::clicked, this, &ExportDialog::reject);
    auto* bottom = new QHBoxLayout;
    bottom->addWidget(m_status, 1);
    bottom->addWidget(m_progress);
    bottom->addWidget(m_exportButton);
    bottom->addWidget(m_cancelButton);

    auto* layout = new QVBoxLayout(this);
    layout->addWidget(split, 1);
    layout->addLayout(bottom);

    m_previewTimer = new QTimer(this);
    m_previewTimer->setSingleShot(true);
    m_previewTimer->setInterval(150);
    connect(m_previewTimer, &QTimer::timeout, this, &ExportDialog::startPreview);
    m_progressTimer = new QTimer(this);
    m_progressTimer->setInterval(100);
    connect(m_progressTimer, &QTimer::timeout, this, [this] {
        if (!m_exportProgress)
            return;
        const double total = static_cast<double>(std::max<quint64>(1, m_exportProgress->total.load()));
        m_progress->setValue(
            static_cast<int>(1000.0 * static_cast<double>(m_exportProgress->done.load()) / total));
    });
    m_previewWatcher = new QFutureWatcher<Preview>(this);
    connect(m_previewWatcher, &QFutureWatcher<Preview>::finished, this, &ExportDialog::showPreview);

    connect(m_model, &ExportSelectionModel::selectionChanged, this, &ExportDialog::schedulePreview);
    for (QLineEdit* e : {m_include, m_exclude, m_strip, m_rename, m_addPrefix, m_deviceMap, m_keepDtype})
        connect(e, &QLineEdit::textChanged, this, &ExportDialog::schedulePreview);
    for (QComboBox* c : {m_preset, m_dtype, m_format})
        connect(c, &QComboBox::currentIndexChanged, this, &ExportDialog::schedulePreview);
    connect(m_keepValues, &QCheckBox::toggled, this, &ExportDialog::schedulePreview);
    connect(m_format, &QComboBox::currentIndexChanged, this, [this](int f) {
        QString d = m_destination->text();
        if (d.isEmpty())
            return;
        const QFileInfo fi(d);
        setDestination(fi.dir().filePath(fi.completeBaseName() +
                                         (f == 1 ? QStringLiteral(".safetensors") : QStringLiteral(".pt"))));
    });
    connect(m_destination, &QLineEdit::textChanged, this, &ExportDialog::updateButtons);

    const QFileInfo src(m_loaded->path);
    setDestination(src.dir().filePath(src.completeBaseName() + QStringLiteral("-export.pt")));
    startPreview();
}

ExportDialog::~ExportDialog() {
    if (m_exportWatcher) {
        m_exportProgress->cancel = true;
        m_exportWatcher->waitForFinished(); // stops at the next chunk
    }
    m_previewWatcher->waitForFinished();
}

ExportOptions ExportDialog::options() const {
    ExportOptions o;
    o.selected = m_model->checkedNames();
    o.includes = splitList(m_include->text());
    o.excludes = splitList(m_exclude->text());
    o.weightsOnly = m_preset->currentIndex() == 1;
    o.stripPrefixes = splitList(m_strip->text());
    o.addPrefix = m_addPrefix->text().trimmed().toStdString();
    for (const std::string& r : splitList(m_rename->text())) {
        const auto eq = r.find('=');
        if (eq == std::string::npos || eq == 0)
            throw Error(ErrorCode::Malformed, "rename '" + r + "' is not of the form REGEX=REPLACEMENT");
        o.regexRenames.emplace_back(r.substr(0, eq), r.substr(eq + 1));
    }
    for (const std::string& m : splitList(m_deviceMap->text()))
        o.deviceMap.push_back(parseDeviceMapping(m)); // throws for a pair without '='
    const QString d = m_dtype->currentData().toString();
    if (!d.isEmpty())
        o.castTo = castTargetFromName(d.toStdString());
    o.keepDtype = splitList(m_keepDtype->text());
    o.keepValues = m_keepValues->isChecked();
    o.format = m_format->currentIndex() == 1 ? ExportFormat::Safetensors : ExportFormat::Torch;
    return o;
}

void ExportDialog::setDestination(const QString& path) {
    m_destination->setText(path);
}

void ExportDialog::schedulePreview() {
    m_previewTimer->start();
}

void ExportDialog::startPreview() {
    if (m_previewRunning) {
        m_previewAgain = true;
        return;
    }
    const quint64 generation = ++m_generation;
    Preview failed;
    failed.generation = generation;
    ExportOptions o;
    try {
        o = options();
    } catch (const Error& e) {
        failed.error = QString::fromStdString(e.message());
        m_previewWatcher->setFuture(QtConcurrent::run([failed] { return failed; }));
        m_previewRunning = true;
        return;
    }
    m_previewRunning = true;
    m_planOk = false;
    updateButtons();
    m_previewWatcher->setFuture(QtConcurrent::run([loaded = m_loaded, o, generation] {
        Preview p;
        p.generation = generation;
        try {
            auto plan = std::make_shared<ExportPlan>(buildExportPlan(*loaded->checkpoint, o));
            p.layout = describeExport(*loaded->checkpoint, *plan, o);
            p.plan = std::move(plan);
        } catch (const Error& e) {
            p.error = QString::fromStdString(e.message());
        }
        return p;
    }));
}

void ExportDialog::showPreview() {
    m_previewRunning = false;
    const Preview p = m_previewWatcher->result();
    if (m_previewAgain || p.generation != m_generation) {
        m_previewAgain = false;
        startPreview();
        return;
    }
    m_preview->clear();
    if (!p.plan) {
        m_summary->setText(tr("<b>Cannot export:</b> %1").arg(p.error.toHtmlEscaped()));
        m_planOk = false;
        updateButtons();
        Q_EMIT previewUpdated();
        return;
    }
    const ExportPlan& plan = *p.plan;
    const Checkpoint& ck = *m_loaded->checkpoint;
    const bool torch = m_format->currentIndex() == 0;
    QList<QTreeWidgetItem*> items;
    for (const PlannedTensor& t : plan.tensors) {
        if (items.size() >= kPreviewRows)
            break;
        const std::string& from = ck.tensors[static_cast<std::size_t>(t.source)].name;
        items << new QTreeWidgetItem(
            QStringList{QString::fromStdString(t.name), shapeString(t.shape),
                        QString::fromLatin1(dtypeName(t.dtype).data()),
                        torch ? QString::fromStdString(t.device) : QStringLiteral("–"), bytesString(t.nbytes),
                        from == t.name ? QString() : QString::fromStdString(from)});
    }
    for (const PlannedValue& v : plan.values) {
        if (items.size() >= kPreviewRows)
            break;
        items << new QTreeWidgetItem(QStringList{QString::fromStdString(v.name), tr("value")});
    }
    m_preview->addTopLevelItems(items);
    QStringList lines;
    lines << tr("<b>%1 tensors</b>, %2 of data; the file will take about %3.")
                 .arg(plan.tensors.size())
                 .arg(bytesString(plan.tensorBytes), bytesString(p.layout.outputBytes));
    if (static_cast<std::size_t>(items.size()) < plan.tensors.size() + plan.values.size())
        lines << tr("The first %1 keys are listed.").arg(items.size());
    for (const std::string& e : plan.errors)
        lines << QStringLiteral("<span style='color:#b00020'>%1</span>")
                     .arg(QString::fromStdString(e).toHtmlEscaped());
    for (const std::string& n : plan.notes)
        lines << QString::fromStdString(n).toHtmlEscaped();
    for (const std::string& n : p.layout.notes)
        lines << QString::fromStdString(n).toHtmlEscaped();
    m_summary->setText(lines.join(QStringLiteral("<br>")));
    m_planOk = plan.ok();
    updateButtons();
    Q_EMIT previewUpdated();
}

void ExportDialog::updateButtons() {
    m_exportButton->setEnabled(!m_exportWatcher && m_planOk && !m_destination->text().trimmed().isEmpty());
    m_cancelButton->setText(m_exportWatcher ? tr("Cancel") : tr("Close"));
}

void ExportDialog::browse() {
    const bool st = m_format->currentIndex() == 1;
    const QString path = QFileDialog::getSaveFileName(this, tr("Export to"), m_destination->text(),
                                                      st ? tr("safetensors (*.safetensors)")
                                                         : tr("PyTorch checkpoints (*.pt *.pth *.bin)"));
    if (!path.isEmpty())
        setDestination(path);
}

void ExportDialog::startExport() {
    if (m_exportWatcher)
        return;
    ExportOptions o;
    std::shared_ptr<const ExportPlan> plan;
    try {
        o = options();
        plan = std::make_shared<const ExportPlan>(buildExportPlan(*m_loaded->checkpoint, o));
    } catch (const Error& e) {
        m_status->setText(QString::fromStdString(e.message()));
        return;
    }
    const std::string dst = m_destination->text().trimmed().toStdString();
    m_exportProgress = std::make_shared<Progress>();
    m_exportWatcher = new QFutureWatcher<Outcome>(this);
    connect(m_exportWatcher, &QFutureWatcher<Outcome>::finished, this, &ExportDialog::onExportDone);
    m_progress->setValue(0);
    m_progress->setVisible(true);
    m_status->setText(tr("Exporting…"));
    m_progressTimer->start();
    updateButtons();
    m_exportWatcher->setFuture(QtConcurrent::run(
        [ck = m_loaded->checkpoint, plan, o, dst, progress = m_exportProgress, hook = m_workerHook] {
            Outcome out;
            try {
                const ExportResult r =
                    exportCheckpoint(ck, *plan, o, dst, [progress, hook](quint64 done, quint64 total) {
                        if (hook)
                            hook();
                        progress->done = done;
                        progress->total = total;
                        return !progress->cancel.load();
                    });
                out.ok = true;
                QStringList notes;
                for (const std::string& n : r.notes)
                    notes << QString::fromStdString(n);
                out.message = QObject::tr("Wrote %1: %2 tensors, %3, verified.")
                                  .arg(QString::fromStdString(dst))
                                  .arg(plan->tensors.size())
                                  .arg(QLocale().formattedDataSize(static_cast<qint64>(r.bytesWritten), 1,
                                                                   QLocale::DataSizeTraditionalFormat));
                if (!notes.isEmpty())
                    out.message += QLatin1Char(' ') + notes.join(QStringLiteral("; "));
            } catch (const Error& e) {
                out.message = e.code() == ErrorCode::Cancelled
                                  ? QObject::tr("Export cancelled; nothing was written.")
                                  : QString::fromStdString(e.what());
            } catch (const std::exception& e) {
                out.message = QString::fromStdString(e.what());
            }
            return out;
        }));
}

void ExportDialog::cancelExport() {
    if (m_exportProgress)
        m_exportProgress->cancel = true;
}

void ExportDialog::onExportDone() {
    const Outcome out = m_exportWatcher->result();
    m_exportWatcher->deleteLater();
    m_exportWatcher = nullptr;
    m_progressTimer->stop();
    m_progress->setValue(out.ok ? 1000 : 0);
    m_progress->setVisible(out.ok);
    m_status->setText(out.message);
    updateButtons();
    Q_EMIT exportFinished(out.ok, out.message);
}

void ExportDialog::reject() {
    if (m_exportWatcher) {
        cancelExport();
        return;
    }
    QDialog::reject();
}

} // namespace ckpt::ui
