// libFuzzer target: any bytes through format detection, the readers and, for what opens, statistics of
// every tensor. Anything but a clean ckpt::Error or a result is a finding.

#include "analysis/stats.h"
#include "formats/open.h"
#include "io/error.h"
#include "report/report.h"

#include <cstdint>
#include <string>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    try {
        const auto ck =
            ckpt::openCheckpointBuffer("fuzz.pt", std::string(reinterpret_cast<const char*>(data), size));
        (void)ckpt::dumpJson(ckpt::infoJson(*ck, "fuzz.pt"));
        (void)ckpt::dumpJson(ckpt::lsJson(*ck, "fuzz.pt", ""));
        for (const auto& t : ck->tensors) {
            if (t.numel() > (1u << 20))
                continue; // keep each run fast; the reader is exercised by the smaller ones
            try {
                (void)ckpt::computeStats(ck, t, 8);
            } catch (const ckpt::Error&) {
            }
        }
    } catch (const ckpt::Error&) {
    }
    return 0;
}
