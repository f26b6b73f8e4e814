#pragma once

#include "dtype.h"

#include "io/mappedfile.h"
#include "pickle/value.h"

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace ckpt {

enum class Severity : std::uint8_t { Info, Warning, Error, Security };
const char* severityName(Severity s);

struct Finding {
    Severity severity = Severity::Warning;
    std::string message;
    std::string object;                  // tensor or value name it concerns, when known
    std::string global;                  // "module.name" for security findings
    std::optional<std::uint64_t> offset; // byte offset in the file, when known
    int source = 0;
};

// One file of a checkpoint (a sharded checkpoint has several).
struct Source {
    std::string path;
    std::shared_ptr<const MappedFile> file;
};

// A storage: one contiguous run of bytes several tensors may view.
struct StorageInfo {
    std::string key;            // as the file names it ("0", "139872...", "data/3")
    std::string device;         // location tag as saved: "cpu", "cuda:0"
    DType dtype = DType::UInt8; // the typed storage's dtype (legacy typed storages); UInt8 when untyped
    std::uint64_t nbytes = 0;   // declared size
    int source = 0;
    std::uint64_t fileOffset = 0; // absolute offset of byte 0 in its file
    bool bigEndian = false;
    std::string error;      // set when the bytes cannot be read (missing record, too short, compressed)
    std::uint8_t space = 0; // which pickle of an archive named it (TorchScript: 0 data.pkl, 1 constants.pkl)
    int viewOf = -1;        // legacy storage views: the storage this one is a slice of
    std::optional<std::uint32_t> crc32c; // CRC-32C of the bytes as stored, checked when they are read (TF)
};

enum class Layout : std::uint8_t { Strided, SparseCoo, SparseCsr, Meta };
const char* layoutName(Layout l);

struct QuantInfo {
    enum class Scheme : std::uint8_t { None, PerTensorAffine, PerChannelAffine } scheme = Scheme::None;
    double scale = 1.0;
    std::int64_t zeroPoint = 0;
    int axis = 0;
    int scalesTensor = -1; // per-channel: prototype indices of the scale and zero-point tensors
    int zeroPointsTensor = -1;
};

struct TensorInfo {
    std::string name;
    DType dtype = DType::Float32;
    std::vector<std::int64_t> shape;
    std::vector<std::int64_t> strides;
    std::int64_t storageOffset = 0; // in elements
    std::string device;
    int storage = -1; // index into Checkpoint::storages, -1 when the tensor has no data
    std::optional<bool> requiresGrad;
    bool isParameter = false;
    Layout layout = Layout::Strided;
    std::string typeName; // tensor subclass, when saved as one
    QuantInfo quant;
    int proto = -1;    // which reconstructed tensor object this name refers to
    int chunkSet = -1; // index into Checkpoint::chunkSets when the values are assembled from chunks (DCP)
    std::string error; // why the tensor's values cannot be read

    std::uint64_t numel() const;
    std::uint64_t nbytes() const { return dtypeNbytes(dtype, numel()); } // whole blocks for ggml types
    bool isContiguous() const;
};

// A non-tensor leaf of the tree: epoch, learning rate, a string.
struct NamedValue {
    std::string name;
    const Value* value = nullptr;
};

// A piece of a tensor stored on its own (a rank's shard of a distributed checkpoint): its place in the
// whole tensor and the tensor holding its values.
struct TensorChunk {
    std::vector<std::int64_t> offsets; // per dimension, in the whole tensor
    TensorInfo part;                   // shape = the chunk's sizes; its own storage
};

struct Record {
    std::string name;
    std::uint64_t size = 0;
    bool compressed = false;
};

struct Checkpoint {
    std::string format;       // "pytorch-zip", "pytorch-legacy", "torchscript"
    std::string formatDetail; // human description ("archive folder 'sd', format version 3")
    std::vector<Source> sources;
    std::shared_ptr<ValueArena> arena;
    const Value* root = nullptr;
    std::vector<TensorInfo> tensors;    // one per name, in file order
    std::vector<TensorInfo> prototypes; // reconstructed tensor objects, while reading
    std::vector<int> protoToTensor;     // while reading: the first named tensor each prototype became
    std::map<int, TensorInfo>
        helperTensors; // tensors that others need but that have no name (quantization scales)
    std::vector<StorageInfo> storages;
    std::vector<std::vector<TensorChunk>> chunkSets; // tensors whose values are assembled from chunks
    std::vector<NamedValue> values;
    std::vector<Record> records;
    std::vector<Finding> findings;

    const TensorInfo* findTensor(std::string_view name) const;
    // Bytes of all storages, each counted once.
    std::uint64_t storageBytes() const;
    bool hasErrors() const;
};

// Cheap-to-copy read handle on a checkpoint: keeps the files mapped while any view is alive.
using CheckpointPtr = std::shared_ptr<const Checkpoint>;

} // namespace ckpt
