// Distributed checkpoints with hand-written .metadata pickles: shapes whose strides overflow, objects shared
// through the memo by many entries, and tensors of thousands of chunks, each chunk the one-element tensor of
// data/dcp_slice<dims>.pt (written by data/make_dcp_slice.py).

#include "testutil.h"

#include "analysis/elements.h"
#include "formats/dcp.h"

#include <QTemporaryDir>
#include <QTest>

#include <fstream>

using namespace testutil;

class TestDcpHostile : public QObject {
    Q_OBJECT
private Q_SLOTS:
    void strideOverflow();
    void sharedStateDict();
    void manyChunks();
    void overlaps_data();
    void overlaps();
    void irregularChunks();
};

namespace {

// Pickle opcodes, protocol 4.
struct Pickle {
    std::string b = std::string("\x80\x04", 2);

    Pickle& raw(const std::string& s) {
        b += s;
        return *this;
    }
    Pickle& str(const std::string& s) {
        b += 'X';
        for (int i = 0; i < 4; ++i)
            b += static_cast<char>((s.size() >> (8 * i)) & 0xFF);
        b += s;
        return *this;
    }
    Pickle& integer(std::int64_t v) { // LONG1, eight bytes little-endian
        b += "\x8a\x08";
        for (int i = 0; i < 8; ++i)
            b += static_cast<char>((static_cast<std::uint64_t>(v) >> (8 * i)) & 0xFF);
        return *this;
    }
    Pickle& ints(const std::vector<std::int64_t>& v) { // a tuple
        b += '(';
        for (auto x : v)
            integer(x);
        b += 't';
        return *this;
    }
    Pickle& global(const std::string& module, const std::string& name) {
        b += 'c' + module + '\n' + name + '\n';
        return *this;
    }
    // An instance of a DCP dataclass whose state dict follows (its keys and values, then end()).
    Pickle& object(const std::string& name) {
        global("torch.distributed.checkpoint.metadata", name);
        b += ")R}(";
        return *this;
    }
    Pickle& end() { // SETITEMS, BUILD
        b += "ub";
        return *this;
    }
};

struct Chunk {
    std::vector<std::int64_t> offsets, sizes;
};

std::string sliceName(std::size_t dims) { // tensors of more dimensions use the 2-D one
    return "dcp_slice" + std::to_string(std::min<std::size_t>(dims, 2)) + ".pt";
}

// Metadata for one float32 tensor `x` of `size` made of `chunks`, each stored as the whole of the slice file
// of as many dimensions.
std::string metadata(const std::vector<std::int64_t>& size, const std::vector<Chunk>& chunks) {
    const std::uint64_t sliceLength = readFile(dataPath(sliceName(size.size()).c_str())).size();
    Pickle p;
    p.object("Metadata").str("state_dict_metadata").raw("}(").str("x");
    p.object("TensorStorageMetadata").str("properties");
    p.object("TensorProperties").str("dtype").global("torch", "float32").end();
    p.str("size").ints(size).str("chunks").raw("](");
    for (const Chunk& c : chunks) {
        p.object("ChunkStorageMetadata").str("offsets").ints(c.offsets).str("sizes").ints(c.sizes).end();
    }
    p.raw("e").end().raw("u"); // APPENDS, the TensorStorageMetadata, state_dict_metadata
    p.str("storage_data").raw("}(");
    for (const Chunk& c : chunks) {
        p.object("MetadataIndex").str("fqn").str("x").str("offset").ints(c.offsets).end();
        p.object("_StorageInfo").str("relative_path").str(sliceName(size.size())).str("offset").integer(0);
        p.str("length").integer(static_cast<std::int64_t>(sliceLength)).end();
    }
    p.raw("u").end().raw("."); // storage_data, the Metadata
    return p.b;
}

void writeFile(const std::string& path, const std::string& bytes) {
    std::ofstream(path, std::ios::binary) << bytes;
}

// A folder holding the metadata and the slice file; the checkpoint opened from it.
ckpt::CheckpointPtr open(const QTemporaryDir& dir, const std::string& md) {
    const std::string d = dir.path().toStdString();
    for (std::size_t dims = 0; dims < 3; ++dims)
        writeFile(d + "/" + sliceName(dims), readFile(dataPath(sliceName(dims).c_str())));
    writeFile(d + "/.metadata", md);
    return ckpt::tryOpenDcp(d);
}

std::string errors(const ckpt::Checkpoint& ck) {
    std::string out;
    for (const auto& f : ck.findings)
        if (f.severity == ckpt::Severity::Error)
            out += (out.empty() ? "" : " | ") + f.message;
    return out;
}

} // namespace

// Element count 0, but the strides of the other dimensions overflow 64 bits.
void TestDcpHostile::strideOverflow() {
    QTemporaryDir dir;
    const std::int64_t big = std::int64_t(1) << 40;
    const auto ck = open(dir, metadata({0, big, big, big}, {}));
    QVERIFY(ck);
    QCOMPARE(
        QString::fromStdString(errors(*ck)),
        QString("tensor 'x' of size [0, 1099511627776, 1099511627776, 1099511627776] overflows 64 bits"));
    QCOMPARE(ck->tensors.size(), std::size_t(1));
    QVERIFY(!ck->tensors[0].error.empty());
}

// Every entry refers (through the memo) to one TensorStorageMetadata whose state dict holds many other
// items: each entry is read, and reports its missing dtype.
void TestDcpHostile::sharedStateDict() {
    const int entries = 20'000, junk = 20'000;
    Pickle p;
    p.object("Metadata").str("state_dict_metadata").raw("}(").str("a").raw("q\x01");
    p.object("TensorStorageMetadata");
    for (int i = 0; i < junk; ++i)
        p.raw(std::string("K\x00N", 3));
    p.end().raw("q\x02");
    for (int i = 1; i < entries; ++i)
        p.raw("h\x01h\x02"); // the same key and value again
    p.raw("u").str("storage_data").raw("}").end().raw(".");
    QTemporaryDir dir;
    const auto ck = open(dir, p.b);
    QVERIFY(ck);
    QCOMPARE(ck->tensors.size(), std::size_t(entries));
    QCOMPARE(QString::fromStdString(ck->tensors.back().error),
             QString("tensor 'a' has dtype ?, not a torch dtype"));
}

// A tensor of 20,000 one-element chunks, listed last to first: no overlap, every element readable.
void TestDcpHostile::manyChunks() {
    const std::int64_t n = 20'000;
    std::vector<Chunk> chunks;
    for (std::int64_t i = n; i-- > 0;)
        chunks.push_back({{i}, {1}});
    QTemporaryDir dir;
    const auto ck = open(dir, metadata({n}, chunks));
    QVERIFY(ck);
    QCOMPARE(QString::fromStdString(errors(*ck)), QString());
    const ckpt::TensorInfo* t = ck->findTensor("x");
    QVERIFY(t && t->error.empty());
    QCOMPARE(ck->chunkSets.at(static_cast<std::size_t>(t->chunkSet)).size(), std::size_t(n));
    ckpt::TensorReader r(ck, *t);
    QCOMPARE(r.numel(), std::uint64_t(n));
    for (std::uint64_t i = 0; i < std::uint64_t(n); i += 997)
        QCOMPARE(r.element(i), 2.5);
}

// The pair reported is the first chunk in list order that overlaps an earlier one, with the first such
// earlier one. Chunks before it are one element each, as the slice files hold.
void TestDcpHostile::overlaps_data() {
    QTest::addColumn<std::vector<std::int64_t>>("size");
    QTest::addColumn<std::vector<std::int64_t>>("flat"); // per chunk: offsets, then sizes
    QTest::addColumn<QString>("expected");
    auto row = [](const char* name, std::vector<std::int64_t> size, std::vector<std::int64_t> flat,
                  const char* expected) { QTest::newRow(name) << size << flat << QString(expected); };
    row("1-D, last chunk repeats an earlier one", {4}, {0, 1, 1, 1, 2, 1, 3, 1, 1, 1},
        "chunks 1 and 4 of 'x' overlap");
    row("1-D, first later chunk wins", {4}, {2, 1, 0, 1, 2, 1, 0, 1}, "chunks 0 and 2 of 'x' overlap");
    row("1-D, first earlier chunk wins", {4}, {1, 1, 0, 1, 0, 2}, "chunks 0 and 2 of 'x' overlap");
    row("1-D, no overlap", {4}, {3, 1, 1, 1, 0, 1, 2, 1}, "ok");
    row("2-D, a column over two cells", {2, 3},
        {0, 0, 1, 1, 1, 0, 1, 1, 0, 1, 1, 1, 1, 1, 1, 1, 0, 2, 1, 1, 1, 2, 1, 1, 0, 1, 2, 1},
        "chunks 2 and 6 of 'x' overlap");
    row("2-D, corners meet only", {2, 2}, {0, 0, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 0, 1, 1}, "ok");
    row("2-D, a row over the centre", {3, 3}, {0, 0, 1, 1, 2, 2, 1, 1, 1, 1, 1, 1, 1, 0, 1, 3},
        "chunks 2 and 3 of 'x' overlap");
    row("scalar in two chunks", {}, {}, "chunks 0 and 1 of 'x' overlap");
}

void TestDcpHostile::overlaps() {
    QFETCH(std::vector<std::int64_t>, size);
    QFETCH(std::vector<std::int64_t>, flat);
    QFETCH(QString, expected);
    std::vector<Chunk> chunks;
    const std::size_t dims = size.size();
    if (dims == 0) {
        chunks = {{{}, {}}, {{}, {}}};
    } else {
        for (std::size_t i = 0; i + 2 * dims <= flat.size(); i += 2 * dims)
            chunks.push_back({{flat.begin() + static_cast<std::ptrdiff_t>(i),
                               flat.begin() + static_cast<std::ptrdiff_t>(i + dims)},
                              {flat.begin() + static_cast<std::ptrdiff_t>(i + dims),
                               flat.begin() + static_cast<std::ptrdiff_t>(i + 2 * dims)}});
    }
    QTemporaryDir dir;
    const auto ck = open(dir, metadata(size, chunks));
    QVERIFY(ck);
    const std::string got = ck->findTensor("x")->error;
    QCOMPARE(QString::fromStdString(got.empty() ? "ok" : got), expected);
}

// A staircase: chunk i holds column n-1-i from row i down. No two meet, but every chunk's rows (and, swept
// the other way, columns) meet those of all chunks before it: the overlap check gives up at its limit.
void TestDcpHostile::irregularChunks() {
    const std::int64_t n = 20'000;
    std::vector<Chunk> chunks;
    for (std::int64_t i = 0; i < n; ++i)
        chunks.push_back({{i, n - 1 - i}, {n - i, 1}});
    QTemporaryDir dir;
    const auto ck = open(dir, metadata({n, n}, chunks));
    QVERIFY(ck);
    QCOMPARE(QString::fromStdString(ck->findTensor("x")->error),
             QString("the 20000 chunks of 'x' are laid out too irregularly to check for overlaps (more than "
                     "134217728 comparisons)"));
}

QTEST_GUILESS_MAIN(TestDcpHostile)
#include "tst_dcphostile.moc"
