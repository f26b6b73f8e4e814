// Inner loops of the statistics plugin, one chunk at a time. kernels.cpp is compiled for AVX2 + FMA + F16C;
// plugin.cpp calls it only where the CPU has them, and parallelises over chunks. No torch types cross this
// interface.
#pragma once

#include <cstddef>
#include <cstdint>

namespace ckpt_torchstats {

// Elements per chunk. It is the portable path's chunk (TensorReader::forEachChunk), so that the chunk means
// and M2 are merged over the same boundaries in the same order; 64 KiB of float32 stays in L2 for the
// second, in-cache sweep of each chunk.
inline constexpr std::size_t kChunk = 16384;
// Bytes of scratch a kernel call may use (kChunk elements of the widest work type, plus alignment).
inline constexpr std::size_t kScratchBytes = kChunk * sizeof(double) + 64;

// dtype codes (ckpt::DType numeric values; checked against model/dtype.h in plugin.cpp).
enum : int { kFloat16 = 5, kFloat32 = 6, kFloat64 = 7, kBFloat16 = 15 };

// Moments of one chunk: counts, extremes and sum-free mean / M2 about the chunk's own mean.
struct ChunkMoments {
    std::uint64_t n = 0, finite = 0, zeros = 0, nan = 0; // inf = n - finite - nan
    double min = 0, max = 0, mean = 0, m2 = 0;           // over the finite elements, when finite > 0
};

// Histogram settings, computed once as stats.cpp's HistogramAccumulator does.
struct HistParams {
    const double* edges = nullptr; // bins + 1
    double lo = 0, hi = 0, norm = 0;
    double loHalf = 0; // lo / 2, for the wide case
    // floor(pos) is the bin, with no correction against the edges, where pos is at least this far from an
    // integer (see plugin.cpp); >= 0.25 disables that fast path.
    double margin = 1;
    std::int64_t bins = 1;
    bool wide = false; // hi - lo overflows: positions are computed from halves
    int replicas = 1;  // copies of the counts, to break store-to-load chains on repeated bins
};

struct KernelTable {
    const char* name;
    // `data` points at element 0 of the chunk (any alignment); n <= kChunk; scratch: kScratchBytes,
    // 64-byte aligned.
    void (*moments)(const void* data, int dtype, std::size_t n, ChunkMoments* out, void* scratch);
    // Adds the chunk into counts: `replicas` arrays of bins + 1 entries (the last one takes values
    // outside [lo, hi]), laid out one after another.
    void (*histogram)(const void* data, int dtype, std::size_t n, const HistParams* p, std::uint64_t* counts,
                      void* scratch);
};

const KernelTable& kernelsAvx2(); // only call where the CPU has AVX2, FMA and F16C

} // namespace ckpt_torchstats
