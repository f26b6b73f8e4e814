#pragma once

#include <QMainWindow>

class QMenu;
class QStackedWidget;
class QTabWidget;

namespace ckpt::ui {

class CheckpointView;
class ExportDialog;
class DiffView;
class TimelineView;

// The browser window: one tab per open checkpoint, File > Open / Open Recent / Reload, drag and drop,
// window state kept across runs.
class MainWindow final : public QMainWindow {
    Q_OBJECT
public:
    explicit MainWindow(QWidget* parent = nullptr);

    CheckpointView* openFile(const QString& path);
    CheckpointView* currentView() const;
    // Diff mode: two checkpoints compared in a tab of their own.
    DiffView* openDiff(const QString& pathA, const QString& pathB);
    // A training run over time: a directory, a TensorFlow `checkpoint` state file, or several files.
    TimelineView* openRun(const QStringList& paths);
    QTabWidget* tabs() const { return m_tabs; }
    QStringList recentFiles() const;
    // File > Export…: a dialog on the current checkpoint (deleted when closed), or null when none is open.
    ExportDialog* exportDialog();

protected:
    void closeEvent(QCloseEvent* event) override;
    void dragEnterEvent(QDragEnterEvent* event) override;
    void dropEvent(QDropEvent* event) override;

private:
    void openDialog();
    void compareDialog(bool withCurrent);
    void openRunDialog();
    void addRecent(const QString& path);
    void rebuildRecentMenu();
    void closeTab(int index);
    void updateActions();

    QTabWidget* m_tabs;
    QStackedWidget* m_stack;
    QMenu* m_recentMenu;
    QList<QAction*> m_viewActions; // enabled only while a checkpoint is open
    QAction* m_closeAction = nullptr;
};

} // namespace ckpt::ui
