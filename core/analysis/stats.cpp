#include "stats.h"

#include "io/error.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace ckpt {

void MomentAccumulator::add(std::span<const double> values) {
    std::uint64_t n = 0;
    double sum = 0, lo = std::numeric_limits<double>::infinity(), hi = -lo;
    for (const double v : values) {
        if (std::isnan(v)) {
            ++m_nan;
            continue;
        }
        if (std::isinf(v)) {
            ++m_inf;
            continue;
        }
        m_zeros += v == 0.0;
        ++n;
        sum += v;
        lo = std::min(lo, v);
        hi = std::max(hi, v);
    }
    m_count += values.size();
    if (n == 0)
        return;
    const double mean = sum / static_cast<double>(n);
    double m2 = 0;
    for (const double v : values)
        if (std::isfinite(v))
            m2 += (v - mean) * (v - mean);
    if (m_finite == 0) {
        m_min = lo;
        m_max = hi;
        m_mean = mean;
        m_m2 = m2;
        m_finite = n;
        return;
    }
    m_min = std::min(m_min, lo);
    m_max = std::max(m_max, hi);
    const double na = static_cast<double>(m_finite), nb = static_cast<double>(n);
    const double delta = mean - m_mean;
    const double total = na + nb;
    m_mean += delta * nb / total;
    m_m2 += m2 + delta * delta * na * nb / total;
    m_finite += n;
}

void MomentAccumulator::finish(TensorStats& out) const {
    out.count = m_count;
    out.finite = m_finite;
    out.zeros = m_zeros;
    out.nan = m_nan;
    out.inf = m_inf;
    const double undefined = std::numeric_limits<double>::quiet_NaN();
    out.min = m_finite ? m_min : undefined;
    out.max = m_finite ? m_max : undefined;
    out.mean = m_finite ? m_mean : undefined;
    out.std = m_finite >= 2 ? std::sqrt(m_m2 / static_cast<double>(m_finite - 1)) : undefined;
}

HistogramAccumulator::HistogramAccumulator(double lo, double hi, int bins) {
    if (lo == hi) { // NumPy widens an empty range the same way
        lo -= 0.5;
        hi += 0.5;
    }
    m_lo = lo;
    m_hi = hi;
    const auto n = static_cast<std::size_t>(std::max(bins, 1));
    m_hist.counts.assign(n, 0);
    m_hist.edges.resize(n + 1);
    // A range wider than the largest double (-1e308..1e308) overflows hi - lo; work in halves there.
    m_wide = !std::isfinite(hi - lo);
    const double step =
        m_wide ? (hi / 2 - lo / 2) / static_cast<double>(n) * 2 : (hi - lo) / static_cast<double>(n);
    // numpy.linspace: start + i * step, the last edge exactly `hi`.
    for (std::size_t i = 0; i <= n; ++i)
        m_hist.edges[i] = static_cast<double>(i) * step + lo;
    m_hist.edges[n] = hi;
    m_norm = m_wide ? static_cast<double>(n) / (hi / 2 - lo / 2) : static_cast<double>(n) / (hi - lo);
}

void HistogramAccumulator::add(std::span<const double> values) {
    const std::size_t n = m_hist.counts.size();
    const auto& e = m_hist.edges;
    for (const double v : values) {
        if (!(v >= m_lo && v <= m_hi)) // NaN, Inf and out-of-range values are not binned
            continue;
        double pos = m_wide ? (v / 2 - m_lo / 2) * m_norm : (v - m_lo) * m_norm;
        if (!(pos >= 0))
            pos = 0;
        std::size_t i = pos >= static_cast<double>(n) ? n - 1 : static_cast<std::size_t>(pos);
        // The division can round across an edge; settle against the edges themselves, as NumPy does.
        if (v < e[i] && i > 0)
            --i;
        else if (i + 1 < n && v >= e[i + 1])
            ++i;
        ++m_hist.counts[i];
    }
}

namespace {

// Two streaming passes over the readers' elements together: moments, then the histogram over [min, max].
std::optional<TensorStats> statsOverReaders(const std::vector<TensorReader>& readers, int bins,
                                            const ProgressFn& progress) {
    std::uint64_t total = 0;
    for (const auto& r : readers)
        total += r.numel() * 2;
    std::uint64_t done = 0;
    auto tick = [&](std::size_t n) {
        done += n;
        return !progress || progress(done, total);
    };
    MomentAccumulator moments;
    for (const auto& r : readers)
        if (!r.forEachChunk([&](std::span<const double> v, std::uint64_t) {
                moments.add(v);
                return tick(v.size());
            }))
            return std::nullopt;
    TensorStats stats;
    moments.finish(stats);
    if (stats.finite == 0) {
        stats.histogram.counts.assign(static_cast<std::size_t>(std::max(bins, 1)), 0);
        return stats;
    }
    HistogramAccumulator hist(stats.min, stats.max, bins);
    for (const auto& r : readers)
        if (!r.forEachChunk([&](std::span<const double> v, std::uint64_t) {
                hist.add(v);
                return tick(v.size());
            }))
            return std::nullopt;
    stats.histogram = hist.histogram();
    return stats;
}

} // namespace

std::optional<TensorStats> computeStats(const CheckpointPtr& checkpoint, const TensorInfo& tensor, int bins,
                                        const ProgressFn& progress) {
    std::vector<TensorReader> readers;
    readers.emplace_back(checkpoint, tensor);
    return statsOverReaders(readers, bins, progress);
}

std::optional<TensorStats> computeStatsOfMany(const CheckpointPtr& checkpoint,
                                              const std::vector<const TensorInfo*>& tensors, int bins,
                                              const ProgressFn& progress, std::vector<std::string>* skipped) {
    std::vector<TensorReader> readers;
    for (const TensorInfo* t : tensors) {
        try {
            readers.emplace_back(checkpoint, *t);
        } catch (const Error&) {
            if (skipped)
                skipped->push_back(t->name);
        }
    }
    return statsOverReaders(readers, bins, progress);
}

} // namespace ckpt
