// The module tree against an independent reading of the same names: every dotted prefix is one module,
// every name one leaf, children in first-seen order, totals summed by hand.
#include "model/moduletree.h"

#include <QtTest>

#include <map>
#include <set>
#include <string>
#include <vector>

using namespace ckpt;

namespace {

// Names with many short segments: each tensor adds more than two nodes, and short segments are stored
// inside their std::string objects (small-string optimisation), which move when the node list grows.
std::vector<std::string> deepNames(int n) {
    std::vector<std::string> names;
    for (int i = 0; i < n; ++i) {
        names.push_back("m.l" + std::to_string(i) + ".a.b.c.d.e.f.g.h");
        names.push_back("m.l" + std::to_string(i) + ".a.b.c.d.e.f.g.w");
    }
    names.push_back("m.l0.bias"); // joins an existing module
    return names;
}

Checkpoint makeCheckpoint(const std::vector<std::string>& names) {
    Checkpoint ck;
    for (std::size_t i = 0; i < names.size(); ++i) {
        TensorInfo t;
        t.name = names[i];
        t.dtype = DType::Float32;
        t.shape = {static_cast<std::int64_t>(i % 7 + 1), 3};
        t.strides = {3, 1};
        t.device = i % 2 ? "cuda:0" : "cpu";
        ck.tensors.push_back(std::move(t));
    }
    return ck;
}

} // namespace

class TestModuleTree : public QObject {
    Q_OBJECT
private slots:
    void deepNamesMatchThePrefixSet_data() {
        QTest::addColumn<int>("layers");
        for (int n : {1, 20, 200, 5000})
            QTest::newRow(qPrintable(QString::number(n))) << n;
    }

    void deepNamesMatchThePrefixSet() {
        QFETCH(int, layers);
        const auto names = deepNames(layers);
        const Checkpoint ck = makeCheckpoint(names);
        const ModuleTree tree = ModuleTree::build(ck);

        // Independent truth: the set of proper prefixes (modules) and, per module, its tensors' totals.
        std::set<std::string> modules;
        std::map<std::string, std::uint64_t> params, count;
        std::map<std::string, std::set<std::string>> devices;
        for (std::size_t i = 0; i < names.size(); ++i) {
            const std::string& name = names[i];
            for (std::size_t dot = name.find('.'); dot != std::string::npos; dot = name.find('.', dot + 1)) {
                const std::string prefix = name.substr(0, dot);
                modules.insert(prefix);
                params[prefix] += ck.tensors[i].numel();
                ++count[prefix];
                devices[prefix].insert(ck.tensors[i].device);
            }
        }
        QCOMPARE(tree.nodes().size(), 1 + modules.size() + names.size());

        for (std::size_t i = 0; i < names.size(); ++i) {
            const int node = tree.find(names[i]);
            QVERIFY2(node > 0, names[i].c_str());
            QCOMPARE(tree.node(node).tensor, static_cast<int>(i));
            QCOMPARE(tree.fullName(node), names[i]);
        }
        for (const std::string& m : modules) {
            const int node = tree.find(m);
            QVERIFY2(node > 0, m.c_str());
            QCOMPARE(tree.node(node).kind, ModuleNode::Kind::Module);
            QCOMPARE(tree.node(node).tensors, count[m]);
            QCOMPARE(tree.node(node).parameters, params[m]);
            const int device = tree.node(node).device;
            if (devices[m].size() > 1)
                QCOMPARE(device, ModuleTree::kMixed);
            else
                QCOMPARE(tree.devices().at(static_cast<std::size_t>(device)), *devices[m].begin());
        }
        // One `m` at the top, its layers in file order.
        QCOMPARE(tree.root().children.size(), std::size_t(1));
        const ModuleNode& m = tree.node(tree.root().children[0]);
        QCOMPARE(m.children.size(), static_cast<std::size_t>(layers));
        for (int i = 0; i < layers; ++i)
            QCOMPARE(tree.node(m.children[static_cast<std::size_t>(i)]).name, "l" + std::to_string(i));
        QCOMPARE(tree.root().tensors, static_cast<std::uint64_t>(names.size()));
    }
};

QTEST_GUILESS_MAIN(TestModuleTree)
#include "tst_moduletree.moc"
