#include "tfbundle.h"

#include "torchpickle.h" // newCheckpoint()

#include "io/bytereader.h"
#include "io/utf8.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <regex>
#include <unordered_map>
#include <unordered_set>

#ifdef CKPT_HAVE_SNAPPY
#include <snappy.h>
#endif

namespace fs = std::filesystem;

namespace ckpt {
namespace {

constexpr std::uint64_t kTableMagic = 0xdb4775248b80fb57ull;
constexpr std::size_t kFooterSize = 48;
constexpr std::uint64_t kMaxBlockBytes = 256ull << 20;
constexpr std::uint64_t kMaxDecompressedBytes = 1ull << 30; // all Snappy blocks together
// Keys: prefix compression lets a key cost a few bytes of the file however long it is, and each key is
// kept a few times over (storage key, name), so both one key and all keys together are capped. TF keys are
// object paths of some hundred bytes.
constexpr std::uint64_t kMaxKeyBytes = 64u << 10;      // one key
constexpr std::uint64_t kMaxAllKeyBytes = 64ull << 20; // all keys together
constexpr std::size_t kMaxEntries = 16u << 20;
constexpr std::int64_t kMaxShards = 65536;
constexpr int kMaxRank = 64;
constexpr std::uint64_t kMaxStringTensorBytes = 64ull << 20;
// String tensors decoded in all (entries may share their bytes); past it they are listed with a note.
constexpr std::uint64_t kMaxAllStringBytes = 64ull << 20;
constexpr std::uint64_t kMaxStringElements = 1u << 20;
constexpr std::size_t kMaxGraphNodes = 1u << 20;
// Readable names built from the object graph, in all: a node's name is its parent's plus its own, so a
// chain of nodes would otherwise cost the square of its length.
constexpr std::uint64_t kMaxGraphNameBytes = 64ull << 20;
constexpr std::uint64_t kMaxStateFileBytes = 1u << 20;
constexpr std::size_t kMaxListedStrings = 1000;

// ---- CRC-32C
// ------------------------------------------------------------------------------------------------

constexpr std::array<std::uint32_t, 256> makeCrcTable() {
    std::array<std::uint32_t, 256> t{};
    for (std::uint32_t i = 0; i < 256; ++i) {
        std::uint32_t c = i;
        for (int k = 0; k < 8; ++k)
            c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
        t[i] = c;
    }
    return t;
}
constexpr auto kCrcTable = makeCrcTable();

// ---- varints and protobuf wire format
// -----------------------------------------------------------------------

std::string hexKey(std::string_view key) {
    std::string out;
    for (unsigned char c : key) {
        if (c >= 0x20 && c < 0x7f && c != '\\') {
            out += static_cast<char>(c);
        } else {
            static const char* d = "0123456789abcdef";
            out += "\\x";
            out += d[c >> 4];
            out += d[c & 15];
        }
    }
    return out;
}

// Bounded protobuf reader. `base` is the absolute offset of data[0] in `file`, for messages.
class Proto {
public:
    Proto(std::span<const std::uint8_t> data, std::uint64_t base, std::string what)
        : m_data(data)
        , m_base(base)
        , m_what(std::move(what)) {}

    bool atEnd() const { return m_pos >= m_data.size(); }
    std::size_t position() const { return m_pos; }
    std::uint64_t where() const { return m_base + m_pos; }

    [[noreturn]] void fail(const std::string& msg) const {
        throw Error(ErrorCode::Malformed, m_what + ": " + msg, {}, where());
    }

    std::uint64_t varint() {
        std::uint64_t v = 0;
        for (int shift = 0; shift < 64; shift += 7) {
            if (m_pos >= m_data.size())
                fail("truncated varint");
            const std::uint8_t b = m_data[m_pos++];
            v |= static_cast<std::uint64_t>(b & 0x7f) << shift;
            if (!(b & 0x80))
                return v;
        }
        fail("varint longer than 10 bytes");
    }
    // Returns false at the end of the message.
    bool next(std::uint32_t* field, std::uint32_t* wire) {
        if (atEnd())
            return false;
        const std::uint64_t tag = varint();
        *field = static_cast<std::uint32_t>(tag >> 3);
        *wire = static_cast<std::uint32_t>(tag & 7);
        if (*field == 0 || (tag >> 3) > 0x1fffffff)
            fail("invalid protobuf field number " + std::to_string(tag >> 3));
        return true;
    }
    std::uint32_t fixed32() {
        if (m_data.size() - m_pos < 4)
            fail("truncated fixed32 field");
        std::uint32_t v = 0;
        for (int i = 3; i >= 0; --i)
            v = (v << 8) | m_data[m_pos + static_cast<std::size_t>(i)];
        m_pos += 4;
        return v;
    }
    // A length-delimited field; `field` is for the message.
    Proto sub(std::uint32_t field, const std::string& what) {
        const std::uint64_t at = where();
        const std::uint64_t n = varint();
        if (n > m_data.size() - m_pos)
            throw Error(ErrorCode::Malformed,
                        m_what + ": protobuf field " + std::to_string(field) + " length " +
                            std::to_string(n) + " runs past the end of the message (" +
                            std::to_string(m_data.size() - m_pos) + " bytes left)",
                        {}, at);
        Proto p(m_data.subspan(m_pos, static_cast<std::size_t>(n)), where(), what);
        m_pos += static_cast<std::size_t>(n);
        return p;
    }
    std::string string(std::uint32_t field) {
        Proto p = sub(field, m_what);
        return std::string(reinterpret_cast<const char*>(p.m_data.data()), p.m_data.size());
    }
    void skip(std::uint32_t field, std::uint32_t wire) {
        switch (wire) {
        case 0:
            varint();
            return;
        case 1:
            if (m_data.size() - m_pos < 8)
                fail("truncated fixed64 field");
            m_pos += 8;
            return;
        case 2:
            sub(field, m_what);
            return;
        case 5:
            fixed32();
            return;
        default:
            fail("unsupported protobuf wire type " + std::to_string(wire) + " for field " +
                 std::to_string(field));
        }
    }
    void expect(std::uint32_t field, std::uint32_t wire, std::uint32_t want) {
        if (wire != want)
            fail("protobuf field " + std::to_string(field) + " has wire type " + std::to_string(wire) +
                 ", expected " + std::to_string(want));
    }
    std::span<const std::uint8_t> data() const { return m_data; }

private:
    std::span<const std::uint8_t> m_data;
    std::size_t m_pos = 0;
    std::uint64_t m_base;
    std::string m_what;
};

// ---- the table
// ------------------------------------------------------------------------------------------------

struct Handle {
    std::uint64_t offset = 0, size = 0;
};

struct TableEntry {
    std::string key;
    std::span<const std::uint8_t> value;
    std::uint64_t offset; // absolute in the index file where the value lies (raw blocks), else the block's
};

class Table {
public:
    Table(const MappedFile& file, bool verify)
        : m_file(file)
        , m_verify(verify) {}

    std::vector<TableEntry> readAll() {
        const std::string& path = m_file.path();
        const std::uint64_t size = m_file.size();
        if (size < kFooterSize)
            throw Error(ErrorCode::Truncated,
                        "not an sstable: file of " + std::to_string(size) +
                            " bytes is shorter than the 48-byte footer",
                        path, 0);
        const auto footer = m_file.bytes().subspan(static_cast<std::size_t>(size - kFooterSize));
        if (!hasTfTableMagic(footer))
            throw Error(ErrorCode::BadMagic, "not an sstable (bad magic number)", path, size - 8);
        Proto f(footer.first(40), size - kFooterSize, "table footer");
        Handle meta{f.varint(), f.varint()};
        (void)meta; // TF writes no meta blocks; LevelDB's filter blocks are of no use here
        Handle index{f.varint(), f.varint()};
        std::vector<TableEntry> out;
        const auto indexEntries = readBlock(index, "index block", 0);
        for (std::size_t b = 0; b < indexEntries.size(); ++b) {
            const auto& ie = indexEntries[b];
            Proto h(ie.value, ie.offset, "index entry " + std::to_string(b));
            Handle dh{h.varint(), h.varint()};
            auto entries = readBlock(dh, "data block " + std::to_string(b), ie.offset);
            for (auto& e : entries) {
                if (!out.empty() && e.key <= out.back().key)
                    throw Error(ErrorCode::Malformed,
                                "table keys out of order: '" + hexKey(e.key) + "' after '" +
                                    hexKey(out.back().key) + "'",
                                path, e.offset);
                if (out.size() >= kMaxEntries)
                    throw Error(ErrorCode::Limit,
                                "table holds more than " + std::to_string(kMaxEntries) + " entries", path,
                                e.offset);
                out.push_back(std::move(e));
            }
        }
        return out;
    }

private:
    std::vector<TableEntry> readBlock(const Handle& h, const std::string& what, std::uint64_t handleAt) {
        const std::string& path = m_file.path();
        std::uint64_t end = 0;
        if (addOverflow(h.offset, h.size, &end) || addOverflow(end, 5, &end) || end > m_file.size())
            throw Error(ErrorCode::OutOfBounds,
                        what + " at offset " + std::to_string(h.offset) + " (" + std::to_string(h.size) +
                            " bytes + 5-byte trailer) runs past the end of the file (" +
                            std::to_string(m_file.size()) + " bytes)",
                        path, handleAt);
        const auto stored =
            m_file.bytes().subspan(static_cast<std::size_t>(h.offset), static_cast<std::size_t>(h.size));
        const std::uint8_t* trailer = m_file.data() + h.offset + h.size;
        std::uint32_t storedCrc = 0;
        for (int i = 3; i >= 0; --i)
            storedCrc = (storedCrc << 8) | trailer[1 + i];
        if (m_verify && unmaskCrc32c(storedCrc) !=
                            crc32c({m_file.data() + h.offset, static_cast<std::size_t>(h.size + 1)}))
            throw Error(ErrorCode::Malformed,
                        "block checksum mismatch in " + what + " at offset " + std::to_string(h.offset), path,
                        h.offset + h.size + 1);
        std::span<const std::uint8_t> contents;
        bool raw = true;
        if (trailer[0] == 0) {
            contents = stored;
        } else if (trailer[0] == 1) {
#ifdef CKPT_HAVE_SNAPPY
            std::size_t n = 0;
            const char* src = reinterpret_cast<const char*>(stored.data());
            if (!snappy::GetUncompressedLength(src, stored.size(), &n))
                throw Error(ErrorCode::Malformed,
                            "corrupted compressed block contents in " + what + " (Snappy)", path, h.offset);
            // Snappy's densest element, a 3-byte copy of 64 bytes, expands 64:3; a block declaring more is
            // refused before its buffer is allocated and cleared.
            if (n / 64 * 3 > stored.size())
                throw Error(ErrorCode::Malformed,
                            what + " declares " + std::to_string(n) + " bytes from " +
                                std::to_string(stored.size()) +
                                " compressed bytes, more than Snappy's densest encoding (64:3) can hold",
                            path, h.offset);
            if (n > kMaxBlockBytes)
                throw Error(ErrorCode::Limit,
                            what + " decompresses to " + std::to_string(n) +
                                " bytes, more than the limit of " + std::to_string(kMaxBlockBytes),
                            path, h.offset);
            if (addOverflow(m_decompressed, n, &m_decompressed) || m_decompressed > kMaxDecompressedBytes)
                throw Error(ErrorCode::Limit,
                            "compressed blocks decompress to more than " +
                                std::to_string(kMaxDecompressedBytes) + " bytes in all",
                            path, h.offset);
            std::string& buf = m_buffers.emplace_back();
            if (!snappy::Uncompress(src, stored.size(), &buf))
                throw Error(ErrorCode::Malformed,
                            "corrupted compressed block contents in " + what + " (Snappy)", path, h.offset);
            contents = {reinterpret_cast<const std::uint8_t*>(buf.data()), buf.size()};
            raw = false;
#else
            throw Error(ErrorCode::Unsupported,
                        what + " is compressed with Snappy, and this build has no Snappy support", path,
                        h.offset);
#endif
        } else {
            throw Error(ErrorCode::Malformed, "bad block type " + std::to_string(trailer[0]) + " of " + what,
                        path, h.offset + h.size);
        }
        return parseBlock(contents, raw ? h.offset : 0, raw, h.offset, what);
    }

    std::vector<TableEntry> parseBlock(std::span<const std::uint8_t> b, std::uint64_t base, bool raw,
                                       std::uint64_t blockAt, const std::string& what) {
        const std::string& path = m_file.path();
        auto at = [&](std::size_t pos) { return raw ? base + pos : blockAt; };
        auto u32 = [&](std::size_t pos) {
            std::uint32_t v = 0;
            for (int i = 3; i >= 0; --i)
                v = (v << 8) | b[pos + static_cast<std::size_t>(i)];
            return v;
        };
        if (b.size() < 4)
            throw Error(ErrorCode::Malformed,
                        what + " of " + std::to_string(b.size()) + " bytes is too short", path, at(0));
        const std::uint64_t restarts = u32(b.size() - 4);
        const std::uint64_t maxRestarts = (b.size() - 4) / 4;
        if (restarts > maxRestarts || (restarts == 0 && b.size() > 4))
            throw Error(ErrorCode::Malformed,
                        "bad restart count " + std::to_string(restarts) + " in " + what + " of " +
                            std::to_string(b.size()) + " bytes",
                        path, at(b.size() - 4));
        const std::size_t limit = b.size() - 4 - static_cast<std::size_t>(restarts) * 4;
        for (std::uint64_t r = 0; r < restarts; ++r) {
            const std::uint32_t off = u32(limit + static_cast<std::size_t>(r) * 4);
            if (off >= limit)
                throw Error(ErrorCode::Malformed,
                            "restart point " + std::to_string(r) + " (" + std::to_string(off) + ") of " +
                                what + " lies outside its entries (" + std::to_string(limit) + " bytes)",
                            path, at(limit + static_cast<std::size_t>(r) * 4));
        }
        std::vector<TableEntry> out;
        std::string key;
        std::size_t pos = 0;
        while (pos < limit) {
            const std::size_t entryPos = pos;
            Proto e(b.subspan(pos, limit - pos), at(pos), what);
            const std::uint64_t shared = e.varint();
            const std::uint64_t nonShared = e.varint();
            const std::uint64_t valueLen = e.varint();
            const std::size_t cur0 = pos + e.position();
            std::size_t cur = cur0;
            if (shared > key.size())
                throw Error(ErrorCode::Malformed,
                            "entry at byte " + std::to_string(entryPos) + " of " + what + " shares " +
                                std::to_string(shared) + " key bytes but the previous key has only " +
                                std::to_string(key.size()),
                            path, at(entryPos));
            if (nonShared > limit - cur || valueLen > limit - cur - nonShared)
                throw Error(ErrorCode::Malformed,
                            "entry at byte " + std::to_string(entryPos) + " of " + what + " (key " +
                                std::to_string(nonShared) + " + value " + std::to_string(valueLen) +
                                " bytes) runs past the end of the block's entries",
                            path, at(entryPos));
            if (shared + nonShared > kMaxKeyBytes)
                throw Error(ErrorCode::Limit,
                            "entry at byte " + std::to_string(entryPos) + " of " + what + " has a key of " +
                                std::to_string(shared + nonShared) + " bytes, more than the limit of " +
                                std::to_string(kMaxKeyBytes),
                            path, at(entryPos));
            m_keyBytes += shared + nonShared;
            if (m_keyBytes > kMaxAllKeyBytes)
                throw Error(ErrorCode::Limit,
                            "the table's keys add up to more than the limit of " +
                                std::to_string(kMaxAllKeyBytes) + " bytes at the entry at byte " +
                                std::to_string(entryPos) + " of " + what,
                            path, at(entryPos));
            key.resize(static_cast<std::size_t>(shared));
            key.append(reinterpret_cast<const char*>(b.data() + cur), static_cast<std::size_t>(nonShared));
            cur += static_cast<std::size_t>(nonShared);
            out.push_back({key, b.subspan(cur, static_cast<std::size_t>(valueLen)), at(cur)});
            pos = cur + static_cast<std::size_t>(valueLen);
        }
        return out;
    }

    const MappedFile& m_file;
    bool m_verify = true;
    std::uint64_t m_decompressed = 0, m_keyBytes = 0;
    std::deque<std::string> m_buffers; // decompressed blocks, alive as long as the entries
public:
    std::deque<std::string> takeBuffers() {
        return std::move(m_buffers);
    }
};

// ---- TF data types
// ----------------------------------------------------------------------------------------------

struct TfType {
    const char* name;  // "DT_FLOAT"
    DType dtype;       // what it is listed as
    std::uint8_t size; // bytes per element, 0 when variable or unknown
    bool readable;     // whether the bytes can be shown as values
};

std::optional<TfType> tfType(std::uint64_t code) {
    switch (code) {
    case 1:
        return TfType{"DT_FLOAT", DType::Float32, 4, true};
    case 2:
        return TfType{"DT_DOUBLE", DType::Float64, 8, true};
    case 3:
        return TfType{"DT_INT32", DType::Int32, 4, true};
    case 4:
        return TfType{"DT_UINT8", DType::UInt8, 1, true};
    case 5:
        return TfType{"DT_INT16", DType::Int16, 2, true};
    case 6:
        return TfType{"DT_INT8", DType::Int8, 1, true};
    case 7:
        return TfType{"DT_STRING", DType::Bits8, 0, false};
    case 8:
        return TfType{"DT_COMPLEX64", DType::Complex64, 8, true};
    case 9:
        return TfType{"DT_INT64", DType::Int64, 8, true};
    case 10:
        return TfType{"DT_BOOL", DType::Bool, 1, true};
    case 11:
        return TfType{"DT_QINT8", DType::QInt8, 1, false};
    case 12:
        return TfType{"DT_QUINT8", DType::QUInt8, 1, false};
    case 13:
        return TfType{"DT_QINT32", DType::QInt32, 4, false};
    case 14:
        return TfType{"DT_BFLOAT16", DType::BFloat16, 2, true};
    case 15:
        return TfType{"DT_QINT16", DType::Bits16, 2, false};
    case 16:
        return TfType{"DT_QUINT16", DType::Bits16, 2, false};
    case 17:
        return TfType{"DT_UINT16", DType::UInt16, 2, true};
    case 18:
        return TfType{"DT_COMPLEX128", DType::Complex128, 16, true};
    case 19:
        return TfType{"DT_HALF", DType::Float16, 2, true};
    case 20:
        return TfType{"DT_RESOURCE", DType::Bits8, 0, false};
    case 21:
        return TfType{"DT_VARIANT", DType::Bits8, 0, false};
    case 22:
        return TfType{"DT_UINT32", DType::UInt32, 4, true};
    case 23:
        return TfType{"DT_UINT64", DType::UInt64, 8, true};
    case 24:
        return TfType{"DT_FLOAT8_E5M2", DType::Float8_e5m2, 1, true};
    case 25:
        return TfType{"DT_FLOAT8_E4M3FN", DType::Float8_e4m3fn, 1, true};
    case 26:
        return TfType{"DT_FLOAT8_E4M3FNUZ", DType::Float8_e4m3fnuz, 1, true};
    case 27:
        return TfType{"DT_FLOAT8_E4M3B11FNUZ", DType::Bits8, 1, false};
    case 28:
        return TfType{"DT_FLOAT8_E5M2FNUZ", DType::Float8_e5m2fnuz, 1, true};
    case 29:
        return TfType{"DT_INT4", DType::Bits8, 0, false};
    case 30:
        return TfType{"DT_UINT4", DType::Bits8, 0, false};
    case 31:
        return TfType{"DT_INT2", DType::Bits8, 0, false};
    case 32:
        return TfType{"DT_UINT2", DType::Bits8, 0, false};
    default:
        return std::nullopt;
    }
}

// ---- entries
// ----------------------------------------------------------------------------------------------------

struct Header {
    std::int64_t numShards = 1;
    bool bigEndian = false;
    std::int64_t producer = 0, minConsumer = 0;
    std::vector<std::int64_t> badConsumers;
};

struct Entry {
    std::uint64_t dtype = 0;
    std::vector<std::int64_t> shape;
    bool unknownRank = false;
    std::int64_t shardId = 0, offset = 0, size = 0;
    std::optional<std::uint32_t> crc;
    std::size_t slices = 0;
};

Header parseHeader(const TableEntry& te, const std::string& path) {
    Header h;
    Proto p(te.value, te.offset, "bundle header");
    std::uint32_t field, wire;
    try {
        while (p.next(&field, &wire)) {
            if (field == 1 && wire == 2)
                throw Error(
                    ErrorCode::Unsupported,
                    "TensorFlow V1 checkpoints are not supported (this table is a V1 Saver file holding "
                    "SavedTensorSlices); re-save it in the V2 format (tf.train.Saver(write_version=V2) or "
                    "tf.train.Checkpoint)",
                    {}, te.offset);
            if (field == 1) {
                p.expect(field, wire, 0);
                h.numShards = static_cast<std::int64_t>(p.varint());
            } else if (field == 2) {
                p.expect(field, wire, 0);
                const std::uint64_t e = p.varint();
                if (e > 1)
                    p.fail("unknown endianness " + std::to_string(e));
                h.bigEndian = e == 1;
            } else if (field == 3) {
                p.expect(field, wire, 2);
                Proto v = p.sub(field, "bundle header version");
                while (v.next(&field, &wire)) {
                    if (field == 1 && wire == 0)
                        h.producer = static_cast<std::int64_t>(v.varint());
                    else if (field == 2 && wire == 0)
                        h.minConsumer = static_cast<std::int64_t>(v.varint());
                    else if (field == 3 && wire == 0)
                        h.badConsumers.push_back(static_cast<std::int64_t>(v.varint()));
                    else if (field == 3 && wire == 2) {
                        Proto packed = v.sub(field, "bundle header version");
                        while (!packed.atEnd())
                            h.badConsumers.push_back(static_cast<std::int64_t>(packed.varint()));
                    } else
                        v.skip(field, wire);
                }
            } else {
                p.skip(field, wire);
            }
        }
    } catch (const Error& e) {
        throw e.withFile(path);
    }
    if (h.numShards < 1 || h.numShards > kMaxShards)
        throw Error(ErrorCode::Malformed,
                    "bundle header declares " + std::to_string(h.numShards) + " data shards (1.." +
                        std::to_string(kMaxShards) + " allowed)",
                    path, te.offset);
    if (h.minConsumer > 1 ||
        std::find(h.badConsumers.begin(), h.badConsumers.end(), 1) != h.badConsumers.end())
        throw Error(ErrorCode::Unsupported,
                    "bundle needs a newer reader (min_consumer " + std::to_string(h.minConsumer) + ")", path,
                    te.offset);
    return h;
}

Entry parseEntry(const TableEntry& te) {
    Entry e;
    Proto p(te.value, te.offset, "bundle entry");
    std::uint32_t field, wire;
    while (p.next(&field, &wire)) {
        switch (field) {
        case 1:
            p.expect(field, wire, 0);
            e.dtype = p.varint();
            break;
        case 2: {
            p.expect(field, wire, 2);
            Proto s = p.sub(field, "tensor shape");
            while (s.next(&field, &wire)) {
                if (field == 2) {
                    s.expect(field, wire, 2);
                    Proto d = s.sub(field, "tensor shape dim");
                    std::int64_t size = 0;
                    while (d.next(&field, &wire)) {
                        if (field == 1) {
                            d.expect(field, wire, 0);
                            size = static_cast<std::int64_t>(d.varint());
                        } else {
                            d.skip(field, wire);
                        }
                    }
                    if (e.shape.size() >= kMaxRank)
                        s.fail("tensor shape has more than " + std::to_string(kMaxRank) + " dimensions");
                    e.shape.push_back(size);
                } else if (field == 3) {
                    s.expect(field, wire, 0);
                    e.unknownRank = s.varint() != 0;
                } else {
                    s.skip(field, wire);
                }
            }
            break;
        }
        case 3:
            p.expect(field, wire, 0);
            e.shardId = static_cast<std::int64_t>(p.varint());
            break;
        case 4:
            p.expect(field, wire, 0);
            e.offset = static_cast<std::int64_t>(p.varint());
            break;
        case 5:
            p.expect(field, wire, 0);
            e.size = static_cast<std::int64_t>(p.varint());
            break;
        case 6:
            p.expect(field, wire, 5);
            e.crc = p.fixed32();
            break;
        case 7:
            p.expect(field, wire, 2);
            p.sub(field, "tensor slice");
            ++e.slices;
            break;
        default:
            p.skip(field, wire);
        }
    }
    return e;
}

// ---- object graph
// -----------------------------------------------------------------------------------------------

struct GraphNode {
    std::vector<std::pair<std::int64_t, std::string>> children;
    std::vector<std::pair<std::string, std::string>> attributes; // name, checkpoint_key
    struct Slot {
        std::int64_t original = -1, slot = -1;
        std::string name;
    };
    std::vector<Slot> slots;
};

std::vector<GraphNode> parseGraph(std::span<const std::uint8_t> bytes, std::uint64_t base) {
    std::vector<GraphNode> nodes;
    Proto p(bytes, base, "object graph");
    std::uint32_t field, wire;
    while (p.next(&field, &wire)) {
        if (field != 1) {
            p.skip(field, wire);
            continue;
        }
        p.expect(field, wire, 2);
        if (nodes.size() >= kMaxGraphNodes)
            p.fail("more than " + std::to_string(kMaxGraphNodes) + " nodes");
        GraphNode& n = nodes.emplace_back();
        Proto np = p.sub(field, "object graph node " + std::to_string(nodes.size() - 1));
        while (np.next(&field, &wire)) {
            if (field == 1 && wire == 2) {
                Proto c = np.sub(field, "object graph child");
                std::int64_t id = -1;
                std::string name;
                while (c.next(&field, &wire)) {
                    if (field == 1 && wire == 0)
                        id = static_cast<std::int64_t>(c.varint());
                    else if (field == 2 && wire == 2)
                        name = c.string(field);
                    else
                        c.skip(field, wire);
                }
                n.children.emplace_back(id, std::move(name));
            } else if (field == 2 && wire == 2) {
                Proto a = np.sub(field, "object graph attribute");
                std::string name, key;
                while (a.next(&field, &wire)) {
                    if (field == 1 && wire == 2)
                        name = a.string(field);
                    else if (field == 3 && wire == 2)
                        key = a.string(field);
                    else
                        a.skip(field, wire);
                }
                n.attributes.emplace_back(std::move(name), std::move(key));
            } else if (field == 3 && wire == 2) {
                Proto s = np.sub(field, "object graph slot variable");
                GraphNode::Slot slot;
                while (s.next(&field, &wire)) {
                    if (field == 1 && wire == 0)
                        slot.original = static_cast<std::int64_t>(s.varint());
                    else if (field == 2 && wire == 2)
                        slot.name = s.string(field);
                    else if (field == 3 && wire == 0)
                        slot.slot = static_cast<std::int64_t>(s.varint());
                    else
                        s.skip(field, wire);
                }
                n.slots.push_back(std::move(slot));
            } else {
                np.skip(field, wire);
            }
        }
    }
    return nodes;
}

// Readable names from the object graph. Each named node keeps its parent's name and its own local name, not
// its full path, so a long chain of nodes costs memory linear in its length; full names are built only for
// the keys asked for, up to kMaxGraphNameBytes in all.
class GraphNames {
public:
    explicit GraphNames(const std::vector<GraphNode>& nodes) {
        if (nodes.empty())
            return;
        const auto count = static_cast<std::int64_t>(nodes.size());
        std::vector<std::int64_t> of(nodes.size(), -1); // node -> its name in m_names
        m_names.push_back({});                          // the root: ""
        of[0] = 0;
        std::deque<std::int64_t> queue{0};
        while (!queue.empty()) {
            const std::int64_t id = queue.front();
            queue.pop_front();
            for (const auto& [child, local] : nodes[static_cast<std::size_t>(id)].children) {
                if (child < 0 || child >= count || of[static_cast<std::size_t>(child)] >= 0)
                    continue;
                of[static_cast<std::size_t>(child)] = add(of[static_cast<std::size_t>(id)], local, false);
                queue.push_back(child);
            }
        }
        // Slot variables: '<variable>.<slot>'. They win over a path through the optimizer's children.
        for (const auto& n : nodes)
            for (const auto& s : n.slots)
                if (s.original >= 0 && s.original < count && s.slot >= 0 && s.slot < count &&
                    of[static_cast<std::size_t>(s.original)] >= 0)
                    of[static_cast<std::size_t>(s.slot)] =
                        add(of[static_cast<std::size_t>(s.original)], s.name, true);
        for (std::size_t i = 0; i < nodes.size(); ++i) {
            if (of[i] < 0)
                continue;
            for (const auto& [name, key] : nodes[i].attributes)
                if (!key.empty())
                    m_keys.emplace(key, std::pair{static_cast<std::size_t>(of[i]), std::string_view(name)});
        }
    }

    // The readable name of a checkpoint key: its node's path of local names joined with '.', plus
    // '.<attribute>' for attributes other than VARIABLE_VALUE. Null when the graph does not name the key, or
    // once the names built add up to more than kMaxGraphNameBytes.
    std::optional<std::string> name(std::string_view key) {
        const auto it = m_keys.find(key);
        if (it == m_keys.end())
            return std::nullopt;
        const auto [index, attribute] = it->second;
        const std::uint64_t base = m_names[index].size;
        const bool withAttribute = attribute != "VARIABLE_VALUE";
        const std::uint64_t size = base + (withAttribute ? (base ? 1 : 0) + attribute.size() : 0);
        if (m_exhausted || size > kMaxGraphNameBytes - m_built) {
            m_exhausted = true;
            return std::nullopt;
        }
        m_built += size;
        std::string out(static_cast<std::size_t>(size), '\0');
        if (withAttribute)
            attribute.copy(out.data() + size - attribute.size(), attribute.size());
        if (withAttribute && base)
            out[static_cast<std::size_t>(base)] = '.';
        // From the node up: each step adds at least one byte, so this takes at most `base` steps.
        std::size_t end = static_cast<std::size_t>(base);
        for (std::size_t k = index; m_names[k].size > 0; k = m_names[k].parent) {
            const Name& n = m_names[k];
            end -= n.local.size();
            n.local.copy(out.data() + end, n.local.size());
            if (n.dot || m_names[n.parent].size > 0)
                out[--end] = '.';
        }
        return out;
    }
    bool exhausted() const { return m_exhausted; }

private:
    struct Name {
        std::size_t parent = 0; // in m_names
        std::string_view local; // into the graph's nodes
        bool dot = false;       // '.' before `local` even when the parent's name is empty (slot names)
        std::uint64_t size = 0; // of the full name
    };
    std::int64_t add(std::int64_t parent, std::string_view local, bool dot) {
        const Name& p = m_names[static_cast<std::size_t>(parent)];
        const std::uint64_t size = p.size + (dot || p.size > 0 ? 1 : 0) + local.size();
        m_names.push_back({static_cast<std::size_t>(parent), local, dot, size});
        return static_cast<std::int64_t>(m_names.size() - 1);
    }

    std::vector<Name> m_names;
    std::unordered_map<std::string_view, std::pair<std::size_t, std::string_view>>
        m_keys; // -> name, attribute
    std::uint64_t m_built = 0;
    bool m_exhausted = false;
};

// Names for keys the graph does not name: '/.ATTRIBUTES/VARIABLE_VALUE' dropped, '/' -> '.'.
std::string nameFromKey(const std::string& key) {
    std::string k = key;
    static const std::string suffix = "/.ATTRIBUTES/VARIABLE_VALUE";
    if (k.size() > suffix.size() && k.ends_with(suffix))
        k.resize(k.size() - suffix.size());
    // '<variable>/.OPTIMIZER_SLOT/<optimizer path>/<slot>' -> '<variable>.<slot>', as the graph names it.
    if (const auto slot = k.find("/.OPTIMIZER_SLOT/"); slot != std::string::npos && k.back() != '/')
        k = k.substr(0, slot) + "/" + k.substr(k.rfind('/') + 1);
    std::replace(k.begin(), k.end(), '/', '.');
    return k;
}

std::string shapeText(const std::vector<std::int64_t>& shape) {
    std::string s = "[";
    for (std::size_t i = 0; i < shape.size(); ++i)
        s += (i ? ", " : "") + std::to_string(shape[i]);
    return s + "]";
}

std::string shardPath(const std::string& prefix, std::int64_t id, std::int64_t count) {
    char buf[64];
    std::snprintf(buf, sizeof buf, ".data-%05lld-of-%05lld", static_cast<long long>(id),
                  static_cast<long long>(count));
    return prefix + buf;
}

// ---- the checkpoint state file
// ----------------------------------------------------------------------------------

struct State {
    std::string latest;
    std::vector<std::string> all; // as the file lists them, oldest first
};

std::optional<std::string> unquote(std::string_view v) {
    if (v.size() < 2 || v.front() != '"' || v.back() != '"')
        return std::nullopt;
    std::string out;
    for (std::size_t i = 1; i + 1 < v.size(); ++i) {
        char c = v[i];
        if (c != '\\') {
            out += c;
            continue;
        }
        if (++i + 1 >= v.size() + 0 && i >= v.size() - 1)
            return std::nullopt;
        c = v[i];
        switch (c) {
        case 'n':
            out += '\n';
            break;
        case 't':
            out += '\t';
            break;
        case 'r':
            out += '\r';
            break;
        case '\\':
            out += '\\';
            break;
        case '"':
            out += '"';
            break;
        case '\'':
            out += '\'';
            break;
        default:
            if (c >= '0' && c <= '7') {
                int val = 0, n = 0;
                while (n < 3 && i + 1 < v.size() && v[i] >= '0' && v[i] <= '7') {
                    val = val * 8 + (v[i] - '0');
                    ++i;
                    ++n;
                }
                --i;
                out += static_cast<char>(val);
            } else {
                out += c;
            }
        }
    }
    return out;
}

std::optional<State> readStateFile(const fs::path& file) {
    std::error_code ec;
    const auto size = fs::file_size(file, ec);
    if (ec || size > kMaxStateFileBytes)
        return std::nullopt;
    std::ifstream in(file, std::ios::binary);
    if (!in)
        return std::nullopt;
    State st;
    std::string line;
    bool any = false;
    while (std::getline(in, line)) {
        const auto colon = line.find(':');
        if (colon == std::string::npos)
            continue;
        std::string name = line.substr(0, colon);
        name.erase(0, name.find_first_not_of(" \t"));
        name.erase(name.find_last_not_of(" \t\r") + 1);
        std::string value = line.substr(colon + 1);
        value.erase(0, value.find_first_not_of(" \t"));
        value.erase(value.find_last_not_of(" \t\r") + 1);
        if (name == "model_checkpoint_path") {
            if (auto s = unquote(value)) {
                st.latest = *s;
                any = true;
            }
        } else if (name == "all_model_checkpoint_paths") {
            if (auto s = unquote(value))
                st.all.push_back(*s);
        }
    }
    if (!any)
        return std::nullopt;
    return st;
}

// A checkpoint path of the state file, resolved against its directory; TF's rule, plus the directory's own
// file of that base name when an absolute path no longer exists (a moved directory).
fs::path resolveStatePath(const fs::path& dir, const std::string& p) {
    fs::path path(p);
    if (path.is_relative())
        return dir / path;
    std::error_code ec;
    if (!fs::exists(path.string() + ".index", ec) && !fs::exists(path, ec) &&
        fs::exists(dir / path.filename(), ec))
        return dir / path.filename();
    if (!fs::exists(path.string() + ".index", ec) && !fs::exists(path, ec) &&
        fs::exists((dir / path.filename()).string() + ".index", ec))
        return dir / path.filename();
    return path;
}

void addStateValues(Checkpoint& ck, const fs::path& dir) {
    std::error_code ec;
    const fs::path file = dir / "checkpoint";
    if (!fs::is_regular_file(file, ec))
        return;
    const auto st = readStateFile(file);
    if (!st)
        return;
    ValueArena& arena = *ck.arena;
    ck.values.push_back({"checkpoint.model_checkpoint_path", arena.makeString(st->latest)});
    Value* list = arena.make(ValueKind::List);
    std::vector<std::string> order;
    order.push_back(st->latest);
    for (auto it = st->all.rbegin(); it != st->all.rend(); ++it)
        if (std::find(order.begin(), order.end(), *it) == order.end())
            order.push_back(*it);
    for (const auto& p : order)
        list->items.push_back(arena.makeString(p));
    ck.values.push_back({"checkpoint.all_model_checkpoint_paths", list});
}

// ---- reading a bundle
// -------------------------------------------------------------------------------------------

std::shared_ptr<const MappedFile> openShardFromDisk(const std::string& path) {
    std::error_code ec;
    if (!fs::is_regular_file(path, ec))
        return nullptr;
    return MappedFile::open(path);
}

bool readTail(const std::string& path, std::uint8_t* tail, std::uint64_t* sizeOut) {
    std::error_code ec;
    if (!fs::is_regular_file(path, ec))
        return false;
    const auto size = fs::file_size(path, ec);
    if (ec || size < kFooterSize)
        return false;
    std::ifstream in(path, std::ios::binary);
    if (!in)
        return false;
    in.seekg(static_cast<std::streamoff>(size - 8));
    in.read(reinterpret_cast<char*>(tail), 8);
    if (sizeOut)
        *sizeOut = size;
    return static_cast<bool>(in);
}

bool isTable(const std::string& path) {
    std::uint8_t tail[8];
    return readTail(path, tail, nullptr) && hasTfTableMagic({tail, 8});
}

std::shared_ptr<Checkpoint> openIndex(const std::string& indexPath, const std::string& prefix) {
    auto ck = readTfBundle(MappedFile::open(indexPath), prefix);
    addStateValues(*ck, fs::path(indexPath).parent_path().empty() ? fs::path(".")
                                                                  : fs::path(indexPath).parent_path());
    return ck;
}

CheckpointPtr openDirectory(const fs::path& dir) {
    std::error_code ec;
    if (const auto st =
            fs::is_regular_file(dir / "checkpoint", ec) ? readStateFile(dir / "checkpoint") : std::nullopt) {
        const fs::path latest = resolveStatePath(dir, st->latest);
        const std::string prefix = latest.string();
        if (fs::is_regular_file(prefix + ".index", ec))
            return openIndex(prefix + ".index", prefix);
        if (fs::is_regular_file(latest, ec) && isTable(prefix))
            return openIndex(prefix, prefix); // a V1 Saver file: refused with its own message
    }
    std::vector<fs::path> indexes;
    for (const auto& de : fs::directory_iterator(dir, ec)) {
        if (de.path().extension() == ".index" && de.is_regular_file(ec))
            indexes.push_back(de.path());
        if (indexes.size() > 8)
            break;
    }
    if (indexes.size() > 1) {
        std::string names;
        for (std::size_t i = 0; i < indexes.size() && i < 3; ++i)
            names += (i ? ", " : "") + indexes[i].filename().string();
        throw Error(ErrorCode::NotFound,
                    "directory holds several TensorFlow checkpoints (" + names +
                        (indexes.size() > 3 ? ", ..." : "") +
                        ") and no usable 'checkpoint' state file: open one of them",
                    dir.string());
    }
    if (indexes.size() == 1) {
        std::string p = indexes[0].string();
        return openIndex(p, p.substr(0, p.size() - 6));
    }
    if (indexes.empty() && fs::is_regular_file(dir / "variables" / "variables.index", ec)) {
        const std::string prefix = (dir / "variables" / "variables").string();
        return openIndex(prefix + ".index", prefix);
    }
    if (fs::is_regular_file(dir / "checkpoint", ec) && readStateFile(dir / "checkpoint"))
        throw Error(ErrorCode::NotFound,
                    "the TensorFlow checkpoint state file names '" +
                        readStateFile(dir / "checkpoint")->latest + "', but no such checkpoint exists",
                    (dir / "checkpoint").string());
    return nullptr;
}

} // namespace

bool hasTfTableMagic(std::span<const std::uint8_t> tail) {
    if (tail.size() < 8)
        return false;
    std::uint64_t v = 0;
    for (int i = 7; i >= 0; --i)
        v = (v << 8) | tail[tail.size() - 8 + static_cast<std::size_t>(i)];
    return v == kTableMagic;
}

namespace {

#if defined(__x86_64__)
// SSE 4.2 has the Castagnoli polynomial in hardware: 8 bytes per instruction instead of one table step per
// byte, which keeps checking a tensor's checksum cheap next to computing its statistics.
__attribute__((target("sse4.2"))) std::uint32_t crc32cHardware(const std::uint8_t* p, std::size_t n,
                                                               std::uint32_t c) {
    std::uint64_t c64 = c;
    for (; n >= 8; n -= 8, p += 8) {
        std::uint64_t v;
        std::memcpy(&v, p, 8);
        c64 = __builtin_ia32_crc32di(c64, v);
    }
    c = static_cast<std::uint32_t>(c64);
    for (; n > 0; --n, ++p)
        c = __builtin_ia32_crc32qi(c, *p);
    return c;
}
#endif

} // namespace

std::uint32_t crc32c(std::span<const std::uint8_t> bytes, std::uint32_t crc) {
    std::uint32_t c = ~crc;
#if defined(__x86_64__)
    static const bool hardware = __builtin_cpu_supports("sse4.2");
    if (hardware)
        return ~crc32cHardware(bytes.data(), bytes.size(), c);
#endif
    for (std::uint8_t b : bytes)
        c = kCrcTable[(c ^ b) & 0xff] ^ (c >> 8);
    return ~c;
}

std::shared_ptr<Checkpoint> readTfBundle(std::shared_ptr<const MappedFile> index, const std::string& prefix,
                                         TfShardOpener openShard, bool verifyChecksums) {
    if (!openShard)
        openShard = openShardFromDisk;
    const std::string path = index->path();
    auto ck = newCheckpoint(index, "tensorflow");
    Table table(*index, verifyChecksums);
    std::vector<TableEntry> entries;
    try {
        entries = table.readAll();
    } catch (const Error& e) {
        throw e.withFile(path);
    }
    const auto buffers = table.takeBuffers(); // keeps decompressed blocks alive while entries are read
    if (entries.empty() || !entries.front().key.empty())
        throw Error(ErrorCode::Malformed, "table has no bundle header (no entry with the empty key)", path);
    const Header header = parseHeader(entries.front(), path);

    // Shards, opened as entries need them.
    std::map<std::int64_t, int> shardSource; // shard id -> source index, -1 when missing
    auto shard = [&](std::int64_t id) -> int {
        if (auto it = shardSource.find(id); it != shardSource.end())
            return it->second;
        const std::string sp = shardPath(prefix, id, header.numShards);
        int src = -1;
        if (auto f = openShard(sp)) {
            src = static_cast<int>(ck->sources.size());
            ck->sources.push_back({sp, std::move(f)});
        } else {
            ck->findings.push_back({Severity::Error, "data shard '" + sp + "' is missing", {}, {}, {}, 0});
        }
        shardSource[id] = src;
        return src;
    };

    // Keys point into `entries`, which outlive them.
    std::vector<const std::string*> keys; // per tensor, for naming afterwards
    std::vector<std::pair<const std::string*, const Value*>> stringValues; // key, value
    std::uint64_t stringBytes = 0; // string tensors decoded, but for the object graph
    bool stringBudgetNoted = false;
    std::optional<std::uint64_t> graphAt;
    int graphSource = 0;
    std::size_t sliceEntries = 0, slicedVariables = 0;
    std::optional<std::vector<GraphNode>> graph;
    ValueArena& arena = *ck->arena;

    auto fail = [&](TensorInfo& t, const std::string& msg, std::optional<std::uint64_t> at) {
        t.error = msg;
        ck->findings.push_back({Severity::Error, msg, t.name, {}, at, 0});
    };

    for (std::size_t i = 1; i < entries.size(); ++i) {
        const TableEntry& te = entries[i];
        if (!te.key.empty() && te.key[0] == '\0') {
            ++sliceEntries; // one slice of a partitioned variable (EncodeTensorNameSlice key)
            continue;
        }
        TensorInfo t;
        t.name = te.key; // renamed below
        t.device = "cpu";
        Entry e;
        try {
            e = parseEntry(te);
        } catch (const Error& err) {
            t.dtype = DType::Bits8;
            fail(t, err.message(), err.offset());
            keys.push_back(&te.key);
            ck->tensors.push_back(std::move(t));
            continue;
        }
        const auto type = tfType(e.dtype);
        t.dtype = type ? type->dtype : DType::Bits8;
        t.typeName = type && !type->readable && e.dtype != 7 ? type->name : "";
        bool badShape = e.unknownRank;
        for (auto d : e.shape)
            badShape = badShape || d < 0;
        if (!badShape)
            t.shape = e.shape;
        std::uint64_t numel = 1;
        bool overflow = false;
        for (auto d : t.shape)
            overflow = overflow || mulOverflow(numel, static_cast<std::uint64_t>(d), &numel);
        // Strides count empty dimensions as 1, so they can overflow where the element count (0) does not.
        bool stridesOverflow = false;
        t.strides.assign(t.shape.size(), 1);
        for (std::size_t k = t.shape.size(); k-- > 1;)
            stridesOverflow =
                stridesOverflow || __builtin_mul_overflow(t.strides[k], std::max<std::int64_t>(t.shape[k], 1),
                                                          &t.strides[k - 1]);
        keys.push_back(&te.key);

        if (e.slices > 0) {
            ++slicedVariables;
            t.typeName = "partitioned";
            t.error = "partitioned variable saved in " + std::to_string(e.slices) +
                      " slices; slices are not assembled";
            ck->findings.push_back({Severity::Warning, t.error, t.name, {}, te.offset, 0});
            ck->tensors.push_back(std::move(t));
            continue;
        }
        if (!type) {
            t.typeName = "DT_" + std::to_string(e.dtype);
            fail(t, "unknown TensorFlow dtype " + std::to_string(e.dtype), te.offset);
            ck->tensors.push_back(std::move(t));
            continue;
        }
        if (badShape) {
            fail(t, "invalid tensor shape " + shapeText(e.shape) + (e.unknownRank ? " (unknown rank)" : ""),
                 te.offset);
            ck->tensors.push_back(std::move(t));
            continue;
        }
        if (overflow) {
            fail(t, "tensor shape " + shapeText(e.shape) + " has more elements than 2^64", te.offset);
            ck->tensors.push_back(std::move(t));
            continue;
        }
        if (stridesOverflow) {
            t.strides.assign(t.shape.size(), 0);
            fail(t, "tensor shape " + shapeText(e.shape) + " is too large for 64-bit strides", te.offset);
            ck->tensors.push_back(std::move(t));
            continue;
        }
        if (e.shardId < 0 || e.shardId >= header.numShards) {
            fail(t,
                 "shard_id " + std::to_string(e.shardId) + " is outside the bundle's " +
                     std::to_string(header.numShards) + " shards",
                 te.offset);
            ck->tensors.push_back(std::move(t));
            continue;
        }
        if (e.offset < 0 || e.size < 0) {
            fail(t, "negative offset or size in bundle entry", te.offset);
            ck->tensors.push_back(std::move(t));
            continue;
        }
        if (type->size != 0) {
            std::uint64_t expected = 0;
            if (mulOverflow(numel, type->size, &expected) || expected != static_cast<std::uint64_t>(e.size)) {
                fail(t,
                     "invalid size in bundle entry: " + std::to_string(e.size) + " bytes, but " + type->name +
                         " " + shapeText(t.shape) + " needs " +
                         (overflow ? std::string("more than 2^64") : std::to_string(numel * type->size)),
                     te.offset);
                ck->tensors.push_back(std::move(t));
                continue;
            }
        }
        const int src = shard(e.shardId);
        StorageInfo s;
        s.key = te.key;
        s.device = "cpu";
        s.dtype = t.dtype;
        s.nbytes = static_cast<std::uint64_t>(e.size);
        s.fileOffset = static_cast<std::uint64_t>(e.offset);
        s.bigEndian = header.bigEndian;
        if (e.crc && e.dtype != 7)
            s.crc32c = unmaskCrc32c(*e.crc); // checked by TensorReader when the values are read
        s.source = src < 0 ? 0 : src;
        const std::string sp = shardPath(prefix, e.shardId, header.numShards);
        std::uint64_t end = 0;
        if (src < 0) {
            s.error = "data shard '" + sp + "' is missing";
        } else if (addOverflow(s.fileOffset, s.nbytes, &end) ||
                   end > ck->sources[static_cast<std::size_t>(src)].file->size()) {
            s.error = "entry offset " + std::to_string(e.offset) + " + size " + std::to_string(e.size) +
                      " runs past the end of data shard '" + sp + "' (" +
                      std::to_string(ck->sources[static_cast<std::size_t>(src)].file->size()) + " bytes)";
        }
        if (!type->readable && e.dtype != 7 && s.error.empty())
            s.error = std::string("TensorFlow dtype ") + type->name + " is not readable";

        if (e.dtype == 7) {
            // DT_STRING: shown as a value, never as a tensor.
            if (!s.error.empty()) {
                t.error = s.error;
                if (s.error.find("missing") == std::string::npos)
                    ck->findings.push_back({Severity::Error, s.error, t.name, {}, te.offset, 0});
                t.typeName = "DT_STRING";
                ck->tensors.push_back(std::move(t));
                continue;
            }
            const bool isGraph = te.key == "_CHECKPOINTABLE_OBJECT_GRAPH";
            const bool overBudget = !isGraph && s.nbytes > kMaxAllStringBytes - stringBytes;
            if (numel > kMaxStringElements || s.nbytes > kMaxStringTensorBytes || overBudget) {
                Value* v = arena.make(ValueKind::Bytes);
                v->text = "<string tensor " + shapeText(t.shape) + " of " + std::to_string(s.nbytes) +
                          " bytes, not loaded" +
                          (numel > kMaxStringElements || s.nbytes > kMaxStringTensorBytes
                               ? std::string()
                               : ": the bundle's string tensors exceed " +
                                     std::to_string(kMaxAllStringBytes) + " bytes in all") +
                          ">";
                if (overBudget && !stringBudgetNoted) {
                    stringBudgetNoted = true;
                    ck->findings.push_back({Severity::Warning,
                                            "string tensors add up to more than " +
                                                std::to_string(kMaxAllStringBytes) +
                                                " bytes; this one and later ones are not loaded",
                                            te.key,
                                            {},
                                            te.offset,
                                            0});
                }
                stringValues.emplace_back(&te.key, v);
                keys.pop_back();
                continue;
            }
            if (!isGraph)
                stringBytes += s.nbytes;
            const MappedFile& f = *ck->sources[static_cast<std::size_t>(src)].file;
            std::string buf(static_cast<std::size_t>(s.nbytes), '\0');
            if (!f.readAt(s.fileOffset, buf.size(), buf.data()))
                throw Error(ErrorCode::Changed, "data shard changed while it was read", f.path(),
                            s.fileOffset);
            try {
                const auto* bytes = reinterpret_cast<const std::uint8_t*>(buf.data());
                Proto r({bytes, buf.size()}, s.fileOffset, "string tensor '" + hexKey(te.key) + "'");
                std::vector<std::uint64_t> lens;
                std::uint64_t total = 0;
                for (std::uint64_t k = 0; k < numel; ++k) {
                    lens.push_back(r.varint());
                    if (addOverflow(total, lens.back(), &total))
                        r.fail("string lengths overflow");
                }
                const std::uint64_t maskAt = r.where();
                const std::uint32_t lengthsMask = r.fixed32();
                const std::size_t dataAt = static_cast<std::size_t>(r.where() - s.fileOffset);
                if (total != buf.size() - dataAt)
                    r.fail("string lengths add up to " + std::to_string(total) +
                           " bytes, but the entry holds " + std::to_string(buf.size() - dataAt));
                // Checksums as TF writes them: the lengths as fixed u32 (u64 when larger), then the entry's
                // over that CRC, the 4 stored mask bytes and the string bytes.
                std::uint32_t lengthsCrc = 0;
                for (auto len : lens) {
                    std::uint8_t le[8];
                    for (int k = 0; k < 8; ++k)
                        le[k] = static_cast<std::uint8_t>(len >> (8 * k));
                    lengthsCrc = crc32c({le, len > 0xffffffffu ? 8u : 4u}, lengthsCrc);
                }
                if (maskCrc32c(lengthsCrc) != lengthsMask)
                    ck->findings.push_back({Severity::Error,
                                            "checksum of the string lengths does not match",
                                            te.key,
                                            {},
                                            maskAt,
                                            src});
                else if (e.crc) {
                    const std::uint32_t calc = crc32c({bytes + dataAt, buf.size() - dataAt},
                                                      crc32c({bytes + dataAt - 4, 4}, lengthsCrc));
                    if (unmaskCrc32c(*e.crc) != calc)
                        ck->findings.push_back(
                            {Severity::Error,
                             "checksum does not match: stored " + std::to_string(unmaskCrc32c(*e.crc)) +
                                 " vs. calculated " + std::to_string(calc) + " on the string bytes",
                             te.key,
                             {},
                             s.fileOffset,
                             src});
                }
                std::vector<std::string_view> strs; // into buf
                std::size_t at = dataAt;
                for (auto len : lens) {
                    strs.emplace_back(buf.data() + at, static_cast<std::size_t>(len));
                    at += static_cast<std::size_t>(len);
                }
                if (isGraph && strs.size() == 1) {
                    try {
                        const auto* g = reinterpret_cast<const std::uint8_t*>(strs[0].data());
                        graph = parseGraph({g, strs[0].size()}, s.fileOffset + dataAt);
                        graphAt = s.fileOffset + dataAt;
                        graphSource = src;
                    } catch (const Error& err) {
                        ck->findings.push_back({Severity::Warning,
                                                err.message() + "; tensors are named by their keys",
                                                te.key,
                                                {},
                                                err.offset(),
                                                src});
                    }
                }
                auto make = [&](std::string_view str) {
                    Value* v;
                    if (isValidUtf8(str) && !isGraph) {
                        v = arena.makeString(std::string(str));
                    } else {
                        v = arena.make(ValueKind::Bytes);
                        v->text = str;
                    }
                    return v;
                };
                Value* v;
                if (t.shape.empty() && strs.size() == 1) {
                    v = make(strs[0]);
                } else {
                    v = arena.make(ValueKind::List);
                    for (std::size_t k = 0; k < strs.size() && k < kMaxListedStrings; ++k)
                        v->items.push_back(make(strs[k]));
                }
                stringValues.emplace_back(&te.key, v);
                keys.pop_back();
            } catch (const Error& err) {
                t.typeName = "DT_STRING";
                fail(t, err.message(), err.offset());
                ck->tensors.push_back(std::move(t));
            }
            continue;
        }

        const bool reportStorage = !s.error.empty() && s.error.find("is missing") == std::string::npos;
        t.storage = static_cast<int>(ck->storages.size());
        ck->storages.push_back(std::move(s));
        const StorageInfo& stored = ck->storages.back();
        if (!stored.error.empty()) {
            t.error = stored.error;
            if (reportStorage)
                ck->findings.push_back({type->readable ? Severity::Error : Severity::Warning,
                                        stored.error,
                                        t.name,
                                        {},
                                        te.offset,
                                        0});
        }
        ck->tensors.push_back(std::move(t));
    }

    // Names.
    std::optional<GraphNames> graphNames;
    if (graph)
        graphNames.emplace(*graph);
    std::unordered_set<std::string> used;
    std::unordered_map<std::string_view, std::string> renamed; // key -> name, for the findings
    auto readable = [&](const std::string& key, std::size_t ordinal) {
        std::string name;
        if (graphNames)
            if (auto n = graphNames->name(key))
                name = std::move(*n);
        if (name.empty())
            name = nameFromKey(key);
        // Collisions (two keys with one readable name) keep the key itself, then the key and its ordinal.
        if (name.empty() || used.count(name))
            name = key;
        if (used.count(name))
            name = key + "#" + std::to_string(ordinal);
        while (used.count(name))
            name += "#";
        used.insert(name);
        renamed.emplace(key, name);
        return name;
    };
    for (std::size_t k = 0; k < ck->tensors.size(); ++k)
        ck->tensors[k].name = readable(*keys[k], k);
    for (const auto& [key, v] : stringValues)
        ck->values.push_back({*key == "_CHECKPOINTABLE_OBJECT_GRAPH"
                                  ? *key
                                  : readable(*key, ck->tensors.size() + ck->values.size()),
                              v});
    if (graphNames && graphNames->exhausted())
        ck->findings.push_back({Severity::Warning,
                                "names from the object graph add up to more than " +
                                    std::to_string(kMaxGraphNameBytes) +
                                    " bytes; the remaining tensors are named by their keys",
                                "_CHECKPOINTABLE_OBJECT_GRAPH",
                                {},
                                graphAt,
                                graphSource});
    for (auto& f : ck->findings)
        if (auto it = renamed.find(f.object); it != renamed.end())
            f.object = it->second;

    std::string detail = "TensorFlow V2 bundle, " + std::to_string(header.numShards) +
                         (header.numShards == 1 ? " data shard" : " data shards");
    if (graph)
        detail += ", object graph of " + std::to_string(graph->size()) + " objects";
    if (header.bigEndian)
        detail += ", big-endian";
    if (slicedVariables)
        detail += ", " + std::to_string(slicedVariables) + " partitioned variables (" +
                  std::to_string(sliceEntries) + " slices, not assembled)";
    ck->formatDetail = detail;
    (void)buffers;
    return ck;
}

CheckpointPtr tryOpenTfBundle(const std::string& path) {
    std::error_code ec;
    const fs::file_status st = fs::status(path, ec);
    if (fs::is_directory(st))
        return openDirectory(fs::path(path));
    if (fs::is_regular_file(st)) {
        static const std::regex shardName(R"(^(.*)\.data-[0-9]{5,}-of-[0-9]{5,}$)");
        std::smatch m;
        if (std::regex_match(path, m, shardName)) {
            const std::string prefix = m[1];
            if (!fs::is_regular_file(prefix + ".index", ec))
                throw Error(ErrorCode::NotFound,
                            "TensorFlow data shard without its index: '" + prefix + ".index' does not exist",
                            path);
            return openIndex(prefix + ".index", prefix);
        }
        if (fs::path(path).filename() == "checkpoint" && readStateFile(path)) {
            const fs::path dir =
                fs::path(path).parent_path().empty() ? fs::path(".") : fs::path(path).parent_path();
            return openDirectory(dir);
        }
        const bool named = path.size() > 6 && path.ends_with(".index");
        if (named || isTable(path)) {
            const std::string prefix = named ? path.substr(0, path.size() - 6) : path;
            return openIndex(path, prefix);
        }
        return nullptr;
    }
    if (!fs::exists(st) && fs::is_regular_file(path + ".index", ec))
        return openIndex(path + ".index", path);
    return nullptr;
}

} // namespace ckpt
