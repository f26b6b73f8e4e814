// libFuzzer target: bytes through the GGUF reader: header, key/value metadata of every type, tensor infos,
// alignment, block types; then the reports and statistics of every tensor.

#include "formats/gguf.h"
#include "fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    try {
        ckpt::fuzz::exercise(ckpt::readGguf(ckpt::fuzz::buffer("fuzz", data, size)), "fuzz");
    } catch (const ckpt::Error&) {
    }
    return 0;
}
