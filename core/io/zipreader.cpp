#include "zipreader.h"

#include "bytereader.h"
#include "error.h"

#include <algorithm>
#include <cctype>
#include <limits>

#include <zlib.h>

namespace ckpt {
namespace {

constexpr std::uint32_t kLocalSig = 0x04034b50;
constexpr std::uint32_t kCentralSig = 0x02014b50;
constexpr std::uint32_t kZip64EocdSig = 0x06064b50;
constexpr std::uint32_t kZip64LocatorSig = 0x07064b50;
constexpr std::size_t kEocdSize = 22;
constexpr std::size_t kCentralHeaderSize = 46;
constexpr std::size_t kLocalHeaderSize = 30;
constexpr std::uint64_t kMaxEntries = 10'000'000;
// Deflate produces at most 258 bytes per 2 bits of a dynamic-Huffman block (about 1032:1); a declared size
// beyond that (plus a little for tiny streams) cannot be the entry's real output.
constexpr std::uint64_t kMaxDeflateRatio = 1032;
constexpr std::uint64_t kDeflateSlack = 4096;
// zlib counts in 32-bit units: input and output are handed over at most this much per call.
constexpr std::uint64_t kInflateStep = 1ull << 30;

} // namespace

ZipArchive::ZipArchive(std::shared_ptr<const MappedFile> file)
    : ZipArchive(file, 0, file->size()) {}

ZipArchive::ZipArchive(std::shared_ptr<const MappedFile> file, std::uint64_t base, std::uint64_t length)
    : m_file(std::move(file))
    , m_base(base)
    , m_length(length) {
    if (m_base > m_file->size() || m_length > m_file->size() - m_base)
        fail(ErrorCode::OutOfBounds, 0, "zip slice lies outside the file");
    try {
        parse();
    } catch (const Error& e) {
        throw e.withFile(m_file->path()); // a record cut short, found by a ByteReader
    }
}

bool ZipArchive::looksLikeZip(std::span<const std::uint8_t> head) {
    return head.size() >= 4 && head[0] == 'P' && head[1] == 'K' && head[2] == 3 && head[3] == 4;
}

void ZipArchive::fail(ErrorCode code, std::uint64_t offset, const std::string& what) const {
    throw Error(code, what, m_file->path(), m_base + offset);
}

void ZipArchive::parse() {
    const std::span<const std::uint8_t> all = m_file->bytes().subspan(m_base, m_length);
    if (all.size() < kEocdSize)
        fail(ErrorCode::Truncated, 0,
             "zip archive is too short (" + std::to_string(all.size()) +
                 " bytes) to hold an end-of-directory record");

    // 1. EOCD: the last signature whose comment length reaches exactly to the end.
    std::optional<std::size_t> eocd;
    const std::size_t lowest = all.size() > kEocdSize + 0xFFFF ? all.size() - kEocdSize - 0xFFFF : 0;
    for (std::size_t pos = all.size() - kEocdSize + 1; pos-- > lowest;) {
        if (all[pos] == 0x50 && all[pos + 1] == 0x4b && all[pos + 2] == 5 && all[pos + 3] == 6) {
            const std::size_t commentLen = all[pos + 20] | (all[pos + 21] << 8);
            if (pos + kEocdSize + commentLen == all.size()) {
                eocd = pos;
                break;
            }
        }
    }
    if (!eocd)
        fail(ErrorCode::Truncated, all.size(),
             "no zip end-of-central-directory record: the file is truncated or not a zip archive");

    ByteReader r(all, m_base, "zip end of central directory");
    r.seek(*eocd + 4);
    const std::uint16_t disk = r.u16le();
    const std::uint16_t cdDisk = r.u16le();
    r.u16le(); // entries on this disk
    std::uint64_t count = r.u16le();
    std::uint64_t cdSize = r.u32le();
    std::uint64_t cdOffset = r.u32le();
    std::uint64_t cdLimit = *eocd; // the directory must end before its EOCD

    // 2. zip64: torch always writes it; required when any of the fields above saturated.
    if (*eocd >= 20) {
        ByteReader loc(all, m_base, "zip64 end-of-directory locator");
        loc.seek(*eocd - 20);
        if (loc.u32le() == kZip64LocatorSig) {
            loc.u32le(); // disk with the zip64 EOCD
            const std::uint64_t z64 = loc.u64le();
            if (z64 > *eocd - 20 || *eocd - 20 - z64 < 56)
                fail(ErrorCode::OutOfBounds, *eocd - 20,
                     "zip64 end-of-directory offset " + std::to_string(z64) +
                         " does not lie before its locator");
            ByteReader z(all, m_base, "zip64 end of central directory");
            z.seek(z64);
            if (z.u32le() != kZip64EocdSig)
                fail(ErrorCode::Malformed, z64, "zip64 end-of-directory record has a bad signature");
            z.skip(8 + 2 + 2 + 4 + 4); // record size, versions, disk numbers
            z.u64le();                 // entries on this disk
            count = z.u64le();
            cdSize = z.u64le();
            cdOffset = z.u64le();
            cdLimit = z64;
        } else if (count == 0xFFFF || cdSize == 0xFFFFFFFF || cdOffset == 0xFFFFFFFF) {
            fail(ErrorCode::Malformed, *eocd,
                 "zip end-of-directory fields are saturated but there is no zip64 record");
        }
    }
    if (disk != 0 || cdDisk != 0)
        fail(ErrorCode::Unsupported, *eocd, "multi-volume zip archives are not supported");
    if (cdOffset > cdLimit || cdSize > cdLimit - cdOffset)
        fail(ErrorCode::OutOfBounds, *eocd,
             "central directory (offset " + std::to_string(cdOffset) + ", " + std::to_string(cdSize) +
                 " bytes) lies outside the archive");
    if (count > kMaxEntries)
        fail(ErrorCode::Limit, *eocd,
             "zip archive declares " + std::to_string(count) + " entries (limit " +
                 std::to_string(kMaxEntries) + ")");
    if (count * kCentralHeaderSize > cdSize)
        fail(ErrorCode::Malformed, *eocd,
             "central directory of " + std::to_string(cdSize) + " bytes cannot hold " +
                 std::to_string(count) + " entries");

    // 3. Central directory.
    ByteReader cd(all.subspan(cdOffset, cdSize), m_base + cdOffset, "zip central directory");
    m_entries.reserve(count);
    for (std::uint64_t i = 0; i < count; ++i) {
        const std::uint64_t at = cdOffset + cd.position();
        if (cd.u32le() != kCentralSig)
            fail(ErrorCode::Malformed, at,
                 "central directory entry " + std::to_string(i) + " has a bad signature");
        cd.skip(2 + 2); // made by, needed
        const std::uint16_t flags = cd.u16le();
        ZipEntry e;
        e.method = cd.u16le();
        cd.skip(4); // time, date
        e.crc32 = cd.u32le();
        e.compressedSize = cd.u32le();
        e.uncompressedSize = cd.u32le();
        const std::uint16_t nameLen = cd.u16le();
        const std::uint16_t extraLen = cd.u16le();
        const std::uint16_t commentLen = cd.u16le();
        const std::uint16_t diskStart = cd.u16le();
        cd.skip(2 + 4); // attributes
        e.localHeaderOffset = cd.u32le();
        e.name = std::string(cd.stringView(nameLen));
        const std::uint64_t extraAt = m_base + cdOffset + cd.position();
        ByteReader extra(cd.bytes(extraLen), extraAt, "zip extra field");
        cd.skip(commentLen);
        while (extra.remaining() >= 4) {
            const std::uint16_t id = extra.u16le();
            const std::uint16_t len = extra.u16le();
            const std::uint64_t fieldAt = extraAt + extra.position();
            ByteReader field(extra.bytes(len), fieldAt, "zip64 extra field of '" + e.name + "'");
            if (id != 0x0001)
                continue;
            if (e.uncompressedSize == 0xFFFFFFFF)
                e.uncompressedSize = field.u64le();
            if (e.compressedSize == 0xFFFFFFFF)
                e.compressedSize = field.u64le();
            if (e.localHeaderOffset == 0xFFFFFFFF)
                e.localHeaderOffset = field.u64le();
        }
        if (e.name.empty() || e.name.find('\0') != std::string::npos)
            fail(ErrorCode::Malformed, at,
                 "zip entry " + std::to_string(i) + " has an empty or invalid name");
        if (flags & 0x1)
            e.problem = "entry is encrypted";
        else if (diskStart != 0)
            e.problem = "entry lives on another volume";
        else if (e.method != 0 && e.method != 8)
            e.problem = "compression method " + std::to_string(e.method) + " is not supported";
        else if (e.method == 0 && e.compressedSize != e.uncompressedSize)
            e.problem = "stored entry has compressed size " + std::to_string(e.compressedSize) +
                        " but uncompressed size " + std::to_string(e.uncompressedSize);
        m_entries.push_back(std::move(e));
    }

    // 4. Local headers and data extents. Where entries are far apart (tensor records of a large
    // checkpoint), headers are read with pread so that the mapping of the data between them stays untouched.
    const bool sparse = !m_entries.empty() && all.size() / m_entries.size() > (256u << 10);
    std::string localName;
    for (ZipEntry& e : m_entries) {
        if (!e.problem.empty())
            continue;
        if (e.localHeaderOffset > cdOffset || cdOffset - e.localHeaderOffset < kLocalHeaderSize) {
            e.problem = "local header offset " + std::to_string(e.localHeaderOffset) +
                        " lies outside the archive data";
            continue;
        }
        std::uint8_t header[kLocalHeaderSize + 512];
        const std::size_t want =
            static_cast<std::size_t>(std::min<std::uint64_t>(sizeof header, cdOffset - e.localHeaderOffset));
        const std::uint8_t* h = all.data() + e.localHeaderOffset;
        if (sparse) {
            if (!m_file->readAt(m_base + e.localHeaderOffset, want, header)) {
                e.problem = "local header cannot be read";
                continue;
            }
            h = header;
        }
        ByteReader lh(std::span<const std::uint8_t>(h, kLocalHeaderSize), m_base + e.localHeaderOffset,
                      "zip local header of '" + e.name + "'");
        if (lh.u32le() != kLocalSig) {
            e.problem = "local header has a bad signature";
            continue;
        }
        lh.skip(22);
        const std::uint64_t nameLen = lh.u16le();
        const std::uint64_t extraLen = lh.u16le();
        const std::uint64_t nameAt = e.localHeaderOffset + kLocalHeaderSize;
        if (nameAt + nameLen + extraLen > cdOffset) {
            e.problem = "local header runs past the start of the central directory";
            continue;
        }
        if (sparse && kLocalHeaderSize + nameLen <= want) {
            localName.assign(reinterpret_cast<const char*>(header + kLocalHeaderSize), nameLen);
        } else if (sparse) {
            localName.resize(nameLen);
            if (!m_file->readAt(m_base + nameAt, nameLen, localName.data())) {
                e.problem = "local header cannot be read";
                continue;
            }
        } else {
            localName.assign(reinterpret_cast<const char*>(all.data() + nameAt), nameLen);
        }
        if (localName != e.name) {
            e.problem =
                "local header names '" + localName + "' but the central directory names it '" + e.name + "'";
            continue;
        }
        e.dataOffset = nameAt + nameLen + extraLen;
        if (e.compressedSize > cdOffset - e.dataOffset) {
            e.problem = "data (" + std::to_string(e.compressedSize) + " bytes at offset " +
                        std::to_string(e.dataOffset) + ") runs past the end of the archive data";
            continue;
        }
    }
    // No two entries may share bytes: a crafted archive could otherwise alias one record into another.
    std::vector<ZipEntry*> byOffset;
    byOffset.reserve(m_entries.size());
    for (ZipEntry& e : m_entries)
        if (e.problem.empty())
            byOffset.push_back(&e);
    std::sort(byOffset.begin(), byOffset.end(), [](const ZipEntry* a, const ZipEntry* b) {
        return a->localHeaderOffset < b->localHeaderOffset;
    });
    for (std::size_t i = 1; i < byOffset.size(); ++i) {
        ZipEntry* prev = byOffset[i - 1];
        ZipEntry* cur = byOffset[i];
        if (cur->localHeaderOffset < prev->dataOffset + prev->compressedSize) {
            const std::string msg = "entries '" + prev->name + "' and '" + cur->name + "' overlap";
            prev->problem = msg;
            cur->problem = msg;
        }
    }
    // Offsets were relative to the slice; make them absolute in the file.
    for (ZipEntry& e : m_entries) {
        e.localHeaderOffset += m_base;
        if (e.problem.empty())
            e.dataOffset += m_base;
    }
    // Sorted index for lookups; duplicates, also ignoring ASCII case as PyTorch's lookup does, are refused.
    m_index.resize(m_entries.size());
    for (std::size_t i = 0; i < m_entries.size(); ++i)
        m_index[i] = static_cast<std::uint32_t>(i);
    auto fold = [](unsigned char c) { return c >= 'A' && c <= 'Z' ? c | 0x20 : c; }; // ASCII only, as miniz
    auto lowerLess = [&](unsigned char a, unsigned char b) { return fold(a) < fold(b); };
    auto caseLess = [&](std::uint32_t a, std::uint32_t b) {
        const std::string& x = m_entries[a].name;
        const std::string& y = m_entries[b].name;
        return std::lexicographical_compare(x.begin(), x.end(), y.begin(), y.end(), lowerLess);
    };
    std::sort(m_index.begin(), m_index.end(), caseLess);
    for (std::size_t i = 1; i < m_index.size(); ++i)
        if (!caseLess(m_index[i - 1], m_index[i])) {
            const ZipEntry& e = m_entries[std::max(m_index[i - 1], m_index[i])];
            fail(ErrorCode::Malformed, e.localHeaderOffset - m_base,
                 "zip entry name '" + e.name +
                     "' appears twice (names are compared ignoring case, as PyTorch looks "
                     "them up)");
        }
    std::sort(m_index.begin(), m_index.end(),
              [&](std::uint32_t a, std::uint32_t b) { return m_entries[a].name < m_entries[b].name; });
}

const ZipEntry* ZipArchive::find(std::string_view name) const {
    const auto it =
        std::lower_bound(m_index.begin(), m_index.end(), name,
                         [&](std::uint32_t i, std::string_view n) { return m_entries[i].name < n; });
    return it != m_index.end() && m_entries[*it].name == name ? &m_entries[*it] : nullptr;
}

std::span<const std::uint8_t> ZipArchive::storedData(const ZipEntry& e) const {
    if (!e.problem.empty())
        throw Error(ErrorCode::Malformed, "zip entry '" + e.name + "': " + e.problem, m_file->path(),
                    e.localHeaderOffset);
    if (e.method != 0)
        throw Error(ErrorCode::Unsupported,
                    "zip entry '" + e.name + "' is compressed; only stored entries map in place",
                    m_file->path(), e.localHeaderOffset);
    return m_file->bytes().subspan(e.dataOffset, e.compressedSize);
}

std::string ZipArchive::read(const ZipEntry& e, std::uint64_t maxSize) const {
    return inflateEntry(e, maxSize, std::numeric_limits<std::uint64_t>::max());
}

std::string ZipArchive::readPrefix(const ZipEntry& e, std::uint64_t n, std::uint64_t maxSize) const {
    return inflateEntry(e, maxSize, n);
}

std::string ZipArchive::inflateEntry(const ZipEntry& e, std::uint64_t maxSize, std::uint64_t prefix) const {
    if (e.uncompressedSize > maxSize)
        throw Error(ErrorCode::Limit,
                    "zip entry '" + e.name + "' is " + std::to_string(e.uncompressedSize) + " bytes (limit " +
                        std::to_string(maxSize) + ")",
                    m_file->path(), e.localHeaderOffset);
    if (e.method == 0) {
        const auto span = storedData(e);
        return std::string(reinterpret_cast<const char*>(span.data()),
                           static_cast<std::size_t>(std::min<std::uint64_t>(span.size(), prefix)));
    }
    if (!e.problem.empty())
        throw Error(ErrorCode::Malformed, "zip entry '" + e.name + "': " + e.problem, m_file->path(),
                    e.localHeaderOffset);
    if (e.compressedSize > (std::numeric_limits<std::uint64_t>::max() - kDeflateSlack) / kMaxDeflateRatio ||
        e.uncompressedSize > e.compressedSize * kMaxDeflateRatio + kDeflateSlack)
        throw Error(ErrorCode::Malformed,
                    "zip entry '" + e.name + "' declares " + std::to_string(e.uncompressedSize) +
                        " bytes from " + std::to_string(e.compressedSize) +
                        " compressed bytes, more than deflate can produce (at most " +
                        std::to_string(kMaxDeflateRatio) + " bytes per compressed byte)",
                    m_file->path(), e.localHeaderOffset);
    // A prefix shorter than the entry stops once it is there; otherwise the whole stream is inflated and
    // must end at exactly the declared size.
    const bool whole = prefix >= e.uncompressedSize;
    // The buffer grows with the output actually produced, up to one byte past the declared size (which
    // shows a stream that runs past it): a false size costs no memory of its own. Its capacity is reserved
    // up front where the allocator agrees: address space only, but growing then copies nothing.
    const std::uint64_t cap = whole ? e.uncompressedSize + 1 : prefix;
    std::string out;
    if (whole && cap > (64u << 10)) {
        try {
            out.reserve(static_cast<std::size_t>(cap));
        } catch (const std::bad_alloc&) {
        }
    }
    std::uint64_t produced = 0;
    std::uint64_t inLeft = e.compressedSize;
    const Bytef* in = m_file->data() + e.dataOffset;
    z_stream zs{};
    if (inflateInit2(&zs, -MAX_WBITS) != Z_OK)
        throw Error(ErrorCode::Io, "cannot initialise zlib", m_file->path());
    int rc = Z_OK;
    for (;;) {
        if (zs.avail_in == 0 && inLeft > 0) {
            const std::uint64_t step = std::min(inLeft, kInflateStep);
            zs.next_in = const_cast<Bytef*>(in);
            zs.avail_in = static_cast<uInt>(step);
            in += step;
            inLeft -= step;
        }
        if (produced == out.size()) {
            if (out.size() == cap)
                break; // the prefix is complete, or more output than declared
            out.resize(static_cast<std::size_t>(
                std::min<std::uint64_t>(cap, std::max<std::uint64_t>(64u << 10, out.size() * 2))));
        }
        const uInt inBefore = zs.avail_in;
        const uInt room = static_cast<uInt>(std::min<std::uint64_t>(out.size() - produced, kInflateStep));
        zs.next_out = reinterpret_cast<Bytef*>(out.data() + produced);
        zs.avail_out = room;
        rc = inflate(&zs, Z_NO_FLUSH);
        produced += room - zs.avail_out;
        if (rc == Z_STREAM_END || (rc != Z_OK && rc != Z_BUF_ERROR))
            break;
        if (zs.avail_in == inBefore && zs.avail_out == room && (inLeft == 0 || zs.avail_in > 0))
            break; // no progress: the input ends before the stream does
    }
    inflateEnd(&zs);
    const bool ok = whole ? rc == Z_STREAM_END && produced == e.uncompressedSize
                          : (rc == Z_OK || rc == Z_BUF_ERROR) && produced == prefix;
    if (!ok)
        throw Error(ErrorCode::Malformed,
                    "zip entry '" + e.name + "' does not inflate to its declared " +
                        std::to_string(e.uncompressedSize) + " bytes",
                    m_file->path(), e.dataOffset);
    out.resize(static_cast<std::size_t>(produced));
    return out;
}

} // namespace ckpt
