#pragma once

// What an export writes: which tensors, under which names, with which dtype and device, and from which
// bytes. Built from a Checkpoint and the user's options without touching tensor data, so that the GUI can
// show it as a live preview and `ckpt export --dry-run` can print it.
//
// Rules, applied in this order:
//   1. selection: the ticked names (all when none are given), then the preset, then every --include pattern
//      (a tensor is kept when it matches one; all are kept when there is none), then every --exclude pattern.
//      A pattern is a glob (`*`, `?`, `[...]`), or a regular expression when it starts with `re:`.
//   2. preset "weights-only": drops optimizer, scheduler, EMA, gradient-scaler, callback and loop state (the
//      layouts torch.save training scripts, Lightning `.ckpt`, Hugging Face Trainer and timm write), drops
//      the non-tensor values, and when every remaining tensor sits under one model container (`model.`,
//      `state_dict.`, `model_state_dict.`, `module.`, `net.`, `network.`, `weights.`), removes that prefix,
//      so the result loads with `model.load_state_dict(sd, strict=True)`.
//   3. renaming: strip prefixes (each when the name starts with it), regex replacements (ECMAScript syntax,
//      `$1` references), then the added prefix. Two tensors ending with the same name are an error.
//   4. devices: FROM=TO pairs on the storage's location tag; the first pair whose FROM equals the tag (or is
//      `*`) wins.
//   5. dtype: floating-point tensors (float64, float32, float16, bfloat16) are cast to the target dtype,
//      except those whose source or new name matches a keep pattern; other tensors are written as they are.

#include "model/checkpoint.h"

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace ckpt {

enum class ExportFormat : std::uint8_t { Torch, Safetensors };

struct ExportOptions {
    std::vector<std::string> selected; // names ticked by the user; empty: every tensor
    std::vector<std::string> includes; // globs, or `re:REGEX`
    std::vector<std::string> excludes;
    bool weightsOnly = false;
    std::vector<std::string> stripPrefixes;
    std::string addPrefix;
    std::vector<std::pair<std::string, std::string>> regexRenames; // pattern, replacement
    std::vector<std::pair<std::string, std::string>> deviceMap;    // FROM (or *), TO
    std::optional<DType> castTo;
    std::vector<std::string> keepDtype; // patterns of tensors never cast (norms, ...)
    bool keepValues = false;            // non-tensor values (epoch, lr, strings) kept when the format can
    ExportFormat format = ExportFormat::Torch;
};

struct PlannedTensor {
    int source = -1; // index into Checkpoint::tensors
    std::string name;
    std::vector<std::int64_t> shape;
    DType dtype = DType::Float32; // dtype written
    std::string device;           // location written (torch format)
    bool cast = false;            // dtype differs from the source's
    std::uint64_t nbytes = 0;     // bytes of the tensor's elements in the output
};

struct PlannedValue {
    int source = -1; // index into Checkpoint::values
    std::string name;
};

struct ExportPlan {
    std::vector<PlannedTensor> tensors; // in source order
    std::vector<PlannedValue> values;
    std::vector<std::string> notes;  // what the options did that a user may not expect
    std::vector<std::string> errors; // why the plan cannot be written (collisions, unreadable tensors)
    std::uint64_t tensorBytes = 0;   // sum of the tensors' element bytes (views of one storage counted once
                                     // per tensor)
    bool ok() const { return errors.empty(); }
};

// Parses "cuda:0=cpu"; throws Error(Malformed) naming the argument when it has no '='.
std::pair<std::string, std::string> parseDeviceMapping(const std::string& arg);
// The dtypes a cast may target: float32, float16, bfloat16, float64 (PyTorch spellings, with aliases).
std::optional<DType> castTargetFromName(const std::string& name);
// Glob or `re:` pattern match, as the selection rules use it. Throws Error(Malformed) on a bad regex.
bool exportPatternMatch(const std::string& pattern, const std::string& name);

// A kept value as text: a string's own, any other value's repr. A safetensors header's __metadata__ holds
// these; a PyTorch export writes strings (the only kept values with text of their own) as Python str.
std::string keptValueText(const Value* v);

// Never throws for a bad selection: problems land in ExportPlan::errors so a preview can show them. Throws
// Error(Malformed) for an invalid regular expression.
ExportPlan buildExportPlan(const Checkpoint& checkpoint, const ExportOptions& options);

} // namespace ckpt
