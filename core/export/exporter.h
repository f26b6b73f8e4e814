#pragma once

// Writes an ExportPlan as a PyTorch zip checkpoint or a safetensors file.
//
// PyTorch zip (what torch.save writes, specs/pytorch-format.md §1-2):
//   archive/data.pkl      pickle protocol 2: OrderedDict{name: _rebuild_tensor_v2(persistent id
//                         ('storage', torch.<Type>Storage, key, location, numel), offset, size, stride,
//                         False, OrderedDict())}; only opcodes the 1.13 weights-only unpickler accepts
//   archive/byteorder     "little"
//   archive/data/<key>    one stored record per storage, data 64-byte aligned (FB padding extra field)
//   archive/version       "3\n"
//   zip64 end records, always, as PyTorch's miniz writer does.
// A source storage is written whole, once per (source dtype, written dtype) pair, so views of one storage
// stay views of one storage and tied weights stay tied.
//
// safetensors: an 8-byte header length, the JSON header padded with spaces to a multiple of 8, then each
// tensor's bytes, contiguous, in plan order. Tensors that are the same view of the same bytes (tied weights)
// are written once and the other names left out; tensors overlapping in other ways are copied. Both are
// reported in ExportResult::notes.
//
// Safety: the output goes to DIR/.NAME.ckpt-export-PID.tmp in the destination's folder, is flushed, re-opened
// with our reader and checked, then renamed over the destination, so the destination is either what it was
// or the complete new file. Temporary files of exports whose process is gone are removed at the next export
// into that folder. The destination may not be any file of the source (same path or same inode), and the
// free space of its file system is checked before anything is written.
//
// Speed and memory: unchanged storages go from file to file with copy_file_range (read/write in 8 MiB chunks
// where the kernel refuses), with the CRC-32 the source archive already records where there is one; casts
// and byte swaps are converted in 4 MiB chunks. Memory stays bounded whatever the size.

#include "analysis/elements.h"
#include "exportplan.h"

#include <cstdint>
#include <string>
#include <vector>

namespace ckpt {

struct ExportLayout {
    std::uint64_t outputBytes = 0;  // bytes of the file to be written, headers included (approximately)
    std::uint64_t storageCount = 0; // storages (torch) or data blocks (safetensors) written
    std::vector<std::string> notes; // de-duplicated and copied shared tensors
};

// What exportCheckpoint would write, without writing: for previews and --dry-run.
ExportLayout describeExport(const Checkpoint& checkpoint, const ExportPlan& plan,
                            const ExportOptions& options);

struct ExportResult {
    std::uint64_t bytesWritten = 0;
    std::uint64_t bytesCopied = 0;    // unchanged bytes copied from the source
    std::uint64_t bytesConverted = 0; // bytes written by casts, swaps and gathers
    int staleRemoved = 0;             // temporary files of interrupted exports removed
    std::vector<std::string> notes;
};

// Throws Error with the file, the place and what is wrong; Error(Cancelled) when progress returns false.
// Whatever happens, no temporary file is left behind by this call and the destination is untouched unless
// the call returns.
ExportResult exportCheckpoint(const CheckpointPtr& checkpoint, const ExportPlan& plan,
                              const ExportOptions& options, const std::string& destination,
                              const ProgressFn& progress = {});

// Removes DIR/.*.ckpt-export-PID.tmp files whose process no longer runs; returns how many.
int removeStaleExportFiles(const std::string& directory);

} // namespace ckpt
