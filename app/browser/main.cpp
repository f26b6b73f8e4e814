// ckpt-browser: the desktop window. Argument parsing only; the window is in ckptui.

#include "checkpointview.h"
#include "diffview.h"
#include "histogrampage.h"
#include "mainwindow.h"
#include "timelineview.h"

#include <QApplication>
#include <QCommandLineParser>
#include <QIcon>
#include <QTimer>

#include <cstdio>

int main(int argc, char** argv) {
    QApplication app(argc, argv);
    QApplication::setOrganizationName(QStringLiteral("checkpoint-browser"));
    QApplication::setApplicationName(QStringLiteral("ckpt-browser"));
    QApplication::setApplicationDisplayName(QStringLiteral("Checkpoint Browser"));
    QApplication::setApplicationVersion(QStringLiteral(CKPT_VERSION));
    // The installed desktop file and icon (packaging/): Wayland compositors find the window's icon and
    // name through the desktop file name.
    QGuiApplication::setDesktopFileName(QStringLiteral("io.github.checkpointbrowser.CheckpointBrowser"));
    QApplication::setWindowIcon(
        QIcon::fromTheme(QStringLiteral("io.github.checkpointbrowser.CheckpointBrowser")));

    QCommandLineParser parser;
    parser.setApplicationDescription(
        QStringLiteral("Looks inside model checkpoints without loading or running them."));
    parser.addHelpOption();
    parser.addVersionOption();
    parser.addPositionalArgument(QStringLiteral("files"), QStringLiteral("Checkpoints to open."),
                                 QStringLiteral("[FILE...]"));
    const QCommandLineOption select(QStringLiteral("select"),
                                    QStringLiteral("Select a tensor or module by its full name."),
                                    QStringLiteral("NAME"));
    const QCommandLineOption page(
        QStringLiteral("page"),
        QStringLiteral("Page to show: details, statistics or values (with --run: ridges or overlay)."),
        QStringLiteral("PAGE"), QStringLiteral("details"));
    const QCommandLineOption ready(
        QStringLiteral("report-ready"),
        QStringLiteral("Print 'ready' when the tree of the first file is shown (benchmarks)."));
    const QCommandLineOption quit(
        QStringLiteral("quit-when-ready"),
        QStringLiteral("Quit once ready (and once the statistics are drawn, with --page statistics)."));
    const QCommandLineOption shot(QStringLiteral("screenshot"),
                                  QStringLiteral("Save a picture of the window when ready."),
                                  QStringLiteral("PNG"));
    const QCommandLineOption diff(QStringLiteral("diff"),
                                  QStringLiteral("Compare two checkpoints: --diff A B."));
    const QCommandLineOption run(
        QStringLiteral("run"),
        QStringLiteral("Open the files, or the directory, as one training run over time."));
    parser.addOptions({select, page, ready, quit, shot, diff, run});
    parser.process(app);

    ckpt::ui::MainWindow window;
    window.show();
    const QStringList files = parser.positionalArguments();
    // Diff mode and run timelines: a picture once the figures are drawn (and the selection's, with --select).
    auto finishWhenDrawn = [&](QWidget* view, bool ok) {
        QTimer::singleShot(150, view, [&, ok] {
            if (parser.isSet(shot))
                window.grab().save(parser.value(shot));
            if (parser.isSet(quit))
                QApplication::exit(ok ? 0 : 2);
        });
    };
    if (parser.isSet(diff)) {
        if (files.size() != 2)
            parser.showHelp(2);
        auto* view = window.openDiff(files[0], files[1]);
        QObject::connect(view, &ckpt::ui::DiffView::loadFinished, &window, [&, view](bool ok) {
            if (!ok)
                finishWhenDrawn(view, false);
            else if (parser.isSet(select))
                view->selectName(parser.value(select));
        });
        QObject::connect(view, &ckpt::ui::DiffView::comparisonFinished, &window, [&, view] {
            if (!parser.isSet(select) || view->histograms())
                finishWhenDrawn(view, true);
        });
        QObject::connect(view, &ckpt::ui::DiffView::histogramsFinished, &window, [&, view] {
            if (!view->isComparing())
                finishWhenDrawn(view, true);
        });
        return QApplication::exec();
    }
    if (parser.isSet(run)) {
        if (files.isEmpty())
            parser.showHelp(2);
        auto* view = window.openRun(files);
        if (parser.value(page) == QLatin1String("overlay"))
            view->setHistogramMode(ckpt::ui::TimelineView::HistogramMode::Overlay);
        QObject::connect(view, &ckpt::ui::TimelineView::loadFinished, &window, [&, view](bool ok) {
            if (!ok || !parser.isSet(select))
                finishWhenDrawn(view, ok);
            else if (!view->selectName(parser.value(select)))
                finishWhenDrawn(view, false);
        });
        QObject::connect(view, &ckpt::ui::TimelineView::finished, &window,
                         [&, view](bool cancelled) { finishWhenDrawn(view, !cancelled); });
        return QApplication::exec();
    }
    ckpt::ui::CheckpointView* first = nullptr;
    for (const QString& f : files) {
        auto* v = window.openFile(f);
        if (!first)
            first = v;
    }
    if (first) {
        QObject::connect(first, &ckpt::ui::CheckpointView::loadFinished, &window, [&, first](bool ok) {
            if (ok && parser.isSet(select))
                first->selectName(parser.value(select));
            // Report once the tree has been painted, not merely built.
            auto finish = [&, first, ok] {
                if (parser.isSet(ready)) {
                    std::printf("ready %s %lld ms\n", ok ? "ok" : "failed",
                                static_cast<long long>(first->loadMilliseconds()));
                    std::fflush(stdout);
                }
                if (parser.isSet(shot))
                    window.grab().save(parser.value(shot));
                if (parser.isSet(quit))
                    QApplication::exit(ok ? 0 : 2);
            };
            if (ok && parser.value(page) == QLatin1String("values"))
                first->showValues();
            if (ok && parser.value(page) == QLatin1String("statistics")) {
                QObject::connect(first->histogramPage(), &ckpt::ui::HistogramPage::finished, &window,
                                 [finish] { QTimer::singleShot(100, finish); });
                first->showStatistics();
            } else {
                QTimer::singleShot(0, finish);
            }
        });
    }
    return QApplication::exec();
}
