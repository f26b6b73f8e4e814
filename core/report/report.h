#pragma once

// What `ckpt` prints: summaries of a checkpoint as JSON (for scripts) and as text (for people).
// The JSON shapes are documented in docs/cli.md.

#include "analysis/stats.h"
#include "model/checkpoint.h"

#include <nlohmann/json.hpp>

#include <map>
#include <ostream>
#include <string>
#include <vector>

namespace ckpt {

struct Totals {
    std::uint64_t tensors = 0;
    std::uint64_t parameters = 0; // elements
    std::uint64_t bytes = 0;      // storage bytes, each storage counted once
};

struct GroupTotals : Totals {
    std::string key;
    double share = 0; // of all storage bytes
};

struct Summary {
    Totals total;
    std::map<std::string, Totals> dtypes;
    std::map<std::string, Totals> devices;
    std::vector<GroupTotals> topLevel; // in file order
};

Summary summarize(const Checkpoint& ck);

// Shell-style glob over full tensor names ('*' also crosses dots).
bool globMatch(const std::string& pattern, const std::string& name);

nlohmann::json tensorJson(const Checkpoint& ck, const TensorInfo& t);
nlohmann::json findingsJson(const Checkpoint& ck);
nlohmann::json valueJson(const Value* v);
nlohmann::json lsJson(const Checkpoint& ck, const std::string& file, const std::string& filter);
// The same document written tensor by tensor, without building it in memory first.
void writeLsJson(std::ostream& out, const Checkpoint& ck, const std::string& file, const std::string& filter);
nlohmann::json infoJson(const Checkpoint& ck, const std::string& file);
nlohmann::json statsJson(const TensorInfo& t, const TensorStats& s);

void printLs(std::ostream& out, const Checkpoint& ck, const std::string& filter);
void printInfo(std::ostream& out, const Checkpoint& ck, const std::string& file);
void printStats(std::ostream& out, const TensorInfo& t, const TensorStats& s);

// Serialises with invalid UTF-8 in names replaced rather than refused.
std::string dumpJson(const nlohmann::json& j, int indent = 2);

// Text safe for a terminal: control characters (C0, DEL, C1) escaped as \xNN, so a name in a hostile file
// cannot move the cursor, retitle the window or split one error line into two.
std::string printable(std::string_view text);

std::string humanBytes(std::uint64_t bytes);
std::string groupedNumber(std::uint64_t n);
std::string shapeText(const std::vector<std::int64_t>& shape);

} // namespace ckpt
