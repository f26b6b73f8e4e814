// libFuzzer target: bytes through the legacy PyTorch reader (torch.save before 1.6): the pickle sequence,
// storage keys, the raw storages after it; then the reports and statistics of every tensor.

#include "formats/torchformats.h"
#include "fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    try {
        ckpt::fuzz::exercise(ckpt::readTorchLegacy(ckpt::fuzz::buffer("fuzz", data, size)), "fuzz");
    } catch (const ckpt::Error&) {
    }
    return 0;
}
