// libFuzzer target: bytes as the .metadata pickle of a PyTorch distributed checkpoint, in a folder that holds
// the four .distcp files of a real 4-rank checkpoint (tests/fuzz/dcp_data, written by
// torch.distributed.checkpoint through tests/interop/test_dcp.py --generate); then the assembled checkpoint's
// reports and statistics. The seeds are the .metadata files of three real checkpoints.

#include "formats/dcp.h"
#include "fuzz_common.h"

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

namespace {

const std::string& folder() {
    static const std::string dir = [] {
        char tmpl[] = "/tmp/ckpt_fuzz_dcp_XXXXXX";
        const char* d = mkdtemp(tmpl);
        if (!d)
            std::abort();
        for (const auto& entry : std::filesystem::directory_iterator(CKPT_FUZZ_DCP_DATA))
            std::filesystem::copy_file(entry.path(), std::filesystem::path(d) / entry.path().filename());
        return std::string(d);
    }();
    return dir;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string metadata = folder() + "/.metadata";
    std::ofstream(metadata, std::ios::binary | std::ios::trunc)
        .write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
    try {
        if (auto ck = ckpt::tryOpenDcp(folder()))
            ckpt::fuzz::exercise(ck, metadata);
    } catch (const ckpt::Error&) {
    }
    return 0;
}
