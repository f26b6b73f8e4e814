#pragma once

// JSON text read from files: its nesting, measured before a parser sees it (nlohmann's parser keeps a stack
// of its own, but destroying, copying and dumping a value recurse once per level), and the parser's messages
// made fit to show.

#include "utf8.h"

#include <cstddef>
#include <optional>
#include <string>
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

// The text of an nlohmann exception without its "[json.exception.parse_error.101] " prefix, cut to at most
// `limit` bytes (at a UTF-8 character boundary) and marked "...": the messages quote the offending token,
// which in a hostile file can be a number or literal megabytes long.
inline std::string jsonErrorText(std::string_view what, std::size_t limit = 200) {
    if (const auto p = what.find("] "); what.starts_with("[json.exception") && p != std::string_view::npos)
        what.remove_prefix(p + 2);
    if (what.size() <= limit)
        return std::string(what);
    return std::string(utf8Prefix(what, limit)) + "...";
}

} // namespace ckpt
