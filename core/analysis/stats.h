#pragma once

#include "elements.h"

#include <cstdint>
#include <optional>
#include <vector>

namespace ckpt {

struct Histogram {
    std::vector<double> edges;         // bins + 1
    std::vector<std::uint64_t> counts; // bins
};

struct TensorStats {
    std::uint64_t count = 0; // all elements
    std::uint64_t finite = 0;
    std::uint64_t zeros = 0;
    std::uint64_t nan = 0;
    std::uint64_t inf = 0;
    // Over finite elements; NaN when undefined (no finite element; std with fewer than two).
    double min = 0, max = 0, mean = 0, std = 0;
    Histogram histogram;
};

// Accumulates count, extremes, mean and variance in one pass: each chunk's moments are computed in cache
// and merged with Chan's parallel formula, which stays accurate where a running sum of squares would not.
class MomentAccumulator {
public:
    void add(std::span<const double> values);
    void finish(TensorStats& out) const;

private:
    std::uint64_t m_count = 0, m_finite = 0, m_zeros = 0, m_nan = 0, m_inf = 0;
    double m_min = 0, m_max = 0, m_mean = 0, m_m2 = 0;
};

// Equal-width bins over [lo, hi], the last bin closed: the same binning as numpy.histogram(range=(lo, hi)).
class HistogramAccumulator {
public:
    HistogramAccumulator(double lo, double hi, int bins);
    void add(std::span<const double> values);
    const Histogram& histogram() const { return m_hist; }

private:
    Histogram m_hist;
    double m_lo, m_hi, m_norm;
    bool m_wide = false;
};

// Two streaming passes over the tensor (moments, then histogram), progress over both; memory stays
// bounded whatever the tensor size. Returns nullopt when the progress callback cancels.
std::optional<TensorStats> computeStats(const CheckpointPtr& checkpoint, const TensorInfo& tensor, int bins,
                                        const ProgressFn& progress = {});

// The same over all elements of several tensors together (every tensor of a module), as if concatenated.
// Tensors without readable values are skipped and named in `skipped`.
std::optional<TensorStats> computeStatsOfMany(const CheckpointPtr& checkpoint,
                                              const std::vector<const TensorInfo*>& tensors, int bins,
                                              const ProgressFn& progress = {},
                                              std::vector<std::string>* skipped = nullptr);

} // namespace ckpt
