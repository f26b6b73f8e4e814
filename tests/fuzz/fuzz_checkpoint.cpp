// libFuzzer target: any bytes through format detection, the readers and, for what opens, statistics of
// every tensor. Anything but a clean ckpt::Error or a result is a finding.

#include "analysis/stats.h"
#include "formats/keras.h"
#include "formats/open.h"
#include "fuzz_common.h"
#include "io/error.h"
#include "report/report.h"

#include <chrono>
#include <cstdint>
#include <string>

// HDF5 inputs go to libhdf5 in a child process (formats/keras.h), where a failed allocation is libhdf5's
// error to report (it asks for 2^46-byte buffers on some damaged files); in the target itself a failed
// allocation still ends the run (std::bad_alloc escapes).
extern "C" const char* __asan_default_options() {
    return "allocator_may_return_null=1";
}

// libhdf5 loops forever on some damaged files; the reader kills its child after 60 s without progress, which
// would make each such input a libFuzzer timeout. Two seconds is ample for the small inputs here.
extern "C" int LLVMFuzzerInitialize(int*, char***) {
    ckpt::setHdf5ReaderTimeout(std::chrono::seconds(2));
    ckpt::fuzz::quietForkedChildren();
    return 0;
}

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
