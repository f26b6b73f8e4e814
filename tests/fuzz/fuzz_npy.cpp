// libFuzzer target: bytes through the NumPy .npy reader: magic, version, the header dict, dtype descriptors,
// shape and order; then the reports and statistics of every tensor.

#include "formats/numpy.h"
#include "fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    try {
        ckpt::fuzz::exercise(ckpt::readNpy(ckpt::fuzz::buffer("fuzz", data, size)), "fuzz");
    } catch (const ckpt::Error&) {
    }
    return 0;
}
