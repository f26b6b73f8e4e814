// ckpt export: a filtered, renamed, re-typed or device-remapped copy in the PyTorch or safetensors format.

#include "cli.h"

#include "export/exporter.h"
#include "formats/open.h"
#include "io/error.h"
#include "report/report.h"

#include <chrono>
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

namespace {

using ckpt::cli::usageError;

std::string humanBytes(std::uint64_t n) {
    const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    double v = static_cast<double>(n);
    int u = 0;
    while (v >= 1024 && u < 4) {
        v /= 1024;
        ++u;
    }
    char buf[32];
    std::snprintf(buf, sizeof buf, u ? "%.1f %s" : "%.0f %s", v, units[u]);
    return buf;
}

std::string shapeText(const std::vector<std::int64_t>& shape) {
    std::string s = "[";
    for (std::size_t i = 0; i < shape.size(); ++i)
        s += (i ? ", " : "") + std::to_string(shape[i]);
    return s + "]";
}

int runExport(const std::vector<std::string>& args) {
    ckpt::ExportOptions o;
    std::string src, dst;
    bool dryRun = false, quiet = false, formatGiven = false;
    for (std::size_t i = 0; i < args.size(); ++i) {
        const std::string& a = args[i];
        auto value = [&]() -> const std::string& {
            if (i + 1 >= args.size())
                usageError(a + " needs a value");
            return args[++i];
        };
        if (a == "-o" || a == "--output")
            dst = value();
        else if (a == "--include")
            o.includes.push_back(value());
        else if (a == "--exclude")
            o.excludes.push_back(value());
        else if (a == "--preset") {
            const std::string& p = value();
            if (p != "weights-only")
                usageError("unknown preset '" + p + "' (known: weights-only)");
            o.weightsOnly = true;
        } else if (a == "--strip-prefix")
            o.stripPrefixes.push_back(value());
        else if (a == "--add-prefix")
            o.addPrefix = value();
        else if (a == "--rename") {
            const std::string& r = value();
            const auto eq = r.find('=');
            if (eq == std::string::npos || eq == 0)
                usageError("--rename needs REGEX=REPLACEMENT");
            o.regexRenames.emplace_back(r.substr(0, eq), r.substr(eq + 1));
        } else if (a == "--map-location") {
            try {
                o.deviceMap.push_back(ckpt::parseDeviceMapping(value()));
            } catch (const ckpt::Error& e) {
                usageError(e.message());
            }
        } else if (a == "--dtype") {
            const std::string& d = value();
            o.castTo = ckpt::castTargetFromName(d);
            if (!o.castTo)
                usageError("unknown dtype '" + d + "' (known: float32, float16, bfloat16, float64)");
        } else if (a == "--keep-dtype")
            o.keepDtype.push_back(value());
        else if (a == "--keep-values")
            o.keepValues = true;
        else if (a == "--format") {
            const std::string& f = value();
            if (f == "torch" || f == "pytorch")
                o.format = ckpt::ExportFormat::Torch;
            else if (f == "safetensors")
                o.format = ckpt::ExportFormat::Safetensors;
            else
                usageError("unknown format '" + f + "' (known: torch, safetensors)");
            formatGiven = true;
        } else if (a == "--dry-run")
            dryRun = true;
        else if (a == "--quiet" || a == "-q")
            quiet = true;
        else if (a.size() > 1 && a[0] == '-')
            usageError("unknown option " + a + " for export");
        else if (src.empty())
            src = a;
        else
            usageError("export takes one SRC file");
    }
    if (src.empty())
        usageError("export needs a SRC file");
    if (dst.empty() && !dryRun)
        usageError("export needs -o DST");
    if (!formatGiven && dst.size() >= 12 && dst.compare(dst.size() - 12, 12, ".safetensors") == 0)
        o.format = ckpt::ExportFormat::Safetensors;

    const ckpt::CheckpointPtr ck = ckpt::openCheckpoint(src);
    static ckpt::CheckpointPtr keepUntilExit;
    keepUntilExit = ck;
    const ckpt::ExportPlan plan = ckpt::buildExportPlan(*ck, o);
    for (const auto& n : plan.notes)
        std::cerr << "ckpt: note: " << ckpt::printable(n) << '\n';
    if (!plan.ok()) {
        for (const auto& e : plan.errors)
            std::cerr << "ckpt: " << ckpt::printable(src + ": " + e) << '\n';
        return 2;
    }
    if (dryRun) {
        const ckpt::ExportLayout layout = ckpt::describeExport(*ck, plan, o);
        for (const auto& n : layout.notes)
            std::cerr << "ckpt: note: " << ckpt::printable(n) << '\n';
        for (const auto& t : plan.tensors) {
            const auto& s = ck->tensors[static_cast<std::size_t>(t.source)];
            std::cout << ckpt::printable(t.name) << '\t' << shapeText(t.shape) << '\t'
                      << ckpt::dtypeName(t.dtype) << '\t'
                      << (o.format == ckpt::ExportFormat::Torch ? t.device : std::string("-")) << '\t'
                      << (t.name != s.name ? "from " + ckpt::printable(s.name) : std::string()) << '\n';
        }
        for (const auto& v : plan.values)
            std::cout << ckpt::printable(v.name) << "\tvalue\n";
        std::cout << plan.tensors.size() << " tensors, " << humanBytes(plan.tensorBytes)
                  << " of data; output about " << humanBytes(layout.outputBytes) << '\n';
        return 0;
    }
    const auto start = std::chrono::steady_clock::now();
    const ckpt::ExportResult r = ckpt::exportCheckpoint(ck, plan, o, dst);
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (r.staleRemoved)
        std::cerr << "ckpt: removed " << r.staleRemoved << " temporary file(s) of an interrupted export\n";
    for (const auto& n : r.notes)
        std::cerr << "ckpt: note: " << ckpt::printable(n) << '\n';
    if (!quiet)
        std::cout << "wrote " << ckpt::printable(dst) << ": " << plan.tensors.size() << " tensors, "
                  << humanBytes(r.bytesWritten) << " (" << humanBytes(r.bytesCopied) << " copied, "
                  << humanBytes(r.bytesConverted) << " converted) in " << secs << " s, verified\n";
    return 0;
}

const ckpt::cli::Registrar
    registrar({"export",
               "  ckpt export SRC -o DST [--include PAT]... [--exclude PAT]... [--preset weights-only]\n"
               "              [--strip-prefix P]... [--add-prefix P] [--rename REGEX=REPL]...\n"
               "              [--map-location FROM=TO]... [--dtype DTYPE] [--keep-dtype PAT]...\n"
               "              [--keep-values] [--format torch|safetensors] [--dry-run] [--quiet]\n"
               "                                               write a filtered, renamed, cast copy\n",
               &runExport});

} // namespace
