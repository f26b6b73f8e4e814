#include "numpy.h"

#include "torchpickle.h"

#include "io/bytereader.h"
#include "io/zipreader.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <string_view>
#include <vector>

#include <zlib.h>

namespace ckpt {
namespace {

constexpr std::uint8_t kMagic[] = {0x93, 'N', 'U', 'M', 'P', 'Y'};
constexpr std::uint32_t kMaxHeader = 1u << 20;
constexpr std::size_t kMaxDims = 64;
constexpr int kMaxDepth = 16;
constexpr std::size_t kMaxItems = 4096;
constexpr std::uint64_t kMaxInflated = 64ull << 30;

// The few Python literals an npy header holds.
struct PyVal {
    enum class Kind { None, Bool, Int, Str, Tuple, List, Dict } kind = Kind::None;
    bool b = false;
    bool negative = false;
    std::uint64_t i = 0;
    std::string s;
    std::vector<PyVal> items;      // Tuple, List
    std::vector<std::string> keys; // Dict with string keys; values in `items`
};

class LiteralParser {
public:
    LiteralParser(std::string_view text, std::uint64_t base, const std::string& path)
        : m_t(text)
        , m_base(base)
        , m_path(path) {}

    PyVal parseAll() {
        PyVal v = value(0);
        space();
        if (m_p != m_t.size())
            fail("unexpected text after the header dictionary");
        return v;
    }

private:
    [[noreturn]] void fail(const std::string& what) const {
        throw Error(ErrorCode::Malformed, "npy header: " + what, m_path, m_base + m_p);
    }
    void space() {
        while (m_p < m_t.size() &&
               (m_t[m_p] == ' ' || m_t[m_p] == '\n' || m_t[m_p] == '\t' || m_t[m_p] == '\r'))
            ++m_p;
    }
    bool eat(char c) {
        space();
        if (m_p < m_t.size() && m_t[m_p] == c) {
            ++m_p;
            return true;
        }
        return false;
    }
    bool word(std::string_view w) {
        if (m_t.substr(m_p, w.size()) == w) {
            m_p += w.size();
            return true;
        }
        return false;
    }
    // Items up to `close`, Python style: trailing comma allowed; a 1-tuple needs its comma.
    void sequence(PyVal& v, char close, int depth) {
        while (true) {
            if (eat(close))
                return;
            if (v.items.size() >= kMaxItems)
                fail("more than " + std::to_string(kMaxItems) + " items");
            v.items.push_back(value(depth + 1));
            if (eat(close))
                return;
            if (!eat(','))
                fail(std::string("expected ',' or '") + close + "'");
        }
    }
    PyVal value(int depth) {
        if (depth > kMaxDepth)
            fail("nested deeper than " + std::to_string(kMaxDepth));
        space();
        if (m_p >= m_t.size())
            fail("ends in the middle of a value");
        PyVal v;
        const char c = m_t[m_p];
        if (c == '{') {
            ++m_p;
            v.kind = PyVal::Kind::Dict;
            while (true) {
                if (eat('}'))
                    break;
                if (v.keys.size() >= kMaxItems)
                    fail("more than " + std::to_string(kMaxItems) + " items");
                const std::size_t at = m_p;
                PyVal key = value(depth + 1);
                if (key.kind != PyVal::Kind::Str)
                    fail("dictionary key is not a string");
                for (const auto& k : v.keys)
                    if (k == key.s) {
                        m_p = at;
                        fail("key '" + key.s + "' appears twice");
                    }
                if (!eat(':'))
                    fail("expected ':'");
                v.keys.push_back(std::move(key.s));
                v.items.push_back(value(depth + 1));
                if (eat('}'))
                    break;
                if (!eat(','))
                    fail("expected ',' or '}'");
            }
        } else if (c == '(' || c == '[') {
            ++m_p;
            v.kind = c == '(' ? PyVal::Kind::Tuple : PyVal::Kind::List;
            sequence(v, c == '(' ? ')' : ']', depth);
        } else if (c == '\'' || c == '"') {
            ++m_p;
            v.kind = PyVal::Kind::Str;
            while (true) {
                if (m_p >= m_t.size())
                    fail("unterminated string");
                const char d = m_t[m_p++];
                if (d == c)
                    break;
                if (d == '\\') {
                    if (m_p >= m_t.size())
                        fail("unterminated string");
                    v.s += m_t[m_p++];
                } else {
                    v.s += d;
                }
            }
        } else if (word("True")) {
            v.kind = PyVal::Kind::Bool;
            v.b = true;
        } else if (word("False")) {
            v.kind = PyVal::Kind::Bool;
        } else if (word("None")) {
            v.kind = PyVal::Kind::None;
        } else if (c == '-' || (c >= '0' && c <= '9')) {
            v.kind = PyVal::Kind::Int;
            if (c == '-') {
                v.negative = true;
                ++m_p;
            }
            const std::size_t start = m_p;
            while (m_p < m_t.size() && m_t[m_p] >= '0' && m_t[m_p] <= '9') {
                if (mulOverflow(v.i, 10, &v.i) ||
                    addOverflow(v.i, static_cast<unsigned>(m_t[m_p] - '0'), &v.i))
                    fail("integer too large");
                ++m_p;
            }
            if (m_p == start)
                fail("expected a digit");
            if (m_p < m_t.size() && m_t[m_p] == 'L') // Python 2 long literals, as old numpy wrote them
                ++m_p;
        } else {
            fail(std::string("unexpected character '") + (c >= 0x20 && c < 0x7f ? std::string(1, c) : "?") +
                 "'");
        }
        return v;
    }

    std::string_view m_t;
    std::size_t m_p = 0;
    std::uint64_t m_base;
    const std::string& m_path;
};

struct NpyArray {
    DType dtype = DType::UInt8;
    bool bigEndian = false;
    bool fortran = false;
    std::vector<std::int64_t> shape;
    std::uint64_t dataOffset = 0; // relative to the array's first byte
    std::uint64_t nbytes = 0;
    std::string descr;
    std::string problem; // why the data cannot be read (unsupported dtype, truncated data)
    std::string version;
};

// The array in `bytes`, whose first byte is at absolute offset `base` of `path`: a whole .npy, or (with
// `total`, the length of the whole .npy) a prefix of it that holds at least the header.
NpyArray parseNpy(std::span<const std::uint8_t> bytes, std::uint64_t base, const std::string& path,
                  std::optional<std::uint64_t> total = {}) {
    ByteReader r(bytes, base, {});
    try {
        if (bytes.size() < 6 || std::memcmp(bytes.data(), kMagic, sizeof kMagic) != 0)
            throw Error(ErrorCode::BadMagic, "not an npy array: it does not start with \"\\x93NUMPY\"", path,
                        base);
        r.skip(6);
        const unsigned major = r.u8(), minor = r.u8();
        NpyArray a;
        a.version = std::to_string(major) + "." + std::to_string(minor);
        if (minor != 0 || major < 1 || major > 3)
            throw Error(ErrorCode::Unsupported,
                        "unsupported npy format version " + a.version + " (known: 1.0, 2.0, 3.0)", path,
                        base + 6);
        const std::uint64_t hlenAt = r.absolutePosition();
        const std::uint32_t hlen = major == 1 ? r.u16le() : r.u32le();
        if (hlen > kMaxHeader)
            throw Error(ErrorCode::Limit,
                        "npy header of " + std::to_string(hlen) + " bytes exceeds the limit of " +
                            std::to_string(kMaxHeader),
                        path, hlenAt);
        if (hlen > r.remaining())
            throw Error(ErrorCode::Truncated,
                        "npy header of " + std::to_string(hlen) + " bytes runs past the end (" +
                            std::to_string(r.remaining()) + " bytes left)",
                        path, hlenAt);
        const std::uint64_t textAt = r.absolutePosition();
        const std::string_view text = r.stringView(hlen);
        a.dataOffset = r.position();
        const PyVal h = LiteralParser(text, textAt, path).parseAll();
        if (h.kind != PyVal::Kind::Dict)
            throw Error(ErrorCode::Malformed, "npy header is not a dictionary", path, textAt);
        const PyVal *descr = nullptr, *fortran = nullptr, *shape = nullptr;
        for (std::size_t ki = 0; ki < h.keys.size(); ++ki) {
            const std::string& k = h.keys[ki];
            const PyVal& v = h.items[ki];
            if (k == "descr")
                descr = &v;
            else if (k == "fortran_order")
                fortran = &v;
            else if (k == "shape")
                shape = &v;
            else
                throw Error(ErrorCode::Malformed, "npy header has the unexpected key '" + k + "'", path,
                            textAt);
        }
        if (!descr || !fortran || !shape)
            throw Error(ErrorCode::Malformed,
                        std::string("npy header lacks the key '") +
                            (!descr     ? "descr"
                             : !fortran ? "fortran_order"
                                        : "shape") +
                            "'",
                        path, textAt);
        if (fortran->kind != PyVal::Kind::Bool)
            throw Error(ErrorCode::Malformed, "npy header: fortran_order is not True or False", path, textAt);
        a.fortran = fortran->b;
        if (shape->kind != PyVal::Kind::Tuple)
            throw Error(ErrorCode::Malformed, "npy header: shape is not a tuple", path, textAt);
        if (shape->items.size() > kMaxDims)
            throw Error(ErrorCode::Limit,
                        "npy shape has " + std::to_string(shape->items.size()) + " dimensions (limit " +
                            std::to_string(kMaxDims) + ")",
                        path, textAt);
        std::uint64_t numel = 1;
        bool overflow = false;
        for (const auto& d : shape->items) {
            if (d.kind != PyVal::Kind::Int || d.negative ||
                d.i > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()))
                throw Error(ErrorCode::Malformed, "npy header: shape holds something other than a size", path,
                            textAt);
            a.shape.push_back(static_cast<std::int64_t>(d.i));
            overflow |= mulOverflow(numel, d.i, &numel);
        }
        if (descr->kind == PyVal::Kind::List) {
            a.descr = "structured";
            a.problem = "structured (record) arrays are not supported";
        } else if (descr->kind != PyVal::Kind::Str) {
            throw Error(ErrorCode::Malformed, "npy header: descr is not a string", path, textAt);
        } else {
            a.descr = descr->s;
            std::string_view d = a.descr;
            char order = '=';
            if (!d.empty() && (d[0] == '<' || d[0] == '>' || d[0] == '|' || d[0] == '='))
                order = d[0], d.remove_prefix(1);
            a.bigEndian = order == '>';
            std::optional<DType> t;
            if (d == "b1" || d == "?")
                t = DType::Bool;
            else if (d == "i1" || d == "b")
                t = DType::Int8;
            else if (d == "u1" || d == "B")
                t = DType::UInt8;
            else if (d == "i2")
                t = DType::Int16;
            else if (d == "u2")
                t = DType::UInt16;
            else if (d == "i4")
                t = DType::Int32;
            else if (d == "u4")
                t = DType::UInt32;
            else if (d == "i8")
                t = DType::Int64;
            else if (d == "u8")
                t = DType::UInt64;
            else if (d == "f2")
                t = DType::Float16;
            else if (d == "f4")
                t = DType::Float32;
            else if (d == "f8")
                t = DType::Float64;
            else if (d == "c8")
                t = DType::Complex64;
            else if (d == "c16")
                t = DType::Complex128;
            if (t)
                a.dtype = *t;
            else if (d == "O" || d.starts_with("O"))
                a.problem = "array holds Python objects (dtype 'O'), which are stored as a pickle; refused: "
                            "reading it would mean unpickling";
            else
                a.problem = "unsupported npy dtype '" + a.descr + "'";
        }
        if (overflow)
            throw Error(ErrorCode::Limit, "npy shape's element count overflows 64 bits", path, textAt);
        if (a.problem.empty()) {
            if (mulOverflow(numel, dtypeSize(a.dtype), &a.nbytes))
                throw Error(ErrorCode::Limit, "npy array's byte size overflows 64 bits", path, textAt);
            const std::uint64_t follow = total ? *total - std::min(*total, a.dataOffset) : r.remaining();
            if (a.nbytes > follow)
                a.problem = "array needs " + std::to_string(a.nbytes) + " bytes of data but only " +
                            std::to_string(follow) + " follow its header";
        }
        return a;
    } catch (const Error& e) {
        if (e.file().empty())
            throw e.withFile(path);
        throw;
    }
}

// Bytes before the header text: magic, version, and the header length (u16 in 1.0, u32 in 2.0 and 3.0).
constexpr std::uint64_t kPreamble = 12;

// Where the header of the .npy starting with `head` (its first kPreamble bytes or fewer) ends; head.size()
// when that cannot be told, or the header is past the limit: parseNpy() says what is wrong.
std::uint64_t headerEnd(std::string_view head) {
    if (head.size() < kPreamble || std::memcmp(head.data(), kMagic, sizeof kMagic) != 0 || head[7] != 0)
        return head.size();
    const auto b = [&](std::size_t i) {
        return static_cast<std::uint64_t>(static_cast<std::uint8_t>(head[i]));
    };
    std::uint64_t start = 0, hlen = 0;
    if (head[6] == 1)
        start = 10, hlen = b(8) | b(9) << 8;
    else if (head[6] == 2 || head[6] == 3)
        start = 12, hlen = b(8) | b(9) << 8 | b(10) << 16 | b(11) << 24;
    else
        return head.size();
    return hlen > kMaxHeader ? head.size() : start + hlen;
}

std::uint32_t crcOf(std::string_view bytes) {
    uLong crc = crc32(0, nullptr, 0);
    for (std::size_t at = 0; at < bytes.size();) {
        const std::size_t n = std::min<std::size_t>(bytes.size() - at, 1u << 30);
        crc = crc32(crc, reinterpret_cast<const Bytef*>(bytes.data() + at), static_cast<uInt>(n));
        at += n;
    }
    return static_cast<std::uint32_t>(crc);
}

// Element strides of a C- or Fortran-ordered array; false when they overflow (huge dims next to a zero).
bool stridesFor(const std::vector<std::int64_t>& shape, bool fortran, std::vector<std::int64_t>& s) {
    s.assign(shape.size(), 1);
    bool overflow = false;
    if (fortran) {
        for (std::size_t i = 1; i < shape.size(); ++i)
            overflow |= __builtin_mul_overflow(s[i - 1], std::max<std::int64_t>(shape[i - 1], 1), &s[i]);
    } else {
        for (std::size_t i = shape.size(); i-- > 1;)
            overflow |= __builtin_mul_overflow(s[i], std::max<std::int64_t>(shape[i], 1), &s[i - 1]);
    }
    return !overflow;
}

std::string describe(const NpyArray& a) {
    return "'" + a.descr + "'" + (a.fortran ? ", Fortran order" : "");
}

// Adds the array as a tensor (and its storage); `fileBase` is the absolute offset of the .npy in `source`.
void addArray(Checkpoint& ck, const std::string& name, const NpyArray& array, int source,
              std::uint64_t fileBase) {
    NpyArray a = array;
    TensorInfo t;
    t.name = name;
    t.dtype = a.dtype;
    t.shape = a.shape;
    if (!stridesFor(a.shape, a.fortran, t.strides) && a.problem.empty())
        a.problem = "shape is too large for 64-bit strides";
    t.device = "cpu";
    if (!a.problem.empty()) {
        t.error = a.problem;
        ck.findings.push_back({Severity::Error, a.problem, name, {}, fileBase + a.dataOffset, source});
    } else {
        StorageInfo s;
        s.key = name;
        s.device = "cpu";
        s.dtype = a.dtype;
        s.nbytes = a.nbytes;
        s.source = source;
        s.fileOffset = fileBase + a.dataOffset;
        s.bigEndian = a.bigEndian;
        t.storage = static_cast<int>(ck.storages.size());
        ck.storages.push_back(std::move(s));
    }
    ck.tensors.push_back(std::move(t));
}

} // namespace

bool looksLikeNpy(std::span<const std::uint8_t> head, std::uint64_t) {
    return head.size() >= 6 && std::memcmp(head.data(), kMagic, sizeof kMagic) == 0;
}

std::shared_ptr<Checkpoint> readNpy(std::shared_ptr<const MappedFile> file) {
    auto ck = newCheckpoint(file, "numpy");
    const NpyArray a = parseNpy(file->bytes(), 0, file->path());
    addArray(*ck, "array", a, 0, 0);
    ck->formatDetail = "NumPy .npy, format version " + a.version + ", dtype " + describe(a);
    return ck;
}

bool looksLikeNpz(const std::shared_ptr<const MappedFile>& file) {
    try {
        ZipArchive zip(file);
        if (zip.entries().empty())
            return false;
        for (const auto& e : zip.entries())
            if (!e.name.ends_with(".npy"))
                return false;
        return true;
    } catch (const Error&) {
        return false;
    }
}

std::shared_ptr<Checkpoint> readNpz(std::shared_ptr<const MappedFile> file) {
    auto ck = newCheckpoint(file, "npz");
    const auto zip = std::make_shared<const ZipArchive>(file);
    const std::string& path = file->path();
    std::size_t compressed = 0;
    for (const auto& e : zip->entries()) {
        const std::string name = e.name.ends_with(".npy") ? e.name.substr(0, e.name.size() - 4) : e.name;
        auto broken = [&](const std::string& why, std::optional<std::uint64_t> at) {
            TensorInfo t;
            t.name = name;
            t.device = "cpu";
            t.error = why;
            ck->tensors.push_back(std::move(t));
            ck->findings.push_back({Severity::Error, why, name, {}, at, 0});
        };
        if (!e.problem.empty()) {
            broken("zip entry '" + e.name + "': " + e.problem, e.localHeaderOffset);
            continue;
        }
        try {
            if (e.method == 0) {
                const auto bytes = zip->storedData(e);
                addArray(*ck, name, parseNpy(bytes, e.dataOffset, path), 0, e.dataOffset);
                continue;
            }
            if (e.method != 8) {
                broken("zip entry '" + e.name + "' uses compression method " + std::to_string(e.method) +
                           " (only stored and deflated are supported)",
                       e.localHeaderOffset);
                continue;
            }
            // Deflate expands at most about 1032:1: refuse declared sizes no stream could produce.
            std::uint64_t plausible = 0;
            if (mulOverflow(e.compressedSize, 1032, &plausible) || addOverflow(plausible, 1024, &plausible))
                plausible = kMaxInflated;
            const std::uint64_t limit = std::min(plausible, kMaxInflated);
            // Only the header is inflated now: the magic, version and header length first, then the header.
            std::string head = zip->readPrefix(e, kPreamble, limit);
            const std::uint64_t end = headerEnd(head);
            if (end > head.size())
                head = zip->readPrefix(e, end, limit);
            const std::string member = path + ":" + e.name;
            const NpyArray a = parseNpy({reinterpret_cast<const std::uint8_t*>(head.data()), head.size()}, 0,
                                        member, e.uncompressedSize);
            ++compressed;
            // The whole member is inflated when its values are first read, and its errors are the tensor's.
            // Errors name the file and the member, with the tensor as their object.
            auto mem = MappedFile::lazy(member, e.uncompressedSize, [zip, e, limit, name]() {
                std::string bytes;
                try {
                    bytes = zip->read(e, limit);
                } catch (const Error& err) {
                    throw Error(err.code(), err.message(), err.file(), err.offset(), name);
                }
                if (crcOf(bytes) != e.crc32)
                    throw Error(
                        ErrorCode::Malformed,
                        "zip entry '" + e.name +
                            "' inflates to bytes whose CRC-32 differs from the one the archive records",
                        zip->file()->path(), e.dataOffset, name);
                return bytes;
            });
            const int source = static_cast<int>(ck->sources.size());
            ck->sources.push_back({mem->path(), mem});
            addArray(*ck, name, a, source, 0);
        } catch (const Error& err) {
            broken("member '" + e.name + "': " + err.message(),
                   e.method == 0 && err.offset() ? err.offset()
                                                 : std::optional<std::uint64_t>(e.localHeaderOffset));
        }
    }
    ck->formatDetail =
        "NumPy .npz, " + std::to_string(zip->entries().size()) + " arrays" +
        (compressed ? " (" + std::to_string(compressed) + " compressed, inflated on demand)" : "");
    return ck;
}

} // namespace ckpt
