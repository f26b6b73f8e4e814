// libFuzzer target: bytes as a zip archive (end of central directory, zip64 records, central and local
// headers), then every entry read: the zero-copy view of stored entries and inflation of deflated ones.

#include "fuzz_common.h"
#include "io/zipreader.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    try {
        const ckpt::ZipArchive zip(ckpt::fuzz::buffer("fuzz.zip", data, size));
        for (const auto& e : zip.entries()) {
            (void)zip.find(e.name);
            try {
                (void)zip.storedData(e);
            } catch (const ckpt::Error&) {
            }
            try {
                (void)zip.read(e, 1u << 20);
            } catch (const ckpt::Error&) {
            }
        }
    } catch (const ckpt::Error&) {
    }
    return 0;
}
