#pragma once

// Zip archives as torch.save, torch.jit.save and Keras write them, read from a mapping.
//
// Layout (APPNOTE 6.3), read from the end:
//   1. End of central directory (EOCD, 22 bytes + comment) within the last 64 KiB + 22 bytes
//   2. optional zip64 EOCD locator (20 bytes) right before it, pointing at the zip64 EOCD (56+ bytes)
//   3. central directory: one 46-byte header + name + extra + comment per entry; zip64 extra (id 0x0001)
//      carries sizes and offsets that do not fit in 32 bits
//   4. per entry, a 30-byte local header + name + extra, then the data (stored: method 0; deflated: 8)
// Checks: every structure inside the file, the central directory before its EOCD, entry count within what
// the directory's size can hold, each local header's name equal to its central one, data inside the file,
// no two entries overlapping, names unique (also ignoring ASCII case, which PyTorch's lookup ignores).
// An entry that fails its own checks is kept with `problem` set, so one bad record does not hide the rest;
// a broken directory fails the whole archive.
// Limits: 10 million entries, names of 64 KiB (the format's own cap).

#include "error.h"
#include "mappedfile.h"

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace ckpt {

struct ZipEntry {
    std::string name;
    std::uint64_t localHeaderOffset = 0;
    std::uint64_t dataOffset = 0; // absolute offset of the first data byte
    std::uint64_t compressedSize = 0;
    std::uint64_t uncompressedSize = 0;
    std::uint32_t crc32 = 0;
    std::uint16_t method = 0;
    std::string problem; // empty when the entry is usable
};

class ZipArchive {
public:
    // `base`/`length` select a slice of the file holding the archive (a .keras member, a DCP slice);
    // offsets in the archive are relative to the slice.
    explicit ZipArchive(std::shared_ptr<const MappedFile> file);
    ZipArchive(std::shared_ptr<const MappedFile> file, std::uint64_t base, std::uint64_t length);

    static bool looksLikeZip(std::span<const std::uint8_t> head);

    const std::vector<ZipEntry>& entries() const noexcept { return m_entries; }
    const ZipEntry* find(std::string_view name) const;
    const std::shared_ptr<const MappedFile>& file() const noexcept { return m_file; }

    // Zero-copy view of a stored entry's bytes; throws for deflated or broken entries.
    std::span<const std::uint8_t> storedData(const ZipEntry& e) const;
    // The entry's bytes, inflated when deflated; refuses more than `maxSize` bytes of output.
    std::string read(const ZipEntry& e, std::uint64_t maxSize) const;
    // The entry's first `n` bytes (all of them when it is shorter), inflating no more of the stream than
    // they need; the same checks of the declared size as read(). A stream that is corrupt or ends before
    // the prefix (or, for the whole entry, before or after the declared size) throws.
    std::string readPrefix(const ZipEntry& e, std::uint64_t n, std::uint64_t maxSize) const;

private:
    void parse();
    std::string inflateEntry(const ZipEntry& e, std::uint64_t maxSize, std::uint64_t prefix) const;
    [[noreturn]] void fail(ErrorCode code, std::uint64_t offset, const std::string& what) const;

    std::shared_ptr<const MappedFile> m_file;
    std::uint64_t m_base = 0;
    std::uint64_t m_length = 0;
    std::vector<ZipEntry> m_entries;
    std::vector<std::uint32_t> m_index; // entries sorted by name
};

} // namespace ckpt
