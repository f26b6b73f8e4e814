// libFuzzer target for the Keras reader's own parsing. libhdf5 itself runs in a child process (keras.h), so
// what the parent parses is fuzzed: the first byte picks
//   'w'  the rest is the child's answer, decoded as the parent decodes it (the child ran libhdf5 on hostile
//        bytes, so its answer is untrusted too),
//   'z'  the rest is a .keras zip (config.json, metadata.json; model.weights.h5 goes to the child),
//   'h'  the rest is an HDF5 file (through the child, as the program reads it; slow: one fork per input).
// Then the reports and statistics of every tensor.

#include "formats/keras.h"
#include "formats/torchpickle.h"
#include "libhdf5_children.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size < 1)
        return 0;
    const char mode = static_cast<char>(data[0]);
    try {
        if (mode == 'w') {
            // The HDF5 image the storages point into: the answer's own bytes stand in for it.
            auto ck = ckpt::newCheckpoint(ckpt::fuzz::buffer("fuzz.h5", data + 1, size - 1), "keras-h5");
            ck->formatDetail = ckpt::decodeHdf5ReaderAnswer(
                std::string(reinterpret_cast<const char*>(data + 1), size - 1), *ck, 0, "fuzz.h5");
            ckpt::fuzz::exercise(ck, "fuzz.h5");
        } else if (mode == 'z') {
            ckpt::fuzz::exercise(ckpt::readKerasZip(ckpt::fuzz::buffer("fuzz.keras", data + 1, size - 1)),
                                 "fuzz.keras");
        } else if (mode == 'h') {
            ckpt::fuzz::exercise(ckpt::readKerasH5(ckpt::fuzz::buffer("fuzz.h5", data + 1, size - 1)),
                                 "fuzz.h5");
        }
    } catch (const ckpt::Error&) {
    }
    return 0;
}
