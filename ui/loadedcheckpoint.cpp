#include "loadedcheckpoint.h"

#include "formats/open.h"

namespace ckpt::ui {

LoadedPtr loadCheckpoint(const QString& path) {
    auto loaded = std::make_shared<LoadedCheckpoint>();
    loaded->path = path;
    loaded->checkpoint = openCheckpoint(path.toStdString());
    loaded->tree = ModuleTree::build(*loaded->checkpoint);
    return loaded;
}

} // namespace ckpt::ui
