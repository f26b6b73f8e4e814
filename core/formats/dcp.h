#pragma once

// PyTorch distributed checkpoints (torch.distributed.checkpoint, "DCP"; pytorch-format.md §7.1).
//
// A checkpoint is a directory:
//   1. .metadata        pickle.dump(Metadata), protocol >= 4; read by the data-only unpickler: the
//                       dataclasses arrive as opaque objects whose BUILD state is read, nothing is imported
//        Metadata.state_dict_metadata  {fqn: TensorStorageMetadata(properties, size, chunks) |
//                                             BytesStorageMetadata()}
//          TensorProperties state      (dtype, layout, requires_grad, memory_format, pin_memory)
//          ChunkStorageMetadata        offsets, sizes: the chunk's place in the whole tensor
//        Metadata.storage_data         {MetadataIndex(fqn, offset, index): _StorageInfo(relative_path,
//                                                                                      offset, length)}
//          a tensor chunk is found by (fqn, chunk offsets); a bytes item by (fqn, None)
//   2. __<rank>_<n>.distcp  each item is the slice [offset, offset + length) of the file named by
//                           relative_path: a complete torch.save zip archive (tensor chunks: one tensor;
//                           bytes items: the torch.save of any object)
// Module paths of torch 1.13 (torch.distributed._shard.checkpoint, sharded_tensor.metadata) and of 2.x
// (torch.distributed.checkpoint) are both read.
//
// Tensors: one chunk covering the whole tensor is that chunk's tensor, mapped in place; several chunks make
// a tensor whose values TensorReader assembles (Checkpoint::chunkSets), each chunk keeping its own file.
// Checks:
//   refused (Error): .metadata larger than 1 GiB, not a pickle of a Metadata object, state_dict_metadata or
//     storage_data not dicts, more than 10,000,000 entries;
//   per tensor (TensorInfo::error + an Error finding; the rest stays readable): unknown dtype, a size that is
//     not a tuple of non-negative integers (at most 64 dims) or whose element count or strides overflow
//     64 bits, more than 65,536 chunks, a chunk outside the tensor, overlapping chunks or chunks that leave
//     part of the tensor uncovered, chunks laid out so irregularly that the overlap check would take more
//     than 2^27 comparisons (a sweep along one dimension; a grid of chunks takes far fewer), a chunk without
//     storage_data, a relative_path that is not a plain file name of the folder, a file that is missing, a
//     slice outside its file, a slice that is not a torch.save archive holding one tensor of the chunk's
//     shape and the declared dtype;
//   bytes items: their torch.save contents become values (and tensors) named `<fqn>` / `<fqn>.<key>`;
//     an unreadable one becomes an Error finding.
// sources: .metadata first, then the .distcp files in the order the tensors first use them.

#include "model/checkpoint.h"

#include <string>

namespace ckpt {

// Null unless `path` is a DCP directory (it holds a .metadata pickle of a DCP Metadata object), that
// .metadata file, or a .distcp file next to one.
CheckpointPtr tryOpenDcp(const std::string& path);

} // namespace ckpt
