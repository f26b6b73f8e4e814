#include "gguf.h"

#include "torchpickle.h" // newCheckpoint()

#include "io/bytereader.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <numeric>
#include <optional>
#include <unordered_set>

namespace ckpt {
namespace {

constexpr std::uint64_t kMaxTensors = 1u << 24;
constexpr std::uint64_t kMaxKeys = 1u << 20;
constexpr std::uint64_t kMaxString = 1u << 30; // ggml's limit for strings and arrays
constexpr std::uint64_t kMaxArray = 1u << 30;
constexpr std::uint64_t kMaxKeyBytes = 65535; // the GGUF spec: a key is at most 2^16-1 bytes long
constexpr int kMaxArrayDepth = 4;           // the spec allows nested arrays, ggml rejects them; we show a few
constexpr std::size_t kArrayItemsKept = 64; // tokenizer.ggml.tokens has 150,000: the rest is only counted
// Array items kept over the whole file: a Value is ~90 bytes, a u8 item one, so without it a hostile file of
// small arrays would cost ~60 times its size in memory.
constexpr std::uint64_t kArrayItemsKeptInAll = 1u << 20;
constexpr std::uint64_t kMaxNameBytes = 63; // GGML_MAX_NAME 64, NUL included
constexpr std::uint32_t kMaxDims = 4;       // GGML_MAX_DIMS
constexpr std::uint64_t kDefaultAlignment = 32;
// Smallest encodings, to refuse counts the remaining bytes cannot hold before allocating anything.
constexpr std::uint64_t kMinKvBytes = 8 + 4 + 1;             // empty key, type, one-byte value
constexpr std::uint64_t kMinTensorInfoBytes = 8 + 4 + 4 + 8; // empty name, n_dims 0, type, offset

enum GgufType : std::uint32_t {
    U8 = 0,
    I8,
    U16,
    I16,
    U32,
    I32,
    F32,
    Bool,
    String,
    Array,
    U64,
    I64,
    F64,
    TypeCount
};

const char* ggufTypeName(std::uint32_t t) {
    static const char* names[] = {"u8",   "i8",     "u16",   "i16", "u32", "i32", "f32",
                                  "bool", "string", "array", "u64", "i64", "f64"};
    return t < TypeCount ? names[t] : "?";
}

// Bytes one element of the type takes at least (strings: their length field; arrays: type and count).
std::uint64_t minValueBytes(std::uint32_t t) {
    switch (t) {
    case U8:
    case I8:
    case Bool:
        return 1;
    case U16:
    case I16:
        return 2;
    case U32:
    case I32:
    case F32:
        return 4;
    case U64:
    case I64:
    case F64:
    case String:
        return 8;
    case Array:
        return 12;
    default:
        return 1;
    }
}

bool fixedSize(std::uint32_t t) {
    return t != String && t != Array;
}

struct GgmlType {
    std::uint32_t code;
    DType dtype;
};
// ggml.h enum ggml_type; 4, 5, 31..33 and 36..38 were removed from it.
constexpr GgmlType kGgmlTypes[] = {
    {0, DType::Float32},      {1, DType::Float16},     {2, DType::GgmlQ4_0},     {3, DType::GgmlQ4_1},
    {6, DType::GgmlQ5_0},     {7, DType::GgmlQ5_1},    {8, DType::GgmlQ8_0},     {9, DType::GgmlQ8_1},
    {10, DType::GgmlQ2_K},    {11, DType::GgmlQ3_K},   {12, DType::GgmlQ4_K},    {13, DType::GgmlQ5_K},
    {14, DType::GgmlQ6_K},    {15, DType::GgmlQ8_K},   {16, DType::GgmlIQ2_XXS}, {17, DType::GgmlIQ2_XS},
    {18, DType::GgmlIQ3_XXS}, {19, DType::GgmlIQ1_S},  {20, DType::GgmlIQ4_NL},  {21, DType::GgmlIQ3_S},
    {22, DType::GgmlIQ2_S},   {23, DType::GgmlIQ4_XS}, {24, DType::Int8},        {25, DType::Int16},
    {26, DType::Int32},       {27, DType::Int64},      {28, DType::Float64},     {29, DType::GgmlIQ1_M},
    {30, DType::BFloat16},    {34, DType::GgmlTQ1_0},  {35, DType::GgmlTQ2_0},   {39, DType::GgmlMXFP4},
    {40, DType::GgmlNVFP4},   {41, DType::GgmlQ1_0},   {42, DType::GgmlQ2_0},
};

std::optional<DType> ggmlDType(std::uint32_t code) {
    for (const auto& t : kGgmlTypes)
        if (t.code == code)
            return t.dtype;
    return std::nullopt;
}

// What a string is, for messages: `label`, then the metadata key quoted when there is one. Its text is built
// only when a message needs it: an array of a million strings would otherwise copy its key a million times.
struct StringWhat {
    std::string_view label;
    const std::string* key = nullptr;
    std::string text() const { return std::string(label) + (key ? "'" + *key + "'" : std::string()); }
};

class GgufParser {
public:
    GgufParser(Checkpoint& ck, const MappedFile& file)
        : m_ck(ck)
        , m_arena(*ck.arena)
        , m_path(file.path())
        , m_size(file.size())
        , m_r(file.bytes()) {}

    void parse();

private:
    [[noreturn]] void fail(ErrorCode code, const std::string& what, std::uint64_t at) const {
        throw Error(code, what, m_path, at);
    }
    // A string's length, checked against the bytes left and maxLen; the reader stays at its first byte.
    std::size_t stringLength(std::uint64_t maxLen, const StringWhat& what);
    std::string readString(std::uint64_t maxLen, const StringWhat& what);
    void skipString(const StringWhat& what);
    Value* readValue(std::uint32_t type, int depth, bool keep, const std::string& key);
    Value* readArray(int depth, bool keep, const std::string& key);
    Value* integer(std::uint64_t v, bool isSigned, int bytes);

    Checkpoint& m_ck;
    ValueArena& m_arena;
    const std::string& m_path;
    std::uint64_t m_size;
    ByteReader m_r;
    std::uint64_t m_keptBudget = kArrayItemsKeptInAll;
};

std::size_t GgufParser::stringLength(std::uint64_t maxLen, const StringWhat& what) {
    const std::uint64_t at = m_r.absolutePosition();
    const std::uint64_t n = m_r.u64le();
    if (n > m_r.remaining())
        fail(ErrorCode::Truncated,
             what.text() + " of " + std::to_string(n) + " bytes runs past the end of the file (" +
                 std::to_string(m_r.remaining()) + " bytes left)",
             at);
    if (n > maxLen)
        fail(ErrorCode::Limit,
             what.text() + " is " + std::to_string(n) + " bytes long; the limit is " + std::to_string(maxLen),
             at);
    return static_cast<std::size_t>(n);
}

std::string GgufParser::readString(std::uint64_t maxLen, const StringWhat& what) {
    return std::string(m_r.stringView(stringLength(maxLen, what)));
}

void GgufParser::skipString(const StringWhat& what) {
    m_r.skip(stringLength(kMaxString, what));
}

Value* GgufParser::integer(std::uint64_t v, bool isSigned, int bytes) {
    std::int64_t s;
    if (isSigned) {
        const int shift = 64 - 8 * bytes; // sign-extend the narrow types
        s = static_cast<std::int64_t>(v << shift) >> shift;
    } else if (v > static_cast<std::uint64_t>(INT64_MAX)) {
        Value* big = m_arena.make(ValueKind::BigInt);
        big->text = std::to_string(v);
        return big;
    } else {
        s = static_cast<std::int64_t>(v);
    }
    return m_arena.makeInt(s);
}

Value* GgufParser::readValue(std::uint32_t type, int depth, bool keep, const std::string& key) {
    switch (type) {
    case U8:
    case I8:
    case U16:
    case I16:
    case U32:
    case I32:
    case U64:
    case I64: {
        // Integers: width from the type, read little-endian; signed ones are sign-extended by integer().
        const int bytes = type == U8 || type == I8     ? 1
                          : type == U16 || type == I16 ? 2
                          : type == U32 || type == I32 ? 4
                                                       : 8;
        const std::uint64_t v = bytes == 1   ? m_r.u8()
                                : bytes == 2 ? m_r.u16le()
                                : bytes == 4 ? m_r.u32le()
                                             : m_r.u64le();
        const bool isSigned = type == I8 || type == I16 || type == I32 || type == I64;
        return keep ? integer(v, isSigned, bytes) : nullptr;
    }
    case F32: {
        const auto v = std::bit_cast<float>(m_r.u32le());
        if (!keep)
            return nullptr;
        Value* out = m_arena.make(ValueKind::Float);
        out->real = v;
        return out;
    }
    case F64: {
        const auto v = std::bit_cast<double>(m_r.u64le());
        if (!keep)
            return nullptr;
        Value* out = m_arena.make(ValueKind::Float);
        out->real = v;
        return out;
    }
    case Bool: {
        const auto v = m_r.u8();
        return keep ? m_arena.boolean(v != 0) : nullptr;
    }
    case String:
        if (!keep) {
            skipString({"string value of ", &key});
            return nullptr;
        }
        return m_arena.makeString(readString(kMaxString, {"string value of ", &key}));
    case Array:
        return readArray(depth + 1, keep, key);
    default:
        return nullptr; // types were checked by the caller
    }
}

Value* GgufParser::readArray(int depth, bool keep, const std::string& key) {
    const std::uint64_t at = m_r.absolutePosition();
    if (depth > kMaxArrayDepth)
        fail(ErrorCode::Limit,
             "value of '" + key + "' nests arrays deeper than " + std::to_string(kMaxArrayDepth) + " levels",
             at);
    const std::uint32_t type = m_r.u32le();
    if (type >= TypeCount)
        fail(ErrorCode::Malformed,
             "array value of '" + key + "' has unknown element type " + std::to_string(type), at);
    const std::uint64_t n = m_r.u64le();
    if (n > kMaxArray)
        fail(ErrorCode::Limit,
             "array value of '" + key + "' has " + std::to_string(n) + " items; the limit is " +
                 std::to_string(kMaxArray),
             at);
    if (n > m_r.remaining() / minValueBytes(type))
        fail(ErrorCode::Truncated,
             "array value of '" + key + "' declares " + std::to_string(n) + " " + ggufTypeName(type) +
                 " items, more than the " + std::to_string(m_r.remaining()) + " bytes left can hold",
             at);
    Value* list = keep ? m_arena.make(ValueKind::List) : nullptr;
    const std::uint64_t kept = keep ? std::min<std::uint64_t>({n, kArrayItemsKept, m_keptBudget}) : 0;
    m_keptBudget -= kept;
    if (list)
        list->items.reserve(static_cast<std::size_t>(kept) + 1);
    for (std::uint64_t i = 0; i < kept; ++i)
        list->items.push_back(readValue(type, depth, true, key));
    if (fixedSize(type)) // checked above: the rest lies inside the file
        m_r.skip(static_cast<std::size_t>((n - kept) * minValueBytes(type)));
    else
        for (std::uint64_t i = kept; i < n; ++i)
            readValue(type, depth, false, key);
    if (list && n > kept)
        list->items.push_back(m_arena.makeString("... " + std::to_string(n - kept) + " more (" +
                                                 std::to_string(n) + " items)"));
    return list;
}

struct PendingTensor {
    std::uint64_t infoOffset = 0; // where its tensor info starts in the file
    std::uint64_t offset = 0;     // relative to the data section
    std::uint64_t nbytes = 0;
    std::uint64_t begin = 0; // absolute
    bool known = false;      // type and size are known (checks that need them can run)
};

void GgufParser::parse() {
    // 1. header
    m_r.skip(4); // magic, checked by looksLikeGguf
    const std::uint32_t version = m_r.u32le();
    if (version != 0 && (version & 0xFFFF) == 0)
        fail(ErrorCode::Unsupported,
             "the GGUF version field reads " + std::to_string(version) +
                 ", which means the file was written big-endian; big-endian GGUF files are not supported",
             4);
    if (version == 1)
        fail(ErrorCode::Unsupported,
             "GGUF version 1 (32-bit counts, 2023) is not supported; only versions 2 and 3 are", 4);
    if (version < 2 || version > 3)
        fail(ErrorCode::Unsupported,
             "GGUF version " + std::to_string(version) + " is not supported; only versions 2 and 3 are", 4);
    const std::uint64_t tensorCount = m_r.u64le();
    const std::uint64_t kvCount = m_r.u64le();
    if (tensorCount > kMaxTensors)
        fail(ErrorCode::Limit,
             "tensor count " + std::to_string(tensorCount) + " exceeds the limit of " +
                 std::to_string(kMaxTensors),
             8);
    if (kvCount > kMaxKeys)
        fail(ErrorCode::Limit,
             "metadata key count " + std::to_string(kvCount) + " exceeds the limit of " +
                 std::to_string(kMaxKeys),
             16);
    if (tensorCount * kMinTensorInfoBytes + kvCount * kMinKvBytes > m_r.remaining())
        fail(ErrorCode::Truncated,
             "the header declares " + std::to_string(kvCount) + " metadata keys and " +
                 std::to_string(tensorCount) + " tensors, more than the " + std::to_string(m_r.remaining()) +
                 " bytes left can hold",
             8);

    // 2. metadata
    std::unordered_set<std::string> keys;
    std::uint64_t alignment = kDefaultAlignment;
    bool haveArchitecture = false, haveQuantVersion = false;
    std::string architecture;
    m_ck.values.reserve(static_cast<std::size_t>(kvCount));
    for (std::uint64_t i = 0; i < kvCount; ++i) {
        const std::uint64_t at = m_r.absolutePosition();
        std::string key = readString(kMaxKeyBytes, {"metadata key " + std::to_string(i)});
        if (!keys.insert(key).second)
            fail(ErrorCode::Malformed, "duplicate metadata key '" + key + "'", at);
        const std::uint64_t typeAt = m_r.absolutePosition();
        const std::uint32_t type = m_r.u32le();
        if (type >= TypeCount)
            fail(ErrorCode::Malformed,
                 "metadata key '" + key + "' has unknown value type " + std::to_string(type), typeAt);
        const std::uint64_t valueAt = m_r.absolutePosition();
        Value* v = readValue(type, 0, true, key);
        if (key == "general.alignment") {
            if (type != U32 || v->integer == 0 || (v->integer & (v->integer - 1)) != 0)
                fail(ErrorCode::Malformed,
                     "general.alignment must be a u32 power of two; it is the " +
                         std::string(ggufTypeName(type)) + " " + valueRepr(v, 40),
                     valueAt);
            alignment = static_cast<std::uint64_t>(v->integer);
        } else if (key == "general.architecture") {
            haveArchitecture = true;
            if (type == String)
                architecture = v->text;
        } else if (key == "general.quantization_version") {
            haveQuantVersion = true;
        }
        m_ck.values.push_back({std::move(key), v});
    }

    // 3. tensor infos
    std::unordered_set<std::string> names;
    std::vector<PendingTensor> pending;
    m_ck.tensors.reserve(static_cast<std::size_t>(tensorCount));
    pending.reserve(static_cast<std::size_t>(tensorCount));
    bool anyQuantized = false;
    for (std::uint64_t i = 0; i < tensorCount; ++i) {
        PendingTensor p;
        p.infoOffset = m_r.absolutePosition();
        TensorInfo t;
        t.name = readString(kMaxString, {"tensor name " + std::to_string(i)});
        if (t.name.size() > kMaxNameBytes)
            fail(ErrorCode::Limit,
                 "tensor name '" + t.name.substr(0, 80) + "' is " + std::to_string(t.name.size()) +
                     " bytes long; ggml allows at most " + std::to_string(kMaxNameBytes),
                 p.infoOffset);
        if (!names.insert(t.name).second)
            fail(ErrorCode::Malformed, "duplicate tensor name '" + t.name + "'", p.infoOffset);
        const std::uint64_t dimsAt = m_r.absolutePosition();
        const std::uint32_t nDims = m_r.u32le();
        if (nDims > kMaxDims)
            fail(ErrorCode::Limit,
                 "tensor '" + t.name + "' has " + std::to_string(nDims) +
                     " dimensions; ggml allows at most " + std::to_string(kMaxDims),
                 dimsAt);
        std::uint64_t ne[kMaxDims] = {1, 1, 1, 1};
        for (std::uint32_t d = 0; d < nDims; ++d)
            ne[d] = m_r.u64le();
        const std::uint32_t code = m_r.u32le();
        p.offset = m_r.u64le();

        // GGUF lists ne[0] first, the fastest-varying dimension (ggml's column count). PyTorch, NumPy and
        // gguf-py's reader (which reshapes with reversed ne) list the slowest first, so a llama.cpp user sees
        // token_embd.weight as [n_vocab, n_embd]: shape is ne reversed and the strides are the row-major ones
        // of that shape, which is exactly how the bytes lie. TensorReader's row-major order is then file
        // order.
        t.shape.resize(nDims);
        for (std::uint32_t d = 0; d < nDims; ++d)
            t.shape[nDims - 1 - d] = static_cast<std::int64_t>(std::min<std::uint64_t>(ne[d], INT64_MAX));
        t.strides.assign(nDims, 1);
        t.device = "cpu";
        t.dtype = DType::UInt8;

        std::string problem;
        std::uint64_t numel = 1;
        for (std::uint32_t d = 0; d < nDims && problem.empty(); ++d) {
            if (ne[d] > static_cast<std::uint64_t>(INT64_MAX))
                problem = "dimension ne[" + std::to_string(d) + "] = " + std::to_string(ne[d]) +
                          " is negative as ggml's int64";
            else if (mulOverflow(numel, ne[d], &numel) || numel > static_cast<std::uint64_t>(INT64_MAX))
                problem = "number of elements overflows (ne = " + std::to_string(ne[0]) + ", " +
                          std::to_string(ne[1]) + ", " + std::to_string(ne[2]) + ", " +
                          std::to_string(ne[3]) + ")";
        }
        if (problem.empty())
            for (std::size_t d = nDims; d-- > 1;)
                t.strides[d - 1] = t.strides[d] * t.shape[d];
        const auto dtype = ggmlDType(code);
        if (problem.empty() && !dtype)
            problem = "unknown ggml type " + std::to_string(code);
        if (dtype)
            t.dtype = *dtype;
        if (problem.empty()) {
            anyQuantized |= isBlockDType(t.dtype);
            const std::uint64_t blk = dtypeBlockSize(t.dtype);
            if (ne[0] % blk != 0)
                problem = "ne[0] = " + std::to_string(ne[0]) + " is not a multiple of the " +
                          std::string(dtypeName(t.dtype)) + " block size " + std::to_string(blk);
            else if (!dtypeNbytes(t.dtype, numel, &p.nbytes))
                problem = "byte size of " + std::to_string(numel) + " " + std::string(dtypeName(t.dtype)) +
                          " elements overflows";
            else
                p.known = true;
        }
        if (problem.empty() && p.offset % alignment != 0)
            problem = "data offset " + std::to_string(p.offset) + " is not a multiple of the alignment " +
                      std::to_string(alignment);
        t.error = problem;
        m_ck.tensors.push_back(std::move(t));
        pending.push_back(p);
    }

    // 4. data section
    std::uint64_t dataStart = m_r.absolutePosition();
    if (tensorCount > 0) {
        const std::uint64_t rem = dataStart % alignment;
        if (rem && addOverflow(dataStart, alignment - rem, &dataStart))
            fail(ErrorCode::OutOfBounds, "data section start overflows", m_r.absolutePosition());
    }
    for (std::size_t i = 0; i < pending.size(); ++i) {
        auto& p = pending[i];
        auto& t = m_ck.tensors[i];
        if (!t.error.empty())
            continue;
        std::uint64_t end = 0;
        if (addOverflow(dataStart, p.offset, &p.begin) || addOverflow(p.begin, p.nbytes, &end) ||
            end > m_size)
            t.error = "data (" + std::to_string(p.nbytes) + " bytes at data offset " +
                      std::to_string(p.offset) + ", data section at byte " + std::to_string(dataStart) +
                      ") runs past the end of the file (" + std::to_string(m_size) + " bytes)";
    }
    // No two tensors may share bytes. (ggml is stricter: offsets must be exactly the running sum of the
    // padded sizes in file order; other layouts get a warning below.)
    std::vector<std::size_t> order;
    for (std::size_t i = 0; i < pending.size(); ++i)
        if (m_ck.tensors[i].error.empty() && pending[i].nbytes > 0)
            order.push_back(i);
    std::stable_sort(order.begin(), order.end(),
                     [&](std::size_t a, std::size_t b) { return pending[a].offset < pending[b].offset; });
    std::optional<std::size_t> last; // the healthy tensor whose data ends furthest so far
    for (const std::size_t i : order) {
        if (last && pending[i].offset < pending[*last].offset + pending[*last].nbytes) {
            m_ck.tensors[i].error = "data (bytes " + std::to_string(pending[i].offset) + ".." +
                                    std::to_string(pending[i].offset + pending[i].nbytes) +
                                    " of the data section) overlaps tensor '" + m_ck.tensors[*last].name +
                                    "'";
            continue;
        }
        if (!last || pending[i].offset + pending[i].nbytes > pending[*last].offset + pending[*last].nbytes)
            last = i;
    }
    {
        std::uint64_t expected = 0;
        for (std::size_t i = 0; i < pending.size(); ++i) {
            if (!pending[i].known)
                break;
            if (pending[i].offset != expected) {
                m_ck.findings.push_back({Severity::Warning,
                                         "tensor data is not laid out as ggml writes it: offset " +
                                             std::to_string(pending[i].offset) + ", expected " +
                                             std::to_string(expected) + "; llama.cpp refuses such files",
                                         m_ck.tensors[i].name,
                                         {},
                                         pending[i].infoOffset,
                                         0});
                break;
            }
            const std::uint64_t padded = (pending[i].nbytes + alignment - 1) / alignment * alignment;
            if (padded < pending[i].nbytes || addOverflow(expected, padded, &expected))
                break;
        }
    }

    for (std::size_t i = 0; i < pending.size(); ++i) {
        auto& t = m_ck.tensors[i];
        if (!t.error.empty()) {
            m_ck.findings.push_back({Severity::Error, t.error, t.name, {}, pending[i].infoOffset, 0});
            continue;
        }
        StorageInfo s;
        s.key = t.name;
        s.device = "cpu";
        s.nbytes = pending[i].nbytes;
        s.fileOffset = pending[i].begin;
        t.storage = static_cast<int>(m_ck.storages.size());
        m_ck.storages.push_back(std::move(s));
    }

    if (!haveArchitecture)
        m_ck.findings.push_back(
            {Severity::Warning, "no general.architecture key; llama.cpp requires one", {}, {}, {}, 0});
    if (anyQuantized && !haveQuantVersion)
        m_ck.findings.push_back({Severity::Warning,
                                 "quantized tensors but no general.quantization_version key; llama.cpp "
                                 "requires one",
                                 {},
                                 {},
                                 {},
                                 0});
    m_ck.formatDetail = "GGUF version " + std::to_string(version) + ", " + std::to_string(kvCount) +
                        " metadata keys, alignment " + std::to_string(alignment) +
                        (architecture.empty() ? "" : ", architecture '" + architecture + "'");
}

} // namespace

bool looksLikeGguf(std::span<const std::uint8_t> head, std::uint64_t size) {
    return size >= 4 && head.size() >= 4 && std::memcmp(head.data(), "GGUF", 4) == 0;
}

std::shared_ptr<Checkpoint> readGguf(std::shared_ptr<const MappedFile> file) {
    auto ck = newCheckpoint(file, "gguf");
    try {
        GgufParser(*ck, *file).parse();
    } catch (const Error& e) {
        throw e.withFile(file->path());
    }
    return ck;
}

} // namespace ckpt
