#include "moduletree.h"

#include <unordered_map>

namespace ckpt {
namespace {

// Child lookup while building: (parent, segment) -> node. Segments are views into the names of the
// checkpoint's tensors and values, which outlive the build and do not move during it.
struct Key {
    int parent;
    std::string_view segment;
    bool operator==(const Key&) const = default;
};
struct KeyHash {
    std::size_t operator()(const Key& k) const noexcept {
        return std::hash<std::string_view>()(k.segment) * 31u + static_cast<std::size_t>(k.parent);
    }
};

template <typename Fn> void forEachSegment(std::string_view name, Fn&& fn) {
    std::size_t start = 0;
    for (;;) {
        const std::size_t dot = name.find('.', start);
        const bool last = dot == std::string_view::npos;
        fn(name.substr(start, last ? std::string_view::npos : dot - start), last);
        if (last)
            return;
        start = dot + 1;
    }
}

int mergeTag(int a, int b) {
    if (a == -1)
        return b;
    if (b == -1 || a == b)
        return a;
    return ModuleTree::kMixed;
}

} // namespace

int ModuleTree::child(int parent, std::string_view segment) const {
    // Linear over the children: used only for lookups by name, the build uses its hash map.
    for (int c : m_nodes[static_cast<std::size_t>(parent)].children)
        if (m_nodes[static_cast<std::size_t>(c)].name == segment)
            return c;
    return -1;
}

ModuleTree ModuleTree::build(const Checkpoint& ck) {
    ModuleTree t;
    t.m_nodes.reserve(ck.tensors.size() * 2 + ck.values.size() + 1);
    t.m_nodes.emplace_back(); // root
    std::unordered_map<Key, int, KeyHash> index;
    index.reserve(ck.tensors.size() * 2);
    std::unordered_map<std::string_view, int> deviceIndex;

    auto newChild = [&](int parent, std::string_view segment) {
        ModuleNode n;
        n.name = std::string(segment);
        n.parent = parent;
        n.row = static_cast<int>(t.m_nodes[static_cast<std::size_t>(parent)].children.size());
        const int id = static_cast<int>(t.m_nodes.size());
        t.m_nodes[static_cast<std::size_t>(parent)].children.push_back(id);
        t.m_nodes.push_back(std::move(n));
        // The key views the checkpoint's name, not the node's copy: m_nodes may reallocate and move short
        // names stored inside their strings.
        index.emplace(Key{parent, segment}, id);
        return id;
    };
    auto insert = [&](std::string_view name, ModuleNode::Kind kind, int item) {
        int at = 0;
        forEachSegment(name, [&](std::string_view segment, bool last) {
            const auto it = index.find(Key{at, segment});
            if (!last) {
                at = it != index.end() ? it->second : newChild(at, segment);
                return;
            }
            // A leaf joins a module of the same name ("layer" beside "layer.weight"); a name listed twice
            // gets a second row.
            const bool reuse = it != index.end() &&
                               t.m_nodes[static_cast<std::size_t>(it->second)].tensor < 0 &&
                               t.m_nodes[static_cast<std::size_t>(it->second)].value < 0;
            ModuleNode& n = t.m_nodes[static_cast<std::size_t>(reuse ? it->second : newChild(at, segment))];
            n.kind = kind;
            (kind == ModuleNode::Kind::Tensor ? n.tensor : n.value) = item;
        });
    };

    for (std::size_t i = 0; i < ck.tensors.size(); ++i)
        insert(ck.tensors[i].name, ModuleNode::Kind::Tensor, static_cast<int>(i));
    for (std::size_t i = 0; i < ck.values.size(); ++i)
        insert(ck.values[i].name, ModuleNode::Kind::Value, static_cast<int>(i));

    // Totals, children before parents: every child was created after its parent.
    for (auto& n : t.m_nodes) {
        if (n.tensor < 0)
            continue;
        const TensorInfo& ti = ck.tensors[static_cast<std::size_t>(n.tensor)];
        n.tensors = 1;
        n.parameters = ti.numel();
        n.bytes = ti.nbytes();
        n.dtype = static_cast<int>(ti.dtype);
        auto [it, inserted] = deviceIndex.emplace(ti.device, static_cast<int>(t.m_devices.size()));
        if (inserted)
            t.m_devices.push_back(ti.device);
        n.device = it->second;
    }
    for (std::size_t i = t.m_nodes.size(); i-- > 1;) {
        const ModuleNode& n = t.m_nodes[i];
        ModuleNode& p = t.m_nodes[static_cast<std::size_t>(n.parent)];
        p.tensors += n.tensors;
        p.parameters += n.parameters;
        p.bytes += n.bytes;
        p.dtype = mergeTag(p.dtype, n.dtype);
        p.device = mergeTag(p.device, n.device);
    }
    // Security findings on the object they name, and on every module above it.
    for (const auto& f : ck.findings) {
        if (f.severity != Severity::Security)
            continue;
        int at = f.object.empty() || f.object == "(root)" ? 0 : t.find(f.object);
        if (at < 0)
            at = 0;
        for (; at >= 0; at = t.m_nodes[static_cast<std::size_t>(at)].parent)
            ++t.m_nodes[static_cast<std::size_t>(at)].findings;
    }
    return t;
}

std::string ModuleTree::fullName(int node) const {
    std::vector<int> chain;
    for (int at = node; at > 0; at = m_nodes[static_cast<std::size_t>(at)].parent)
        chain.push_back(at);
    std::string out;
    for (auto it = chain.rbegin(); it != chain.rend(); ++it) {
        if (!out.empty() || it != chain.rbegin())
            out += '.';
        out += m_nodes[static_cast<std::size_t>(*it)].name;
    }
    return out;
}

int ModuleTree::find(std::string_view fullName) const {
    int at = 0;
    bool found = true;
    forEachSegment(fullName, [&](std::string_view segment, bool) {
        if (!found)
            return;
        const int c = child(at, segment);
        if (c < 0)
            found = false;
        else
            at = c;
    });
    return found ? at : -1;
}

std::vector<int> ModuleTree::tensorsUnder(int node) const {
    std::vector<int> out;
    std::vector<int> stack{node};
    while (!stack.empty()) {
        const int n = stack.back();
        stack.pop_back();
        const ModuleNode& m = m_nodes[static_cast<std::size_t>(n)];
        if (m.tensor >= 0)
            out.push_back(m.tensor);
        for (auto it = m.children.rbegin(); it != m.children.rend(); ++it)
            stack.push_back(*it);
    }
    return out;
}

} // namespace ckpt
