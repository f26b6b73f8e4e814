// Comparison of two opened checkpoints of any formats: which tensors and values exist on one side only,
// which changed shape, dtype or device, and how far the values of the others moved.
//
// The computation streams over the mapped tensor bytes in bounded chunks (memory does not grow with the
// checkpoint size), runs on several threads, reports progress and can be cancelled. Results come as one
// TensorDiff per tensor name, handed to a callback as each tensor finishes (for a GUI that fills its view
// incrementally) and collected in a DiffResult at the end.
//
// Names. The two sides are aligned first: checkpoints of the same model often differ by a prefix on every
// name (`module.` from DataParallel, `_orig_mod.` from torch.compile, `model.` from a training wrapper,
// `backbone.` when a backbone was saved alone). alignKeys() finds the pair of prefixes (one per side) that
// maximises the number of matched names, or takes the caller's. A name that starts with its side's prefix
// is matched by what follows the prefix; a name that does not is matched as it is.
//
// Figures for a tensor present on both sides with the same number of elements (A and B converted to double,
// complex values by their magnitude as TensorReader converts them, the differences d = B - A taken element
// by element in row-major order):
//   max_abs           max |d|
//   mean_abs          sum |d| / n
//   rel_l2            ||d|| / ||A||   (0 when both are 0, +inf when only ||A|| is 0)
//   cosine            <A, B> / (||A|| ||B||)   (1 when both norms are 0, 0 when one is)
//   changed_fraction  share of elements with |d| > threshold
// Elements equal on both sides (including two infinities of the same sign, and two NaNs) have d = 0. A NaN
// or infinite difference makes max_abs and the sums NaN / inf, as it would in PyTorch. Sums are accumulated
// in double with compensation, so they agree with PyTorch's float64 figures to ~1e-12 relative.
// A tensor counts as unchanged when max_abs <= threshold (so with the default threshold 0, when every
// element is equal).
#pragma once

#include "analysis/elements.h"
#include "analysis/stats.h"
#include "model/checkpoint.h"

#include <cmath>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace ckpt {

struct DiffOptions {
    // A tensor whose max |B - A| is at or below this counts as unchanged, and an element whose |B - A| is
    // above it counts as changed in changed_fraction.
    double threshold = 0.0;
    // Override the automatic name alignment: the prefix stripped from A's names and from B's names. Setting
    // either makes the alignment manual (an unset one is then taken as empty).
    std::optional<std::string> prefixA;
    std::optional<std::string> prefixB;
    // Compare values; false stops at structure (names, shapes, dtypes, devices) and non-tensor values.
    bool compareValues = true;
    // Worker threads for value comparison; 0 uses every core.
    int threads = 0;
};

struct KeyAlignment {
    enum class Rule : std::uint8_t {
        Identity, // names match as they are
        Prefix,   // a prefix was found on one side or both (see prefixA / prefixB)
        Manual,   // the caller's prefixes
    };
    Rule rule = Rule::Identity;
    std::string prefixA;           // stripped from A's names that start with it
    std::string prefixB;           // stripped from B's names that start with it
    std::size_t matched = 0;       // tensor names matched under this rule
    std::size_t matchedByName = 0; // tensor names matched as they are (no prefixes), for comparison
    std::string description;       // one line for users: "B's names carry the prefix 'module.' (...)"
};
const char* alignmentRuleName(KeyAlignment::Rule rule); // "identity", "prefix", "manual"

// Finds the alignment (or applies options.prefixA / prefixB). Cheap: names only.
KeyAlignment alignKeys(const Checkpoint& a, const Checkpoint& b, const DiffOptions& options = {});

// A name under an alignment: `name` with the side's prefix stripped when it starts with it.
std::string alignedKey(std::string_view name, std::string_view prefix);

// Value figures of one tensor pair (or of several, merged). Keeps the raw sums so that figures of modules
// can be computed exactly from their tensors'.
struct ValueDiff {
    std::uint64_t count = 0;   // elements compared
    std::uint64_t changed = 0; // elements with |d| > threshold
    double maxAbs = 0;
    double sumAbs = 0;           // sum |d|
    double sumSqD = 0;           // sum d^2
    double sumSqA = 0;           // sum a^2
    double sumSqB = 0;           // sum b^2
    double dot = 0;              // sum a*b
    bool identicalBytes = false; // every byte equal (same dtype and layout); the figures are then exact zeros

    double meanAbs() const { return count ? sumAbs / static_cast<double>(count) : 0.0; }
    double relL2() const;
    double cosine() const;
    double changedFraction() const {
        return count ? static_cast<double>(changed) / static_cast<double>(count) : 0.0;
    }
    // Adds another pair's (or another range's) figures: sums add, maxima combine.
    void merge(const ValueDiff& other);
};

enum class DiffStatus : std::uint8_t {
    Same,    // on both sides, nothing differs beyond the threshold
    Changed, // on both sides, something differs (see TensorDiff::kind)
    Added,   // only in B
    Removed, // only in A
    Error,   // on both sides, but the values could not be read (TensorDiff::error)
};
const char* diffStatusName(DiffStatus s); // "same", "changed", "added", "removed", "error"

// What changed, the most significant first: a shape change makes values incomparable; a dtype or device
// change is reported even when the converted values are equal.
enum class ChangeKind : std::uint8_t { None, Shape, DType, Device, Values };
const char* changeKindName(ChangeKind k); // "none", "shape", "dtype", "device", "values"

struct TensorDiff {
    std::string name; // B's name for tensors in B (as `ckpt ls` shows it), A's name for removed ones
    std::string key;  // the aligned key both names map to
    int a = -1;       // index in A's Checkpoint::tensors, -1 when only in B
    int b = -1;       // index in B's Checkpoint::tensors, -1 when only in A
    DiffStatus status = DiffStatus::Same;
    ChangeKind kind = ChangeKind::None;
    bool shapeChanged = false;
    bool dtypeChanged = false;
    bool deviceChanged = false;
    std::optional<ValueDiff> values; // set when both sides' values were compared
    std::string error; // why the values could not be compared (status Error): file, place, tensor, what
};

// A non-tensor value (epoch, learning rate, optimizer settings, ...) that differs or exists on one side.
struct ValueChange {
    std::string name;             // B's name (A's when only in A)
    std::optional<std::string> a; // short text of the value as valueRepr() writes it; nullopt when absent
    std::optional<std::string> b;
    const Value* valueA = nullptr; // the values themselves, valid while the checkpoints live
    const Value* valueB = nullptr;
};

// Figures summed over every tensor at or below a module (a dotted prefix of the names). Modules are
// nodes of the tree of aligned names (B's names, A's for removed tensors).
struct ModuleDiff {
    std::string name;          // dotted path; "" for the root
    int depth = 0;             // number of segments
    int parent = -1;           // index in DiffResult::modules
    std::uint64_t tensors = 0; // tensors below, on either side
    std::uint64_t changedTensors = 0;
    std::uint64_t added = 0;
    std::uint64_t removed = 0;
    ValueDiff values; // merged over the tensors compared below
};

struct DiffResult {
    std::string fileA, fileB;
    KeyAlignment alignment;
    double threshold = 0;
    // Every name: pairs in B's order, then the tensors only in A in A's order.
    std::vector<TensorDiff> tensors;
    std::vector<ValueChange> values;
    std::vector<ModuleDiff> modules; // parents before children; modules[0] is the root

    std::size_t count(DiffStatus s) const;
    // True when anything differs: a tensor added, removed or changed, or a value that differs.
    bool differs() const;
};

// Called once per tensor as its comparison finishes, from a worker thread (calls never overlap).
using TensorDiffFn = std::function<void(const TensorDiff&)>;

// Compares two checkpoints. Progress counts bytes of tensor data read on both sides; returning false from
// it cancels, and then the function returns nullopt. Structure-only differences (added, removed, shape) are
// passed to onTensor first, value comparisons as they finish. Tensors whose bytes cannot be read get status
// Error and the others are still compared. Throws Error only for misuse.
std::optional<DiffResult> diffCheckpoints(const CheckpointPtr& a, const CheckpointPtr& b,
                                          const DiffOptions& options = {}, const ProgressFn& progress = {},
                                          const TensorDiffFn& onTensor = {});

// Compares one tensor pair (the GUI calls it on selection): structure, and values when the element counts
// agree. Returns nullopt when cancelled; reading failures land in TensorDiff::error.
std::optional<TensorDiff> diffTensors(const CheckpointPtr& a, const TensorInfo& ta, const CheckpointPtr& b,
                                      const TensorInfo& tb, double threshold = 0.0,
                                      const ProgressFn& progress = {});

// Histograms for an overlay: A's and B's values over one common range [min(A, B), max(A, B)] of finite
// values, and the element-wise differences B - A over their own range (empty when the element counts
// differ). Same binning as HistogramAccumulator. Returns nullopt when cancelled; throws Error when a
// tensor cannot be read.
struct DiffHistograms {
    Histogram a, b;  // over [lo, hi]
    Histogram delta; // over [deltaLo, deltaHi]
    double lo = 0, hi = 0;
    double deltaLo = 0, deltaHi = 0;
};
std::optional<DiffHistograms> diffHistograms(const CheckpointPtr& a, const TensorInfo& ta,
                                             const CheckpointPtr& b, const TensorInfo& tb, int bins,
                                             const ProgressFn& progress = {});

// The module tree of a set of tensor results with their figures summed (DiffResult::modules is this).
std::vector<ModuleDiff> aggregateModules(const std::vector<TensorDiff>& tensors);

} // namespace ckpt
