#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>

namespace ckpt {

// A whole file mapped read-only. Shared ownership: every span handed out from it is only valid while some
// shared_ptr to the MappedFile lives, so views hold one.
//
// The file is opened O_RDONLY and mapped PROT_READ: it is never written. Files of any size (> 4 GiB) map in
// one piece on 64-bit systems. If another process truncates the file while it is mapped, touching the lost
// pages raises SIGBUS; bulk reads of tensor data therefore go through copyGuarded(), which turns that signal
// into a clean failure, and changedOnDisk() tells whether the file still is what was opened. Reads outside
// the guards (metadata while a file opens) are covered too: the handler maps a page of zeros over a lost
// page and marks the file (lostPages()), so that openCheckpoint() fails with Error(Changed) instead.
class MappedFile {
public:
    static std::shared_ptr<const MappedFile> open(const std::string& path);
    // A private in-memory buffer presented as a file (decompressed records, tests, fuzzing).
    static std::shared_ptr<const MappedFile> fromBuffer(std::string name, std::string bytes);
    // An in-memory source of `size` bytes that `load` produces on first access (data(), bytes(), readAt(),
    // copyGuarded(), ensureReadable()), once, whichever thread asks first. When `load` throws or returns
    // another byte count, that access and every later one throw an Error naming the source.
    static std::shared_ptr<const MappedFile> lazy(std::string name, std::uint64_t size,
                                                  std::function<std::string()> load);

    ~MappedFile();
    MappedFile(const MappedFile&) = delete;
    MappedFile& operator=(const MappedFile&) = delete;

    const std::string& path() const noexcept { return m_path; }
    // True for a mapped file (open()), false for an in-memory buffer (fromBuffer()).
    bool isOnDisk() const noexcept { return m_fd >= 0; }
    std::uint64_t size() const noexcept { return m_size; }
    // Throw only for a lazy source whose bytes cannot be produced.
    const std::uint8_t* data() const { return m_lazy ? lazyData() : m_data; }
    std::span<const std::uint8_t> bytes() const { return {data(), static_cast<std::size_t>(m_size)}; }
    // False for a lazy source whose bytes were not asked for yet.
    bool isLoaded() const noexcept;

    // True when the file on disk no longer matches what was mapped: shrunk, replaced, or modified.
    bool changedOnDisk() const;
    // True when a read outside the guards hit pages lost to a truncation: the SIGBUS handler mapped zeros
    // there so that the read went on instead of killing the process, and what it read is no data.
    bool lostPages() const;
    // Throws Error(Changed), naming `object` (the tensor about to be read or just read), when the file is
    // no longer what was mapped: it shrank or lost pages ("truncated"), or it was written to since it was
    // opened, its size or modification time changed ("modified"; the mapping would show the new bytes at
    // the old offsets). A file replaced by rename keeps its mapped bytes and passes. For a lazy source,
    // produces its bytes (or throws their error).
    void ensureReadable(const std::string& object = {}) const;

    // Tells the kernel this process is done with [offset, offset + n) for now: the pages leave our resident
    // set (they stay in the page cache), so streaming over a large file keeps memory bounded.
    void release(std::uint64_t offset, std::uint64_t n) const;

    // Copies [offset, offset + n) into dst with pread, without touching the mapping: the kernel maps up to
    // 64 KiB around every touched page, so reading small headers spread over a huge file through the
    // mapping would pull tensor data into the process. Falls back to the mapping for in-memory buffers.
    bool readAt(std::uint64_t offset, std::size_t n, void* dst) const;

    // Copies [offset, offset + n) into dst. Returns false, instead of dying with SIGBUS, when the pages
    // are gone because the file was truncated underneath the mapping.
    bool copyGuarded(std::uint64_t offset, std::size_t n, void* dst) const;
    // Runs fn(ctx), which reads from the mapping, and returns false instead of dying when a read hits pages
    // lost to truncation. fn must not own objects with destructors: it may be left at any instruction.
    static bool runGuarded(void (*fn)(void*), void* ctx);

private:
    MappedFile() = default;
    struct Lazy;
    const std::uint8_t* lazyData() const;
    void loadIfLazy() const; // for accessors that hand out no pointer

    std::string m_path;
    const std::uint8_t* m_data = nullptr;
    std::uint64_t m_size = 0;
    bool m_mapped = false;
    std::string m_buffer;
    std::unique_ptr<Lazy> m_lazy;
    int m_fd = -1;
    std::uint64_t m_inode = 0, m_device = 0;
    std::int64_t m_mtimeNs = 0;
    int m_region = -1; // slot in the SIGBUS handler's table of mappings
};

} // namespace ckpt
