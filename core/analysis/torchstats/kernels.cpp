// Chunk kernels of the statistics plugin, written with LibTorch's at::vec::Vectorized in its AVX2 form.
//
// Compiled with -mavx2 -mfma -mf16c and CPU_CAPABILITY_AVX2 (which needs sleef.h, from libsleef-dev; no
// sleef function is called, so nothing links it); plugin.cpp calls it only on CPUs with AVX2, FMA and F16C.
// Everything but kernelsAvx2() has internal linkage.
//
// Exactness. Every float format is widened exactly (float16 / bfloat16 -> float -> double). Counts, min,
// max and the histogram are computed with the IEEE operations stats.cpp uses (and -ffp-contract=off, so no
// multiply-add is fused where it would change a rounding): they are identical to the portable path. Mean
// and M2 are per-chunk sums in a different order (vector lanes), merged like the portable path's chunks.
//
// Speed. Each kernel has a fast path for the common case and falls back, per chunk or per four values, to a
// careful one that follows stats.cpp step by step:
//  - moments: one sweep sums, counts zeros and takes min / max without looking for NaN or Inf; the sum is
//    finite exactly when every element was (float formats; for float64 an overflowing sum also takes the
//    careful sweep), else the chunk is swept again with masks. Then M2 about the chunk mean while the chunk
//    is in cache, prefetching the next chunk meanwhile.
//  - histogram: the bin is floor(pos) with pos = (v - lo) * norm as stats.cpp computes it; NumPy's
//    correction against the edges can only move it when pos lies within `margin` of an integer (error
//    bound in plugin.cpp), so only such values (and NaN, Inf) are settled against the gathered edges.

#include "kernels.h"

#include <ATen/cpu/vec/vec.h>

#include <immintrin.h>

#include <cmath>
#include <cstring>
#include <limits>

#if !defined(CPU_CAPABILITY_AVX2) || !defined(__AVX2__) || !defined(__FMA__) || !defined(__F16C__)
#error "kernels.cpp is built for AVX2: -mavx2 -mfma -mf16c -DCPU_CAPABILITY=AVX2 -DCPU_CAPABILITY_AVX2"
#endif

namespace ckpt_torchstats {
namespace {

using at::vec::Vectorized;
using Vf = Vectorized<float>;
using Vd = Vectorized<double>;
using Vi = Vectorized<std::int64_t>;
static_assert(Vf::size() == 8 && Vd::size() == 4 && Vi::size() == 4, "256-bit vectors expected");

constexpr double kInf = std::numeric_limits<double>::infinity();

// Exact float -> double of eight lanes.
inline void widen(const Vf& v, Vd& lo, Vd& hi) {
    const __m256 x = v;
    lo = _mm256_cvtps_pd(_mm256_castps256_ps128(x));
    hi = _mm256_cvtps_pd(_mm256_extractf128_ps(x, 1));
}

inline void prefetch(const void* p) {
    _mm_prefetch(static_cast<const char*>(p), _MM_HINT_T0);
}

inline std::uint16_t load16(const unsigned char* p) {
    std::uint16_t u;
    std::memcpy(&u, p, 2);
    return u;
}

inline float bitsToFloat(std::uint32_t b) {
    float f;
    std::memcpy(&f, &b, 4);
    return f;
}

// IEEE binary16 -> float, exactly (subnormals, infinities, NaN), for the tails.
inline float halfToFloat(std::uint16_t h) {
    const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
    const std::uint32_t exp = (h >> 10) & 0x1Fu;
    const std::uint32_t mant = h & 0x3FFu;
    if (exp == 0x1F)
        return bitsToFloat(sign | 0x7F800000u | (mant << 13));
    if (exp != 0)
        return bitsToFloat(sign | ((exp + 112) << 23) | (mant << 13));
    const float f = static_cast<float>(mant) * 0x1p-24f; // zero or subnormal: mant * 2^-24, exact
    return sign ? -f : f;
}

// The chunk as floats: the bytes themselves when they are aligned float32, else a converted or realigned
// copy in `buf` (kChunk floats).
const float* asFloats(const void* data, int dtype, std::size_t n, float* buf) {
    const auto* p = static_cast<const unsigned char*>(data);
    switch (dtype) {
    case kFloat32:
        if (reinterpret_cast<std::uintptr_t>(p) % alignof(float) == 0)
            return static_cast<const float*>(data);
        std::memcpy(buf, p, n * sizeof(float));
        return buf;
    case kBFloat16: {
        std::size_t i = 0;
        for (; i + 8 <= n; i += 8) {
            const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 2 * i));
            _mm256_store_ps(buf + i, _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16)));
        }
        for (; i < n; ++i)
            buf[i] = bitsToFloat(static_cast<std::uint32_t>(load16(p + 2 * i)) << 16);
        return buf;
    }
    case kFloat16: {
        std::size_t i = 0;
        for (; i + 8 <= n; i += 8)
            _mm256_store_ps(buf + i,
                            _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 2 * i))));
        for (; i < n; ++i)
            buf[i] = halfToFloat(load16(p + 2 * i));
        return buf;
    }
    default:
        return nullptr;
    }
}

const double* asDoubles(const void* data, std::size_t n, double* buf) {
    if (reinterpret_cast<std::uintptr_t>(data) % alignof(double) == 0)
        return static_cast<const double*>(data);
    std::memcpy(buf, data, n * sizeof(double));
    return buf;
}

template <typename V> double laneSum(const V& v) {
    alignas(32) typename V::value_type a[V::size()];
    v.store(a);
    double s = 0;
    for (int i = 0; i < V::size(); ++i)
        s += static_cast<double>(a[i]);
    return s;
}
template <typename V> double laneMin(const V& v) {
    alignas(32) typename V::value_type a[V::size()];
    v.store(a);
    double m = kInf;
    for (int i = 0; i < V::size(); ++i)
        m = std::min(m, static_cast<double>(a[i]));
    return m;
}
template <typename V> double laneMax(const V& v) {
    alignas(32) typename V::value_type a[V::size()];
    v.store(a);
    double m = -kInf;
    for (int i = 0; i < V::size(); ++i)
        m = std::max(m, static_cast<double>(a[i]));
    return m;
}

// ---- moments -------------------------------------------------------------------------------------------

// First sweep of a chunk: finite count, zeros, NaN, sum, min, max of the finite values.
struct Sweep {
    std::uint64_t finite = 0, zeros = 0, nan = 0;
    double sum = 0, min = kInf, max = -kInf;

    void add(double v) { // the scalar step, as MomentAccumulator::add
        if (std::isnan(v)) {
            ++nan;
            return;
        }
        if (std::isinf(v))
            return;
        ++finite;
        zeros += v == 0.0;
        sum += v;
        min = std::min(min, v);
        max = std::max(max, v);
    }
};

// Fast first sweep, assuming every element is finite: true when that held (the sum is finite).
bool sweepFloatFast(const float* p, std::size_t n, Sweep& s) {
    const Vf zero(0.f), one(1.f);
    Vf z0(0.f), z1(0.f), mn0(std::numeric_limits<float>::infinity()), mn1(mn0),
        mx0(-std::numeric_limits<float>::infinity()), mx1(mx0);
    Vd s0(0.0), s1(0.0), s2(0.0), s3(0.0);
    std::size_t i = 0;
    for (; i + 16 <= n; i += 16) { // lane counters in float stay exact: at most kChunk / 16 per lane
        const Vf a = Vf::loadu(p + i), b = Vf::loadu(p + i + 8);
        z0 = z0 + ((a == zero) & one);
        z1 = z1 + ((b == zero) & one);
        mn0 = at::vec::clamp_max(mn0, a);
        mn1 = at::vec::clamp_max(mn1, b);
        mx0 = at::vec::clamp_min(mx0, a);
        mx1 = at::vec::clamp_min(mx1, b);
        Vd a0, a1, b0, b1;
        widen(a, a0, a1);
        widen(b, b0, b1);
        s0 = s0 + a0;
        s1 = s1 + a1;
        s2 = s2 + b0;
        s3 = s3 + b1;
    }
    Sweep t;
    for (; i < n; ++i)
        t.add(p[i]);
    const double sum = laneSum((s0 + s1) + (s2 + s3)) + t.sum;
    if (!std::isfinite(sum) || t.finite + t.nan != n % 16 || t.nan != 0)
        return false;
    s.finite = n;
    s.nan = 0;
    s.zeros = static_cast<std::uint64_t>(laneSum(z0 + z1)) + t.zeros;
    s.sum = sum;
    s.min = std::min(laneMin(at::vec::clamp_max(mn0, mn1)), t.min);
    s.max = std::max(laneMax(at::vec::clamp_min(mx0, mx1)), t.max);
    return true;
}

// Careful first sweep: non-finite lanes are masked out of the sum and extremes and counted.
void sweepFloatMasked(const float* p, std::size_t n, Sweep& s) {
    const Vf zero(0.f), one(1.f), pinf(std::numeric_limits<float>::infinity()),
        ninf(-std::numeric_limits<float>::infinity());
    Vf cfin(0.f), cnan(0.f), czero(0.f), vmin(pinf), vmax(ninf);
    Vd s0(0.0), s1(0.0);
    std::size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const Vf v = Vf::loadu(p + i);
        const Vf fin = (v - v) == zero; // false for NaN and +-Inf
        cfin = cfin + (fin & one);
        cnan = cnan + ((v != v) & one);
        czero = czero + ((v == zero) & one);
        vmin = at::vec::minimum(vmin, Vf::blendv(pinf, v, fin));
        vmax = at::vec::maximum(vmax, Vf::blendv(ninf, v, fin));
        Vd a, b;
        widen(v & fin, a, b); // non-finite lanes become +0
        s0 = s0 + a;
        s1 = s1 + b;
    }
    Sweep t;
    for (; i < n; ++i)
        t.add(p[i]);
    s.finite = static_cast<std::uint64_t>(laneSum(cfin)) + t.finite;
    s.nan = static_cast<std::uint64_t>(laneSum(cnan)) + t.nan;
    s.zeros = static_cast<std::uint64_t>(laneSum(czero)) + t.zeros;
    s.sum = laneSum(s0 + s1) + t.sum;
    s.min = std::min(laneMin(vmin), t.min);
    s.max = std::max(laneMax(vmax), t.max);
}

bool sweepDoubleFast(const double* p, std::size_t n, Sweep& s) {
    const Vd zero(0.0), one(1.0);
    Vd z0(0.0), z1(0.0), mn0(kInf), mn1(kInf), mx0(-kInf), mx1(-kInf), s0(0.0), s1(0.0);
    std::size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const Vd a = Vd::loadu(p + i), b = Vd::loadu(p + i + 4);
        z0 = z0 + ((a == zero) & one);
        z1 = z1 + ((b == zero) & one);
        mn0 = at::vec::clamp_max(mn0, a);
        mn1 = at::vec::clamp_max(mn1, b);
        mx0 = at::vec::clamp_min(mx0, a);
        mx1 = at::vec::clamp_min(mx1, b);
        s0 = s0 + a;
        s1 = s1 + b;
    }
    Sweep t;
    for (; i < n; ++i)
        t.add(p[i]);
    const double sum = laneSum(s0 + s1) + t.sum;
    if (!std::isfinite(sum) || t.finite + t.nan != n % 8 || t.nan != 0)
        return false; // a NaN or Inf (or a sum that overflowed): the careful sweep decides
    s.finite = n;
    s.nan = 0;
    s.zeros = static_cast<std::uint64_t>(laneSum(z0 + z1)) + t.zeros;
    s.sum = sum;
    s.min = std::min(laneMin(at::vec::clamp_max(mn0, mn1)), t.min);
    s.max = std::max(laneMax(at::vec::clamp_min(mx0, mx1)), t.max);
    return true;
}

void sweepDoubleMasked(const double* p, std::size_t n, Sweep& s) {
    const Vd zero(0.0), one(1.0), pinf(kInf), ninf(-kInf);
    Vd cfin(0.0), cnan(0.0), czero(0.0), vmin(pinf), vmax(ninf), s0(0.0);
    std::size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        const Vd v = Vd::loadu(p + i);
        const Vd fin = (v - v) == zero;
        cfin = cfin + (fin & one);
        cnan = cnan + ((v != v) & one);
        czero = czero + ((v == zero) & one);
        vmin = at::vec::minimum(vmin, Vd::blendv(pinf, v, fin));
        vmax = at::vec::maximum(vmax, Vd::blendv(ninf, v, fin));
        s0 = s0 + (v & fin);
    }
    Sweep t;
    for (; i < n; ++i)
        t.add(p[i]);
    s.finite = static_cast<std::uint64_t>(laneSum(cfin)) + t.finite;
    s.nan = static_cast<std::uint64_t>(laneSum(cnan)) + t.nan;
    s.zeros = static_cast<std::uint64_t>(laneSum(czero)) + t.zeros;
    s.sum = laneSum(s0) + t.sum;
    s.min = std::min(laneMin(vmin), t.min);
    s.max = std::max(laneMax(vmax), t.max);
}

// Second sweep: sum of squared deviations from `mean` over the finite elements (all of them when
// `allFinite`); prefetches the `nextBytes` bytes at `next` (the next chunk's source) meanwhile.
double m2Float(const float* p, std::size_t n, double mean, bool allFinite, const char* next,
               std::size_t stride) {
    const Vd mv(mean), zero(0.0);
    Vd q0(0.0), q1(0.0), q2(0.0), q3(0.0);
    std::size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        prefetch(next + i * stride);
        Vd a0, a1, b0, b1;
        widen(Vf::loadu(p + i), a0, a1);
        widen(Vf::loadu(p + i + 8), b0, b1);
        Vd d0 = a0 - mv, d1 = a1 - mv, d2 = b0 - mv, d3 = b1 - mv;
        if (!allFinite) {
            d0 = d0 & ((a0 - a0) == zero);
            d1 = d1 & ((a1 - a1) == zero);
            d2 = d2 & ((b0 - b0) == zero);
            d3 = d3 & ((b1 - b1) == zero);
        }
        q0 = at::vec::fmadd(d0, d0, q0);
        q1 = at::vec::fmadd(d1, d1, q1);
        q2 = at::vec::fmadd(d2, d2, q2);
        q3 = at::vec::fmadd(d3, d3, q3);
    }
    double m2 = laneSum((q0 + q1) + (q2 + q3));
    for (; i < n; ++i) {
        const double v = p[i];
        if (std::isfinite(v))
            m2 += (v - mean) * (v - mean);
    }
    return m2;
}

double m2Double(const double* p, std::size_t n, double mean, bool allFinite, const char* next) {
    const Vd mv(mean), zero(0.0);
    Vd q0(0.0), q1(0.0);
    std::size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        prefetch(next + i * sizeof(double));
        const Vd a = Vd::loadu(p + i), b = Vd::loadu(p + i + 4);
        Vd d0 = a - mv, d1 = b - mv;
        if (!allFinite) {
            d0 = d0 & ((a - a) == zero);
            d1 = d1 & ((b - b) == zero);
        }
        q0 = at::vec::fmadd(d0, d0, q0);
        q1 = at::vec::fmadd(d1, d1, q1);
    }
    double m2 = laneSum(q0 + q1);
    for (; i < n; ++i)
        if (std::isfinite(p[i]))
            m2 += (p[i] - mean) * (p[i] - mean);
    return m2;
}

void moments(const void* data, int dtype, std::size_t n, ChunkMoments* out, void* scratch) {
    const std::size_t elsize = dtype == kFloat64 ? 8 : dtype == kFloat32 ? 4 : 2;
    const char* next = static_cast<const char*>(data) + n * elsize;
    Sweep s;
    double m2 = 0;
    if (dtype == kFloat64) {
        const double* p = asDoubles(data, n, static_cast<double*>(scratch));
        const bool allFinite = sweepDoubleFast(p, n, s);
        if (!allFinite)
            sweepDoubleMasked(p, n, s);
        if (s.finite)
            m2 = m2Double(p, n, s.sum / static_cast<double>(s.finite), allFinite, next);
    } else {
        const float* p = asFloats(data, dtype, n, static_cast<float*>(scratch));
        const bool allFinite = sweepFloatFast(p, n, s);
        if (!allFinite)
            sweepFloatMasked(p, n, s);
        if (s.finite)
            m2 = m2Float(p, n, s.sum / static_cast<double>(s.finite), allFinite, next, elsize);
    }
    out->n = n;
    out->finite = s.finite;
    out->zeros = s.zeros;
    out->nan = s.nan;
    out->min = s.finite ? s.min : 0;
    out->max = s.finite ? s.max : 0;
    out->mean = s.finite ? s.sum / static_cast<double>(s.finite) : 0;
    out->m2 = m2;
}

// ---- histogram -----------------------------------------------------------------------------------------

// HistogramAccumulator::add for four values: bin index, or `bins` for values outside [lo, hi].
template <bool Wide> struct Binner {
    Vd lo, hi, norm, loHalf, half, zero, one, nm1, dummy, ones, halfMinusMargin;
    const double* edges;
    bool fast;

    explicit Binner(const HistParams& p)
        : lo(p.lo)
        , hi(p.hi)
        , norm(p.norm)
        , loHalf(p.loHalf)
        , half(0.5)
        , zero(0.0)
        , one(1.0)
        , nm1(static_cast<double>(p.bins - 1))
        , dummy(static_cast<double>(p.bins))
        , ones(zero == zero)
        , halfMinusMargin(0.5 - p.margin)
        , edges(p.edges)
        , fast(!Wide && p.margin < 0.25) {}

    // Step by step as stats.cpp, with the edges gathered.
    __m128i exact(const Vd& v) const {
        const Vd inRange = (v >= lo) & (v <= hi); // NaN, Inf and out-of-range values are not binned
        Vd pos = Wide ? (v * half - loHalf) * norm : (v - lo) * norm; // v * 0.5 == v / 2 exactly
        pos = Vd::blendv(zero, pos, pos >= zero);                     // !(pos >= 0) -> 0
        Vd bin = at::vec::minimum(pos, nm1).floor();                  // pos >= n -> n - 1
        const __m128i idx = _mm256_cvttpd_epi32(bin);
        const Vd e0 = _mm256_mask_i32gather_pd(zero, edges, idx, ones, 8);
        const Vd e1 = _mm256_mask_i32gather_pd(zero, edges + 1, idx, ones, 8);
        // NumPy's correction: if v < e[i] and i > 0, i - 1; else if i + 1 < n and v >= e[i + 1], i + 1.
        const Vd down = (v < e0) & (bin > zero);
        const Vd up = (bin < nm1) & (v >= e1) & (down ^ ones);
        bin = bin - (down & one) + (up & one);
        return _mm256_cvttpd_epi32(Vd::blendv(dummy, bin, inRange));
    }

    // Every finite value lies in [lo, hi] (they are the finite min and max). Where pos is at least `margin`
    // from an integer, floor(pos) is the bin; NaN and Inf make pos NaN and fail the test.
    __m128i operator()(const Vd& v) const {
        if (fast) {
            const Vd pos = (v - lo) * norm;
            const Vd bin = pos.floor();
            const Vd off = (pos - bin) - half; // in [-0.5, 0.5)
            // The range test only matters if the bytes changed since the first pass (a file rewritten in
            // place under the mapping): it keeps every index in bounds.
            const Vd ok = (off.abs() <= halfMinusMargin) & (v >= lo) & (v <= hi);
            if (_mm256_movemask_pd(ok) == 0xF)
                return _mm256_cvttpd_epi32(bin);
        }
        return exact(v);
    }
};

struct Counts {
    std::uint64_t* c[4];
    Counts(std::uint64_t* counts, const HistParams& p) {
        const std::size_t stride = p.replicas > 1 ? static_cast<std::size_t>(p.bins + 1) : 0;
        for (int r = 0; r < 4; ++r)
            c[r] = counts + static_cast<std::size_t>(r) * stride;
    }
    void add(__m128i idx) {
        ++c[0][_mm_extract_epi32(idx, 0)];
        ++c[1][_mm_extract_epi32(idx, 1)];
        ++c[2][_mm_extract_epi32(idx, 2)];
        ++c[3][_mm_extract_epi32(idx, 3)];
    }
};

constexpr std::size_t kPrefetchAhead = 2048; // bytes

template <bool Wide>
void histFloat(const float* p, std::size_t n, const HistParams& P, std::uint64_t* counts, const char* src,
               std::size_t elsize) {
    const Binner<Wide> bin(P);
    Counts c(counts, P);
    std::size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        prefetch(src + i * elsize + kPrefetchAhead);
        Vd a0, a1, b0, b1;
        widen(Vf::loadu(p + i), a0, a1);
        widen(Vf::loadu(p + i + 8), b0, b1);
        c.add(bin(a0));
        c.add(bin(a1));
        c.add(bin(b0));
        c.add(bin(b1));
    }
    for (; i < n; i += 4) {
        alignas(32) double rest[4] = {NAN, NAN, NAN, NAN}; // NaN padding lands in the dummy bin
        for (std::size_t j = i; j < std::min(n, i + 4); ++j)
            rest[j - i] = p[j];
        c.add(bin(Vd::loadu(rest)));
    }
}

template <bool Wide>
void histDouble(const double* p, std::size_t n, const HistParams& P, std::uint64_t* counts) {
    const Binner<Wide> bin(P);
    Counts c(counts, P);
    std::size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        prefetch(p + i + kPrefetchAhead / sizeof(double));
        c.add(bin(Vd::loadu(p + i)));
        c.add(bin(Vd::loadu(p + i + 4)));
    }
    for (; i < n; i += 4) {
        alignas(32) double rest[4] = {NAN, NAN, NAN, NAN};
        for (std::size_t j = i; j < std::min(n, i + 4); ++j)
            rest[j - i] = p[j];
        c.add(bin(Vd::loadu(rest)));
    }
}

void histogram(const void* data, int dtype, std::size_t n, const HistParams* p, std::uint64_t* counts,
               void* scratch) {
    if (dtype == kFloat64) {
        const double* d = asDoubles(data, n, static_cast<double*>(scratch));
        p->wide ? histDouble<true>(d, n, *p, counts) : histDouble<false>(d, n, *p, counts);
    } else {
        const std::size_t elsize = dtype == kFloat32 ? 4 : 2;
        const float* f = asFloats(data, dtype, n, static_cast<float*>(scratch));
        const char* src = static_cast<const char*>(data);
        p->wide ? histFloat<true>(f, n, *p, counts, src, elsize)
                : histFloat<false>(f, n, *p, counts, src, elsize);
    }
}

} // namespace

const KernelTable& kernelsAvx2() {
    static const KernelTable table{"avx2", &moments, &histogram};
    return table;
}

} // namespace ckpt_torchstats
