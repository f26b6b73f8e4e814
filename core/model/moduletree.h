#pragma once

#include "checkpoint.h"

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace ckpt {

// Dotted tensor names split into a tree of modules (`encoder.layers.3.attn.q_proj.weight`), with the
// non-tensor values in place and totals summed up every module. Built once per checkpoint, off the GUI
// thread; nodes are stored flat and refer to each other by index, children in file order.
struct ModuleNode {
    enum class Kind : std::uint8_t { Module, Tensor, Value };
    Kind kind = Kind::Module;
    std::string name; // this segment of the dotted name
    int parent = -1;
    int row = 0; // index among the parent's children
    std::vector<int> children;
    int tensor = -1;           // Checkpoint::tensors index (Kind::Tensor)
    int value = -1;            // Checkpoint::values index (Kind::Value)
    std::uint64_t tensors = 0; // totals over this node and everything below it
    std::uint64_t parameters = 0;
    std::uint64_t bytes = 0;
    int dtype = -1;             // a DType when every tensor below has it, -2 when they differ, -1 when none
    int device = -1;            // index into ModuleTree::devices, same convention
    std::uint32_t findings = 0; // security findings on this node or below
};

class ModuleTree {
public:
    static constexpr int kMixed = -2;

    static ModuleTree build(const Checkpoint& checkpoint);

    const std::vector<ModuleNode>& nodes() const { return m_nodes; }
    const ModuleNode& node(int i) const { return m_nodes[static_cast<std::size_t>(i)]; }
    const ModuleNode& root() const { return m_nodes.front(); }
    const std::vector<std::string>& devices() const { return m_devices; }

    std::string fullName(int node) const;
    // The node with this full dotted name, or -1.
    int find(std::string_view fullName) const;
    // Tensor indices at or below a node, in file order.
    std::vector<int> tensorsUnder(int node) const;

private:
    int child(int parent, std::string_view segment) const;

    std::vector<ModuleNode> m_nodes;
    std::vector<std::string> m_devices;
};

} // namespace ckpt
