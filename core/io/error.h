#pragma once

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>

namespace ckpt {

// One kind per failure, so callers and tests can tell them apart without matching on text.
enum class ErrorCode {
    Io,          // the operating system refused (open, stat, mmap)
    Truncated,   // the file ends before a structure it declares
    BadMagic,    // not a file of this format
    Unsupported, // a valid file using a feature this reader does not handle
    Malformed,   // a structure violates its format's rules
    Limit,       // a declared count, length or depth beyond the reader's caps
    OutOfBounds, // an offset or size that points outside the file or its record
    NotFound,    // a name the caller asked for does not exist
    Changed,     // the file changed on disk while it was open
    Cancelled,   // the caller's progress callback asked to stop
};

const char* errorCodeName(ErrorCode code);

// Message, plus where: the file, the byte offset in it, and the tensor or record concerned.
class Error : public std::runtime_error {
public:
    Error(ErrorCode code, std::string message, std::string file = {},
          std::optional<std::uint64_t> offset = {}, std::string object = {});

    ErrorCode code() const noexcept { return m_code; }
    const std::string& message() const noexcept { return m_message; }
    const std::string& file() const noexcept { return m_file; }
    std::optional<std::uint64_t> offset() const noexcept { return m_offset; }
    const std::string& object() const noexcept { return m_object; }

    // Fill in the file where an inner layer did not know it.
    Error withFile(const std::string& file) const;

private:
    static std::string format(const std::string& message, const std::string& file,
                              std::optional<std::uint64_t> offset, const std::string& object);

    ErrorCode m_code;
    std::string m_message;
    std::string m_file;
    std::optional<std::uint64_t> m_offset;
    std::string m_object;
};

} // namespace ckpt
