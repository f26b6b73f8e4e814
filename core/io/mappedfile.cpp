#include "mappedfile.h"

#include "error.h"

#include <atomic>
#include <cerrno>
#include <csetjmp>
#include <csignal>
#include <cstring>
#include <mutex>
#include <optional>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

namespace ckpt {
namespace {

thread_local sigjmp_buf* t_guard = nullptr;
struct sigaction g_previousBus {};
std::uintptr_t g_pageSize = 4096;

// Every live file mapping, for the SIGBUS handler: a read outside a guard (metadata while a file is being
// opened, on any thread) that hits pages lost to a truncation gets a page of zeros mapped in their place and
// goes on; the region is marked lost, so that opening fails with Error(Changed) and every later guarded
// read or ensureReadable() refuses. begin 0: free slot, 1: being filled.
struct Region {
    std::atomic<std::uintptr_t> begin{0}, end{0};
    std::atomic<bool> lost{false};
};
constexpr std::size_t kRegions = 16384;
Region g_regions[kRegions];

int claimRegion(const void* data, std::uint64_t size) {
    for (std::size_t i = 0; i < kRegions; ++i) {
        std::uintptr_t expected = 0;
        if (g_regions[i].begin.compare_exchange_strong(expected, 1)) {
            g_regions[i].lost = false;
            g_regions[i].end = reinterpret_cast<std::uintptr_t>(data) + size;
            g_regions[i].begin = reinterpret_cast<std::uintptr_t>(data);
            return static_cast<int>(i);
        }
    }
    return -1; // more files open than slots: their unguarded reads are not covered
}

bool patchLostPage(std::uintptr_t addr) {
    for (auto& r : g_regions) {
        const std::uintptr_t b = r.begin.load(std::memory_order_acquire);
        if (b <= 1 || addr < b || addr >= r.end.load(std::memory_order_acquire))
            continue;
        void* page = reinterpret_cast<void*>(addr & ~(g_pageSize - 1));
        if (mmap(page, g_pageSize, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) == MAP_FAILED)
            return false;
        r.lost.store(true, std::memory_order_release);
        return true;
    }
    return false;
}

void onSigbus(int sig, siginfo_t* info, void* ctx) {
    if (t_guard)
        siglongjmp(*t_guard, 1);
    if (info && patchLostPage(reinterpret_cast<std::uintptr_t>(info->si_addr)))
        return; // the faulting read is retried and sees zeros
    // Not ours: hand over to whoever was installed before, or die as the default would.
    // Not ours: hand over to whoever was installed before, or die as the default would.
    if (g_previousBus.sa_flags & SA_SIGINFO) {
        if (g_previousBus.sa_sigaction) {
            g_previousBus.sa_sigaction(sig, info, ctx);
            return;
        }
    } else if (g_previousBus.sa_handler != SIG_DFL && g_previousBus.sa_handler != SIG_IGN) {
        g_previousBus.sa_handler(sig);
        return;
    }
    signal(sig, SIG_DFL);
    raise(sig);
}

void installSigbusHandler() {
    static std::once_flag once;
    std::call_once(once, [] {
        g_pageSize = static_cast<std::uintptr_t>(sysconf(_SC_PAGESIZE));
        struct sigaction sa {};
        sa.sa_sigaction = onSigbus;
        sa.sa_flags = SA_SIGINFO | SA_NODEFER;
        sigemptyset(&sa.sa_mask);
        sigaction(SIGBUS, &sa, &g_previousBus);
    });
}

std::int64_t mtimeNs(const struct stat& st) {
    return static_cast<std::int64_t>(st.st_mtim.tv_sec) * 1000000000LL + st.st_mtim.tv_nsec;
}

struct CopyJob {
    void* dst;
    const void* src;
    std::size_t n;
};

void runCopy(void* ctx) {
    auto* job = static_cast<CopyJob*>(ctx);
    std::memcpy(job->dst, job->src, job->n);
}

} // namespace

std::shared_ptr<const MappedFile> MappedFile::open(const std::string& path) {
    installSigbusHandler();
    std::shared_ptr<MappedFile> f(new MappedFile);
    f->m_path = path;
    f->m_fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (f->m_fd < 0)
        throw Error(ErrorCode::Io, std::string("cannot open: ") + std::strerror(errno), path);
    struct stat st {};
    if (fstat(f->m_fd, &st) != 0)
        throw Error(ErrorCode::Io, std::string("cannot stat: ") + std::strerror(errno), path);
    if (S_ISDIR(st.st_mode))
        throw Error(ErrorCode::Io, "is a directory", path);
    if (!S_ISREG(st.st_mode))
        throw Error(ErrorCode::Io, "not a regular file", path);
    f->m_size = static_cast<std::uint64_t>(st.st_size);
    f->m_inode = st.st_ino;
    f->m_device = st.st_dev;
    f->m_mtimeNs = mtimeNs(st);
    if (f->m_size > 0) {
        void* p = mmap(nullptr, f->m_size, PROT_READ, MAP_SHARED, f->m_fd, 0);
        if (p == MAP_FAILED)
            throw Error(ErrorCode::Io, std::string("cannot map: ") + std::strerror(errno), path);
        f->m_data = static_cast<const std::uint8_t*>(p);
        f->m_mapped = true;
        f->m_region = claimRegion(p, f->m_size);
        // Metadata reads jump around; tensor reads are sequential and advise for themselves.
        madvise(p, f->m_size, MADV_RANDOM);
    }
    return f;
}

std::shared_ptr<const MappedFile> MappedFile::fromBuffer(std::string name, std::string bytes) {
    std::shared_ptr<MappedFile> f(new MappedFile);
    f->m_path = std::move(name);
    f->m_buffer = std::move(bytes);
    f->m_data = reinterpret_cast<const std::uint8_t*>(f->m_buffer.data());
    f->m_size = f->m_buffer.size();
    return f;
}

struct MappedFile::Lazy {
    std::function<std::string()> load;
    std::mutex mutex;
    std::atomic<bool> done{false};
    std::string bytes;
    std::optional<Error> error;
};

std::shared_ptr<const MappedFile> MappedFile::lazy(std::string name, std::uint64_t size,
                                                   std::function<std::string()> load) {
    std::shared_ptr<MappedFile> f(new MappedFile);
    f->m_path = std::move(name);
    f->m_size = size;
    f->m_lazy = std::make_unique<Lazy>();
    f->m_lazy->load = std::move(load);
    return f;
}

bool MappedFile::isLoaded() const noexcept {
    return !m_lazy || m_lazy->done.load(std::memory_order_acquire);
}

const std::uint8_t* MappedFile::lazyData() const {
    Lazy& z = *m_lazy;
    if (!z.done.load(std::memory_order_acquire)) {
        std::lock_guard lock(z.mutex);
        if (!z.done.load(std::memory_order_relaxed)) {
            try {
                z.bytes = z.load();
                if (z.bytes.size() != m_size)
                    throw Error(ErrorCode::Malformed,
                                "reading produced " + std::to_string(z.bytes.size()) + " bytes instead of " +
                                    std::to_string(m_size),
                                m_path);
            } catch (const Error& e) {
                z.error = e;
            } catch (const std::exception& e) {
                z.error = Error(ErrorCode::Io, std::string("cannot be read: ") + e.what(), m_path);
            }
            if (z.error)
                std::string().swap(z.bytes);
            z.load = nullptr; // what it held (the file it reads) is no longer needed
            z.done.store(true, std::memory_order_release);
        }
    }
    if (z.error)
        throw *z.error;
    return reinterpret_cast<const std::uint8_t*>(z.bytes.data());
}

void MappedFile::loadIfLazy() const {
    if (m_lazy)
        lazyData();
}

MappedFile::~MappedFile() {
    if (m_region >= 0) {
        g_regions[m_region].begin.store(0, std::memory_order_release);
    }
    if (m_mapped)
        munmap(const_cast<std::uint8_t*>(m_data), m_size);
    if (m_fd >= 0)
        ::close(m_fd);
}

bool MappedFile::lostPages() const {
    return m_region >= 0 && g_regions[m_region].lost.load(std::memory_order_acquire);
}

bool MappedFile::changedOnDisk() const {
    if (m_fd < 0)
        return false;
    if (lostPages())
        return true;
    struct stat open {
    }, now{};
    if (fstat(m_fd, &open) != 0)
        return true;
    if (static_cast<std::uint64_t>(open.st_size) != m_size || mtimeNs(open) != m_mtimeNs)
        return true;
    // Replaced by rename: the path now names another file.
    if (stat(m_path.c_str(), &now) != 0)
        return true;
    return now.st_ino != m_inode || now.st_dev != m_device;
}

void MappedFile::ensureReadable(const std::string& object) const {
    if (m_fd < 0)
        return loadIfLazy(); // in memory: the bytes of a lazy source are produced now
    struct stat st {};
    if (fstat(m_fd, &st) != 0 || static_cast<std::uint64_t>(st.st_size) < m_size || lostPages())
        throw Error(ErrorCode::Changed, "the file was truncated on disk after it was opened; reload it",
                    m_path, {}, object);
    // Written to in place (a job saving over it): the mapping shows the new bytes at the old offsets.
    if (static_cast<std::uint64_t>(st.st_size) != m_size || mtimeNs(st) != m_mtimeNs)
        throw Error(ErrorCode::Changed, "the file was modified on disk after it was opened; reload it",
                    m_path, {}, object);
}

void MappedFile::release(std::uint64_t offset, std::uint64_t n) const {
    if (!m_mapped || offset >= m_size)
        return;
    const std::uint64_t page = static_cast<std::uint64_t>(sysconf(_SC_PAGESIZE));
    const std::uint64_t begin = (offset + page - 1) / page * page; // whole pages inside the range only
    const std::uint64_t end = std::min(offset + n, m_size) / page * page;
    if (end > begin)
        madvise(const_cast<std::uint8_t*>(m_data) + begin, end - begin, MADV_DONTNEED);
}

bool MappedFile::readAt(std::uint64_t offset, std::size_t n, void* dst) const {
    if (offset > m_size || n > m_size - offset)
        return false;
    if (m_fd < 0) {
        std::memcpy(dst, data() + offset, n);
        return true;
    }
    auto* out = static_cast<char*>(dst);
    while (n > 0) {
        const ssize_t got = pread(m_fd, out, n, static_cast<off_t>(offset));
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0)
            return false;
        out += got;
        offset += static_cast<std::uint64_t>(got);
        n -= static_cast<std::size_t>(got);
    }
    return true;
}

bool MappedFile::copyGuarded(std::uint64_t offset, std::size_t n, void* dst) const {
    if (offset > m_size || n > m_size - offset)
        return false;
    if (!m_mapped) {
        std::memcpy(dst, data() + offset, n);
        return true;
    }
    CopyJob job{dst, m_data + offset, n};
    return runGuarded(runCopy, &job) && !lostPages(); // zeros patched in by an unguarded read are no data
}

// Kept out of line and free of objects with destructors: siglongjmp may leave it at any instruction.
__attribute__((noinline)) bool MappedFile::runGuarded(void (*fn)(void*), void* ctx) {
    installSigbusHandler();
    sigjmp_buf env;
    sigjmp_buf* outer = t_guard;
    if (sigsetjmp(env, 1) != 0) {
        t_guard = outer;
        return false;
    }
    t_guard = &env;
    fn(ctx);
    t_guard = outer;
    return true;
}

} // namespace ckpt
