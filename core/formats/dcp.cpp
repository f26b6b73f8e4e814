#include "dcp.h"

#include "torchpickle.h"

#include "io/bytereader.h"
#include "io/error.h"
#include "io/zipreader.h"
#include "pickle/unpickler.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <set>
#include <unordered_map>

namespace ckpt {
namespace {

namespace fs = std::filesystem;

constexpr std::uint64_t kMaxMetadataBytes = 1ull << 30;
constexpr std::size_t kMaxEntries = 10'000'000;
constexpr std::size_t kMaxChunks = 65'536;
constexpr std::size_t kMaxDims = 64;
constexpr std::uint64_t kMaxPickleBytes = 1ull << 30;

bool isDcpModule(std::string_view m) {
    return m == "torch.distributed.checkpoint.metadata" ||
           m == "torch.distributed._shard.checkpoint.metadata" ||
           m == "torch.distributed.checkpoint.filesystem" ||
           m == "torch.distributed._shard.checkpoint.filesystem" ||
           m == "torch.distributed._shard.sharded_tensor.metadata";
}

bool isDcpClass(std::string_view m, std::string_view n) {
    static const std::set<std::string_view> kNames = {"Metadata",
                                                      "TensorStorageMetadata",
                                                      "BytesStorageMetadata",
                                                      "ChunkStorageMetadata",
                                                      "MetadataIndex",
                                                      "_StorageInfo",
                                                      "TensorProperties",
                                                      "MEM_FORMAT_ENCODING",
                                                      "_MEM_FORMAT_ENCODING",
                                                      "StorageMeta",
                                                      "_StoragePrefix"};
    return isDcpModule(m) && kNames.count(n);
}

// The .metadata pickle: DCP's dataclasses and the few torch values they hold become data; anything else is
// an opaque object and a security finding, as in a torch.save pickle.
class DcpHooks final : public PickleHooks {
public:
    explicit DcpHooks(Checkpoint& ck)
        : m_ck(ck) {}

    Value* global(ValueArena& arena, std::string_view module, std::string_view name,
                  std::uint64_t offset) override {
        Value* g = PickleHooks::global(arena, module, name, offset);
        if (isDcpClass(module, name) || (module == "torch" && (name == "Size" || dtypeFromName(name))) ||
            (module == "torch.serialization" && name == "_get_layout") ||
            (module == "pathlib" && (name == "PosixPath" || name == "WindowsPath"))) {
            g->plainData = true;
            return g;
        }
        if (module == "builtins" && name == "getattr")
            return g; // only getattr(MEM_FORMAT_ENCODING, '<member>') is read; see call()
        report(g, offset,
               "references " + g->qualifiedName() +
                   ", which is not part of a distributed checkpoint's metadata; it is shown as "
                   "an opaque object and was never imported");
        return g;
    }

    Value* call(ValueArena& arena, Value* callable, Value* args, CallKind how,
                std::uint64_t offset) override {
        if (callable && callable->kind == ValueKind::Global) {
            const std::string& q = callable->qualifiedName();
            const Value* a0 = args && !args->items.empty() ? args->items[0] : nullptr;
            const Value* a1 = args && args->items.size() > 1 ? args->items[1] : nullptr;
            if (q == "torch.Size") {
                Value* t = arena.make(ValueKind::Tuple);
                if (a0 && (a0->kind == ValueKind::Tuple || a0->kind == ValueKind::List))
                    arena.copyItems(t, a0->items, offset);
                return t;
            }
            if (q == "torch.serialization._get_layout" && a0 && a0->kind == ValueKind::String)
                return arena.makeString(a0->text);
            if (q == "builtins.getattr") {
                if (a0 && a0->kind == ValueKind::Global && isDcpModule(a0->module()) &&
                    a0->name().ends_with("MEM_FORMAT_ENCODING") && a1 && a1->kind == ValueKind::String)
                    return arena.makeString(a1->text);
                report(callable, offset,
                       "calls builtins.getattr" + valueRepr(args, 120) +
                           " outside the memory format enum; shown as an opaque object, nothing was run");
            }
        }
        return PickleHooks::call(arena, callable, args, how, offset);
    }

private:
    void report(Value* g, std::uint64_t offset, std::string message) {
        g->dangerous = isDangerousGlobal(g->module(), g->name());
        if (!m_reported.insert(g->qualifiedName()).second)
            return;
        Finding f;
        f.severity = Severity::Security;
        f.global = g->qualifiedName();
        f.offset = offset;
        f.message = g->dangerous
                        ? "references " + g->qualifiedName() + ", a known way to run code; it was not run"
                        : std::move(message);
        m_ck.findings.push_back(std::move(f));
    }

    Checkpoint& m_ck;
    std::set<std::string> m_reported;
};

bool isObject(const Value* v, std::string_view name) {
    return v && v->kind == ValueKind::Object && v->name() == name && isDcpModule(v->module());
}

// Dataclass fields: the BUILD state dict of an instance (pickle's default for dataclasses), the first entry
// of the name. Objects and their state dicts may be shared through the memo, one dict by any number of
// entries: a large dict is indexed once, so that the cost of a lookup does not grow with its size.
class Fields {
public:
    const Value* get(const Value* obj, std::string_view key) {
        if (!obj || obj->kind != ValueKind::Object || !obj->state)
            return nullptr;
        const Value* st = obj->state;
        // A (dict, slots) pair when the class has __slots__.
        if (st->kind == ValueKind::Tuple && st->items.size() == 2 && st->items[0]->kind == ValueKind::Dict)
            st = st->items[0];
        if (st->kind != ValueKind::Dict)
            return nullptr;
        if (st->items.size() <= 2 * kScanPairs) {
            for (std::size_t i = 0; i + 1 < st->items.size(); i += 2)
                if (st->items[i]->kind == ValueKind::String && st->items[i]->text == key)
                    return st->items[i + 1];
            return nullptr;
        }
        auto [it, fresh] = m_index.try_emplace(st);
        if (fresh)
            for (std::size_t i = 0; i + 1 < st->items.size(); i += 2)
                if (st->items[i]->kind == ValueKind::String)
                    it->second.emplace(st->items[i]->text, st->items[i + 1]);
        const auto f = it->second.find(key);
        return f == it->second.end() ? nullptr : f->second;
    }

private:
    static constexpr std::size_t kScanPairs = 16; // dataclasses have a handful of fields
    std::unordered_map<const Value*, std::unordered_map<std::string_view, const Value*>> m_index;
};

bool intTuple(const Value* v, std::vector<std::int64_t>& out) {
    out.clear();
    if (!v || (v->kind != ValueKind::Tuple && v->kind != ValueKind::List) || v->items.size() > kMaxDims)
        return false;
    for (const Value* d : v->items) {
        if (d->kind != ValueKind::Int || d->integer < 0)
            return false;
        out.push_back(d->integer);
    }
    return true;
}

std::string dimsText(const std::vector<std::int64_t>& d) {
    std::string s = "[";
    for (std::size_t i = 0; i < d.size(); ++i)
        s += (i ? ", " : "") + std::to_string(d[i]);
    return s + "]";
}

bool plainFileName(const std::string& s) {
    return !s.empty() && s != "." && s != ".." && s.find('/') == std::string::npos &&
           s.find('\\') == std::string::npos && s.find('\0') == std::string::npos;
}

std::string trim(std::string s) {
    while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' '))
        s.pop_back();
    return s;
}

// One (offset, length) slice of a .distcp file: a complete torch.save archive.
std::shared_ptr<Checkpoint> readTorchSlice(const std::shared_ptr<const MappedFile>& file, std::uint64_t base,
                                           std::uint64_t length) {
    auto ck = newCheckpoint(file, "pytorch-zip");
    if (!ZipArchive::looksLikeZip(file->bytes().subspan(base, std::min<std::uint64_t>(length, 64))))
        throw Error(ErrorCode::BadMagic, "the slice is not a torch.save zip archive", file->path(), base);
    ZipArchive zip(file, base, length);
    if (zip.entries().empty())
        throw Error(ErrorCode::Malformed, "the slice's zip archive holds no files", file->path(), base);
    const std::string& first = zip.entries().front().name;
    const auto slash = first.find('/');
    if (slash == std::string::npos)
        throw Error(ErrorCode::Malformed, "the slice's archive entry '" + first + "' is not in a folder",
                    file->path(), base);
    const std::string prefix = first.substr(0, slash + 1);
    const ZipEntry* pkl = zip.find(prefix + "data.pkl");
    if (!pkl)
        throw Error(ErrorCode::Malformed, "the slice's archive has no '" + prefix + "data.pkl' record",
                    file->path(), base);
    bool bigEndian = false;
    if (const ZipEntry* bo = zip.find(prefix + "byteorder");
        bo && bo->problem.empty() && bo->uncompressedSize <= 16)
        bigEndian = trim(zip.read(*bo, 16)) == "big";

    TorchPickleHooks hooks(*ck);
    {
        std::string inflated;
        std::span<const std::uint8_t> bytes;
        std::uint64_t at = pkl->dataOffset;
        if (pkl->method == 0) {
            bytes = zip.storedData(*pkl);
        } else {
            inflated = zip.read(*pkl, kMaxPickleBytes);
            bytes = {reinterpret_cast<const std::uint8_t*>(inflated.data()), inflated.size()};
            at = 0;
        }
        try {
            Unpickler u(*ck->arena, hooks, bytes, at, pkl->name);
            ck->root = u.load();
        } catch (const Error& err) {
            throw err.withFile(file->path());
        }
    }
    for (auto& s : ck->storages) {
        s.bigEndian = bigEndian;
        if (s.viewOf >= 0)
            continue;
        const std::string record = prefix + "data/" + s.key;
        const ZipEntry* e = zip.find(record);
        if (!e)
            s.error = "storage record '" + record + "' referenced by the pickle does not exist";
        else if (!e->problem.empty())
            s.error = "storage record '" + record + "': " + e->problem;
        else if (e->method != 0)
            s.error = "storage record '" + record + "' is compressed; PyTorch writes storages uncompressed";
        else if (e->uncompressedSize < s.nbytes)
            s.error = "storage '" + s.key + "' declares " + std::to_string(s.nbytes) +
                      " bytes but its record '" + record + "' holds only " +
                      std::to_string(e->uncompressedSize);
        else
            s.fileOffset = e->dataOffset;
    }
    resolveStorageViews(*ck);
    finishTorchCheckpoint(*ck, hooks);
    return ck;
}

// Overlapping chunks: the first chunk, in list order, that shares elements with an earlier one, and the first
// such earlier one. Two chunks share elements when their ranges meet in every dimension and the later one
// holds elements. A sweep along the dimension with the most distinct offsets compares each chunk only with
// those whose range in that dimension it meets; the comparisons are counted against a limit, since chunks
// laid out irregularly in every dimension could still meet each other in the swept one.
constexpr std::uint64_t kMaxOverlapWork = 1ull << 27;

struct ChunkOverlap {
    std::size_t later = std::numeric_limits<std::size_t>::max();
    std::size_t earlier = std::numeric_limits<std::size_t>::max();
    bool tooMuchWork = false;
};

ChunkOverlap firstOverlap(const std::vector<TensorChunk>& parts,
                          const std::vector<std::vector<std::int64_t>>& sizes,
                          const std::vector<std::uint64_t>& volumes) {
    ChunkOverlap found;
    const std::size_t n = parts.size();
    if (n < 2)
        return found;
    const std::size_t dims = parts.front().offsets.size();
    auto meet = [&](std::size_t a, std::size_t b) {
        for (std::size_t d = 0; d < dims; ++d)
            if (!(parts[a].offsets[d] < parts[b].offsets[d] + sizes[b][d] &&
                  parts[b].offsets[d] < parts[a].offsets[d] + sizes[a][d]))
                return false;
        return true;
    };
    if (dims == 0) { // every chunk of a scalar is the whole scalar
        found.later = 1;
        found.earlier = 0;
        return found;
    }
    std::vector<std::size_t> order(n);
    std::size_t sweep = 0, mostDistinct = 0;
    std::vector<std::int64_t> values(n);
    for (std::size_t d = 0; d < dims; ++d) {
        for (std::size_t i = 0; i < n; ++i)
            values[i] = parts[i].offsets[d];
        std::sort(values.begin(), values.end());
        const auto distinct =
            static_cast<std::size_t>(std::unique(values.begin(), values.end()) - values.begin());
        if (distinct > mostDistinct) {
            mostDistinct = distinct;
            sweep = d;
        }
    }
    for (std::size_t i = 0; i < n; ++i)
        order[i] = i;
    std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
        return parts[a].offsets[sweep] < parts[b].offsets[sweep];
    });
    // Chunks whose range in the swept dimension may still meet a later-starting one.
    std::vector<std::size_t> active;
    std::uint64_t work = 0;
    for (const std::size_t x : order) {
        const std::int64_t start = parts[x].offsets[sweep];
        for (std::size_t k = 0; k < active.size();) {
            const std::size_t y = active[k];
            if (parts[y].offsets[sweep] + sizes[y][sweep] <= start) {
                active[k] = active.back();
                active.pop_back();
                continue;
            }
            if (++work > kMaxOverlapWork) {
                found.tooMuchWork = true;
                return found;
            }
            const std::size_t later = std::max(x, y), earlier = std::min(x, y);
            if (volumes[later] > 0 && meet(x, y) &&
                (later < found.later || (later == found.later && earlier < found.earlier))) {
                found.later = later;
                found.earlier = earlier;
            }
            ++k;
        }
        active.push_back(x);
    }
    return found;
}

struct SliceRef {
    std::string file;
    std::uint64_t offset = 0;
    std::uint64_t length = 0;
};

// Reading a slice's zip directory and pickle through the mapping faults in up to 64 KiB of tensor data
// around each page touched; dropping those pages after each slice keeps opening a checkpoint of thousands of
// chunks within a few MiB (the pages stay in the page cache).
void releaseAround(const MappedFile& file, const SliceRef& ref) {
    constexpr std::uint64_t kFaultAround = 64u << 10;
    const std::uint64_t begin = ref.offset > kFaultAround ? ref.offset - kFaultAround : 0;
    file.release(begin, ref.length + (ref.offset - begin) + kFaultAround);
}

class DcpReader {
public:
    DcpReader(std::string dir, std::shared_ptr<const MappedFile> metadata)
        : m_dir(std::move(dir))
        , m_ck(newCheckpoint(metadata, "pytorch-dcp")) {}

    CheckpointPtr read();

private:
    void readMetadata();
    void readTensor(const std::string& fqn, const Value* md);
    void readBytes(const std::string& fqn);
    // The file a slice lives in, opened once; source index, or -1 with `why` set.
    int sourceFor(const SliceRef& ref, std::string& why);
    // Parses a slice and moves its storages into the checkpoint; returns the part (its tensors' storage
    // indices already point into the checkpoint).
    std::shared_ptr<Checkpoint> slice(const SliceRef& ref, int source);
    void fail(TensorInfo& t, const std::string& why) {
        t.error = why;
        m_ck->findings.push_back({Severity::Error, why, t.name, {}, {}, 0});
    }

    std::string m_dir;
    std::shared_ptr<Checkpoint> m_ck;
    const Value* m_sdm = nullptr;
    std::map<std::pair<std::string, std::vector<std::int64_t>>, SliceRef> m_tensorSlices;
    std::map<std::string, SliceRef> m_bytesSlices;
    std::map<std::string, int> m_sources;
    std::map<std::string, std::string> m_sourceErrors;
    Fields m_fields;
    const Value* field(const Value* obj, std::string_view key) { return m_fields.get(obj, key); }
    std::vector<std::shared_ptr<Checkpoint>> m_keepAlive;
    std::size_t m_chunks = 0;
};

void DcpReader::readMetadata() {
    const auto& file = m_ck->sources.front().file;
    const std::string& path = file->path();
    if (file->size() > kMaxMetadataBytes)
        throw Error(ErrorCode::Limit,
                    ".metadata of " + std::to_string(file->size()) + " bytes exceeds the limit of " +
                        std::to_string(kMaxMetadataBytes),
                    path, 0);
    DcpHooks hooks(*m_ck);
    const Value* root = nullptr;
    try {
        Unpickler u(*m_ck->arena, hooks, file->bytes(), 0, ".metadata");
        root = u.load();
    } catch (const Error& e) {
        throw e.withFile(path);
    }
    if (!isObject(root, "Metadata"))
        throw Error(ErrorCode::Malformed,
                    "the pickle holds " + valueRepr(root) + ", not a distributed checkpoint's Metadata", path,
                    0);
    m_ck->root = root;
    m_sdm = field(root, "state_dict_metadata");
    const Value* sd = field(root, "storage_data");
    if (!m_sdm || m_sdm->kind != ValueKind::Dict)
        throw Error(ErrorCode::Malformed, "Metadata.state_dict_metadata is not a dict", path, 0);
    if (!sd || sd->kind != ValueKind::Dict)
        throw Error(ErrorCode::Malformed, "Metadata.storage_data is not a dict", path, 0);
    if (m_sdm->items.size() / 2 > kMaxEntries || sd->items.size() / 2 > kMaxEntries)
        throw Error(ErrorCode::Limit, "Metadata holds more than " + std::to_string(kMaxEntries) + " entries",
                    path, 0);

    for (std::size_t i = 0; i + 1 < sd->items.size(); i += 2) {
        const Value* key = sd->items[i];
        const Value* info = sd->items[i + 1];
        const Value* fqn = field(key, "fqn");
        if (!isObject(key, "MetadataIndex") || !fqn || fqn->kind != ValueKind::String)
            throw Error(ErrorCode::Malformed,
                        "storage_data key " + valueRepr(key) + " is not a MetadataIndex with a name", path,
                        0);
        const Value* rel = field(info, "relative_path");
        const Value* off = field(info, "offset");
        const Value* len = field(info, "length");
        if (!isObject(info, "_StorageInfo") || !rel || rel->kind != ValueKind::String || !off ||
            off->kind != ValueKind::Int || off->integer < 0 || !len || len->kind != ValueKind::Int ||
            len->integer < 0)
            throw Error(ErrorCode::Malformed,
                        "storage_data entry of '" + fqn->text +
                            "' is not a _StorageInfo(relative_path, offset, length) of non-negative integers",
                        path, 0, fqn->text);
        SliceRef ref{rel->text, static_cast<std::uint64_t>(off->integer),
                     static_cast<std::uint64_t>(len->integer)};
        const Value* where = field(key, "offset");
        std::vector<std::int64_t> offsets;
        if (!where || where->kind == ValueKind::None)
            m_bytesSlices[fqn->text] = ref;
        else if (intTuple(where, offsets))
            m_tensorSlices[{fqn->text, offsets}] = ref;
        else
            throw Error(ErrorCode::Malformed,
                        "storage_data key of '" + fqn->text + "' has offset " + valueRepr(where) +
                            ", not a tuple of non-negative integers",
                        path, 0, fqn->text);
    }
}

int DcpReader::sourceFor(const SliceRef& ref, std::string& why) {
    if (const auto it = m_sources.find(ref.file); it != m_sources.end())
        return it->second;
    if (const auto it = m_sourceErrors.find(ref.file); it != m_sourceErrors.end()) {
        why = it->second;
        return -1;
    }
    if (!plainFileName(ref.file)) {
        why = "storage_data names '" + ref.file +
              "', which is not a plain file name in the checkpoint's folder; "
              "refused";
    } else {
        const std::string full = (fs::path(m_dir) / ref.file).string();
        std::error_code ec;
        if (!fs::is_regular_file(full, ec)) {
            why = "data file '" + ref.file + "' named by .metadata is missing";
        } else {
            try {
                auto file = MappedFile::open(full);
                const int index = static_cast<int>(m_ck->sources.size());
                m_ck->sources.push_back({file->path(), file});
                m_sources.emplace(ref.file, index);
                return index;
            } catch (const Error& e) {
                why = "data file '" + ref.file + "' cannot be read: " + e.what();
            }
        }
    }
    m_sourceErrors.emplace(ref.file, why);
    m_ck->findings.push_back({Severity::Error, why, {}, {}, {}, 0});
    return -1;
}

std::shared_ptr<Checkpoint> DcpReader::slice(const SliceRef& ref, int source) {
    const auto& file = m_ck->sources[static_cast<std::size_t>(source)].file;
    if (ref.offset > file->size() || ref.length > file->size() - ref.offset)
        throw Error(ErrorCode::OutOfBounds,
                    "slice [" + std::to_string(ref.offset) + ", " + std::to_string(ref.offset + ref.length) +
                        ") lies outside '" + ref.file + "' (" + std::to_string(file->size()) + " bytes)",
                    file->path(), ref.offset);
    std::shared_ptr<Checkpoint> part;
    try {
        part = readTorchSlice(file, ref.offset, ref.length);
    } catch (const Error&) {
        releaseAround(*file, ref);
        throw;
    }
    releaseAround(*file, ref);
    const int storageBase = static_cast<int>(m_ck->storages.size());
    for (auto s : part->storages) {
        s.source = source;
        if (s.viewOf >= 0)
            s.viewOf += storageBase;
        m_ck->storages.push_back(std::move(s));
    }
    for (auto& t : part->tensors)
        if (t.storage >= 0)
            t.storage += storageBase;
    for (auto f : part->findings) {
        f.message = ref.file + ": " + f.message;
        f.source = source;
        m_ck->findings.push_back(std::move(f));
    }
    return part;
}

void DcpReader::readTensor(const std::string& fqn, const Value* md) {
    TensorInfo t;
    t.name = fqn;
    t.device = "cpu";
    const Value* props = field(md, "properties");
    const Value* size = field(md, "size");
    const Value* chunks = field(md, "chunks");
    // TensorProperties pickles its state as (dtype, layout, requires_grad, memory_format, pin_memory).
    const Value* dtype = nullptr;
    const Value* grad = nullptr;
    if (props && props->state && props->state->kind == ValueKind::Tuple && props->state->items.size() >= 3) {
        dtype = props->state->items[0];
        grad = props->state->items[2];
    } else {
        dtype = field(props, "dtype");
        grad = field(props, "requires_grad");
    }
    if (grad && grad->kind == ValueKind::Bool)
        t.requiresGrad = grad->boolean;
    const auto dt = dtype && dtype->kind == ValueKind::Global && dtype->module() == "torch"
                        ? dtypeFromName(dtype->name())
                        : std::nullopt;
    auto finish = [&](const std::string& why) {
        if (!why.empty())
            fail(t, why);
        m_ck->tensors.push_back(std::move(t));
    };
    if (!dt)
        return finish("tensor '" + fqn + "' has dtype " + valueRepr(dtype) + ", not a torch dtype");
    t.dtype = *dt;
    if (!intTuple(size, t.shape))
        return finish("tensor '" + fqn + "' has size " + valueRepr(size) +
                      ", not a tuple of at most 64 non-negative integers");
    std::uint64_t numel = 1, bytes = 0;
    for (auto d : t.shape)
        if (mulOverflow(numel, static_cast<std::uint64_t>(d), &numel) || !dtypeNbytes(t.dtype, numel, &bytes))
            return finish("tensor '" + fqn + "' of size " + dimsText(t.shape) + " overflows 64 bits");
    t.strides.assign(t.shape.size(), 1);
    for (std::size_t i = t.shape.size(); i-- > 1;)
        if (__builtin_mul_overflow(t.strides[i], std::max<std::int64_t>(t.shape[i], 1), &t.strides[i - 1]))
            return finish("tensor '" + fqn + "' of size " + dimsText(t.shape) + " overflows 64 bits");
    if (!chunks || chunks->kind != ValueKind::List)
        return finish("tensor '" + fqn + "' has no list of chunks");
    if (chunks->items.size() > kMaxChunks)
        return finish("tensor '" + fqn + "' has " + std::to_string(chunks->items.size()) + " chunks (limit " +
                      std::to_string(kMaxChunks) + ")");

    // Errors are reported for the first chunk, in list order, that has one: the chunks' places are checked
    // first (up to the first malformed one), overlaps among them found at once, then each chunk is read.
    const std::size_t count = chunks->items.size();
    std::vector<TensorChunk> parts;
    std::vector<std::vector<std::int64_t>> sizes;
    std::vector<std::uint64_t> volumes;
    std::size_t firstBad = count;
    std::string badWhy;
    for (std::size_t ci = 0; ci < count && firstBad == count; ++ci) {
        const Value* c = chunks->items[ci];
        TensorChunk chunk;
        std::vector<std::int64_t> csize;
        if (!isObject(c, "ChunkStorageMetadata") || !intTuple(field(c, "offsets"), chunk.offsets) ||
            !intTuple(field(c, "sizes"), csize) || chunk.offsets.size() != t.shape.size() ||
            csize.size() != t.shape.size()) {
            firstBad = ci;
            badWhy = "chunk " + std::to_string(ci) + " of '" + fqn +
                     "' is not a ChunkStorageMetadata with offsets and sizes of " +
                     std::to_string(t.shape.size()) + " dimensions";
            break;
        }
        std::uint64_t volume = 1;
        for (std::size_t d = 0; d < t.shape.size(); ++d) {
            if (chunk.offsets[d] > t.shape[d] || csize[d] > t.shape[d] - chunk.offsets[d]) {
                firstBad = ci;
                badWhy = "chunk " + std::to_string(ci) + " of '" + fqn + "' (offsets " +
                         dimsText(chunk.offsets) + ", sizes " + dimsText(csize) +
                         ") lies outside the tensor's size " + dimsText(t.shape);
                break;
            }
            volume *= static_cast<std::uint64_t>(csize[d]); // at most numel: inside the tensor
        }
        if (firstBad != count)
            break;
        parts.push_back(std::move(chunk));
        sizes.push_back(std::move(csize));
        volumes.push_back(volume);
    }
    const ChunkOverlap overlap = firstOverlap(parts, sizes, volumes);
    if (overlap.tooMuchWork)
        return finish("the " + std::to_string(count) + " chunks of '" + fqn +
                      "' are laid out too irregularly to check for overlaps (more than " +
                      std::to_string(kMaxOverlapWork) + " comparisons)");

    std::uint64_t covered = 0;
    for (std::size_t ci = 0; ci < count; ++ci) {
        if (ci == firstBad)
            return finish(badWhy);
        if (ci == overlap.later)
            return finish("chunks " + std::to_string(overlap.earlier) + " and " + std::to_string(ci) +
                          " of '" + fqn + "' overlap");
        covered += volumes[ci];
        TensorChunk& chunk = parts[ci];
        const auto it = m_tensorSlices.find({fqn, chunk.offsets});
        if (it == m_tensorSlices.end())
            return finish("chunk " + std::to_string(ci) + " of '" + fqn + "' at offsets " +
                          dimsText(chunk.offsets) + " has no storage_data entry");
        const SliceRef& ref = it->second;
        std::string why;
        const int source = sourceFor(ref, why);
        if (source < 0)
            return finish(why);
        std::shared_ptr<Checkpoint> part;
        try {
            part = slice(ref, source);
        } catch (const Error& e) {
            return finish("chunk " + std::to_string(ci) + " of '" + fqn + "' in '" + ref.file + "' at byte " +
                          std::to_string(ref.offset) + ": " + e.message());
        }
        if (part->tensors.size() != 1 || !part->tensors.front().name.empty())
            return finish("chunk " + std::to_string(ci) + " of '" + fqn + "' in '" + ref.file + "' at byte " +
                          std::to_string(ref.offset) + " does not hold a single tensor");
        chunk.part = part->tensors.front();
        chunk.part.name = fqn;
        if (chunk.part.dtype != t.dtype)
            return finish("chunk " + std::to_string(ci) + " of '" + fqn + "' holds " +
                          std::string(dtypeName(chunk.part.dtype)) + " values, but the metadata says " +
                          std::string(dtypeName(t.dtype)));
        if (chunk.part.shape != sizes[ci])
            return finish("chunk " + std::to_string(ci) + " of '" + fqn + "' holds a tensor of shape " +
                          dimsText(chunk.part.shape) + ", but the metadata says " + dimsText(sizes[ci]));
        if (!chunk.part.error.empty())
            return finish(chunk.part.error);
        ++m_chunks;
    }
    if (covered != numel)
        return finish("the chunks of '" + fqn + "' cover " + std::to_string(covered) + " of its " +
                      std::to_string(numel) + " elements");
    if (parts.size() == 1) {
        TensorInfo whole = std::move(parts.front().part);
        whole.requiresGrad = t.requiresGrad;
        t = std::move(whole);
        return finish({});
    }
    t.chunkSet = static_cast<int>(m_ck->chunkSets.size());
    m_ck->chunkSets.push_back(std::move(parts));
    finish({});
}

void DcpReader::readBytes(const std::string& fqn) {
    const auto it = m_bytesSlices.find(fqn);
    auto bad = [&](const std::string& why) {
        m_ck->findings.push_back({Severity::Error, why, fqn, {}, {}, 0});
    };
    if (it == m_bytesSlices.end())
        return bad("value '" + fqn + "' has no storage_data entry");
    std::string why;
    const int source = sourceFor(it->second, why);
    if (source < 0)
        return bad("value '" + fqn + "': " + why);
    std::shared_ptr<Checkpoint> part;
    try {
        part = slice(it->second, source);
    } catch (const Error& e) {
        return bad("value '" + fqn + "' in '" + it->second.file + "' at byte " +
                   std::to_string(it->second.offset) + ": " + e.message());
    }
    m_keepAlive.push_back(part); // its values live in its arena; tensor chunks need nothing of theirs
    auto name = [&](const std::string& inner) { return inner.empty() ? fqn : fqn + "." + inner; };
    for (auto t : part->tensors) {
        t.name = name(t.name);
        t.proto = -1;
        t.quant.scalesTensor = t.quant.zeroPointsTensor = -1;
        m_ck->tensors.push_back(std::move(t));
    }
    for (const auto& v : part->values)
        m_ck->values.push_back({name(v.name), v.value});
}

CheckpointPtr DcpReader::read() {
    readMetadata();
    std::size_t tensors = 0, values = 0;
    for (std::size_t i = 0; i + 1 < m_sdm->items.size(); i += 2) {
        const Value* key = m_sdm->items[i];
        const Value* md = m_sdm->items[i + 1];
        const std::string fqn = key->kind == ValueKind::String ? key->text : keyText(key);
        if (isObject(md, "TensorStorageMetadata")) {
            readTensor(fqn, md);
            ++tensors;
        } else if (isObject(md, "BytesStorageMetadata")) {
            readBytes(fqn);
            ++values;
        } else {
            m_ck->findings.push_back({Severity::Error,
                                      "entry '" + fqn + "' is " + valueRepr(md) +
                                          ", neither TensorStorageMetadata nor BytesStorageMetadata",
                                      fqn,
                                      {},
                                      {},
                                      0});
        }
    }

    // The slices' value trees (their own arenas) stay alive with the checkpoint's arena.
    auto* arena = m_ck->arena.get();
    m_ck->arena = std::shared_ptr<ValueArena>(
        arena, [own = m_ck->arena, keep = std::move(m_keepAlive)](ValueArena*) mutable {
            own.reset();
            keep.clear();
        });
    m_ck->formatDetail =
        "PyTorch distributed checkpoint (torch.distributed.checkpoint): " + std::to_string(tensors) +
        " tensors in " + std::to_string(m_chunks) + " chunks, " + std::to_string(values) + " other values, " +
        std::to_string(m_ck->sources.size() - 1) + " data files";
    return m_ck;
}

// A .metadata pickle starts with PROTO and soon names DCP's Metadata class.
bool looksLikeDcpMetadata(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    char head[160] = {};
    in.read(head, sizeof head);
    const std::string_view h(head, static_cast<std::size_t>(in.gcount()));
    return h.size() > 2 && static_cast<unsigned char>(h[0]) == 0x80 &&
           h.find("torch.distributed") != std::string_view::npos &&
           h.find("checkpoint.metadata") != std::string_view::npos &&
           h.find("Metadata") != std::string_view::npos;
}

} // namespace

CheckpointPtr tryOpenDcp(const std::string& path) {
    std::error_code ec;
    fs::path dir;
    if (fs::is_directory(path, ec)) {
        dir = path;
    } else if (fs::is_regular_file(path, ec)) {
        const fs::path p(path);
        if (p.extension() == ".distcp")
            dir = p.parent_path();
        else if (looksLikeDcpMetadata(path))
            dir = p.parent_path();
        else
            return nullptr;
    } else {
        return nullptr;
    }
    if (dir.empty())
        dir = ".";
    const fs::path metadata = dir / ".metadata";
    if (!fs::is_regular_file(metadata, ec) || !looksLikeDcpMetadata(metadata.string()))
        return nullptr;
    DcpReader reader(dir.string(), MappedFile::open(metadata.string()));
    return reader.read();
}

} // namespace ckpt
