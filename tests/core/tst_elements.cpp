// Element conversion, statistics, and reading from a file that shrinks underneath its mapping.

#include "testutil.h"

#include "analysis/stats.h"

#include <QTest>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <unistd.h>

using namespace ckpt;

class TestElements : public QObject {
    Q_OBJECT
private Q_SLOTS:
    void narrowFloats_data();
    void narrowFloats();
    void statsOfKnownTensor();
    void histogramMatchesNumpyBinning();
    void elementAccess();
    void truncatedUnderTheMapping();
};

void TestElements::narrowFloats_data() {
    // Values from the IEEE 754 binary16 and OCP 8-bit float specifications.
    QTest::addColumn<int>("dtype");
    QTest::addColumn<int>("bits");
    QTest::addColumn<double>("expected");
    auto row = [](const char* name, DType t, int bits, double v) {
        QTest::newRow(name) << static_cast<int>(t) << bits << v;
    };
    row("half one", DType::Float16, 0x3C00, 1.0);
    row("half max", DType::Float16, 0x7BFF, 65504.0);
    row("half smallest subnormal", DType::Float16, 0x0001, std::ldexp(1.0, -24));
    row("half -2", DType::Float16, 0xC000, -2.0);
    row("half inf", DType::Float16, 0x7C00, INFINITY);
    row("half nan", DType::Float16, 0x7E00, NAN);
    row("bfloat16 one", DType::BFloat16, 0x3F80, 1.0);
    row("bfloat16 -3.5", DType::BFloat16, 0xC060, -3.5);
    row("e4m3fn max", DType::Float8_e4m3fn, 0x7E, 448.0);
    row("e4m3fn nan", DType::Float8_e4m3fn, 0x7F, NAN);
    row("e4m3fn min subnormal", DType::Float8_e4m3fn, 0x01, std::ldexp(1.0, -9));
    row("e4m3fn -1", DType::Float8_e4m3fn, 0xB8, -1.0);
    row("e5m2 max", DType::Float8_e5m2, 0x7B, 57344.0);
    row("e5m2 inf", DType::Float8_e5m2, 0x7C, INFINITY);
    row("e5m2 -inf", DType::Float8_e5m2, 0xFC, -INFINITY);
    row("e5m2 min subnormal", DType::Float8_e5m2, 0x01, std::ldexp(1.0, -16));
    row("e4m3fnuz max", DType::Float8_e4m3fnuz, 0x7F, 240.0);
    row("e4m3fnuz nan", DType::Float8_e4m3fnuz, 0x80, NAN);
    row("e5m2fnuz max", DType::Float8_e5m2fnuz, 0x7F, 57344.0);
    row("e5m2fnuz one", DType::Float8_e5m2fnuz, 0x40, 1.0);
    row("e8m0fnu one", DType::Float8_e8m0fnu, 127, 1.0);
    row("e8m0fnu smallest", DType::Float8_e8m0fnu, 0, std::ldexp(1.0, -127));
    row("e8m0fnu nan", DType::Float8_e8m0fnu, 0xFF, NAN);
}

void TestElements::narrowFloats() {
    QFETCH(int, dtype);
    QFETCH(int, bits);
    QFETCH(double, expected);
    const auto t = static_cast<DType>(dtype);
    double got = 0;
    if (t == DType::Float16)
        got = halfToDouble(static_cast<std::uint16_t>(bits));
    else if (t == DType::BFloat16)
        got = bfloat16ToDouble(static_cast<std::uint16_t>(bits));
    else
        got = float8ToDouble(t, static_cast<std::uint8_t>(bits));
    if (std::isnan(expected))
        QVERIFY(std::isnan(got));
    else
        QCOMPARE(got, expected);
}

void TestElements::statsOfKnownTensor() {
    // small.pt holds w = arange(12).reshape(3, 4): mean 5.5, unbiased variance 13.
    const auto ck = openCheckpoint(testutil::dataPath("small.pt"));
    const TensorInfo* w = ck->findTensor("w");
    QVERIFY(w);
    const auto s = computeStats(ck, *w, 4);
    QVERIFY(s);
    QCOMPARE(s->count, 12u);
    QCOMPARE(s->min, 0.0);
    QCOMPARE(s->max, 11.0);
    QCOMPARE(s->mean, 5.5);
    QVERIFY(std::abs(s->std - std::sqrt(13.0)) < 1e-12);
    QCOMPARE(s->zeros, 1u);
    QCOMPARE(s->histogram.counts, (std::vector<std::uint64_t>{3, 3, 3, 3}));
    QCOMPARE(s->histogram.edges, (std::vector<double>{0, 2.75, 5.5, 8.25, 11}));
    // Cancelling from the progress callback stops the work.
    QVERIFY(!computeStats(ck, *w, 4, [](std::uint64_t, std::uint64_t) { return false; }));
}

void TestElements::histogramMatchesNumpyBinning() {
    // numpy.histogram([0, 1, 2, 3, 10], bins=3, range=(0, 10)) -> [4, 0, 1]; equal extremes widen by 0.5.
    HistogramAccumulator h(0, 10, 3);
    const double v[] = {0, 1, 2, 3, 10, NAN, INFINITY};
    h.add(v);
    QCOMPARE(h.histogram().counts, (std::vector<std::uint64_t>{4, 0, 1}));
    HistogramAccumulator same(2, 2, 2);
    const double w[] = {2, 2};
    same.add(w);
    QCOMPARE(same.histogram().edges, (std::vector<double>{1.5, 2, 2.5}));
    QCOMPARE(same.histogram().counts, (std::vector<std::uint64_t>{0, 2}));
    // A range wider than the largest double (found by fuzzing): every value still lands in a bin.
    HistogramAccumulator wide(-1e308, 1e308, 4);
    const double x[] = {-1e308, -1, 1, 1e308};
    wide.add(x);
    QCOMPARE(wide.histogram().counts, (std::vector<std::uint64_t>{1, 1, 1, 1}));
}

void TestElements::elementAccess() {
    const auto ck = openCheckpoint(testutil::dataPath("small_legacy.pt"));
    TensorReader w(ck, *ck->findTensor("w"));
    QCOMPARE(w.element(7), 7.0);
    TensorReader b(ck, *ck->findTensor("b"));
    QCOMPARE(b.element(1), -2.0);
    TensorReader n(ck, *ck->findTensor("n"));
    QCOMPARE(n.element(0), 7.0);
    QVERIFY_THROWS_EXCEPTION(Error, n.element(1));
}

void TestElements::truncatedUnderTheMapping() {
    // A training job saving over the checkpoint while it is open: reads fail cleanly, no SIGBUS.
    const std::string path =
        std::filesystem::temp_directory_path() / ("ckpt-trunc-" + std::to_string(getpid()) + ".pt");
    std::filesystem::copy_file(std::string(CKPT_TEST_DATA) +
                                   "/../../../resources/sample/training_checkpoint.pt",
                               path, std::filesystem::copy_options::overwrite_existing);
    const auto ck = openCheckpoint(path);
    const TensorInfo* t = ck->findTensor("optimizer_state_dict.state.8.exp_avg");
    QVERIFY(t);
    QVERIFY(computeStats(ck, *t, 4));
    QVERIFY(!ck->sources[0].file->changedOnDisk());
    std::filesystem::resize_file(path, 4096);
    QVERIFY(ck->sources[0].file->changedOnDisk());
    try {
        computeStats(ck, *t, 4);
        QFAIL("reading a truncated file succeeded");
    } catch (const Error& e) {
        QCOMPARE(e.code(), ErrorCode::Changed);
        QVERIFY(std::string(e.what()).find("truncated") != std::string::npos);
    }
    // Below the size check, a read of pages the file no longer has fails instead of raising SIGBUS.
    std::vector<char> buf(64);
    QVERIFY(ck->sources[0].file->copyGuarded(0, 64, buf.data()));
    QVERIFY(!ck->sources[0].file->copyGuarded(200000, 64, buf.data()));
    std::filesystem::remove(path);
}

QTEST_GUILESS_MAIN(TestElements)
#include "tst_elements.moc"
