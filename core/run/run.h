#pragma once

// A training run: the checkpoints one run wrote, ordered by step, and figures of one tensor (or of every
// tensor under a module, taken together) across them, computed from the files.
//
// Discovery
//   1. a directory with a TensorFlow `checkpoint` state file: its all_model_checkpoint_paths (ckpt-N
//      bundles), resolved against the directory as TensorFlow does;
//   2. any other directory: every file with a checkpoint extension (.pt .pth .bin .ckpt .tar .safetensors
//      .h5 .keras .gguf .npz .npy, and TensorFlow .index tables) whose name carries a step; shards of one
//      checkpoint (`-00001-of-00004`) are left out;
//   3. an explicit list of files, kept as given when no name carries a step.
//   The step of a name is the number after `step`, `iter`, `epoch`, `ep` or `ckpt-` (in that preference),
//   else its last number. Ties and names without a number sort in natural order (`2` before `10`).
//
// Limits: 100,000 files per run; at most two checkpoints are open at once while figures are computed, and
// tensor bytes are streamed in chunks, so memory stays bounded whatever the file sizes.

#include "analysis/elements.h"
#include "analysis/stats.h"

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace ckpt {

struct RunEntry {
    std::string path;       // what openCheckpoint() takes: a file, or a TensorFlow bundle prefix
    std::string label;      // the file name (TensorFlow: the prefix's base name)
    std::int64_t step = -1; // -1 when the name carries no number
};

struct Run {
    std::string source; // the directory, state file or first file it came from
    std::string kind;   // "directory", "tensorflow-state" or "files"
    std::vector<RunEntry> entries;
    std::vector<std::string> skipped; // files of the directory left out, with the reason
};

// The step a file name carries, or nullopt.
std::optional<std::int64_t> stepFromName(std::string_view fileName);
// Natural order of text: runs of digits compare by value.
bool naturalLess(std::string_view a, std::string_view b);

// A directory or a TensorFlow `checkpoint` state file. Throws Error(NotFound) when nothing in it looks
// like a checkpoint of a run, Error(Io) when it cannot be listed.
Run discoverRun(const std::string& path);
// Explicit files (or one directory), ordered by step when their names carry one.
Run runFromPaths(const std::vector<std::string>& paths);

// Figures of one checkpoint of the run. Values are over finite elements, as in TensorStats.
struct RunPoint {
    bool present = false; // the checkpoint has the tensor (or some tensor under the module)
    std::string error;    // why it could not be read (file unreadable, values unreadable)
    std::uint64_t count = 0;
    std::uint64_t finite = 0;
    double norm = 0; // L2 norm over finite elements
    double mean = 0, std = 0, min = 0, max = 0;
    // ||this - previous|| / ||previous|| over the tensors both have with the same element count (sums merged
    // over a module's tensors, as ckpt diff sums a module); nullopt for the first checkpoint, or when
    // nothing is comparable.
    std::optional<double> change;
    std::vector<std::uint64_t> histogram; // over the run's common range, Timeline::edges
};

struct Timeline {
    std::string name;             // tensor or module
    std::vector<RunPoint> points; // one per RunEntry
    std::vector<double> edges;    // bins + 1, shared by every point; empty when nothing finite was read
};

// Two passes over the run: moments, norms and change (each checkpoint paired with the one before it by
// diffTensors(), so that the change is the rel_l2 `ckpt diff` gives for the pair),
// then histograms over the common [min, max] of all checkpoints. `name` is a tensor's full name, or a
// module's (every tensor named `name.*`); empty takes every tensor. Returns nullopt when cancelled.
std::optional<Timeline> computeTimeline(const Run& run, const std::string& name, int bins,
                                        const ProgressFn& progress = {});

// The tensors a name stands for in a checkpoint: the tensor itself, or every tensor under the module.
std::vector<const TensorInfo*> tensorsNamed(const Checkpoint& checkpoint, const std::string& name);

} // namespace ckpt
