// Chunk kernels of the statistics plugin, written with LibTorch's at::vec::Vectorized.
//
// Built twice from this one file (CMakeLists.txt): CKPT_TS_AVX2=0 for any x86-64 CPU, and CKPT_TS_AVX2=1
// with -mavx2 -mfma -mf16c. Where sleef.h is there (libsleef-dev) the AVX2 build also defines
// CPU_CAPABILITY_AVX2, which turns Vectorized into AVX2 intrinsics; without it Vectorized is its portable
// fixed-size form, which GCC vectorises for AVX2 just as well in these loops (measured, see README of
// tests/bench). Everything here has internal linkage except the one table getter, so the two builds never
// share a symbol of their own; inline functions from the torch headers that both builds instantiate are
// resolved to the generic build by link order (generic object first, see CMakeLists.txt).
//
// Exactness: every float format is widened exactly (float16 / bfloat16 -> float -> double) and every step
// is the one stats.cpp takes, in the same IEEE operations, compiled with -ffp-contract=off so that no
// multiply-add is fused: counts, min and max are identical to the portable path; mean and M2 differ only
// in the order of additions inside a chunk.

#include "kernels.h"

#include <ATen/cpu/vec/vec.h>

#include <cmath>
#include <cstring>
#include <limits>

#if CKPT_TS_AVX2
#include <immintrin.h>
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
#if defined(CPU_CAPABILITY_AVX2)
    const __m256 x = v;
    lo = _mm256_cvtps_pd(_mm256_castps256_ps128(x));
    hi = _mm256_cvtps_pd(_mm256_extractf128_ps(x, 1));
#else
    alignas(32) float f[8];
    alignas(32) double d[8];
    v.store(f);
    for (int i = 0; i < 8; ++i)
        d[i] = static_cast<double>(f[i]);
    lo = Vd::loadu(d);
    hi = Vd::loadu(d + 4);
#endif
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

// IEEE binary16 -> float, exactly (subnormals, infinities, NaN).
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

// The chunk as floats: the bytes themselves when they are aligned float32, else a converted copy.
const float* asFloats(const void* data, int dtype, std::size_t n, float* buf) {
    const auto* p = static_cast<const unsigned char*>(data);
    switch (dtype) {
    case kFloat32:
        if (reinterpret_cast<std::uintptr_t>(p) % alignof(float) == 0)
            return static_cast<const float*>(data);
        std::memcpy(buf, p, n * sizeof(float));
        return buf;
    case kBFloat16:
        for (std::size_t i = 0; i < n; ++i)
            buf[i] = bitsToFloat(static_cast<std::uint32_t>(load16(p + 2 * i)) << 16);
        return buf;
    case kFloat16: {
        std::size_t i = 0;
#if CKPT_TS_AVX2
        for (; i + 8 <= n; i += 8)
            _mm256_store_ps(buf + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 2 * i))));
#endif
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

// ---- moments -------------------------------------------------------------------------------------------

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

// Scalar tail of the first sweep.
template <typename T> struct Tail {
    std::uint64_t finite = 0, zeros = 0, nan = 0;
    double sum = 0, min = kInf, max = -kInf;
    void add(T x) {
        const double v = static_cast<double>(x);
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

void finishMoments(ChunkMoments& m, std::size_t n, std::uint64_t finite, std::uint64_t zeros,
                   std::uint64_t nan, double sum, double lo, double hi) {
    m.n = n;
    m.finite = finite;
    m.zeros = zeros;
    m.nan = nan;
    m.min = finite ? lo : 0;
    m.max = finite ? hi : 0;
    m.mean = finite ? sum / static_cast<double>(finite) : 0;
    m.m2 = 0;
}

void momentsFloat(const float* p, std::size_t n, ChunkMoments& m) {
    const Vf zero(0.f), one(1.f), pinf(std::numeric_limits<float>::infinity()),
        ninf(-std::numeric_limits<float>::infinity());
    // Per-lane counters in float are exact: at most kChunk / 8 = 2048 per lane.
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
    Tail<float> t;
    for (std::size_t j = i; j < n; ++j)
        t.add(p[j]);
    const auto finite = static_cast<std::uint64_t>(laneSum(cfin)) + t.finite;
    finishMoments(m, n, finite, static_cast<std::uint64_t>(laneSum(czero)) + t.zeros,
                  static_cast<std::uint64_t>(laneSum(cnan)) + t.nan, laneSum(s0 + s1) + t.sum,
                  std::min(laneMin(vmin), t.min), std::max(laneMax(vmax), t.max));
    if (finite == 0)
        return;
    // Second sweep, in cache: M2 about the chunk's mean.
    const Vd mv(m.mean), zd(0.0);
    Vd q0(0.0), q1(0.0);
    i = 0;
    if (finite == n) {
        for (; i + 8 <= n; i += 8) {
            Vd a, b;
            widen(Vf::loadu(p + i), a, b);
            const Vd da = a - mv, db = b - mv;
            q0 = q0 + da * da;
            q1 = q1 + db * db;
        }
    } else {
        for (; i + 8 <= n; i += 8) {
            Vd a, b;
            widen(Vf::loadu(p + i), a, b);
            const Vd da = (a - mv) & ((a - a) == zd), db = (b - mv) & ((b - b) == zd);
            q0 = q0 + da * da;
            q1 = q1 + db * db;
        }
    }
    double m2 = laneSum(q0 + q1);
    for (; i < n; ++i) {
        const double v = p[i];
        if (std::isfinite(v))
            m2 += (v - m.mean) * (v - m.mean);
    }
    m.m2 = m2;
}

void momentsDouble(const double* p, std::size_t n, ChunkMoments& m) {
    const Vd zero(0.0), one(1.0), pinf(kInf), ninf(-kInf);
    Vd cfin(0.0), cnan(0.0), czero(0.0), vmin(pinf), vmax(ninf), s0(0.0), s1(0.0);
    std::size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const Vd a = Vd::loadu(p + i), b = Vd::loadu(p + i + 4);
        const Vd fa = (a - a) == zero, fb = (b - b) == zero;
        cfin = cfin + (fa & one) + (fb & one);
        cnan = cnan + ((a != a) & one) + ((b != b) & one);
        czero = czero + ((a == zero) & one) + ((b == zero) & one);
        vmin = at::vec::minimum(vmin, at::vec::minimum(Vd::blendv(pinf, a, fa), Vd::blendv(pinf, b, fb)));
        vmax = at::vec::maximum(vmax, at::vec::maximum(Vd::blendv(ninf, a, fa), Vd::blendv(ninf, b, fb)));
        s0 = s0 + (a & fa);
        s1 = s1 + (b & fb);
    }
    Tail<double> t;
    for (std::size_t j = i; j < n; ++j)
        t.add(p[j]);
    const auto finite = static_cast<std::uint64_t>(laneSum(cfin)) + t.finite;
    finishMoments(m, n, finite, static_cast<std::uint64_t>(laneSum(czero)) + t.zeros,
                  static_cast<std::uint64_t>(laneSum(cnan)) + t.nan, laneSum(s0 + s1) + t.sum,
                  std::min(laneMin(vmin), t.min), std::max(laneMax(vmax), t.max));
    if (finite == 0)
        return;
    const Vd mv(m.mean);
    Vd q0(0.0), q1(0.0);
    i = 0;
    if (finite == n) {
        for (; i + 8 <= n; i += 8) {
            const Vd da = Vd::loadu(p + i) - mv, db = Vd::loadu(p + i + 4) - mv;
            q0 = q0 + da * da;
            q1 = q1 + db * db;
        }
    } else {
        for (; i + 8 <= n; i += 8) {
            const Vd a = Vd::loadu(p + i), b = Vd::loadu(p + i + 4);
            const Vd da = (a - mv) & ((a - a) == zero), db = (b - mv) & ((b - b) == zero);
            q0 = q0 + da * da;
            q1 = q1 + db * db;
        }
    }
    double m2 = laneSum(q0 + q1);
    for (; i < n; ++i)
        if (std::isfinite(p[i]))
            m2 += (p[i] - m.mean) * (p[i] - m.mean);
    m.m2 = m2;
}

void moments(const void* data, int dtype, std::size_t n, ChunkMoments* out, void* scratch) {
    if (dtype == kFloat64)
        momentsDouble(asDoubles(data, n, static_cast<double*>(scratch)), n, *out);
    else
        momentsFloat(asFloats(data, dtype, n, static_cast<float*>(scratch)), n, *out);
}

// ---- histogram -----------------------------------------------------------------------------------------

// HistogramAccumulator::add for four values at once: bin index, or `bins` for values outside [lo, hi].
template <bool Wide> struct Binner {
    Vd lo, hi, norm, loHalf, half, zero, one, nm1, dummy, ones;
    const double* edges;

    explicit Binner(const HistParams& p)
        : lo(p.lo), hi(p.hi), norm(p.norm), loHalf(p.loHalf), half(0.5), zero(0.0), one(1.0),
          nm1(static_cast<double>(p.bins - 1)), dummy(static_cast<double>(p.bins)), ones(zero == zero),
          edges(p.edges) {}

    void operator()(const Vd& v, std::int64_t* out) const {
        const Vd inRange = (v >= lo) & (v <= hi); // NaN, Inf and out-of-range values are not binned
        Vd pos = Wide ? (v * half - loHalf) * norm : (v - lo) * norm; // v * 0.5 == v / 2 exactly
        pos = Vd::blendv(zero, pos, pos >= zero);                      // !(pos >= 0) -> 0
        Vd bin = at::vec::minimum(pos, nm1).floor();                    // pos >= n -> n - 1
        const Vi idx = at::vec::convert_to_int_of_same_size(bin);
        const Vd e0 = at::vec::gather<8>(edges, idx);
        const Vd e1 = at::vec::gather<8>(edges + 1, idx);
        // Settle against the edges as NumPy does: if v < e[i] and i > 0, i - 1; else if i + 1 < n and
        // v >= e[i + 1], i + 1.
        const Vd down = (v < e0) & (bin > zero);
        const Vd up = (bin < nm1) & (v >= e1) & (down ^ ones);
        bin = bin - (down & one) + (up & one);
        at::vec::convert_to_int_of_same_size(Vd::blendv(dummy, bin, inRange)).store(out);
    }
};

template <bool Wide>
void histFloat(const float* p, std::size_t n, const HistParams& P, std::uint64_t* counts) {
    const Binner<Wide> bin(P);
    const std::size_t stride = P.replicas > 1 ? static_cast<std::size_t>(P.bins + 1) : 0;
    std::uint64_t* c0 = counts;
    std::uint64_t* c1 = counts + stride;
    std::uint64_t* c2 = counts + 2 * stride;
    std::uint64_t* c3 = counts + 3 * stride;
    alignas(32) std::int64_t idx[8];
    std::size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        Vd a, b;
        widen(Vf::loadu(p + i), a, b);
        bin(a, idx);
        bin(b, idx + 4);
        ++c0[idx[0]];
        ++c1[idx[1]];
        ++c2[idx[2]];
        ++c3[idx[3]];
        ++c0[idx[4]];
        ++c1[idx[5]];
        ++c2[idx[6]];
        ++c3[idx[7]];
    }
    if (i < n) {
        alignas(32) double rest[8] = {NAN, NAN, NAN, NAN, NAN, NAN, NAN, NAN};
        for (std::size_t j = i; j < n; ++j)
            rest[j - i] = p[j];
        bin(Vd::loadu(rest), idx);
        bin(Vd::loadu(rest + 4), idx + 4);
        for (std::size_t j = 0; j < 8; ++j)
            ++c0[idx[j]]; // the NaN padding lands in the dummy bin
    }
}

template <bool Wide>
void histDouble(const double* p, std::size_t n, const HistParams& P, std::uint64_t* counts) {
    const Binner<Wide> bin(P);
    const std::size_t stride = P.replicas > 1 ? static_cast<std::size_t>(P.bins + 1) : 0;
    std::uint64_t* c0 = counts;
    std::uint64_t* c1 = counts + stride;
    std::uint64_t* c2 = counts + 2 * stride;
    std::uint64_t* c3 = counts + 3 * stride;
    alignas(32) std::int64_t idx[4];
    std::size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        bin(Vd::loadu(p + i), idx);
        ++c0[idx[0]];
        ++c1[idx[1]];
        ++c2[idx[2]];
        ++c3[idx[3]];
    }
    if (i < n) {
        alignas(32) double rest[4] = {NAN, NAN, NAN, NAN};
        for (std::size_t j = i; j < n; ++j)
            rest[j - i] = p[j];
        bin(Vd::loadu(rest), idx);
        for (std::size_t j = 0; j < 4; ++j)
            ++c0[idx[j]];
    }
}

void histogram(const void* data, int dtype, std::size_t n, const HistParams* p, std::uint64_t* counts,
               void* scratch) {
    if (dtype == kFloat64) {
        const double* d = asDoubles(data, n, static_cast<double*>(scratch));
        p->wide ? histDouble<true>(d, n, *p, counts) : histDouble<false>(d, n, *p, counts);
    } else {
        const float* f = asFloats(data, dtype, n, static_cast<float*>(scratch));
        p->wide ? histFloat<true>(f, n, *p, counts) : histFloat<false>(f, n, *p, counts);
    }
}

} // namespace

#if CKPT_TS_AVX2
const KernelTable& kernelsAvx2() {
#if defined(CPU_CAPABILITY_AVX2)
    static const KernelTable table{"avx2", &moments, &histogram};
#else
    static const KernelTable table{"avx2 (generic vectors)", &moments, &histogram};
#endif
    return table;
}
#else
const KernelTable& kernelsDefault() {
    static const KernelTable table{"default", &moments, &histogram};
    return table;
}
#endif

} // namespace ckpt_torchstats
