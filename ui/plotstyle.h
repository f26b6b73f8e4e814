#pragma once

// Plot styling shared by the statistics page, the diff view and the run timeline: axes, ticks, labels and
// grid in the colours of the platform theme, dark or light.

#include <qcustomplot.h>

#include <QList>
#include <QPalette>

namespace ckpt::ui {

inline void stylePlotAxes(const QList<QCPAxis*>& axes, const QPalette& p) {
    for (QCPAxis* axis : axes) {
        axis->setBasePen(QPen(p.color(QPalette::Text)));
        axis->setTickPen(QPen(p.color(QPalette::Text)));
        axis->setSubTickPen(QPen(p.color(QPalette::Text)));
        axis->setTickLabelColor(p.color(QPalette::Text));
        axis->setLabelColor(p.color(QPalette::Text));
        axis->grid()->setPen(QPen(p.color(QPalette::Mid), 0, Qt::DotLine));
    }
}

} // namespace ckpt::ui
