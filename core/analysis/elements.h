#pragma once

#include "model/checkpoint.h"

#include <complex>
#include <cstdint>
#include <functional>
#include <span>
#include <vector>

namespace ckpt {

// Called with (done, total); returning false cancels the work.
using ProgressFn = std::function<bool(std::uint64_t done, std::uint64_t total)>;

// Reads a tensor's elements from its mapped storage, converting every dtype to double: booleans as 0/1,
// integers exactly, float16 / bfloat16 / float8 exactly, quantized values dequantized, complex values as
// their magnitude (elementComplex() gives both parts). Only the bytes asked for are touched.
// ggml block types: q8_0, q4_0, q4_1, q5_0, q5_1, q8_1 and the K-quants q2_k, q4_k, q5_k, q6_k, q8_k are
// dequantized exactly as ggml does (contiguous tensors); the others (q3_k, the i-quants, ...) are refused
// with Error(Unsupported) "statistics of <type> tensors are not supported".
// A tensor assembled from chunks (TensorInfo::chunkSet, distributed checkpoints) is read through one reader
// per chunk, in the whole tensor's row-major order.
class TensorReader {
public:
    // Throws Error when the tensor has no readable data (its `error`), or its file changed on disk.
    TensorReader(CheckpointPtr checkpoint, const TensorInfo& tensor);

    std::uint64_t numel() const { return m_numel; }
    const TensorInfo& tensor() const { return m_tensor; }

    // Element at a row-major logical index (0 <= index < numel()).
    double element(std::uint64_t index) const;
    std::complex<double> elementComplex(std::uint64_t index) const;

    // Visits all elements in row-major order in chunks; fn returns false to stop. Returns false when stopped.
    // Throws Error(Changed) if the file was truncated underneath the mapping, or truncated or written to
    // by the time the last value was read (what fn saw then is no data of the file).
    bool forEachChunk(const std::function<bool(std::span<const double> values, std::uint64_t firstIndex)>& fn,
                      std::size_t chunk = 16384) const;

    // Storages that carry a checksum of their bytes (TensorFlow bundles): compares it with the bytes in the
    // file, once per reader, and throws Error(Malformed) naming the file, the tensor and both checksums when
    // they differ. forEachChunk() calls it before the first value; element() does not (one value would
    // cost a pass over the whole storage).
    void verifyChecksum() const;

    // Throws Error(Changed) when a file the tensor is read from is no longer what was opened (truncated or
    // written to): code that reads the bytes itself calls it after the last value, as forEachChunk() does.
    void ensureUnchanged() const;

    // Entry point for the SIGBUS-guarded conversion; not for general use.
    void convertJob(const std::uint8_t* src, std::int64_t strideBytes, std::size_t n,
                    std::uint64_t firstIndex, double* out) const;

private:
    struct Part {
        std::vector<std::int64_t> offsets, sizes; // in m_dims
        std::shared_ptr<TensorReader> reader;
    };
    void initChunks(const std::string& fileName);
    // Chunked tensors: the chunk holding a row-major element of the whole tensor, and the index in it.
    const Part& partOf(std::uint64_t index, std::uint64_t* local) const;
    bool forEachStridedChunk(const std::function<bool(std::span<const double>, std::uint64_t)>& fn,
                             std::size_t chunk) const;
    bool forEachPartChunk(const std::function<bool(std::span<const double>, std::uint64_t)>& fn,
                          std::size_t chunk) const;
    // n consecutive row-major elements starting at `first`.
    void readRun(std::uint64_t first, std::size_t n, double* out) const;
    std::uint64_t byteOffsetOf(std::uint64_t index) const;
    bool forEachBlockChunk(const std::function<bool(std::span<const double>, std::uint64_t)>& fn,
                           std::size_t chunk) const;
    void convert(const std::uint8_t* src, std::int64_t strideBytes, std::size_t n, std::uint64_t firstIndex,
                 double* out) const;

    CheckpointPtr m_ck;
    TensorInfo m_tensor;
    const MappedFile* m_file = nullptr;
    std::uint64_t m_base = 0; // absolute file offset of the storage's byte 0
    std::uint64_t m_numel = 0;
    bool m_swap = false;
    std::vector<double> m_scales; // per-channel quantization
    std::vector<std::int64_t> m_zeroPoints;
    std::uint64_t m_channelInner = 1; // elements per step along the quantization axis
    std::uint64_t m_blockOffset = 0;  // ggml block types: bytes from the storage start to the first block
    // Chunked tensors: the shape with the trailing dimensions that no chunk splits merged into one (so a
    // tensor split along its first dimension is one run per chunk), and the chunks in it.
    std::vector<std::int64_t> m_dims;
    std::vector<Part> m_parts;
    mutable bool m_checksumVerified = false;
};

// The same check for code that reads a tensor's bytes without a TensorReader (the LibTorch statistics).
void verifyStorageChecksum(const CheckpointPtr& checkpoint, const TensorInfo& tensor);

// ggml block types whose values TensorReader gives (q8_0, q4_0, q4_1, q5_0, q5_1, q8_1, q2_k, q4_k, q5_k,
// q6_k, q8_k), and one block of them dequantized as ggml does: dtypeBlockSize(t) floats into `out`.
bool isDequantizedGgmlType(DType t);
void dequantizeGgmlBlock(DType t, const std::uint8_t* block, float* out);

// Exact conversions of the narrow float formats, exposed for tests.
double halfToDouble(std::uint16_t h);
double bfloat16ToDouble(std::uint16_t b);
double float8ToDouble(DType t, std::uint8_t b);

} // namespace ckpt
