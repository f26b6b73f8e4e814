// The LibTorch statistics plugin (core/analysis/torchstats) against the portable computeStats: identical
// counts, extremes and histogram, mean and std to 1e-9 relative, for every dtype it handles and the awkward
// cases (NaN, Inf, zeros, constant values, one element, empty, offsets, misaligned bytes, chunk boundaries,
// values on histogram edges, huge and tiny ranges), plus progress, cancelling and the ABI's error returns.
//
// Needs CKPT_TORCHSTATS=path/to/libckpt_torchstats.so (CTest sets it). Without it the plugin tests are
// skipped; with it set, a plugin that does not load fails them.

#include "testutil.h"

#include "analysis/stats.h"
#include "analysis/torchstats/loader.h"

#include <QTest>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <limits>
#include <random>
#include <thread>
#include <unistd.h>

using namespace ckpt;

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();

// Values -> the bytes of `dtype` (round to nearest even, as torch converts).
std::string encode(DType dtype, const std::vector<double>& values) {
    std::string out;
    for (const double v : values) {
        if (dtype == DType::Float64) {
            out.append(reinterpret_cast<const char*>(&v), 8);
        } else if (dtype == DType::Float32) {
            const float f = static_cast<float>(v);
            out.append(reinterpret_cast<const char*>(&f), 4);
        } else if (dtype == DType::Float16) {
            const _Float16 h = static_cast<_Float16>(v);
            out.append(reinterpret_cast<const char*>(&h), 2);
        } else if (dtype == DType::BFloat16) {
            const float f = static_cast<float>(v);
            std::uint32_t b;
            std::memcpy(&b, &f, 4);
            std::uint16_t h;
            if (std::isnan(f))
                h = 0x7FC0;
            else
                h = static_cast<std::uint16_t>((b + 0x7FFFu + ((b >> 16) & 1u)) >> 16);
            out.append(reinterpret_cast<const char*>(&h), 2);
        } else {
            const auto i = static_cast<std::int32_t>(v);
            out.append(reinterpret_cast<const char*>(&i), 4);
        }
    }
    return out;
}

// A one-tensor checkpoint in memory: `lead` bytes before the storage (misalignment), `offsetElems` elements
// of the storage before the tensor (storage_offset), then the tensor's values.
struct Fixture {
    CheckpointPtr ck;
    TensorInfo tensor;
};

Fixture makeFixture(DType dtype, const std::vector<double>& values, std::size_t lead = 0,
                    std::int64_t offsetElems = 0, std::vector<std::int64_t> shape = {}) {
    const std::size_t elsize = dtypeSize(dtype);
    std::string bytes(lead, '\x5A');
    bytes += std::string(static_cast<std::size_t>(offsetElems) * elsize, '\0');
    bytes += encode(dtype, values);
    bytes += std::string(24, '\x7F'); // something after the tensor that must not be read as elements
    auto ck = std::make_shared<Checkpoint>();
    ck->format = "test";
    Source src;
    src.path = "memory";
    src.file = MappedFile::fromBuffer("memory", bytes);
    ck->sources.push_back(src);
    StorageInfo s;
    s.key = "0";
    s.dtype = dtype;
    s.nbytes = bytes.size() - lead;
    s.fileOffset = lead;
    ck->storages.push_back(s);
    TensorInfo t;
    t.name = "t";
    t.dtype = dtype;
    t.shape = shape.empty() ? std::vector<std::int64_t>{static_cast<std::int64_t>(values.size())} : shape;
    t.strides.assign(t.shape.size(), 1);
    for (std::size_t i = t.shape.size(); i-- > 1;)
        t.strides[i - 1] = t.strides[i] * t.shape[i];
    t.storageOffset = offsetElems;
    t.storage = 0;
    ck->tensors.push_back(t);
    return {ck, t};
}

bool sameOrBothNaN(double a, double b) {
    return (std::isnan(a) && std::isnan(b)) || a == b;
}

// Mean and std: 1e-9 relative, or 4e-12 of the data's magnitude where cancellation makes them small beside
// it. Both paths sum chunks of 16384 in double, in different orders (vector lanes against one running sum),
// so each carries a rounding error of up to about 16384 * 2^-53 * max|x| = 1.8e-12 max|x|: where the mean
// or std is below about 1e-3 max|x| (a mean near zero; 1000 + 1e-9 noise; a range of a few ulps) neither
// path is accurate to 1e-9 relative, and they are compared to what they can agree on.
bool close(double a, double b, double scale) {
    if (std::isnan(a) || std::isnan(b))
        return std::isnan(a) && std::isnan(b);
    if (!std::isfinite(a) || !std::isfinite(b))
        return a == b;
    return std::abs(a - b) <= 1e-9 * std::max(std::abs(a), std::abs(b)) + 4e-12 * scale;
}

// Fast against portable; returns an empty string when they agree, else what differs.
std::string compare(const TensorStats& fast, const TensorStats& ref) {
    std::string d;
    auto num = [](double v) { return QString::number(v, 'g', 17).toStdString(); };
    if (fast.count != ref.count || fast.finite != ref.finite || fast.zeros != ref.zeros ||
        fast.nan != ref.nan || fast.inf != ref.inf)
        d += "counts differ (finite " + std::to_string(fast.finite) + " vs " + std::to_string(ref.finite) +
             ", zeros " + std::to_string(fast.zeros) + " vs " + std::to_string(ref.zeros) + ", nan " +
             std::to_string(fast.nan) + " vs " + std::to_string(ref.nan) + ", inf " +
             std::to_string(fast.inf) + " vs " + std::to_string(ref.inf) + "); ";
    if (!sameOrBothNaN(fast.min, ref.min) || !sameOrBothNaN(fast.max, ref.max))
        d += "extremes differ (" + num(fast.min) + ".." + num(fast.max) + " vs " + num(ref.min) + ".." +
             num(ref.max) + "); ";
    const double scale = std::isfinite(ref.min) ? std::max(std::abs(ref.min), std::abs(ref.max)) : 0.0;
    if (!close(fast.mean, ref.mean, scale))
        d += "mean " + num(fast.mean) + " vs " + num(ref.mean) + "; ";
    if (!close(fast.std, ref.std, scale))
        d += "std " + num(fast.std) + " vs " + num(ref.std) + "; ";
    if (fast.histogram.counts != ref.histogram.counts) {
        d += "histogram counts differ:";
        for (std::size_t i = 0; i < std::max(fast.histogram.counts.size(), ref.histogram.counts.size());
             ++i) {
            const auto a = i < fast.histogram.counts.size() ? fast.histogram.counts[i] : 0;
            const auto b = i < ref.histogram.counts.size() ? ref.histogram.counts[i] : 0;
            if (a != b)
                d += " [" + std::to_string(i) + "] " + std::to_string(a) + " vs " + std::to_string(b);
        }
        d += "; ";
    }
    if (fast.histogram.edges.size() != ref.histogram.edges.size())
        d += "edge count differs; ";
    else
        for (std::size_t i = 0; i < ref.histogram.edges.size(); ++i)
            if (!sameOrBothNaN(fast.histogram.edges[i], ref.histogram.edges[i])) {
                d += "edge " + std::to_string(i) + " differs; ";
                break;
            }
    return d;
}

std::vector<double> randomValues(std::size_t n, std::uint64_t seed, double mean = 3.0, double sd = 2.0,
                                 bool specials = true) {
    std::mt19937_64 g(seed);
    std::normal_distribution<double> nd(mean, sd);
    std::vector<double> v(n);
    for (std::size_t i = 0; i < n; ++i)
        v[i] = nd(g);
    if (specials && n > 10) {
        std::uniform_int_distribution<std::size_t> at(0, n - 1);
        for (int k = 0; k < 5; ++k) {
            v[at(g)] = kNaN;
            v[at(g)] = kInf;
            v[at(g)] = -kInf;
            v[at(g)] = 0.0;
            v[at(g)] = -0.0;
        }
    }
    return v;
}

const DType kDtypes[] = {DType::Float32, DType::Float64, DType::Float16, DType::BFloat16};

} // namespace

class TestTorchStats : public QObject {
    Q_OBJECT
private Q_SLOTS:
    void initTestCase();
    void matchesPortable_data();
    void matchesPortable();
    void histogramEdgesExactly();
    void randomRangesAndBins();
    void largeTensorAllPaths();
    void progressAndCancel();
    void abiErrors();
    void fallbacks();
    void endToEndFile();
    void truncatedFile();

private:
    const ckpt_stats_api* m_api = nullptr;
    bool m_computes = false; // the plugin computes here (the CPU has what its kernels need)
};

// QSKIP returns from the test function, so this is a macro.
#define REQUIRE_PLUGIN()                                                                                     \
    do {                                                                                                     \
        if (!m_api)                                                                                          \
            QSKIP("libckpt_torchstats.so not available (set CKPT_TORCHSTATS)");                              \
    } while (0)

void TestTorchStats::initTestCase() {
    m_api = torchStatsPlugin();
    const char* env = std::getenv("CKPT_TORCHSTATS");
    const bool off =
        env && (std::strcmp(env, "off") == 0 || std::strcmp(env, "0") == 0 || std::strcmp(env, "none") == 0);
    if (!m_api && env && *env && !off)
        QFAIL(qPrintable("CKPT_TORCHSTATS is set but the plugin did not load:\n" +
                         QString::fromStdString(torchStatsPluginInfo())));
    if (m_api) {
        qInfo("plugin: %s", torchStatsPluginInfo().c_str());
        const float v[3] = {1, 2, 3};
        double edges[3];
        std::uint64_t counts[2];
        ckpt_stats_input in{};
        in.data = v;
        in.dtype = static_cast<int>(DType::Float32);
        in.numel = 3;
        in.bins = 2;
        ckpt_stats_output out{};
        out.edges = edges;
        out.counts = counts;
        const int rc = m_api->compute(&in, &out);
        QVERIFY(rc == CKPT_STATS_OK || rc == CKPT_STATS_UNSUPPORTED);
        m_computes = rc == CKPT_STATS_OK;
        if (!m_computes)
            qWarning("the plugin declines on this CPU (no AVX2 / FMA / F16C): only the fallback is tested");
    }
}

void TestTorchStats::matchesPortable_data() {
    QTest::addColumn<int>("dtype");
    QTest::addColumn<std::vector<double>>("values");
    QTest::addColumn<int>("bins");
    QTest::addColumn<int>("lead");
    QTest::addColumn<qlonglong>("offset");

    for (const DType dt : kDtypes) {
        const std::string n(dtypeName(dt));
        auto row = [&](const std::string& what, std::vector<double> v, int bins = 32, int lead = 0,
                       qlonglong offset = 0) {
            QTest::newRow((n + " " + what).c_str()) << static_cast<int>(dt) << v << bins << lead << offset;
        };
        row("random with specials", randomValues(100000, 1));
        row("empty", {});
        row("one element", {2.5});
        row("one NaN", {kNaN});
        row("constant", std::vector<double>(1000, 1.5));
        row("constant zeros, negative zero", {0.0, -0.0, 0.0, -0.0});
        row("no finite element", {kNaN, kInf, -kInf, kNaN, kInf});
        row("two values", {-1.0, 1.0}, 5);
        row("ones and infinities", {1, kInf, 1, -kInf, 1, kNaN, 1});
        for (const std::size_t size : {7u, 15u, 16u, 17u, 31u, 33u, 16383u, 16384u, 16385u, 32768u + 7u})
            row("size " + std::to_string(size), randomValues(size, size, -1.0, 0.5));
        row("NaN in a tail", [] {
            auto v = randomValues(16384 + 5, 9, 1, 1, false);
            v[16384 + 3] = kNaN;
            return v;
        }());
        row("misaligned by 1", randomValues(40000, 2), 32, 1);
        row("misaligned by 3", randomValues(40000, 3), 32, 3);
        row("large storage offset", randomValues(30000, 4), 32, 0, 3000001);
        row("offset and misaligned", randomValues(30000, 5), 17, 5, 12345);
        row("1 bin", randomValues(5000, 6), 1);
        row("1000 bins", randomValues(50000, 7), 1000);
        row("5000 bins", randomValues(50000, 8), 5000);
        row(
            "small integers",
            [] {
                std::vector<double> v;
                for (int i = 0; i < 20000; ++i)
                    v.push_back((i * 7919) % 101 - 50);
                return v;
            }(),
            10);
        row(
            "subnormals",
            [&] {
                std::vector<double> v;
                const double tiny = dt == DType::Float16   ? std::ldexp(1.0, -24)
                                    : dt == DType::Float64 ? std::ldexp(1.0, -1074)
                                                           : std::ldexp(1.0, -149);
                for (int i = 0; i < 3000; ++i)
                    v.push_back(tiny * (i % 50) * (i % 3 == 0 ? -1 : 1));
                return v;
            }(),
            7);
        row(
            "near the top of the range",
            [&] {
                const double big = dt == DType::Float16 ? 65504.0 : dt == DType::Float64 ? 1.7e308 : 3.3e38;
                std::vector<double> v;
                for (int i = 0; i < 1000; ++i)
                    v.push_back(big * ((i % 21) - 10) / 10.0);
                return v;
            }(),
            8);
        row(
            "huge mean, small spread",
            [&] {
                std::vector<double> v = randomValues(20000, 10, 0.0, 1.0, false);
                for (double& x : v)
                    x = 1000.0 + x * (dt == DType::Float64 ? 1e-9 : dt == DType::Float32 ? 1e-3 : 1.0);
                return v;
            }(),
            32);
    }
    // A range of a few ulps: edges collapse onto each other and NumPy's single-step correction differs
    // from a search; the plugin must follow it exactly.
    std::vector<double> ulps;
    for (int i = 0; i < 4000; ++i)
        ulps.push_back(1.0 + std::ldexp(1.0, -52) * (i % 6));
    QTest::newRow("float64 range of 5 ulps") << static_cast<int>(DType::Float64) << ulps << 32 << 0 << 0LL;
    std::vector<double> fulps;
    for (int i = 0; i < 4000; ++i)
        fulps.push_back(1.0 + std::ldexp(1.0, -23) * (i % 4));
    QTest::newRow("float32 range of 3 ulps") << static_cast<int>(DType::Float32) << fulps << 32 << 0 << 0LL;
    // Wider than the largest double: the histogram works in halves.
    QTest::newRow("float64 range wider than DBL_MAX")
        << static_cast<int>(DType::Float64) << std::vector<double>{-1.7e308, -1, 0, 1, 1.7e308, 1e308, -3e307}
        << 4 << 0 << 0LL;
    // A sum of finite float64 values that overflows: the plugin's fast sweep must not take it for a NaN.
    QTest::newRow("float64 overflowing sum")
        << static_cast<int>(DType::Float64) << std::vector<double>(64, 1.5e308) << 4 << 0 << 0LL;
}

void TestTorchStats::matchesPortable() {
    REQUIRE_PLUGIN();
    QFETCH(int, dtype);
    QFETCH(std::vector<double>, values);
    QFETCH(int, bins);
    QFETCH(int, lead);
    QFETCH(qlonglong, offset);
    const auto f = makeFixture(static_cast<DType>(dtype), values, static_cast<std::size_t>(lead), offset);
    QCOMPARE(QString::fromStdString(torchStatsIneligibility(f.ck, f.tensor)), QString());
    const auto ref = computeStats(f.ck, f.tensor, bins);
    bool byPlugin = false;
    const auto fast = computeStatsWithPlugin(f.ck, f.tensor, bins, {}, &byPlugin);
    QVERIFY(ref && fast);
    QCOMPARE(byPlugin, m_computes);
    const std::string diff = compare(*fast, *ref);
    QVERIFY2(diff.empty(), diff.c_str());
}

void TestTorchStats::histogramEdgesExactly() {
    // Values on every edge and one ulp either side, in several ranges and bin counts: the fast path must
    // hand exactly these to NumPy's correction.
    REQUIRE_PLUGIN();
    for (const DType dt : {DType::Float64, DType::Float32}) {
        for (const int bins : {3, 10, 32, 100, 997}) {
            for (const auto& [lo, hi] : std::vector<std::pair<double, double>>{
                     {0.0, 1.0}, {-1.0, 1.0}, {-0.1, 0.7}, {1e-3, 2e-3}, {-123456.0, 7.25}, {1e6, 1e6 + 3}}) {
                std::vector<double> v{lo, hi};
                const double step = (hi - lo) / bins;
                for (int i = 0; i <= bins; ++i) {
                    const double e = static_cast<double>(i) * step + lo;
                    if (dt == DType::Float32) {
                        const float ef = static_cast<float>(e);
                        for (const float x :
                             {std::nextafter(ef, -INFINITY), ef, std::nextafter(ef, INFINITY)})
                            if (x >= static_cast<float>(lo) && x <= static_cast<float>(hi))
                                v.push_back(x);
                    } else {
                        for (const double x : {std::nextafter(e, -kInf), e, std::nextafter(e, kInf)})
                            if (x >= lo && x <= hi)
                                v.push_back(x);
                    }
                }
                const auto f = makeFixture(dt, v);
                const auto ref = computeStats(f.ck, f.tensor, bins);
                bool byPlugin = false;
                const auto fast = computeStatsWithPlugin(f.ck, f.tensor, bins, {}, &byPlugin);
                QVERIFY(ref && fast);
                QCOMPARE(byPlugin, m_computes);
                const std::string diff = compare(*fast, *ref);
                QVERIFY2(diff.empty(), (std::string(dtypeName(dt)) + " bins " + std::to_string(bins) + " [" +
                                        std::to_string(lo) + ", " + std::to_string(hi) + "]: " + diff)
                                           .c_str());
            }
        }
    }
}

void TestTorchStats::randomRangesAndBins() {
    // Ranges from 1e-30 to 1e30 wide, centred anywhere from 0 to far off, any bin count, with a share of
    // values on or next to the edges: counts must always be the portable path's.
    REQUIRE_PLUGIN();
    std::mt19937_64 g(20260);
    std::uniform_real_distribution<double> unit(0.0, 1.0);
    for (int round = 0; round < 300; ++round) {
        const DType dt = kDtypes[round % 4];
        const double width = std::pow(10.0, -30 + 60 * unit(g)) * (dt == DType::Float16 ? 0 : 1) +
                             (dt == DType::Float16 ? std::pow(10.0, -3 + 6 * unit(g)) : 0);
        const double centre = (unit(g) < 0.5 ? 0.0 : (unit(g) - 0.5) * width * std::pow(10.0, 8 * unit(g)));
        const int bins = 1 + static_cast<int>(unit(g) * (unit(g) < 0.8 ? 64 : 3000));
        const double lo = centre - width / 2, step = width / bins;
        std::vector<double> v(1000 + static_cast<std::size_t>(unit(g) * 3000));
        for (auto& x : v) {
            const double r = unit(g);
            if (r < 0.3) { // on or next to an edge
                const double e = std::floor(unit(g) * (bins + 1)) * step + lo;
                x = r < 0.1 ? e : r < 0.2 ? std::nextafter(e, -kInf) : std::nextafter(e, kInf);
            } else {
                x = lo + unit(g) * width;
            }
        }
        const auto f = makeFixture(dt, v, round % 3);
        const auto ref = computeStats(f.ck, f.tensor, bins);
        bool byPlugin = false;
        const auto fast = computeStatsWithPlugin(f.ck, f.tensor, bins, {}, &byPlugin);
        QVERIFY(ref && fast);
        QCOMPARE(byPlugin, m_computes);
        const std::string diff = compare(*fast, *ref);
        QVERIFY2(diff.empty(), (std::string(dtypeName(dt)) + " round " + std::to_string(round) + " bins " +
                                std::to_string(bins) + " width " + std::to_string(width) + ": " + diff)
                                   .c_str());
    }
}

void TestTorchStats::largeTensorAllPaths() {
    // Several blocks and both threads, with specials spread across chunks.
    REQUIRE_PLUGIN();
    auto v = randomValues(3'000'000, 11, -2.0, 3.0, false);
    for (std::size_t i = 0; i < v.size(); i += 99991)
        v[i] = (i / 99991) % 3 == 0 ? kNaN : (i / 99991) % 3 == 1 ? kInf : 0.0;
    for (const DType dt : kDtypes) {
        const auto f = makeFixture(dt, v, dt == DType::Float64 ? 4 : 0);
        const auto ref = computeStats(f.ck, f.tensor, 64);
        bool byPlugin = false;
        const auto fast = computeStatsFast(f.ck, f.tensor, 64, {}); // 3M elements: the plugin, as loaded
        QVERIFY(ref && fast);
        QVERIFY(computeStatsWithPlugin(f.ck, f.tensor, 64, {}, &byPlugin));
        QCOMPARE(byPlugin, m_computes);
        const std::string diff = compare(*fast, *ref);
        QVERIFY2(diff.empty(), (std::string(dtypeName(dt)) + ": " + diff).c_str());
    }
}

void TestTorchStats::progressAndCancel() {
    REQUIRE_PLUGIN();
    const auto f = makeFixture(DType::Float32, randomValues(3'000'000, 12));
    // Progress: monotonic, on the calling thread, at most about 100 calls, ending at total.
    std::vector<std::pair<std::uint64_t, std::uint64_t>> calls;
    const auto self = std::this_thread::get_id();
    bool otherThread = false;
    const auto s = computeStatsFast(f.ck, f.tensor, 16, [&](std::uint64_t done, std::uint64_t total) {
        otherThread |= std::this_thread::get_id() != self;
        calls.emplace_back(done, total);
        return true;
    });
    QVERIFY(s);
    QVERIFY(!otherThread);
    QVERIFY(!calls.empty());
    QVERIFY2(calls.size() <= 110, std::to_string(calls.size()).c_str());
    for (std::size_t i = 1; i < calls.size(); ++i)
        QVERIFY(calls[i].first >= calls[i - 1].first);
    QCOMPARE(calls.back().first, calls.back().second);
    QCOMPARE(calls.back().second, std::uint64_t{6'000'000});

    // Cancelling at once, and half way (from the histogram pass).
    QVERIFY(!computeStatsFast(f.ck, f.tensor, 16, [](std::uint64_t, std::uint64_t) { return false; }));
    int n = 0;
    QVERIFY(!computeStatsFast(f.ck, f.tensor, 16, [&](std::uint64_t done, std::uint64_t total) {
        ++n;
        return done < total / 2 + 1;
    }));
    QVERIFY(n > 1);

    // An exception from the callback comes out of computeStatsFast, not through the plugin.
    bool thrown = false;
    try {
        computeStatsFast(f.ck, f.tensor, 16, [](std::uint64_t, std::uint64_t) -> bool {
            throw Error(ErrorCode::Cancelled, "stop");
        });
    } catch (const Error& e) {
        thrown = e.code() == ErrorCode::Cancelled;
    }
    QVERIFY(thrown);

    // The C ABI directly: cancel on the third call.
    if (!m_computes)
        return;
    std::vector<float> data(2'000'000, 1.0f);
    std::vector<double> edges(9);
    std::vector<std::uint64_t> counts(8);
    struct Ctx {
        int calls = 0;
    } ctx;
    ckpt_stats_input in{};
    in.data = data.data();
    in.dtype = static_cast<int>(DType::Float32);
    in.numel = data.size();
    in.bins = 8;
    in.progress = [](void* c, std::uint64_t, std::uint64_t) {
        return ++static_cast<Ctx*>(c)->calls < 3 ? 1 : 0;
    };
    in.ctx = &ctx;
    ckpt_stats_output out{};
    out.edges = edges.data();
    out.counts = counts.data();
    QCOMPARE(m_api->compute(&in, &out), CKPT_STATS_CANCELLED);
    QCOMPARE(ctx.calls, 3);
    // threads = 1 gives the same answer as all cores.
    in.progress = nullptr;
    in.threads = 1;
    QCOMPARE(m_api->compute(&in, &out), CKPT_STATS_OK);
    QCOMPARE(out.finite, std::uint64_t{2'000'000});
    QCOMPARE(out.std, 0.0);
    QCOMPARE(counts[4], std::uint64_t{2'000'000}); // constant 1: range [0.5, 1.5], 1.0 is edge 4
}

void TestTorchStats::abiErrors() {
    REQUIRE_PLUGIN();
    QCOMPARE(m_api->abi_version(), CKPT_STATS_ABI_VERSION);
    const std::int32_t ints[4] = {1, 2, 3, 4};
    double edges[5];
    std::uint64_t counts[4];
    ckpt_stats_input in{};
    in.data = ints;
    in.dtype = static_cast<int>(DType::Int32);
    in.numel = 4;
    in.bins = 4;
    ckpt_stats_output out{};
    out.edges = edges;
    out.counts = counts;
    QCOMPARE(m_api->compute(&in, &out), CKPT_STATS_UNSUPPORTED);
    in.dtype = static_cast<int>(DType::Float8_e4m3fn);
    QCOMPARE(m_api->compute(&in, &out), CKPT_STATS_UNSUPPORTED);
    if (!m_computes)
        return;
    in.dtype = static_cast<int>(DType::Float32);
    in.bins = 0;
    QCOMPARE(m_api->compute(&in, &out), CKPT_STATS_ERROR);
    QVERIFY(std::strlen(out.error) > 0);
    in.bins = 4;
    in.data = nullptr;
    QCOMPARE(m_api->compute(&in, &out), CKPT_STATS_ERROR);
    in.data = ints;
    out.counts = nullptr;
    QCOMPARE(m_api->compute(&in, &out), CKPT_STATS_ERROR);
    QCOMPARE(m_api->compute(nullptr, &out), CKPT_STATS_ERROR);
    QCOMPARE(m_api->compute(&in, nullptr), CKPT_STATS_ERROR);
}

void TestTorchStats::fallbacks() {
    // What the plugin does not take goes to the portable path, with the same results.
    auto check = [](const Fixture& f, const char* why) {
        QVERIFY2(!torchStatsIneligibility(f.ck, f.tensor).empty(), why);
        const auto a = computeStats(f.ck, f.tensor, 8);
        bool byPlugin = true;
        const auto b = computeStatsWithPlugin(f.ck, f.tensor, 8, {}, &byPlugin);
        QVERIFY(a && b);
        QVERIFY(!byPlugin);
        const std::string diff = compare(*b, *a);
        QVERIFY2(diff.empty(), diff.c_str());
    };
    const auto values = randomValues(600, 13);
    // Non-contiguous: a transposed 20 x 30 view.
    auto t = makeFixture(DType::Float32, values, 0, 0, {20, 30});
    t.tensor.shape = {30, 20};
    t.tensor.strides = {1, 30};
    check(t, "transposed");
    // Integers and float8 are not the plugin's.
    check(makeFixture(DType::Int32, {1, 2, 3, 4, 5}), "int32");
    // Big-endian storage (legacy files from big-endian machines).
    {
        auto f = makeFixture(DType::Float32, values);
        auto ck = std::make_shared<Checkpoint>(*f.ck);
        ck->storages[0].bigEndian = true;
        f.ck = ck;
        check(f, "big-endian");
    }
    // Quantized.
    {
        auto f = makeFixture(DType::Float32, values);
        f.tensor.quant.scheme = QuantInfo::Scheme::PerTensorAffine;
        QVERIFY(!torchStatsIneligibility(f.ck, f.tensor).empty());
    }
    // A tensor reaching past its storage is not handed to the plugin.
    {
        auto f = makeFixture(DType::Float32, values);
        f.tensor.shape = {static_cast<std::int64_t>(values.size() + 100)};
        QVERIFY(!torchStatsIneligibility(f.ck, f.tensor).empty());
    }
    // A tensor without data throws as computeStats does.
    {
        auto f = makeFixture(DType::Float32, values);
        f.tensor.storage = -1;
        QVERIFY_THROWS_EXCEPTION(Error, computeStatsWithPlugin(f.ck, f.tensor, 8));
        QVERIFY_THROWS_EXCEPTION(Error, computeStatsFast(f.ck, f.tensor, 8));
    }
}

void TestTorchStats::endToEndFile() {
    const auto ck = openCheckpoint(testutil::dataPath("small.pt"));
    const TensorInfo* w = ck->findTensor("w");
    QVERIFY(w);
    QCOMPARE(QString::fromStdString(torchStatsIneligibility(ck, *w)), QString());
    bool byPlugin = false;
    const auto s = computeStatsWithPlugin(ck, *w, 4, {}, &byPlugin);
    QVERIFY(s);
    QCOMPARE(byPlugin, m_computes);
    QCOMPARE(s->count, 12u);
    QCOMPARE(s->min, 0.0);
    QCOMPARE(s->max, 11.0);
    QCOMPARE(s->mean, 5.5);
    QVERIFY(std::abs(s->std - std::sqrt(13.0)) < 1e-12);
    QCOMPARE(s->zeros, 1u);
    QCOMPARE(s->histogram.counts, (std::vector<std::uint64_t>{3, 3, 3, 3}));
    QCOMPARE(s->histogram.edges, (std::vector<double>{0, 2.75, 5.5, 8.25, 11}));
    for (const auto& t : ck->tensors) {
        const auto a = computeStats(ck, t, 5);
        const auto b = computeStatsWithPlugin(ck, t, 5);
        QVERIFY(computeStatsFast(ck, t, 5));
        QVERIFY(a && b);
        const std::string diff = compare(*b, *a);
        QVERIFY2(diff.empty(), (t.name + ": " + diff).c_str());
    }
}

void TestTorchStats::truncatedFile() {
    // As computeStats: a file cut short on disk after opening is an Error(Changed), not a SIGBUS.
    const std::string path =
        std::filesystem::temp_directory_path() / ("ckpt-tstrunc-" + std::to_string(getpid()) + ".pt");
    std::filesystem::copy_file(std::string(CKPT_TEST_DATA) +
                                   "/../../../resources/sample/training_checkpoint.pt",
                               path, std::filesystem::copy_options::overwrite_existing);
    const auto ck = openCheckpoint(path);
    const TensorInfo* t = ck->findTensor("optimizer_state_dict.state.8.exp_avg");
    QVERIFY(t);
    QVERIFY(computeStatsWithPlugin(ck, *t, 4));
    std::filesystem::resize_file(path, 4096);
    try {
        computeStatsWithPlugin(ck, *t, 4);
        QFAIL("reading a truncated file succeeded");
    } catch (const Error& e) {
        QCOMPARE(e.code(), ErrorCode::Changed);
    }
    std::filesystem::remove(path);
}

QTEST_GUILESS_MAIN(TestTorchStats)
#include "tst_torchstats.moc"
