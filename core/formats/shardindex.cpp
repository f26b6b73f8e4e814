#include "shardindex.h"

#include "open.h"
#include "torchpickle.h"

#include "io/error.h"
#include "io/jsontext.h"

#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <system_error>
#include <unordered_map>

namespace ckpt {
namespace {

namespace fs = std::filesystem;
// std::map-backed: an ordered_json object is built by a linear search per key, quadratic for the
// weight maps of models with tens of thousands of tensors.
using Json = nlohmann::json;

constexpr std::uint64_t kMaxIndexBytes = 256ull << 20;
constexpr std::size_t kMaxShards = 100'000;
constexpr std::size_t kMaxEntries = 10'000'000;
constexpr int kMaxDepth = 64; // as a safetensors header

// A shard index names files opened from inside openCheckpoint: an index naming itself (or another index)
// as a shard must not recurse.
thread_local int t_depth = 0;

bool isIndexName(const std::string& name) {
    return name.ends_with(".safetensors.index.json") || name.ends_with(".bin.index.json");
}

bool plainFileName(const std::string& s) {
    return !s.empty() && s != "." && s != ".." && s.find('/') == std::string::npos &&
           s.find('\\') == std::string::npos && s.find('\0') == std::string::npos;
}

std::string baseName(const std::string& path) {
    return fs::path(path).filename().string();
}

} // namespace

CheckpointPtr tryOpenShardIndex(const std::string& path) {
    if (t_depth > 0)
        return nullptr;
    std::error_code ec;
    std::string indexPath = path;
    if (fs::is_directory(path, ec)) {
        std::vector<std::string> found;
        for (const auto& entry : fs::directory_iterator(path, ec)) {
            const std::string name = entry.path().filename().string();
            if (isIndexName(name) && entry.is_regular_file(ec))
                found.push_back(name);
        }
        if (found.empty())
            return nullptr;
        if (found.size() > 1) {
            std::sort(found.begin(), found.end());
            std::string list;
            for (const auto& f : found)
                list += (list.empty() ? "" : ", ") + f;
            throw Error(ErrorCode::Unsupported,
                        "folder holds several shard indexes (" + list + "); open one of them", path);
        }
        indexPath = (fs::path(path) / found.front()).string();
    } else if (!fs::is_regular_file(path, ec)) {
        return nullptr;
    }

    // Sniff: a JSON object (not a safetensors file, which starts with its 8-byte length) with a weight_map.
    const auto size = fs::file_size(indexPath, ec);
    if (ec || size < 2)
        return nullptr;
    {
        std::ifstream in(indexPath, std::ios::binary);
        char c = 0;
        while (in.get(c) && (c == ' ' || c == '\n' || c == '\r' || c == '\t'))
            ;
        if (!in || c != '{')
            return nullptr;
        // A JSON object goes on with a key or ends; a safetensors file whose header length happens to start
        // with the byte '{' goes on with the length's other bytes.
        while (in.get(c) && (c == ' ' || c == '\n' || c == '\r' || c == '\t'))
            ;
        if (!in || (c != '"' && c != '}'))
            return nullptr;
    }
    if (size > kMaxIndexBytes) {
        if (isIndexName(baseName(indexPath)))
            throw Error(ErrorCode::Limit,
                        "shard index of " + std::to_string(size) + " bytes exceeds the limit of " +
                            std::to_string(kMaxIndexBytes),
                        indexPath, 0);
        return nullptr;
    }
    auto file = MappedFile::open(indexPath);
    const auto bytes = file->bytes();
    const std::string_view text(reinterpret_cast<const char*>(bytes.data()), bytes.size());
    if (text.find("\"weight_map\"") == std::string_view::npos)
        return nullptr;

    if (const auto deep = jsonTooDeep(text, kMaxDepth))
        throw Error(ErrorCode::Limit,
                    "shard index nests deeper than " + std::to_string(kMaxDepth) + " levels", indexPath,
                    *deep);
    Json index;
    try {
        index = Json::parse(text.begin(), text.end());
    } catch (const Json::exception& e) {
        const std::string what = jsonErrorText(e.what());
        std::optional<std::uint64_t> at;
        if (const auto* pe = dynamic_cast<const Json::parse_error*>(&e); pe && pe->byte > 0)
            at = pe->byte - 1;
        throw Error(ErrorCode::Malformed, "shard index is not valid JSON: " + what, indexPath, at);
    }
    if (!index.is_object())
        throw Error(ErrorCode::Malformed, "shard index is not a JSON object", indexPath, 0);
    const auto wm = index.find("weight_map");
    if (wm == index.end() || !wm->is_object())
        throw Error(ErrorCode::Malformed, "shard index: \"weight_map\" is not an object", indexPath, 0);
    if (wm->size() > kMaxEntries)
        throw Error(ErrorCode::Limit,
                    "shard index maps more than " + std::to_string(kMaxEntries) + " tensors", indexPath, 0);

    auto ck = newCheckpoint(file, "sharded");
    const fs::path dir = fs::path(indexPath).parent_path();

    // weight_map in its order; shards in order of first mention.
    std::vector<std::pair<std::string, std::string>> entries;
    std::vector<std::string> shards;
    std::map<std::string, std::size_t> shardIndex;
    for (const auto& [name, shard] : wm->items()) {
        if (!shard.is_string())
            throw Error(ErrorCode::Malformed,
                        "shard index: weight_map entry '" + name + "' is not a file name", indexPath, 0,
                        name);
        const std::string& s = shard.get_ref<const std::string&>();
        if (!plainFileName(s))
            throw Error(ErrorCode::Malformed,
                        "shard index: weight_map sends '" + name + "' to '" + s +
                            "', which is not a plain file name in the index's folder; refused",
                        indexPath, 0, name);
        if (shardIndex.emplace(s, shards.size()).second) {
            if (shards.size() >= kMaxShards)
                throw Error(ErrorCode::Limit,
                            "shard index names more than " + std::to_string(kMaxShards) + " shard files",
                            indexPath, 0);
            shards.push_back(s);
        }
        entries.emplace_back(name, s);
    }

    // Open every shard and merge it.
    std::vector<std::unordered_map<std::string, TensorInfo>> shardTensors(shards.size());
    std::vector<std::string> shardError(shards.size());
    std::vector<CheckpointPtr> keepAlive;
    std::set<std::string> formats;
    int nextHelper = 0;
    for (std::size_t si = 0; si < shards.size(); ++si) {
        const std::string& shard = shards[si];
        const std::string shardPath = (dir / shard).string();
        if (!fs::exists(shardPath, ec)) {
            shardError[si] = "shard file '" + shard + "' named by the index is missing";
            ck->findings.push_back({Severity::Error, shardError[si], {}, {}, {}, 0});
            continue;
        }
        CheckpointPtr part;
        try {
            ++t_depth;
            part = openCheckpoint(shardPath);
            --t_depth;
        } catch (const Error& e) {
            --t_depth;
            shardError[si] = "shard file '" + shard + "' cannot be read: " + e.what();
            ck->findings.push_back({Severity::Error, shardError[si], {}, {}, e.offset(), 0});
            continue;
        }
        keepAlive.push_back(part);
        formats.insert(part->format);
        const int sourceBase = static_cast<int>(ck->sources.size());
        const int storageBase = static_cast<int>(ck->storages.size());
        for (const auto& s : part->sources)
            ck->sources.push_back(s);
        for (auto s : part->storages) {
            s.source += sourceBase;
            if (s.viewOf >= 0)
                s.viewOf += storageBase;
            ck->storages.push_back(std::move(s));
        }
        std::map<int, int> helperMap;
        for (const auto& [key, h] : part->helperTensors) {
            TensorInfo copy = h;
            if (copy.storage >= 0)
                copy.storage += storageBase;
            helperMap[key] = nextHelper;
            ck->helperTensors.emplace(nextHelper++, std::move(copy));
        }
        for (auto f : part->findings) {
            f.message = shard + ": " + f.message;
            f.source += sourceBase;
            ck->findings.push_back(std::move(f));
        }
        for (const auto& v : part->values)
            ck->values.push_back({shard + ":" + v.name, v.value});
        auto rebase = [&](TensorInfo& t) {
            if (t.storage >= 0)
                t.storage += storageBase;
            for (int* q : {&t.quant.scalesTensor, &t.quant.zeroPointsTensor})
                if (*q >= 0) {
                    const auto it = helperMap.find(*q);
                    *q = it == helperMap.end() ? -1 : it->second;
                }
            t.proto = -1;
        };
        // Tensors assembled from chunks (a distributed checkpoint as a shard): each chunk keeps its storage.
        const int chunkSetBase = static_cast<int>(ck->chunkSets.size());
        for (auto set : part->chunkSets) {
            for (TensorChunk& c : set)
                rebase(c.part);
            ck->chunkSets.push_back(std::move(set));
        }
        auto& mine = shardTensors[si];
        for (auto t : part->tensors) {
            rebase(t);
            if (t.chunkSet >= 0)
                t.chunkSet += chunkSetBase;
            const auto it = wm->find(t.name);
            if (it == wm->end() || !it->is_string() || it->get_ref<const std::string&>() != shard) {
                ck->findings.push_back(
                    {Severity::Warning,
                     "tensor '" + t.name + "' in shard '" + shard + "' is not mapped to it by the index" +
                         (it == wm->end() ? ""
                                          : " (the index sends it to '" + it->get<std::string>() + "')") +
                         "; not listed",
                     t.name,
                     {},
                     {},
                     sourceBase});
                continue;
            }
            mine.emplace(t.name, std::move(t));
        }
    }

    std::uint64_t tensorBytes = 0;
    for (const auto& [name, shard] : entries) {
        const std::size_t si = shardIndex.at(shard);
        auto it = shardTensors[si].find(name);
        if (it != shardTensors[si].end()) {
            tensorBytes += it->second.nbytes();
            ck->tensors.push_back(std::move(it->second));
            shardTensors[si].erase(it);
            continue;
        }
        TensorInfo t;
        t.name = name;
        t.device = "cpu";
        if (!shardError[si].empty()) {
            t.error = shardError[si];
        } else {
            t.error = "the index maps '" + name + "' to shard '" + shard + "', which does not hold it";
            ck->findings.push_back({Severity::Error, t.error, name, {}, {}, 0});
        }
        ck->tensors.push_back(std::move(t));
    }

    // Metadata, and its total_size against what the shards hold.
    if (const auto md = index.find("metadata"); md != index.end() && md->is_object()) {
        for (const auto& [key, value] : md->items()) {
            Value* v = nullptr;
            if (value.is_number_integer())
                v = ck->arena->makeInt(value.get<std::int64_t>());
            else if (value.is_string())
                v = ck->arena->makeString(value.get_ref<const std::string&>());
            else
                v = ck->arena->makeString(value.dump());
            ck->values.push_back({"metadata." + key, v});
        }
        if (const auto ts = md->find("total_size"); ts != md->end()) {
            if (!ts->is_number_unsigned())
                ck->findings.push_back(
                    {Severity::Warning, "metadata.total_size is not a byte count", {}, {}, {}, 0});
            else if (const auto declared = ts->get<std::uint64_t>();
                     declared != tensorBytes && declared != ck->storageBytes())
                ck->findings.push_back({Severity::Warning,
                                        "metadata.total_size says " + std::to_string(declared) +
                                            " bytes but the tensors of the shards hold " +
                                            std::to_string(tensorBytes),
                                        {},
                                        {},
                                        {},
                                        0});
        }
    }

    // The shards' value trees (their own arenas) stay alive with the merged arena.
    auto* arena = ck->arena.get();
    ck->arena = std::shared_ptr<ValueArena>(arena, [own = ck->arena, keepAlive](ValueArena*) mutable {
        own.reset();
        keepAlive.clear();
    });

    std::string kinds;
    for (const auto& f : formats)
        kinds += (kinds.empty() ? "" : ", ") + f;
    ck->formatDetail = "sharded checkpoint: index '" + baseName(indexPath) + "', " +
                       std::to_string(shards.size()) + " shard files" +
                       (kinds.empty() ? "" : " (" + kinds + ")");
    return ck;
}

} // namespace ckpt
