// Benchmark driver: times computeStatsFast (the LibTorch plugin) or the portable computeStats on one tensor
// of a checkpoint and prints one JSON object. Used by bench_stats.py; see README.md.
//
//   stats_driver FILE NAME [--bins N] [--runs N] [--portable]
//
// The checkpoint is opened once; each run computes the statistics again over the same mapping, so the
// first run also pays the page faults of a fresh mapping (and the plugin's dlopen, timed separately).

#include "analysis/stats.h"
#include "analysis/torchstats/loader.h"
#include "formats/open.h"
#include "io/error.h"

#include <nlohmann/json.hpp>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

namespace {

double seconds(std::chrono::steady_clock::time_point a, std::chrono::steady_clock::time_point b) {
    return std::chrono::duration<double>(b - a).count();
}

nlohmann::json number(double v) {
    return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(nullptr);
}

} // namespace

int main(int argc, char** argv) {
    std::string file, name;
    int bins = 32, runs = 3;
    bool portable = false;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        if (a == "--bins" && i + 1 < argc)
            bins = std::atoi(argv[++i]);
        else if (a == "--runs" && i + 1 < argc)
            runs = std::max(1, std::atoi(argv[++i]));
        else if (a == "--portable")
            portable = true;
        else if (file.empty())
            file = a;
        else if (name.empty())
            name = a;
        else {
            std::cerr << "usage: stats_driver FILE NAME [--bins N] [--runs N] [--portable]\n";
            return 2;
        }
    }
    if (name.empty()) {
        std::cerr << "usage: stats_driver FILE NAME [--bins N] [--runs N] [--portable]\n";
        return 2;
    }
    try {
        const auto ck = ckpt::openCheckpoint(file);
        const ckpt::TensorInfo* t = ck->findTensor(name);
        if (!t) {
            std::cerr << "stats_driver: no tensor " << name << "\n";
            return 2;
        }
        nlohmann::json out;
        out["tensor"] = name;
        out["bytes"] = t->nbytes();
        out["path"] = portable ? "portable" : "fast";
        if (!portable) {
            const auto a = std::chrono::steady_clock::now();
            const bool loaded = ckpt::torchStatsPlugin() != nullptr;
            out["plugin_load_s"] = seconds(a, std::chrono::steady_clock::now());
            out["plugin"] = loaded ? ckpt::torchStatsPluginInfo() : "";
            if (!loaded)
                out["plugin_error"] = ckpt::torchStatsPluginInfo();
            const std::string why = ckpt::torchStatsIneligibility(ck, *t);
            if (!why.empty())
                out["fallback_reason"] = why;
        }
        std::vector<double> times;
        std::optional<ckpt::TensorStats> s;
        for (int r = 0; r < runs; ++r) {
            const auto a = std::chrono::steady_clock::now();
            s = portable ? ckpt::computeStats(ck, *t, bins) : ckpt::computeStatsFast(ck, *t, bins);
            times.push_back(seconds(a, std::chrono::steady_clock::now()));
        }
        out["seconds"] = times;
        double best = times.front();
        for (double x : times)
            best = std::min(best, x);
        out["best_s"] = best;
        out["gbps"] = static_cast<double>(t->nbytes()) / best / 1e9;
        out["stats"] = {{"count", s->count},
                        {"finite", s->finite},
                        {"zeros", s->zeros},
                        {"nan", s->nan},
                        {"inf", s->inf},
                        {"min", number(s->min)},
                        {"max", number(s->max)},
                        {"mean", number(s->mean)},
                        {"std", number(s->std)},
                        {"edges", s->histogram.edges},
                        {"counts", s->histogram.counts}};
        std::cout << out.dump() << "\n";
        return 0;
    } catch (const ckpt::Error& e) {
        std::cerr << "stats_driver: " << e.what() << "\n";
        return 2;
    }
}
