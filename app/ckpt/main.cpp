// ckpt: inspect checkpoints from the command line. Argument parsing only; the work is in ckptcore.

#include "cli.h"

#include "analysis/stats.h"
#include "analysis/torchstats/loader.h"
#include "formats/open.h"
#include "io/error.h"
#include "report/report.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <optional>
#include <string>
#include <vector>

namespace {

constexpr const char* kUsage = R"(Usage:
  ckpt info  FILE [--json]                       format, counts, sizes, dtypes, devices, values, findings
  ckpt ls    FILE [--filter GLOB] [--json]       one row per tensor
  ckpt stats FILE [NAME...] [--bins N] [--json]  statistics and histogram per tensor
@COMMANDS@  ckpt --help | --version

Reads checkpoints without running any code from them and without modifying them: PyTorch (torch.save zip
and legacy formats, TorchScript), safetensors, sharded checkpoints (a folder or its *.index.json), TensorFlow
V2 bundles (.index, a .data shard, the prefix or the folder), GGUF, NumPy .npy/.npz.
Exit status: 0 on success, 2 on any error.
)";

struct Args {
    std::string command;
    std::string file;
    std::vector<std::string> names;
    std::string filter;
    int bins = 32;
    bool json = false;
};

using ckpt::cli::usageError;

std::vector<ckpt::cli::Command>& commands() {
    static std::vector<ckpt::cli::Command> registry;
    return registry;
}

std::string usageText() {
    std::string text = kUsage;
    std::string extra;
    for (const auto& c : commands())
        extra += c.usage;
    text.replace(text.find("@COMMANDS@"), 10, extra);
    return text;
}

Args parse(int argc, char** argv) {
    Args a;
    std::vector<std::string> positional;
    for (int i = 1; i < argc; ++i) {
        const std::string arg = argv[i];
        auto value = [&](const char* opt) -> std::string {
            if (i + 1 >= argc)
                usageError(std::string(opt) + " needs a value");
            return argv[++i];
        };
        if (arg == "--help" || arg == "-h") {
            std::cout << usageText();
            std::exit(0);
        } else if (arg == "--version") {
            std::cout << "ckpt " CKPT_VERSION "\n";
            std::exit(0);
        } else if (arg == "--json") {
            a.json = true;
        } else if (arg == "--filter") {
            a.filter = value("--filter");
        } else if (arg == "--bins") {
            const std::string v = value("--bins");
            char* end = nullptr;
            const long n = std::strtol(v.c_str(), &end, 10);
            if (v.empty() || *end || n < 1 || n > 100000)
                usageError("--bins needs a number between 1 and 100000");
            a.bins = static_cast<int>(n);
        } else if (arg == "--") {
            for (++i; i < argc; ++i)
                positional.emplace_back(argv[i]);
        } else if (arg.size() > 1 && arg[0] == '-') {
            usageError("unknown option " + arg);
        } else {
            positional.push_back(arg);
        }
    }
    if (positional.empty())
        usageError("no command given");
    a.command = positional[0];
    if (a.command != "info" && a.command != "ls" && a.command != "stats")
        usageError("unknown command '" + a.command + "'");
    if (positional.size() < 2)
        usageError(a.command + " needs a FILE");
    a.file = positional[1];
    a.names.assign(positional.begin() + 2, positional.end());
    if (!a.names.empty() && a.command != "stats")
        usageError(a.command + " takes one FILE");
    if (!a.filter.empty() && a.command != "ls")
        usageError("--filter applies to ls");
    return a;
}

using ckpt::cli::reportErrors;

int run(const Args& a) {
    const ckpt::CheckpointPtr ck = ckpt::openCheckpoint(a.file);
    static ckpt::CheckpointPtr keepUntilExit; // freed by the process exit, not object by object
    keepUntilExit = ck;
    if (a.command == "info") {
        if (a.json)
            std::cout << ckpt::dumpJson(ckpt::infoJson(*ck, a.file)) << '\n';
        else
            ckpt::printInfo(std::cout, *ck, a.file);
        return reportErrors(*ck, a.file) ? 2 : 0;
    }
    if (a.command == "ls") {
        if (a.json)
            ckpt::writeLsJson(std::cout, *ck, a.file, a.filter);
        else
            ckpt::printLs(std::cout, *ck, a.filter);
        return reportErrors(*ck, a.file) ? 2 : 0;
    }
    // stats
    std::vector<const ckpt::TensorInfo*> selected;
    if (a.names.empty()) {
        for (const auto& t : ck->tensors)
            selected.push_back(&t);
    } else {
        for (const auto& n : a.names) {
            const ckpt::TensorInfo* t = ck->findTensor(n);
            if (!t)
                throw ckpt::Error(ckpt::ErrorCode::NotFound, "no tensor named '" + n + "'", a.file);
            selected.push_back(t);
        }
    }
    bool failed = false;
    nlohmann::json out{{"file", a.file}, {"tensors", nlohmann::json::array()}};
    for (const ckpt::TensorInfo* t : selected) {
        try {
            const auto stats = ckpt::computeStatsFast(ck, *t, a.bins);
            if (a.json)
                out["tensors"].push_back(ckpt::statsJson(*t, *stats));
            else
                ckpt::printStats(std::cout, *t, *stats);
        } catch (const ckpt::Error& e) {
            failed = true;
            std::cerr << "ckpt: " << ckpt::printable(e.withFile(a.file).what()) << '\n';
            if (a.json)
                out["tensors"].push_back({{"name", t->name}, {"error", e.message()}});
        }
    }
    if (a.json)
        std::cout << ckpt::dumpJson(out) << '\n';
    return failed ? 2 : 0;
}

} // namespace

namespace ckpt::cli {

void registerCommand(const Command& command) {
    commands().push_back(command);
}
const std::vector<Command>& registeredCommands() {
    return commands();
}

void usageError(const std::string& what) {
    std::cerr << "ckpt: " << ckpt::printable(what) << " (ckpt --help shows the usage)\n";
    std::exit(2);
}

bool reportErrors(const ckpt::Checkpoint& ck, const std::string& file) {
    bool any = false;
    for (const auto& f : ck.findings) {
        if (f.severity != ckpt::Severity::Error)
            continue;
        any = true;
        std::string line = file + ": ";
        if (f.offset)
            line += "at byte " + std::to_string(*f.offset) + ": ";
        if (!f.object.empty())
            line += f.object + ": ";
        std::cerr << "ckpt: " << ckpt::printable(line + f.message) << '\n';
    }
    return any;
}

} // namespace ckpt::cli

namespace {

// A registered command (cmd_*.cpp) named by the first argument runs with everything after it.
int runRegistered(const ckpt::cli::Command& command, int argc, char** argv) {
    std::vector<std::string> rest(argv + 2, argv + argc);
    try {
        const int status = command.run(rest);
        std::cout.flush();
        std::fflush(nullptr);
        std::_Exit(status);
    } catch (const ckpt::Error& e) {
        std::cout.flush();
        std::cerr << "ckpt: " << ckpt::printable(e.what()) << '\n';
    } catch (const std::bad_alloc&) {
        std::cerr << "ckpt: out of memory\n";
    } catch (const std::exception& e) {
        std::cerr << "ckpt: " << ckpt::printable(e.what()) << '\n';
    }
    return 2;
}

} // namespace

int main(int argc, char** argv) {
    std::ios::sync_with_stdio(false);
    if (argc >= 2) {
        for (const auto& c : commands())
            if (argv[1] == std::string_view(c.name))
                return runRegistered(c, argc, argv);
    }
    const Args args = parse(argc, argv);
    try {
        const int status = run(args);
        // The process is done: leave without tearing down a tree of millions of objects one by one.
        std::cout.flush();
        std::fflush(nullptr);
        std::_Exit(status);
    } catch (const ckpt::Error& e) {
        std::cout.flush();
        std::cerr << "ckpt: " << ckpt::printable(e.withFile(args.file).what()) << '\n';
    } catch (const std::bad_alloc&) {
        std::cerr << "ckpt: " << args.file << ": out of memory\n";
    } catch (const std::exception& e) {
        std::cerr << "ckpt: " << ckpt::printable(args.file + ": " + e.what()) << '\n';
    }
    return 2;
}
