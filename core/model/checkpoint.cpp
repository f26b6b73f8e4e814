#include "checkpoint.h"

namespace ckpt {

const char* severityName(Severity s) {
    switch (s) {
    case Severity::Info:
        return "info";
    case Severity::Warning:
        return "warning";
    case Severity::Error:
        return "error";
    case Severity::Security:
        return "security";
    }
    return "?";
}

const char* layoutName(Layout l) {
    switch (l) {
    case Layout::Strided:
        return "strided";
    case Layout::SparseCoo:
        return "sparse_coo";
    case Layout::SparseCsr:
        return "sparse_csr";
    case Layout::Meta:
        return "meta";
    }
    return "?";
}

std::uint64_t TensorInfo::numel() const {
    std::uint64_t n = 1;
    for (const auto d : shape)
        n *= static_cast<std::uint64_t>(d < 0 ? 0 : d); // sizes were checked for overflow when read
    return n;
}

bool TensorInfo::isContiguous() const {
    std::int64_t expected = 1;
    for (std::size_t i = shape.size(); i-- > 0;) {
        if (shape[i] == 1)
            continue;
        if (shape[i] == 0)
            return true;
        if (strides[i] != expected)
            return false;
        expected *= shape[i];
    }
    return true;
}

const TensorInfo* Checkpoint::findTensor(std::string_view name) const {
    for (const auto& t : tensors)
        if (t.name == name)
            return &t;
    return nullptr;
}

std::uint64_t Checkpoint::storageBytes() const {
    std::uint64_t total = 0;
    for (const auto& s : storages)
        total += s.nbytes;
    return total;
}

bool Checkpoint::hasErrors() const {
    for (const auto& f : findings)
        if (f.severity == Severity::Error)
            return true;
    return false;
}

} // namespace ckpt
