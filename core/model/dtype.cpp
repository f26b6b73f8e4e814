#include "dtype.h"

#include <array>
#include <string>

namespace ckpt {
namespace {

using K = DTypeKind;
constexpr std::array<DTypeInfo, static_cast<std::size_t>(DType::Count)> kTable{{
    {DType::UInt8, "uint8", "ByteStorage", 1, K::Unsigned},
    {DType::Int8, "int8", "CharStorage", 1, K::Signed},
    {DType::Int16, "int16", "ShortStorage", 2, K::Signed},
    {DType::Int32, "int32", "IntStorage", 4, K::Signed},
    {DType::Int64, "int64", "LongStorage", 8, K::Signed},
    {DType::Float16, "float16", "HalfStorage", 2, K::Float},
    {DType::Float32, "float32", "FloatStorage", 4, K::Float},
    {DType::Float64, "float64", "DoubleStorage", 8, K::Float},
    {DType::Complex32, "complex32", "", 4, K::Complex},
    {DType::Complex64, "complex64", "ComplexFloatStorage", 8, K::Complex},
    {DType::Complex128, "complex128", "ComplexDoubleStorage", 16, K::Complex},
    {DType::Bool, "bool", "BoolStorage", 1, K::Bool},
    {DType::QInt8, "qint8", "QInt8Storage", 1, K::Quantized},
    {DType::QUInt8, "quint8", "QUInt8Storage", 1, K::Quantized},
    {DType::QInt32, "qint32", "QInt32Storage", 4, K::Quantized},
    {DType::BFloat16, "bfloat16", "BFloat16Storage", 2, K::Float},
    {DType::QUInt4x2, "quint4x2", "QUInt4x2Storage", 1, K::Quantized},
    {DType::QUInt2x4, "quint2x4", "QUInt2x4Storage", 1, K::Quantized},
    {DType::Bits1x8, "bits1x8", "", 1, K::Bits},
    {DType::Bits2x4, "bits2x4", "", 1, K::Bits},
    {DType::Bits4x2, "bits4x2", "", 1, K::Bits},
    {DType::Bits8, "bits8", "", 1, K::Bits},
    {DType::Bits16, "bits16", "", 2, K::Bits},
    {DType::Float8_e5m2, "float8_e5m2", "", 1, K::Float},
    {DType::Float8_e4m3fn, "float8_e4m3fn", "", 1, K::Float},
    {DType::Float8_e5m2fnuz, "float8_e5m2fnuz", "", 1, K::Float},
    {DType::Float8_e4m3fnuz, "float8_e4m3fnuz", "", 1, K::Float},
    {DType::UInt16, "uint16", "", 2, K::Unsigned},
    {DType::UInt32, "uint32", "", 4, K::Unsigned},
    {DType::UInt64, "uint64", "", 8, K::Unsigned},
    {DType::UInt1, "uint1", "", 1, K::Unsigned},
    {DType::UInt2, "uint2", "", 1, K::Unsigned},
    {DType::UInt3, "uint3", "", 1, K::Unsigned},
    {DType::UInt4, "uint4", "", 1, K::Unsigned},
    {DType::UInt5, "uint5", "", 1, K::Unsigned},
    {DType::UInt6, "uint6", "", 1, K::Unsigned},
    {DType::UInt7, "uint7", "", 1, K::Unsigned},
    {DType::Int1, "int1", "", 1, K::Signed},
    {DType::Int2, "int2", "", 1, K::Signed},
    {DType::Int3, "int3", "", 1, K::Signed},
    {DType::Int4, "int4", "", 1, K::Signed},
    {DType::Int5, "int5", "", 1, K::Signed},
    {DType::Int6, "int6", "", 1, K::Signed},
    {DType::Int7, "int7", "", 1, K::Signed},
    {DType::Float8_e8m0fnu, "float8_e8m0fnu", "", 1, K::Float},
    {DType::Float4_e2m1fn_x2, "float4_e2m1fn_x2", "", 1, K::Bits},
    // ggml-common.h block layouts: elements per block, sizeof(block_xxx)
    {DType::GgmlQ4_0, "q4_0", "", 0, K::Block, 32, 18},
    {DType::GgmlQ4_1, "q4_1", "", 0, K::Block, 32, 20},
    {DType::GgmlQ5_0, "q5_0", "", 0, K::Block, 32, 22},
    {DType::GgmlQ5_1, "q5_1", "", 0, K::Block, 32, 24},
    {DType::GgmlQ8_0, "q8_0", "", 0, K::Block, 32, 34},
    {DType::GgmlQ8_1, "q8_1", "", 0, K::Block, 32, 36},
    {DType::GgmlQ2_K, "q2_k", "", 0, K::Block, 256, 84},
    {DType::GgmlQ3_K, "q3_k", "", 0, K::Block, 256, 110},
    {DType::GgmlQ4_K, "q4_k", "", 0, K::Block, 256, 144},
    {DType::GgmlQ5_K, "q5_k", "", 0, K::Block, 256, 176},
    {DType::GgmlQ6_K, "q6_k", "", 0, K::Block, 256, 210},
    {DType::GgmlQ8_K, "q8_k", "", 0, K::Block, 256, 292},
    {DType::GgmlIQ2_XXS, "iq2_xxs", "", 0, K::Block, 256, 66},
    {DType::GgmlIQ2_XS, "iq2_xs", "", 0, K::Block, 256, 74},
    {DType::GgmlIQ3_XXS, "iq3_xxs", "", 0, K::Block, 256, 98},
    {DType::GgmlIQ1_S, "iq1_s", "", 0, K::Block, 256, 50},
    {DType::GgmlIQ4_NL, "iq4_nl", "", 0, K::Block, 32, 18},
    {DType::GgmlIQ3_S, "iq3_s", "", 0, K::Block, 256, 110},
    {DType::GgmlIQ2_S, "iq2_s", "", 0, K::Block, 256, 82},
    {DType::GgmlIQ4_XS, "iq4_xs", "", 0, K::Block, 256, 136},
    {DType::GgmlIQ1_M, "iq1_m", "", 0, K::Block, 256, 56},
    {DType::GgmlTQ1_0, "tq1_0", "", 0, K::Block, 256, 54},
    {DType::GgmlTQ2_0, "tq2_0", "", 0, K::Block, 256, 66},
    {DType::GgmlMXFP4, "mxfp4", "", 0, K::Block, 32, 17},
    {DType::GgmlNVFP4, "nvfp4", "", 0, K::Block, 64, 36},
    {DType::GgmlQ1_0, "q1_0", "", 0, K::Block, 128, 18},
    {DType::GgmlQ2_0, "q2_0", "", 0, K::Block, 64, 18},
}};

constexpr bool tableInEnumOrder() {
    for (std::size_t i = 0; i < kTable.size(); ++i)
        if (kTable[i].dtype != static_cast<DType>(i))
            return false;
    return true;
}
static_assert(tableInEnumOrder(), "kTable rows must follow the DType enum");

// Aliases PyTorch accepts as attribute names of the torch module.
struct Alias {
    std::string_view name;
    DType dtype;
};
constexpr std::array<Alias, 9> kAliases{{{"float", DType::Float32},
                                         {"double", DType::Float64},
                                         {"half", DType::Float16},
                                         {"long", DType::Int64},
                                         {"int", DType::Int32},
                                         {"short", DType::Int16},
                                         {"cfloat", DType::Complex64},
                                         {"cdouble", DType::Complex128},
                                         {"chalf", DType::Complex32}}};

} // namespace

const DTypeInfo& dtypeInfo(DType t) {
    return kTable.at(static_cast<std::size_t>(t));
}

std::optional<DType> dtypeFromName(std::string_view name) {
    for (const auto& e : kTable)
        if (e.name == name && e.kind != K::Block)
            return e.dtype;
    for (const auto& a : kAliases)
        if (a.name == name)
            return a.dtype;
    return std::nullopt;
}

std::optional<DType> dtypeFromAnyName(std::string_view name) {
    for (const auto& e : kTable)
        if (e.name == name)
            return e.dtype;
    return dtypeFromName(name);
}

std::optional<DType> dtypeFromStorageName(std::string_view storageClass) {
    if (storageClass.empty())
        return std::nullopt;
    for (const auto& e : kTable)
        if (!e.storageName.empty() && e.storageName == storageClass)
            return e.dtype;
    return std::nullopt;
}

std::optional<DType> dtypeFromTensorClassName(std::string_view tensorClass) {
    constexpr std::string_view suffix = "Tensor";
    if (!tensorClass.ends_with(suffix) || tensorClass.size() == suffix.size())
        return std::nullopt;
    std::string stem(tensorClass.substr(0, tensorClass.size() - suffix.size()));
    return dtypeFromStorageName(stem + "Storage");
}

} // namespace ckpt
