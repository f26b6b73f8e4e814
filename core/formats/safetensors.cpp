#include "safetensors.h"

#include "torchpickle.h"

#include "io/bytereader.h"
#include "io/jsontext.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <limits>
#include <set>
#include <string_view>
#include <vector>

namespace ckpt {
namespace {

constexpr std::uint64_t kMaxHeaderSize = 100'000'000; // the Rust crate's MAX_HEADER_SIZE
constexpr std::size_t kMaxDims = 64;
constexpr int kMaxDepth = 64;

// A std::map-backed object: ordered_json inserts by linear search, quadratic in the number of tensors
// (100,000 tensors took over a minute). The header's own order is kept in a list of its top-level keys
// instead.
using Json = nlohmann::json;

// SAX handler of the first pass: duplicate keys (the first one found, and the depth of its object) and the
// top-level keys in the header's order, and the first error: a syntax error, or a number out of range (an
// exception of another type, which nlohmann's DOM parser would throw past a handler of parse errors).
struct KeyWatcher : nlohmann::json_sax<Json> {
    std::vector<std::set<std::string, std::less<>>> objects;
    std::vector<std::string> topLevelKeys;
    std::string duplicate;
    int duplicateDepth = 0;
    std::optional<std::size_t> errorPosition; // bytes read when it stopped
    std::string error;

    bool null() override { return true; }
    bool boolean(bool) override { return true; }
    bool number_integer(number_integer_t) override { return true; }
    bool number_unsigned(number_unsigned_t) override { return true; }
    bool number_float(number_float_t, const string_t&) override { return true; }
    bool string(string_t&) override { return true; }
    bool binary(binary_t&) override { return true; }
    bool start_object(std::size_t) override {
        objects.emplace_back();
        return true;
    }
    bool end_object() override {
        objects.pop_back();
        return true;
    }
    bool start_array(std::size_t) override { return true; }
    bool end_array() override { return true; }
    bool key(string_t& k) override {
        if (objects.size() == 1)
            topLevelKeys.push_back(k);
        if (!objects.back().insert(k).second && duplicate.empty()) {
            duplicate = k;
            duplicateDepth = static_cast<int>(objects.size());
        }
        return true;
    }
    bool parse_error(std::size_t position, const std::string&,
                     const nlohmann::detail::exception& e) override {
        errorPosition = position;
        error = jsonErrorText(e.what());
        return false;
    }
};

struct StDType {
    std::string_view name;
    DType dtype;
    unsigned bits;
    bool readable; // sub-byte formats have no packing order in the spec: listed, not read
};

constexpr StDType kDTypes[] = {
    {"BOOL", DType::Bool, 8, true},
    {"U8", DType::UInt8, 8, true},
    {"I8", DType::Int8, 8, true},
    {"F8_E5M2", DType::Float8_e5m2, 8, true},
    {"F8_E4M3", DType::Float8_e4m3fn, 8, true},
    {"F8_E8M0", DType::Float8_e8m0fnu, 8, true},
    {"F8_E4M3FNUZ", DType::Float8_e4m3fnuz, 8, true},
    {"F8_E5M2FNUZ", DType::Float8_e5m2fnuz, 8, true},
    {"I16", DType::Int16, 16, true},
    {"U16", DType::UInt16, 16, true},
    {"F16", DType::Float16, 16, true},
    {"BF16", DType::BFloat16, 16, true},
    {"I32", DType::Int32, 32, true},
    {"U32", DType::UInt32, 32, true},
    {"F32", DType::Float32, 32, true},
    {"C64", DType::Complex64, 64, true},
    {"F64", DType::Float64, 64, true},
    {"I64", DType::Int64, 64, true},
    {"U64", DType::UInt64, 64, true},
    {"F4", DType::Float4_e2m1fn_x2, 4, false},
    {"F6_E2M3", DType::Bits8, 6, false},
    {"F6_E3M2", DType::Bits8, 6, false},
};

const StDType* findDType(std::string_view s) {
    for (const auto& d : kDTypes)
        if (d.name == s)
            return &d;
    return nullptr;
}

bool isJsonSpace(std::uint8_t c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

std::string shapeText(const std::vector<std::int64_t>& shape) {
    std::string s = "[";
    for (std::size_t i = 0; i < shape.size(); ++i)
        s += (i ? ", " : "") + std::to_string(shape[i]);
    return s + "]";
}

struct Entry {
    std::string name;
    const StDType* dtype = nullptr;
    std::string dtypeText;
    std::vector<std::int64_t> shape;
    std::uint64_t begin = 0, end = 0;
    std::string error;
    ErrorCode code = ErrorCode::Malformed;
};

} // namespace

bool looksLikeSafetensors(std::span<const std::uint8_t> head, std::uint64_t size) {
    if (head.size() < 10 || size < 10)
        return false;
    std::uint64_t n = 0;
    for (int i = 7; i >= 0; --i)
        n = (n << 8) | head[static_cast<std::size_t>(i)];
    if (n < 2)
        return false;
    // A pickle whose 9th byte happens to be '{': only claim it when the header length fits.
    const bool fits = n <= size - 8;
    if (!fits && head[0] == 0x80 && head[1] >= 2 && head[1] <= 5)
        return false;
    std::size_t i = 8;
    const std::size_t limit = std::min<std::size_t>(head.size(), 8 + 64);
    while (i < limit && isJsonSpace(head[i]))
        ++i;
    return i < head.size() && head[i] == '{';
}

std::shared_ptr<Checkpoint> readSafetensors(std::shared_ptr<const MappedFile> file) {
    const std::string path = file->path();
    const std::uint64_t size = file->size();
    auto ck = newCheckpoint(file, "safetensors");
    ByteReader r(file->bytes(), 0, {});
    if (size < 8)
        throw Error(ErrorCode::Truncated,
                    "header too small: a safetensors file starts with an 8-byte header "
                    "length, the file has " +
                        std::to_string(size) + " bytes",
                    path, 0);
    const std::uint64_t n = r.u64le();
    if (n > kMaxHeaderSize)
        throw Error(ErrorCode::Limit,
                    "header too large: header length " + std::to_string(n) + " exceeds the limit of " +
                        std::to_string(kMaxHeaderSize) + " bytes",
                    path, 0);
    if (n > size - 8)
        throw Error(ErrorCode::Truncated,
                    "invalid header length: header of " + std::to_string(n) +
                        " bytes runs past the end of the " + std::to_string(size) + "-byte file",
                    path, 0);
    const std::string_view text = r.stringView(static_cast<std::size_t>(n));
    const std::uint64_t dataStart = 8 + n;

    if (jsonTooDeep(text, kMaxDepth))
        throw Error(ErrorCode::Limit,
                    "invalid JSON in header: nested deeper than " + std::to_string(kMaxDepth), path, 8);

    // nlohmann keeps the last of duplicate keys silently and the format forbids duplicates: a first SAX pass
    // watches for them and records the header's order (its callback parser would be quadratic in the number
    // of keys, since it scans the parent object at every object's end).
    KeyWatcher watcher;
    Json::sax_parse(text.begin(), text.end(), &watcher);
    const std::vector<std::string>& topLevelKeys = watcher.topLevelKeys;
    const std::string& duplicate = watcher.duplicate;
    const int duplicateDepth = watcher.duplicateDepth;
    if (watcher.errorPosition) {
        const std::size_t read = *watcher.errorPosition;
        const std::uint64_t at = read > 0 ? 8 + std::min<std::uint64_t>(read - 1, n) : 8;
        const std::string& what = watcher.error;
        const bool utf8 = what.find("UTF-8") != std::string::npos || what.find("utf-8") != std::string::npos;
        throw Error(ErrorCode::Malformed,
                    std::string(utf8 ? "invalid UTF-8 in header: " : "invalid JSON in header: ") + what, path,
                    at);
    }
    // The same text the watcher read to its end: no syntax or range error is left for this parse to find.
    const Json header = Json::parse(text.begin(), text.end());
    if (!duplicate.empty())
        throw Error(ErrorCode::Malformed,
                    "invalid JSON in header: key '" + duplicate + "' appears twice" +
                        (duplicateDepth > 1 ? " in a nested object" : ""),
                    path, 8, duplicateDepth > 1 ? std::string{} : duplicate);
    if (!header.is_object())
        throw Error(ErrorCode::Malformed, "invalid JSON in header: the header is not a JSON object", path, 8);

    std::vector<Entry> entries;
    entries.reserve(header.size());
    for (const std::string& name : topLevelKeys) {
        const Json& spec = header.at(name);
        if (name == "__metadata__") {
            if (!spec.is_object())
                throw Error(ErrorCode::Malformed,
                            "invalid JSON in header: __metadata__ must be an object of strings", path, 8);
            for (const auto& [key, value] : spec.items()) {
                if (!value.is_string())
                    throw Error(ErrorCode::Malformed,
                                "invalid JSON in header: __metadata__ value '" + key + "' is not a string",
                                path, 8);
                ck->values.push_back(
                    {"__metadata__." + key, ck->arena->makeString(value.get_ref<const std::string&>())});
            }
            continue;
        }
        auto bad = [&](const std::string& what) {
            throw Error(ErrorCode::Malformed, "invalid JSON in header: tensor '" + name + "': " + what, path,
                        8, name);
        };
        if (!spec.is_object())
            bad("entry is not an object");
        Entry e;
        e.name = name;
        const auto dt = spec.find("dtype");
        const auto sh = spec.find("shape");
        const auto off = spec.find("data_offsets");
        if (dt == spec.end() || !dt->is_string())
            bad("missing or non-string \"dtype\"");
        if (sh == spec.end() || !sh->is_array())
            bad("missing or non-array \"shape\"");
        if (off == spec.end() || !off->is_array() || off->size() != 2)
            bad("\"data_offsets\" must be an array of two integers");
        if (sh->size() > kMaxDims)
            throw Error(ErrorCode::Limit,
                        "tensor '" + name + "' has " + std::to_string(sh->size()) + " dimensions (limit " +
                            std::to_string(kMaxDims) + ")",
                        path, 8, name);
        for (const auto& d : *sh) {
            if (!d.is_number_unsigned() ||
                d.get<std::uint64_t>() > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()))
                bad("shape " + sh->dump() + " must hold non-negative integers");
            e.shape.push_back(static_cast<std::int64_t>(d.get<std::uint64_t>()));
        }
        for (const auto& o : *off)
            if (!o.is_number_unsigned())
                bad("data_offsets " + off->dump() + " must hold non-negative integers");
        e.begin = (*off)[0].get<std::uint64_t>();
        e.end = (*off)[1].get<std::uint64_t>();
        e.dtypeText = dt->get<std::string>();
        e.dtype = findDType(e.dtypeText);
        if (!e.dtype) {
            e.error = "unknown dtype '" + e.dtypeText + "' for tensor `" + name + "`";
            e.code = ErrorCode::Unsupported;
        }
        entries.push_back(std::move(e));
    }

    // Sorted by data, the tensors must tile the buffer from 0.
    std::stable_sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
        return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
    });
    std::uint64_t expected = 0;
    const std::uint64_t bufferSize = size - dataStart;
    for (auto& e : entries) {
        auto setError = [&](std::string msg) {
            if (e.error.empty())
                e.error = std::move(msg);
        };
        if (e.end < e.begin)
            setError("invalid offset for tensor `" + e.name + "`: data_offsets [" + std::to_string(e.begin) +
                     ", " + std::to_string(e.end) + "] end before they begin");
        else if (e.begin > expected)
            setError("invalid offset for tensor `" + e.name + "`: data begins at byte " +
                     std::to_string(e.begin) + " of the data buffer, leaving a hole of " +
                     std::to_string(e.begin - expected) + " bytes after byte " + std::to_string(expected));
        else if (e.begin < expected)
            setError("invalid offset for tensor `" + e.name + "`: data [" + std::to_string(e.begin) + ", " +
                     std::to_string(e.end) + ") overlaps the previous tensor, which ends at byte " +
                     std::to_string(expected));
        if (e.end >= e.begin)
            expected = std::max(expected, e.end);
        if (e.end > bufferSize)
            setError("tensor `" + e.name + "`: data [" + std::to_string(e.begin) + ", " +
                     std::to_string(e.end) +
                     ") of the data buffer runs past the end of the file (the buffer holds " +
                     std::to_string(bufferSize) + " bytes)");
        if (e.dtype && e.error.empty()) {
            std::uint64_t numel = 1, bits = 0;
            bool overflow = false;
            for (const auto d : e.shape)
                overflow |= mulOverflow(numel, static_cast<std::uint64_t>(d), &numel);
            overflow |= mulOverflow(numel, e.dtype->bits, &bits);
            if (overflow)
                setError("tensor `" + e.name + "`: shape " + shapeText(e.shape) + " of " + e.dtypeText +
                         " overflows 64-bit byte counts");
            else if (bits % 8)
                setError("tensor `" + e.name + "`: shape " + shapeText(e.shape) + " of " + e.dtypeText +
                         " does not fill a whole number of bytes (" + std::to_string(bits) + " bits)");
            else if (e.end - e.begin != bits / 8)
                setError("invalid shape, data type, or offset for tensor `" + e.name + "`: shape " +
                         shapeText(e.shape) + " of " + e.dtypeText + " needs " + std::to_string(bits / 8) +
                         " bytes but data_offsets [" + std::to_string(e.begin) + ", " +
                         std::to_string(e.end) + "] give " + std::to_string(e.end - e.begin));
        }
    }
    if (expected < bufferSize)
        ck->findings.push_back(
            {Severity::Warning,
             "incomplete metadata, file not fully covered: " + std::to_string(bufferSize - expected) +
                 " bytes after the last tensor, which the safetensors library refuses",
             {},
             {},
             dataStart + expected,
             0});

    ck->tensors.reserve(entries.size());
    ck->storages.reserve(entries.size());
    for (auto& e : entries) {
        TensorInfo t;
        t.name = e.name;
        t.dtype = e.dtype ? e.dtype->dtype : DType::UInt8;
        t.shape = e.shape;
        t.strides.assign(e.shape.size(), 1);
        for (std::size_t i = e.shape.size(); i-- > 1;)
            if (__builtin_mul_overflow(t.strides[i], std::max<std::int64_t>(e.shape[i], 1),
                                       &t.strides[i - 1]) &&
                e.error.empty())
                e.error = "tensor `" + e.name + "`: shape " + shapeText(e.shape) +
                          " is too large for 64-bit strides";
        t.device = "cpu";
        if (e.error.empty() && e.dtype && !e.dtype->readable)
            t.error = "values of " + e.dtypeText +
                      " tensors are not shown: the format does not specify how "
                      "sub-byte elements are packed";
        if (!e.error.empty()) {
            t.error = e.error;
            ck->findings.push_back(
                {Severity::Error,
                 e.error,
                 e.name,
                 {},
                 e.begin <= bufferSize ? std::optional<std::uint64_t>(dataStart + e.begin) : std::nullopt,
                 0});
        } else if (t.error.empty()) {
            StorageInfo s;
            s.key = e.name;
            s.device = "cpu";
            s.dtype = t.dtype;
            s.nbytes = e.end - e.begin;
            s.fileOffset = dataStart + e.begin;
            t.storage = static_cast<int>(ck->storages.size());
            ck->storages.push_back(std::move(s));
        }
        ck->tensors.push_back(std::move(t));
    }
    ck->formatDetail =
        "safetensors, " + std::to_string(n) + "-byte JSON header, " + std::to_string(entries.size()) +
        " tensors" +
        (ck->values.empty() ? "" : ", " + std::to_string(ck->values.size()) + " metadata entries");
    return ck;
}

} // namespace ckpt
