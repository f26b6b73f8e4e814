#pragma once

#include "loadedcheckpoint.h"

#include <QElapsedTimer>
#include <QFutureWatcher>
#include <QWidget>

class QComboBox;
class QFileSystemWatcher;
class QFrame;
class QLabel;
class QLineEdit;
class QModelIndex;
class QTabWidget;
class QTimer;
class QTreeView;

namespace ckpt::ui {

class DetailsPane;
class HistogramPage;
class ModuleTreeModel;
class TreeProxy;
class ValuesPage;

// One open checkpoint: its module tree with a filter, and details, statistics and values of the selection.
// Opening runs on a worker thread; the window stays responsive meanwhile.
class CheckpointView final : public QWidget {
    Q_OBJECT
public:
    explicit CheckpointView(const QString& path, QWidget* parent = nullptr);
    ~CheckpointView() override;

    QString path() const { return m_path; }
    const LoadedPtr& loaded() const { return m_loaded; }
    bool isLoading() const { return m_watcher != nullptr; }
    QString errorText() const { return m_error; }

    void reload();
    // Selects the row of a full dotted name; false when there is none.
    bool selectName(const QString& fullName);
    QString selectedName() const;
    void copySelectedName();
    void focusFilter();
    void showStatistics();
    void showValues();

    QTreeView* treeView() const { return m_tree; }
    ModuleTreeModel* model() const { return m_model; }
    TreeProxy* proxy() const { return m_proxy; }
    HistogramPage* histogramPage() const { return m_histogram; }
    ValuesPage* valuesPage() const { return m_values; }
    DetailsPane* detailsPane() const { return m_details; }
    QLineEdit* filterEdit() const { return m_filter; }
    QComboBox* filterMode() const { return m_filterMode; }
    bool changeBannerVisible() const;
    // Milliseconds from construction to the tree being shown.
    qint64 loadMilliseconds() const { return m_loadMs; }

Q_SIGNALS:
    void loadFinished(bool ok);
    void statusMessage(const QString& text);

private:
    void startLoading();
    void onLoaded();
    void onSelectionChanged();
    void updateStatistics();
    void applyFilter();
    void checkFileOnDisk();
    int currentNode() const;

    QString m_path;
    QString m_error;
    LoadedPtr m_loaded;
    QFutureWatcher<LoadedPtr>* m_watcher = nullptr;
    QElapsedTimer m_clock;
    qint64 m_loadMs = -1;
    QString m_reselect;
    int m_statsNode = -1; // the node whose statistics are shown or being computed
    bool m_sized = false;

    QFrame* m_changeBanner;
    QLabel* m_findingsBanner;
    QLabel* m_loadingLabel;
    QLineEdit* m_filter;
    QComboBox* m_filterMode;
    QLabel* m_matches;
    QTreeView* m_tree;
    ModuleTreeModel* m_model;
    TreeProxy* m_proxy;
    QTabWidget* m_tabs;
    DetailsPane* m_details;
    HistogramPage* m_histogram;
    ValuesPage* m_values;
    QFileSystemWatcher* m_fsWatcher;
    QTimer* m_pollTimer;
    QTimer* m_filterTimer;
};

} // namespace ckpt::ui
