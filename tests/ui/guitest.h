#pragma once

// What the GUI tests share: the expectations that tests/ui/make_fixtures.py computed with PyTorch and NumPy
// (a CTest fixture step writes them), and a relative comparison of figures.

#include <QFile>
#include <QJsonDocument>
#include <QJsonObject>

#include <algorithm>
#include <cmath>

namespace ckpt::uitest {

inline QJsonObject expected() {
    QFile f(qEnvironmentVariable("CKPT_GUI_FIXTURES") + QStringLiteral("/gui_fixture.json"));
    if (!f.open(QIODevice::ReadOnly))
        qFatal("fixture missing: run tests/ui/make_fixtures.py (CTest does it as a fixture step)");
    return QJsonDocument::fromJson(f.readAll()).object();
}

inline bool close(double got, double want, double rel = 1e-9) {
    return std::abs(got - want) <= rel * std::max(std::abs(want), 1e-12);
}

} // namespace ckpt::uitest
