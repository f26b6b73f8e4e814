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
    Count
};

enum class DTypeKind : std::uint8_t { Bool, Signed, Unsigned, Float, Complex, Quantized, Bits };

struct DTypeInfo {
    DType dtype;
    std::string_view name;        // PyTorch's spelling without "torch."
    std::string_view storageName; // legacy typed storage class ("FloatStorage"), empty when none
    std::uint8_t size;            // bytes per element
    DTypeKind kind;
};

const DTypeInfo& dtypeInfo(DType t);
inline std::string_view dtypeName(DType t) {
    return dtypeInfo(t).name;
}
inline std::size_t dtypeSize(DType t) {
    return dtypeInfo(t).size;
}

std::optional<DType> dtypeFromName(std::string_view name);
// "FloatStorage" -> Float32; accepts any module prefix's bare class name.
std::optional<DType> dtypeFromStorageName(std::string_view storageClass);
// "FloatTensor" -> Float32 (legacy tensor classes).
std::optional<DType> dtypeFromTensorClassName(std::string_view tensorClass);

} // namespace ckpt
