// libFuzzer target: any bytes through format detection, the readers and, for what opens, statistics of
// every tensor. Anything but a clean ckpt::Error or a result is a finding.

#include "formats/open.h"
#include "libhdf5_children.h"

#include <cstdint>
#include <string>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    try {
        ckpt::fuzz::exercise(
            ckpt::openCheckpointBuffer("fuzz.pt", std::string(reinterpret_cast<const char*>(data), size)),
            "fuzz.pt");
    } catch (const ckpt::Error&) {
    }
    return 0;
}
