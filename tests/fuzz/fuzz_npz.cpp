// libFuzzer target: bytes through the NumPy .npz reader: the zip archive and every member as .npy, stored or
// deflated; then the reports and statistics of every tensor.

#include "formats/numpy.h"
#include "fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    try {
        ckpt::fuzz::exercise(ckpt::readNpz(ckpt::fuzz::buffer("fuzz", data, size)), "fuzz");
    } catch (const ckpt::Error&) {
    }
    return 0;
}
