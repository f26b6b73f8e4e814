#pragma once

#include "formats/open.h"
#include "io/error.h"

#include <cstdint>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>

namespace testutil {

inline std::string readFile(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in)
        throw std::runtime_error("cannot read test fixture " + path);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

// Protobuf wire format, the few encodings the TensorFlow bundle protos use (written from the encoding spec).
inline std::string varint(std::uint64_t v) {
    std::string s;
    while (v >= 0x80) {
        s += static_cast<char>((v & 0x7F) | 0x80);
        v >>= 7;
    }
    s += static_cast<char>(v);
    return s;
}
inline std::string fieldVarint(int field, std::uint64_t v) {
    return varint(static_cast<std::uint64_t>(field) << 3) + varint(v);
}
inline std::string fieldBytes(int field, const std::string& b) {
    return varint((static_cast<std::uint64_t>(field) << 3) | 2) + varint(b.size()) + b;
}

inline std::string dataPath(const char* name) {
    return std::string(CKPT_TEST_DATA) + "/" + name;
}

inline void putU32(std::string& b, std::size_t at, std::uint32_t v) {
    for (int i = 0; i < 4; ++i)
        b.at(at + static_cast<std::size_t>(i)) = static_cast<char>((v >> (8 * i)) & 0xFF);
}
inline void putU64(std::string& b, std::size_t at, std::uint64_t v) {
    for (int i = 0; i < 8; ++i)
        b.at(at + static_cast<std::size_t>(i)) = static_cast<char>((v >> (8 * i)) & 0xFF);
}
inline std::uint16_t getU16(const std::string& b, std::size_t at) {
    return static_cast<std::uint16_t>(static_cast<unsigned char>(b.at(at)) |
                                      (static_cast<unsigned char>(b.at(at + 1)) << 8));
}

// Offset of the central-directory header whose name is `name`.
inline std::size_t centralEntry(const std::string& b, const std::string& name) {
    for (std::size_t pos = b.find("PK\x01\x02"); pos != std::string::npos;
         pos = b.find("PK\x01\x02", pos + 4))
        if (b.compare(pos + 46, name.size(), name) == 0 && getU16(b, pos + 28) == name.size())
            return pos;
    throw std::runtime_error("no central entry " + name);
}

inline std::string replaceAll(std::string b, const std::string& from, const std::string& to) {
    for (std::size_t pos = b.find(from); pos != std::string::npos; pos = b.find(from, pos + to.size()))
        b.replace(pos, from.size(), to);
    return b;
}

// What opening says: the error thrown, or the error findings of a checkpoint that opened; "ok" otherwise.
inline std::string openOutcome(const std::string& name, const std::string& bytes) {
    try {
        const auto ck = ckpt::openCheckpointBuffer(name, bytes);
        std::string errors;
        for (const auto& f : ck->findings)
            if (f.severity == ckpt::Severity::Error)
                errors +=
                    (errors.empty() ? "" : " | ") + (f.object.empty() ? "" : f.object + ": ") + f.message;
        return errors.empty() ? "ok" : errors;
    } catch (const ckpt::Error& e) {
        return e.what();
    }
}

} // namespace testutil
