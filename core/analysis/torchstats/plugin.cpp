// libckpt_torchstats.so: tensor statistics with LibTorch, behind the C ABI of abi.h.
//
// Loaded with dlopen on first use only (loader.h), so that LibTorch (0.35-0.6 s, 160 MB) stays off the
// start-up path. Two passes over the elements, each parallelised with at::parallel_for over chunks of kChunk
// elements and vectorised with at::vec::Vectorized (kernels.cpp, AVX2):
//   1. per chunk: finite, zeros, NaN, sum, min and max in one sweep, then M2 about the chunk mean in a second
//      sweep while the chunk is in cache; the chunks are merged in order with Chan's formula, as stats.cpp's
//      MomentAccumulator merges the same chunks;
//   2. the histogram over [min, max], with the edges and bin assignment of stats.cpp's
//      HistogramAccumulator (numpy.histogram), into per-thread counts summed at the end.
// Measured on Debian's LibTorch 1.13 with two cores (tests/bench/README.md): chaining torch ops (isfinite,
// a masked copy, aminmax, std_mean, histc) runs at about 0.1 GB/s on a 1 GiB float32 tensor, these two
// passes at about 6 GB/s; and histc neither bins as NumPy does nor counts past 2^24 per bin (float32).
// Work is split into blocks of about 1/48 of the tensor; progress is reported, and cancelling honoured,
// between blocks, on the calling thread.
//
// Not guarded against SIGBUS: a file truncated on disk while its pages are being read here kills the
// process (the portable path turns that into an error, but its guard is per thread and cannot reach
// OpenMP's workers). The loader checks the file's size just before.

#include "abi.h"
#include "kernels.h"

#include "model/dtype.h"

#include <ATen/Parallel.h>

#include <sched.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <limits>
#include <memory>
#include <mutex>
#include <new>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#define CKPT_EXPORT extern "C" __attribute__((visibility("default")))

namespace ckpt_torchstats {
namespace {

static_assert(kFloat16 == static_cast<int>(ckpt::DType::Float16));
static_assert(kFloat32 == static_cast<int>(ckpt::DType::Float32));
static_assert(kFloat64 == static_cast<int>(ckpt::DType::Float64));
static_assert(kBFloat16 == static_cast<int>(ckpt::DType::BFloat16));

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr std::int64_t kBlocksPerPass = 48; // progress calls: at most 2 * 48 (+ the last)
constexpr std::int64_t kMinChunksPerBlock = 16;

std::size_t elementSize(int dtype) {
    switch (dtype) {
    case kFloat16:
    case kBFloat16:
        return 2;
    case kFloat32:
        return 4;
    case kFloat64:
        return 8;
    default:
        return 0;
    }
}

// The kernels need AVX2, FMA and F16C (any x86-64 CPU since 2013-2015 but some small Atom-class ones);
// elsewhere the plugin declines (CKPT_STATS_UNSUPPORTED) and the portable path runs.
const KernelTable* kernels() {
    static const KernelTable* table = []() -> const KernelTable* {
        __builtin_cpu_init();
        if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c"))
            return &kernelsAvx2();
        return nullptr;
    }();
    return table;
}

int usableCores() {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0) {
        const int n = CPU_COUNT(&set);
        if (n > 0)
            return n;
    }
    return std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
}

// Debian's LibTorch starts with one intra-op thread; OpenMP keeps the setting per calling thread.
void useThreads(int requested) {
    const int n = requested > 0 ? requested : usableCores();
    if (at::get_num_threads() != n)
        at::set_num_threads(n);
}

// Per-thread scratch for converted or realigned chunks; OpenMP's worker threads live on, and so does it.
void* scratch() {
    struct Buffer {
        void* p = nullptr;
        ~Buffer() { std::free(p); }
    };
    thread_local Buffer buffer;
    if (!buffer.p) {
        buffer.p = std::aligned_alloc(64, kScratchBytes);
        if (!buffer.p)
            throw std::bad_alloc();
    }
    return buffer.p;
}

// stats.cpp's MomentAccumulator, fed with chunk moments instead of values.
struct Moments {
    std::uint64_t count = 0, finite = 0, zeros = 0, nan = 0, inf = 0;
    double min = 0, max = 0, mean = 0, m2 = 0;

    void merge(const ChunkMoments& c) {
        count += c.n;
        zeros += c.zeros;
        nan += c.nan;
        inf += c.n - c.finite - c.nan;
        if (c.finite == 0)
            return;
        if (finite == 0) {
            min = c.min;
            max = c.max;
            mean = c.mean;
            m2 = c.m2;
            finite = c.finite;
            return;
        }
        min = std::min(min, c.min);
        max = std::max(max, c.max);
        const double na = static_cast<double>(finite), nb = static_cast<double>(c.finite);
        const double delta = c.mean - mean;
        const double total = na + nb;
        mean += delta * nb / total;
        m2 += c.m2 + delta * delta * na * nb / total;
        finite += c.finite;
    }
};

class Cancelled {};

// One task of a pass: kernel calls over chunks [b, e), run through the caller's SIGBUS guard. Plain data
// only: a guarded read that fails leaves runChunks at any instruction.
struct ChunkTask {
    const KernelTable* k;
    int dtype;
    const unsigned char* base;
    std::size_t elsize;
    std::uint64_t numel;
    std::int64_t b, e, c0;
    ChunkMoments* part;   // moments pass: one per chunk, indexed c - c0
    const HistParams* hp; // histogram pass
    std::uint64_t* counts;
    void* buf;
};

void runChunks(void* arg) {
    const auto* t = static_cast<const ChunkTask*>(arg);
    for (std::int64_t c = t->b; c < t->e; ++c) {
        const unsigned char* data = t->base + static_cast<std::uint64_t>(c) * kChunk * t->elsize;
        const auto n = static_cast<std::size_t>(
            std::min<std::uint64_t>(kChunk, t->numel - static_cast<std::uint64_t>(c) * kChunk));
        if (t->part)
            t->k->moments(data, t->dtype, n, &t->part[c - t->c0], t->buf);
        else
            t->k->histogram(data, t->dtype, n, t->hp, t->counts, t->buf);
    }
}

// CKPT_TORCHSTATS_TRACE=1 prints the time of each pass on stderr (benchmarks).
struct Trace {
    bool on = [] {
        const char* e = std::getenv("CKPT_TORCHSTATS_TRACE");
        return e && *e && std::strcmp(e, "0") != 0;
    }();
    std::chrono::steady_clock::time_point t = std::chrono::steady_clock::now();
    void lap(const char* what, std::uint64_t bytes) {
        if (!on)
            return;
        const auto now = std::chrono::steady_clock::now();
        const double s = std::chrono::duration<double>(now - t).count();
        std::fprintf(stderr, "ckpt_torchstats: %s %.4f s (%.2f GB/s)\n", what, s,
                     static_cast<double>(bytes) / s / 1e9);
        t = now;
    }
};

int compute(const ckpt_stats_input& in, ckpt_stats_output& out) {
    const std::size_t elsize = elementSize(in.dtype);
    if (elsize == 0)
        return CKPT_STATS_UNSUPPORTED;
    if (in.bins < 1)
        throw std::invalid_argument("bins must be at least 1");
    if (!out.edges || !out.counts)
        throw std::invalid_argument("edges and counts must be allocated by the caller");
    if (in.numel > 0 && !in.data)
        throw std::invalid_argument("no data");
    if (in.numel > std::numeric_limits<std::uint64_t>::max() / 16)
        throw std::invalid_argument("too many elements");

    const auto bins = static_cast<std::size_t>(in.bins);
    out.count = in.numel;
    out.finite = out.zeros = out.nan = out.inf = 0;
    out.min = out.max = out.mean = out.std = kNaN;
    std::fill(out.edges, out.edges + bins + 1, kNaN);
    std::fill(out.counts, out.counts + bins, 0);
    if (in.numel == 0)
        return CKPT_STATS_OK;

    if (!kernels())
        return CKPT_STATS_UNSUPPORTED;
    Trace trace;
    useThreads(in.threads);
    const KernelTable& k = *kernels();
    if (trace.on)
        std::fprintf(stderr, "ckpt_torchstats: kernels %s, %d threads\n", k.name, at::get_num_threads());
    const auto* base = static_cast<const unsigned char*>(in.data);
    const auto numel = in.numel;
    const auto nchunks = static_cast<std::int64_t>((numel + kChunk - 1) / kChunk);
    const std::int64_t perBlock =
        std::max(kMinChunksPerBlock, (nchunks + kBlocksPerPass - 1) / kBlocksPerPass);
    // Chunks [b, e) through the caller's guard; a failed read marks the pass lost (checked after it).
    std::atomic<bool> lost{false};
    auto run = [&](ChunkTask task) {
        if (in.guard) {
            if (!in.guard(runChunks, &task))
                lost = true;
        } else {
            runChunks(&task);
        }
    };
    auto checkLost = [&] {
        if (lost)
            throw std::runtime_error(CKPT_STATS_LOST_PAGES);
    };
    const std::uint64_t total = 2 * numel;
    std::uint64_t done = 0;
    auto tick = [&](std::int64_t c0, std::int64_t c1) {
        done += std::min<std::uint64_t>(numel, static_cast<std::uint64_t>(c1) * kChunk) -
                static_cast<std::uint64_t>(c0) * kChunk;
        if (in.progress && !in.progress(in.ctx, done, total))
            throw Cancelled();
    };

    // Pass 1: moments.
    Moments m;
    std::vector<ChunkMoments> part(static_cast<std::size_t>(std::min(perBlock, nchunks)));
    for (std::int64_t c0 = 0; c0 < nchunks; c0 += perBlock) {
        const std::int64_t c1 = std::min(nchunks, c0 + perBlock);
        at::parallel_for(c0, c1, 1, [&](std::int64_t b, std::int64_t e) {
            run({&k, in.dtype, base, elsize, numel, b, e, c0, part.data(), nullptr, nullptr, scratch()});
        });
        checkLost();
        for (std::int64_t c = c0; c < c1; ++c)
            m.merge(part[static_cast<std::size_t>(c - c0)]);
        tick(c0, c1);
    }
    trace.lap("moments", numel * elsize);
    out.finite = m.finite;
    out.zeros = m.zeros;
    out.nan = m.nan;
    out.inf = m.inf;
    if (m.finite == 0)
        return CKPT_STATS_OK;
    out.min = m.min;
    out.max = m.max;
    out.mean = m.mean;
    if (m.finite >= 2)
        out.std = std::sqrt(m.m2 / static_cast<double>(m.finite - 1));

    // Pass 2: histogram, set up exactly as HistogramAccumulator(min, max, bins).
    double lo = m.min, hi = m.max;
    if (lo == hi) { // NumPy widens an empty range the same way
        lo -= 0.5;
        hi += 0.5;
    }
    const double nb = static_cast<double>(bins);
    const bool wide = !std::isfinite(hi - lo);
    const double step = wide ? (hi / 2 - lo / 2) / nb * 2 : (hi - lo) / nb;
    std::vector<double> edges(bins + 1);
    for (std::size_t i = 0; i <= bins; ++i)
        edges[i] = static_cast<double>(i) * step + lo;
    edges[bins] = hi;
    HistParams hp;
    hp.edges = edges.data();
    hp.lo = lo;
    hp.hi = hi;
    hp.norm = wide ? nb / (hi / 2 - lo / 2) : nb / (hi - lo);
    hp.loHalf = lo / 2;
    hp.bins = static_cast<std::int64_t>(bins);
    hp.wide = wide;
    hp.replicas = bins <= 4096 ? 4 : 1;
    // Fast histogram path (kernels.cpp): with u = 2^-53, D = hi - lo, pos = fl(fl(v - lo) * norm) is
    // (v - lo) n / D within a relative 4.01u, and edge k = fl(fl(k step) + lo) is lo + k D / n within
    // 4.01u D + u |lo|. So when pos is at least u (8.05 (n + 1) + |lo| n / D) from an integer, v lies in
    // [e[floor(pos)], e[floor(pos) + 1]) and NumPy's correction cannot move it. Used with a factor 16 to
    // spare, and only where no step can underflow or overflow.
    if (!wide && std::isfinite(hp.norm) && (hi - lo) / nb >= 0x1p-900 && std::fabs(lo) < 0x1p1000 &&
        std::fabs(hi) < 0x1p1000) {
        const double bound = 0x1p-53 * (8.05 * (nb + 1) + std::fabs(lo) * nb / (hi - lo));
        hp.margin = std::max(16 * bound, 0x1p-40);
    }
    const std::size_t perThread = static_cast<std::size_t>(hp.replicas) * (bins + 1);

    const int threads = std::max(1, at::get_num_threads());
    std::vector<std::vector<std::uint64_t>> local(static_cast<std::size_t>(threads));
    std::mutex overflowMutex; // for a thread number past what get_num_threads said (not expected)
    std::vector<std::uint64_t> overflow;
    for (std::int64_t c0 = 0; c0 < nchunks; c0 += perBlock) {
        const std::int64_t c1 = std::min(nchunks, c0 + perBlock);
        at::parallel_for(c0, c1, 1, [&](std::int64_t b, std::int64_t e) {
            void* buf = scratch();
            const int tid = at::get_thread_num();
            if (tid >= 0 && tid < threads) {
                auto& counts = local[static_cast<std::size_t>(tid)];
                if (counts.empty())
                    counts.assign(perThread, 0);
                run({&k, in.dtype, base, elsize, numel, b, e, c0, nullptr, &hp, counts.data(), buf});
            } else {
                std::vector<std::uint64_t> counts(perThread, 0);
                run({&k, in.dtype, base, elsize, numel, b, e, c0, nullptr, &hp, counts.data(), buf});
                std::lock_guard<std::mutex> lock(overflowMutex);
                if (overflow.empty())
                    overflow.assign(perThread, 0);
                for (std::size_t i = 0; i < perThread; ++i)
                    overflow[i] += counts[i];
            }
        });
        checkLost();
        tick(c0, c1);
    }
    trace.lap("histogram", numel * elsize);
    local.push_back(std::move(overflow));
    for (const auto& counts : local)
        if (!counts.empty())
            for (int r = 0; r < hp.replicas; ++r)
                for (std::size_t i = 0; i < bins; ++i)
                    out.counts[i] += counts[static_cast<std::size_t>(r) * (bins + 1) + i];
    std::copy(edges.begin(), edges.end(), out.edges);
    return CKPT_STATS_OK;
}

void setError(ckpt_stats_output* out, const char* what) {
    if (!out)
        return;
    std::snprintf(out->error, sizeof out->error, "%s", what && *what ? what : "unknown error");
}

} // namespace
} // namespace ckpt_torchstats

CKPT_EXPORT int ckpt_stats_abi_version(void) {
    return CKPT_STATS_ABI_VERSION;
}

CKPT_EXPORT int ckpt_stats_compute(const ckpt_stats_input* in, ckpt_stats_output* out) {
    using namespace ckpt_torchstats;
    if (!in || !out) {
        setError(out, "null argument");
        return CKPT_STATS_ERROR;
    }
    out->error[0] = '\0';
    try {
        return compute(*in, *out);
    } catch (const Cancelled&) {
        return CKPT_STATS_CANCELLED;
    } catch (const std::exception& e) {
        setError(out, e.what());
    } catch (...) {
        setError(out, "unknown error");
    }
    return CKPT_STATS_ERROR;
}
