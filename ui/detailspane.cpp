#include "detailspane.h"

#include "report/report.h"

#include <QUrl>

#include <map>

namespace ckpt::ui {
namespace {

QString esc(const std::string& s) {
    return QString::fromStdString(printable(s)).toHtmlEscaped();
}

QString row(const QString& key, const QString& value) {
    return QStringLiteral("<tr><td style='padding-right:12px'><b>%1</b></td><td>%2</td></tr>")
        .arg(key, value);
}

QString numbersOf(const std::vector<std::int64_t>& v) {
    return QString::fromStdString(shapeText(v));
}

QString breakdownTable(const QString& title, const std::map<std::string, Totals>& rows,
                       std::uint64_t totalBytes) {
    QString html = QStringLiteral("<h4>%1</h4><table>").arg(title.toHtmlEscaped());
    for (const auto& [key, t] : rows) {
        const double share =
            totalBytes ? 100.0 * static_cast<double>(t.bytes) / static_cast<double>(totalBytes) : 0;
        html +=
            QStringLiteral(
                "<tr><td style='padding-right:12px'>%1</td><td align=right style='padding-right:12px'>%2 "
                "tensors</td><td align=right style='padding-right:12px'>%3</td><td align=right>%4%</td></tr>")
                .arg(esc(key))
                .arg(QString::fromStdString(groupedNumber(t.tensors)))
                .arg(QString::fromStdString(humanBytes(t.bytes)))
                .arg(share, 0, 'f', 1);
    }
    return html + QStringLiteral("</table>");
}

QString findingsHtml(const Checkpoint& ck, const std::string& object, bool all) {
    QString html;
    for (const auto& f : ck.findings) {
        if (!all && f.object != object)
            continue;
        const QString color = f.severity == Severity::Security || f.severity == Severity::Error
                                  ? QStringLiteral("#c0392b")
                                  : QStringLiteral("#b7791f");
        html +=
            QStringLiteral("<li><span style='color:%1'><b>%2</b></span> %3%4</li>")
                .arg(color, QString::fromLatin1(severityName(f.severity)),
                     f.object.empty() || !all ? QString() : QStringLiteral("<i>%1</i>: ").arg(esc(f.object)),
                     esc(f.message));
    }
    return html.isEmpty() ? html : QStringLiteral("<h4>Findings</h4><ul>") + html + QStringLiteral("</ul>");
}

QString tensorHtml(const LoadedCheckpoint& loaded, const TensorInfo& t) {
    const Checkpoint& ck = *loaded.checkpoint;
    QString html = QStringLiteral("<h3>%1</h3><table>").arg(esc(t.name));
    html += row(QStringLiteral("DType"), QString::fromLatin1(dtypeName(t.dtype).data()));
    html += row(QStringLiteral("Shape"), numbersOf(t.shape));
    html += row(QStringLiteral("Elements"), QString::fromStdString(groupedNumber(t.numel())));
    html += row(QStringLiteral("Size"), QString::fromStdString(humanBytes(t.nbytes())));
    html += row(QStringLiteral("Strides"), numbersOf(t.strides));
    html +=
        row(QStringLiteral("Contiguous"), t.isContiguous() ? QStringLiteral("yes") : QStringLiteral("no"));
    html += row(QStringLiteral("Device"), esc(t.device));
    if (t.layout != Layout::Strided)
        html += row(QStringLiteral("Layout"), QString::fromLatin1(layoutName(t.layout)));
    html += row(QStringLiteral("requires_grad"),
                t.requiresGrad ? (*t.requiresGrad ? QStringLiteral("True") : QStringLiteral("False"))
                               : QStringLiteral("not saved"));
    if (t.isParameter)
        html += row(QStringLiteral("Kind"), QStringLiteral("nn.Parameter"));
    if (!t.typeName.empty())
        html += row(QStringLiteral("Subclass"), esc(t.typeName));
    if (t.quant.scheme == QuantInfo::Scheme::PerTensorAffine)
        html += row(
            QStringLiteral("Quantization"),
            QStringLiteral("per tensor, scale %1, zero point %2").arg(t.quant.scale).arg(t.quant.zeroPoint));
    else if (t.quant.scheme == QuantInfo::Scheme::PerChannelAffine)
        html += row(QStringLiteral("Quantization"),
                    QStringLiteral("per channel along dimension %1").arg(t.quant.axis));
    if (t.storage >= 0) {
        const StorageInfo& s = ck.storages[static_cast<std::size_t>(t.storage)];
        if (ck.sources.size() > 1 && static_cast<std::size_t>(s.source) < ck.sources.size())
            html += row(QStringLiteral("File"), esc(ck.sources[static_cast<std::size_t>(s.source)].path));
        html += row(QStringLiteral("Storage key"), esc(s.key));
        html += row(QStringLiteral("Storage offset"), QStringLiteral("%1 elements").arg(t.storageOffset));
        html += row(QStringLiteral("Storage size"), QString::fromStdString(humanBytes(s.nbytes)));
        if (s.error.empty()) {
            const std::uint64_t begin =
                s.fileOffset + static_cast<std::uint64_t>(t.storageOffset) * dtypeSize(t.dtype);
            html += row(QStringLiteral("Bytes in file"),
                        QStringLiteral("%1 to %2 (storage %3 to %4)")
                            .arg(QString::fromStdString(groupedNumber(begin)))
                            .arg(QString::fromStdString(groupedNumber(begin + t.nbytes())))
                            .arg(QString::fromStdString(groupedNumber(s.fileOffset)))
                            .arg(QString::fromStdString(groupedNumber(s.fileOffset + s.nbytes))));
        }
        if (s.bigEndian)
            html += row(QStringLiteral("Byte order"), QStringLiteral("big-endian"));
        QStringList sharing;
        for (const auto& other : ck.tensors)
            if (other.storage == t.storage && other.name != t.name)
                sharing << QStringLiteral("<a href='tensor:%1'>%2</a>")
                               .arg(QString::fromUtf8(
                                        QUrl::toPercentEncoding(QString::fromStdString(other.name))),
                                    esc(other.name));
        if (!sharing.isEmpty())
            html += row(QStringLiteral("Shares storage with"), sharing.join(QStringLiteral("<br>")));
    } else {
        html += row(QStringLiteral("Data"), QStringLiteral("none in the file"));
    }
    if (!t.error.empty())
        html += row(QStringLiteral("<span style='color:#c0392b'>Unreadable</span>"), esc(t.error));
    html += QStringLiteral("</table>");
    return html + findingsHtml(ck, t.name, false);
}

QString moduleHtml(const LoadedCheckpoint& loaded, int node) {
    const Checkpoint& ck = *loaded.checkpoint;
    const ModuleNode& n = loaded.tree.node(node);
    const std::string name = loaded.tree.fullName(node);
    std::map<std::string, Totals> dtypes, devices;
    for (int i : loaded.tree.tensorsUnder(node)) {
        const TensorInfo& t = ck.tensors[static_cast<std::size_t>(i)];
        for (Totals* tot : {&dtypes[std::string(dtypeName(t.dtype))], &devices[t.device]}) {
            tot->tensors += 1;
            tot->parameters += t.numel();
            tot->bytes += t.nbytes();
        }
    }
    QString html = QStringLiteral("<h3>%1</h3><table>").arg(esc(name));
    html += row(QStringLiteral("Tensors"), QString::fromStdString(groupedNumber(n.tensors)));
    html += row(QStringLiteral("Parameters"), QString::fromStdString(groupedNumber(n.parameters)));
    html += row(QStringLiteral("Size"), QString::fromStdString(humanBytes(n.bytes)));
    html += row(QStringLiteral("Children"), QString::number(n.children.size()));
    html += QStringLiteral("</table>");
    html += breakdownTable(QStringLiteral("DTypes"), dtypes, n.bytes);
    html += breakdownTable(QStringLiteral("Devices"), devices, n.bytes);
    return html + findingsHtml(ck, name, false);
}

QString valueHtml(const LoadedCheckpoint& loaded, const NamedValue& v) {
    QString html = QStringLiteral("<h3>%1</h3><table>").arg(esc(v.name));
    html += row(QStringLiteral("Type"), QString::fromLatin1(valueKindName(v.value->kind)));
    html += row(QStringLiteral("Value"), esc(valueRepr(v.value, 2000)));
    html += QStringLiteral("</table>");
    return html + findingsHtml(*loaded.checkpoint, v.name, false);
}

QString fileHtml(const LoadedCheckpoint& loaded) {
    const Checkpoint& ck = *loaded.checkpoint;
    const Summary s = summarize(ck);
    QString html = QStringLiteral("<h3>%1</h3><table>").arg(loaded.path.toHtmlEscaped());
    html += row(QStringLiteral("Format"), esc(ck.formatDetail));
    html += row(QStringLiteral("Tensors"), QString::fromStdString(groupedNumber(s.total.tensors)));
    html += row(QStringLiteral("Parameters"), QString::fromStdString(groupedNumber(s.total.parameters)));
    html += row(QStringLiteral("Size"), QString::fromStdString(humanBytes(s.total.bytes)) +
                                            QStringLiteral(" of tensor data, each storage counted once"));
    html += row(QStringLiteral("Values"), QString::number(ck.values.size()));
    html += QStringLiteral("</table>");
    std::map<std::string, Totals> top;
    for (const auto& g : s.topLevel)
        if (top.size() < 50)
            top[g.key.empty() ? "(root)" : g.key] = g;
    if (s.topLevel.size() > 1)
        html += breakdownTable(QStringLiteral("Share of bytes per top-level key"), top, s.total.bytes);
    html += breakdownTable(QStringLiteral("DTypes"), s.dtypes, s.total.bytes);
    html += breakdownTable(QStringLiteral("Devices"), s.devices, s.total.bytes);
    if (!ck.records.empty()) {
        html += QStringLiteral("<h4>Other records (shown, never run)</h4><ul>");
        for (const auto& r : ck.records)
            html += QStringLiteral("<li>%1 (%2)</li>")
                        .arg(esc(r.name), QString::fromStdString(humanBytes(r.size)));
        html += QStringLiteral("</ul>");
    }
    return html + findingsHtml(ck, {}, true);
}

} // namespace

QString detailsHtml(const LoadedCheckpoint& loaded, int node) {
    if (node <= 0)
        return fileHtml(loaded);
    const ModuleNode& n = loaded.tree.node(node);
    if (n.tensor >= 0)
        return tensorHtml(loaded, loaded.checkpoint->tensors[static_cast<std::size_t>(n.tensor)]);
    if (n.value >= 0)
        return valueHtml(loaded, loaded.checkpoint->values[static_cast<std::size_t>(n.value)]);
    return moduleHtml(loaded, node);
}

DetailsPane::DetailsPane(QWidget* parent)
    : QTextBrowser(parent) {
    setOpenLinks(false);
    connect(this, &QTextBrowser::anchorClicked, this, [this](const QUrl& url) {
        if (url.scheme() == QLatin1String("tensor"))
            Q_EMIT tensorLinkActivated(QUrl::fromPercentEncoding(url.path().toUtf8()));
    });
}

void DetailsPane::showNode(const LoadedPtr& loaded, int node) {
    setHtml(loaded ? detailsHtml(*loaded, node) : QString());
}

} // namespace ckpt::ui
