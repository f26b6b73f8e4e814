#include "torchformats.h"
#include "torchpickle.h"

#include "io/zipreader.h"

#include <charconv>

namespace ckpt {
namespace {

constexpr std::uint64_t kMaxPickleBytes = 4ull << 30;

std::string trim(std::string s) {
    while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' '))
        s.pop_back();
    return s;
}

} // namespace

std::shared_ptr<Checkpoint> readTorchZip(std::shared_ptr<const MappedFile> file) {
    auto ck = newCheckpoint(file, "pytorch-zip");
    ZipArchive zip(file);
    const std::string& path = file->path();
    if (zip.entries().empty())
        throw Error(ErrorCode::Malformed, "zip archive does not contain any files", path);

    // The archive folder is whatever the first entry says, as PyTorch's reader takes it.
    const std::string& first = zip.entries().front().name;
    const auto slash = first.find('/');
    if (slash == std::string::npos)
        throw Error(ErrorCode::BadMagic, "file in archive is not in a subdirectory: '" + first + "'", path);
    const std::string prefix = first.substr(0, slash + 1);
    std::size_t outside = 0;
    for (const auto& e : zip.entries())
        if (!e.name.starts_with(prefix))
            ++outside;
    if (outside)
        ck->findings.push_back({Severity::Warning,
                                std::to_string(outside) + " archive entries lie outside the folder '" +
                                    prefix + "'; PyTorch refuses such archives",
                                {},
                                {},
                                {},
                                0});

    const ZipEntry* pkl = zip.find(prefix + "data.pkl");
    if (!pkl)
        throw Error(ErrorCode::Malformed,
                    "archive has no '" + prefix + "data.pkl' record; not a PyTorch checkpoint", path);
    const bool torchscript = zip.find(prefix + "constants.pkl") != nullptr;
    if (torchscript)
        ck->format = "torchscript";

    // Format version: required by PyTorch, range 1..10.
    std::string versionText;
    const ZipEntry* ver = zip.find(prefix + ".data/version");
    if (!ver)
        ver = zip.find(prefix + "version");
    if (ver && ver->problem.empty() && ver->uncompressedSize <= 64) {
        versionText = trim(zip.read(*ver, 64));
        std::uint64_t v = 0;
        const auto [p, ec] = std::from_chars(versionText.data(), versionText.data() + versionText.size(), v);
        if (ec != std::errc() || p != versionText.data() + versionText.size())
            ck->findings.push_back({Severity::Warning,
                                    "version record '" + versionText + "' is not a number",
                                    {},
                                    {},
                                    ver->dataOffset,
                                    0});
        else if (v < 1 || v > 10)
            ck->findings.push_back(
                {Severity::Warning,
                 "format version " + versionText + " is outside 1..10, which PyTorch refuses",
                 {},
                 {},
                 ver->dataOffset,
                 0});
    } else {
        ck->findings.push_back({Severity::Warning,
                                "archive has no readable version record; PyTorch would refuse it",
                                {},
                                {},
                                {},
                                0});
    }
    bool bigEndian = false;
    if (const ZipEntry* bo = zip.find(prefix + "byteorder");
        bo && bo->problem.empty() && bo->uncompressedSize <= 16) {
        const std::string order = trim(zip.read(*bo, 16));
        if (order == "big")
            bigEndian = true;
        else if (order != "little")
            ck->findings.push_back({Severity::Warning,
                                    "unknown byteorder '" + order + "', assuming little",
                                    {},
                                    {},
                                    bo->dataOffset,
                                    0});
    }
    ck->formatDetail = std::string(torchscript ? "TorchScript archive" : "PyTorch zip (torch.save)") +
                       ", folder '" + prefix.substr(0, prefix.size() - 1) + "'" +
                       (versionText.empty() ? "" : ", format version " + versionText) +
                       (bigEndian ? ", big-endian" : "");

    TorchPickleHooks hooks(*ck);
    ck->storages.reserve(zip.entries().size());
    ck->prototypes.reserve(zip.entries().size());
    auto unpickle = [&](const ZipEntry& e) -> Value* {
        std::string inflated;
        std::span<const std::uint8_t> bytes;
        std::uint64_t base = e.dataOffset;
        if (e.method == 0) {
            bytes = zip.storedData(e);
        } else {
            inflated = zip.read(e, kMaxPickleBytes);
            bytes = {reinterpret_cast<const std::uint8_t*>(inflated.data()), inflated.size()};
            base = 0;
        }
        try {
            Unpickler u(*ck->arena, hooks, bytes, base, e.name);
            return u.load();
        } catch (const Error& err) {
            throw err.withFile(path);
        }
    };
    ck->root = unpickle(*pkl);
    const Value* constants = nullptr;
    if (torchscript) {
        hooks.setStorageSpace(1, "constants/");
        constants = unpickle(*zip.find(prefix + "constants.pkl"));
    }

    // Locate each storage's record.
    for (auto& s : ck->storages) {
        s.bigEndian = bigEndian;
        if (s.viewOf >= 0)
            continue;
        const std::string record = prefix + (s.space == 1 ? "constants/" : "data/") + s.key;
        const ZipEntry* e = zip.find(record);
        if (!e) {
            s.error = "storage record '" + record + "' referenced by the pickle does not exist";
            continue;
        }
        if (!e->problem.empty()) {
            s.error = "storage record '" + record + "': " + e->problem;
            continue;
        }
        if (e->method != 0) {
            s.error = "storage record '" + record + "' is compressed; PyTorch writes storages uncompressed";
            continue;
        }
        s.fileOffset = e->dataOffset;
        if (e->uncompressedSize < s.nbytes)
            s.error = "storage '" + s.key + "' declares " + std::to_string(s.nbytes) +
                      " bytes but its record '" + record + "' holds only " +
                      std::to_string(e->uncompressedSize);
    }
    resolveStorageViews(*ck);

    finishTorchCheckpoint(*ck, hooks, constants);

    // Members that are not tensor data: TorchScript code and debug info, extra files.
    for (const auto& e : zip.entries()) {
        const std::string rel = e.name.starts_with(prefix) ? e.name.substr(prefix.size()) : e.name;
        if (rel == "data.pkl" || rel == "constants.pkl" || rel == "version" || rel == ".data/version" ||
            rel == "byteorder" || rel.starts_with("data/") || rel.starts_with("constants/"))
            continue;
        ck->records.push_back({rel, e.uncompressedSize, e.method != 0});
    }
    return ck;
}

} // namespace ckpt
