// libFuzzer target: bytes through the PyTorch zip reader (torch.save since 1.6): zip directory, data.pkl,
// storages, byte order and version records; then the reports and statistics of every tensor.

#include "formats/torchformats.h"
#include "fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    try {
        ckpt::fuzz::exercise(ckpt::readTorchZip(ckpt::fuzz::buffer("fuzz", data, size)), "fuzz");
    } catch (const ckpt::Error&) {
    }
    return 0;
}
