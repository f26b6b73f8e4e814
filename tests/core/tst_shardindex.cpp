// Sharded checkpoints with a JSON index (pytorch-format.md §7.2): each row one check, built in a temporary
// folder from hand-written safetensors shards.

#include "testutil.h"

#include "analysis/elements.h"
#include "formats/shardindex.h"

#include <QTemporaryDir>
#include <QTest>

#include <filesystem>
#include <fstream>

using namespace testutil;

// Declared before the helpers: moc does not understand the raw string literals below.
class TestShardIndex : public QObject {
    Q_OBJECT
private Q_SLOTS:
    void cases_data();
    void cases();
    void mergesShards();
    void notAnIndex();
    void severalIndexes();
};

namespace {

std::string shardFile(const std::vector<std::pair<std::string, float>>& tensors) {
    std::string header = "{", data;
    for (const auto& [name, v] : tensors) {
        const std::size_t at = data.size();
        data.append(reinterpret_cast<const char*>(&v), sizeof v);
        header += (header.size() > 1 ? "," : "") + std::string("\"") + name +
                  R"(":{"dtype":"F32","shape":[1],"data_offsets":[)" + std::to_string(at) + "," +
                  std::to_string(data.size()) + "]}";
    }
    header += "}";
    std::string b(8, '\0');
    putU64(b, 0, header.size());
    return b + header + data;
}

void writeFile(const std::string& path, const std::string& bytes) {
    std::ofstream(path, std::ios::binary) << bytes;
}

const char* kIndex = "model.safetensors.index.json";
const std::string kGoodIndex = R"({"metadata": {"total_size": 12, "format": "pt"},
  "weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00001-of-00002.safetensors",
                 "c": "model-00002-of-00002.safetensors"}})";

// What opening the folder says: the error, or the checkpoint's error and warning findings; "ok" otherwise.
std::string outcome(const std::string& path) {
    try {
        const auto ck = ckpt::tryOpenShardIndex(path);
        if (!ck)
            return "not an index";
        std::string out;
        for (const auto& f : ck->findings)
            if (f.severity == ckpt::Severity::Error || f.severity == ckpt::Severity::Warning)
                out += (out.empty() ? "" : " | ") + (f.object.empty() ? "" : f.object + ": ") + f.message;
        return out.empty() ? "ok" : out;
    } catch (const ckpt::Error& e) {
        return e.what();
    }
}

} // namespace

void TestShardIndex::cases_data() {
    QTest::addColumn<QString>("index");
    QTest::addColumn<bool>("withSecondShard");
    QTest::addColumn<QString>("expected");
    auto row = [](const char* name, const std::string& index, bool second, const char* expected) {
        QTest::newRow(name) << QString::fromStdString(index) << second << QString(expected);
    };
    row("unmodified", kGoodIndex, true, "ok");
    row("shard missing", kGoodIndex, false,
        "shard file 'model-00002-of-00002.safetensors' named by the index is missing");
    row("entry not in its shard", replaceAll(kGoodIndex, R"("c": "model-00002)", R"("d": "model-00002)"),
        true,
        "c: tensor 'c' in shard 'model-00002-of-00002.safetensors' is not mapped to it by the index; not "
        "listed | "
        "d: the index maps 'd' to shard 'model-00002-of-00002.safetensors', which does not hold it");
    row("tensor in the wrong shard", replaceAll(kGoodIndex, R"("b": "model-00001)", R"("b": "model-00002)"),
        true,
        "b: tensor 'b' in shard 'model-00001-of-00002.safetensors' is not mapped to it by the index (the "
        "index "
        "sends it to 'model-00002-of-00002.safetensors'); not listed | b: the index maps 'b' to shard "
        "'model-00002-of-00002.safetensors', which does not hold it");
    row("total_size differs", replaceAll(kGoodIndex, "12", "99"), true,
        "metadata.total_size says 99 bytes but the tensors of the shards hold 12");
    row("parent folder in a shard name", replaceAll(kGoodIndex, R"("model-00002)", R"("../model-00002)"),
        true,
        "c: shard index: weight_map sends 'c' to '../model-00002-of-00002.safetensors', which is not a "
        "plain file name in the index's folder; refused");
    row("absolute shard name", replaceAll(kGoodIndex, R"("model-00002)", R"("/etc/model-00002)"), true,
        "which is not a plain file name in the index's folder; refused");
    row("shard name ..", replaceAll(kGoodIndex, R"("model-00002-of-00002.safetensors")", R"("..")"), true,
        "sends 'c' to '..', which is not a plain file name");
    row("shard name not a string", replaceAll(kGoodIndex, R"("model-00002-of-00002.safetensors")", "7"), true,
        "shard index: weight_map entry 'c' is not a file name");
    row("weight_map not an object", R"({"weight_map": []})", true,
        "shard index: \"weight_map\" is not an object");
    row("invalid JSON", R"({"weight_map": {"a": }})", true,
        "shard index is not valid JSON: parse error at line 1");
    row("number out of range", R"({"metadata": {"n": 1e400}, "weight_map": {}})", true,
        "shard index is not valid JSON: number overflow parsing '1e400'");
    row("index names itself", R"({"weight_map": {"a": "model.safetensors.index.json"}})", true,
        "shard file 'model.safetensors.index.json' cannot be read");
    row("shard unreadable", R"({"weight_map": {"a": "junk.bin"}})", true,
        "shard file 'junk.bin' cannot be read:");
    // '{' at 0 and 13, the first '[' at 19 (level 3): level 65 opens at byte 81.
    row("nested too deep",
        R"({"metadata": {"x": )" + std::string(100'000, '[') + std::string(100'000, ']') +
            R"(}, "weight_map": {"a": "model-00001-of-00002.safetensors"}})",
        true, "at byte 81: shard index nests deeper than 64 levels");
    row("nested 64 levels",
        R"({"metadata": {"x": )" + std::string(62, '[') + std::string(62, ']') +
            R"(}, "weight_map": {"a": "model-00001-of-00002.safetensors"}})",
        true, "tensor 'b' in shard 'model-00001-of-00002.safetensors' is not mapped to it by the index");
}

void TestShardIndex::cases() {
    QFETCH(QString, index);
    QFETCH(bool, withSecondShard);
    QFETCH(QString, expected);
    QTemporaryDir dir;
    const std::string d = dir.path().toStdString();
    writeFile(d + "/" + kIndex, index.toStdString());
    writeFile(d + "/model-00001-of-00002.safetensors", shardFile({{"a", 1}, {"b", 2}}));
    if (withSecondShard)
        writeFile(d + "/model-00002-of-00002.safetensors", shardFile({{"c", 3}}));
    writeFile(d + "/junk.bin", "this is not a checkpoint");
    const std::string got = outcome(d);
    if (expected == "ok")
        QCOMPARE(QString::fromStdString(got), expected);
    else
        QVERIFY2(got.find(expected.toStdString()) != std::string::npos, ("got: " + got).c_str());
    // the index file itself opens the same way
    QCOMPARE(QString::fromStdString(outcome(d + "/" + kIndex)), QString::fromStdString(got));
}

void TestShardIndex::mergesShards() {
    QTemporaryDir dir;
    const std::string d = dir.path().toStdString();
    writeFile(d + "/" + kIndex, kGoodIndex);
    writeFile(d + "/model-00001-of-00002.safetensors", shardFile({{"a", 1}, {"b", 2}}));
    writeFile(d + "/model-00002-of-00002.safetensors", shardFile({{"c", 3}}));
    const auto ck = ckpt::openCheckpoint(d);
    QCOMPARE(QString::fromStdString(ck->format), QString("sharded"));
    QCOMPARE(ck->tensors.size(), std::size_t(3));
    QCOMPARE(ck->sources.size(), std::size_t(3)); // the index, then the shards
    const double expected[] = {1, 2, 3};
    const char* files[] = {"model-00001-of-00002.safetensors", "model-00001-of-00002.safetensors",
                           "model-00002-of-00002.safetensors"};
    for (std::size_t i = 0; i < 3; ++i) {
        const auto& t = ck->tensors[i];
        QVERIFY2(t.error.empty(), t.error.c_str());
        QCOMPARE(ckpt::TensorReader(ck, t).element(0), expected[i]);
        const auto& s = ck->storages.at(static_cast<std::size_t>(t.storage));
        QCOMPARE(QString::fromStdString(
                     std::filesystem::path(ck->sources.at(static_cast<std::size_t>(s.source)).path)
                         .filename()
                         .string()),
                 QString(files[i]));
    }
    QCOMPARE(ck->values.size(), std::size_t(2));
    // JSON objects are unordered: the metadata values come in name order.
    QCOMPARE(QString::fromStdString(ck->values[1].name), QString("metadata.total_size"));
    QCOMPARE(ck->values[1].value->integer, std::int64_t(12));
}

void TestShardIndex::notAnIndex() {
    QTemporaryDir dir;
    const std::string d = dir.path().toStdString();
    QCOMPARE(QString::fromStdString(outcome(d)), QString("not an index"));
    writeFile(d + "/model.safetensors", shardFile({{"a", 1}}));
    QCOMPARE(QString::fromStdString(outcome(d + "/model.safetensors")), QString("not an index"));
    writeFile(d + "/config.json", R"({"hidden_size": 4})");
    QCOMPARE(QString::fromStdString(outcome(d + "/config.json")), QString("not an index"));
    QCOMPARE(QString::fromStdString(outcome(d + "/does-not-exist")), QString("not an index"));
    // a safetensors file whose header length is 123 starts with '{'; its header may even say "weight_map"
    std::string header = R"({"weight_map":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})";
    header.resize(123, ' ');
    std::string st(8, '\0');
    putU64(st, 0, header.size());
    writeFile(d + "/odd.safetensors", st + header + std::string(4, '\0'));
    QCOMPARE(QString::fromStdString(outcome(d + "/odd.safetensors")), QString("not an index"));
    QCOMPARE(ckpt::openCheckpoint(d + "/odd.safetensors")->format, std::string("safetensors"));
}

void TestShardIndex::severalIndexes() {
    QTemporaryDir dir;
    const std::string d = dir.path().toStdString();
    writeFile(d + "/" + kIndex, kGoodIndex);
    writeFile(d + "/pytorch_model.bin.index.json", kGoodIndex);
    QVERIFY(outcome(d).find("folder holds several shard indexes (model.safetensors.index.json, "
                            "pytorch_model.bin.index.json); open one of them") != std::string::npos);
}

QTEST_GUILESS_MAIN(TestShardIndex)
#include "tst_shardindex.moc"
