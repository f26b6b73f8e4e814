// The data-only pickle machine: opcodes, limits, and what it does with globals it does not know.

#include "testutil.h"

#include "formats/torchpickle.h"
#include "pickle/unpickler.h"

#include <QTemporaryDir>
#include <QTest>

#include <filesystem>

using namespace ckpt;

namespace {

QByteArray bytes(const char* s, std::size_t n) {
    return QByteArray(s, static_cast<qsizetype>(n));
}
#define PK(lit) bytes(lit, sizeof(lit) - 1)

std::string runPickle(const QByteArray& data, Checkpoint* ck = nullptr) {
    Checkpoint local;
    Checkpoint& c = ck ? *ck : local;
    c.arena = std::make_shared<ValueArena>();
    TorchPickleHooks hooks(c);
    const auto* p = reinterpret_cast<const std::uint8_t*>(data.constData());
    try {
        Unpickler u(*c.arena, hooks, {p, static_cast<std::size_t>(data.size())}, 0, "");
        c.root = u.load();
        walkTree(c, hooks.globalFindings());
        return valueRepr(c.root, 200);
    } catch (const Error& e) {
        return std::string("error: ") + e.what();
    }
}

} // namespace

class TestUnpickler : public QObject {
    Q_OBJECT
private Q_SLOTS:
    void opcodes_data();
    void opcodes();
    void dangerousCallsAreRecordedNotRun_data();
    void dangerousCallsAreRecordedNotRun();
    void deepNestingIsBounded();
    void cyclesAreListedOnce();
    void bigIntegers();

private:
    QTemporaryDir m_dir; // where the payloads would leave their marker files
};

void TestUnpickler::opcodes_data() {
    QTest::addColumn<QByteArray>("pickle");
    QTest::addColumn<QString>("expected");
    // Valid pickles as Python's pickle module writes them (protocols 0, 2, 4, 5).
    QTest::newRow("int protocol 2") << PK("\x80\x02K\x05.") << "5";
    QTest::newRow("negative BININT") << PK("\x80\x02J\xff\xff\xff\xff.") << "-1";
    QTest::newRow("list with APPENDS") << PK("\x80\x02]q\x00(K\x01K\x02"
                                             "e.")
                                       << "[1, 2]";
    QTest::newRow("dict with SETITEMS") << PK("\x80\x02}q\x00(X\x01\x00\x00\x00"
                                              "aq\x01K\x01u.")
                                        << "{'a': 1}";
    QTest::newRow("float BINFLOAT") << PK("\x80\x02G?\xb9\x99\x99\x99\x99\x99\x9a.") << "0.1";
    QTest::newRow("tuple2 and bools") << PK("\x80\x02\x88\x89\x86q\x00.") << "(True, False)";
    QTest::newRow("protocol 4 frame and memoize")
        << PK("\x80\x04\x95\x11\x00\x00\x00\x00\x00\x00\x00]\x94(\x8c\x01x\x94\x8c\x01y\x94"
              "e.")
        << "['x', 'y']";
    QTest::newRow("protocol 0 text opcodes")
        << PK("(lp0\nI12\naF0.5\naS'ab'\np1\nag1\na.") << "[12, 0.5, 'ab', 'ab']";
    QTest::newRow("OrderedDict by REDUCE")
        << PK("\x80\x02\x63\x63ollections\nOrderedDict\nq\x00)Rq\x01X\x01\x00\x00\x00kK\x07s.") << "{'k': 7}";
    QTest::newRow("set via __builtin__ (py2 name)") << PK("\x80\x02\x63__builtin__\nset\n]q\x00K\x03"
                                                          "a\x85Rq\x01.")
                                                    << "{3}";
    QTest::newRow("bytes via _codecs.encode")
        << PK("\x80\x02\x63_codecs\nencode\nX\x02\x00\x00\x00\xc3\xa9X\x06\x00\x00\x00latin1\x86R.")
        << "<1 bytes>";
    QTest::newRow("protocol 5 bytearray8") << PK("\x80\x05\x96\x03\x00\x00\x00\x00\x00\x00\x00"
                                                 "abc.")
                                           << "<3 bytes>";
    // Malformed input: a clean error that says where and what.
    QTest::newRow("empty") << QByteArray() << "error: at byte 0: needs 1 bytes but only 0 are left";
    QTest::newRow("no STOP") << PK("\x80\x02K\x05") << "error: at byte 4: needs 1 bytes but only 0 are left";
    QTest::newRow("memo index never stored")
        << PK("\x80\x02h\x05.") << "error: at byte 2: memo index 5 was never stored";
    QTest::newRow("stack underflow") << PK("\x80\x02\x61.") << "error: at byte 2: stack underflow";
    QTest::newRow("SETITEM on a list")
        << PK("\x80\x02]K\x01K\x02s.") << "error: at byte 7: SETITEM on a list, not a dict";
    QTest::newRow("APPEND to a dict")
        << PK("\x80\x02}K\x01\x61.") << "error: at byte 5: APPEND to a dict, not a list";
    QTest::newRow("extension registry")
        << PK("\x80\x02\x82\x01.") << "error: at byte 2: extension-registry opcodes";
    QTest::newRow("out-of-band buffer")
        << PK("\x80\x05\x97.") << "error: at byte 2: out-of-band buffer opcodes";
    QTest::newRow("unknown opcode") << PK("\x80\x02\xff") << "error: at byte 2: unknown pickle opcode 0xff";
    QTest::newRow("protocol 6") << PK("\x80\x06K\x01.") << "error: at byte 0: unsupported pickle protocol 6";
    QTest::newRow("unclosed MARK") << PK("\x80\x02(.") << "error: at byte 3: STOP inside an unclosed MARK";
    QTest::newRow("huge BINUNICODE length")
        << PK("\x80\x02X\xff\xff\xff\x7f") << "error: at byte 7: needs 2147483647 bytes but only 0 are left";
    QTest::newRow("huge BINUNICODE8 length")
        << PK("\x80\x04\x8d\x00\x00\x00\x00\x00\x00\x00\x10")
        << "error: at byte 11: string of 1152921504606846976 bytes runs past the end";
    QTest::newRow("REDUCE with non-tuple args")
        << PK("\x80\x02\x63\x63ollections\nOrderedDict\nK\x01R.")
        << "error: at byte 29: REDUCE arguments are a int, not a tuple";
    QTest::newRow("persistent id that is not a storage")
        << PK("\x80\x02K\x01Q.") << "error: at byte 4: persistent id is not a ('storage'";
    QByteArray marks = PK("\x80\x02");
    marks.append(QByteArray(70000, '('));
    QTest::newRow("too many nested MARKs") << marks << "error: at byte 65538: more than 65536 nested MARKs";
}

void TestUnpickler::opcodes() {
    QFETCH(QByteArray, pickle);
    QFETCH(QString, expected);
    const std::string got = runPickle(pickle);
    QVERIFY2(got.starts_with(expected.toStdString()), ("got: " + got).c_str());
}

void TestUnpickler::dangerousCallsAreRecordedNotRun_data() {
    QTest::addColumn<QByteArray>("pickle");
    QTest::addColumn<QString>("global");
    QTest::addColumn<QString>("marker");
    QVERIFY(m_dir.isValid());
    const std::string dir = m_dir.path().toStdString();
    auto cmdPickle = [&](const std::string& globalLine, const std::string& marker, char op) {
        const std::string cmd = "touch " + dir + "/" + marker;
        std::string p = "\x80\x02";
        if (op == 'i') { // INST: MARK, args, 'i' module\nname\n
            p += "(X";
            const auto n = static_cast<std::uint32_t>(cmd.size());
            p.append(reinterpret_cast<const char*>(&n), 4);
            p += cmd + "i" + globalLine + ".";
            return QByteArray(p.data(), static_cast<qsizetype>(p.size()));
        }
        p += "c" + globalLine + "X";
        const auto n = static_cast<std::uint32_t>(cmd.size());
        p.append(reinterpret_cast<const char*>(&n), 4);
        p += cmd + "\x85" + op + ".";
        return QByteArray(p.data(), static_cast<qsizetype>(p.size()));
    };
    QTest::newRow("posix.system by REDUCE")
        << cmdPickle("posix\nsystem\n", "a", 'R') << "posix.system" << QString::fromStdString(dir + "/a");
    QTest::newRow("os.system by REDUCE")
        << cmdPickle("os\nsystem\n", "b", 'R') << "os.system" << QString::fromStdString(dir + "/b");
    QTest::newRow("builtins.exec by REDUCE")
        << cmdPickle("builtins\nexec\n", "c", 'R') << "builtins.exec" << QString::fromStdString(dir + "/c");
    QTest::newRow("__builtin__.eval (py2 spelling)") << cmdPickle("__builtin__\neval\n", "d", 'R')
                                                     << "builtins.eval" << QString::fromStdString(dir + "/d");
    QTest::newRow("subprocess.Popen by NEWOBJ") << cmdPickle("subprocess\nPopen\n", "e", '\x81')
                                                << "subprocess.Popen" << QString::fromStdString(dir + "/e");
    QTest::newRow("posix.system by INST")
        << cmdPickle("posix\nsystem\n", "f", 'i') << "posix.system" << QString::fromStdString(dir + "/f");
}

void TestUnpickler::dangerousCallsAreRecordedNotRun() {
    QFETCH(QByteArray, pickle);
    QFETCH(QString, global);
    QFETCH(QString, marker);
    Checkpoint ck;
    const std::string got = runPickle(pickle, &ck);
    QVERIFY2(!got.starts_with("error"), got.c_str());
    QCOMPARE(ck.root->kind, ValueKind::Object);
    QVERIFY(ck.root->dangerous);
    QCOMPARE(QString::fromStdString(ck.root->qualifiedName()), global);
    bool found = false;
    for (const auto& f : ck.findings)
        if (f.severity == Severity::Security && f.global == global.toStdString()) {
            found = true;
            QVERIFY2(f.message.find("tries to call " + global.toStdString() + "('touch ") !=
                         std::string::npos,
                     f.message.c_str());
            QVERIFY2(f.message.find("it was not run") != std::string::npos, f.message.c_str());
        }
    QVERIFY(found);
    QVERIFY2(!std::filesystem::exists(marker.toStdString()), "the payload ran");
}

void TestUnpickler::deepNestingIsBounded() {
    // 200,000 nested lists: the machine is iterative, the tree walk stops at its depth limit with a warning.
    const int depth = 200000;
    QByteArray p = PK("\x80\x02");
    p.append(QByteArray(depth, ']'));
    p.append(QByteArray(depth - 1, 'a'));
    p.append('.');
    Checkpoint ck;
    const std::string got = runPickle(p, &ck);
    QVERIFY2(!got.starts_with("error"), got.c_str());
    QCOMPARE(ck.findings.size(), std::size_t(1));
    QVERIFY2(ck.findings[0].message.find("nested deeper than 400 levels") != std::string::npos,
             ck.findings[0].message.c_str());
}

void TestUnpickler::cyclesAreListedOnce() {
    Checkpoint ck;
    runPickle(PK("\x80\x02]q\x00h\x00\x61."), &ck); // l = []; l.append(l)
    QCOMPARE(ck.findings.size(), std::size_t(1));
    QVERIFY(ck.findings[0].message.find("cycle") != std::string::npos);
}

void TestUnpickler::bigIntegers() {
    // The legacy magic number 0x1950a86a20f9469cfc6c, as LONG1, and a negative 9-byte integer.
    QCOMPARE(
        QString::fromStdString(runPickle(PK("\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19."))),
        QString("119547037146038801333356"));
    QCOMPARE(QString::fromStdString(runPickle(PK("\x80\x02\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x00\xff."))),
             QString("-18446744073709551616"));
    QCOMPARE(QString::fromStdString(runPickle(PK("\x80\x02\x8a\x08\xff\xff\xff\xff\xff\xff\xff\x7f."))),
             QString("9223372036854775807"));
}

QTEST_GUILESS_MAIN(TestUnpickler)
#include "tst_unpickler.moc"
