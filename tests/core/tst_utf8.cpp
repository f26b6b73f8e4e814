// isValidUtf8 against nlohmann's JSON writer, which refuses to write text that is not UTF-8 (its strict
// RFC 3629 decoder is the one safetensors' headers pass through): every 1- and 2-byte string, and 3- and
// 4-byte strings over every lead and second byte (where overlong forms, surrogates and the end of Unicode are
// decided) with boundary values for the later bytes; each alone, inside ASCII text and cut short there.

#include "io/utf8.h"

#include <QTest>

#include <nlohmann/json.hpp>

#include <string>

class TestUtf8 : public QObject {
    Q_OBJECT
private Q_SLOTS:
    void agreesWithJsonWriter();
    void knownSequences();
};

namespace {

bool jsonWriterAccepts(const std::string& s) {
    try {
        (void)nlohmann::json(s).dump();
        return true;
    } catch (const nlohmann::json::type_error&) {
        return false;
    }
}

} // namespace

void TestUtf8::agreesWithJsonWriter() {
    std::size_t checked = 0, valid = 0, mismatches = 0;
    std::string first;
    auto check = [&](const std::string& s) {
        for (const std::string& t : {s, "a" + s, s + "b", "a" + s.substr(0, s.size() - 1) + "b"}) {
            const bool expected = jsonWriterAccepts(t);
            valid += expected;
            ++checked;
            if (ckpt::isValidUtf8(t) != expected && mismatches++ == 0)
                first = QByteArray::fromStdString(t).toHex(' ').toStdString();
        }
    };
    const int later[] = {0x00, 0x41, 0x7F, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0, 0xFF};
    for (int a = 0; a < 256; ++a) {
        check(std::string(1, static_cast<char>(a)));
        for (int b = 0; b < 256; ++b) {
            check({static_cast<char>(a), static_cast<char>(b)});
            if (a < 0xE0)
                continue;
            for (const int c : later) {
                check({static_cast<char>(a), static_cast<char>(b), static_cast<char>(c)});
                if (a >= 0xF0)
                    for (const int d : {0x41, 0x80, 0xBF, 0xC0})
                        check({static_cast<char>(a), static_cast<char>(b), static_cast<char>(c),
                               static_cast<char>(d)});
            }
        }
    }
    qInfo("%zu strings, %zu of them valid", checked, valid);
    QVERIFY2(mismatches == 0, (std::to_string(mismatches) + " disagreements, the first: " + first).c_str());
    QVERIFY(valid > 10'000); // the comparison saw valid text of every length, not only refusals
}

void TestUtf8::knownSequences() {
    // RFC 3629 section 10 and its table of well-formed sequences.
    QVERIFY(ckpt::isValidUtf8(""));
    QVERIFY(ckpt::isValidUtf8("conv1.weight"));
    QVERIFY(ckpt::isValidUtf8("\xE2\x84\xA2"));      // U+2122
    QVERIFY(ckpt::isValidUtf8("\xF4\x8F\xBF\xBF"));  // U+10FFFF
    QVERIFY(!ckpt::isValidUtf8("\xC0\x80"));         // overlong NUL
    QVERIFY(!ckpt::isValidUtf8("\xE0\x80\xAF"));     // overlong '/'
    QVERIFY(!ckpt::isValidUtf8("\xED\xA0\x80"));     // U+D800, a surrogate
    QVERIFY(!ckpt::isValidUtf8("\xF4\x90\x80\x80")); // U+110000
    QVERIFY(!ckpt::isValidUtf8("bad\xFFname"));
    QVERIFY(!ckpt::isValidUtf8("\xE2\x84")); // cut short
    // Cuts: never inside a character.
    QCOMPARE(ckpt::utf8Prefix("a\xC3\xA9", 2), std::string_view("a"));
    QCOMPARE(ckpt::utf8Prefix("a\xC3\xA9", 3), std::string_view("a\xC3\xA9"));
    QCOMPARE(ckpt::utf8Prefix("\xF0\x9F\x98\x80z", 3), std::string_view(""));
    QCOMPARE(ckpt::utf8Prefix("abc", 2), std::string_view("ab"));
}

QTEST_GUILESS_MAIN(TestUtf8)
#include "tst_utf8.moc"
