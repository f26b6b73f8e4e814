#include "open.h"

#include "torchformats.h"

#include "io/zipreader.h"
#include "pickle/unpickler.h"

#include <filesystem>

// Readers of the other formats. Each declares, in its header, what it recognises:
//   bool looksLikeX(std::span<const std::uint8_t> head, std::uint64_t size)   by the file's bytes
//   std::shared_ptr<Checkpoint> readX(std::shared_ptr<const MappedFile>)        reads one mapped file
//   CheckpointPtr tryOpenX(const std::string& path)   formats made of several files (a directory, a prefix,
//                                                      an index); returns null when the path is not one
#if __has_include("safetensors.h")
#include "safetensors.h"
#define CKPT_HAVE_SAFETENSORS 1
#endif
#if __has_include("numpy.h")
#include "numpy.h"
#define CKPT_HAVE_NUMPY 1
#endif
#if __has_include("shardindex.h")
#include "shardindex.h"
#define CKPT_HAVE_SHARDINDEX 1
#endif
#if __has_include("gguf.h")
#include "gguf.h"
#define CKPT_HAVE_GGUF 1
#endif
#if __has_include("tfbundle.h")
#include "tfbundle.h"
#define CKPT_HAVE_TFBUNDLE 1
#endif
#if __has_include("dcp.h")
#include "dcp.h"
#define CKPT_HAVE_DCP 1
#endif
#if __has_include("keras.h")
#include "keras.h"
#define CKPT_HAVE_KERAS 1
#endif

#include <cstring>

namespace ckpt {
namespace {

// PROTO 2, LONG1 of 10 bytes: how the legacy format's magic number pickle starts with the default protocol.
// The number itself is checked by the reader, so a damaged magic gets "invalid magic number".
constexpr std::uint8_t kLegacyMagic[] = {0x80, 0x02, 0x8a, 0x0a};

class NoGlobals final : public PickleHooks {
public:
    Value* global(ValueArena&, std::string_view, std::string_view, std::uint64_t offset) override {
        throw Error(ErrorCode::Malformed, "global in a header pickle", {}, offset);
    }
};

// A legacy file saved with another pickle protocol (torch.save(..., pickle_protocol=N)) starts with the
// magic number in that protocol: read just that first small pickle to tell.
bool startsWithLegacyMagic(std::span<const std::uint8_t> head) {
    try {
        ValueArena arena;
        NoGlobals hooks;
        Unpickler u(arena, hooks, head.first(std::min<std::size_t>(head.size(), 64)), 0, "");
        const Value* v = u.load();
        return v->kind == ValueKind::BigInt && v->text == "119547037146038801333356";
    } catch (const Error&) {
        return false;
    }
}

std::string hexHead(std::span<const std::uint8_t> b) {
    static const char* digits = "0123456789abcdef";
    std::string out;
    for (std::size_t i = 0; i < std::min<std::size_t>(b.size(), 8); ++i) {
        if (i)
            out += ' ';
        out += digits[b[i] >> 4];
        out += digits[b[i] & 15];
    }
    return out;
}

CheckpointPtr dispatch(std::shared_ptr<const MappedFile> file) {
    const auto head = file->bytes();
    const std::string& path = file->path();
    if (head.empty())
        throw Error(ErrorCode::Truncated, "file is empty", path);
    if (ZipArchive::looksLikeZip(head)) {
        try {
            return readTorchZip(file);
        } catch (const Error& e) {
            if (e.code() != ErrorCode::BadMagic)
                throw;
#ifdef CKPT_HAVE_NUMPY
            if (looksLikeNpz(file))
                return readNpz(file);
#endif
#ifdef CKPT_HAVE_KERAS
            if (looksLikeKerasZip(file))
                return readKerasZip(file);
#endif
            throw;
        }
    }
#ifdef CKPT_HAVE_KERAS
    if (looksLikeHdf5(file))
        return readKerasH5(file);
#endif
#ifdef CKPT_HAVE_GGUF
    if (looksLikeGguf(head, file->size()))
        return readGguf(file);
#endif
#ifdef CKPT_HAVE_NUMPY
    if (looksLikeNpy(head, file->size()))
        return readNpy(file);
#endif
#ifdef CKPT_HAVE_SAFETENSORS
    if (looksLikeSafetensors(head, file->size()))
        return readSafetensors(file);
#endif
    if ((head.size() >= sizeof kLegacyMagic &&
         std::memcmp(head.data(), kLegacyMagic, sizeof kLegacyMagic) == 0) ||
        startsWithLegacyMagic(head))
        return readTorchLegacy(file);
    if (head.size() >= 8 && std::memcmp(head.data(), "PYTORCH1", 8) == 0)
        throw Error(ErrorCode::Unsupported,
                    "file is an unsupported archive format from the PyTorch preview release", path, 0);
    if (head.size() >= 262 && std::memcmp(head.data() + 257, "ustar", 5) == 0)
        throw Error(ErrorCode::Unsupported, "PyTorch 0.1 tar checkpoints are not supported", path, 0);
    if (head.size() >= 2 && head[0] == 0x80 && head[1] >= 2 && head[1] <= 5)
        return readPlainPickle(file);
    throw Error(ErrorCode::BadMagic,
                "not a recognised checkpoint format (first bytes: " + hexHead(head) + ")", path, 0);
}

} // namespace

namespace {

// Metadata reads that hit pages lost to a truncation read zeros (mappedfile.h): what they built is no data.
CheckpointPtr unlessTruncated(CheckpointPtr ck) {
    for (const auto& s : ck->sources)
        if (s.file && s.file->lostPages())
            throw Error(ErrorCode::Changed, "the file was truncated on disk while it was being opened",
                        s.path);
    return ck;
}

} // namespace

CheckpointPtr openCheckpoint(const std::string& path) {
    // Formats made of several files first: they recognise directories, prefixes and index files.
#ifdef CKPT_HAVE_DCP
    if (auto ck = tryOpenDcp(path))
        return ck;
#endif
#ifdef CKPT_HAVE_TFBUNDLE
    if (auto ck = tryOpenTfBundle(path))
        return unlessTruncated(ck);
#endif
#ifdef CKPT_HAVE_SHARDINDEX
    if (auto ck = tryOpenShardIndex(path))
        return unlessTruncated(ck);
#endif
    return unlessTruncated(dispatch(MappedFile::open(path)));
}

CheckpointPtr openCheckpointBuffer(const std::string& name, std::string bytes) {
    return dispatch(MappedFile::fromBuffer(name, std::move(bytes)));
}

} // namespace ckpt
