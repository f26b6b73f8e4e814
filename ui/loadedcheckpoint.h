#pragma once

#include "model/checkpoint.h"
#include "model/moduletree.h"

#include <QString>

#include <memory>

namespace ckpt::ui {

// Everything a view needs about one open file, built off the GUI thread and then shared read-only.
struct LoadedCheckpoint {
    QString path;
    CheckpointPtr checkpoint;
    ModuleTree tree;
};
using LoadedPtr = std::shared_ptr<const LoadedCheckpoint>;

// Opens, parses and builds the module tree; throws ckpt::Error. Safe to call on any thread.
LoadedPtr loadCheckpoint(const QString& path);

} // namespace ckpt::ui
