#pragma once

#include "model/checkpoint.h"

#include <cstdint>
#include <memory>
#include <span>

namespace ckpt {

// GGUF, the llama.cpp / ggml file (spec: other-formats.md §4; ggml docs/gguf.md, src/gguf.cpp).
// Little-endian throughout:
//   1. u32 magic "GGUF", u32 version (2 or 3), u64 tensor_count, u64 kv_count
//   2. kv_count times: string key, u32 value type, value
//        string = u64 length + bytes (no NUL); array = u32 element type, u64 count, elements
//        types: 0 u8, 1 i8, 2 u16, 3 i16, 4 u32, 5 i32, 6 f32, 7 bool, 8 string, 9 array, 10 u64, 11 i64, 12
//        f64
//   3. tensor_count times: string name, u32 n_dims, u64 ne[n_dims] (ne[0] varies fastest), u32 ggml type,
//        u64 offset (relative to the data section, a multiple of the alignment)
//   4. zero padding to ALIGNMENT = general.alignment (u32, a power of two; default 32), then the data section
// Limits: version 2..3 (1 and big-endian files are refused), counts no larger than the bytes left can hold
// and at most 2^24 tensors / 2^20 keys, strings at most 2^30 bytes, tensor names under 64 bytes, arrays at
// most 2^30 items nested at most 4 deep, n_dims at most 4, sizes overflow-checked.
// Metadata keys become values named by their key; arrays keep their first 64 items plus a count. A tensor
// with an unknown type, a bad shape or a misaligned, out-of-file or overlapping offset keeps its name with
// an `error` and an error finding; the healthy ones stay readable.
bool looksLikeGguf(std::span<const std::uint8_t> head, std::uint64_t size);
std::shared_ptr<Checkpoint> readGguf(std::shared_ptr<const MappedFile> file);

} // namespace ckpt
