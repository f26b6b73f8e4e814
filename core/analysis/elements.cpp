#include "elements.h"

#include "formats/tfbundle.h" // crc32c()

#include "io/bytereader.h"

#include <array>
#include <bit>
#include <cmath>
#include <cstring>

namespace ckpt {
namespace {

double decodeMinifloat(std::uint32_t bits, int expBits, int mantBits, int bias) {
    const std::uint32_t mant = bits & ((1u << mantBits) - 1);
    const std::uint32_t exp = (bits >> mantBits) & ((1u << expBits) - 1);
    const bool neg = (bits >> (mantBits + expBits)) & 1u;
    double v;
    if (exp == 0)
        v = std::ldexp(static_cast<double>(mant), 1 - bias - mantBits);
    else
        v = std::ldexp(static_cast<double>(mant | (1u << mantBits)), static_cast<int>(exp) - bias - mantBits);
    return neg ? -v : v;
}

struct Float8Tables {
    std::array<std::array<double, 256>, 5> t{};
    Float8Tables() {
        for (int b = 0; b < 256; ++b) {
            const auto u = static_cast<std::uint32_t>(b);
            // e5m2: IEEE-like, exponent 31 is inf / NaN
            t[0][b] = ((u >> 2) & 31) == 31 ? ((u & 3) ? NAN : ((u & 0x80) ? -INFINITY : INFINITY))
                                            : decodeMinifloat(u, 5, 2, 15);
            // e4m3fn: no infinities, S.1111.111 is NaN
            t[1][b] = (u & 0x7F) == 0x7F ? NAN : decodeMinifloat(u, 4, 3, 7);
            // fnuz variants: a single NaN at 0x80, no negative zero
            t[2][b] = u == 0x80 ? NAN : decodeMinifloat(u, 5, 2, 16);
            t[3][b] = u == 0x80 ? NAN : decodeMinifloat(u, 4, 3, 8);
            // e8m0fnu: a power of two, 0xFF is NaN
            t[4][b] = u == 0xFF ? NAN : std::ldexp(1.0, b - 127);
        }
    }
};

const Float8Tables& float8Tables() {
    static const Float8Tables tables;
    return tables;
}

template <typename T> T loadRaw(const std::uint8_t* p, bool swap) {
    T v;
    std::memcpy(&v, p, sizeof(T));
    if (swap) {
        if constexpr (sizeof(T) == 2)
            v = std::bit_cast<T>(__builtin_bswap16(std::bit_cast<std::uint16_t>(v)));
        else if constexpr (sizeof(T) == 4)
            v = std::bit_cast<T>(__builtin_bswap32(std::bit_cast<std::uint32_t>(v)));
        else if constexpr (sizeof(T) == 8)
            v = std::bit_cast<T>(__builtin_bswap64(std::bit_cast<std::uint64_t>(v)));
    }
    return v;
}

struct ConvertJob {
    const TensorReader* reader;
    const std::uint8_t* src;
    std::int64_t strideBytes;
    std::size_t n;
    std::uint64_t firstIndex;
    double* out;
};

} // namespace

namespace {
void runConvert(void* ctx);
void convertOrThrow(ConvertJob& job, const MappedFile& file, const std::string& tensor);
} // namespace

double halfToDouble(std::uint16_t h) {
    if (((h >> 10) & 31) == 31)
        return (h & 0x3FF) ? NAN : ((h & 0x8000) ? -INFINITY : INFINITY);
    return decodeMinifloat(h, 5, 10, 15);
}

double bfloat16ToDouble(std::uint16_t b) {
    return std::bit_cast<float>(static_cast<std::uint32_t>(b) << 16);
}

double float8ToDouble(DType t, std::uint8_t b) {
    const auto& tables = float8Tables().t;
    switch (t) {
    case DType::Float8_e5m2:
        return tables[0][b];
    case DType::Float8_e4m3fn:
        return tables[1][b];
    case DType::Float8_e5m2fnuz:
        return tables[2][b];
    case DType::Float8_e4m3fnuz:
        return tables[3][b];
    case DType::Float8_e8m0fnu:
        return tables[4][b];
    default:
        return NAN;
    }
}

TensorReader::TensorReader(CheckpointPtr checkpoint, const TensorInfo& tensor)
    : m_ck(std::move(checkpoint))
    , m_tensor(tensor) {
    const std::string& fileName = m_ck->sources.empty() ? std::string() : m_ck->sources.front().path;
    if (!m_tensor.error.empty())
        throw Error(ErrorCode::Malformed, m_tensor.error, fileName, {}, m_tensor.name);
    if (m_tensor.chunkSet >= 0) {
        initChunks(fileName);
        return;
    }
    if (m_tensor.storage < 0 || static_cast<std::size_t>(m_tensor.storage) >= m_ck->storages.size())
        throw Error(ErrorCode::Unsupported,
                    m_tensor.layout == Layout::Strided ? std::string("tensor has no data in the file")
                                                       : std::string("a ") + layoutName(m_tensor.layout) +
                                                             " tensor has no dense data to read",
                    fileName, {}, m_tensor.name);
    if (m_tensor.dtype == DType::Float4_e2m1fn_x2)
        throw Error(ErrorCode::Unsupported, "float4_e2m1fn_x2 packs two values per element; not converted",
                    fileName, {}, m_tensor.name);
    const bool block = isBlockDType(m_tensor.dtype);
    if (block && !isDequantizedGgmlType(m_tensor.dtype))
        throw Error(ErrorCode::Unsupported,
                    "statistics of " + std::string(dtypeName(m_tensor.dtype)) + " tensors are not supported",
                    fileName, {}, m_tensor.name);
    const StorageInfo& s = m_ck->storages[static_cast<std::size_t>(m_tensor.storage)];
    const Source& src = m_ck->sources.at(static_cast<std::size_t>(s.source));
    m_file = src.file.get();
    m_base = s.fileOffset;
    m_swap = s.bigEndian && dtypeSize(m_tensor.dtype) > 1;
    m_numel = m_tensor.numel();
    if (m_base > m_file->size() || s.nbytes > m_file->size() - m_base)
        throw Error(ErrorCode::OutOfBounds, "storage '" + s.key + "' lies outside the file", src.path, m_base,
                    m_tensor.name);
    m_file->ensureReadable(m_tensor.name);
    if (block) {
        // Blocks are decoded in file order, which is the logical row-major order only for a contiguous
        // tensor that starts on a block boundary (every GGUF tensor does).
        const auto blk = static_cast<std::int64_t>(dtypeBlockSize(m_tensor.dtype));
        if (m_tensor.strides.size() != m_tensor.shape.size() || !m_tensor.isContiguous() ||
            m_tensor.storageOffset < 0 || m_tensor.storageOffset % blk != 0 ||
            m_numel % static_cast<std::uint64_t>(blk) != 0)
            throw Error(ErrorCode::Unsupported,
                        "only contiguous " + std::string(dtypeName(m_tensor.dtype)) +
                            " tensors of whole blocks can be read",
                        fileName, {}, m_tensor.name);
        m_blockOffset =
            static_cast<std::uint64_t>(m_tensor.storageOffset / blk) * dtypeBlockBytes(m_tensor.dtype);
        std::uint64_t bytes = 0;
        if (!dtypeNbytes(m_tensor.dtype, m_numel, &bytes) || m_blockOffset > s.nbytes ||
            bytes > s.nbytes - m_blockOffset)
            throw Error(ErrorCode::OutOfBounds,
                        "tensor data runs past the end of its storage '" + s.key + "'", src.path, m_base,
                        m_tensor.name);
    }

    // An empty tensor has no element to dequantize (and its axis size is not bounded by any data).
    if (m_tensor.quant.scheme == QuantInfo::Scheme::PerChannelAffine && m_numel > 0) {
        const auto& q = m_tensor.quant;
        const auto axis = static_cast<std::size_t>(q.axis);
        if (axis >= m_tensor.shape.size())
            throw Error(ErrorCode::Malformed, "quantization axis out of range", src.path, {}, m_tensor.name);
        for (std::size_t i = axis + 1; i < m_tensor.shape.size(); ++i)
            m_channelInner *= static_cast<std::uint64_t>(m_tensor.shape[i]);
        const auto channels = static_cast<std::uint64_t>(m_tensor.shape[axis]);
        auto load = [&](int proto, auto& out) {
            const auto found = m_ck->helperTensors.find(proto);
            if (found == m_ck->helperTensors.end())
                throw Error(ErrorCode::Malformed, "per-channel quantization parameters are missing", src.path,
                            {}, m_tensor.name);
            const TensorInfo& p = found->second;
            // PyTorch stores scales and zero points as plain float64 / int64 tensors. A quantized one would
            // need its own parameters read first, and so on down a chain the file controls.
            if (p.quant.scheme != QuantInfo::Scheme::None)
                throw Error(ErrorCode::Malformed,
                            "per-channel quantization parameters are themselves quantized", src.path, {},
                            m_tensor.name);
            TensorReader r(m_ck, p);
            if (r.numel() != channels)
                throw Error(ErrorCode::Malformed,
                            "per-channel quantization parameters do not match the axis size", src.path, {},
                            m_tensor.name);
            // One value per channel is copied out: the file must hold that many (a stride-0 tensor would
            // declare any number of them over one stored value).
            const std::uint64_t stored =
                p.storage >= 0 && static_cast<std::size_t>(p.storage) < m_ck->storages.size()
                    ? m_ck->storages[static_cast<std::size_t>(p.storage)].nbytes /
                          std::max<std::size_t>(1, dtypeSize(p.dtype))
                    : 0;
            if (channels > stored)
                throw Error(ErrorCode::Malformed,
                            "per-channel quantization parameters declare " + std::to_string(channels) +
                                " channels but their storage holds " + std::to_string(stored) +
                                (stored == 1 ? " value" : " values"),
                            src.path, {}, m_tensor.name);
            out.resize(channels);
            for (std::uint64_t i = 0; i < channels; ++i)
                out[i] = static_cast<std::remove_reference_t<decltype(out[0])>>(r.element(i));
        };
        load(q.scalesTensor, m_scales);
        load(q.zeroPointsTensor, m_zeroPoints);
    }
}

namespace {

float halfAt(const std::uint8_t* p) {
    return static_cast<float>(halfToDouble(static_cast<std::uint16_t>(p[0] | (p[1] << 8))));
}

// ggml's K-quant scales: 6-bit scale and min j of 8, packed in 12 bytes (get_scale_min_k4 in ggml-quants.c).
void scaleMinK4(int j, const std::uint8_t* q, std::uint8_t* d, std::uint8_t* m) {
    if (j < 4) {
        *d = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *d = static_cast<std::uint8_t>((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
        *m = static_cast<std::uint8_t>((q[j + 4] >> 4) | ((q[j - 0] >> 6) << 4));
    }
}

} // namespace

// One block of a ggml type, as ggml's dequantize_row_<type> computes it (float arithmetic). Layouts
// (ggml-common.h), f16 values little-endian:
//   q4_1  {f16 d, f16 m, u8 qs[16]}                  x = d * nibble + m (low nibbles 0..15, high 16..31)
//   q5_0  {f16 d, u32 qh, u8 qs[16]}                 x = d * ((nibble | bit of qh << 4) - 16)
//   q5_1  {f16 d, f16 m, u32 qh, u8 qs[16]}          x = d * (nibble | bit of qh << 4) + m
//   q8_1  {f16 d, f16 s, i8 qs[32]}                  x = d * q (s = d * sum(q) is not needed)
//   q2_k  {u8 scales[16], u8 qs[64], f16 d, f16 dmin} 16 groups of 16: d * (sc & 15) * q2 - dmin * (sc >> 4)
//   q4_k  {f16 d, f16 dmin, u8 scales[12], u8 qs[128]} 8 groups of 32: d * sc * q4 - dmin * m (6-bit sc, m)
//   q5_k  {f16 d, f16 dmin, u8 scales[12], u8 qh[32], u8 qs[128]}  as q4_k with a fifth bit from qh
//   q6_k  {u8 ql[128], u8 qh[64], i8 scales[16], f16 d}  16 groups of 16: d * sc * (q6 - 32)
//   q8_k  {f32 d, i8 qs[256], i16 bsums[16]}        x = d * q
void dequantizeGgmlBlock(DType t, const std::uint8_t* b, float* y) {
    switch (t) {
    case DType::GgmlQ4_1:
    case DType::GgmlQ5_0:
    case DType::GgmlQ5_1: {
        const bool hasMin = t != DType::GgmlQ5_0;
        const float d = halfAt(b);
        const float m = hasMin ? halfAt(b + 2) : 0.0f;
        const std::uint8_t* p = b + (hasMin ? 4 : 2);
        std::uint32_t qh = 0;
        if (t != DType::GgmlQ4_1) {
            qh = static_cast<std::uint32_t>(p[0]) | (static_cast<std::uint32_t>(p[1]) << 8) |
                 (static_cast<std::uint32_t>(p[2]) << 16) | (static_cast<std::uint32_t>(p[3]) << 24);
            p += 4;
        }
        for (int j = 0; j < 16; ++j) {
            int x0 = p[j] & 0x0F, x1 = p[j] >> 4;
            if (t != DType::GgmlQ4_1) {
                x0 |= static_cast<int>(((qh >> j) << 4) & 0x10);
                x1 |= static_cast<int>((qh >> (j + 12)) & 0x10);
            }
            if (t == DType::GgmlQ5_0) {
                y[j] = static_cast<float>(x0 - 16) * d;
                y[j + 16] = static_cast<float>(x1 - 16) * d;
            } else {
                y[j] = static_cast<float>(x0) * d + m;
                y[j + 16] = static_cast<float>(x1) * d + m;
            }
        }
        return;
    }
    case DType::GgmlQ8_1: {
        const float d = halfAt(b);
        for (int j = 0; j < 32; ++j)
            y[j] = static_cast<float>(static_cast<std::int8_t>(b[4 + j])) * d;
        return;
    }
    case DType::GgmlQ2_K: {
        const std::uint8_t* sc = b;
        const std::uint8_t* q = b + 16;
        const float d = halfAt(b + 80), dmin = halfAt(b + 82);
        int is = 0;
        for (int n = 0; n < 256; n += 128) {
            for (int shift = 0; shift < 8; shift += 2) {
                for (int half = 0; half < 2; ++half) {
                    const std::uint8_t s = sc[is++];
                    const float dl = d * static_cast<float>(s & 0xF), ml = dmin * static_cast<float>(s >> 4);
                    for (int l = 0; l < 16; ++l)
                        *y++ = dl * static_cast<float>((q[l + 16 * half] >> shift) & 3) - ml;
                }
            }
            q += 32;
        }
        return;
    }
    case DType::GgmlQ4_K:
    case DType::GgmlQ5_K: {
        const bool five = t == DType::GgmlQ5_K;
        const float d = halfAt(b), dmin = halfAt(b + 2);
        const std::uint8_t* scales = b + 4;
        const std::uint8_t* qh = b + 16;
        const std::uint8_t* q = b + (five ? 48 : 16);
        std::uint8_t u1 = 1, u2 = 2;
        for (int j = 0, is = 0; j < 256; j += 64, is += 2) {
            std::uint8_t sc, m;
            scaleMinK4(is, scales, &sc, &m);
            const float d1 = d * sc, m1 = dmin * m;
            scaleMinK4(is + 1, scales, &sc, &m);
            const float d2 = d * sc, m2 = dmin * m;
            for (int l = 0; l < 32; ++l)
                *y++ = d1 * static_cast<float>((q[l] & 0xF) + (five && (qh[l] & u1) ? 16 : 0)) - m1;
            for (int l = 0; l < 32; ++l)
                *y++ = d2 * static_cast<float>((q[l] >> 4) + (five && (qh[l] & u2) ? 16 : 0)) - m2;
            q += 32;
            u1 = static_cast<std::uint8_t>(u1 << 2);
            u2 = static_cast<std::uint8_t>(u2 << 2);
        }
        return;
    }
    case DType::GgmlQ6_K: {
        const std::uint8_t* ql = b;
        const std::uint8_t* qh = b + 128;
        const auto* sc = reinterpret_cast<const std::int8_t*>(b + 192);
        const float d = halfAt(b + 208);
        for (int n = 0; n < 256; n += 128) {
            for (int l = 0; l < 32; ++l) {
                const int is = l / 16;
                const int q1 = ((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
                const int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
                const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                y[l] = d * static_cast<float>(sc[is]) * static_cast<float>(q1);
                y[l + 32] = d * static_cast<float>(sc[is + 2]) * static_cast<float>(q2);
                y[l + 64] = d * static_cast<float>(sc[is + 4]) * static_cast<float>(q3);
                y[l + 96] = d * static_cast<float>(sc[is + 6]) * static_cast<float>(q4);
            }
            y += 128;
            ql += 64;
            qh += 32;
            sc += 8;
        }
        return;
    }
    case DType::GgmlQ8_K: {
        float d;
        std::memcpy(&d, b, 4);
        for (int j = 0; j < 256; ++j)
            y[j] = d * static_cast<float>(static_cast<std::int8_t>(b[4 + j]));
        return;
    }
    default:
        for (std::size_t j = 0; j < dtypeBlockSize(t); ++j)
            y[j] = NAN;
    }
}

bool isDequantizedGgmlType(DType t) {
    switch (t) {
    case DType::GgmlQ8_0:
    case DType::GgmlQ4_0:
    case DType::GgmlQ4_1:
    case DType::GgmlQ5_0:
    case DType::GgmlQ5_1:
    case DType::GgmlQ8_1:
    case DType::GgmlQ2_K:
    case DType::GgmlQ4_K:
    case DType::GgmlQ5_K:
    case DType::GgmlQ6_K:
    case DType::GgmlQ8_K:
        return true;
    default:
        return false;
    }
}

void TensorReader::initChunks(const std::string& fileName) {
    if (static_cast<std::size_t>(m_tensor.chunkSet) >= m_ck->chunkSets.size())
        throw Error(ErrorCode::Malformed, "the tensor's chunk list is missing", fileName, {}, m_tensor.name);
    const auto& set = m_ck->chunkSets[static_cast<std::size_t>(m_tensor.chunkSet)];
    const std::size_t nd = m_tensor.shape.size();
    m_numel = m_tensor.numel();
    // Dimensions from `keep` on are whole in every chunk.
    std::size_t keep = nd;
    while (keep > 0) {
        const std::size_t d = keep - 1;
        const bool whole = std::all_of(set.begin(), set.end(), [&](const TensorChunk& c) {
            return c.offsets.size() == nd && c.part.shape.size() == nd && c.offsets[d] == 0 &&
                   c.part.shape[d] == m_tensor.shape[d];
        });
        if (!whole)
            break;
        keep = d;
    }
    std::int64_t inner = 1;
    for (std::size_t d = keep; d < nd; ++d)
        inner *= m_tensor.shape[d];
    const std::size_t last = keep == 0 ? 0 : keep - 1;
    m_dims.assign(m_tensor.shape.begin(), m_tensor.shape.begin() + static_cast<std::ptrdiff_t>(last));
    m_dims.push_back((keep == 0 ? 1 : m_tensor.shape[last]) * inner);
    for (const auto& c : set) {
        if (c.offsets.size() != nd || c.part.shape.size() != nd)
            throw Error(ErrorCode::Malformed, "a chunk's rank differs from the tensor's", fileName, {},
                        m_tensor.name);
        if (c.part.numel() == 0)
            continue;
        Part p;
        p.offsets.assign(c.offsets.begin(), c.offsets.begin() + static_cast<std::ptrdiff_t>(last));
        p.sizes.assign(c.part.shape.begin(), c.part.shape.begin() + static_cast<std::ptrdiff_t>(last));
        p.offsets.push_back(keep == 0 ? 0 : c.offsets[last] * inner);
        p.sizes.push_back((keep == 0 ? 1 : c.part.shape[last]) * inner);
        p.reader = std::make_shared<TensorReader>(m_ck, c.part);
        m_parts.push_back(std::move(p));
    }
    std::sort(m_parts.begin(), m_parts.end(),
              [](const Part& a, const Part& b) { return a.offsets < b.offsets; });
    std::uint64_t covered = 0;
    for (const auto& p : m_parts)
        covered += p.reader->numel();
    if (covered != m_numel)
        throw Error(ErrorCode::Malformed,
                    "the chunks cover " + std::to_string(covered) + " of " + std::to_string(m_numel) +
                        " elements",
                    fileName, {}, m_tensor.name);
}

const TensorReader::Part& TensorReader::partOf(std::uint64_t index, std::uint64_t* local) const {
    std::vector<std::int64_t> at(m_dims.size());
    for (std::size_t d = m_dims.size(); d-- > 0;) {
        const auto size = static_cast<std::uint64_t>(m_dims[d]);
        at[d] = static_cast<std::int64_t>(index % size);
        index /= size;
    }
    for (const auto& p : m_parts) {
        bool inside = true;
        for (std::size_t d = 0; d < at.size() && inside; ++d)
            inside = at[d] >= p.offsets[d] && at[d] < p.offsets[d] + p.sizes[d];
        if (!inside)
            continue;
        std::uint64_t l = 0;
        for (std::size_t d = 0; d < at.size(); ++d)
            l = l * static_cast<std::uint64_t>(p.sizes[d]) + static_cast<std::uint64_t>(at[d] - p.offsets[d]);
        *local = l;
        return p;
    }
    throw Error(ErrorCode::Malformed, "no chunk holds element " + std::to_string(index), {}, {},
                m_tensor.name);
}

void TensorReader::readRun(std::uint64_t first, std::size_t n, double* out) const {
    if (!m_parts.empty() || m_tensor.strides.size() != m_tensor.shape.size() || !m_tensor.isContiguous() ||
        isBlockDType(m_tensor.dtype)) {
        for (std::size_t i = 0; i < n; ++i)
            out[i] = element(first + i);
        return;
    }
    const auto elsize = static_cast<std::int64_t>(dtypeSize(m_tensor.dtype));
    const std::uint64_t at = byteOffsetOf(first);
    ConvertJob job{this, m_file->data() + at, elsize, n, first, out};
    convertOrThrow(job, *m_file, m_tensor.name);
    if (n * static_cast<std::uint64_t>(elsize) >= (1u << 20))
        m_file->release(at, n * static_cast<std::uint64_t>(elsize));
}

bool TensorReader::forEachPartChunk(const std::function<bool(std::span<const double>, std::uint64_t)>& fn,
                                    std::size_t chunk) const {
    chunk = std::max<std::size_t>(chunk, 1);
    std::vector<double> buffer(chunk);
    std::size_t filled = 0;
    std::uint64_t bufferFirst = 0, index = 0;
    auto flush = [&]() {
        if (filled == 0)
            return true;
        const bool go = fn(std::span<const double>(buffer.data(), filled), bufferFirst);
        bufferFirst += filled;
        filled = 0;
        return go;
    };
    const std::size_t nd = m_dims.size();
    std::vector<std::int64_t> outer(nd - 1, 0);
    std::vector<const Part*> row;
    while (index < m_numel) {
        row.clear();
        for (const auto& p : m_parts) {
            bool inside = true;
            for (std::size_t d = 0; d + 1 < nd && inside; ++d)
                inside = outer[d] >= p.offsets[d] && outer[d] < p.offsets[d] + p.sizes[d];
            if (inside)
                row.push_back(&p);
        }
        std::sort(row.begin(), row.end(),
                  [](const Part* a, const Part* b) { return a->offsets.back() < b->offsets.back(); });
        for (const Part* p : row) {
            std::uint64_t local = 0;
            for (std::size_t d = 0; d + 1 < nd; ++d)
                local = local * static_cast<std::uint64_t>(p->sizes[d]) +
                        static_cast<std::uint64_t>(outer[d] - p->offsets[d]);
            local *= static_cast<std::uint64_t>(p->sizes.back());
            for (std::uint64_t done = 0, run = static_cast<std::uint64_t>(p->sizes.back()); done < run;) {
                const std::size_t n =
                    static_cast<std::size_t>(std::min<std::uint64_t>(chunk - filled, run - done));
                p->reader->readRun(local + done, n, buffer.data() + filled);
                filled += n;
                done += n;
                index += n;
                if (filled == chunk && !flush())
                    return false;
            }
        }
        if (row.empty())
            throw Error(ErrorCode::Malformed, "no chunk holds element " + std::to_string(index), {}, {},
                        m_tensor.name);
        for (std::size_t d = nd - 1; d-- > 0;) {
            if (++outer[d] < m_dims[d])
                break;
            outer[d] = 0;
        }
    }
    return flush();
}

void TensorReader::convert(const std::uint8_t* src, std::int64_t sb, std::size_t n, std::uint64_t first,
                           double* out) const {
    const bool sw = m_swap;
    auto loop = [&](auto fn) {
        for (std::size_t i = 0; i < n; ++i)
            out[i] = fn(src + static_cast<std::int64_t>(i) * sb);
    };
    const DType dt = m_tensor.dtype;
    switch (dt) {
    case DType::Float32:
        loop([&](const std::uint8_t* p) { return static_cast<double>(loadRaw<float>(p, sw)); });
        break;
    case DType::Float64:
        loop([&](const std::uint8_t* p) { return loadRaw<double>(p, sw); });
        break;
    case DType::Float16:
        loop([&](const std::uint8_t* p) { return halfToDouble(loadRaw<std::uint16_t>(p, sw)); });
        break;
    case DType::BFloat16:
        loop([&](const std::uint8_t* p) { return bfloat16ToDouble(loadRaw<std::uint16_t>(p, sw)); });
        break;
    case DType::Bool:
        loop([](const std::uint8_t* p) { return *p ? 1.0 : 0.0; });
        break;
    case DType::UInt8:
    case DType::Bits8:
    case DType::Bits1x8:
    case DType::Bits2x4:
    case DType::Bits4x2:
    case DType::QUInt4x2:
    case DType::QUInt2x4:
    case DType::UInt1:
    case DType::UInt2:
    case DType::UInt3:
    case DType::UInt4:
    case DType::UInt5:
    case DType::UInt6:
    case DType::UInt7:
        loop([](const std::uint8_t* p) { return static_cast<double>(*p); });
        break;
    case DType::Int8:
    case DType::Int1:
    case DType::Int2:
    case DType::Int3:
    case DType::Int4:
    case DType::Int5:
    case DType::Int6:
    case DType::Int7:
        loop([](const std::uint8_t* p) { return static_cast<double>(static_cast<std::int8_t>(*p)); });
        break;
    case DType::Int16:
        loop([&](const std::uint8_t* p) { return static_cast<double>(loadRaw<std::int16_t>(p, sw)); });
        break;
    case DType::Int32:
        loop([&](const std::uint8_t* p) { return static_cast<double>(loadRaw<std::int32_t>(p, sw)); });
        break;
    case DType::Int64:
        loop([&](const std::uint8_t* p) { return static_cast<double>(loadRaw<std::int64_t>(p, sw)); });
        break;
    case DType::UInt16:
    case DType::Bits16:
        loop([&](const std::uint8_t* p) { return static_cast<double>(loadRaw<std::uint16_t>(p, sw)); });
        break;
    case DType::UInt32:
        loop([&](const std::uint8_t* p) { return static_cast<double>(loadRaw<std::uint32_t>(p, sw)); });
        break;
    case DType::UInt64:
        loop([&](const std::uint8_t* p) { return static_cast<double>(loadRaw<std::uint64_t>(p, sw)); });
        break;
    case DType::Float8_e5m2:
    case DType::Float8_e4m3fn:
    case DType::Float8_e5m2fnuz:
    case DType::Float8_e4m3fnuz:
    case DType::Float8_e8m0fnu: {
        const auto& tab = float8Tables().t;
        const std::size_t which = dt == DType::Float8_e5m2       ? 0
                                  : dt == DType::Float8_e4m3fn   ? 1
                                  : dt == DType::Float8_e5m2fnuz ? 2
                                  : dt == DType::Float8_e4m3fnuz ? 3
                                                                 : 4;
        loop([&](const std::uint8_t* p) { return tab[which][*p]; });
        break;
    }
    case DType::Complex32:
        loop([&](const std::uint8_t* p) {
            return std::hypot(halfToDouble(loadRaw<std::uint16_t>(p, sw)),
                              halfToDouble(loadRaw<std::uint16_t>(p + 2, sw)));
        });
        break;
    case DType::Complex64:
        loop([&](const std::uint8_t* p) {
            return std::hypot(static_cast<double>(loadRaw<float>(p, sw)),
                              static_cast<double>(loadRaw<float>(p + 4, sw)));
        });
        break;
    case DType::Complex128:
        loop([&](const std::uint8_t* p) {
            return std::hypot(loadRaw<double>(p, sw), loadRaw<double>(p + 8, sw));
        });
        break;
    case DType::QInt8:
    case DType::QUInt8:
    case DType::QInt32: {
        auto raw = [&](const std::uint8_t* p) -> double {
            if (dt == DType::QInt8)
                return static_cast<std::int8_t>(*p);
            if (dt == DType::QUInt8)
                return *p;
            return loadRaw<std::int32_t>(p, sw);
        };
        const auto& q = m_tensor.quant;
        if (q.scheme == QuantInfo::Scheme::PerTensorAffine) {
            const double zp = static_cast<double>(q.zeroPoint);
            loop([&](const std::uint8_t* p) { return (raw(p) - zp) * q.scale; });
        } else if (q.scheme == QuantInfo::Scheme::PerChannelAffine) {
            const auto channels =
                static_cast<std::uint64_t>(m_tensor.shape[static_cast<std::size_t>(q.axis)]);
            for (std::size_t i = 0; i < n; ++i) {
                const std::uint64_t c = ((first + i) / m_channelInner) % channels;
                out[i] =
                    (raw(src + static_cast<std::int64_t>(i) * sb) - static_cast<double>(m_zeroPoints[c])) *
                    m_scales[c];
            }
        } else {
            loop(raw);
        }
        break;
    }
    case DType::GgmlQ8_0:
    case DType::GgmlQ4_0: {
        // ggml's dequantize_row_q8_0 / dequantize_row_q4_0 (ggml-quants.c): per block of 32 an f16 scale d,
        // then q8_0: 32 int8 quants, value d * q; q4_0: 16 bytes, low nibbles are elements 0..15 and high
        // nibbles 16..31, value d * (nibble - 8). Computed in float as ggml does (exact in either precision).
        // `src` is the block holding element `first`.
        const bool q8 = dt == DType::GgmlQ8_0;
        const std::size_t bytes = q8 ? 34 : 18;
        std::size_t j = static_cast<std::size_t>(first % 32);
        const std::uint8_t* b = src;
        float d = static_cast<float>(halfToDouble(loadRaw<std::uint16_t>(b, false)));
        for (std::size_t i = 0; i < n; ++i) {
            if (j == 32) {
                j = 0;
                b += bytes;
                d = static_cast<float>(halfToDouble(loadRaw<std::uint16_t>(b, false)));
            }
            int q;
            if (q8)
                q = static_cast<std::int8_t>(b[2 + j]);
            else
                q = (j < 16 ? (b[2 + j] & 0x0F) : (b[2 + j - 16] >> 4)) - 8;
            out[i] = static_cast<double>(static_cast<float>(q) * d);
            ++j;
        }
        break;
    }
    case DType::GgmlQ4_1:
    case DType::GgmlQ5_0:
    case DType::GgmlQ5_1:
    case DType::GgmlQ8_1:
    case DType::GgmlQ2_K:
    case DType::GgmlQ4_K:
    case DType::GgmlQ5_K:
    case DType::GgmlQ6_K:
    case DType::GgmlQ8_K: {
        // `src` is the block holding element `first`: decode block by block.
        const std::size_t bs = dtypeBlockSize(dt), bytes = dtypeBlockBytes(dt);
        float block[256];
        std::size_t j = static_cast<std::size_t>(first % bs);
        const std::uint8_t* b = src;
        dequantizeGgmlBlock(dt, b, block);
        for (std::size_t i = 0; i < n; ++i) {
            if (j == bs) {
                j = 0;
                b += bytes;
                dequantizeGgmlBlock(dt, b, block);
            }
            out[i] = static_cast<double>(block[j++]);
        }
        break;
    }
    case DType::GgmlQ3_K:
    case DType::GgmlIQ2_XXS:
    case DType::GgmlIQ2_XS:
    case DType::GgmlIQ3_XXS:
    case DType::GgmlIQ1_S:
    case DType::GgmlIQ4_NL:
    case DType::GgmlIQ3_S:
    case DType::GgmlIQ2_S:
    case DType::GgmlIQ4_XS:
    case DType::GgmlIQ1_M:
    case DType::GgmlTQ1_0:
    case DType::GgmlTQ2_0:
    case DType::GgmlMXFP4:
    case DType::GgmlNVFP4:
    case DType::GgmlQ1_0:
    case DType::GgmlQ2_0:
    case DType::Float4_e2m1fn_x2:
    case DType::Count:
        for (std::size_t i = 0; i < n; ++i)
            out[i] = NAN;
        break;
    }
}

std::uint64_t TensorReader::byteOffsetOf(std::uint64_t index) const {
    if (isBlockDType(m_tensor.dtype)) // the block holding the element
        return m_base + m_blockOffset +
               index / dtypeBlockSize(m_tensor.dtype) * dtypeBlockBytes(m_tensor.dtype);
    std::uint64_t el = static_cast<std::uint64_t>(m_tensor.storageOffset);
    for (std::size_t d = m_tensor.shape.size(); d-- > 0;) {
        const auto size = static_cast<std::uint64_t>(m_tensor.shape[d]);
        el += (index % size) * static_cast<std::uint64_t>(m_tensor.strides[d]);
        index /= size;
    }
    return m_base + el * dtypeSize(m_tensor.dtype);
}

double TensorReader::element(std::uint64_t index) const {
    if (index >= m_numel)
        throw Error(ErrorCode::OutOfBounds,
                    "element index " + std::to_string(index) + " is past the end (" +
                        std::to_string(m_numel) + " elements)",
                    {}, {}, m_tensor.name);
    if (!m_parts.empty()) {
        std::uint64_t local = 0;
        return partOf(index, &local).reader->element(local);
    }
    double out = 0;
    ConvertJob job{this, m_file->data() + byteOffsetOf(index), 0, 1, index, &out};
    convertOrThrow(job, *m_file, m_tensor.name);
    return out;
}

std::complex<double> TensorReader::elementComplex(std::uint64_t index) const {
    const DType dt = m_tensor.dtype;
    if (dt != DType::Complex32 && dt != DType::Complex64 && dt != DType::Complex128)
        return {element(index), 0.0};
    if (index >= m_numel)
        throw Error(ErrorCode::OutOfBounds, "element index past the end", {}, {}, m_tensor.name);
    if (!m_parts.empty()) {
        std::uint64_t local = 0;
        return partOf(index, &local).reader->elementComplex(local);
    }
    const std::uint64_t off = byteOffsetOf(index);
    std::uint8_t raw[16];
    const std::size_t size = dtypeSize(dt);
    if (!m_file->copyGuarded(off, size, raw))
        throw Error(ErrorCode::Changed, "the file was truncated on disk after it was opened; reload it",
                    m_file->path(), {}, m_tensor.name);
    if (dt == DType::Complex32)
        return {halfToDouble(loadRaw<std::uint16_t>(raw, m_swap)),
                halfToDouble(loadRaw<std::uint16_t>(raw + 2, m_swap))};
    if (dt == DType::Complex64)
        return {loadRaw<float>(raw, m_swap), loadRaw<float>(raw + 4, m_swap)};
    return {loadRaw<double>(raw, m_swap), loadRaw<double>(raw + 8, m_swap)};
}

namespace {
void runConvert(void* ctx) {
    auto* job = static_cast<ConvertJob*>(ctx);
    job->reader->convertJob(job->src, job->strideBytes, job->n, job->firstIndex, job->out);
}
} // namespace

namespace {
// Converts under the SIGBUS guard; pages lost to a truncation become Error(Changed) naming the tensor.
void convertOrThrow(ConvertJob& job, const MappedFile& file, const std::string& tensor) {
    if (!MappedFile::runGuarded(runConvert, &job))
        throw Error(ErrorCode::Changed,
                    "the file was truncated on disk while its data was being read; reload it", file.path(),
                    {}, tensor);
}
} // namespace

void TensorReader::convertJob(const std::uint8_t* src, std::int64_t strideBytes, std::size_t n,
                              std::uint64_t firstIndex, double* out) const {
    convert(src, strideBytes, n, firstIndex, out);
}

void TensorReader::verifyChecksum() const {
    if (m_checksumVerified || !m_file || m_tensor.storage < 0)
        return;
    verifyStorageChecksum(m_ck, m_tensor);
    m_checksumVerified = true;
}

void verifyStorageChecksum(const CheckpointPtr& ck, const TensorInfo& tensor) {
    if (tensor.storage < 0 || static_cast<std::size_t>(tensor.storage) >= ck->storages.size())
        return;
    const StorageInfo& s = ck->storages[static_cast<std::size_t>(tensor.storage)];
    if (!s.crc32c || static_cast<std::size_t>(s.source) >= ck->sources.size())
        return;
    const Source& src = ck->sources[static_cast<std::size_t>(s.source)];
    // pread in pieces: the check leaves nothing in our resident set.
    std::vector<std::uint8_t> buffer(std::min<std::uint64_t>(s.nbytes, 4u << 20));
    std::uint32_t crc = 0;
    for (std::uint64_t done = 0; done < s.nbytes;) {
        const auto n = static_cast<std::size_t>(std::min<std::uint64_t>(buffer.size(), s.nbytes - done));
        if (!src.file->readAt(s.fileOffset + done, n, buffer.data()))
            throw Error(ErrorCode::Changed, "the file was truncated on disk after it was opened; reload it",
                        src.path, s.fileOffset + done, tensor.name);
        crc = crc32c({buffer.data(), n}, crc);
        done += n;
    }
    if (crc != *s.crc32c)
        throw Error(ErrorCode::Malformed,
                    "checksum does not match: stored " + std::to_string(*s.crc32c) + " vs. calculated " +
                        std::to_string(crc) + " on the " + std::to_string(s.nbytes) + " bytes of tensor '" +
                        tensor.name + "'",
                    src.path, s.fileOffset, tensor.name);
}

bool TensorReader::forEachChunk(const std::function<bool(std::span<const double>, std::uint64_t)>& fn,
                                std::size_t chunk) const {
    if (m_numel == 0)
        return true;
    verifyChecksum();
    const bool finished = m_tensor.chunkSet >= 0         ? forEachPartChunk(fn, chunk)
                          : isBlockDType(m_tensor.dtype) ? forEachBlockChunk(fn, chunk)
                                                         : forEachStridedChunk(fn, chunk);
    // The constructor checked the file before the first value; values read while a job wrote over the file
    // are no values of it, so it is checked again after the last (Error(Changed)).
    if (finished)
        ensureUnchanged();
    return finished;
}

void TensorReader::ensureUnchanged() const {
    for (const Part& part : m_parts)
        part.reader->ensureUnchanged();
    if (m_file)
        m_file->ensureReadable(m_tensor.name);
}

bool TensorReader::forEachStridedChunk(const std::function<bool(std::span<const double>, std::uint64_t)>& fn,
                                       std::size_t chunk) const {
    const std::size_t elsize = dtypeSize(m_tensor.dtype);
    // Coalesce dimensions so that contiguous tensors become one run and size-1 dimensions vanish.
    std::vector<std::int64_t> shape, strides;
    for (std::size_t i = 0; i < m_tensor.shape.size(); ++i) {
        if (m_tensor.shape[i] == 1)
            continue;
        if (!shape.empty() && strides.back() == m_tensor.shape[i] * m_tensor.strides[i]) {
            shape.back() *= m_tensor.shape[i];
            strides.back() = m_tensor.strides[i];
        } else {
            shape.push_back(m_tensor.shape[i]);
            strides.push_back(m_tensor.strides[i]);
        }
    }
    if (shape.empty()) {
        shape.push_back(1);
        strides.push_back(1);
    }
    const std::size_t nd = shape.size();
    const auto inner = static_cast<std::uint64_t>(shape.back());
    const std::int64_t innerStrideBytes = strides.back() * static_cast<std::int64_t>(elsize);
    std::vector<std::int64_t> counter(nd, 0);
    std::vector<double> buffer(chunk);
    std::uint64_t index = 0;
    const bool contiguous = nd == 1 && strides.back() == 1;
    std::uint64_t released = m_base + static_cast<std::uint64_t>(m_tensor.storageOffset) * elsize;
    while (index < m_numel) {
        std::uint64_t el = static_cast<std::uint64_t>(m_tensor.storageOffset);
        for (std::size_t d = 0; d + 1 < nd; ++d)
            el += static_cast<std::uint64_t>(counter[d]) * static_cast<std::uint64_t>(strides[d]);
        const std::uint8_t* rowStart = m_file->data() + m_base + el * elsize;
        for (std::uint64_t done = 0; done < inner;) {
            const std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(chunk, inner - done));
            ConvertJob job{this,
                           rowStart + static_cast<std::int64_t>(done) * innerStrideBytes,
                           innerStrideBytes,
                           n,
                           index,
                           buffer.data()};
            convertOrThrow(job, *m_file, m_tensor.name);
            if (!fn(std::span<const double>(buffer.data(), n), index))
                return false;
            done += n;
            index += n;
            // Drop what was read from our resident set every few MiB; contiguous data only (strided reads
            // revisit pages).
            if (contiguous) {
                const std::uint64_t readEnd = m_base + (m_tensor.storageOffset + index) * elsize;
                if (readEnd - released >= (8u << 20)) {
                    m_file->release(released, readEnd - released);
                    released = readEnd;
                }
            }
        }
        for (std::size_t d = nd - 1; d-- > 0;) { // odometer over the outer dimensions
            if (++counter[d] < shape[d])
                break;
            counter[d] = 0;
        }
    }
    if (contiguous)
        m_file->release(released, m_base + (m_tensor.storageOffset + m_numel) * elsize - released);
    return true;
}

// Block types: the constructor made sure the tensor is contiguous, so logical order is block order.
bool TensorReader::forEachBlockChunk(const std::function<bool(std::span<const double>, std::uint64_t)>& fn,
                                     std::size_t chunk) const {
    const std::uint64_t blk = dtypeBlockSize(m_tensor.dtype);
    const std::uint64_t blockBytes = dtypeBlockBytes(m_tensor.dtype);
    chunk = std::max<std::size_t>(static_cast<std::size_t>(blk), chunk / blk * blk);
    std::vector<double> buffer(chunk);
    const std::uint64_t start = m_base + m_blockOffset;
    std::uint64_t released = start;
    for (std::uint64_t index = 0; index < m_numel;) {
        const std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(chunk, m_numel - index));
        ConvertJob job{this, m_file->data() + byteOffsetOf(index), 0, n, index, buffer.data()};
        convertOrThrow(job, *m_file, m_tensor.name);
        if (!fn(std::span<const double>(buffer.data(), n), index))
            return false;
        index += n;
        const std::uint64_t readEnd = start + (index + blk - 1) / blk * blockBytes;
        if (readEnd - released >= (8u << 20) || index >= m_numel) {
            m_file->release(released, readEnd - released);
            released = readEnd;
        }
    }
    return true;
}

} // namespace ckpt
