#pragma once

#include "model/checkpoint.h"

#include <memory>

namespace ckpt {

// torch.save zip archives and torch.jit.save TorchScript archives (spec: pytorch-format.md §1, §2).
//   <prefix>/data.pkl             the pickled object; storages are persistent ids
//   <prefix>/data/<key>           raw bytes of storage <key>, stored, 64-byte aligned
//   <prefix>/version | .data/version   format version, 1..10
//   <prefix>/byteorder            "little" (default) or "big"
//   TorchScript adds constants.pkl (storages under constants/<key>), code/ (shown, never run)
// Throws Error(BadMagic) for a zip archive that is not a PyTorch one (no folder, no data.pkl), so that
// other zip-based formats can be tried.
std::shared_ptr<Checkpoint> readTorchZip(std::shared_ptr<const MappedFile> file);

// The pre-1.6 pickle sequence (§3.1):
//   1. pickle: magic number 0x1950a86a20f9469cfc6c
//   2. pickle: protocol version 1001
//   3. pickle: sys_info dict
//   4. pickle: the object; persistent ids ('storage', type, key, location, numel[, view])
//   5. pickle: list of storage keys
//   6. per key, in that order: i64 element count, then count * element size bytes (little-endian)
std::shared_ptr<Checkpoint> readTorchLegacy(std::shared_ptr<const MappedFile> file);

// A bare pickle (protocol 2..5) holding no storages: shown as data.
std::shared_ptr<Checkpoint> readPlainPickle(std::shared_ptr<const MappedFile> file);

} // namespace ckpt
