#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

namespace ckpt {

// Every element type a checkpoint can hold. The first 46 follow PyTorch's ScalarType numbering
// (c10/core/ScalarType.h), which the TorchScript and export paths rely on.
enum class DType : std::uint8_t {
    UInt8,
    Int8,
    Int16,
    Int32,
    Int64,
    Float16,
    Float32,
    Float64,
    Complex32,
    Complex64,
    Complex128,
    Bool,
    QInt8,
    QUInt8,
    QInt32,
    BFloat16,
    QUInt4x2,
    QUInt2x4,
    Bits1x8,
    Bits2x4,
    Bits4x2,
    Bits8,
    Bits16,
    Float8_e5m2,
    Float8_e4m3fn,
    Float8_e5m2fnuz,
    Float8_e4m3fnuz,
    UInt16,
    UInt32,
    UInt64,
    UInt1,
    UInt2,
    UInt3,
    UInt4,
    UInt5,
    UInt6,
    UInt7,
    Int1,
    Int2,
    Int3,
    Int4,
    Int5,
    Int6,
    Int7,
    Float8_e8m0fnu,
    Float4_e2m1fn_x2,
    // ggml block-quantized types (GGUF): elements are stored in blocks of blockSize elements taking
    // blockBytes bytes (scales and packed quants together), so a single element has no byte address.
    GgmlQ4_0,
    GgmlQ4_1,
    GgmlQ5_0,
    GgmlQ5_1,
    GgmlQ8_0,
    GgmlQ8_1,
    GgmlQ2_K,
    GgmlQ3_K,
    GgmlQ4_K,
    GgmlQ5_K,
    GgmlQ6_K,
    GgmlQ8_K,
    GgmlIQ2_XXS,
    GgmlIQ2_XS,
    GgmlIQ3_XXS,
    GgmlIQ1_S,
    GgmlIQ4_NL,
    GgmlIQ3_S,
    GgmlIQ2_S,
    GgmlIQ4_XS,
    GgmlIQ1_M,
    GgmlTQ1_0,
    GgmlTQ2_0,
    GgmlMXFP4,
    GgmlNVFP4,
    GgmlQ1_0,
    GgmlQ2_0,
    Count
};

// Block: ggml block-quantized; only whole blocks have a byte size (size is 0, see blockSize / blockBytes).
enum class DTypeKind : std::uint8_t { Bool, Signed, Unsigned, Float, Complex, Quantized, Bits, Block };

struct DTypeInfo {
    DType dtype;
    std::string_view name;        // PyTorch's spelling without "torch."
    std::string_view storageName; // legacy typed storage class ("FloatStorage"), empty when none
    std::uint8_t size;            // bytes per element; 0 for block types, whose elements have no own bytes
    DTypeKind kind;
    std::uint16_t blockSize = 1;  // elements per block (1 for element-addressable types)
    std::uint16_t blockBytes = 0; // bytes per block (block types only; dtypeBlockBytes() covers the others)
};

const DTypeInfo& dtypeInfo(DType t);
inline std::string_view dtypeName(DType t) {
    return dtypeInfo(t).name;
}
// Bytes per element. 0 for block types (isBlockDType): never use it to size or address those; use
// dtypeNbytes() for sizes.
inline std::size_t dtypeSize(DType t) {
    return dtypeInfo(t).size;
}
inline bool isBlockDType(DType t) {
    return dtypeInfo(t).kind == DTypeKind::Block;
}
inline std::size_t dtypeBlockSize(DType t) {
    return dtypeInfo(t).blockSize;
}
inline std::size_t dtypeBlockBytes(DType t) {
    const auto& i = dtypeInfo(t);
    return i.kind == DTypeKind::Block ? i.blockBytes : i.size;
}
// Bytes that `numel` elements take: numel / blockSize * blockBytes, rounded up to whole blocks (a valid
// block tensor has a multiple of blockSize elements). False on overflow.
inline bool dtypeNbytes(DType t, std::uint64_t numel, std::uint64_t* out) {
    const std::uint64_t blocks = (numel + (dtypeBlockSize(t) - 1)) / dtypeBlockSize(t);
    return !__builtin_mul_overflow(blocks, static_cast<std::uint64_t>(dtypeBlockBytes(t)), out);
}
// The same for sizes already checked when they were read (TensorInfo::nbytes()).
inline std::uint64_t dtypeNbytes(DType t, std::uint64_t numel) {
    return (numel + (dtypeBlockSize(t) - 1)) / dtypeBlockSize(t) * dtypeBlockBytes(t);
}

// PyTorch's dtype names (and aliases) only: ggml block types are not torch dtypes, so a pickle naming
// `torch.q4_0` gets no tensor of that type. dtypeFromAnyName() also knows the ggml names.
std::optional<DType> dtypeFromName(std::string_view name);
std::optional<DType> dtypeFromAnyName(std::string_view name);
// "FloatStorage" -> Float32; accepts any module prefix's bare class name.
std::optional<DType> dtypeFromStorageName(std::string_view storageClass);
// "FloatTensor" -> Float32 (legacy tensor classes).
std::optional<DType> dtypeFromTensorClassName(std::string_view tensorClass);

} // namespace ckpt
