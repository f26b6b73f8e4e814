#pragma once

// Hugging Face sharded checkpoints (pytorch-format.md §7.2): an index JSON next to its shards.
//
//   <dir>/model.safetensors.index.json  or  <dir>/pytorch_model.bin.index.json  (any name is accepted when
//   the path names the file itself):
//     { "metadata": { "total_size": <bytes>, ... },
//       "weight_map": { "<tensor name>": "<shard file name>", ... } }
//   <dir>/<shard>  each an ordinary checkpoint: safetensors or torch.save zip (opened with openCheckpoint)
//
// The shards are merged into one Checkpoint: sources = the index (0), then every shard's files; each
// storage's `source` names the shard file its bytes live in. Tensors are listed in weight_map order.
// Checks:
//   refused (Error): index not a JSON object, weight_map not an object of strings, a shard name that is not a
//     plain file name in the index's folder ('/', '\', '..', empty), more than 100,000 shards or 10,000,000
//     entries, an index larger than 256 MiB or nested deeper than 64 levels;
//   error finding: a shard file missing or unreadable (naming the file; its tensors carry the error), a
//     weight_map entry its shard does not hold;
//   warning: a tensor in a shard that the weight_map does not send there, metadata.total_size different from
//     the tensors' bytes.
// The index's metadata become values named `metadata.<key>`.

#include "model/checkpoint.h"

#include <string>

namespace ckpt {

// Null unless `path` is an index file (JSON object with "weight_map", whatever its name) or a directory
// holding exactly one `*.safetensors.index.json` / `*.bin.index.json`.
CheckpointPtr tryOpenShardIndex(const std::string& path);

} // namespace ckpt
