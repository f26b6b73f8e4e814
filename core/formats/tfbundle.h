#pragma once

// TensorFlow V2 checkpoints ("tensor bundles", tf.train.Checkpoint / tf.compat.v1.train.Saver V2,
// SavedModel variables/). Spec: other-formats.md §1.
//
//   P.index                     a LevelDB-format table (raw keys, bytewise order):
//     1. data blocks            entries {varint32 shared, varint32 non_shared, varint32 value_len,
//                               key_delta, value}, then u32 restarts[n], u32 n; each block is followed by
//                               a 5-byte trailer {u8 type (0 raw, 1 Snappy), u32 masked CRC-32C of the
//                               stored bytes + type byte}
//     2. metaindex block        empty in TF files; ignored
//     3. index block            one entry per data block: separator key -> BlockHandle {varint64 offset,
//                               varint64 size}
//     4. footer (48 bytes)      metaindex handle, index handle, zero padding, fixed64 magic
//                               0xdb4775248b80fb57
//   key ""                      BundleHeaderProto {num_shards, endianness, version}
//   every other key             BundleEntryProto {dtype, shape, shard_id, offset, size, crc32c, slices}
//   P.data-SSSSS-of-NNNNN       raw tensor bytes at [offset, offset + size) of shard shard_id;
//                               DT_STRING: varint64 lengths, u32 masked CRC, the bytes
//   checkpoint                  optional text-format CheckpointState in the directory
//
// Limits: blocks up to 256 MiB after decompression, 16 Mi entries, keys up to 64 KiB each and 64 MiB in all,
// 65536 shards, rank 64 (strides must fit int64), string tensors up to 64 MiB and 1 Mi elements are decoded
// as values, up to 64 MiB of them per bundle besides the object graph (others are listed with a note),
// object graph up to 1 Mi nodes, names from it up to 64 MiB in all (further tensors are named by their
// keys, with a warning). Tensor bytes are never read at open time, except string tensors.
//
// Names: with an object graph (_CHECKPOINTABLE_OBJECT_GRAPH), a variable is named by the first
// breadth-first path of local names from the root joined with '.', plus '.<attribute>' for attributes other
// than VARIABLE_VALUE; an optimizer slot is named '<variable name>.<slot name>'. Without one (or for keys
// the graph does not name) the key is used with a trailing '/.ATTRIBUTES/VARIABLE_VALUE' dropped and '/'
// replaced by '.'. The original key is always the tensor's storage key.

#include "model/checkpoint.h"

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>

namespace ckpt {

// Recognises a TF bundle by path: a .index table (by its footer magic), a .data-NNNNN-of-NNNNN shard, a
// prefix (prefix.index exists), a directory (its `checkpoint` state file, or its only *.index, or a
// SavedModel's variables/), or a `checkpoint` state file. Returns null for anything else; throws
// Error(Unsupported) for a V1 Saver table.
CheckpointPtr tryOpenTfBundle(const std::string& path);

// Opens a shard file by path; returns null when it does not exist.
using TfShardOpener = std::function<std::shared_ptr<const MappedFile>(const std::string& path)>;

// Reads a bundle from its mapped index. `prefix` names the shards (prefix.data-SSSSS-of-NNNNN); `openShard`
// defaults to mapping files from disk (tests and fuzzers pass their own). `verifyChecksums` = false skips the
// block CRC check, as LevelDB's ReadOptions allow: only for fuzzing, so that mutations get past it.
std::shared_ptr<Checkpoint> readTfBundle(std::shared_ptr<const MappedFile> index, const std::string& prefix,
                                         TfShardOpener openShard = {}, bool verifyChecksums = true);

// True when the last 8 of `tail`'s bytes are the table magic.
bool hasTfTableMagic(std::span<const std::uint8_t> tail);

// CRC-32C (Castagnoli), extending `crc` (0 to start), and LevelDB's mask.
std::uint32_t crc32c(std::span<const std::uint8_t> bytes, std::uint32_t crc = 0);
inline std::uint32_t maskCrc32c(std::uint32_t c) {
    return ((c >> 15) | (c << 17)) + 0xa282ead8u;
}
inline std::uint32_t unmaskCrc32c(std::uint32_t m) {
    const std::uint32_t r = m - 0xa282ead8u;
    return (r >> 17) | (r << 15);
}

} // namespace ckpt
