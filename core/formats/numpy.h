#pragma once

// NumPy .npy and .npz (numpy/lib/format.py; spec: other-formats.md §5).
//
// .npy layout:
//   1. magic "\x93NUMPY", u8 major, u8 minor        versions 1.0, 2.0, 3.0
//   2. HLEN: u16 LE (1.0) or u32 LE (2.0, 3.0)      HLEN <= 1 MiB (numpy itself stops at 10,000)
//   3. HLEN bytes: a Python dict literal, '\n'-terminated, e.g.
//        {'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }
//      exactly the keys descr / fortran_order / shape; descr = byte order ('<' '>' '|' '=') + kind + size
//   4. the data, right after the header: numel * itemsize bytes
// Supported descr kinds: b1, i1..i8, u1..u8, f2 f4 f8, c8 c16. Refused, as an error on that array only:
//   'O' (object arrays are pickles: never unpickled), strings, void / structured, datetime, longdouble.
// Fortran-order arrays get column-major strides; '>' arrays are read big-endian. Shape: at most 64 dims,
// byte size overflow-checked. A bare .npy holds one tensor named "array".
//
// .npz: a zip archive of <name>.npy members (np.savez: stored, mapped in place; np.savez_compressed:
// deflated). Of a deflated member only the header is inflated at opening, and its declared size is checked
// against the header's shape and dtype as a stored member's is; the whole member is inflated, into an extra
// source per member, when its values are first read, and a stream that is corrupt, of the wrong size or
// with the wrong CRC-32 is then that tensor's error. Tensor names are the member names without ".npy". A
// member that cannot be read becomes a tensor with an error; the others stay readable.

#include "model/checkpoint.h"

#include <cstdint>
#include <memory>
#include <span>

namespace ckpt {

bool looksLikeNpy(std::span<const std::uint8_t> head, std::uint64_t size);
std::shared_ptr<Checkpoint> readNpy(std::shared_ptr<const MappedFile> file);

// A zip archive whose members are all *.npy.
bool looksLikeNpz(const std::shared_ptr<const MappedFile>& file);
std::shared_ptr<Checkpoint> readNpz(std::shared_ptr<const MappedFile> file);

} // namespace ckpt
