#include "diff.h"

#include "io/error.h"
#include "pickle/value.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <limits>
#include <map>
#include <mutex>
#include <thread>
#include <type_traits>
#include <unordered_map>
#include <unordered_set>

namespace ckpt {

// ---------------------------------------------------------------------------------------------------------
// Names and alignment

const char* alignmentRuleName(KeyAlignment::Rule rule) {
    switch (rule) {
    case KeyAlignment::Rule::Identity:
        return "identity";
    case KeyAlignment::Rule::Prefix:
        return "prefix";
    case KeyAlignment::Rule::Manual:
        return "manual";
    }
    return "identity";
}

const char* diffStatusName(DiffStatus s) {
    switch (s) {
    case DiffStatus::Same:
        return "same";
    case DiffStatus::Changed:
        return "changed";
    case DiffStatus::Added:
        return "added";
    case DiffStatus::Removed:
        return "removed";
    case DiffStatus::Error:
        return "error";
    }
    return "same";
}

const char* changeKindName(ChangeKind k) {
    switch (k) {
    case ChangeKind::None:
        return "none";
    case ChangeKind::Shape:
        return "shape";
    case ChangeKind::DType:
        return "dtype";
    case ChangeKind::Device:
        return "device";
    case ChangeKind::Values:
        return "values";
    }
    return "none";
}

std::string alignedKey(std::string_view name, std::string_view prefix) {
    if (!prefix.empty() && name.size() > prefix.size() && name.starts_with(prefix))
        return std::string(name.substr(prefix.size()));
    return std::string(name);
}

namespace {

// Matches under a pair of prefixes: keys of A's names, looked up among keys of B's names.
std::string_view keyView(std::string_view name, std::string_view prefix) {
    if (!prefix.empty() && name.size() > prefix.size() && name.starts_with(prefix))
        return name.substr(prefix.size());
    return name;
}

// Matches under a pair of prefixes: keys of A's names, looked up among keys of B's names.
std::size_t countMatches(const std::vector<std::string_view>& a, const std::vector<std::string_view>& b,
                         std::string_view pa, std::string_view pb) {
    std::unordered_set<std::string_view> keysB;
    keysB.reserve(b.size() * 2);
    for (auto n : b)
        keysB.insert(keyView(n, pb));
    std::unordered_set<std::string_view> seen;
    seen.reserve(a.size() * 2);
    std::size_t n = 0;
    for (auto name : a) {
        const std::string_view k = keyView(name, pa);
        if (keysB.count(k) && seen.insert(k).second)
            ++n;
    }
    return n;
}

std::string describePrefix(std::string_view p) {
    std::string_view first = p.substr(0, p.find('.') + 1);
    if (first == "module.")
        return " (as DataParallel / DistributedDataParallel saves)";
    if (first == "_orig_mod.")
        return " (as a torch.compile'd model saves)";
    if (first == "model.")
        return " (a wrapper around the model)";
    if (first == "backbone.")
        return " (the backbone of a larger model)";
    return {};
}

std::string describe(const KeyAlignment& al) {
    std::string d;
    if (al.rule == KeyAlignment::Rule::Identity)
        return "names match as they are";
    const std::string how = al.rule == KeyAlignment::Rule::Manual ? "given" : "found";
    if (!al.prefixA.empty() && !al.prefixB.empty())
        d = "prefix '" + al.prefixA + "' of A's names matched to '" + al.prefixB + "' of B's (" + how + ")";
    else if (!al.prefixA.empty())
        d = "A's names carry the prefix '" + al.prefixA + "'" + describePrefix(al.prefixA) + ", stripped (" +
            how + ")";
    else if (!al.prefixB.empty())
        d = "B's names carry the prefix '" + al.prefixB + "'" + describePrefix(al.prefixB) + ", stripped (" +
            how + ")";
    else
        d = "names match as they are (" + how + ")";
    return d;
}

constexpr int kMaxPrefixSegments = 4; // candidate prefixes: up to this many leading segments
constexpr std::size_t kCandidates = 12;

} // namespace

KeyAlignment alignKeys(const Checkpoint& a, const Checkpoint& b, const DiffOptions& options) {
    std::vector<std::string_view> na, nb;
    na.reserve(a.tensors.size());
    nb.reserve(b.tensors.size());
    for (const auto& t : a.tensors)
        na.push_back(t.name);
    for (const auto& t : b.tensors)
        nb.push_back(t.name);

    KeyAlignment al;
    al.matchedByName = countMatches(na, nb, {}, {});
    if (options.prefixA || options.prefixB) {
        al.rule = KeyAlignment::Rule::Manual;
        al.prefixA = options.prefixA.value_or(std::string());
        al.prefixB = options.prefixB.value_or(std::string());
        al.matched = countMatches(na, nb, al.prefixA, al.prefixB);
        al.description = describe(al);
        return al;
    }

    // Vote: every way of cutting up to kMaxPrefixSegments leading segments off an A name and a B name that
    // leaves the same rest votes for that pair of prefixes. Only rests that one A name alone leaves count
    // ("weight" says nothing), which keeps the vote linear in the number of names; a name cut nowhere is
    // such a rest, so every offset still gets its votes.
    struct Owner {
        std::string_view prefix;
        bool shared = false;
    };
    std::unordered_map<std::string_view, Owner> prefixOfRest;
    prefixOfRest.reserve(na.size() * (kMaxPrefixSegments + 1));
    auto cuts = [](std::string_view name, auto&& fn) {
        fn(std::string_view(), name);
        std::size_t pos = 0;
        for (int s = 0; s < kMaxPrefixSegments; ++s) {
            const std::size_t dot = name.find('.', pos);
            if (dot == std::string_view::npos || dot + 1 >= name.size())
                return;
            fn(name.substr(0, dot + 1), name.substr(dot + 1));
            pos = dot + 1;
        }
    };
    for (auto n : na)
        cuts(n, [&](std::string_view prefix, std::string_view rest) {
            auto [it, inserted] = prefixOfRest.try_emplace(rest, Owner{prefix});
            if (!inserted && it->second.prefix != prefix)
                it->second.shared = true;
        });
    struct PairHash {
        std::size_t operator()(const std::pair<std::string_view, std::string_view>& p) const noexcept {
            const std::hash<std::string_view> h;
            return h(p.first) * 1000003u ^ h(p.second);
        }
    };
    std::unordered_map<std::pair<std::string_view, std::string_view>, std::size_t, PairHash> votes;
    for (auto n : nb)
        cuts(n, [&](std::string_view prefix, std::string_view rest) {
            const auto found = prefixOfRest.find(rest);
            if (found == prefixOfRest.end() || found->second.shared)
                return;
            const std::string_view pa = found->second.prefix;
            if (pa != prefix || pa.empty()) // equal non-empty prefixes change nothing
                ++votes[{pa, prefix}];
        });
    std::vector<std::pair<std::size_t, std::pair<std::string_view, std::string_view>>> ranked;
    for (const auto& [k, v] : votes)
        if (!(k.first.empty() && k.second.empty()))
            ranked.push_back({v, k});
    std::sort(ranked.begin(), ranked.end(), [](const auto& x, const auto& y) {
        if (x.first != y.first)
            return x.first > y.first;
        const std::size_t lx = x.second.first.size() + x.second.second.size();
        const std::size_t ly = y.second.first.size() + y.second.second.size();
        if (lx != ly)
            return lx < ly;
        return x.second < y.second;
    });
    if (ranked.size() > kCandidates)
        ranked.resize(kCandidates);

    al.rule = KeyAlignment::Rule::Identity;
    al.matched = al.matchedByName;
    // A wrapper inserts segments in front of the names (one prefix extends the other: '' and 'module.',
    // 'model.' and 'model._orig_mod.'); any such offset that matches more names is taken. Replacing one
    // prefix by another ('model.' and 'module.') must pair a good part of the checkpoint, or renaming a
    // single module ('decoder.weight' to 'head.weight') would pass for an alignment.
    const std::size_t replaceGain = std::max<std::size_t>(2, std::min(na.size(), nb.size()) / 2);
    const std::size_t all = std::min(na.size(), nb.size());
    for (const auto& [votesFor, k] : ranked) {
        if (al.matched == all)
            break; // nothing can match more; the candidates come by votes, then shorter prefixes first
        const bool insertion = k.first.starts_with(k.second) || k.second.starts_with(k.first);
        const std::size_t m = countMatches(na, nb, k.first, k.second);
        if (!insertion && m < al.matchedByName + replaceGain)
            continue;
        const bool better =
            m > al.matched || (m == al.matched && al.rule == KeyAlignment::Rule::Prefix &&
                               k.first.size() + k.second.size() < al.prefixA.size() + al.prefixB.size());
        if (better) {
            al.rule = KeyAlignment::Rule::Prefix;
            al.prefixA = std::string(k.first);
            al.prefixB = std::string(k.second);
            al.matched = m;
        }
    }
    al.description = describe(al);
    return al;
}

// ---------------------------------------------------------------------------------------------------------
// Figures

double ValueDiff::relL2() const {
    if (sumSqA > 0)
        return std::sqrt(sumSqD) / std::sqrt(sumSqA);
    if (sumSqD == 0)
        return 0.0;
    if (std::isnan(sumSqD) || std::isnan(sumSqA))
        return std::numeric_limits<double>::quiet_NaN();
    return std::numeric_limits<double>::infinity();
}

double ValueDiff::cosine() const {
    if (sumSqA == 0 && sumSqB == 0)
        return 1.0;
    if (sumSqA == 0 || sumSqB == 0)
        return 0.0;
    // One square root of the product: equal sides give exactly 1. Separate roots where the product would
    // overflow or underflow.
    const double p = sumSqA * sumSqB;
    const double c =
        std::isfinite(p) && p > 0 ? dot / std::sqrt(p) : dot / (std::sqrt(sumSqA) * std::sqrt(sumSqB));
    return std::clamp(c, -1.0, 1.0);
}

void ValueDiff::merge(const ValueDiff& o) {
    if (o.count == 0 && !o.identicalBytes)
        return;
    if (count == 0 && !identicalBytes) {
        *this = o;
        return;
    }
    count += o.count;
    changed += o.changed;
    if (std::isnan(o.maxAbs) || o.maxAbs > maxAbs)
        maxAbs = std::isnan(maxAbs) ? maxAbs : o.maxAbs;
    sumAbs += o.sumAbs;
    sumSqD += o.sumSqD;
    sumSqA += o.sumSqA;
    sumSqB += o.sumSqB;
    dot += o.dot;
    identicalBytes = identicalBytes && o.identicalBytes;
}

namespace {

// Neumaier's compensated sum: chunk sums (a few thousand terms each, in double) are added here.
struct CompensatedSum {
    double sum = 0, comp = 0;
    void add(double x) {
        const double t = sum + x;
        if (std::fabs(sum) >= std::fabs(x))
            comp += (sum - t) + x;
        else
            comp += (x - t) + sum;
        sum = t;
    }
    double value() const { return sum + comp; }
};

// Plain data, so that it can live inside the SIGBUS-guarded kernels.
struct Accumulator {
    std::uint64_t count = 0, changed = 0;
    double maxAbs = 0;
    bool nanMax = false;
    CompensatedSum abs, sqD, sqA, sqB, dot;

    ValueDiff finish(bool identicalBytes) const {
        ValueDiff v;
        v.count = count;
        v.changed = changed;
        v.maxAbs = nanMax ? std::numeric_limits<double>::quiet_NaN() : maxAbs;
        v.sumAbs = abs.value();
        v.sumSqD = sqD.value();
        v.sumSqA = sqA.value();
        v.sumSqB = sqB.value();
        v.dot = dot.value();
        v.identicalBytes = identicalBytes;
        return v;
    }
};

template <typename T> inline double asDouble(T v) {
    return static_cast<double>(v);
}

// The careful element loop: equal elements (infinities, NaNs) have difference 0.
template <typename TA, typename TB>
void accumulateCareful(const TA* a, const TB* b, std::size_t n, double threshold, Accumulator& acc) {
    double sAbs = 0, sD = 0, sA = 0, sB = 0, sAB = 0;
    std::uint64_t changed = 0;
    for (std::size_t i = 0; i < n; ++i) {
        const double x = asDouble(a[i]), y = asDouble(b[i]);
        const bool same = x == y || (std::isnan(x) && std::isnan(y));
        const double d = same ? 0.0 : y - x;
        const double ad = std::fabs(d);
        if (std::isnan(ad))
            acc.nanMax = true;
        else if (ad > acc.maxAbs)
            acc.maxAbs = ad;
        changed += !(ad <= threshold);
        sAbs += ad;
        sD += d * d;
        sA += x * x;
        sB += y * y;
        sAB += x * y;
    }
    acc.count += n;
    acc.changed += changed;
    acc.abs.add(sAbs);
    acc.sqD.add(sD);
    acc.sqA.add(sA);
    acc.sqB.add(sB);
    acc.dot.add(sAB);
}

// Sums over one chunk, in independent lanes: one running sum per quantity would make every addition wait
// for the previous one, and the lanes are what the vector units (AVX2 where the processor has it) work on.
// They also make the sums more accurate (each lane adds an eighth of the terms).
struct ChunkSums {
    double abs, sqD, sqA, sqB, dot, max, changed;
};

constexpr int kLanes = 8;

template <typename TA, typename TB>
[[gnu::always_inline]] inline ChunkSums chunkSums(const TA* a, const TB* b, std::size_t n, double threshold) {
    double sAbs[kLanes] = {}, sD[kLanes] = {}, sA[kLanes] = {}, sB[kLanes] = {}, sAB[kLanes] = {};
    double mx[kLanes] = {}, ch[kLanes] = {};
    std::size_t i = 0;
    for (; i + kLanes <= n; i += kLanes)
        for (int j = 0; j < kLanes; ++j) {
            const double x = asDouble(a[i + static_cast<std::size_t>(j)]);
            const double y = asDouble(b[i + static_cast<std::size_t>(j)]);
            const double d = y - x;
            const double ad = std::fabs(d);
            mx[j] = ad > mx[j] ? ad : mx[j];
            ch[j] += ad > threshold ? 1.0 : 0.0;
            sAbs[j] += ad;
            sD[j] += d * d;
            sA[j] += x * x;
            sB[j] += y * y;
            sAB[j] += x * y;
        }
    for (; i < n; ++i) {
        const double x = asDouble(a[i]), y = asDouble(b[i]);
        const double d = y - x;
        const double ad = std::fabs(d);
        mx[0] = ad > mx[0] ? ad : mx[0];
        ch[0] += ad > threshold ? 1.0 : 0.0;
        sAbs[0] += ad;
        sD[0] += d * d;
        sA[0] += x * x;
        sB[0] += y * y;
        sAB[0] += x * y;
    }
    for (int w = kLanes / 2; w > 0; w /= 2) // pairwise over the lanes
        for (int j = 0; j < w; ++j) {
            sAbs[j] += sAbs[j + w];
            sD[j] += sD[j + w];
            sA[j] += sA[j + w];
            sB[j] += sB[j + w];
            sAB[j] += sAB[j + w];
            ch[j] += ch[j + w];
            mx[j] = mx[j + w] > mx[j] ? mx[j + w] : mx[j];
        }
    return {sAbs[0], sD[0], sA[0], sB[0], sAB[0], mx[0], ch[0]};
}

template <typename T> [[gnu::always_inline]] inline double chunkSquares(const T* a, std::size_t n) {
    double s[kLanes] = {};
    std::size_t i = 0;
    for (; i + kLanes <= n; i += kLanes)
        for (int j = 0; j < kLanes; ++j) {
            const double x = asDouble(a[i + static_cast<std::size_t>(j)]);
            s[j] += x * x;
        }
    for (; i < n; ++i) {
        const double x = asDouble(a[i]);
        s[0] += x * x;
    }
    for (int w = kLanes / 2; w > 0; w /= 2)
        for (int j = 0; j < w; ++j)
            s[j] += s[j + w];
    return s[0];
}

// One copy of each kernel per instruction set, picked when the program loads.
#define CKPT_DIFF_KERNELS(T, U, SUFFIX)                                                                      \
    [[gnu::target_clones("avx2", "default")]] ChunkSums chunkSums##SUFFIX(const T* a, const U* b,            \
                                                                          std::size_t n, double threshold) { \
        return chunkSums(a, b, n, threshold);                                                                \
    }
CKPT_DIFF_KERNELS(float, float, F32)
CKPT_DIFF_KERNELS(double, double, F64)
#undef CKPT_DIFF_KERNELS
[[gnu::target_clones("avx2", "default")]] double chunkSquaresF32(const float* a, std::size_t n) {
    return chunkSquares(a, n);
}
[[gnu::target_clones("avx2", "default")]] double chunkSquaresF64(const double* a, std::size_t n) {
    return chunkSquares(a, n);
}

template <typename TA, typename TB>
ChunkSums sumsOf(const TA* a, const TB* b, std::size_t n, double threshold) {
    if constexpr (std::is_same_v<TA, float> && std::is_same_v<TB, float>)
        return chunkSumsF32(a, b, n, threshold);
    else if constexpr (std::is_same_v<TA, double> && std::is_same_v<TB, double>)
        return chunkSumsF64(a, b, n, threshold);
    else
        return chunkSums(a, b, n, threshold);
}

template <typename T> double squaresOf(const T* a, std::size_t n) {
    if constexpr (std::is_same_v<T, float>)
        return chunkSquaresF32(a, n);
    else if constexpr (std::is_same_v<T, double>)
        return chunkSquaresF64(a, n);
    else
        return chunkSquares(a, n);
}

// The fast path for a chunk; a chunk whose sum of |d| is not finite holds a NaN or infinite difference,
// where equal non-finite elements need the careful loop.
template <typename TA, typename TB>
void accumulate(const TA* a, const TB* b, std::size_t n, double threshold, Accumulator& acc) {
    const ChunkSums s = sumsOf(a, b, n, threshold);
    if (!std::isfinite(s.abs)) {
        accumulateCareful(a, b, n, threshold, acc);
        return;
    }
    acc.count += n;
    acc.changed += static_cast<std::uint64_t>(s.changed);
    acc.maxAbs = std::max(acc.maxAbs, s.max);
    acc.abs.add(s.abs);
    acc.sqD.add(s.sqD);
    acc.sqA.add(s.sqA);
    acc.sqB.add(s.sqB);
    acc.dot.add(s.dot);
}

// Both sides hold the same bytes: only the norms need computing.
template <typename T> void accumulateSame(const T* a, std::size_t n, Accumulator& acc) {
    const double s = squaresOf(a, n);
    acc.count += n;
    acc.sqA.add(s);
    acc.sqB.add(s);
    acc.dot.add(s);
}

// ---------------------------------------------------------------------------------------------------------
// Reading ranges of elements from a tensor by logical index, for lockstep reading of two tensors.

struct GuardedConvert {
    const TensorReader* reader;
    const std::uint8_t* src;
    std::int64_t strideBytes;
    std::size_t n;
    std::uint64_t first;
    double* out;
};

void runGuardedConvert(void* ctx) {
    auto* j = static_cast<GuardedConvert*>(ctx);
    j->reader->convertJob(j->src, j->strideBytes, j->n, j->first, j->out);
}

class RangeReader {
public:
    RangeReader(const CheckpointPtr& ck, const TensorInfo& t)
        : m_reader(ck, t) {
        const StorageInfo& s = ck->storages[static_cast<std::size_t>(t.storage)];
        m_file = ck->sources.at(static_cast<std::size_t>(s.source)).file.get();
        m_base = s.fileOffset;
        m_block = isBlockDType(t.dtype);
        m_elsize = m_block ? 0 : dtypeSize(t.dtype);
        m_swap = s.bigEndian && dtypeSize(t.dtype) > 1;
        if (m_block) {
            const auto blk = static_cast<std::int64_t>(dtypeBlockSize(t.dtype));
            m_base += static_cast<std::uint64_t>(t.storageOffset / blk) * dtypeBlockBytes(t.dtype);
            m_contiguous = true;
            return;
        }
        // Coalesce dimensions as TensorReader does: contiguous tensors become one run.
        for (std::size_t i = 0; i < t.shape.size(); ++i) {
            if (t.shape[i] == 1)
                continue;
            if (!m_shape.empty() && m_strides.back() == t.shape[i] * t.strides[i]) {
                m_shape.back() *= t.shape[i];
                m_strides.back() = t.strides[i];
            } else {
                m_shape.push_back(t.shape[i]);
                m_strides.push_back(t.strides[i]);
            }
        }
        if (m_shape.empty()) {
            m_shape.push_back(1);
            m_strides.push_back(1);
        }
        m_contiguous = m_shape.size() == 1 && m_strides.back() == 1;
        m_base += static_cast<std::uint64_t>(t.storageOffset) * m_elsize;
    }

    const TensorReader& reader() const { return m_reader; }
    const MappedFile& file() const { return *m_file; }
    std::uint64_t numel() const { return m_reader.numel(); }
    bool contiguous() const { return m_contiguous; }
    bool block() const { return m_block; }
    bool swapped() const { return m_swap; }
    // Contiguous, non-block tensors: the bytes of elements [first, first + n).
    const std::uint8_t* raw(std::uint64_t first) const { return m_file->data() + m_base + first * m_elsize; }
    std::uint64_t rawOffset(std::uint64_t first) const { return m_base + first * m_elsize; }
    std::size_t elementSize() const { return m_elsize; }

    // Converts elements [first, first + n) to double. Throws Error(Changed) when the file was truncated.
    void read(std::uint64_t first, std::size_t n, double* out) const {
        if (m_block) {
            const DType dt = m_reader.tensor().dtype;
            const std::uint64_t blk = dtypeBlockSize(dt);
            // Callers ask for whole blocks (chunks are multiples of every block size).
            convert(m_file->data() + m_base + first / blk * dtypeBlockBytes(dt), 0, n, first, out);
            return;
        }
        if (m_contiguous) {
            convert(raw(first), static_cast<std::int64_t>(m_elsize), n, first, out);
            return;
        }
        const std::size_t nd = m_shape.size();
        const auto inner = static_cast<std::uint64_t>(m_shape.back());
        while (n > 0) {
            // Element offset of `first` from its coordinates.
            std::uint64_t rest = first / inner;
            const std::uint64_t col = first % inner;
            std::int64_t el = static_cast<std::int64_t>(col) * m_strides.back();
            for (std::size_t d = nd - 1; d-- > 0;) {
                const auto size = static_cast<std::uint64_t>(m_shape[d]);
                el += static_cast<std::int64_t>(rest % size) * m_strides[d];
                rest /= size;
            }
            const std::size_t run = static_cast<std::size_t>(std::min<std::uint64_t>(n, inner - col));
            convert(m_file->data() + m_base + static_cast<std::uint64_t>(el) * m_elsize,
                    m_strides.back() * static_cast<std::int64_t>(m_elsize), run, first, out);
            first += run;
            out += run;
            n -= run;
        }
    }

private:
    void convert(const std::uint8_t* src, std::int64_t stride, std::size_t n, std::uint64_t first,
                 double* out) const {
        GuardedConvert job{&m_reader, src, stride, n, first, out};
        if (!MappedFile::runGuarded(runGuardedConvert, &job))
            throw Error(ErrorCode::Changed,
                        "the file was truncated on disk while its data was being read; reload it",
                        m_file->path(), {}, m_reader.tensor().name);
    }

    TensorReader m_reader;
    const MappedFile* m_file = nullptr;
    std::uint64_t m_base = 0; // file offset of element 0 (block types: of its block)
    std::size_t m_elsize = 0;
    bool m_block = false;
    bool m_contiguous = false;
    bool m_swap = false;
    std::vector<std::int64_t> m_shape, m_strides;
};

constexpr std::size_t kChunk = 4096;              // elements per kernel call (a multiple of every block size)
constexpr std::uint64_t kReleaseBytes = 4u << 20; // hand pages back every this many bytes read per side
constexpr std::uint64_t kItemElements = 4u << 20; // elements per unit of work handed to a thread

// Whether the two tensors' bytes can be compared as they are: the same element encoding and layout.
bool rawComparable(const RangeReader& a, const RangeReader& b) {
    const TensorInfo& ta = a.reader().tensor();
    const TensorInfo& tb = b.reader().tensor();
    return ta.dtype == tb.dtype && !a.block() && a.contiguous() && b.contiguous() &&
           a.swapped() == b.swapped() && ta.quant.scheme == QuantInfo::Scheme::None &&
           tb.quant.scheme == QuantInfo::Scheme::None;
}

// A guarded kernel over raw bytes of both sides (same dtype, contiguous).
struct RawJob {
    const std::uint8_t* a;
    const std::uint8_t* b;
    std::size_t n;
    double threshold;
    DType dtype;
    Accumulator* acc;
    bool* allSame;
    bool typed; // out: false when the dtype has no typed kernel and the bytes differ
};

template <typename T> void rawKernel(RawJob& j) {
    // Data at an offset that is no multiple of the element size (HDF5 places contiguous datasets anywhere)
    // is copied into aligned buffers a chunk at a time: typed loads from it would be undefined behaviour.
    const bool aligned = reinterpret_cast<std::uintptr_t>(j.a) % alignof(T) == 0 &&
                         reinterpret_cast<std::uintptr_t>(j.b) % alignof(T) == 0;
    T bufA[kChunk], bufB[kChunk];
    for (std::size_t off = 0; off < j.n; off += kChunk) {
        const std::size_t n = std::min(kChunk, j.n - off);
        const std::uint8_t* pa = j.a + off * sizeof(T);
        const std::uint8_t* pb = j.b + off * sizeof(T);
        const T* a = reinterpret_cast<const T*>(pa);
        const T* b = reinterpret_cast<const T*>(pb);
        if (!aligned) {
            std::memcpy(bufA, pa, n * sizeof(T));
            std::memcpy(bufB, pb, n * sizeof(T));
            a = bufA;
            b = bufB;
        }
        if (std::memcmp(a, b, n * sizeof(T)) == 0) {
            accumulateSame(a, n, *j.acc);
        } else {
            *j.allSame = false;
            accumulate(a, b, n, j.threshold, *j.acc);
        }
    }
    j.typed = true;
}

void runRawJob(void* ctx) {
    auto& j = *static_cast<RawJob*>(ctx);
    switch (j.dtype) {
    case DType::Float32:
        rawKernel<float>(j);
        return;
    case DType::Float64:
        rawKernel<double>(j);
        return;
    case DType::Int64:
        rawKernel<std::int64_t>(j);
        return;
    case DType::Int32:
        rawKernel<std::int32_t>(j);
        return;
    case DType::Int16:
        rawKernel<std::int16_t>(j);
        return;
    case DType::Int8:
        rawKernel<std::int8_t>(j);
        return;
    case DType::UInt8:
        rawKernel<std::uint8_t>(j);
        return;
    default:
        // Other encodings: only say whether the bytes are equal; the caller converts when they are not.
        j.typed = false;
        *j.allSame = std::memcmp(j.a, j.b, j.n * dtypeSize(j.dtype)) == 0;
        return;
    }
}

// Compares elements [first, first + n) of a pair into acc. Returns false when cancelled.
bool compareRange(const RangeReader& ra, const RangeReader& rb, std::uint64_t first, std::uint64_t n,
                  double threshold, Accumulator& acc, bool& allSame,
                  const std::function<bool(std::uint64_t)>& tick) {
    const bool raw = rawComparable(ra, rb);
    const bool typedRaw = raw && !ra.swapped();
    std::vector<double> bufA, bufB;
    const std::uint64_t end = first + n;
    std::uint64_t releasedA = first, releasedB = first;
    const std::size_t esA = ra.block() ? 0 : ra.elementSize();
    const std::size_t esB = rb.block() ? 0 : rb.elementSize();
    // Elements per step: enough that a step reads a few MiB, so pages can be handed back between steps.
    const std::uint64_t step = std::max<std::uint64_t>(
        kChunk, kReleaseBytes / std::max<std::size_t>(1, std::max(esA, esB)) / kChunk * kChunk);
    for (std::uint64_t at = first; at < end;) {
        const std::uint64_t m = std::min(step, end - at);
        bool done = false;
        if (typedRaw) {
            bool same = true;
            RawJob job{ra.raw(at),
                       rb.raw(at),
                       static_cast<std::size_t>(m),
                       threshold,
                       ra.reader().tensor().dtype,
                       &acc,
                       &same,
                       false};
            if (!MappedFile::runGuarded(runRawJob, &job))
                throw Error(ErrorCode::Changed,
                            "the file was truncated on disk while its data was being read; reload it",
                            ra.file().changedOnDisk() ? ra.file().path() : rb.file().path(), {},
                            rb.reader().tensor().name);
            if (job.typed) {
                allSame = allSame && same;
                done = true;
            } else if (!same) {
                allSame = false;
            } else {
                // Equal bytes of a dtype without a typed kernel: norms from the converted values.
                bufA.resize(kChunk);
                for (std::uint64_t o = 0; o < m; o += kChunk) {
                    const std::size_t k = static_cast<std::size_t>(std::min<std::uint64_t>(kChunk, m - o));
                    ra.read(at + o, k, bufA.data());
                    accumulateSame(bufA.data(), k, acc);
                }
                done = true;
            }
        }
        if (!done) {
            bufA.resize(kChunk);
            bufB.resize(kChunk);
            for (std::uint64_t o = 0; o < m; o += kChunk) {
                const std::size_t k = static_cast<std::size_t>(std::min<std::uint64_t>(kChunk, m - o));
                ra.read(at + o, k, bufA.data());
                rb.read(at + o, k, bufB.data());
                if (std::memcmp(bufA.data(), bufB.data(), k * sizeof(double)) != 0)
                    allSame = false;
                accumulate(bufA.data(), bufB.data(), k, threshold, acc);
            }
            if (!raw)
                allSame = false; // converted values may agree, but the bytes are not the same
        }
        at += m;
        if (ra.contiguous() && !ra.block()) {
            ra.file().release(ra.rawOffset(releasedA), (at - releasedA) * esA);
            releasedA = at;
        }
        if (rb.contiguous() && !rb.block()) {
            rb.file().release(rb.rawOffset(releasedB), (at - releasedB) * esB);
            releasedB = at;
        }
        if (tick && !tick(m))
            return false;
    }
    // Values read while a job wrote over either file are no values of it (TensorReader's check after the
    // last value).
    ra.reader().ensureUnchanged();
    rb.reader().ensureUnchanged();
    return true;
}

std::string deviceOf(const TensorInfo& t) {
    return t.device.empty() ? std::string("cpu") : t.device;
}

// Structure of a pair: fills the flags, kind and status as far as structure decides them.
void compareStructure(const TensorInfo& ta, const TensorInfo& tb, TensorDiff& d) {
    d.shapeChanged = ta.shape != tb.shape;
    d.dtypeChanged = ta.dtype != tb.dtype;
    d.deviceChanged = deviceOf(ta) != deviceOf(tb);
    if (d.shapeChanged)
        d.kind = ChangeKind::Shape;
    else if (d.dtypeChanged)
        d.kind = ChangeKind::DType;
    else if (d.deviceChanged)
        d.kind = ChangeKind::Device;
    d.status = d.kind == ChangeKind::None ? DiffStatus::Same : DiffStatus::Changed;
}

// After the values are known.
void settle(TensorDiff& d, double threshold) {
    if (!d.error.empty()) {
        d.status = DiffStatus::Error;
        return;
    }
    if (!d.values)
        return;
    const double mx = d.values->maxAbs;
    const bool valuesChanged = !(mx <= threshold);
    if (valuesChanged && d.kind == ChangeKind::None)
        d.kind = ChangeKind::Values;
    d.status = d.kind == ChangeKind::None ? DiffStatus::Same : DiffStatus::Changed;
}

// The whole message, naming the file (of the side that failed), the place and the tensor.
std::string errorText(const std::exception& e, const std::string& file, const std::string& tensor) {
    if (const auto* ce = dynamic_cast<const Error*>(&e))
        return Error(ce->code(), ce->message(), ce->file().empty() ? file : ce->file(), ce->offset(),
                     ce->object().empty() ? tensor : ce->object())
            .what();
    return Error(ErrorCode::Io, e.what(), file, {}, tensor).what();
}

// Value equality for non-tensor leaves: same kind and contents, a bounded walk.
bool sameValue(const Value* x, const Value* y, int depth, std::size_t& budget) {
    if (x == y)
        return true;
    if (!x || !y || depth > 32 || budget == 0)
        return false;
    --budget;
    if (x->kind != y->kind)
        return false;
    switch (x->kind) {
    case ValueKind::None:
        return true;
    case ValueKind::Bool:
        return x->boolean == y->boolean;
    case ValueKind::Int:
    case ValueKind::Tensor:
    case ValueKind::Storage:
        return x->integer == y->integer;
    case ValueKind::Float:
        return x->real == y->real || (std::isnan(x->real) && std::isnan(y->real));
    case ValueKind::Complex:
        return x->real == y->real && x->integer == y->integer;
    case ValueKind::BigInt:
    case ValueKind::String:
    case ValueKind::Bytes:
    case ValueKind::Global:
        return x->text == y->text;
    default:
        break;
    }
    if (x->text != y->text || x->items.size() != y->items.size())
        return false;
    for (std::size_t i = 0; i < x->items.size(); ++i)
        if (!sameValue(x->items[i], y->items[i], depth + 1, budget))
            return false;
    if ((x->state == nullptr) != (y->state == nullptr))
        return false;
    return !x->state || sameValue(x->state, y->state, depth + 1, budget);
}

} // namespace

// ---------------------------------------------------------------------------------------------------------

std::size_t DiffResult::count(DiffStatus s) const {
    return static_cast<std::size_t>(
        std::count_if(tensors.begin(), tensors.end(), [s](const TensorDiff& t) { return t.status == s; }));
}

bool DiffResult::differs() const {
    if (!values.empty())
        return true;
    return std::any_of(tensors.begin(), tensors.end(),
                       [](const TensorDiff& t) { return t.status != DiffStatus::Same; });
}

std::vector<ModuleDiff> aggregateModules(const std::vector<TensorDiff>& tensors) {
    std::vector<ModuleDiff> mods;
    std::unordered_map<std::string, int> index;
    mods.push_back(ModuleDiff{});
    index[""] = 0;
    for (const auto& t : tensors) {
        // Every dotted prefix of the name is a module; the full name is the tensor itself.
        std::vector<int> chain{0};
        std::size_t pos = 0;
        for (;;) {
            const std::size_t dot = t.name.find('.', pos);
            if (dot == std::string::npos)
                break;
            std::string name = t.name.substr(0, dot);
            auto [it, inserted] = index.try_emplace(name, static_cast<int>(mods.size()));
            if (inserted) {
                ModuleDiff m;
                m.name = std::move(name);
                m.depth = static_cast<int>(chain.size());
                m.parent = chain.back();
                mods.push_back(std::move(m));
            }
            chain.push_back(it->second);
            pos = dot + 1;
        }
        for (int i : chain) {
            ModuleDiff& m = mods[static_cast<std::size_t>(i)];
            ++m.tensors;
            if (t.status == DiffStatus::Changed)
                ++m.changedTensors;
            else if (t.status == DiffStatus::Added)
                ++m.added;
            else if (t.status == DiffStatus::Removed)
                ++m.removed;
            if (t.values)
                m.values.merge(*t.values);
        }
    }
    return mods;
}

namespace {

struct PairWork {
    TensorDiff diff;
    std::uint64_t numel = 0;
    std::vector<ValueDiff> parts; // one per work item
    std::vector<bool> partSame;
    std::atomic<int> remaining{0};
    std::mutex errorMutex;
    std::string error;
};

struct Item {
    std::size_t pair;
    std::size_t part;
    std::uint64_t first, n;
};

} // namespace

std::optional<DiffResult> diffCheckpoints(const CheckpointPtr& a, const CheckpointPtr& b,
                                          const DiffOptions& options, const ProgressFn& progress,
                                          const TensorDiffFn& onTensor) {
    if (!a || !b)
        throw Error(ErrorCode::NotFound, "diff needs two opened checkpoints");
    DiffResult res;
    res.fileA = a->sources.empty() ? std::string() : a->sources.front().path;
    res.fileB = b->sources.empty() ? std::string() : b->sources.front().path;
    res.threshold = options.threshold;
    res.alignment = alignKeys(*a, *b, options);
    const std::string& pa = res.alignment.prefixA;
    const std::string& pb = res.alignment.prefixB;

    std::mutex emitMutex;
    auto emit = [&](const TensorDiff& d) {
        if (!onTensor)
            return;
        std::lock_guard lock(emitMutex);
        onTensor(d);
    };

    // Pair the names: each key of A taken once, by the first B name with that key.
    std::unordered_map<std::string, int> keyToA;
    keyToA.reserve(a->tensors.size() * 2);
    for (std::size_t i = 0; i < a->tensors.size(); ++i)
        keyToA.try_emplace(alignedKey(a->tensors[i].name, pa), static_cast<int>(i));
    std::vector<bool> usedA(a->tensors.size(), false);
    std::vector<std::unique_ptr<PairWork>> pairs;
    std::vector<TensorDiff> unpaired; // added, then removed
    for (std::size_t j = 0; j < b->tensors.size(); ++j) {
        const TensorInfo& tb = b->tensors[j];
        std::string key = alignedKey(tb.name, pb);
        const auto found = keyToA.find(key);
        if (found == keyToA.end() || usedA[static_cast<std::size_t>(found->second)]) {
            TensorDiff d;
            d.name = tb.name;
            d.key = std::move(key);
            d.b = static_cast<int>(j);
            d.status = DiffStatus::Added;
            res.tensors.push_back(std::move(d));
            continue;
        }
        usedA[static_cast<std::size_t>(found->second)] = true;
        auto w = std::make_unique<PairWork>();
        w->diff.name = tb.name;
        w->diff.key = std::move(key);
        w->diff.a = found->second;
        w->diff.b = static_cast<int>(j);
        res.tensors.push_back(w->diff); // placeholder, filled in at the end
        pairs.push_back(std::move(w));
    }
    for (std::size_t i = 0; i < a->tensors.size(); ++i) {
        if (usedA[i])
            continue;
        TensorDiff d;
        d.name = a->tensors[i].name;
        d.key = alignedKey(d.name, pa);
        d.a = static_cast<int>(i);
        d.status = DiffStatus::Removed;
        res.tensors.push_back(std::move(d));
    }
    for (const auto& d : res.tensors)
        if (d.status == DiffStatus::Added || d.status == DiffStatus::Removed)
            emit(d);

    // Structure of every pair; readers and work items for the value comparison.
    std::vector<Item> items;
    std::uint64_t totalBytes = 0;
    for (std::size_t p = 0; p < pairs.size(); ++p) {
        PairWork& w = *pairs[p];
        const TensorInfo& ta = a->tensors[static_cast<std::size_t>(w.diff.a)];
        const TensorInfo& tb = b->tensors[static_cast<std::size_t>(w.diff.b)];
        compareStructure(ta, tb, w.diff);
        if (!options.compareValues || w.diff.shapeChanged) {
            emit(w.diff);
            continue;
        }
        // Readers are made again by the thread that compares (they hold a copy of the tensor's description):
        // made here only to find the tensors that cannot be read before any work starts.
        try {
            const RangeReader check(a, ta);
            w.numel = check.numel();
        } catch (const std::exception& e) {
            w.diff.error = errorText(e, res.fileA, ta.name);
        }
        try {
            if (w.diff.error.empty())
                const RangeReader check(b, tb);
        } catch (const std::exception& e) {
            w.diff.error = errorText(e, res.fileB, tb.name);
        }
        if (!w.diff.error.empty()) {
            settle(w.diff, options.threshold);
            emit(w.diff);
            continue;
        }
        const std::uint64_t n = w.numel;
        const std::size_t parts =
            static_cast<std::size_t>(std::max<std::uint64_t>(1, (n + kItemElements - 1) / kItemElements));
        w.parts.assign(parts, ValueDiff{});
        w.partSame.assign(parts, true);
        w.remaining = static_cast<int>(parts);
        for (std::size_t k = 0; k < parts; ++k) {
            const std::uint64_t first = k * kItemElements;
            items.push_back({p, k, first, std::min<std::uint64_t>(kItemElements, n - first)});
        }
        totalBytes += ta.nbytes() + tb.nbytes();
    }

    std::atomic<std::size_t> next{0};
    std::atomic<bool> cancelled{false};
    std::atomic<std::uint64_t> doneBytes{0};
    std::mutex progressMutex;
    std::uint64_t lastReported = 0;
    auto report = [&](std::uint64_t bytes) {
        const std::uint64_t now = doneBytes.fetch_add(bytes) + bytes;
        if (!progress)
            return !cancelled.load();
        std::unique_lock lock(progressMutex, std::try_to_lock);
        if (!lock.owns_lock())
            return !cancelled.load();
        if (now - lastReported >= (16u << 20) || now == totalBytes) {
            lastReported = now;
            if (!progress(now, totalBytes))
                cancelled = true;
        }
        return !cancelled.load();
    };
    if (progress && !progress(0, totalBytes))
        return std::nullopt;

    auto finishPair = [&](PairWork& w) {
        if (w.error.empty()) {
            ValueDiff v;
            bool same = true;
            for (std::size_t k = 0; k < w.parts.size(); ++k) {
                v.merge(w.parts[k]);
                same = same && w.partSame[k];
            }
            v.identicalBytes = same;
            w.diff.values = v;
        } else {
            w.diff.error = w.error;
        }
        settle(w.diff, options.threshold);
        emit(w.diff);
    };

    auto worker = [&] {
        for (;;) {
            if (cancelled.load())
                return;
            const std::size_t i = next.fetch_add(1);
            if (i >= items.size())
                return;
            const Item& it = items[i];
            PairWork& w = *pairs[it.pair];
            bool hasError;
            {
                std::lock_guard lock(w.errorMutex);
                hasError = !w.error.empty();
            }
            if (!hasError) {
                const TensorInfo& ta = a->tensors[static_cast<std::size_t>(w.diff.a)];
                const TensorInfo& tb = b->tensors[static_cast<std::size_t>(w.diff.b)];
                const std::uint64_t bytesPerEl =
                    (ta.nbytes() + tb.nbytes()) / std::max<std::uint64_t>(1, w.numel);
                Accumulator acc;
                bool same = true;
                try {
                    const RangeReader ra(a, ta), rb(b, tb);
                    const bool ok = compareRange(ra, rb, it.first, it.n, options.threshold, acc, same,
                                                 [&](std::uint64_t m) { return report(m * bytesPerEl); });
                    if (!ok)
                        return;
                    w.parts[it.part] = acc.finish(same);
                    w.partSame[it.part] = same;
                } catch (const std::exception& e) {
                    std::lock_guard lock(w.errorMutex);
                    if (w.error.empty())
                        w.error = errorText(e, res.fileB, w.diff.name);
                }
            }
            if (w.remaining.fetch_sub(1) == 1)
                finishPair(w);
        }
    };

    int threads =
        options.threads > 0 ? options.threads : static_cast<int>(std::thread::hardware_concurrency());
    threads = std::clamp<int>(threads, 1, 64);
    threads = static_cast<int>(
        std::min<std::size_t>(static_cast<std::size_t>(threads), std::max<std::size_t>(1, items.size())));
    {
        std::vector<std::jthread> pool;
        for (int t = 1; t < threads; ++t)
            pool.emplace_back(worker);
        worker();
    }
    if (cancelled.load())
        return std::nullopt;
    if (progress && !progress(totalBytes, totalBytes))
        return std::nullopt;

    // Results in place of the placeholders.
    std::size_t p = 0;
    for (auto& d : res.tensors)
        if (d.a >= 0 && d.b >= 0)
            d = std::move(pairs[p++]->diff);

    // Non-tensor values, by aligned key.
    std::unordered_map<std::string, const NamedValue*> valuesA;
    for (const auto& nv : a->values)
        valuesA.try_emplace(alignedKey(nv.name, pa), &nv);
    std::unordered_set<std::string> seenA;
    for (const auto& nv : b->values) {
        std::string key = alignedKey(nv.name, pb);
        const auto found = valuesA.find(key);
        if (found == valuesA.end() || seenA.count(key)) {
            res.values.push_back({nv.name, std::nullopt, valueRepr(nv.value), nullptr, nv.value});
            continue;
        }
        seenA.insert(key);
        std::size_t budget = 100000;
        if (!sameValue(found->second->value, nv.value, 0, budget))
            res.values.push_back({nv.name, valueRepr(found->second->value), valueRepr(nv.value),
                                  found->second->value, nv.value});
    }
    for (const auto& nv : a->values) {
        const std::string key = alignedKey(nv.name, pa);
        if (!seenA.count(key) && valuesA[key] == &nv)
            res.values.push_back({nv.name, valueRepr(nv.value), std::nullopt, nv.value, nullptr});
    }

    res.modules = aggregateModules(res.tensors);
    return res;
}

std::optional<TensorDiff> diffTensors(const CheckpointPtr& a, const TensorInfo& ta, const CheckpointPtr& b,
                                      const TensorInfo& tb, double threshold, const ProgressFn& progress) {
    TensorDiff d;
    d.name = tb.name;
    d.key = tb.name;
    compareStructure(ta, tb, d);
    if (ta.numel() != tb.numel())
        return d;
    std::unique_ptr<RangeReader> pa, pb;
    try {
        pa = std::make_unique<RangeReader>(a, ta);
    } catch (const std::exception& e) {
        d.error = errorText(e, a->sources.empty() ? std::string() : a->sources.front().path, ta.name);
    }
    try {
        if (d.error.empty())
            pb = std::make_unique<RangeReader>(b, tb);
    } catch (const std::exception& e) {
        d.error = errorText(e, b->sources.empty() ? std::string() : b->sources.front().path, tb.name);
    }
    if (!d.error.empty()) {
        settle(d, threshold);
        return d;
    }
    try {
        const RangeReader& ra = *pa;
        const RangeReader& rb = *pb;
        const std::uint64_t total = ta.nbytes() + tb.nbytes();
        const std::uint64_t bytesPerEl = total / std::max<std::uint64_t>(1, ra.numel());
        std::uint64_t done = 0;
        Accumulator acc;
        bool same = true;
        if (progress && !progress(0, total))
            return std::nullopt;
        const bool ok = compareRange(ra, rb, 0, ra.numel(), threshold, acc, same, [&](std::uint64_t m) {
            done += m * bytesPerEl;
            return !progress || progress(std::min(done, total), total);
        });
        if (!ok)
            return std::nullopt;
        d.values = acc.finish(same);
    } catch (const std::exception& e) {
        d.error = errorText(e, {}, tb.name);
    }
    settle(d, threshold);
    return d;
}

std::optional<DiffHistograms> diffHistograms(const CheckpointPtr& a, const TensorInfo& ta,
                                             const CheckpointPtr& b, const TensorInfo& tb, int bins,
                                             const ProgressFn& progress) {
    bins = std::clamp(bins, 1, 1 << 20);
    const RangeReader ra(a, ta), rb(b, tb);
    const bool paired = ra.numel() == rb.numel();
    const std::uint64_t total = 2 * (ta.nbytes() + tb.nbytes());
    std::uint64_t done = 0;
    std::vector<double> bufA(kChunk), bufB(kChunk), bufD(kChunk);
    const double inf = std::numeric_limits<double>::infinity();
    double lo = inf, hi = -inf, dlo = inf, dhi = -inf;
    auto extremes = [](const double* v, std::size_t n, double& mn, double& mx) {
        for (std::size_t i = 0; i < n; ++i)
            if (std::isfinite(v[i])) {
                mn = std::min(mn, v[i]);
                mx = std::max(mx, v[i]);
            }
    };
    auto deltas = [&](std::size_t n) {
        for (std::size_t i = 0; i < n; ++i) {
            const double x = bufA[i], y = bufB[i];
            bufD[i] = (x == y || (std::isnan(x) && std::isnan(y))) ? 0.0 : y - x;
        }
    };
    // Pass over both tensors; for a pair of equal counts in lockstep so that differences can be formed.
    auto pass = [&](auto&& onChunk) {
        const std::uint64_t n = std::max(ra.numel(), rb.numel());
        for (std::uint64_t at = 0; at < n; at += kChunk) {
            const std::size_t ka =
                at < ra.numel() ? static_cast<std::size_t>(std::min<std::uint64_t>(kChunk, ra.numel() - at))
                                : 0;
            const std::size_t kb =
                at < rb.numel() ? static_cast<std::size_t>(std::min<std::uint64_t>(kChunk, rb.numel() - at))
                                : 0;
            if (ka)
                ra.read(at, ka, bufA.data());
            if (kb)
                rb.read(at, kb, bufB.data());
            if (paired)
                deltas(ka);
            onChunk(ka, kb);
            done += ka * (ta.nbytes() / std::max<std::uint64_t>(1, ra.numel())) +
                    kb * (tb.nbytes() / std::max<std::uint64_t>(1, rb.numel()));
            if ((at / kChunk) % 256 == 255 || at + kChunk >= n) {
                // hand the pages read back, as the comparison does, so that memory stays bounded
                for (const RangeReader* r : {&ra, &rb})
                    if (r->contiguous() && !r->block()) {
                        const std::uint64_t from = (at / kChunk / 256) * 256 * kChunk;
                        const std::uint64_t to = std::min(r->numel(), at + kChunk);
                        if (to > from)
                            r->file().release(r->rawOffset(from), (to - from) * r->elementSize());
                    }
                if (progress && !progress(std::min(done, total), total))
                    return false;
            }
        }
        return true;
    };
    if (!pass([&](std::size_t ka, std::size_t kb) {
            extremes(bufA.data(), ka, lo, hi);
            extremes(bufB.data(), kb, lo, hi);
            if (paired)
                extremes(bufD.data(), ka, dlo, dhi);
        }))
        return std::nullopt;
    if (lo > hi)
        lo = hi = 0;
    if (dlo > dhi)
        dlo = dhi = 0;
    HistogramAccumulator ha(lo, hi, bins), hb(lo, hi, bins), hd(dlo, dhi, bins);
    if (!pass([&](std::size_t ka, std::size_t kb) {
            ha.add(std::span<const double>(bufA.data(), ka));
            hb.add(std::span<const double>(bufB.data(), kb));
            if (paired)
                hd.add(std::span<const double>(bufD.data(), ka));
        }))
        return std::nullopt;
    if (progress && !progress(total, total))
        return std::nullopt;
    DiffHistograms h;
    h.a = ha.histogram();
    h.b = hb.histogram();
    if (paired)
        h.delta = hd.histogram();
    h.lo = lo;
    h.hi = hi;
    h.deltaLo = dlo;
    h.deltaHi = dhi;
    return h;
}

} // namespace ckpt
