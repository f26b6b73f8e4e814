#pragma once

// safetensors (huggingface/safetensors, spec: other-formats.md §2).
//
// Layout:
//   1. u64 LE  N                 header length, N <= 100,000,000 (the Rust crate's MAX_HEADER_SIZE)
//   2. N bytes UTF-8 JSON        { "<name>": {"dtype": "F32", "shape": [u64...], "data_offsets": [b, e]},
//                                  ..., "__metadata__": {"<key>": "<string>", ...} }
//                                whitespace before and after the object is accepted, as the crate does
//   3. data buffer               tensor <name> occupies bytes [8+N+b, 8+N+e) of the file, little-endian, C
//   order
// Checks (each failure has its own message, naming the tensor and the byte offset):
//   whole file (throws Error): fewer than 8 bytes; N too large; 8+N past the end; JSON that does not parse
//     (incl. invalid UTF-8); a key that appears twice in any object; an entry that is not an object with a
//     string dtype, an array of non-negative integer dims (at most 64) and two non-negative integer offsets;
//     __metadata__ that is not a string-to-string map; nesting deeper than 64.
//   per tensor (TensorInfo::error + an Error finding; the other tensors stay readable): unknown dtype;
//     shape whose byte size overflows or is not a whole number of bytes; e-b != numel * bits / 8; offsets
//     that, sorted by begin, do not tile the buffer from 0 (hole or overlap); data past the end of the file.
//   warning: bytes after the last tensor (the crate refuses such files: "file not fully covered").
// Tensors are listed in the order of their data (the order the file holds them), one storage each, keyed by
// the tensor name; `__metadata__` entries become values named `__metadata__.<key>`.

#include "model/checkpoint.h"

#include <cstdint>
#include <memory>
#include <span>

namespace ckpt {

// By structure: a u64 header length followed by a JSON object ('{', possibly after whitespace).
bool looksLikeSafetensors(std::span<const std::uint8_t> head, std::uint64_t size);
std::shared_ptr<Checkpoint> readSafetensors(std::shared_ptr<const MappedFile> file);

} // namespace ckpt
