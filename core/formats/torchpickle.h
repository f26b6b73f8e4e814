#pragma once

// What PyTorch pickles mean, without running them.
//
// TorchPickleHooks turns the allow-listed reconstruction calls of torch.load(weights_only=True) into typed
// values: `_rebuild_tensor{,_v2,_v3}`, `_rebuild_parameter{,_with_state}`, `_rebuild_qtensor`,
// `_rebuild_sparse_tensor`, `_rebuild_meta_tensor_no_storage`, `_rebuild_wrapper_subclass`,
// `_rebuild_device_tensor_from_cpu_tensor`, `_rebuild_from_type_v2`, storage types, dtypes, `torch.Size`,
// `torch.device`, `OrderedDict`, `set`, `_codecs.encode`, and TorchScript's list builders. Every other
// global becomes an opaque Object (module, name, arguments, state) and a security finding: nothing is
// imported, called or evaluated.
//
// Persistent ids `('storage', type, key, location, numel[, view])` become StorageInfo entries, one per key;
// their bytes are located afterwards by the container (zip record, legacy stream).
//
// walkTree() then names every tensor by its path of keys from the root, flattening pickled nn.Module
// objects (_parameters, _buffers, _modules) the way state_dict() names them, and collects non-tensor leaves.

#include "model/checkpoint.h"
#include "pickle/unpickler.h"

#include <map>
#include <string>
#include <unordered_map>

namespace ckpt {

class TorchPickleHooks final : public PickleHooks {
public:
    // `storageNamespace` keeps storages of different pickles of one archive apart (TorchScript constants).
    explicit TorchPickleHooks(Checkpoint& checkpoint);

    // Storages of different pickles of one archive are kept apart (TorchScript constants: space 1).
    void setStorageSpace(std::uint8_t space, std::string ns) {
        m_space = space;
        m_namespace = std::move(ns);
        m_storageByNumber.clear();
    }

    Value* global(ValueArena& arena, std::string_view module, std::string_view name,
                  std::uint64_t offset) override;
    Value* call(ValueArena& arena, Value* callable, Value* args, CallKind how, std::uint64_t offset) override;
    void build(ValueArena& arena, Value* object, Value* state, std::uint64_t offset) override;
    Value* persistentLoad(ValueArena& arena, Value* pid, std::uint64_t offset) override;
    bool keepsPersistentId() const override { return false; }

    // Storage index for a key of the current namespace, or -1.
    int findStorage(const std::string& key) const;
    // Finding index per global name, so the tree walk can say where each opaque object sits.
    const std::unordered_map<std::string, std::size_t>& globalFindings() const { return m_globalFindings; }

private:
    static constexpr int kMaxRebuildDepth = 16;

    Value* makeTensor(ValueArena& arena, TensorInfo proto, std::uint64_t offset);
    Value* rebuildStrided(ValueArena& arena, const Value* storage, const Value* offset, const Value* size,
                          const Value* stride, std::optional<DType> dtype, std::uint64_t at);
    Value* callKnown(ValueArena& arena, const std::string& qname, Value* callable, Value* args, CallKind how,
                     std::uint64_t offset, bool* handled);

    Checkpoint& m_ck;
    std::string m_namespace;
    std::uint8_t m_space = 0;
    std::unordered_map<std::string, int> m_storageByKey;
    std::vector<int> m_storageByNumber; // the usual keys "0", "1", ...: no hashing of strings
    std::unordered_map<std::string, std::size_t> m_globalFindings;
    int m_rebuildDepth = 0; // _rebuild_from_type_v2 calls in progress
};

// A checkpoint for one file, with an empty value arena.
std::shared_ptr<Checkpoint> newCheckpoint(std::shared_ptr<const MappedFile> file, std::string format);

// Names tensors and collects values from checkpoint.root into checkpoint.tensors / checkpoint.values.
void walkTree(Checkpoint& checkpoint, const std::unordered_map<std::string, std::size_t>& globalFindings);

// After the storages were located: names everything (TorchScript constants under "__constants__"),
// checks every view against its storage and frees what naming made redundant.
void finishTorchCheckpoint(Checkpoint& checkpoint, const TorchPickleHooks& hooks,
                           const Value* constants = nullptr);

// Legacy storage views hold their offset relative to the storage they slice; make it absolute.
void resolveStorageViews(Checkpoint& checkpoint);

// A reconstructed tensor, wherever the tree walk moved it.
const TensorInfo& prototype(const Checkpoint& checkpoint, std::size_t index);

// Keeps only the reconstructed tensors that named tensors still need (per-channel quantization scales)
// and frees the rest: every named tensor already holds its own copy.
void compactPrototypes(Checkpoint& checkpoint);

// After storages were located: check each tensor's extent against its storage, and give tensors whose
// storage is unreadable that storage's error, reported once as an error finding.
void checkTensorExtents(Checkpoint& checkpoint);

// True for globals that are known ways to run code (os.system, builtins.eval, subprocess.Popen, ...).
bool isDangerousGlobal(std::string_view module, std::string_view name);

} // namespace ckpt
