#include "torchformats.h"
#include "torchpickle.h"

#include "io/bytereader.h"

namespace ckpt {
namespace {

// Data-only hooks for the small header pickles: any global there is an error.
class HeaderHooks final : public PickleHooks {
public:
    Value* global(ValueArena&, std::string_view module, std::string_view name,
                  std::uint64_t offset) override {
        throw Error(ErrorCode::Malformed,
                    "header pickle references " + std::string(module) + "." + std::string(name), {}, offset);
    }
};

Value* loadPickle(ValueArena& arena, PickleHooks& hooks, ByteReader& in, const std::string& what) {
    const std::span<const std::uint8_t> rest = in.bytes(in.remaining());
    const std::uint64_t base = in.absolutePosition() - rest.size();
    Unpickler u(arena, hooks, rest, base, what);
    Value* v = u.load();
    in.seek(static_cast<std::size_t>(base + u.position()));
    return v;
}

} // namespace

std::shared_ptr<Checkpoint> readTorchLegacy(std::shared_ptr<const MappedFile> file) {
    auto ck = newCheckpoint(file, "pytorch-legacy");
    const std::string& path = file->path();
    ByteReader in(file->bytes(), 0);
    try {
        HeaderHooks header;
        const Value* magic = loadPickle(*ck->arena, header, in, "magic number pickle");
        if (magic->kind != ValueKind::BigInt || magic->text != "119547037146038801333356")
            throw Error(ErrorCode::BadMagic, "invalid magic number; corrupt file?", {}, 0);
        const Value* protocol = loadPickle(*ck->arena, header, in, "protocol version pickle");
        if (protocol->kind != ValueKind::Int || protocol->integer != 1001)
            throw Error(ErrorCode::Unsupported, "invalid protocol version: " + valueRepr(protocol), {}, 0);
        loadPickle(*ck->arena, header, in, "sys_info pickle");

        TorchPickleHooks hooks(*ck);
        ck->root = loadPickle(*ck->arena, hooks, in, "object pickle");
        const Value* keys = loadPickle(*ck->arena, header, in, "storage key list");
        if (keys->kind != ValueKind::List)
            throw Error(ErrorCode::Malformed, "storage key list is not a list", {}, in.absolutePosition());
        ck->formatDetail =
            "PyTorch legacy format (before 1.6), " + std::to_string(keys->items.size()) + " storages";

        // Storage bytes follow back to back in key-list order, each after an 8-byte element count.
        std::string streamError;
        for (const Value* k : keys->items) {
            const std::string key = k->kind == ValueKind::Int ? std::to_string(k->integer) : k->text;
            const int index = hooks.findStorage(key);
            if (index < 0) {
                streamError =
                    "storage '" + key + "' is listed but never used, so its element size is unknown";
                break;
            }
            StorageInfo& s = ck->storages[static_cast<std::size_t>(index)];
            const std::uint64_t at = in.absolutePosition();
            if (in.remaining() < 8) {
                streamError = "file ends before storage '" + key + "' (at byte " + std::to_string(at) + ")";
                break;
            }
            const std::int64_t count = in.i64le();
            std::uint64_t bytes = 0;
            if (count < 0 || mulOverflow(static_cast<std::uint64_t>(count), dtypeSize(s.dtype), &bytes)) {
                streamError =
                    "storage '" + key + "' has an invalid element count at byte " + std::to_string(at);
                break;
            }
            s.fileOffset = in.absolutePosition();
            if (bytes > in.remaining()) {
                s.error = "storage '" + key + "' declares " + std::to_string(bytes) +
                          " bytes but the file holds only " + std::to_string(in.remaining()) + " more";
                streamError = "file ends inside storage '" + key + "'";
                break;
            }
            if (bytes < s.nbytes)
                s.error = "storage '" + key + "' holds " + std::to_string(bytes) +
                          " bytes but the pickle declares " + std::to_string(s.nbytes);
            in.skip(static_cast<std::size_t>(bytes));
        }
        for (auto& s : ck->storages)
            if (s.error.empty() && s.fileOffset == 0 && s.viewOf < 0)
                s.error =
                    streamError.empty() ? "storage '" + s.key + "' is not in the storage list" : streamError;
        resolveStorageViews(*ck);
        finishTorchCheckpoint(*ck, hooks);
        if (!streamError.empty() && !ck->hasErrors())
            ck->findings.push_back({Severity::Error, streamError, {}, {}, in.absolutePosition(), 0});
    } catch (const Error& e) {
        throw e.withFile(path);
    }
    return ck;
}

std::shared_ptr<Checkpoint> readPlainPickle(std::shared_ptr<const MappedFile> file) {
    auto ck = newCheckpoint(file, "pickle");
    ck->formatDetail = "Python pickle";
    TorchPickleHooks hooks(*ck);
    try {
        Unpickler u(*ck->arena, hooks, file->bytes(), 0, "pickle");
        ck->root = u.load();
        if (u.position() < file->size())
            ck->findings.push_back(
                {Severity::Warning,
                 std::to_string(file->size() - u.position()) + " bytes follow the end of the pickle",
                 {},
                 {},
                 u.position(),
                 0});
    } catch (const Error& e) {
        throw e.withFile(file->path());
    }
    for (auto& s : ck->storages)
        s.error = "a bare pickle holds no storage data";
    finishTorchCheckpoint(*ck, hooks);
    return ck;
}

} // namespace ckpt
