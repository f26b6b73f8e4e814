/* C ABI of the LibTorch statistics plugin, libckpt_torchstats.so.
 *
 * The plugin links LibTorch, which costs about 0.6 s and 160 MB when loaded, so nothing links it: the core
 * dlopen()s it on first use (loader.h). This header is plain C with no torch or Qt includes; both sides
 * include it. Change CKPT_STATS_ABI_VERSION whenever a struct or a meaning below changes.
 *
 * Semantics are those of ckpt::computeStats (docs/cli.md, "ckpt stats --json"): count = all elements;
 * min, max, mean, std over the finite elements (NaN and +-Inf counted in nan / inf and left out); std with
 * Bessel's correction; zeros = elements equal to zero; a histogram of `bins` equal-width bins over
 * [min, max] of the finite values, the last bin closed, with numpy.linspace edges and numpy.histogram's
 * bin assignment ([min - 0.5, max + 0.5] when min == max). Counts, min, max and the histogram are exactly
 * those of the portable path; mean and std agree to 1e-9 relative or better (both accumulate in double over
 * the same chunks of 16384 elements, summing inside a chunk in a different order; where cancellation makes
 * them tiny beside max|x|, to about 1e-12 max|x|).
 */
#ifndef CKPT_TORCHSTATS_ABI_H
#define CKPT_TORCHSTATS_ABI_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define CKPT_STATS_ABI_VERSION 2

/* The plugin's file name, looked for by the loader. */
#define CKPT_STATS_PLUGIN_NAME "libckpt_torchstats.so"

/* Return codes of ckpt_stats_compute. UNSUPPORTED: a dtype the plugin does not handle, or a CPU without
 * AVX2, FMA and F16C; use the portable path. ERROR: the message is in ckpt_stats_output.error. */
#define CKPT_STATS_OK 0
#define CKPT_STATS_CANCELLED 1
#define CKPT_STATS_UNSUPPORTED 2
#define CKPT_STATS_ERROR 3

/* Called from the thread that called ckpt_stats_compute, never from a worker, at most about 100 times,
 * with done <= total (total = 2 * numel: one pass for the moments, one for the histogram). Return 0 to
 * cancel; the computation then stops within a few milliseconds and returns CKPT_STATS_CANCELLED. */
typedef int (*ckpt_progress_fn)(void* ctx, uint64_t done, uint64_t total);

typedef struct {
    const void* data; /* numel contiguous elements, row-major, native (little-endian) byte order; any
                         alignment; may lie in a read-only mapping. May be null when numel is 0. */
    int dtype;        /* ckpt::DType numeric value: Float16 5, Float32 6, Float64 7, BFloat16 15 */
    uint64_t numel;
    int bins;                  /* >= 1 */
    ckpt_progress_fn progress; /* may be null */
    void* ctx;
    int threads; /* 0 = every core this process may run on */
    /* Runs fn(arg), which reads `data`, on the calling thread (any of the plugin's worker threads) and
     * returns 0 instead of dying with SIGBUS when a read hits pages of a mapped file truncated on disk
     * meanwhile (ckpt::MappedFile::runGuarded). fn owns no objects with destructors. May be null: the data
     * is then read unguarded. When a guarded read fails, ckpt_stats_compute returns CKPT_STATS_ERROR with
     * CKPT_STATS_LOST_PAGES as its message. */
    int (*guard)(void (*fn)(void*), void* arg);
} ckpt_stats_input;

#define CKPT_STATS_LOST_PAGES "the data's pages are gone: the file was truncated on disk"

typedef struct {
    uint64_t count, finite, zeros, nan, inf;
    double min, max, mean, std; /* NaN when undefined: no finite element; std with fewer than two */
    double* edges;              /* caller-allocated, bins + 1; all NaN when there is no finite element */
    uint64_t* counts;           /* caller-allocated, bins; all 0 when there is no finite element */
    char error[256];            /* NUL-terminated message when ckpt_stats_compute returns CKPT_STATS_ERROR */
} ckpt_stats_output;

/* Returns CKPT_STATS_ABI_VERSION as the plugin was built. */
int ckpt_stats_abi_version(void);

/* 0 ok, 1 cancelled, 2 unsupported dtype, 3 error (message in out->error). Never throws; thread-safe
 * (concurrent calls each use their own worker threads). */
int ckpt_stats_compute(const ckpt_stats_input* in, ckpt_stats_output* out);

typedef int (*ckpt_stats_abi_version_fn)(void);
typedef int (*ckpt_stats_compute_fn)(const ckpt_stats_input* in, ckpt_stats_output* out);

/* The plugin's entry points as a loader holds them. */
typedef struct {
    ckpt_stats_abi_version_fn abi_version;
    ckpt_stats_compute_fn compute;
} ckpt_stats_api;

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* CKPT_TORCHSTATS_ABI_H */
