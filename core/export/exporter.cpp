#include "exporter.h"

#include "analysis/elements.h"
#include "formats/open.h"
#include "io/error.h"
#include "io/zipreader.h"

#include <nlohmann/json.hpp>
#include <zlib.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <dirent.h>
#include <fcntl.h>
#include <filesystem>
#include <map>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

namespace ckpt {
namespace {

// IEEE binary16 bits of a float, rounded to nearest even as c10::Half does (no compiler _Float16: clang 14
// has none on x86-64). NaN becomes the quiet NaN 0x7E00 with its sign, as c10's fp16_ieee_from_fp32_value.
std::uint16_t floatToHalfBits(float f) {
    const auto x = std::bit_cast<std::uint32_t>(f);
    const auto sign = static_cast<std::uint16_t>((x >> 16) & 0x8000u);
    const std::uint32_t a = x & 0x7FFFFFFFu;
    if (a > 0x7F800000u)
        return sign | 0x7E00u;
    if (a >= 0x47800000u) // 65536 and above, infinity included
        return sign | 0x7C00u;
    if (a < 0x38800000u) { // below 2^-14: a subnormal half (or zero); units of 2^-24, scaled exactly
        const float units = std::bit_cast<float>(a) * 16777216.0f;
        return sign | static_cast<std::uint16_t>(std::nearbyint(units)); // 1024 is the smallest normal
    }
    const std::uint32_t exponent = (a >> 23) - 127 + 15;
    const std::uint32_t mantissa = a & 0x7FFFFFu;
    std::uint32_t h = (exponent << 10) | (mantissa >> 13);
    const std::uint32_t rest = mantissa & 0x1FFFu;
    if (rest > 0x1000u || (rest == 0x1000u && (h & 1u)))
        ++h; // a carry into the exponent is right, up to infinity
    return sign | static_cast<std::uint16_t>(h);
}

constexpr std::size_t kChunk = 4u << 20;      // conversion buffer
constexpr std::size_t kCopyChunk = 64u << 20; // copy_file_range step (progress and cancel in between)
constexpr std::uint64_t kAlign = 64;          // PyTorch's kFieldAlignment
constexpr const char* kTempTag = ".ckpt-export-";

std::string sysError(const std::string& what, const std::string& path) {
    return what + " '" + path + "': " + std::strerror(errno);
}

// ---- the source side
// ---------------------------------------------------------------------------------------

// Where one piece of output comes from.
struct Piece {
    enum class Kind : std::uint8_t { Copy, Convert, Gather } kind = Kind::Copy;
    int source = 0;           // Checkpoint::sources index
    std::uint64_t offset = 0; // absolute offset in that file (Copy / Convert)
    std::uint64_t srcBytes = 0;
    std::uint64_t outBytes = 0;
    DType from = DType::UInt8, to = DType::UInt8;
    bool swap = false;
    int tensor = -1;                  // Gather: Checkpoint::tensors index
    std::optional<std::uint32_t> crc; // known CRC-32 of the bytes (an unchanged whole zip record)
};

float loadFloat(DType t, const std::uint8_t* p, bool swap) {
    switch (t) {
    case DType::Float32: {
        std::uint32_t u;
        std::memcpy(&u, p, 4);
        return std::bit_cast<float>(swap ? __builtin_bswap32(u) : u);
    }
    case DType::Float64: {
        std::uint64_t u;
        std::memcpy(&u, p, 8);
        return static_cast<float>(std::bit_cast<double>(swap ? __builtin_bswap64(u) : u));
    }
    case DType::Float16: {
        std::uint16_t u;
        std::memcpy(&u, p, 2);
        return static_cast<float>(halfToDouble(swap ? __builtin_bswap16(u) : u)); // exact
    }
    case DType::BFloat16: {
        std::uint16_t u;
        std::memcpy(&u, p, 2);
        if (swap)
            u = __builtin_bswap16(u);
        return std::bit_cast<float>(static_cast<std::uint32_t>(u) << 16);
    }
    default:
        return NAN;
    }
}

// PyTorch's conversions: every source goes through float (c10::Half and c10::BFloat16 are built from a
// float), bfloat16 rounds to nearest even with NaN kept quiet (c10::detail::round_to_nearest_even).
void storeFloat(DType t, float v, std::uint8_t* p) {
    switch (t) {
    case DType::Float32:
        std::memcpy(p, &v, 4);
        break;
    case DType::Float64: {
        const double d = v;
        std::memcpy(p, &d, 8);
        break;
    }
    case DType::Float16: {
        const std::uint16_t h = floatToHalfBits(v);
        std::memcpy(p, &h, 2);
        break;
    }
    case DType::BFloat16: {
        std::uint16_t b;
        if (std::isnan(v)) {
            b = 0x7FC0;
        } else {
            const auto u = std::bit_cast<std::uint32_t>(v);
            b = static_cast<std::uint16_t>((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
        }
        std::memcpy(p, &b, 2);
        break;
    }
    default:
        break;
    }
}

// Converts n elements; a plain byte swap when the dtype stays.
void convertElements(DType from, DType to, bool swap, const std::uint8_t* src, std::uint8_t* dst,
                     std::size_t n) {
    const std::size_t si = dtypeSize(from), di = dtypeSize(to);
    if (from == to) {
        std::memcpy(dst, src, n * si);
        if (swap)
            for (std::size_t i = 0; i < n; ++i)
                std::reverse(dst + i * si, dst + (i + 1) * si);
        return;
    }
    for (std::size_t i = 0; i < n; ++i)
        storeFloat(to, loadFloat(from, src + i * si, swap), dst + i * di);
}

// ---- the destination side
// ----------------------------------------------------------------------------------

struct Sink {
    int fd = -1;
    std::string path; // the temporary file
    std::uint64_t pos = 0;
    std::uint64_t total = 1;
    std::uint64_t copied = 0, converted = 0;
    std::uint64_t flushed = 0;
    const ProgressFn* progress = nullptr;

    void write(const void* data, std::size_t n) {
        auto p = static_cast<const std::uint8_t*>(data);
        while (n) {
            const ssize_t w = ::write(fd, p, n);
            if (w < 0) {
                if (errno == EINTR)
                    continue;
                throw Error(ErrorCode::Io, sysError("cannot write", path), path, pos);
            }
            p += w;
            n -= static_cast<std::size_t>(w);
            pos += static_cast<std::uint64_t>(w);
        }
    }
    void tick() {
        // Start writing back what is written so far, so the final fsync has little left to wait for and the
        // disk works while the copy goes on.
        if (pos - flushed >= (64u << 20)) {
            ::sync_file_range(fd, static_cast<off64_t>(flushed), static_cast<off64_t>(pos - flushed),
                              SYNC_FILE_RANGE_WRITE);
            flushed = pos;
        }
        if (progress && *progress && !(*progress)(std::min(pos, total), total))
            throw Error(ErrorCode::Cancelled, "export cancelled", path);
    }
};

void put16(std::string& s, std::uint16_t v) {
    s.push_back(static_cast<char>(v & 0xFF));
    s.push_back(static_cast<char>(v >> 8));
}
void put32(std::string& s, std::uint32_t v) {
    for (int i = 0; i < 4; ++i)
        s.push_back(static_cast<char>((v >> (8 * i)) & 0xFF));
}
void put64(std::string& s, std::uint64_t v) {
    for (int i = 0; i < 8; ++i)
        s.push_back(static_cast<char>((v >> (8 * i)) & 0xFF));
}

// Test hook: CKPT_EXPORT_TEST_PAUSE=STAGE stops the writer at that stage (so a test can kill it there).
void stage(const char* name) {
    const char* want = std::getenv("CKPT_EXPORT_TEST_PAUSE");
    if (!want || std::strcmp(want, name) != 0)
        return;
    std::fprintf(stderr, "ckpt export: paused at %s\n", name);
    std::fflush(stderr);
    for (;;)
        ::pause();
}

class SourceFiles {
public:
    SourceFiles(const Checkpoint& ck)
        : m_ck(ck)
        , m_fds(ck.sources.size(), -2) {}
    ~SourceFiles() {
        for (int fd : m_fds)
            if (fd >= 0)
                ::close(fd);
    }
    // A descriptor of the source for copy_file_range, or -1 for in-memory sources.
    int fd(int source) {
        int& fd = m_fds.at(static_cast<std::size_t>(source));
        if (fd == -2) {
            const Source& s = m_ck.sources[static_cast<std::size_t>(source)];
            fd = ::open(s.path.c_str(), O_RDONLY | O_CLOEXEC);
            struct stat st {};
            if (fd >= 0 &&
                (::fstat(fd, &st) != 0 || static_cast<std::uint64_t>(st.st_size) != s.file->size())) {
                ::close(fd);
                fd = -1;
            }
        }
        return fd;
    }
    const MappedFile& file(int source) const {
        return *m_ck.sources.at(static_cast<std::size_t>(source)).file;
    }
    const std::string& path(int source) const {
        return m_ck.sources.at(static_cast<std::size_t>(source)).path;
    }

private:
    const Checkpoint& m_ck;
    std::vector<int> m_fds;
};

// Reads [offset, offset+n) of a source into buf, or throws naming the file.
void readSource(SourceFiles& files, int source, std::uint64_t offset, std::size_t n, std::uint8_t* buf) {
    const MappedFile& f = files.file(source);
    if (offset > f.size() || n > f.size() - offset || !f.readAt(offset, n, buf))
        throw Error(ErrorCode::Changed, "the source file changed or shrank during the export",
                    files.path(source), offset);
}

// Writes one piece; returns its CRC-32 when `wantCrc`.
std::uint32_t writePiece(const Checkpoint& ck, SourceFiles& files, Sink& out, const Piece& piece,
                         bool wantCrc) {
    std::uint32_t crc = static_cast<std::uint32_t>(crc32(0, nullptr, 0));
    std::vector<std::uint8_t> in, conv;
    auto emit = [&](const std::uint8_t* p, std::size_t n) {
        if (wantCrc)
            crc = static_cast<std::uint32_t>(crc32_z(crc, p, n));
        out.write(p, n);
    };
    if (piece.kind == Piece::Kind::Copy) {
        const bool needCrc = wantCrc && !piece.crc;
        const int fd = needCrc ? -1 : files.fd(piece.source);
        std::uint64_t done = 0;
        if (fd >= 0) {
            loff_t off = static_cast<loff_t>(piece.offset);
            while (done < piece.srcBytes) {
                const std::size_t step =
                    static_cast<std::size_t>(std::min<std::uint64_t>(kCopyChunk, piece.srcBytes - done));
                const ssize_t c = ::copy_file_range(fd, &off, out.fd, nullptr, step, 0);
                if (c <= 0) {
                    if (c < 0 && errno == EINTR)
                        continue;
                    break; // EXDEV, EINVAL, ENOSYS, EOPNOTSUPP, a short file: the read/write path below
                           // decides
                }
                done += static_cast<std::uint64_t>(c);
                out.pos += static_cast<std::uint64_t>(c);
                out.copied += static_cast<std::uint64_t>(c);
                out.tick();
            }
        }
        in.resize(kChunk * 2);
        while (done < piece.srcBytes) {
            const std::size_t n =
                static_cast<std::size_t>(std::min<std::uint64_t>(in.size(), piece.srcBytes - done));
            readSource(files, piece.source, piece.offset + done, n, in.data());
            emit(in.data(), n);
            done += n;
            out.copied += n;
            out.tick();
        }
        if (files.file(piece.source).changedOnDisk())
            throw Error(ErrorCode::Changed, "the source file changed during the export",
                        files.path(piece.source));
        return piece.crc && !needCrc ? *piece.crc : crc;
    }
    const std::size_t si = dtypeSize(piece.from), di = dtypeSize(piece.to);
    if (piece.kind == Piece::Kind::Convert) {
        const std::size_t perChunk = kChunk / std::max(si, di);
        in.resize(perChunk * si);
        conv.resize(perChunk * di);
        const std::uint64_t count = piece.srcBytes / si;
        for (std::uint64_t i = 0; i < count;) {
            const std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(perChunk, count - i));
            readSource(files, piece.source, piece.offset + i * si, n * si, in.data());
            convertElements(piece.from, piece.to, piece.swap, in.data(), conv.data(), n);
            emit(conv.data(), n * di);
            out.converted += n * di;
            i += n;
            out.tick();
        }
        return crc;
    }
    // Gather: a strided view written contiguously, row by row of its innermost dimension.
    const TensorInfo& t = ck.tensors.at(static_cast<std::size_t>(piece.tensor));
    const StorageInfo& s = ck.storages.at(static_cast<std::size_t>(t.storage));
    const std::size_t nd = t.shape.size();
    const std::uint64_t numel = t.numel();
    if (numel == 0)
        return crc;
    const std::int64_t inner = nd ? t.shape[nd - 1] : 1;
    const std::int64_t innerStride = nd ? t.strides[nd - 1] : 1;
    const std::size_t perChunk = kChunk / std::max(si, di);
    in.resize(perChunk * si);
    conv.resize(perChunk * di);
    std::vector<std::int64_t> idx(nd ? nd - 1 : 0, 0);
    std::size_t fill = 0;
    auto flush = [&] {
        convertElements(piece.from, piece.to, piece.swap, in.data(), conv.data(), fill);
        emit(conv.data(), fill * di);
        out.converted += fill * di;
        fill = 0;
        out.tick();
    };
    for (std::uint64_t rows = numel / static_cast<std::uint64_t>(inner), r = 0; r < rows; ++r) {
        std::int64_t base = t.storageOffset;
        for (std::size_t d = 0; d + 1 < nd; ++d)
            base += idx[d] * t.strides[d];
        for (std::int64_t j = 0; j < inner;) {
            // contiguous inner rows are read in one go; others element by element
            const std::int64_t run =
                innerStride == 1
                    ? std::min<std::int64_t>(inner - j, static_cast<std::int64_t>(perChunk - fill))
                    : 1;
            const std::uint64_t elem = static_cast<std::uint64_t>(base + j * innerStride);
            readSource(files, s.source, s.fileOffset + elem * si, static_cast<std::size_t>(run) * si,
                       in.data() + fill * si);
            fill += static_cast<std::size_t>(run);
            j += run;
            if (fill == perChunk)
                flush();
        }
        for (std::size_t d = nd >= 2 ? nd - 2 : 0; nd >= 2; --d) {
            if (++idx[d] < t.shape[d])
                break;
            idx[d] = 0;
            if (d == 0)
                break;
        }
    }
    if (fill)
        flush();
    return crc;
}

// ---- layout
// --------------------------------------------------------------------------------------------------

struct TorchStorage {
    int srcStorage = -1;
    DType from{}, to{};
    std::string device;
    std::string key;
    std::uint64_t numel = 0;
    Piece piece;
};

struct SafetensorsEntry {
    int plan = -1; // ExportPlan::tensors index
    Piece piece;
    std::uint64_t begin = 0, end = 0;
};

const char* storageClass(DType t) {
    switch (t) {
    case DType::UInt8:
        return "ByteStorage";
    case DType::Int8:
        return "CharStorage";
    case DType::Int16:
        return "ShortStorage";
    case DType::Int32:
        return "IntStorage";
    case DType::Int64:
        return "LongStorage";
    case DType::Float16:
        return "HalfStorage";
    case DType::Float32:
        return "FloatStorage";
    case DType::Float64:
        return "DoubleStorage";
    case DType::Bool:
        return "BoolStorage";
    case DType::BFloat16:
        return "BFloat16Storage";
    case DType::Complex64:
        return "ComplexFloatStorage";
    case DType::Complex128:
        return "ComplexDoubleStorage";
    default:
        return nullptr;
    }
}

const char* safetensorsDtype(DType t) {
    switch (t) {
    case DType::Bool:
        return "BOOL";
    case DType::UInt8:
        return "U8";
    case DType::Int8:
        return "I8";
    case DType::Int16:
        return "I16";
    case DType::UInt16:
        return "U16";
    case DType::Float16:
        return "F16";
    case DType::BFloat16:
        return "BF16";
    case DType::Int32:
        return "I32";
    case DType::UInt32:
        return "U32";
    case DType::Float32:
        return "F32";
    case DType::Float64:
        return "F64";
    case DType::Int64:
        return "I64";
    case DType::UInt64:
        return "U64";
    case DType::Float8_e5m2:
        return "F8_E5M2";
    case DType::Float8_e4m3fn:
        return "F8_E4M3";
    case DType::Complex64:
        return "C64";
    default:
        return nullptr;
    }
}

struct WriteLayout {
    // torch
    std::vector<TorchStorage> storages;
    std::vector<int> tensorStorage; // plan tensor -> storages index
    // safetensors
    std::vector<SafetensorsEntry> entries;
    std::vector<std::string> notes;
    std::uint64_t dataBytes = 0;
};

// CRC-32 of whole stored records of a source zip, by data offset, so unchanged storages need no reading.
std::map<std::uint64_t, std::pair<std::uint64_t, std::uint32_t>> recordCrcs(const Checkpoint& ck) {
    std::map<std::uint64_t, std::pair<std::uint64_t, std::uint32_t>> out;
    if (ck.format != "pytorch-zip" || ck.sources.size() != 1)
        return out;
    try {
        const ZipArchive zip(ck.sources.front().file);
        for (const ZipEntry& e : zip.entries())
            if (e.problem.empty() && e.method == 0 && e.crc32 != 0)
                out[e.dataOffset] = {e.uncompressedSize, e.crc32};
    } catch (const Error&) {
        // no CRCs to reuse: they are computed
    }
    return out;
}

WriteLayout planLayout(const Checkpoint& ck, const ExportPlan& plan, const ExportOptions& o, bool withCrcs) {
    WriteLayout L;
    if (o.format == ExportFormat::Torch) {
        const auto crcs = withCrcs ? recordCrcs(ck) : decltype(recordCrcs(ck)){};
        std::map<std::tuple<int, DType, DType>, int> byKey;
        L.tensorStorage.resize(plan.tensors.size(), -1);
        for (std::size_t i = 0; i < plan.tensors.size(); ++i) {
            const PlannedTensor& p = plan.tensors[i];
            const TensorInfo& t = ck.tensors[static_cast<std::size_t>(p.source)];
            const auto k = std::make_tuple(t.storage, t.dtype, p.dtype);
            auto it = byKey.find(k);
            if (it == byKey.end()) {
                const StorageInfo& s = ck.storages.at(static_cast<std::size_t>(t.storage));
                TorchStorage ts;
                ts.srcStorage = t.storage;
                ts.from = t.dtype;
                ts.to = p.dtype;
                ts.device = p.device;
                ts.key = std::to_string(L.storages.size());
                const std::size_t si = dtypeSize(t.dtype);
                if (!s.error.empty())
                    throw Error(ErrorCode::Malformed, "storage '" + s.key + "' cannot be read: " + s.error,
                                ck.sources.at(static_cast<std::size_t>(s.source)).path, {}, t.name);
                if (si == 0 || s.nbytes % si != 0)
                    throw Error(ErrorCode::Unsupported,
                                "storage '" + s.key + "' is not a whole number of " +
                                    std::string(dtypeName(t.dtype)) + " elements",
                                ck.sources.at(static_cast<std::size_t>(s.source)).path, s.fileOffset, t.name);
                ts.numel = s.nbytes / si;
                Piece& pc = ts.piece;
                pc.source = s.source;
                pc.offset = s.fileOffset;
                pc.srcBytes = s.nbytes;
                pc.from = t.dtype;
                pc.to = p.dtype;
                pc.swap = s.bigEndian && si > 1;
                pc.outBytes = ts.numel * dtypeSize(p.dtype);
                pc.kind = (p.cast || pc.swap) ? Piece::Kind::Convert : Piece::Kind::Copy;
                if (pc.kind == Piece::Kind::Copy) {
                    const auto c = crcs.find(s.fileOffset);
                    if (c != crcs.end() && c->second.first == s.nbytes)
                        pc.crc = c->second.second;
                }
                L.dataBytes += pc.outBytes;
                it = byKey.emplace(k, static_cast<int>(L.storages.size())).first;
                L.storages.push_back(std::move(ts));
            } else if (L.storages[static_cast<std::size_t>(it->second)].device != p.device) {
                throw Error(ErrorCode::Malformed,
                            "'" + p.name + "' shares its storage with a tensor mapped to " +
                                L.storages[static_cast<std::size_t>(it->second)].device +
                                " but is mapped to " + p.device);
            }
            L.tensorStorage[i] = it->second;
        }
        std::map<int, int> perSource;
        for (const auto& s : L.storages)
            ++perSource[s.srcStorage];
        for (const auto& [src, n] : perSource)
            if (n > 1)
                L.notes.push_back("storage '" + ck.storages[static_cast<std::size_t>(src)].key +
                                  "' is written " + std::to_string(n) +
                                  " times, once per dtype its tensors are written in");
        return L;
    }
    // safetensors: one contiguous block per tensor; exact aliases written once.
    std::map<
        std::tuple<int, std::int64_t, std::vector<std::int64_t>, std::vector<std::int64_t>, DType, DType>,
        std::size_t>
        seen;
    struct Range {
        int storage;
        std::uint64_t begin, end;
        std::string name;
    };
    std::vector<Range> ranges;
    std::uint64_t pos = 0;
    for (std::size_t i = 0; i < plan.tensors.size(); ++i) {
        const PlannedTensor& p = plan.tensors[i];
        const TensorInfo& t = ck.tensors[static_cast<std::size_t>(p.source)];
        const StorageInfo& s = ck.storages.at(static_cast<std::size_t>(t.storage));
        if (!s.error.empty())
            throw Error(ErrorCode::Malformed, "storage '" + s.key + "' cannot be read: " + s.error,
                        ck.sources.at(static_cast<std::size_t>(s.source)).path, {}, t.name);
        const auto k = std::make_tuple(t.storage, t.storageOffset, t.shape, t.strides, t.dtype, p.dtype);
        if (const auto it = seen.find(k); it != seen.end()) {
            L.notes.push_back("'" + p.name + "' is the same data as '" +
                              plan.tensors[L.entries[it->second].plan].name +
                              "' (tied): written once, under the first name");
            continue;
        }
        const std::size_t si = dtypeSize(t.dtype);
        SafetensorsEntry e;
        e.plan = static_cast<int>(i);
        Piece& pc = e.piece;
        pc.source = s.source;
        pc.from = t.dtype;
        pc.to = p.dtype;
        pc.swap = s.bigEndian && si > 1;
        pc.srcBytes = t.nbytes();
        pc.outBytes = p.nbytes;
        if (t.isContiguous() && t.storageOffset >= 0) {
            pc.offset = s.fileOffset + static_cast<std::uint64_t>(t.storageOffset) * si;
            if (static_cast<std::uint64_t>(t.storageOffset) * si + pc.srcBytes > s.nbytes)
                throw Error(ErrorCode::OutOfBounds,
                            "tensor data runs past the end of storage '" + s.key + "'",
                            ck.sources.at(static_cast<std::size_t>(s.source)).path, s.fileOffset, t.name);
            pc.kind = (p.cast || pc.swap) ? Piece::Kind::Convert : Piece::Kind::Copy;
        } else {
            pc.kind = Piece::Kind::Gather;
            pc.tensor = p.source;
            L.notes.push_back("'" + p.name + "' is a non-contiguous view: its elements are copied in order");
        }
        // Views that overlap another written tensor's bytes are copies in safetensors.
        if (t.numel() > 0) {
            std::int64_t lo = t.storageOffset, hi = t.storageOffset;
            for (std::size_t d = 0; d < t.shape.size(); ++d)
                (t.strides[d] >= 0 ? hi : lo) += (t.shape[d] - 1) * t.strides[d];
            const Range r{t.storage, static_cast<std::uint64_t>(lo) * si,
                          static_cast<std::uint64_t>(hi + 1) * si, p.name};
            for (const Range& o2 : ranges)
                if (o2.storage == r.storage && r.begin < o2.end && o2.begin < r.end) {
                    L.notes.push_back("'" + p.name + "' shares bytes with '" + o2.name +
                                      "': safetensors cannot share, so it is written as a copy");
                    break;
                }
            ranges.push_back(r);
        }
        e.begin = pos;
        e.end = pos + pc.outBytes;
        pos = e.end;
        seen.emplace(k, L.entries.size());
        L.entries.push_back(std::move(e));
    }
    L.dataBytes = pos;
    return L;
}

// ---- pickle (protocol 2, the subset PyTorch 1.13's weights-only unpickler accepts)
// ---------------------------

class PickleOut {
public:
    std::string s;
    PickleOut() { s += "\x80\x02"; }
    void global(std::string_view mod, std::string_view name) {
        s += 'c';
        s += mod;
        s += '\n';
        s += name;
        s += '\n';
    }
    void str(std::string_view v) {
        s += 'X';
        put32(s, static_cast<std::uint32_t>(v.size()));
        s += v;
    }
    void integer(std::int64_t v) {
        if (v >= 0 && v < 256) {
            s += 'K';
            s += static_cast<char>(v);
        } else if (v >= 0 && v < 65536) {
            s += 'M';
            put16(s, static_cast<std::uint16_t>(v));
        } else if (v >= INT32_MIN && v <= INT32_MAX) {
            s += 'J';
            put32(s, static_cast<std::uint32_t>(static_cast<std::int32_t>(v)));
        } else {
            s += '\x8a';
            s += '\x08';
            put64(s, static_cast<std::uint64_t>(v));
        }
    }
    void real(double v) {
        s += 'G';
        const auto u = std::bit_cast<std::uint64_t>(v);
        for (int i = 7; i >= 0; --i)
            s.push_back(static_cast<char>((u >> (8 * i)) & 0xFF));
    }
    void tuple(const std::vector<std::int64_t>& v) {
        if (v.empty()) {
            s += ')';
            return;
        }
        s += '(';
        for (auto x : v)
            integer(x);
        s += 't';
    }
    void orderedDict() {
        global("collections", "OrderedDict");
        s += ')';
        s += 'R';
    }
};

std::string torchPickle(const Checkpoint& ck, const ExportPlan& plan, const WriteLayout& L) {
    PickleOut p;
    p.orderedDict();
    std::size_t inBatch = 0;
    auto beginItem = [&] {
        if (inBatch == 0)
            p.s += '(';
    };
    auto endItem = [&] {
        if (++inBatch == 1000) {
            p.s += 'u';
            inBatch = 0;
        }
    };
    for (std::size_t i = 0; i < plan.tensors.size(); ++i) {
        const PlannedTensor& pt = plan.tensors[i];
        const TensorInfo& t = ck.tensors[static_cast<std::size_t>(pt.source)];
        const TorchStorage& st = L.storages[static_cast<std::size_t>(L.tensorStorage[i])];
        beginItem();
        p.str(pt.name);
        p.global("torch._utils", "_rebuild_tensor_v2");
        p.s += '(';
        p.s += '(';
        p.str("storage");
        p.global("torch", storageClass(st.to));
        p.str(st.key);
        p.str(st.device);
        p.integer(static_cast<std::int64_t>(st.numel));
        p.s += 't';
        p.s += 'Q';
        p.integer(t.storageOffset);
        p.tuple(t.shape);
        p.tuple(t.strides);
        p.s += '\x89';
        p.orderedDict();
        p.s += 't';
        p.s += 'R';
        endItem();
    }
    for (const PlannedValue& pv : plan.values) {
        const Value* v = ck.values[static_cast<std::size_t>(pv.source)].value;
        beginItem();
        p.str(pv.name);
        switch (v->kind) {
        case ValueKind::Bool:
            p.s += v->boolean ? '\x88' : '\x89';
            break;
        case ValueKind::Int:
            p.integer(v->integer);
            break;
        case ValueKind::Float:
            p.real(v->real);
            break;
        case ValueKind::String:
            p.str(v->text);
            break;
        default:
            p.s += 'N';
            break;
        }
        endItem();
    }
    if (inBatch)
        p.s += 'u';
    p.s += '.';
    return p.s;
}

// ---- zip (the layout PyTorch's miniz writer produces)
// --------------------------------------------------------

class ZipOut {
public:
    ZipOut(Sink& sink, std::string prefix)
        : m_out(sink)
        , m_prefix(std::move(prefix)) {}

    // Writes the local header and padding; the caller writes `size` bytes, then calls end() with their CRC.
    void begin(const std::string& record, std::uint64_t size) {
        Entry e{m_prefix + "/" + record, m_out.pos, size, 0};
        const bool big = size >= 0xFFFFFFFFu || e.offset >= 0xFFFFFFFFu;
        std::string h;
        put32(h, 0x04034b50);
        put16(h, 0);
        put16(h, size ? 0x0808 : 0x0800);
        put16(h, 0);
        put32(h, 0);
        put32(h, 0);
        put32(h, 0);
        put32(h, 0);
        put16(h, static_cast<std::uint16_t>(e.name.size()));
        std::string extra;
        if (big) {
            std::string a;
            if (size >= 0xFFFFFFFFu) {
                put64(a, size);
                put64(a, size);
            }
            if (e.offset >= 0xFFFFFFFFu)
                put64(a, e.offset);
            put16(extra, 1);
            put16(extra, static_cast<std::uint16_t>(a.size()));
            extra += a;
        }
        const std::uint64_t before = e.offset + 30 + e.name.size() + extra.size() + 4;
        const std::uint64_t pad = (kAlign - before % kAlign) % kAlign;
        put16(extra, 0x4246);
        put16(extra, static_cast<std::uint16_t>(pad));
        extra.append(pad, 'Z');
        put16(h, static_cast<std::uint16_t>(extra.size()));
        h += e.name;
        h += extra;
        m_out.write(h.data(), h.size());
        m_entries.push_back(std::move(e));
    }
    void end(std::uint32_t crc) {
        Entry& e = m_entries.back();
        e.crc = crc;
        if (e.size == 0)
            return;
        std::string d;
        put32(d, 0x08074b50);
        put32(d, crc);
        if (e.size >= 0xFFFFFFFFu || e.offset >= 0xFFFFFFFFu) {
            put64(d, e.size);
            put64(d, e.size);
        } else {
            put32(d, static_cast<std::uint32_t>(e.size));
            put32(d, static_cast<std::uint32_t>(e.size));
        }
        m_out.write(d.data(), d.size());
    }
    void small(const std::string& record, const std::string& bytes) {
        begin(record, bytes.size());
        m_out.write(bytes.data(), bytes.size());
        end(static_cast<std::uint32_t>(
            crc32_z(crc32(0, nullptr, 0), reinterpret_cast<const Bytef*>(bytes.data()), bytes.size())));
    }
    void finish() {
        const std::uint64_t cdStart = m_out.pos;
        std::string cd;
        for (const Entry& e : m_entries) {
            const bool bigSize = e.size >= 0xFFFFFFFFu, bigOff = e.offset >= 0xFFFFFFFFu;
            put32(cd, 0x02014b50);
            put16(cd, 0);
            put16(cd, 0);
            put16(cd, e.size ? 0x0808 : 0x0800);
            put16(cd, 0);
            put32(cd, 0);
            put32(cd, e.crc);
            put32(cd, bigSize ? 0xFFFFFFFFu : static_cast<std::uint32_t>(e.size));
            put32(cd, bigSize ? 0xFFFFFFFFu : static_cast<std::uint32_t>(e.size));
            put16(cd, static_cast<std::uint16_t>(e.name.size()));
            std::string z;
            if (bigSize) {
                put64(z, e.size);
                put64(z, e.size);
            }
            if (bigOff)
                put64(z, e.offset);
            std::string extra;
            if (!z.empty()) {
                put16(extra, 1);
                put16(extra, static_cast<std::uint16_t>(z.size()));
                extra += z;
            }
            put16(cd, static_cast<std::uint16_t>(extra.size()));
            put16(cd, 0);
            put16(cd, 0);
            put16(cd, 0);
            put32(cd, 0);
            put32(cd, bigOff ? 0xFFFFFFFFu : static_cast<std::uint32_t>(e.offset));
            cd += e.name;
            cd += extra;
        }
        const std::uint64_t n = m_entries.size(), cdSize = cd.size(), eocd64 = cdStart + cdSize;
        put32(cd, 0x06064b50);
        put64(cd, 44);
        put16(cd, 0x031E);
        put16(cd, 45);
        put32(cd, 0);
        put32(cd, 0);
        put64(cd, n);
        put64(cd, n);
        put64(cd, cdSize);
        put64(cd, cdStart);
        put32(cd, 0x07064b50);
        put32(cd, 0);
        put64(cd, eocd64);
        put32(cd, 1);
        put32(cd, 0x06054b50);
        put16(cd, 0);
        put16(cd, 0);
        put16(cd, static_cast<std::uint16_t>(std::min<std::uint64_t>(n, 0xFFFF)));
        put16(cd, static_cast<std::uint16_t>(std::min<std::uint64_t>(n, 0xFFFF)));
        put32(cd, cdSize >= 0xFFFFFFFFu ? 0xFFFFFFFFu : static_cast<std::uint32_t>(cdSize));
        put32(cd, cdStart >= 0xFFFFFFFFu ? 0xFFFFFFFFu : static_cast<std::uint32_t>(cdStart));
        put16(cd, 0);
        m_out.write(cd.data(), cd.size());
    }

private:
    struct Entry {
        std::string name;
        std::uint64_t offset, size;
        std::uint32_t crc;
    };
    Sink& m_out;
    std::string m_prefix;
    std::vector<Entry> m_entries;
};

std::string safetensorsHeader(const Checkpoint& ck, const ExportPlan& plan, const WriteLayout& L) {
    nlohmann::ordered_json meta = nlohmann::ordered_json::object();
    for (const PlannedValue& pv : plan.values) {
        const Value* v = ck.values[static_cast<std::size_t>(pv.source)].value;
        const std::string key = pv.name.rfind("__metadata__.", 0) == 0 ? pv.name.substr(13) : pv.name;
        meta[key] = keptValueText(v);
    }
    // The object is written member by member: the plan's names are unique already, and an ordered_json of
    // 100,000 members would be built by a linear search per insertion.
    std::string s = "{";
    auto member = [&s](const std::string& key, const std::string& valueText) {
        if (s.size() > 1)
            s += ',';
        s += nlohmann::json(key).dump();
        s += ':';
        s += valueText;
    };
    if (!meta.empty())
        member("__metadata__", meta.dump());
    for (const SafetensorsEntry& e : L.entries) {
        const PlannedTensor& p = plan.tensors[static_cast<std::size_t>(e.plan)];
        member(p.name, nlohmann::ordered_json{{"dtype", safetensorsDtype(p.dtype)},
                                              {"shape", p.shape},
                                              {"data_offsets", {e.begin, e.end}}}
                           .dump());
    }
    s += '}';
    s.append((8 - s.size() % 8) % 8, ' ');
    return s;
}

// ---- files
// -------------------------------------------------------------------------------------------------

struct TempFile {
    std::string path;
    int fd = -1;
    ~TempFile() {
        if (fd >= 0)
            ::close(fd);
        if (!path.empty())
            ::unlink(path.c_str());
    }
};

void fsyncDir(const std::string& dir) {
    const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        ::fsync(fd);
        ::close(fd);
    }
}

void checkNotSource(const Checkpoint& ck, const std::string& dst) {
    namespace fs = std::filesystem;
    std::error_code ec;
    const fs::path dstAbs = fs::weakly_canonical(fs::absolute(dst), ec);
    struct stat dstSt {};
    const bool dstExists = ::stat(dst.c_str(), &dstSt) == 0;
    for (const Source& s : ck.sources) {
        if (s.path.empty())
            continue;
        const fs::path srcAbs = fs::weakly_canonical(fs::absolute(s.path), ec);
        struct stat st {};
        const bool sameInode = dstExists && ::stat(s.path.c_str(), &st) == 0 && st.st_dev == dstSt.st_dev &&
                               st.st_ino == dstSt.st_ino;
        if (sameInode || (!ec && srcAbs == dstAbs))
            throw Error(
                ErrorCode::Io,
                "the destination is the source file" +
                    std::string(sameInode && srcAbs != dstAbs ? " (the same file under another name)" : "") +
                    "; export never writes to its source",
                dst);
    }
}

void verifyOutput(const Checkpoint& src, const ExportPlan& plan, const ExportOptions& o, const WriteLayout& L,
                  const std::string& tmp, const std::string& dst) {
    CheckpointPtr out;
    try {
        out = openCheckpoint(tmp);
    } catch (const Error& e) {
        throw Error(ErrorCode::Malformed, "the written file does not read back: " + e.message(), dst);
    }
    if (out->hasErrors())
        throw Error(ErrorCode::Malformed, "the written file reads back with errors", dst);
    std::size_t expected = o.format == ExportFormat::Torch ? plan.tensors.size() : L.entries.size();
    if (out->tensors.size() != expected)
        throw Error(ErrorCode::Malformed,
                    "the written file holds " + std::to_string(out->tensors.size()) + " tensors instead of " +
                        std::to_string(expected),
                    dst);
    std::vector<std::uint8_t> a(64), b(64);
    for (const PlannedTensor& p : plan.tensors) {
        const TensorInfo* t = out->findTensor(p.name);
        if (!t) {
            if (o.format == ExportFormat::Safetensors)
                continue; // a tied alias written once
            throw Error(ErrorCode::Malformed, "the written file lacks the tensor", dst, {}, p.name);
        }
        if (t->dtype != p.dtype || t->shape != p.shape ||
            (o.format == ExportFormat::Torch && t->device != p.device))
            throw Error(ErrorCode::Malformed,
                        "the written tensor's dtype, shape or device differs from the plan", dst, {}, p.name);
        // The first bytes of every unchanged contiguous tensor must equal the source's.
        const TensorInfo& s = src.tensors[static_cast<std::size_t>(p.source)];
        const StorageInfo& ss = src.storages[static_cast<std::size_t>(s.storage)];
        const StorageInfo& os = out->storages[static_cast<std::size_t>(t->storage)];
        if (p.cast || ss.bigEndian || !s.isContiguous() || !t->isContiguous() || p.nbytes == 0)
            continue;
        const std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(64, p.nbytes));
        const std::uint64_t sOff =
            ss.fileOffset + static_cast<std::uint64_t>(s.storageOffset) * dtypeSize(s.dtype);
        const std::uint64_t oOff =
            os.fileOffset + static_cast<std::uint64_t>(t->storageOffset) * dtypeSize(t->dtype);
        if (!src.sources[static_cast<std::size_t>(ss.source)].file->readAt(sOff, n, a.data()) ||
            !out->sources[static_cast<std::size_t>(os.source)].file->readAt(oOff, n, b.data()) ||
            std::memcmp(a.data(), b.data(), n) != 0)
            throw Error(ErrorCode::Malformed, "the written tensor's bytes differ from the source's", dst,
                        oOff, p.name);
    }
}

} // namespace

int removeStaleExportFiles(const std::string& directory) {
    int removed = 0;
    DIR* d = ::opendir(directory.empty() ? "." : directory.c_str());
    if (!d)
        return 0;
    while (const dirent* e = ::readdir(d)) {
        const std::string name = e->d_name;
        const auto tag = name.rfind(kTempTag);
        if (name.empty() || name[0] != '.' || tag == std::string::npos || name.size() < 5 ||
            name.compare(name.size() - 4, 4, ".tmp") != 0)
            continue;
        const std::string pidText =
            name.substr(tag + std::strlen(kTempTag), name.size() - 4 - tag - std::strlen(kTempTag));
        char* end = nullptr;
        const long pid = std::strtol(pidText.c_str(), &end, 10);
        if (pidText.empty() || *end || pid <= 0)
            continue;
        if (::kill(static_cast<pid_t>(pid), 0) == 0 || errno != ESRCH)
            continue; // its export may still run
        const std::string path = (directory.empty() ? std::string(".") : directory) + "/" + name;
        if (::unlink(path.c_str()) == 0)
            ++removed;
    }
    ::closedir(d);
    return removed;
}

ExportLayout describeExport(const Checkpoint& ck, const ExportPlan& plan, const ExportOptions& o) {
    ExportLayout out;
    if (!plan.ok())
        return out;
    const WriteLayout L = planLayout(ck, plan, o, false);
    out.notes = L.notes;
    if (o.format == ExportFormat::Torch) {
        out.storageCount = L.storages.size();
        // data, ~200 bytes of headers and padding per record, and the pickle (~150 bytes per tensor)
        out.outputBytes = L.dataBytes + 200 * (L.storages.size() + 4) + 150 * plan.tensors.size();
    } else {
        out.storageCount = L.entries.size();
        out.outputBytes = L.dataBytes + 8 + safetensorsHeader(ck, plan, L).size();
    }
    return out;
}

ExportResult exportCheckpoint(const CheckpointPtr& ckp, const ExportPlan& plan, const ExportOptions& o,
                              const std::string& destination, const ProgressFn& progress) {
    namespace fs = std::filesystem;
    const Checkpoint& ck = *ckp;
    if (!plan.ok())
        throw Error(ErrorCode::Malformed, plan.errors.front(), destination);
    if (destination.empty())
        throw Error(ErrorCode::Io, "no destination file given");
    checkNotSource(ck, destination);
    const fs::path dstPath = fs::absolute(destination);
    const std::string dir = dstPath.parent_path().string();
    struct stat dirSt {};
    if (::stat(dir.c_str(), &dirSt) != 0 || !S_ISDIR(dirSt.st_mode))
        throw Error(ErrorCode::Io, "the destination folder '" + dir + "' does not exist", destination);
    if (fs::is_directory(dstPath))
        throw Error(ErrorCode::Io, "the destination is a folder", destination);

    ExportResult result;
    result.staleRemoved = removeStaleExportFiles(dir);
    WriteLayout L = planLayout(ck, plan, o, true);
    result.notes = L.notes;

    std::string header;
    if (o.format == ExportFormat::Safetensors)
        header = safetensorsHeader(ck, plan, L);
    std::string pickle;
    if (o.format == ExportFormat::Torch)
        pickle = torchPickle(ck, plan, L);
    const std::uint64_t estimate =
        L.dataBytes + header.size() + pickle.size() + 256 * (L.storages.size() + 8);

    struct statvfs vfs {};
    if (::statvfs(dir.c_str(), &vfs) == 0) {
        const std::uint64_t avail = static_cast<std::uint64_t>(vfs.f_bavail) * vfs.f_frsize;
        if (avail < estimate + (1u << 20))
            throw Error(ErrorCode::Io,
                        "not enough free space in '" + dir + "': the export needs " +
                            std::to_string(estimate) + " bytes, " + std::to_string(avail) + " are available",
                        destination);
    }

    TempFile tmp;
    const std::string tmpPath =
        dir + "/." + dstPath.filename().string() + kTempTag + std::to_string(::getpid()) + ".tmp";
    tmp.fd = ::open(tmpPath.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (tmp.fd < 0)
        throw Error(ErrorCode::Io, sysError("cannot create", tmpPath), destination);
    tmp.path = tmpPath;
    stage("created");

    Sink out;
    out.fd = tmp.fd;
    out.path = tmpPath;
    out.total = std::max<std::uint64_t>(estimate, 1);
    out.progress = &progress;
    SourceFiles files(ck);
    out.tick();

    if (o.format == ExportFormat::Torch) {
        ZipOut zip(out, "archive");
        zip.small("data.pkl", pickle);
        zip.small("byteorder", "little");
        for (std::size_t i = 0; i < L.storages.size(); ++i) {
            const TorchStorage& s = L.storages[i];
            zip.begin("data/" + s.key, s.piece.outBytes);
            zip.end(writePiece(ck, files, out, s.piece, true));
            if (i == 0)
                stage("data");
        }
        zip.small("version", "3\n");
        zip.finish();
    } else {
        std::string len;
        put64(len, header.size());
        out.write(len.data(), len.size());
        out.write(header.data(), header.size());
        for (std::size_t i = 0; i < L.entries.size(); ++i) {
            writePiece(ck, files, out, L.entries[i].piece, false);
            if (i == 0)
                stage("data");
        }
    }
    stage("written");
    if (::fsync(tmp.fd) != 0)
        throw Error(ErrorCode::Io, sysError("cannot flush", tmpPath), destination);
    ::close(tmp.fd);
    tmp.fd = -1;
    result.bytesWritten = out.pos;
    result.bytesCopied = out.copied;
    result.bytesConverted = out.converted;

    verifyOutput(ck, plan, o, L, tmpPath, destination);
    stage("verified");
    checkNotSource(ck, destination); // the destination may have become a link to the source meanwhile
    if (::rename(tmpPath.c_str(), dstPath.c_str()) != 0)
        throw Error(ErrorCode::Io, sysError("cannot rename the finished file to", dstPath.string()),
                    destination);
    tmp.path.clear();
    stage("renamed");
    fsyncDir(dir);
    if (progress)
        progress(out.total, out.total);
    return result;
}

} // namespace ckpt
