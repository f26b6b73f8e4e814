#pragma once

#include "model/checkpoint.h"

#include <string>

namespace ckpt {

// Maps the file, recognises its format by its bytes (never by its name) and reads its metadata.
// Tensor data is not touched. Throws ckpt::Error naming the file, the place and what is wrong.
CheckpointPtr openCheckpoint(const std::string& path);
// The same for bytes already in memory (tests, fuzzing); `name` is used in messages.
CheckpointPtr openCheckpointBuffer(const std::string& name, std::string bytes);

} // namespace ckpt
