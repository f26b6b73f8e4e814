#pragma once

#include "error.h"

#include <bit>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <string_view>

namespace ckpt {

// Sequential reads over a bounded span. Every read checks the bytes left first and throws
// Error(Truncated) naming the absolute byte offset in the file; nothing reads past the end.
class ByteReader {
public:
    // `base` is the absolute file offset of data[0], used only for messages.
    ByteReader(std::span<const std::uint8_t> data, std::uint64_t base = 0, std::string context = {})
        : m_data(data)
        , m_base(base)
        , m_context(std::move(context)) {}

    std::size_t size() const noexcept { return m_data.size(); }
    std::size_t position() const noexcept { return m_pos; }
    std::size_t remaining() const noexcept { return m_data.size() - m_pos; }
    bool atEnd() const noexcept { return m_pos >= m_data.size(); }
    std::uint64_t absolutePosition() const noexcept { return m_base + m_pos; }
    const std::string& context() const noexcept { return m_context; }

    void seek(std::size_t pos) {
        if (pos > m_data.size())
            fail(ErrorCode::OutOfBounds, "offset " + std::to_string(pos) + " is past the end (" +
                                             std::to_string(m_data.size()) + " bytes)");
        m_pos = pos;
    }
    void skip(std::size_t n) { take(n); }

    std::uint8_t u8() { return *take(1); }
    std::uint16_t u16le() { return load<std::uint16_t>(); }
    std::uint32_t u32le() { return load<std::uint32_t>(); }
    std::uint64_t u64le() { return load<std::uint64_t>(); }
    std::int32_t i32le() { return static_cast<std::int32_t>(load<std::uint32_t>()); }
    std::int64_t i64le() { return static_cast<std::int64_t>(load<std::uint64_t>()); }
    double f64be() {
        std::uint64_t v = 0;
        const std::uint8_t* p = take(8);
        for (int i = 0; i < 8; ++i)
            v = (v << 8) | p[i];
        return std::bit_cast<double>(v);
    }

    std::span<const std::uint8_t> bytes(std::size_t n) { return {take(n), n}; }
    std::string_view stringView(std::size_t n) {
        const std::uint8_t* p = take(n);
        return {reinterpret_cast<const char*>(p), n};
    }
    // Up to and excluding '\n', which is consumed; at most `maxLen` bytes.
    std::string_view line(std::size_t maxLen) {
        const std::size_t limit = std::min(remaining(), maxLen + 1);
        const auto* start = m_data.data() + m_pos;
        const void* nl = std::memchr(start, '\n', limit);
        if (!nl) {
            if (limit == remaining())
                fail(ErrorCode::Truncated, "text line runs past the end of the data");
            fail(ErrorCode::Limit, "text line longer than " + std::to_string(maxLen) + " bytes");
        }
        const std::size_t n = static_cast<const std::uint8_t*>(nl) - start;
        m_pos += n + 1;
        return {reinterpret_cast<const char*>(start), n};
    }

    [[noreturn]] void fail(ErrorCode code, const std::string& what) const {
        throw Error(code, m_context.empty() ? what : m_context + ": " + what, {}, absolutePosition());
    }

private:
    const std::uint8_t* take(std::size_t n) {
        if (n > remaining())
            fail(ErrorCode::Truncated, "needs " + std::to_string(n) + " bytes but only " +
                                           std::to_string(remaining()) + " are left");
        const std::uint8_t* p = m_data.data() + m_pos;
        m_pos += n;
        return p;
    }
    template <typename T> T load() {
        T v;
        std::memcpy(&v, take(sizeof(T)), sizeof(T));
        if constexpr (std::endian::native == std::endian::big) {
            if constexpr (sizeof(T) == 2)
                v = __builtin_bswap16(v);
            else if constexpr (sizeof(T) == 4)
                v = __builtin_bswap32(v);
            else
                v = __builtin_bswap64(v);
        }
        return v;
    }

    std::span<const std::uint8_t> m_data;
    std::size_t m_pos = 0;
    std::uint64_t m_base = 0;
    std::string m_context;
};

// Overflow-checked arithmetic for sizes computed from untrusted numbers.
inline bool mulOverflow(std::uint64_t a, std::uint64_t b, std::uint64_t* out) {
    return __builtin_mul_overflow(a, b, out);
}
inline bool addOverflow(std::uint64_t a, std::uint64_t b, std::uint64_t* out) {
    return __builtin_add_overflow(a, b, out);
}

} // namespace ckpt
