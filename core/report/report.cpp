#include "report.h"

#include <algorithm>

#include <array>
#include <cmath>
#include <cstdio>
#include <fnmatch.h>
#include <iomanip>
#include <set>
#include <sstream>
#include <unordered_map>

namespace ckpt {
namespace {

std::string number(double v) {
    if (std::isnan(v))
        return "-";
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.6g", v);
    return buf;
}

nlohmann::json doubleOrNull(double v) {
    return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(nullptr);
}

int storageGroup(const Checkpoint& ck, const TensorInfo& t) {
    // Tensors without a storage each get a group of their own after the storages.
    return t.storage >= 0 ? t.storage : static_cast<int>(ck.storages.size()) + t.proto + 1;
}

} // namespace

std::string printable(std::string_view text) {
    static const char* hex = "0123456789abcdef";
    std::string out;
    out.reserve(text.size());
    for (std::size_t i = 0; i < text.size(); ++i) {
        const auto c = static_cast<unsigned char>(text[i]);
        const bool c1 = c == 0xC2 && i + 1 < text.size() && static_cast<unsigned char>(text[i + 1]) >= 0x80 &&
                        static_cast<unsigned char>(text[i + 1]) <= 0x9F; // U+0080..U+009F in UTF-8
        if (c < 0x20 || c == 0x7F || c1) {
            const unsigned char v = c1 ? static_cast<unsigned char>(text[++i]) : c;
            out += "\\x";
            out += hex[v >> 4];
            out += hex[v & 15];
        } else {
            out += static_cast<char>(c);
        }
    }
    return out;
}

std::string humanBytes(std::uint64_t bytes) {
    static const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
    double v = static_cast<double>(bytes);
    int u = 0;
    while (v >= 1024 && u < 5) {
        v /= 1024;
        ++u;
    }
    char buf[32];
    if (u == 0)
        std::snprintf(buf, sizeof buf, "%llu B", static_cast<unsigned long long>(bytes));
    else
        std::snprintf(buf, sizeof buf, "%.1f %s", v, units[u]);
    return buf;
}

std::string groupedNumber(std::uint64_t n) {
    std::string s = std::to_string(n);
    for (int i = static_cast<int>(s.size()) - 3; i > 0; i -= 3)
        s.insert(static_cast<std::size_t>(i), ",");
    return s;
}

std::string shapeText(const std::vector<std::int64_t>& shape) {
    std::string s = "[";
    for (std::size_t i = 0; i < shape.size(); ++i) {
        if (i)
            s += ", ";
        s += std::to_string(shape[i]);
    }
    return s + "]";
}

bool globMatch(const std::string& pattern, const std::string& name) {
    return fnmatch(pattern.c_str(), name.c_str(), 0) == 0;
}

Summary summarize(const Checkpoint& ck) {
    Summary s;
    std::vector<bool> counted(ck.storages.size(), false);
    // Keyed by views into the tensor names, which outlive this function: no string per tensor.
    std::unordered_map<std::string_view, std::size_t> groupIndex;
    groupIndex.reserve(ck.tensors.size());
    std::array<Totals, static_cast<std::size_t>(DType::Count)> byDtype{};
    std::vector<bool> dtypeSeen(byDtype.size(), false);
    const std::string* lastDevice = nullptr;
    Totals* deviceTotals = nullptr;
    for (const auto& t : ck.tensors) {
        std::uint64_t bytes = 0;
        if (t.storage >= 0 && !counted[static_cast<std::size_t>(t.storage)]) {
            counted[static_cast<std::size_t>(t.storage)] = true;
            bytes = ck.storages[static_cast<std::size_t>(t.storage)].nbytes;
        }
        if (t.chunkSet >= 0 && static_cast<std::size_t>(t.chunkSet) < ck.chunkSets.size())
            for (const auto& c : ck.chunkSets[static_cast<std::size_t>(t.chunkSet)])
                if (c.part.storage >= 0 && !counted[static_cast<std::size_t>(c.part.storage)]) {
                    counted[static_cast<std::size_t>(c.part.storage)] = true;
                    bytes += ck.storages[static_cast<std::size_t>(c.part.storage)].nbytes;
                }
        const std::string_view name(t.name);
        const std::string_view key = name.substr(0, name.find('.'));
        auto [it, inserted] = groupIndex.emplace(key, s.topLevel.size());
        if (inserted) {
            s.topLevel.emplace_back();
            s.topLevel.back().key = key;
        }
        if (!lastDevice || *lastDevice != t.device) {
            lastDevice = &t.device;
            deviceTotals = &s.devices[t.device];
        }
        const auto d = static_cast<std::size_t>(t.dtype);
        dtypeSeen[d] = true;
        const std::uint64_t numel = t.numel();
        for (Totals* tot :
             {&s.total, &byDtype[d], deviceTotals, static_cast<Totals*>(&s.topLevel[it->second])}) {
            tot->tensors += 1;
            tot->parameters += numel;
            tot->bytes += bytes;
        }
    }
    for (std::size_t d = 0; d < byDtype.size(); ++d)
        if (dtypeSeen[d])
            s.dtypes[std::string(dtypeName(static_cast<DType>(d)))] = byDtype[d];
    for (auto& g : s.topLevel)
        g.share = s.total.bytes ? static_cast<double>(g.bytes) / static_cast<double>(s.total.bytes) : 0.0;
    return s;
}

nlohmann::json tensorJson(const Checkpoint& ck, const TensorInfo& t) {
    nlohmann::json j;
    j["name"] = t.name;
    j["dtype"] = std::string(dtypeName(t.dtype));
    j["shape"] = t.shape;
    j["strides"] = t.strides;
    j["storage_offset"] = t.storageOffset;
    j["device"] = t.device;
    j["nbytes"] = t.nbytes();
    const StorageInfo* s = t.storage >= 0 ? &ck.storages[static_cast<std::size_t>(t.storage)] : nullptr;
    j["storage_key"] = s ? nlohmann::json(s->key) : nlohmann::json(nullptr);
    j["storage_group"] = storageGroup(ck, t);
    j["requires_grad"] = t.requiresGrad ? nlohmann::json(*t.requiresGrad) : nlohmann::json(nullptr);
    if (s && s->error.empty() && t.error.empty())
        j["data_offset"] = s->fileOffset + static_cast<std::uint64_t>(t.storageOffset) * dtypeSize(t.dtype);
    else
        j["data_offset"] = nullptr;
    // Checkpoints of several files (shards, TensorFlow data files) say which one holds each tensor.
    if (s && ck.sources.size() > 1 && static_cast<std::size_t>(s->source) < ck.sources.size())
        j["file"] = ck.sources[static_cast<std::size_t>(s->source)].path;
    // A tensor assembled from chunks (distributed checkpoints): how many, and every file holding one.
    if (t.chunkSet >= 0 && static_cast<std::size_t>(t.chunkSet) < ck.chunkSets.size()) {
        const auto& chunks = ck.chunkSets[static_cast<std::size_t>(t.chunkSet)];
        std::vector<std::string> files;
        for (const auto& c : chunks)
            if (c.part.storage >= 0) {
                const int src = ck.storages[static_cast<std::size_t>(c.part.storage)].source;
                if (static_cast<std::size_t>(src) < ck.sources.size() &&
                    std::find(files.begin(), files.end(), ck.sources[static_cast<std::size_t>(src)].path) ==
                        files.end())
                    files.push_back(ck.sources[static_cast<std::size_t>(src)].path);
            }
        j["chunks"] = chunks.size();
        j["files"] = files;
    }
    if (t.layout != Layout::Strided)
        j["layout"] = layoutName(t.layout);
    if (t.isParameter)
        j["parameter"] = true;
    if (!t.typeName.empty())
        j["type"] = t.typeName;
    if (t.quant.scheme == QuantInfo::Scheme::PerTensorAffine)
        j["quantization"] = {
            {"scheme", "per_tensor_affine"}, {"scale", t.quant.scale}, {"zero_point", t.quant.zeroPoint}};
    else if (t.quant.scheme == QuantInfo::Scheme::PerChannelAffine)
        j["quantization"] = {{"scheme", "per_channel_affine"}, {"axis", t.quant.axis}};
    if (!t.error.empty())
        j["error"] = t.error;
    return j;
}

nlohmann::json findingsJson(const Checkpoint& ck) {
    nlohmann::json arr = nlohmann::json::array();
    for (const auto& f : ck.findings) {
        nlohmann::json j{
            {"severity", severityName(f.severity)}, {"message", f.message}, {"object", f.object}};
        if (!f.global.empty())
            j["global"] = f.global;
        if (f.offset)
            j["offset"] = *f.offset;
        arr.push_back(std::move(j));
    }
    return arr;
}

nlohmann::json valueJson(const Value* v) {
    switch (v->kind) {
    case ValueKind::None:
        return nullptr;
    case ValueKind::Bool:
        return v->boolean;
    case ValueKind::Int:
        return v->integer;
    case ValueKind::BigInt:
        return v->text;
    case ValueKind::Float:
        return doubleOrNull(v->real);
    case ValueKind::Complex:
        return nlohmann::json::array({doubleOrNull(v->real), doubleOrNull(v->imag())});
    case ValueKind::String:
        return v->text;
    case ValueKind::List:
    case ValueKind::Tuple:
    case ValueKind::Set: {
        nlohmann::json arr = nlohmann::json::array();
        for (const Value* item : v->items)
            arr.push_back(item->isContainer() ? nlohmann::json(valueRepr(item)) : valueJson(item));
        return arr;
    }
    case ValueKind::Dict:
        if (v->items.empty())
            return nlohmann::json::object();
        return valueRepr(v, 200);
    default:
        return valueRepr(v, 200);
    }
}

static const char* valueTypeName(const Value* v) {
    switch (v->kind) {
    case ValueKind::List:
    case ValueKind::Tuple:
    case ValueKind::Set:
        return "list";
    case ValueKind::Dict:
        return "dict";
    case ValueKind::Global:
    case ValueKind::Object:
    case ValueKind::Storage:
    case ValueKind::Tensor:
        return "object";
    default:
        return valueKindName(v->kind);
    }
}

nlohmann::json lsJson(const Checkpoint& ck, const std::string& file, const std::string& filter) {
    nlohmann::json j;
    j["file"] = file;
    j["format"] = ck.format;
    nlohmann::json tensors = nlohmann::json::array();
    for (const auto& t : ck.tensors)
        if (filter.empty() || globMatch(filter, t.name))
            tensors.push_back(tensorJson(ck, t));
    j["tensors"] = std::move(tensors);
    j["findings"] = findingsJson(ck);
    return j;
}

void writeLsJson(std::ostream& out, const Checkpoint& ck, const std::string& file,
                 const std::string& filter) {
    auto indented = [](const nlohmann::json& j, const char* pad) {
        std::string text = dumpJson(j, 2);
        std::string result = pad;
        for (char c : text) {
            result += c;
            if (c == '\n')
                result += pad;
        }
        return result;
    };
    // Keys in the order nlohmann's map would print them, so both writers give the same text.
    out << "{\n  \"file\": " << dumpJson(file, -1)
        << ",\n  \"findings\": " << indented(findingsJson(ck), "  ").substr(2)
        << ",\n  \"format\": " << dumpJson(ck.format, -1) << ",\n  \"tensors\": [";
    bool first = true;
    for (const auto& t : ck.tensors) {
        if (!filter.empty() && !globMatch(filter, t.name))
            continue;
        out << (first ? "\n" : ",\n") << indented(tensorJson(ck, t), "    ");
        first = false;
    }
    out << (first ? "]\n}\n" : "\n  ]\n}\n");
}

nlohmann::json infoJson(const Checkpoint& ck, const std::string& file) {
    const Summary s = summarize(ck);
    auto totals = [](const Totals& t) {
        return nlohmann::json{{"tensors", t.tensors}, {"parameters", t.parameters}, {"bytes", t.bytes}};
    };
    nlohmann::json j;
    j["file"] = file;
    j["format"] = ck.format;
    j["format_detail"] = ck.formatDetail;
    j["tensors"] = s.total.tensors;
    j["parameters"] = s.total.parameters;
    j["bytes"] = s.total.bytes;
    j["dtypes"] = nlohmann::json::object();
    for (const auto& [k, v] : s.dtypes)
        j["dtypes"][k] = totals(v);
    j["devices"] = nlohmann::json::object();
    for (const auto& [k, v] : s.devices)
        j["devices"][k] = totals(v);
    j["top_level"] = nlohmann::json::array();
    for (const auto& g : s.topLevel) {
        nlohmann::json gj = totals(g);
        gj["key"] = g.key;
        gj["share"] = g.share;
        j["top_level"].push_back(std::move(gj));
    }
    j["values"] = nlohmann::json::array();
    for (const auto& nv : ck.values)
        j["values"].push_back(
            {{"name", nv.name}, {"type", valueTypeName(nv.value)}, {"value", valueJson(nv.value)}});
    j["records"] = nlohmann::json::array();
    for (const auto& r : ck.records)
        j["records"].push_back({{"name", r.name}, {"size", r.size}});
    j["findings"] = findingsJson(ck);
    return j;
}

nlohmann::json statsJson(const TensorInfo& t, const TensorStats& s) {
    nlohmann::json j;
    j["name"] = t.name;
    j["dtype"] = std::string(dtypeName(t.dtype));
    j["shape"] = t.shape;
    j["count"] = s.count;
    j["min"] = doubleOrNull(s.min);
    j["max"] = doubleOrNull(s.max);
    j["mean"] = doubleOrNull(s.mean);
    j["std"] = doubleOrNull(s.std);
    j["zeros"] = s.zeros;
    j["nan"] = s.nan;
    j["inf"] = s.inf;
    j["histogram"] = {{"edges", s.histogram.edges}, {"counts", s.histogram.counts}};
    return j;
}

std::string dumpJson(const nlohmann::json& j, int indent) {
    return j.dump(indent, ' ', false, nlohmann::json::error_handler_t::replace);
}

void printLs(std::ostream& out, const Checkpoint& ck, const std::string& filter) {
    struct Row {
        std::string name, dtype, shape, device, size;
    };
    std::vector<Row> rows;
    std::size_t w[4] = {4, 5, 5, 6};
    for (const auto& t : ck.tensors) {
        if (!filter.empty() && !globMatch(filter, t.name))
            continue;
        Row r{printable(t.name), std::string(dtypeName(t.dtype)), shapeText(t.shape), printable(t.device),
              humanBytes(t.nbytes())};
        if (!t.error.empty())
            r.size += "  (unreadable: " + printable(t.error) + ")";
        w[0] = std::max(w[0], r.name.size());
        w[1] = std::max(w[1], r.dtype.size());
        w[2] = std::max(w[2], r.shape.size());
        w[3] = std::max(w[3], r.device.size());
        rows.push_back(std::move(r));
    }
    w[0] = std::min<std::size_t>(w[0], 80);
    auto line = [&](const Row& r) {
        out << std::left << std::setw(static_cast<int>(w[0])) << r.name << "  "
            << std::setw(static_cast<int>(w[1])) << r.dtype << "  " << std::setw(static_cast<int>(w[2]))
            << r.shape << "  " << std::setw(static_cast<int>(w[3])) << r.device << "  " << r.size << '\n';
    };
    line({"NAME", "DTYPE", "SHAPE", "DEVICE", "SIZE"});
    for (const auto& r : rows)
        line(r);
}

void printInfo(std::ostream& out, const Checkpoint& ck, const std::string& file) {
    const Summary s = summarize(ck);
    auto pct = [&](std::uint64_t part) {
        char buf[16];
        std::snprintf(buf, sizeof buf, "%5.1f%%",
                      s.total.bytes ? 100.0 * static_cast<double>(part) / static_cast<double>(s.total.bytes)
                                    : 0.0);
        return std::string(buf);
    };
    out << "File        " << printable(file) << '\n';
    out << "Format      " << printable(ck.formatDetail) << '\n';
    out << "Tensors     " << groupedNumber(s.total.tensors) << '\n';
    out << "Elements    " << groupedNumber(s.total.parameters) << '\n';
    out << "Size        " << humanBytes(s.total.bytes) << " (" << groupedNumber(s.total.bytes) << " bytes)\n";
    auto table = [&](const char* title, const auto& rows) {
        out << '\n' << title << '\n';
        for (const auto& [key, t] : rows)
            out << "  " << std::left << std::setw(24) << printable(key) << std::right << std::setw(8)
                << groupedNumber(t.tensors) << " tensors " << std::setw(16) << groupedNumber(t.parameters)
                << " elements " << std::setw(10) << humanBytes(t.bytes) << ' ' << pct(t.bytes) << '\n';
    };
    table("DTypes", s.dtypes);
    table("Devices", s.devices);
    if (s.topLevel.size() > 1 || (s.topLevel.size() == 1 && s.topLevel[0].key != "")) {
        std::vector<std::pair<std::string, Totals>> groups;
        for (const auto& g : s.topLevel)
            groups.emplace_back(g.key, g);
        if (groups.size() <= 40)
            table("Top-level keys", groups);
    }
    if (!ck.values.empty()) {
        out << "\nValues\n";
        std::size_t shown = 0;
        for (const auto& nv : ck.values) {
            if (++shown > 60) {
                out << "  ... " << ck.values.size() - 60 << " more (ckpt info --json lists all)\n";
                break;
            }
            out << "  " << (nv.name.empty() ? "(root)" : printable(nv.name)) << " = "
                << printable(valueRepr(nv.value, 100)) << '\n';
        }
    }
    if (!ck.records.empty()) {
        out << "\nOther records (shown, never run)\n";
        for (const auto& r : ck.records)
            out << "  " << printable(r.name) << "  " << humanBytes(r.size) << '\n';
    }
    if (!ck.findings.empty()) {
        out << "\nFindings\n";
        for (const auto& f : ck.findings)
            out << "  [" << severityName(f.severity) << "] "
                << printable(f.object.empty() ? "" : f.object + ": ") << printable(f.message) << '\n';
    }
}

void printStats(std::ostream& out, const TensorInfo& t, const TensorStats& s) {
    out << printable(t.name) << "  " << dtypeName(t.dtype) << ' ' << shapeText(t.shape) << '\n';
    out << "  count " << groupedNumber(s.count) << "  min " << number(s.min) << "  max " << number(s.max)
        << "  mean " << number(s.mean) << "  std " << number(s.std) << "  zeros " << groupedNumber(s.zeros)
        << "  nan " << groupedNumber(s.nan) << "  inf " << groupedNumber(s.inf) << '\n';
    if (s.finite == 0)
        return;
    static const char* bars[] = {" ",      "\u2581", "\u2582", "\u2583", "\u2584",
                                 "\u2585", "\u2586", "\u2587", "\u2588"};
    std::uint64_t peak = 0;
    for (auto c : s.histogram.counts)
        peak = std::max(peak, c);
    out << "  " << number(s.histogram.edges.front()) << " ";
    for (auto c : s.histogram.counts) {
        const auto level = peak ? static_cast<std::size_t>((c * 8 + peak - 1) / peak) : 0;
        out << bars[std::min<std::size_t>(level, 8)];
    }
    out << " " << number(s.histogram.edges.back()) << '\n';
}

} // namespace ckpt
