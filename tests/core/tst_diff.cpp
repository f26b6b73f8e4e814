// Checkpoint comparison at the unit level: name alignment rules, the figures of small pairs worked out by
// hand, thresholds, non-finite elements, module sums, progress, cancel, threads, and the histograms of a
// pair. Checkpoints are safetensors files built in memory. Figures against PyTorch on real training
// checkpoints are in tests/interop/test_diff.py.

#include "testutil.h"

#include "diff/diff.h"

#include <QTest>

#include <nlohmann/json.hpp>

#include <atomic>
#include <cmath>
#include <map>
#include <random>

using namespace testutil;

namespace {

struct Spec {
    std::string name;
    std::string dtype; // safetensors dtype: F32, F64, F16, I64
    std::vector<std::int64_t> shape;
    std::string raw;
};

template <typename T> std::string raw(const std::vector<T>& v) {
    return std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(T));
}

std::string f32(const std::vector<float>& v) {
    return raw(v);
}

// A safetensors file: the tensors in the order given, metadata as values.
std::string safetensors(const std::vector<Spec>& tensors,
                        const std::map<std::string, std::string>& meta = {}) {
    nlohmann::ordered_json h = nlohmann::ordered_json::object();
    if (!meta.empty())
        h["__metadata__"] = meta;
    std::string data;
    for (const auto& t : tensors) {
        h[t.name] = {{"dtype", t.dtype},
                     {"shape", t.shape},
                     {"data_offsets", {data.size(), data.size() + t.raw.size()}}};
        data += t.raw;
    }
    std::string header = h.dump();
    header.append((8 - header.size() % 8) % 8, ' ');
    std::string out(8, '\0');
    putU64(out, 0, header.size());
    return out + header + data;
}

ckpt::CheckpointPtr open(const std::string& name, const std::string& bytes) {
    return ckpt::openCheckpointBuffer(name, bytes);
}

// A checkpoint of float32 tensors, each of 1 element: enough for the name rules.
ckpt::CheckpointPtr named(const std::string& file, const QStringList& names) {
    std::vector<Spec> specs;
    for (const auto& n : names)
        specs.push_back({n.toStdString(), "F32", {1}, f32({1.0f})});
    return open(file, safetensors(specs));
}

const ckpt::TensorDiff& find(const ckpt::DiffResult& r, const std::string& name) {
    for (const auto& t : r.tensors)
        if (t.name == name)
            return t;
    throw std::runtime_error("no result for " + name);
}

const ckpt::ModuleDiff& module(const ckpt::DiffResult& r, const std::string& name) {
    for (const auto& m : r.modules)
        if (m.name == name)
            return m;
    throw std::runtime_error("no module " + name);
}

// Reference figures, straight from the definitions, in long double.
struct Ref {
    double maxAbs, meanAbs, relL2, cosine, changedFraction;
};
Ref reference(const std::vector<double>& a, const std::vector<double>& b, double threshold) {
    long double mx = 0, sAbs = 0, sD = 0, sA = 0, sB = 0, dot = 0;
    std::size_t changed = 0;
    for (std::size_t i = 0; i < a.size(); ++i) {
        const long double d = static_cast<long double>(b[i]) - a[i];
        mx = std::max(mx, std::fabs(d));
        sAbs += std::fabs(d);
        sD += d * d;
        sA += static_cast<long double>(a[i]) * a[i];
        sB += static_cast<long double>(b[i]) * b[i];
        dot += static_cast<long double>(a[i]) * b[i];
        changed += std::fabs(d) > threshold;
    }
    return {static_cast<double>(mx), static_cast<double>(sAbs / a.size()),
            static_cast<double>(std::sqrt(sD / sA)), static_cast<double>(dot / std::sqrt(sA * sB)),
            static_cast<double>(changed) / a.size()};
}

bool close(double got, double want, double rel = 1e-12) {
    return std::fabs(got - want) <= rel * std::max(std::fabs(want), 1e-300) || got == want;
}

} // namespace

class TestDiff : public QObject {
    Q_OBJECT
private Q_SLOTS:
    void alignment_data();
    void alignment();
    void manualAlignment();
    void figuresByHand();
    void threshold_data();
    void threshold();
    void nonFinite();
    void zeroNorms();
    void structure();
    void values();
    void moduleSums();
    void largePairThreadsAndProgress();
    void cancel();
    void singlePairAndDtypes();
    void histograms();
    void unreadableTensor();
};

void TestDiff::alignment_data() {
    QTest::addColumn<QStringList>("a");
    QTest::addColumn<QStringList>("b");
    QTest::addColumn<QString>("rule");
    QTest::addColumn<QString>("prefixA");
    QTest::addColumn<QString>("prefixB");
    QTest::addColumn<int>("matched");
    const QStringList net{"conv.weight", "conv.bias", "layers.0.weight", "layers.1.weight", "fc.weight"};
    auto prefixed = [&](const QString& p) {
        QStringList out;
        for (const auto& n : net)
            out << p + n;
        return out;
    };
    QTest::newRow("same names") << net << net << "identity"
                                << ""
                                << "" << 5;
    QTest::newRow("DataParallel in B") << net << prefixed("module.") << "prefix"
                                       << ""
                                       << "module." << 5;
    QTest::newRow("DataParallel in A") << prefixed("module.") << net << "prefix"
                                       << "module."
                                       << "" << 5;
    QTest::newRow("torch.compile in B") << net << prefixed("_orig_mod.") << "prefix"
                                        << ""
                                        << "_orig_mod." << 5;
    QTest::newRow("wrapper in A") << prefixed("model.") << net << "prefix"
                                  << "model."
                                  << "" << 5;
    QTest::newRow("backbone saved alone") << net
                                          << (prefixed("backbone.") << "head.weight"
                                                                    << "head.bias")
                                          << "prefix"
                                          << ""
                                          << "backbone." << 5;
    QTest::newRow("prefix two segments deep") << prefixed("model.module.") << prefixed("model.") << "prefix"
                                              << "model.module."
                                              << "model." << 5;
    QTest::newRow("wrapper inside a full checkpoint")
        << (prefixed("state_dict.") << "optimizer.state.0.exp_avg"
                                    << "optimizer.state.1.exp_avg")
        << (prefixed("state_dict._orig_mod.") << "optimizer.state.0.exp_avg"
                                              << "optimizer.state.1.exp_avg")
        << "prefix"
        << "state_dict."
        << "state_dict._orig_mod." << 7;
    QTest::newRow("one wrapper for another") << prefixed("model.") << prefixed("module.") << "prefix"
                                             << "model."
                                             << "module." << 5;
    QTest::newRow("partly prefixed: the others match as they are")
        << net << (prefixed("module.").mid(0, 4) << "fc.weight") << "prefix"
        << ""
        << "module." << 5;
    QTest::newRow("a renamed module is not an alignment")
        << QStringList{"encoder.weight", "decoder.weight"} << QStringList{"encoder.weight", "head.weight"}
        << "identity"
        << ""
        << "" << 1;
    QTest::newRow("numbered layers are not shifted")
        << QStringList{"layers.0.w", "layers.1.w", "layers.2.w"}
        << QStringList{"layers.1.w", "layers.2.w", "layers.3.w"} << "identity"
        << ""
        << "" << 2;
    QTest::newRow("nothing in common") << QStringList{"a.x"} << QStringList{"b.y"} << "identity"
                                       << ""
                                       << "" << 0;
    QTest::newRow("empty") << QStringList{} << QStringList{} << "identity"
                           << ""
                           << "" << 0;
}

void TestDiff::alignment() {
    QFETCH(QStringList, a);
    QFETCH(QStringList, b);
    QFETCH(QString, rule);
    QFETCH(QString, prefixA);
    QFETCH(QString, prefixB);
    QFETCH(int, matched);
    const auto ca = named("a.safetensors", a), cb = named("b.safetensors", b);
    const ckpt::KeyAlignment al = ckpt::alignKeys(*ca, *cb);
    QCOMPARE(QString(ckpt::alignmentRuleName(al.rule)), rule);
    QCOMPARE(QString::fromStdString(al.prefixA), prefixA);
    QCOMPARE(QString::fromStdString(al.prefixB), prefixB);
    QCOMPARE(static_cast<int>(al.matched), matched);
    // the whole diff pairs exactly the names the alignment matched
    const auto r = ckpt::diffCheckpoints(ca, cb);
    QVERIFY(r);
    std::size_t pairs = 0;
    for (const auto& t : r->tensors)
        pairs += t.a >= 0 && t.b >= 0;
    QCOMPARE(static_cast<int>(pairs), matched);
    QCOMPARE(r->count(ckpt::DiffStatus::Removed), static_cast<std::size_t>(a.size() - matched));
    QCOMPARE(r->count(ckpt::DiffStatus::Added), static_cast<std::size_t>(b.size() - matched));
}

void TestDiff::manualAlignment() {
    const auto ca = named("a.safetensors", {"x.w", "x.b", "y.w"});
    const auto cb = named("b.safetensors", {"net.x.w", "net.x.b", "y.w"});
    ckpt::DiffOptions o;
    o.prefixB = "net.";
    const auto al = ckpt::alignKeys(*ca, *cb, o);
    QCOMPARE(al.rule, ckpt::KeyAlignment::Rule::Manual);
    QCOMPARE(al.prefixA, std::string());
    QCOMPARE(al.prefixB, std::string("net."));
    QCOMPARE(al.matched, std::size_t(3));
    QCOMPARE(al.matchedByName, std::size_t(1));
    QCOMPARE(al.description, std::string("B's names carry the prefix 'net.', stripped (given)"));
    // names are reported as B has them; a name equal to the prefix itself is not emptied
    QCOMPARE(ckpt::alignedKey("net.x.w", "net."), std::string("x.w"));
    QCOMPARE(ckpt::alignedKey("net.", "net."), std::string("net."));
    QCOMPARE(ckpt::alignedKey("network.w", "net."), std::string("network.w"));
    const auto r = ckpt::diffCheckpoints(ca, cb, o);
    QVERIFY(r);
    QCOMPARE(find(*r, "net.x.w").status, ckpt::DiffStatus::Same);
    QCOMPARE(find(*r, "net.x.w").key, std::string("x.w"));
    QVERIFY(!r->differs());
    // an empty manual prefix on both sides is still the caller's choice
    o.prefixB = "";
    const auto al2 = ckpt::alignKeys(*ca, *cb, o);
    QCOMPARE(al2.rule, ckpt::KeyAlignment::Rule::Manual);
    QCOMPARE(al2.matched, std::size_t(1));
}

void TestDiff::figuresByHand() {
    // A = (3, 4), B = (3, 0): d = (0, -4); ||d|| = 4, ||A|| = 5, <A, B> = 9, ||B|| = 3.
    const auto ca = open("a.safetensors", safetensors({{"t", "F32", {2}, f32({3, 4})}}));
    const auto cb = open("b.safetensors", safetensors({{"t", "F32", {2}, f32({3, 0})}}));
    const auto r = ckpt::diffCheckpoints(ca, cb);
    QVERIFY(r);
    const auto& t = find(*r, "t");
    QCOMPARE(t.status, ckpt::DiffStatus::Changed);
    QCOMPARE(t.kind, ckpt::ChangeKind::Values);
    QVERIFY(t.values);
    QCOMPARE(t.values->maxAbs, 4.0);
    QCOMPARE(t.values->meanAbs(), 2.0);
    QCOMPARE(t.values->relL2(), 0.8);
    QCOMPARE(t.values->cosine(), 9.0 / 15.0);
    QCOMPARE(t.values->changedFraction(), 0.5);
    QVERIFY(!t.values->identicalBytes);
    QVERIFY(r->differs());
}

void TestDiff::threshold_data() {
    QTest::addColumn<double>("threshold");
    QTest::addColumn<bool>("changed");
    QTest::addColumn<double>("fraction");
    // |d| = 0, 0.25, 0.5, 0: max 0.5
    QTest::newRow("zero: any difference") << 0.0 << true << 0.5;
    QTest::newRow("below the small change") << 0.125 << true << 0.5;
    QTest::newRow("between the changes") << 0.25 << true << 0.25;
    QTest::newRow("at max_abs: unchanged") << 0.5 << false << 0.0;
    QTest::newRow("above everything") << 10.0 << false << 0.0;
}

void TestDiff::threshold() {
    QFETCH(double, threshold);
    QFETCH(bool, changed);
    QFETCH(double, fraction);
    const auto ca = open("a.safetensors", safetensors({{"t", "F32", {4}, f32({1, 2, 3, 4})}}));
    const auto cb = open("b.safetensors", safetensors({{"t", "F32", {4}, f32({1, 2.25f, 3.5f, 4})}}));
    ckpt::DiffOptions o;
    o.threshold = threshold;
    const auto r = ckpt::diffCheckpoints(ca, cb, o);
    QVERIFY(r);
    const auto& t = find(*r, "t");
    QCOMPARE(t.status, changed ? ckpt::DiffStatus::Changed : ckpt::DiffStatus::Same);
    QCOMPARE(t.values->changedFraction(), fraction);
    QCOMPARE(t.values->maxAbs, 0.5); // the figures themselves do not depend on the threshold
    QCOMPARE(r->differs(), changed);
    QCOMPARE(r->threshold, threshold);
}

void TestDiff::nonFinite() {
    const double inf = INFINITY, nan = NAN;
    // equal infinities and NaNs are no change; the third element moved by 1; the fourth became NaN
    const auto ca = open("a.safetensors", safetensors({{"same", "F64", {3}, raw<double>({inf, nan, 1})},
                                                       {"nan", "F64", {2}, raw<double>({1, 2})}}));
    const auto cb = open("b.safetensors", safetensors({{"same", "F64", {3}, raw<double>({inf, nan, 2})},
                                                       {"nan", "F64", {2}, raw<double>({1, nan})}}));
    const auto r = ckpt::diffCheckpoints(ca, cb);
    QVERIFY(r);
    const auto& s = find(*r, "same");
    QCOMPARE(s.values->maxAbs, 1.0);
    QCOMPARE(s.values->changedFraction(), 1.0 / 3.0);
    QCOMPARE(s.values->sumAbs, 1.0);
    const auto& n = find(*r, "nan");
    QVERIFY(std::isnan(n.values->maxAbs));
    QCOMPARE(n.values->changedFraction(), 0.5);
    QCOMPARE(n.status, ckpt::DiffStatus::Changed);
    // the same bytes on both sides, NaN included: unchanged
    const auto r2 = ckpt::diffCheckpoints(ca, ca);
    QVERIFY(r2 && !r2->differs());
    QVERIFY(find(*r2, "same").values->identicalBytes);
}

void TestDiff::zeroNorms() {
    const auto z = open("z.safetensors", safetensors({{"t", "F32", {3}, f32({0, 0, 0})}}));
    const auto nz = open("n.safetensors", safetensors({{"t", "F32", {3}, f32({0, 1, 0})}}));
    auto figures = [](const ckpt::CheckpointPtr& a, const ckpt::CheckpointPtr& b) {
        return *find(*ckpt::diffCheckpoints(a, b), "t").values;
    };
    const auto zz = figures(z, z);
    QCOMPARE(zz.relL2(), 0.0);
    QCOMPARE(zz.cosine(), 1.0);
    const auto zn = figures(z, nz);
    QCOMPARE(zn.relL2(), static_cast<double>(INFINITY));
    QCOMPARE(zn.cosine(), 0.0);
    const auto nzz = figures(nz, z);
    QCOMPARE(nzz.relL2(), 1.0);
    QCOMPARE(nzz.cosine(), 0.0);
}

void TestDiff::structure() {
    const auto ca = open("a.safetensors", safetensors({{"gone", "F32", {1}, f32({1})},
                                                       {"reshaped", "F32", {2, 2}, f32({1, 2, 3, 4})},
                                                       {"retyped", "F32", {2}, f32({1, 2})},
                                                       {"same", "F32", {1}, f32({7})}}));
    const auto cb = open("b.safetensors", safetensors({{"same", "F32", {1}, f32({7})},
                                                       {"retyped", "F64", {2}, raw<double>({1, 2})},
                                                       {"reshaped", "F32", {4}, f32({1, 2, 3, 4})},
                                                       {"new", "F32", {1}, f32({1})}}));
    std::vector<std::string> seen;
    const auto r =
        ckpt::diffCheckpoints(ca, cb, {}, {}, [&](const ckpt::TensorDiff& t) { seen.push_back(t.name); });
    QVERIFY(r);
    // B's order, then what only A has
    QCOMPARE(r->tensors.size(), std::size_t(5));
    QCOMPARE(r->tensors[0].name, std::string("same"));
    QCOMPARE(r->tensors[3].name, std::string("new"));
    QCOMPARE(r->tensors[4].name, std::string("gone"));
    QCOMPARE(find(*r, "gone").status, ckpt::DiffStatus::Removed);
    QCOMPARE(find(*r, "new").status, ckpt::DiffStatus::Added);
    const auto& reshaped = find(*r, "reshaped");
    QCOMPARE(reshaped.status, ckpt::DiffStatus::Changed);
    QCOMPARE(reshaped.kind, ckpt::ChangeKind::Shape);
    QVERIFY(!reshaped.values); // values are not compared across shapes
    const auto& retyped = find(*r, "retyped");
    QCOMPARE(retyped.kind, ckpt::ChangeKind::DType);
    QVERIFY(retyped.dtypeChanged && !retyped.shapeChanged && !retyped.deviceChanged);
    QCOMPARE(retyped.values->maxAbs, 0.0);
    QVERIFY(!retyped.values->identicalBytes);
    QVERIFY(find(*r, "same").values->identicalBytes);
    // every tensor reported once through the callback
    std::sort(seen.begin(), seen.end());
    QCOMPARE(seen, (std::vector<std::string>{"gone", "new", "reshaped", "retyped", "same"}));
}

void TestDiff::values() {
    const auto ca = open("a.safetensors", safetensors({{"t", "F32", {1}, f32({1})}},
                                                      {{"epoch", "3"}, {"lr", "0.1"}, {"only_a", "x"}}));
    const auto cb = open("b.safetensors", safetensors({{"t", "F32", {1}, f32({1})}},
                                                      {{"epoch", "4"}, {"lr", "0.1"}, {"only_b", "y"}}));
    const auto r = ckpt::diffCheckpoints(ca, cb);
    QVERIFY(r);
    QCOMPARE(r->values.size(), std::size_t(3));
    std::map<std::string, ckpt::ValueChange> by;
    for (const auto& v : r->values)
        by[v.name] = v;
    QCOMPARE(by["__metadata__.epoch"].a.value(), std::string("'3'"));
    QCOMPARE(by["__metadata__.epoch"].b.value(), std::string("'4'"));
    QVERIFY(by["__metadata__.epoch"].valueA && by["__metadata__.epoch"].valueB);
    QVERIFY(!by["__metadata__.only_a"].b && !by["__metadata__.only_a"].valueB);
    QVERIFY(!by["__metadata__.only_b"].a);
    QVERIFY(!by.count("__metadata__.lr"));
    QVERIFY(r->differs()); // values alone make a difference
    QCOMPARE(r->count(ckpt::DiffStatus::Same), std::size_t(1));
}

void TestDiff::moduleSums() {
    const auto ca = open("a.safetensors", safetensors({{"enc.l0.w", "F32", {2}, f32({1, 2})},
                                                       {"enc.l1.w", "F32", {2}, f32({3, 4})},
                                                       {"dec.w", "F32", {1}, f32({5})},
                                                       {"dec.old", "F32", {1}, f32({5})}}));
    const auto cb = open("b.safetensors", safetensors({{"enc.l0.w", "F32", {2}, f32({1, 2})},
                                                       {"enc.l1.w", "F32", {2}, f32({3, 6})},
                                                       {"dec.w", "F32", {1}, f32({4})},
                                                       {"dec.new", "F32", {3}, f32({0, 0, 0})}}));
    const auto r = ckpt::diffCheckpoints(ca, cb);
    QVERIFY(r);
    QCOMPARE(r->modules[0].name, std::string());
    QCOMPARE(r->modules[0].parent, -1);
    for (std::size_t i = 1; i < r->modules.size(); ++i) // parents come before children
        QVERIFY(r->modules[i].parent >= 0 && static_cast<std::size_t>(r->modules[i].parent) < i);
    const auto& enc = module(*r, "enc");
    QCOMPARE(enc.depth, 1);
    QCOMPARE(enc.tensors, std::uint64_t(2));
    QCOMPARE(enc.changedTensors, std::uint64_t(1));
    // enc as one vector: A = (1, 2, 3, 4), B = (1, 2, 3, 6)
    const Ref e = reference({1, 2, 3, 4}, {1, 2, 3, 6}, 0);
    QVERIFY(close(enc.values.relL2(), e.relL2));
    QVERIFY(close(enc.values.cosine(), e.cosine));
    QCOMPARE(enc.values.maxAbs, e.maxAbs);
    QCOMPARE(enc.values.meanAbs(), e.meanAbs);
    QCOMPARE(enc.values.changedFraction(), 0.25);
    QCOMPARE(module(*r, "enc.l1").parent, static_cast<int>(&enc - r->modules.data()));
    QCOMPARE(module(*r, "enc.l1").depth, 2);
    const auto& dec = module(*r, "dec");
    QCOMPARE(dec.tensors, std::uint64_t(3));
    QCOMPARE(dec.added, std::uint64_t(1));
    QCOMPARE(dec.removed, std::uint64_t(1));
    QCOMPARE(dec.values.count, std::uint64_t(1)); // only the pair is compared
    QCOMPARE(dec.values.relL2(), 0.2);
    const auto& root = r->modules[0];
    QCOMPARE(root.tensors, std::uint64_t(5));
    QCOMPARE(root.values.count, std::uint64_t(5));
    // aggregateModules is what fills DiffResult::modules
    const auto again = ckpt::aggregateModules(r->tensors);
    QCOMPARE(again.size(), r->modules.size());
}

void TestDiff::largePairThreadsAndProgress() {
    // More elements than one unit of work, so that several threads share one tensor; random values with a
    // wide dynamic range, against a long-double reference.
    const std::size_t n = 9'000'000;
    std::mt19937_64 rng(7);
    std::normal_distribution<float> g(0.0f, 1.0f);
    std::vector<float> a(n), b(n);
    for (std::size_t i = 0; i < n; ++i) {
        a[i] = g(rng) * (i % 1000 == 0 ? 1000.0f : 1.0f);
        b[i] = i % 3 == 0 ? a[i] : a[i] + 0.01f * g(rng);
    }
    const auto ca = open("a.safetensors", safetensors({{"big", "F32", {3000, 3000}, raw(a)}}));
    const auto cb = open("b.safetensors", safetensors({{"big", "F32", {3000, 3000}, raw(b)}}));
    const Ref ref =
        reference(std::vector<double>(a.begin(), a.end()), std::vector<double>(b.begin(), b.end()), 0);
    std::optional<ckpt::ValueDiff> first;
    for (int threads : {1, 2, 5}) {
        ckpt::DiffOptions o;
        o.threads = threads;
        std::uint64_t last = 0, total = 0;
        bool monotonic = true;
        int calls = 0;
        const auto r = ckpt::diffCheckpoints(ca, cb, o, [&](std::uint64_t done, std::uint64_t all) {
            monotonic = monotonic && done >= last && done <= all;
            last = done;
            total = all;
            ++calls;
            return true;
        });
        QVERIFY(r);
        QVERIFY(monotonic);
        QVERIFY(calls >= 3);
        QCOMPARE(total, std::uint64_t(2 * 4 * n));
        QCOMPARE(last, total);
        const auto& v = *find(*r, "big").values;
        QCOMPARE(v.count, std::uint64_t(n));
        QCOMPARE(v.maxAbs, ref.maxAbs);
        QVERIFY2(close(v.meanAbs(), ref.meanAbs), std::to_string(v.meanAbs() - ref.meanAbs).c_str());
        QVERIFY(close(v.relL2(), ref.relL2));
        QVERIFY(close(v.cosine(), ref.cosine));
        QCOMPARE(v.changedFraction(), ref.changedFraction);
        // the same figures, to the last bit, whatever the number of threads
        if (!first)
            first = v;
        QCOMPARE(v.sumSqD, first->sumSqD);
        QCOMPARE(v.dot, first->dot);
        QCOMPARE(v.sumAbs, first->sumAbs);
    }
}

void TestDiff::cancel() {
    std::vector<float> a(2'000'000, 1.0f);
    const auto ca = open("a.safetensors",
                         safetensors({{"x", "F32", {2'000'000}, raw(a)}, {"y", "F32", {2'000'000}, raw(a)}}));
    int calls = 0;
    const auto r =
        ckpt::diffCheckpoints(ca, ca, {}, [&](std::uint64_t, std::uint64_t) { return ++calls < 2; });
    QVERIFY(!r);
    QCOMPARE(calls, 2);
    const auto one = ckpt::diffTensors(ca, ca->tensors[0], ca, ca->tensors[1], 0,
                                       [](std::uint64_t, std::uint64_t) { return false; });
    QVERIFY(!one);
    const auto h = ckpt::diffHistograms(ca, ca->tensors[0], ca, ca->tensors[1], 8,
                                        [](std::uint64_t, std::uint64_t) { return false; });
    QVERIFY(!h);
}

void TestDiff::singlePairAndDtypes() {
    // float16 against float32: 0.1 is not a float16, so the converted values differ by the rounding
    const std::uint16_t h01 = 0x2E66;                           // float16 nearest to 0.1: 0.0999755859375
    const std::vector<std::uint16_t> half{0x3C00, h01, 0xC000}; // 1, ~0.1, -2
    const auto ca = open("a.safetensors", safetensors({{"w", "F32", {3}, f32({1.0f, 0.1f, -2.0f})}}));
    const auto cb = open("b.safetensors", safetensors({{"w16", "F16", {3}, raw(half)}}));
    const auto d = ckpt::diffTensors(ca, ca->tensors[0], cb, cb->tensors[0]);
    QVERIFY(d);
    QCOMPARE(d->kind, ckpt::ChangeKind::DType);
    QCOMPARE(d->status, ckpt::DiffStatus::Changed);
    const double diff = std::fabs(0.0999755859375 - static_cast<double>(0.1f));
    QCOMPARE(d->values->maxAbs, diff);
    QCOMPARE(d->values->changedFraction(), 1.0 / 3.0);
    // with a threshold above the rounding only the dtype change remains
    const auto d2 = ckpt::diffTensors(ca, ca->tensors[0], cb, cb->tensors[0], 1e-3);
    QCOMPARE(d2->values->changedFraction(), 0.0);
    QCOMPARE(d2->kind, ckpt::ChangeKind::DType);
    // int64 against float64 holding the same integers
    const auto ci =
        open("i.safetensors", safetensors({{"n", "I64", {3}, raw<std::int64_t>({-5, 0, 1LL << 40})}}));
    const auto cf =
        open("f.safetensors", safetensors({{"n", "F64", {3}, raw<double>({-5, 0, std::ldexp(1.0, 40)})}}));
    const auto d3 = ckpt::diffTensors(ci, ci->tensors[0], cf, cf->tensors[0]);
    QCOMPARE(d3->values->maxAbs, 0.0);
    QCOMPARE(d3->values->cosine(), 1.0);
    // different element counts: structure only
    const auto c2 = open("c.safetensors", safetensors({{"w", "F32", {2}, f32({1.0f, 0.1f})}}));
    const auto d4 = ckpt::diffTensors(ca, ca->tensors[0], c2, c2->tensors[0]);
    QVERIFY(d4 && !d4->values);
    QCOMPARE(d4->kind, ckpt::ChangeKind::Shape);
}

void TestDiff::histograms() {
    std::vector<float> a(10), b(10);
    for (int i = 0; i < 10; ++i) {
        a[static_cast<std::size_t>(i)] = static_cast<float>(i);
        b[static_cast<std::size_t>(i)] = static_cast<float>(i + 1) + (i == 4 ? 2.0f : 0.0f);
    }
    const auto ca = open("a.safetensors", safetensors({{"t", "F32", {10}, raw(a)}}));
    const auto cb = open("b.safetensors", safetensors({{"t", "F32", {10}, raw(b)}}));
    const auto h = ckpt::diffHistograms(ca, ca->tensors[0], cb, cb->tensors[0], 12);
    QVERIFY(h);
    // common range [0, 10], 12 bins, as numpy.histogram(range=(0, 10), bins=12) bins them
    QCOMPARE(h->lo, 0.0);
    QCOMPARE(h->hi, 10.0);
    const auto expected = [](const std::vector<float>& v) {
        std::vector<std::uint64_t> c(12, 0);
        for (float x : v)
            ++c[std::min<std::size_t>(11, static_cast<std::size_t>(x / 10.0 * 12.0))];
        return c;
    };
    QCOMPARE(h->a.counts, expected(a));
    QCOMPARE(h->b.counts, expected(b));
    QCOMPARE(h->a.edges.size(), std::size_t(13));
    // B - A: nine ones and one three, over [1, 3]
    QCOMPARE(h->deltaLo, 1.0);
    QCOMPARE(h->deltaHi, 3.0);
    QCOMPARE(h->delta.counts.front(), std::uint64_t(9));
    QCOMPARE(h->delta.counts.back(), std::uint64_t(1));
    // no differences histogram for different element counts
    const auto c3 = open("c.safetensors", safetensors({{"t", "F32", {3}, f32({-1, 0, 20})}}));
    const auto h2 = ckpt::diffHistograms(ca, ca->tensors[0], c3, c3->tensors[0], 4);
    QVERIFY(h2);
    QVERIFY(h2->delta.counts.empty());
    QCOMPARE(h2->lo, -1.0);
    QCOMPARE(h2->hi, 20.0);
}

void TestDiff::unreadableTensor() {
    // B declares a tensor whose element type cannot be converted: its values are not compared, the others are
    const auto ca =
        open("a.safetensors", safetensors({{"ok", "F32", {1}, f32({1})}, {"odd", "F32", {2}, f32({1, 2})}}));
    const auto cb =
        open("b.safetensors",
             safetensors({{"ok", "F32", {1}, f32({2})}, {"odd", "F4", {2}, std::string(1, '\0')}}));
    if (cb->findTensor("odd") == nullptr || cb->findTensor("odd")->dtype != ckpt::DType::Float4_e2m1fn_x2)
        QSKIP("this reader does not map F4");
    const auto r = ckpt::diffCheckpoints(ca, cb);
    QVERIFY(r);
    const auto& odd = find(*r, "odd");
    QCOMPARE(odd.status, ckpt::DiffStatus::Error);
    QVERIFY2(odd.error.find("b.safetensors") == 0, odd.error.c_str());
    QCOMPARE(find(*r, "ok").status, ckpt::DiffStatus::Changed);
}

QTEST_GUILESS_MAIN(TestDiff)
#include "tst_diff.moc"
