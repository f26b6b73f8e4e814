#pragma once

// Keras weights in HDF5, read through libhdf5 (spec: other-formats.md §3).
//
// Files:
//   1. Keras 2 `.h5` (model.save / ModelCheckpoint, tf.keras and Keras 3's legacy writer)
//        root attrs: keras_version, backend, model_config (JSON), training_config (JSON, when compiled)
//        /model_weights            attr layer_names[] (fixed-length byte strings; split into layer_names0,
//                                  layer_names1, ... past 64 KiB), backend, keras_version
//        /model_weights/<layer>    attr weight_names[]; each weight is a dataset at its weight-name path:
//                                  /model_weights/dense/dense/kernel:0
//        /optimizer_weights        attr weight_names[] ("Adam/iter:0", "Adam/dense/kernel/m:0", ...)
//      Keras 2 save_weights("x.h5") holds the /model_weights content at the root.
//   2. Keras 3 `.weights.h5` (save_weights) and the `model.weights.h5` member of a `.keras` zip:
//        /layers/<snake_case class>[_N]/vars/<i>, /vars/<i>, /optimizer/vars/<i>, ...; `vars` groups carry
//        attr `name` (the layer's name).
//   3. Keras 3 `.keras`: a zip with config.json, metadata.json, model.weights.h5 (stored: opened in place
//      from the member's bytes; deflated: inflated into memory, an extra source).
// Every HDF5 file opens this way ("keras-h5"); Keras files are told apart only by their attributes.
//
// libhdf5 opens the existing read-only mapping as a file image (H5LTopen_file_image, DONT_COPY |
// DONT_RELEASE): the file is never copied. libhdf5 1.10 is not hardened against hostile files (fuzzing a
// Keras file crashed it in H5HG_read within a few hundred tries, and damaged variable-length strings make it
// clear absurd sizes), so it runs only in a forked child process: the child shares the mapping, reads all
// metadata (and the datasets that must be read, below) and sends the result over a pipe; the parent never
// calls libhdf5. A child that dies (signal), hangs (no progress for 60 s; it writes a heartbeat per object)
// or sends a malformed answer becomes an Error for the file. The child's address space is capped (its size at
// fork + 9 GiB; not under ASan). libhdf5's own error printing is off (an automatic error handler records the
// innermost message instead of printing it); opens are serialised by one mutex.
//
// Tensors: every dataset. Contiguous, unfiltered, allocated datasets are mapped in place (H5Dget_offset +
// the member's offset → StorageInfo::fileOffset, big-endian types flagged). Chunked / compressed / compact /
// never-written datasets are read whole with H5Dread when the file is opened, into an in-memory source
// (per dataset at most 2 GiB, 4 GiB per file; a dataset declaring more than 1000x its stored size and over
// 64 MiB is refused, as Keras refuses it); past those limits the tensor is listed with an error.
// Names: the HDF5 path with '/' replaced by '.', a trailing ":0" dropped (model_weights.dense.dense.kernel,
// optimizer_weights.Adam.iter, layers.dense.vars.0). Keras 2 files list model_weights in layer_names /
// weight_names order, then optimizer_weights in weight_names order, then every other dataset; otherwise
// datasets come depth-first, children in natural order (vars/2 before vars/10).
// Values: scalar string and number attributes of the root and of every group (root: `model_config`,
// `keras_version`, ...; elsewhere `<group path>.<attr>`, e.g. model_weights.backend,
// layers.dense.vars.name); `.keras`: `config.json` and `metadata.json` (their text) and the key fields
// config.class_name, config.name, metadata.keras_version, metadata.date_saved.
// dtypes: IEEE float16/32/64, int8..64, uint8..64 (either byte order), bool (h5py's enum of int8
// FALSE/TRUE), bfloat16 (2-byte opaque or uint16 with attr dtype="bfloat16", as Keras 3 writes it).
// Strings, compounds, references and other types: listed as a tensor with an error (string datasets only as
// an info finding).
// Limits: 1,000,000 links visited, group depth 64, 1024 attributes per object, 64 MiB per attribute,
// rank 32. Soft and external links are not followed (a warning); hard-link cycles are visited once.
// Failures: a file libhdf5 cannot open throws Error (with libhdf5's innermost message); a dataset that
// cannot be read becomes a tensor with an error and an Error finding naming its HDF5 path.

#include "model/checkpoint.h"

#include <chrono>
#include <cstdint>
#include <memory>
#include <span>
#include <string>

namespace ckpt {

// The HDF5 signature "\x89HDF\r\n\x1a\n" at offset 0, 512, 1024, 2048, ... (a user block before it).
bool looksLikeHdf5(const std::shared_ptr<const MappedFile>& file);
std::shared_ptr<Checkpoint> readKerasH5(std::shared_ptr<const MappedFile> file);

// A zip archive holding model.weights.h5, or config.json and metadata.json (Keras 3 `.keras`).
bool looksLikeKerasZip(const std::shared_ptr<const MappedFile>& file);
std::shared_ptr<Checkpoint> readKerasZip(std::shared_ptr<const MappedFile> file);

// The parent's side of the HDF5 reader process: decodes the answer the child sent over the pipe into `ck`
// (whose source `imageSource` holds the HDF5 image) and returns the format detail. The child ran libhdf5 over
// hostile bytes, so its answer is checked as input too; exposed for the fuzz target.
std::string decodeHdf5ReaderAnswer(const std::string& bytes, Checkpoint& ck, int imageSource,
                                   const std::string& path);

// How long the libhdf5 child may go without progress before it is killed and the file reported (60 s). The
// fuzz targets shorten it: libhdf5 loops forever on some damaged files, and each input must end quickly.
void setHdf5ReaderTimeout(std::chrono::milliseconds limit);

} // namespace ckpt
