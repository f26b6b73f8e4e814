#pragma once

// UTF-8 as RFC 3629 defines it: no overlong forms, no UTF-16 surrogates, nothing past U+10FFFF. This is what
// safetensors' JSON (nlohmann, serde_json) accepts; names that pass can be written as text to every format.

#include <cstddef>
#include <string_view>

namespace ckpt {

inline bool isValidUtf8(std::string_view s) {
    auto byte = [&s](std::size_t i) { return static_cast<unsigned char>(s[i]); };
    std::size_t i = 0;
    while (i < s.size()) {
        const unsigned char c = byte(i);
        if (c < 0x80) {
            ++i;
            continue;
        }
        std::size_t n = 0;                  // continuation bytes
        unsigned char lo = 0x80, hi = 0xBF; // range of the first continuation byte
        if (c >= 0xC2 && c <= 0xDF) {
            n = 1;
        } else if (c >= 0xE0 && c <= 0xEF) {
            n = 2;
            if (c == 0xE0)
                lo = 0xA0; // overlong below U+0800
            else if (c == 0xED)
                hi = 0x9F; // surrogates U+D800..U+DFFF
        } else if (c >= 0xF0 && c <= 0xF4) {
            n = 3;
            if (c == 0xF0)
                lo = 0x90; // overlong below U+10000
            else if (c == 0xF4)
                hi = 0x8F; // past U+10FFFF
        } else {
            return false; // a continuation byte, C0/C1 (overlong ASCII), F5..FF
        }
        if (s.size() - i <= n)
            return false;
        if (byte(i + 1) < lo || byte(i + 1) > hi)
            return false;
        for (std::size_t k = 2; k <= n; ++k)
            if ((byte(i + k) & 0xC0) != 0x80)
                return false;
        i += n + 1;
    }
    return true;
}

// The longest prefix of `s` of at most `maxLen` bytes that does not end inside a multi-byte character, so
// that cutting valid UTF-8 keeps it valid.
inline std::string_view utf8Prefix(std::string_view s, std::size_t maxLen) {
    if (s.size() <= maxLen)
        return s;
    std::size_t cut = maxLen;
    while (cut > 0 && (static_cast<unsigned char>(s[cut]) & 0xC0) == 0x80)
        --cut;
    return s.substr(0, cut);
}

} // namespace ckpt
