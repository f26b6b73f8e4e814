// ckpt diff A B: what changed between two checkpoints. Exit status as diff(1): 0 same, 1 different, 2
// trouble.

#include "cli.h"

#include "diff/diff.h"
#include "formats/open.h"
#include "io/error.h"
#include "report/report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

namespace {

using ckpt::cli::usageError;

struct DiffArgs {
    std::string a, b;
    bool json = false;
    ckpt::DiffOptions options;
};

DiffArgs parseArgs(const std::vector<std::string>& args) {
    DiffArgs d;
    std::vector<std::string> positional;
    for (std::size_t i = 0; i < args.size(); ++i) {
        const std::string& arg = args[i];
        auto value = [&](const std::string& flag) -> std::string {
            if (arg.size() > flag.size() && arg.compare(0, flag.size() + 1, flag + "=") == 0)
                return arg.substr(flag.size() + 1);
            if (i + 1 >= args.size())
                usageError(flag + " needs a value");
            return args[++i];
        };
        auto is = [&](const std::string& flag) { return arg == flag || arg.rfind(flag + "=", 0) == 0; };
        if (arg == "--json") {
            d.json = true;
        } else if (is("--threshold")) {
            const std::string v = value("--threshold");
            std::size_t used = 0;
            double t = -1;
            try {
                t = std::stod(v, &used);
            } catch (const std::exception&) {
                used = 0;
            }
            if (used != v.size() || v.empty() || !std::isfinite(t) || t < 0)
                usageError("--threshold needs a number >= 0, not '" + v + "'");
            d.options.threshold = t;
        } else if (is("--prefix-a")) {
            d.options.prefixA = value("--prefix-a");
        } else if (is("--prefix-b")) {
            d.options.prefixB = value("--prefix-b");
        } else if (arg.size() > 1 && arg[0] == '-' && arg != "-") {
            usageError("unknown option '" + arg + "' for diff");
        } else {
            positional.push_back(arg);
        }
    }
    if (positional.size() != 2)
        usageError("diff needs two files, A and B");
    d.a = positional[0];
    d.b = positional[1];
    return d;
}

nlohmann::json number(double v) {
    if (!std::isfinite(v))
        return nullptr;
    return v;
}

std::string deviceText(const ckpt::TensorInfo& t) {
    return t.device.empty() ? std::string("cpu") : t.device;
}

// The attribute a structural change concerns, as text on each side.
std::pair<std::string, std::string> changedAttribute(const ckpt::TensorDiff& d, const ckpt::Checkpoint& a,
                                                     const ckpt::Checkpoint& b) {
    const auto& ta = a.tensors[static_cast<std::size_t>(d.a)];
    const auto& tb = b.tensors[static_cast<std::size_t>(d.b)];
    switch (d.kind) {
    case ckpt::ChangeKind::Shape:
        return {ckpt::shapeText(ta.shape), ckpt::shapeText(tb.shape)};
    case ckpt::ChangeKind::DType:
        return {std::string(ckpt::dtypeName(ta.dtype)), std::string(ckpt::dtypeName(tb.dtype))};
    case ckpt::ChangeKind::Device:
        return {deviceText(ta), deviceText(tb)};
    default:
        return {};
    }
}

// Changed tensors, the largest change first: shapes (values incomparable), then by relative L2 change,
// then by max |B - A|.
std::vector<const ckpt::TensorDiff*> changedSorted(const ckpt::DiffResult& r) {
    std::vector<const ckpt::TensorDiff*> out;
    for (const auto& t : r.tensors)
        if (t.status == ckpt::DiffStatus::Changed)
            out.push_back(&t);
    auto key = [](const ckpt::TensorDiff* t) {
        if (!t->values)
            return std::numeric_limits<double>::infinity();
        const double v = t->values->relL2();
        return std::isnan(v) ? std::numeric_limits<double>::infinity() : v;
    };
    std::stable_sort(out.begin(), out.end(), [&](const ckpt::TensorDiff* x, const ckpt::TensorDiff* y) {
        const double kx = key(x), ky = key(y);
        if (kx != ky)
            return kx > ky;
        const double mx = x->values ? x->values->maxAbs : 0, my = y->values ? y->values->maxAbs : 0;
        return mx > my;
    });
    return out;
}

// Modules (not the root) with compared values, the largest relative change first.
std::vector<const ckpt::ModuleDiff*> modulesSorted(const ckpt::DiffResult& r) {
    std::vector<const ckpt::ModuleDiff*> out;
    for (std::size_t i = 1; i < r.modules.size(); ++i)
        if (r.modules[i].values.count > 0 || r.modules[i].added || r.modules[i].removed)
            out.push_back(&r.modules[i]);
    auto key = [](const ckpt::ModuleDiff* m) {
        const double v = m->values.relL2();
        return std::isnan(v) ? std::numeric_limits<double>::infinity() : v;
    };
    std::stable_sort(out.begin(), out.end(), [&](const ckpt::ModuleDiff* x, const ckpt::ModuleDiff* y) {
        const double kx = key(x), ky = key(y);
        if (kx != ky)
            return kx > ky;
        return x->depth < y->depth;
    });
    return out;
}

nlohmann::json figuresJson(const ckpt::ValueDiff* v, nlohmann::json& j) {
    if (v) {
        j["max_abs"] = number(v->maxAbs);
        j["mean_abs"] = number(v->meanAbs());
        j["rel_l2"] = number(v->relL2());
        j["cosine"] = number(v->cosine());
        j["changed_fraction"] = number(v->changedFraction());
    } else {
        for (const char* k : {"max_abs", "mean_abs", "rel_l2", "cosine", "changed_fraction"})
            j[k] = nullptr;
    }
    return j;
}

nlohmann::json resultJson(const ckpt::DiffResult& r, const ckpt::Checkpoint& a, const ckpt::Checkpoint& b,
                          const std::string& fileA, const std::string& fileB) {
    using nlohmann::json;
    json j;
    j["a"] = fileA;
    j["b"] = fileB;
    j["alignment"] = {{"rule", ckpt::alignmentRuleName(r.alignment.rule)},
                      {"prefix_a", r.alignment.prefixA},
                      {"prefix_b", r.alignment.prefixB},
                      {"matched", r.alignment.matched},
                      {"matched_by_name", r.alignment.matchedByName},
                      {"description", r.alignment.description}};
    j["threshold"] = r.threshold;
    json added = json::array(), removed = json::array(), errors = json::array();
    std::size_t identical = 0;
    for (const auto& t : r.tensors) {
        if (t.status == ckpt::DiffStatus::Added)
            added.push_back(t.name);
        else if (t.status == ckpt::DiffStatus::Removed)
            removed.push_back(t.name);
        else if (t.status == ckpt::DiffStatus::Same)
            ++identical;
        else if (t.status == ckpt::DiffStatus::Error)
            errors.push_back({{"name", t.name}, {"error", t.error}});
    }
    j["added"] = std::move(added);
    j["removed"] = std::move(removed);
    j["identical"] = identical;
    json changed = json::array();
    for (const ckpt::TensorDiff* t : changedSorted(r)) {
        json c{{"name", t->name}, {"kind", ckpt::changeKindName(t->kind)}};
        figuresJson(t->values ? &*t->values : nullptr, c);
        if (t->kind != ckpt::ChangeKind::Values) {
            auto [x, y] = changedAttribute(*t, a, b);
            c["from"] = x;
            c["to"] = y;
        }
        changed.push_back(std::move(c));
    }
    j["changed"] = std::move(changed);
    json values = json::array();
    for (const auto& v : r.values)
        values.push_back({{"name", v.name},
                          {"a", v.valueA ? ckpt::valueJson(v.valueA) : json()},
                          {"b", v.valueB ? ckpt::valueJson(v.valueB) : json()},
                          {"status", !v.valueA   ? "added"
                                     : !v.valueB ? "removed"
                                                 : "changed"}});
    j["values_changed"] = std::move(values);
    json modules = json::array();
    for (const ckpt::ModuleDiff* m : modulesSorted(r)) {
        json e{{"name", m->name},
               {"tensors", m->tensors},
               {"changed", m->changedTensors},
               {"added", m->added},
               {"removed", m->removed}};
        figuresJson(m->values.count ? &m->values : nullptr, e);
        modules.push_back(std::move(e));
    }
    j["modules"] = std::move(modules);
    if (!errors.empty())
        j["errors"] = std::move(errors);
    return j;
}

std::string fmt(double v) {
    if (std::isnan(v))
        return "nan";
    if (std::isinf(v))
        return v > 0 ? "inf" : "-inf";
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.4g", v);
    return buf;
}

std::string pad(std::string s, std::size_t w) {
    if (s.size() < w)
        s.append(w - s.size(), ' ');
    return s;
}

constexpr std::size_t kListMax = 40;

void printText(std::ostream& out, const ckpt::DiffResult& r, const ckpt::Checkpoint& a,
               const ckpt::Checkpoint& b, const std::string& fileA, const std::string& fileB) {
    using ckpt::printable;
    const std::size_t same = r.count(ckpt::DiffStatus::Same), changed = r.count(ckpt::DiffStatus::Changed),
                      added = r.count(ckpt::DiffStatus::Added), removed = r.count(ckpt::DiffStatus::Removed),
                      errors = r.count(ckpt::DiffStatus::Error);
    out << "A: " << printable(fileA) << " (" << a.format << ", " << a.tensors.size() << " tensors)\n";
    out << "B: " << printable(fileB) << " (" << b.format << ", " << b.tensors.size() << " tensors)\n";
    out << "Alignment: " << printable(r.alignment.description) << "; " << r.alignment.matched
        << " names matched (" << r.alignment.matchedByName << " as they are)\n";
    out << "Tensors: " << same + changed + errors << " on both sides, " << same << " identical";
    if (r.threshold > 0)
        out << " (max |B - A| <= " << fmt(r.threshold) << ")";
    out << ", " << changed << " changed; " << removed << " only in A, " << added << " only in B";
    if (errors)
        out << "; " << errors << " unreadable";
    out << "\nValues: " << r.values.size() << " differ\n";

    auto list = [&](const char* title, ckpt::DiffStatus status, const ckpt::Checkpoint& ck, bool useA,
                    char mark) {
        std::size_t n = 0;
        for (const auto& t : r.tensors) {
            if (t.status != status)
                continue;
            if (n == 0)
                out << "\n" << title << ":\n";
            if (++n > kListMax)
                continue;
            const auto& ti = ck.tensors[static_cast<std::size_t>(useA ? t.a : t.b)];
            out << "  " << mark << ' ' << printable(t.name) << "  " << ckpt::shapeText(ti.shape) << ' '
                << ckpt::dtypeName(ti.dtype) << '\n';
        }
        if (n > kListMax)
            out << "  ... " << n - kListMax << " more (--json lists all)\n";
    };
    list("Only in A (removed)", ckpt::DiffStatus::Removed, a, true, '-');
    list("Only in B (added)", ckpt::DiffStatus::Added, b, false, '+');

    const auto sorted = changedSorted(r);
    if (!sorted.empty()) {
        std::size_t w = 4;
        for (std::size_t i = 0; i < sorted.size() && i < kListMax; ++i)
            w = std::max(w, printable(sorted[i]->name).size());
        w = std::min<std::size_t>(w, 60);
        out << "\nChanged (largest relative change first):\n";
        out << "  " << pad("name", w) << "  " << pad("kind", 7) << pad("rel_l2", 11) << pad("max_abs", 11)
            << pad("mean_abs", 11) << pad("cosine", 11) << "changed\n";
        for (std::size_t i = 0; i < sorted.size() && i < kListMax; ++i) {
            const ckpt::TensorDiff& t = *sorted[i];
            out << "  " << pad(printable(t.name), w) << "  " << pad(ckpt::changeKindName(t.kind), 7);
            if (t.values) {
                const auto& v = *t.values;
                out << pad(fmt(v.relL2()), 11) << pad(fmt(v.maxAbs), 11) << pad(fmt(v.meanAbs()), 11)
                    << pad(fmt(v.cosine()), 11) << fmt(100.0 * v.changedFraction()) << '%';
            }
            if (t.kind != ckpt::ChangeKind::Values) {
                auto [x, y] = changedAttribute(t, a, b);
                out << (t.values ? "  " : "") << printable(x) << " -> " << printable(y);
            }
            out << '\n';
        }
        if (sorted.size() > kListMax)
            out << "  ... " << sorted.size() - kListMax << " more (--json lists all)\n";
    }

    if (!r.values.empty()) {
        out << "\nValues changed:\n";
        std::size_t n = 0;
        for (const auto& v : r.values) {
            if (++n > kListMax) {
                out << "  ... " << r.values.size() - kListMax << " more (--json lists all)\n";
                break;
            }
            out << "  " << printable(v.name) << ": " << printable(v.a.value_or("(absent)")) << " -> "
                << printable(v.b.value_or("(absent)")) << '\n';
        }
    }

    const auto mods = modulesSorted(r);
    std::size_t shown = 0;
    for (const ckpt::ModuleDiff* m : mods)
        if (m->changedTensors || m->added || m->removed)
            ++shown;
    if (shown) {
        std::size_t w = 6;
        for (const ckpt::ModuleDiff* m : mods)
            w = std::max(w, printable(m->name).size());
        w = std::min<std::size_t>(w, 60);
        out << "\nModules that moved most:\n";
        out << "  " << pad("module", w) << "  " << pad("rel_l2", 11) << pad("max_abs", 11)
            << pad("cosine", 11) << "changed tensors\n";
        std::size_t n = 0;
        for (const ckpt::ModuleDiff* m : mods) {
            if (!(m->changedTensors || m->added || m->removed))
                continue;
            if (++n > 10)
                break;
            out << "  " << pad(printable(m->name), w) << "  ";
            if (m->values.count)
                out << pad(fmt(m->values.relL2()), 11) << pad(fmt(m->values.maxAbs), 11)
                    << pad(fmt(m->values.cosine()), 11);
            else
                out << pad("-", 11) << pad("-", 11) << pad("-", 11);
            out << m->changedTensors << " of " << m->tensors;
            if (m->added)
                out << ", " << m->added << " added";
            if (m->removed)
                out << ", " << m->removed << " removed";
            out << '\n';
        }
    }
    if (!r.differs())
        out << "\nNo differences.\n";
}

int runDiff(const std::vector<std::string>& args) {
    const DiffArgs d = parseArgs(args);
    static ckpt::CheckpointPtr keepA, keepB; // freed by the process exit, not object by object
    keepA = ckpt::openCheckpoint(d.a);
    keepB = ckpt::openCheckpoint(d.b);
    bool trouble = ckpt::cli::reportErrors(*keepA, d.a);
    trouble = ckpt::cli::reportErrors(*keepB, d.b) || trouble;
    // Kept until the process exits, as the checkpoints are: no teardown of a result per tensor.
    static std::optional<ckpt::DiffResult> result;
    result = ckpt::diffCheckpoints(keepA, keepB, d.options);
    if (!result)
        throw ckpt::Error(ckpt::ErrorCode::Cancelled, "the comparison was cancelled");
    for (const auto& t : result->tensors)
        if (t.status == ckpt::DiffStatus::Error) {
            trouble = true;
            std::cerr << "ckpt: " << ckpt::printable(t.error) << " (values not compared)\n";
        }
    if (d.json)
        std::cout << ckpt::dumpJson(resultJson(*result, *keepA, *keepB, d.a, d.b)) << '\n';
    else
        printText(std::cout, *result, *keepA, *keepB, d.a, d.b);
    if (trouble)
        return 2;
    return result->differs() ? 1 : 0;
}

const ckpt::cli::Registrar registrar({
    "diff",
    "  ckpt diff  A B [--json] [--threshold X]        what changed from A to B (exit 0 same, 1 differ)\n"
    "             [--prefix-a P] [--prefix-b P]       strip P from A's / B's names to align them\n",
    runDiff,
});

} // namespace
