#include "run.h"

#include "diff/diff.h"
#include "formats/open.h"
#include "formats/tfbundle.h"
#include "io/error.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <cmath>
#include <filesystem>
#include <limits>
#include <regex>

namespace fs = std::filesystem;

namespace ckpt {
namespace {

constexpr std::size_t kMaxRunFiles = 100000;

std::string lower(std::string_view s) {
    std::string out(s);
    for (char& c : out)
        c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return out;
}

bool hasCheckpointExtension(const std::string& name) {
    static const std::array<const char*, 13> kExtensions = {
        ".pt",   ".pth",   ".bin",  ".ckpt", ".tar", ".safetensors", ".h5",
        ".hdf5", ".keras", ".gguf", ".npz",  ".npy", ".index"};
    const std::string l = lower(name);
    return std::any_of(kExtensions.begin(), kExtensions.end(), [&](const char* e) {
        const std::string_view ext(e);
        return l.size() > ext.size() && l.compare(l.size() - ext.size(), ext.size(), ext) == 0;
    });
}

// The name without its extensions (".weights.h5", ".index", ".pt").
std::string stemOf(std::string_view fileName) {
    std::string s(fileName);
    for (const char* ext : {".index", ".h5", ".hdf5", ".pt", ".pth", ".bin", ".ckpt", ".tar", ".safetensors",
                            ".keras", ".gguf", ".npz", ".npy"}) {
        const std::string l = lower(s);
        const std::string_view e(ext);
        if (l.size() > e.size() && l.compare(l.size() - e.size(), e.size(), e) == 0) {
            s.resize(s.size() - e.size());
            break;
        }
    }
    if (lower(s).ends_with(".weights"))
        s.resize(s.size() - 8);
    return s;
}

bool isShardName(const std::string& name) {
    static const std::regex shard(R"(-\d+-of-\d+)");
    return std::regex_search(name, shard);
}

std::optional<std::int64_t> parseNumber(std::string_view digits) {
    std::int64_t v = 0;
    for (const char c : digits) {
        if (v > (std::numeric_limits<std::int64_t>::max() - 9) / 10)
            return std::nullopt;
        v = v * 10 + (c - '0');
    }
    return v;
}

void sortByStep(std::vector<RunEntry>& entries) {
    std::stable_sort(entries.begin(), entries.end(), [](const RunEntry& a, const RunEntry& b) {
        if (a.step != b.step) {
            if (a.step < 0 || b.step < 0)
                return b.step < 0; // names without a number after the numbered ones
            return a.step < b.step;
        }
        return naturalLess(a.label, b.label);
    });
}

std::string entryLabel(const std::string& path) {
    fs::path p(path);
    std::string name = p.filename().string();
    if (name.empty())
        name = p.parent_path().filename().string();
    return name;
}

// A TensorFlow directory's `checkpoint` state file, read by the bundle reader (which opens the latest
// bundle with it and lists every path of the state as a value).
std::optional<Run> runFromStateFile(const fs::path& dir) {
    std::error_code ec;
    const fs::path state = dir / "checkpoint";
    if (!fs::is_regular_file(state, ec))
        return std::nullopt;
    CheckpointPtr ck;
    try {
        ck = tryOpenTfBundle(state.string());
    } catch (const Error&) {
        return std::nullopt; // not a usable state file: treat the folder as a folder of files
    }
    if (!ck)
        return std::nullopt;
    Run run;
    run.source = state.string();
    run.kind = "tensorflow-state";
    for (const NamedValue& v : ck->values) {
        if (v.name != "checkpoint.all_model_checkpoint_paths" || !v.value)
            continue;
        for (const Value* item : v.value->items) {
            if (!item || item->kind != ValueKind::String)
                continue;
            fs::path p(item->text);
            if (p.is_relative())
                p = dir / p;
            else if (!fs::exists(p.string() + ".index", ec) &&
                     fs::exists((dir / p.filename()).string() + ".index", ec))
                p = dir / p.filename(); // a moved directory: its own bundle of that name
            if (!fs::exists(p.string() + ".index", ec)) {
                run.skipped.push_back(p.string() + ": listed in the state file, but its .index is missing");
                continue;
            }
            RunEntry e;
            e.path = p.string();
            e.label = p.filename().string();
            e.step = stepFromName(e.label).value_or(-1);
            run.entries.push_back(std::move(e));
        }
    }
    if (run.entries.empty())
        return std::nullopt;
    sortByStep(run.entries);
    return run;
}

// Running figures of one checkpoint while its elements stream past.
struct PointSums {
    MomentAccumulator moments;
    double sumSquares = 0;
    ValueDiff change; // against the previous checkpoint, merged over the tensors both have
    bool comparable = false;

    void addOwn(std::span<const double> v) {
        moments.add(v);
        for (const double x : v)
            if (std::isfinite(x))
                sumSquares += x * x;
    }
};

} // namespace

bool naturalLess(std::string_view a, std::string_view b) {
    std::size_t i = 0, j = 0;
    while (i < a.size() && j < b.size()) {
        const bool da = std::isdigit(static_cast<unsigned char>(a[i])) != 0;
        const bool db = std::isdigit(static_cast<unsigned char>(b[j])) != 0;
        if (da && db) {
            std::size_t ie = i, je = j;
            while (ie < a.size() && std::isdigit(static_cast<unsigned char>(a[ie])))
                ++ie;
            while (je < b.size() && std::isdigit(static_cast<unsigned char>(b[je])))
                ++je;
            // Compare by value without converting: strip leading zeros, then length, then digits.
            std::string_view x = a.substr(i, ie - i), y = b.substr(j, je - j);
            while (x.size() > 1 && x.front() == '0')
                x.remove_prefix(1);
            while (y.size() > 1 && y.front() == '0')
                y.remove_prefix(1);
            if (x.size() != y.size())
                return x.size() < y.size();
            if (x != y)
                return x < y;
            i = ie;
            j = je;
            continue;
        }
        const int ca = std::tolower(static_cast<unsigned char>(a[i]));
        const int cb = std::tolower(static_cast<unsigned char>(b[j]));
        if (ca != cb)
            return ca < cb;
        ++i;
        ++j;
    }
    if (a.size() - i != b.size() - j)
        return a.size() - i < b.size() - j;
    return a < b;
}

std::optional<std::int64_t> stepFromName(std::string_view fileName) {
    std::string stem = stemOf(fileName);
    static const std::regex shard(R"(-\d+-of-\d+)");
    stem = std::regex_replace(stem, shard, "");
    const std::string l = lower(stem);
    // A number after a keyword wins, finer keywords first.
    for (const char* keyword : {"global_step", "step", "iteration", "iter", "epoch", "ep", "ckpt-"}) {
        const std::regex re(std::string(keyword) + R"([_\-=.]?(\d+))");
        std::smatch m;
        if (std::regex_search(l, m, re))
            return parseNumber(m[1].str());
    }
    std::optional<std::int64_t> last;
    for (std::size_t i = 0; i < stem.size();) {
        if (std::isdigit(static_cast<unsigned char>(stem[i]))) {
            std::size_t e = i;
            while (e < stem.size() && std::isdigit(static_cast<unsigned char>(stem[e])))
                ++e;
            last = parseNumber(std::string_view(stem).substr(i, e - i));
            i = e;
        } else {
            ++i;
        }
    }
    return last;
}

Run discoverRun(const std::string& path) {
    std::error_code ec;
    fs::path p(path);
    if (fs::is_regular_file(p, ec) && p.filename() == "checkpoint")
        p = p.parent_path().empty() ? fs::path(".") : p.parent_path();
    if (!fs::is_directory(p, ec))
        throw Error(ErrorCode::NotFound, "not a directory of checkpoints", path);
    if (auto run = runFromStateFile(p))
        return *run;

    Run run;
    run.source = p.string();
    run.kind = "directory";
    std::vector<RunEntry> numbered, plain;
    fs::directory_iterator it(p, ec);
    if (ec)
        throw Error(ErrorCode::Io, "cannot list the directory: " + ec.message(), path);
    for (const fs::directory_entry& entry : it) {
        if (numbered.size() + plain.size() >= kMaxRunFiles)
            throw Error(ErrorCode::Limit, "more than 100,000 checkpoint files in one directory", path);
        std::error_code e2;
        const std::string name = entry.path().filename().string();
        if (!entry.is_regular_file(e2) || !hasCheckpointExtension(name))
            continue;
        if (isShardName(name)) {
            run.skipped.push_back(name + ": a shard of a larger checkpoint");
            continue;
        }
        RunEntry e;
        e.path = entry.path().string();
        e.label = name;
        if (lower(name).ends_with(".index")) { // TensorFlow bundle: open by its prefix
            e.path.resize(e.path.size() - 6);
            e.label.resize(e.label.size() - 6);
        }
        if (auto step = stepFromName(name)) {
            e.step = *step;
            numbered.push_back(std::move(e));
        } else {
            plain.push_back(std::move(e));
        }
    }
    if (numbered.empty() && plain.empty())
        throw Error(ErrorCode::NotFound, "no checkpoint files in the directory", path);
    if (!numbered.empty()) {
        for (const RunEntry& e : plain)
            run.skipped.push_back(e.label + ": its name carries no step");
        run.entries = std::move(numbered);
    } else {
        run.entries = std::move(plain);
    }
    sortByStep(run.entries);
    return run;
}

Run runFromPaths(const std::vector<std::string>& paths) {
    std::error_code ec;
    if (paths.size() == 1 && fs::is_directory(paths.front(), ec))
        return discoverRun(paths.front());
    if (paths.empty())
        throw Error(ErrorCode::NotFound, "no checkpoint files given");
    if (paths.size() > kMaxRunFiles)
        throw Error(ErrorCode::Limit, "more than 100,000 checkpoint files in one run");
    Run run;
    run.source = paths.front();
    run.kind = "files";
    bool anyStep = false;
    for (const std::string& path : paths) {
        RunEntry e;
        e.path = path;
        e.label = entryLabel(path);
        if (auto step = stepFromName(e.label)) {
            e.step = *step;
            anyStep = true;
        }
        run.entries.push_back(std::move(e));
    }
    if (anyStep)
        sortByStep(run.entries);
    return run;
}

std::vector<const TensorInfo*> tensorsNamed(const Checkpoint& checkpoint, const std::string& name) {
    std::vector<const TensorInfo*> out;
    if (!name.empty())
        if (const TensorInfo* t = checkpoint.findTensor(name))
            return {t};
    const std::string prefix = name.empty() ? std::string() : name + ".";
    for (const TensorInfo& t : checkpoint.tensors)
        if (t.name.starts_with(prefix))
            out.push_back(&t);
    return out;
}

std::optional<Timeline> computeTimeline(const Run& run, const std::string& name, int bins,
                                        const ProgressFn& progress) {
    Timeline out;
    out.name = name;
    const std::size_t n = run.entries.size();
    out.points.resize(n);
    // Progress in thousandths of a step: reading a checkpoint beside the one before it counts two, its
    // histogram one.
    const std::uint64_t total = static_cast<std::uint64_t>(n) * 3000;
    std::uint64_t base = 0;
    auto report = [&](std::uint64_t done, std::uint64_t of, std::uint64_t weight) {
        const std::uint64_t part = of ? done * 1000 * weight / of : 0;
        return !progress || progress(base + part, total);
    };

    double lo = std::numeric_limits<double>::infinity(), hi = -lo;
    CheckpointPtr previous;
    for (std::size_t i = 0; i < n; ++i) {
        RunPoint& point = out.points[i];
        CheckpointPtr current;
        try {
            current = openCheckpoint(run.entries[i].path);
        } catch (const Error& e) {
            point.error = e.what();
            previous.reset();
            base += 2000;
            continue;
        }
        const auto tensors = tensorsNamed(*current, name);
        point.present = !tensors.empty();
        std::uint64_t elements = 0;
        for (const TensorInfo* t : tensors)
            elements += t->numel();
        // Each element is read once for its own figures, and once more with the previous checkpoint's.
        const std::uint64_t work = previous ? elements * 2 : elements;
        std::uint64_t done = 0;
        PointSums sums;
        for (const TensorInfo* t : tensors) {
            std::optional<TensorReader> reader;
            try {
                reader.emplace(current, *t);
            } catch (const Error& e) {
                point.error += (point.error.empty() ? "" : "\n") + t->name + ": " + e.message();
                done += t->numel();
                continue;
            }
            bool go = true;
            try {
                go = reader->forEachChunk([&](std::span<const double> v, std::uint64_t) {
                    sums.addOwn(v);
                    done += v.size();
                    return report(done, work, 2);
                });
            } catch (const Error& e) {
                point.error += (point.error.empty() ? "" : "\n") + t->name + ": " + e.message();
            }
            if (!go)
                return std::nullopt;
            // The change from the checkpoint before, by the same figures `ckpt diff` gives for the pair.
            const TensorInfo* p = previous ? previous->findTensor(t->name) : nullptr;
            if (!p || p->numel() != t->numel())
                continue;
            const std::uint64_t before = done;
            const auto pair =
                diffTensors(previous, *p, current, *t, 0.0, [&](std::uint64_t d, std::uint64_t total) {
                    return report(before + (total ? d * t->numel() / total : 0), work, 2);
                });
            if (!pair)
                return std::nullopt;
            done = before + t->numel();
            if (pair->values) {
                sums.change.merge(*pair->values);
                sums.comparable = true;
            }
        }
        TensorStats stats;
        sums.moments.finish(stats);
        point.count = stats.count;
        point.finite = stats.finite;
        point.mean = stats.mean;
        point.std = stats.std;
        point.min = stats.min;
        point.max = stats.max;
        point.norm = std::sqrt(sums.sumSquares);
        if (sums.comparable)
            point.change = sums.change.relL2();
        if (stats.finite > 0) {
            lo = std::min(lo, stats.min);
            hi = std::max(hi, stats.max);
        }
        previous = point.present ? current : CheckpointPtr();
        base += 2000;
        if (!report(0, 0, 0))
            return std::nullopt;
    }
    previous.reset();

    if (!(lo <= hi)) { // nothing finite anywhere
        for (RunPoint& p : out.points)
            p.histogram.assign(static_cast<std::size_t>(std::max(bins, 1)), 0);
        return out;
    }
    for (std::size_t i = 0; i < n; ++i) {
        RunPoint& point = out.points[i];
        HistogramAccumulator hist(lo, hi, bins);
        if (out.edges.empty())
            out.edges = hist.histogram().edges;
        if (point.present && point.finite > 0) {
            CheckpointPtr current;
            try {
                current = openCheckpoint(run.entries[i].path);
            } catch (const Error& e) {
                point.error = e.what(); // changed on disk between the passes
            }
            if (current) {
                const auto tensors = tensorsNamed(*current, name);
                std::uint64_t elements = 0, done = 0;
                for (const TensorInfo* t : tensors)
                    elements += t->numel();
                for (const TensorInfo* t : tensors) {
                    try {
                        TensorReader reader(current, *t);
                        if (!reader.forEachChunk([&](std::span<const double> v, std::uint64_t) {
                                hist.add(v);
                                done += v.size();
                                return report(done, elements, 1);
                            }))
                            return std::nullopt;
                    } catch (const Error&) {
                        // already named in point.error by the first pass
                    }
                }
            }
        }
        point.histogram = hist.histogram().counts;
        base += 1000;
        if (!report(0, 0, 0))
            return std::nullopt;
    }
    return out;
}

} // namespace ckpt
