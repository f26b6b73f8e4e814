#pragma once

// Nesting of JSON text, measured before a parser sees it: nlohmann's parser keeps a stack of its own, but
// destroying, copying and dumping a value recurse once per level.

#include <cstddef>
#include <optional>
#include <string_view>

namespace ckpt {

// Offset of the first '[' or '{' (outside strings) that opens level `limit` + 1; none when the text stays
// within `limit` levels.
inline std::optional<std::size_t> jsonTooDeep(std::string_view s, int limit) {
    int depth = 0;
    bool inString = false, escaped = false;
    for (std::size_t i = 0; i < s.size(); ++i) {
        const char c = s[i];
        if (inString) {
            if (escaped)
                escaped = false;
            else if (c == '\\')
                escaped = true;
            else if (c == '"')
                inString = false;
            continue;
        }
        if (c == '"') {
            inString = true;
        } else if (c == '[' || c == '{') {
            if (++depth > limit)
                return i;
        } else if (c == ']' || c == '}') {
            --depth;
        }
    }
    return std::nullopt;
}

} // namespace ckpt
