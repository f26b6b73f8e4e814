#include "error.h"

namespace ckpt {

const char* errorCodeName(ErrorCode code) {
    switch (code) {
    case ErrorCode::Io:
        return "io";
    case ErrorCode::Truncated:
        return "truncated";
    case ErrorCode::BadMagic:
        return "bad-magic";
    case ErrorCode::Unsupported:
        return "unsupported";
    case ErrorCode::Malformed:
        return "malformed";
    case ErrorCode::Limit:
        return "limit";
    case ErrorCode::OutOfBounds:
        return "out-of-bounds";
    case ErrorCode::NotFound:
        return "not-found";
    case ErrorCode::Changed:
        return "changed";
    case ErrorCode::Cancelled:
        return "cancelled";
    }
    return "unknown";
}

Error::Error(ErrorCode code, std::string message, std::string file, std::optional<std::uint64_t> offset,
             std::string object)
    : std::runtime_error(format(message, file, offset, object))
    , m_code(code)
    , m_message(std::move(message))
    , m_file(std::move(file))
    , m_offset(offset)
    , m_object(std::move(object)) {}

Error Error::withFile(const std::string& file) const {
    if (!m_file.empty())
        return *this;
    return Error(m_code, m_message, file, m_offset, m_object);
}

std::string Error::format(const std::string& message, const std::string& file,
                          std::optional<std::uint64_t> offset, const std::string& object) {
    std::string out;
    if (!file.empty())
        out += file + ": ";
    if (offset)
        out += "at byte " + std::to_string(*offset) + ": ";
    if (!object.empty())
        out += object + ": ";
    out += message;
    return out;
}

} // namespace ckpt
