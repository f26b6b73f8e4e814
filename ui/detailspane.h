#pragma once

#include "loadedcheckpoint.h"

#include <QTextBrowser>

namespace ckpt::ui {

// HTML describing a node of the module tree: for a tensor every field the core knows, for a module its
// totals and dtype / device breakdown, for the file (node 0) its format, counts, shares and findings.
QString detailsHtml(const LoadedCheckpoint& loaded, int node);

class DetailsPane final : public QTextBrowser {
    Q_OBJECT
public:
    explicit DetailsPane(QWidget* parent = nullptr);
    void showNode(const LoadedPtr& loaded, int node);

Q_SIGNALS:
    // A tensor name in the text was clicked (tensors sharing storage link to each other).
    void tensorLinkActivated(const QString& fullName);
};

} // namespace ckpt::ui
