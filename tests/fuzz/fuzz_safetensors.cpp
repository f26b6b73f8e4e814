// libFuzzer target: bytes through the safetensors reader: header length, JSON header, offsets; then the
// reports and statistics of every tensor.

#include "formats/safetensors.h"
#include "fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    try {
        ckpt::fuzz::exercise(ckpt::readSafetensors(ckpt::fuzz::buffer("fuzz", data, size)), "fuzz");
    } catch (const ckpt::Error&) {
    }
    return 0;
}
