// The LibTorch statistics plugin, loaded on first use, and computeStats through it.
//
// Part of ckptcore; includes neither torch nor Qt. LibTorch costs about 0.6 s and 160 MB when loaded, so it
// lives in libckpt_torchstats.so, which only torchStatsPlugin() loads, with dlopen, the first time a
// statistic is asked for.
#pragma once

#include "analysis/stats.h"
#include "analysis/torchstats/abi.h"

#include <cstdint>
#include <optional>
#include <string>

namespace ckpt {

// Loads libckpt_torchstats.so on the first call (thread-safe, once per process; it is never unloaded) and
// returns its entry points, or null when it cannot be had (torchStatsPluginError() says why). Looked for, in
// order, at:
//   $CKPT_TORCHSTATS              an explicit path (tests); "off" disables the plugin
//   EXEDIR/../lib/                the build tree (CMAKE_BINARY_DIR/lib, beside app/)
//   EXEDIR/../lib/checkpoint-browser/
//   EXEDIR/../CKPT_TORCHSTATS_INSTALL_LIBDIR/  when the core was built with that definition (multiarch
//                                 installs: lib/x86_64-linux-gnu/checkpoint-browser)
//   EXEDIR/                       beside the executable
// where EXEDIR is the directory of /proc/self/exe. A candidate is used when it loads and reports
// CKPT_STATS_ABI_VERSION.
const ckpt_stats_api* torchStatsPlugin();
// The plugin if an earlier call loaded it, else null; never loads it.
const ckpt_stats_api* torchStatsPluginIfLoaded();
// Why torchStatsPlugin() returned null (one line per candidate tried), or the path it loaded.
const std::string& torchStatsPluginInfo();

// Why computeStatsFast would not hand this tensor to the plugin (without loading it): empty when it would,
// provided the plugin loads. For tests and diagnostics.
std::string torchStatsIneligibility(const CheckpointPtr& checkpoint, const TensorInfo& tensor);

// Loading the plugin (LibTorch: about 0.35-0.6 s) costs what the portable path takes for some 50M
// elements, so computeStatsFast loads it for a tensor of at least kTorchStatsLoadElements elements; once it
// is loaded (by that, or by an explicit torchStatsPlugin() call), it is used for every eligible tensor of at
// least kTorchStatsMinElements (one chunk: below that there is nothing to parallelise).
inline constexpr std::uint64_t kTorchStatsLoadElements = std::uint64_t{1} << 25; // 32M: 128 MiB of float32
inline constexpr std::uint64_t kTorchStatsMinElements = 16384;

// computeStats (stats.h), same contract and results (identical counts, min, max and histogram; mean and std
// to 1e-9 relative, see tests/core/tst_torchstats.cpp for the ill-conditioned cases), computed by the
// plugin when the tensor is a contiguous, strided, unquantized float16, bfloat16, float32 or float64 tensor
// in little-endian storage, large enough (above), and the plugin loads; by the portable computeStats
// otherwise, or when the plugin declines (a CPU without AVX2) or fails. Throws what computeStats throws
// (Error(Changed) when the file shrank on disk); returns nullopt when the progress callback cancels.
std::optional<TensorStats> computeStatsFast(const CheckpointPtr& checkpoint, const TensorInfo& tensor,
                                            int bins, const ProgressFn& progress = {});

// computeStatsFast without the size rules: the plugin is loaded if need be and used for every eligible
// tensor. *byPlugin (when given) tells whether the plugin computed the result. For tests and benchmarks.
std::optional<TensorStats> computeStatsWithPlugin(const CheckpointPtr& checkpoint, const TensorInfo& tensor,
                                                  int bins, const ProgressFn& progress = {},
                                                  bool* byPlugin = nullptr);

} // namespace ckpt
